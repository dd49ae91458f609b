#!/usr/bin/env bash
# Device-path checks on one GPU (issue 14), about 3 minutes: the GPU views equal the CPU views,
# views/s of every recipe on the GPU, and a 30-step DINO fit with the views and the train set
# on the GPU (--data.augment device --data.cache device). Run from the repository root.
set -euo pipefail
PY=${PY:-.venv/bin/python}
export PYTHONPATH=$PWD
$PY -m pytest -q -p no:warnings tests/data/test_device_views.py -k "gpu or two_ranks or cache"
$PY benchmarks/views.py --device cuda --threads 4 --batch-size 512 --images 256
$PY benchmarks/views.py --device cuda --threads 4 --batch-size 512 --images 64 --image-size 96 \
    --methods dino
$PY -m ssl_biases fit --config configs/method/dino.yaml --config configs/backbone/vit_tiny.yaml \
    --config configs/data/shapes.yaml --config configs/trainer/gpu.yaml \
    --data.augment device --data.cache device --data.num_workers 0 --data.batch_size 256 \
    --data.shapes_size 8192 --trainer.max_steps 30 --trainer.limit_val_batches 0 \
    --trainer.num_sanity_val_steps 0 "$@"
