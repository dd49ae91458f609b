#!/usr/bin/env bash
# The bundle a lent GPU machine needs (it has no network; only the repository and the ignored
# paths named in the device tool's `carry`, 64 MiB in all, travel):
#   DIR/requirements.txt     name==version of every package setup.cfg needs that the GPU image
#                            lacks (benchmarks/gpu_image_packages.txt, read 2026-11-17):
#                            lightly, kornia, kornia-rs, jsonargparse, ... (gpu_bundle.py)
#   DIR/wheels/              their wheels for the image's Python 3.12 (manylinux x86_64), plus
#                            the cp311 variants of compiled ones (kornia-rs) for --cpu-smoke here
#   DIR/cifar10_subset.npz   the first TRAIN_PER_CLASS / TEST_PER_CLASS CIFAR-10 images of each
#                            class as uint8 arrays (from ../shared/data/cifar10 JPEGs)
# Run from the repository root on a machine that reaches PyPI (default DIR: gpu_bundle/, which
# .gitignore ignores; never commit data):
#   bash benchmarks/gpu_bundle.sh [DIR]
# then benchmarks/gpu_check.sh installs from it (docs/performance.md, "GPU check").
set -euo pipefail
dir=${1:-gpu_bundle}
PY=${PY:-.venv/bin/python}
CIFAR=${CIFAR:-../shared/data/cifar10}
TRAIN_PER_CLASS=${TRAIN_PER_CLASS:-1000}
TEST_PER_CLASS=${TEST_PER_CLASS:-200}
LIMIT_MIB=64
mkdir -p "$dir/wheels"
"$PY" benchmarks/gpu_bundle.py requirements >"$dir/requirements.txt"
echo "bundling: $(tr '\n' ' ' <"$dir/requirements.txt")"
while read -r requirement; do
    for version in 3.12 3.11; do  # the image's Python; this machine's (for --cpu-smoke)
        "$PY" -m pip download --quiet --only-binary=:all: --no-deps --python-version "$version" \
            --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any \
            -d "$dir/wheels" "$requirement" 2>/dev/null && continue
        # no wheel on PyPI (antlr4-python3-runtime 4.9.3, hydra-core's pin, is a source
        # release): build it here; only a pure-Python wheel (py3-none-any) serves 3.12 too
        "$PY" -m pip wheel --quiet --no-deps -w "$dir/wheels" "$requirement"
        name=${requirement%%==*}
        if ! ls "$dir/wheels" | grep -i "^${name//-/_}-.*-none-any.whl$" >/dev/null; then
            echo "error: $requirement has no wheel for Python $version and is not pure Python" >&2
            exit 1
        fi
    done
done <"$dir/requirements.txt"
"$PY" benchmarks/gpu_bundle.py wheels "$dir/wheels"  # Python 3.12, torch 2.11, ... accepted
if [[ ! -f $dir/cifar10_subset.npz ]]; then
    "$PY" benchmarks/gpu_bundle.py subset "$CIFAR" "$dir/cifar10_subset.npz" \
        --train-per-class "$TRAIN_PER_CLASS" --test-per-class "$TEST_PER_CLASS"
fi
bytes=$(du -sb "$dir" | cut -f1)
echo "$dir: $((bytes / 1024 / 1024)) MiB ($(ls "$dir/wheels" | wc -l) wheels)"
if ((bytes > LIMIT_MIB * 1024 * 1024)); then
    echo "error: $dir is over the ${LIMIT_MIB} MiB that travel; lower TRAIN_PER_CLASS" >&2
    exit 1
fi
