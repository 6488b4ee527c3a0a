#!/usr/bin/env bash
# Everything a session with a real GPU should check, in one call (GPU time is short):
#   1. versions and fastconv.info() on that machine,
#   2. the GPU-only tests (pytest -m gpu),
#   3. benchmarks/gpu.py: SGEMM/conv layers vs cuBLAS/cuDNN and AlexNet/VGG16 img/s,
#   4. every cuda-parametrised test, now on the real GPU instead of the simulator;
#   5. host checks this machine's CPU makes possible: the real torchvision models' weights
#      (torchvision is not a test dependency) and the C tests on its AVX-512 kernels.
# Each step has its own time limit and log, so one failure still leaves the others.
#
#   OUT=/tmp/gpu-out bash tests/tools/gpu_session.sh      # from the repository root
#
# Expects numpy, numba, numba-cuda, pytest, hypothesis and (optionally) torch with
# CUDA to be installed, and the C extension built (pip install -e ".[cuda,test]").
# Wheels in .whl/ (e.g. cffi for a machine without it) are installed to /tmp/site.
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log
    local name=$1 limit=$2; shift 2
    echo "=== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    echo "=== $name: exit $? after $((SECONDS - t0))s"
    tail -n 25 "$OUT/$name.log"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
step info 60 python3 -c "
import numpy, numba, fastconv
try:
    import numba_cuda; ncv = numba_cuda.__version__
except ImportError:
    ncv = 'absent'
print('numpy', numpy.__version__, 'numba', numba.__version__, 'numba-cuda', ncv)
print(fastconv.info())"
step gpu_tests 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_paths.py
step bench 200 python3 benchmarks/gpu.py --seconds 1
step cuda_tests "${CUDA_TESTS_LIMIT:-150}" python3 -m pytest -q -p no:cacheprovider --maxfail=40 -n 8 \
    -k cuda --ignore tests/test_distributed.py --ignore tests/test_sanitizers.py tests/
step torchvision 150 python3 -m pytest -q -p no:cacheprovider tests/test_nn.py -k "torchvision"
step host_c "${HOST_C_LIMIT:-200}" python3 -m pytest -q -p no:cacheprovider -n 8 \
    tests/test_c_isa.py tests/test_c_conv_paths.py tests/test_c_gemm_paths.py \
    tests/test_c_memory_paths.py
