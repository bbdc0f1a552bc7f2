#!/usr/bin/env bash
# One GPU session's checks for issue 12, in one command: the CUDA tests, then benchmarks/gpu.py.
#
# The lent machine (see the workplace's device README) has PyTorch but not diffusers, and the
# ../shared folder does not travel. Prepare once, here, in the repository root:
#
#   printf '/.whl/\n/.devshared/\n' >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 importlib_metadata==10.2.0
#   mkdir -p .devshared/golden .devshared/data/real_lr
#   cp -r ../shared/golden/weights ../shared/golden/configs .devshared/golden/
#   cp ../shared/data/real_lr/0030.jpg .devshared/data/real_lr/
#
# Dry-run it here first, in a virtual environment shaped like the device's Python (its package list is in the
# device tool's KINDS.md: torch, transformers, huggingface_hub, accelerate, opencv, scipy, pytest, no diffusers):
#
#   OUT=/tmp/device_out bash benchmarks/device_check.sh       # the GPU tests skip; gpu.py says "no CUDA device"
#   python benchmarks/gpu.py --device cpu --tiny --parity --scenarios B   # gpu.py's own code, on the CPU
#
# then run it there with carry [".whl", ".devshared"] and timeout_s 590. Everything it
# measures lands in $OUT (tests log, one JSON line per scenario and variant). About 5-6 minutes expected on
# one H100/H200; each step has its own time limit so that one slow part cannot eat the others, and the
# riskiest step (torch.compile of the full UNet) runs last.
set -u
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "device_check: could not install the carried wheels in .whl"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD/src STABLESR_SHARED=$PWD/.devshared PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

step() {  # step SECONDS LOGNAME COMMAND...: run one part with its own limit; a failure is logged, not fatal
    local limit=$1 log=$2; shift 2
    echo "== $* (limit ${limit}s)"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$log"
    echo "== exit ${PIPESTATUS[0]}" | tee -a "$OUT/$log"
}

# The limits add up to 540 s; with the wheel install and start-up the whole runs inside a 590 s timeout_s.
step 120 gpu_tests.log python3 -m pytest -q -p no:cacheprovider -o addopts= -m "slow or not slow" tests/test_gpu.py
step 180 bench_bf16.jsonl python3 benchmarks/gpu.py --precision bf16 --parity
step 45 bench_fp16.jsonl python3 benchmarks/gpu.py --precision fp16 --parity --scenarios A B
step 45 bench_channels_last.jsonl python3 benchmarks/gpu.py --precision bf16 --channels-last --scenarios A B
step 150 bench_compile.jsonl python3 benchmarks/gpu.py --precision bf16 --compile --parity --scenarios A B
