#!/usr/bin/env bash
# The GPU check of issue 28 in at most 8 minutes on one GPU (benchmarks/gpu_check.py says what
# is measured): results.json, results.md, gpu_check.log and each fit's log under OUTDIR.
# Run from the repository root; the bundle (benchmarks/gpu_bundle.sh, default gpu_bundle/)
# must have travelled with the repository (the device tool's `carry`):
#   bash benchmarks/gpu_check.sh [--bundle DIR] OUTDIR [gpu_check.py options]     # on one GPU
#   bash benchmarks/gpu_check.sh --cpu-smoke [--bundle DIR] OUTDIR                # tiny, on CPU
# It installs the bundle's wheels (no network: --no-index, --no-deps) into build/gpu_site-pyXY
# (GPU_SITE), puts that and the repository in front of PYTHONPATH (what was there stays behind
# them), names a missing package within its first 30 seconds, imports everything and prints the
# versions, unpacks the CIFAR-10 subset into build/gpu_cifar10 (GPU_DATA; nothing big under
# OUTDIR, which comes back from the GPU machine) and runs gpu_check.py under a 480 s limit
# (whatever finished is in results.json already; --cpu-smoke: 1200 s).
# PY=... picks the interpreter (default python3, the GPU image's /opt/torch/.venv/bin/python3).
set -euo pipefail
PY=${PY:-python3}
bundle=gpu_bundle
mode=()
while [[ ${1:-} == --* ]]; do
    case $1 in
    --cpu-smoke) mode=(--cpu-smoke) && shift ;;
    --bundle) bundle=$2 && shift 2 ;;
    *) break ;;
    esac
done
if [[ $# -lt 1 || $1 == -* ]]; then
    echo "usage: bash benchmarks/gpu_check.sh [--cpu-smoke] [--bundle DIR] OUTDIR [options]" >&2
    exit 2
fi
out=$1
shift
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
if [[ ! -f $bundle/requirements.txt ]]; then
    echo "error: no bundle at $bundle: run 'bash benchmarks/gpu_bundle.sh $bundle' where PyPI" \
        "is reachable and carry $bundle to this machine" >&2
    exit 3
fi
tag=$("$PY" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')
site=${GPU_SITE:-build/gpu_site-$tag}  # outside the bundle, so what travels stays the bundle
if ! cmp -s "$bundle/requirements.txt" "$site/.requirements.txt"; then
    rm -rf "$site"
    mkdir -p "$(dirname "$site")"
    "$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
        --find-links "$bundle/wheels" --target "$site" -r "$bundle/requirements.txt"
    cp "$bundle/requirements.txt" "$site/.requirements.txt"
fi
export PYTHONPATH="$PWD:$(cd "$site" && pwd)${PYTHONPATH:+:$PYTHONPATH}"
echo "PYTHONPATH=$PYTHONPATH"
# a missing package is named within seconds; importing everything may take a minute when cold
timeout 150 "$PY" benchmarks/gpu_bundle.py check
data=${GPU_DATA:-build/gpu_cifar10}
"$PY" benchmarks/gpu_bundle.py unpack "$bundle/cifar10_subset.npz" "$data" >/dev/null
limit=480  # the GPU's 8 minutes; the CPU smoke run's fits start slowly on a shared CPU
[[ ${#mode[@]} -gt 0 ]] && limit=1200
timeout "$limit" "$PY" benchmarks/gpu_check.py "${mode[@]}" --out "$out" --data-root "$data" "$@"
