#!/usr/bin/env bash
# All GPU figures of issue 14 in one run, at most ~8 minutes on one H200 (benchmarks/gpu_check.py
# says what is measured): results.json, results.md (the table), gpu_check.log and the CLI runs'
# logs under OUTDIR. Run from the repository root:
#   bash benchmarks/gpu_check.sh OUTDIR [--data-root build/cifar10]   # on one GPU
#   bash benchmarks/gpu_check.sh --cpu-smoke OUTDIR                     # the same, tiny, on CPU
# Only the repository travels to a GPU machine (64 MiB at most): copy a CIFAR-10 subset into an
# ignored folder first, e.g. 2000 train + 500 test images per class (23 MB, a 37 MB tar):
#   python benchmarks/gpu_check.py --make-subset ../shared/data/cifar10 build/cifar10 \
#       --train-per-class 2000 --test-per-class 500
# and carry build/cifar10; without --data-root the generated `shapes` dataset is used.
# The earlier device-path checks (GPU views == CPU views) stay in the test suite:
#   pytest tests/data/test_device_views.py -k gpu
set -euo pipefail
PY=${PY:-.venv/bin/python}
[[ -x $PY ]] || PY=python  # e.g. PY=/work/main/.venv/bin/python
export PYTHONPATH=$PWD
mode=()
if [[ ${1:-} == --cpu-smoke ]]; then
    mode=(--cpu-smoke)
    shift
fi
if [[ $# -lt 1 || $1 == -* ]]; then
    echo "usage: bash benchmarks/gpu_check.sh [--cpu-smoke] OUTDIR [gpu_check.py options]" >&2
    exit 2
fi
out=$1
shift
mkdir -p "$out"
# 480 s: the 8-minute budget; whatever finished is in results.json already
timeout 480 "$PY" benchmarks/gpu_check.py "${mode[@]}" --out "$out" "$@" 2>&1 \
    | tee "$out/gpu_check.log"
