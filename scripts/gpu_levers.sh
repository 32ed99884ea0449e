#!/usr/bin/env bash
# The prepared GPU measurement of the speed levers (benchmarks/levers.py), for a lent H100/H200.
#
#   bash scripts/gpu_levers.sh prepare     # here (PyPI reachable): the device image's missing wheels -> .whl/
#   bash scripts/gpu_levers.sh run [ARGS]  # on the GPU machine (device tool: carry [".whl"], timeout_s 560):
#                                          #   installs .whl into /tmp/site, runs the benchmark, results in $OUT
#
# The device image has torch, transformers, safetensors, pyarrow, pandas, PIL and scikit-learn but not diffusers,
# open_clip, universal_pathlib, webdataset or PyAV (its Python is 3.12). The run stops starting new variants
# after --budget-s (default 420 s of the ~9 min one call may take), prints every line as it goes and writes
# levers.json + levers.log to $OUT. Paste the table into docs/scale-out.md ("Speed levers").
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="diffusers==0.42.1 universal_pathlib==0.3.11 pathlib_abc==0.5.2 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.5
        av==19.0.2 webdataset==1.0.2 braceexpand==0.1.7"
case "${1:-}" in
  prepare)
    grep -qx "/.whl/" .gitignore || echo "/.whl/" >> .gitignore
    mkdir -p .whl
    for w in $WHEELS; do
      python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$w"
    done
    du -sh .whl ;;
  run)
    shift
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
    out=${OUT:-/tmp/levers}; mkdir -p "$out"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
    python3 -m benchmarks.levers --device cuda --preset paper --budget-s "${BUDGET_S:-420}" --out "$out/levers.json" \
      "$@" 2>&1 | grep -v "RANDOM weights" | tee "$out/levers.log" ;;
  *) echo "usage: bash scripts/gpu_levers.sh {prepare|run [benchmarks.levers ARGS]}" >&2; exit 2 ;;
esac
