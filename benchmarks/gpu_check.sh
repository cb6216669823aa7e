#!/usr/bin/env bash
# Every check that needs a GPU, as one run: the tests marked `cuda`, then the CUDA benchmark (step
# time, peak memory, kernels per step, one neuron layer, one CLI epoch), logs and JSON under $OUT.
#
# Run from the repository root on a machine with a CUDA GPU, torch and Triton (torch's CUDA builds
# bring Triton). Where ttsnn's other requirements are missing and pip cannot reach an index, bring
# them as wheels in .whl/ (Python 3.12, x86-64; the script installs whatever it finds there):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl snntorch==1.0.0 tensorly==0.10.0 nir==1.0.8 nirtorch==2.6 pydantic==2.14.4 \
#     pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
# (about 10 MB; pydantic-core's version is the one the pydantic wheel names: `unzip -p
# .whl/pydantic-2*.whl '*/METADATA' | grep ^Requires-Dist`.)
#
#   OUT=gpu-out bash benchmarks/gpu_check.sh [batches (default 32,128,512)] [configurations (default: all)]
#
# About 8-10 minutes on an H100 with the defaults: the compiled configurations compile once per
# batch size. Figures and how to read them: docs/performance.md and docs/benchmarks.md.
set -uo pipefail
OUT=${OUT:-gpu-out}
BATCHES=${1:-32,128,512}
ONLY=${2:-}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ttsnn-site .whl/*.whl \
        || { echo "could not install the wheels in .whl/"; exit 1; }
    export PYTHONPATH=/tmp/ttsnn-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  python3 -c "from ttsnn_cli.spiking import lif_triton; print('Triton LIF:', lif_triton.status())"; } 2>&1 | tee "$OUT/device.txt"

# the CUDA paths against the plain ones (every other test is the CPU suite's business)
timeout 300 python3 -m pytest -q -m cuda -p no:cacheprovider 2>&1 | tee "$OUT/cuda-tests.log"
tests=${PIPESTATUS[0]}

bench=(python3 benchmarks/bench_cuda.py --batches "$BATCHES" --steps 12 --epoch 10000 --json "$OUT/cuda.json")
[ -n "$ONLY" ] && bench+=(--only "$ONLY")
timeout 420 "${bench[@]}" 2>&1 | tee "$OUT/bench.log"
bench_status=${PIPESTATUS[0]}
echo "cuda tests: exit $tests; benchmark: exit $bench_status" | tee -a "$OUT/device.txt"
[ "$tests" -eq 0 ] && [ "$bench_status" -eq 0 ]
