#!/bin/bash
# Seconds per training step of one study-grid cell on a CPU: lightly's per-image views in two
# loader workers against device views (batched tensor ops) in this process, and their ratio.
# The setting is conv_vs_attention_cifar10's (IsotropicNet width 64, depth 4, 16 tokens,
# batch 128). A step's time is (wall of an 80-step fit - wall of a 20-step fit) / 60, so the
# start-up cancels. Run it with nothing else on the cores (docs/performance.md 7.3):
#   bash benchmarks/cpu_views_step.sh [METHOD ...]   (default: simclr byol masked)
# env: DATA_ROOT (default ../shared/data/cifar10), PYTHON (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DATA_ROOT=${DATA_ROOT:-../shared/data/cifar10}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
B=model.init_args.backbone.init_args
fit_wall() {  # method augment workers steps -> seconds
  local start end
  start=$(date +%s.%N)
  "$PYTHON" -m ssl_biases fit --config configs/trainer/cpu.yaml \
    --config configs/data/imagefolder.yaml --config "configs/method/$1.yaml" \
    --config configs/backbone/vit_tiny.yaml --data.root "$DATA_ROOT" --data.batch_size 128 \
    --data.max_train_samples 20000 --data.max_probe_train_samples 500 --data.max_val_samples 200 \
    --$B.patch_size 8 --$B.width 64 --$B.depth 4 --$B.num_heads 4 --$B.mlp_ratio 2.0 \
    --$B.pool gap --$B.pos_embed learned --trainer.limit_val_batches 0 \
    --trainer.num_sanity_val_steps 0 --trainer.enable_progress_bar false \
    --trainer.logger false --checkpoint.monitor null \
    --data.augment "$2" --data.num_workers "$3" --trainer.max_steps "$4" \
    --trainer.default_root_dir "$WORK/$1_$2_$4" > "$WORK/$1_$2_$4.log" 2>&1 \
    || { echo "fit failed: $WORK/$1_$2_$4.log" >&2; tail -5 "$WORK/$1_$2_$4.log" >&2; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}
step_time() {  # method augment workers -> seconds a step
  local short long
  short=$(fit_wall "$1" "$2" "$3" 20)
  long=$(fit_wall "$1" "$2" "$3" 80)
  printf "%.3f" "$(echo "scale=4; ($long - $short) / 60" | bc)"
}
echo "| method | workers s/step | device s/step | speed-up |"
echo "|---|---|---|---|"
for method in "${@:-simclr byol masked}"; do
  for m in $method; do
    workers=$(step_time "$m" workers 2)
    device=$(step_time "$m" device 0)
    printf "| %s | %s | %s | %.1fx |\n" "$m" "$workers" "$device" "$(echo "scale=3; $workers / $device" | bc)"
  done
done
