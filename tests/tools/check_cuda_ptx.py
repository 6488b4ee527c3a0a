"""Compile every kernel of the cuda backend to PTX for a real GPU, without a GPU.

The test suite runs the kernels on numba's simulator, which never compiles them, and
with the simulator's small tiles. This script compiles them with NVVM at the GPU
tile sizes (64 x 64 tiles, 4 x 4 register tiles) and prints per kernel the PTX size,
FMA count, shared-memory loads and local-memory loads (ld.local > 0 would mean the
register tile spilled). It needs the CUDA toolkit's NVVM, not a driver:

    python3 -m venv /tmp/venv-cuda && /tmp/venv-cuda/bin/pip install "numba-cuda[cu12]"
    env -u NUMBA_ENABLE_CUDASIM PYTHONPATH=. /tmp/venv-cuda/bin/python tests/tools/check_cuda_ptx.py
"""
import sys

from numba import cuda
from numba import types as nt

import numba.cuda.compiler as _compiler
import numba.cuda.dispatcher as _dispatcher


class _H100:
    """Device functions ask the current device for its compute capability: answer sm_90."""
    compute_capability = (9, 0)


cuda.is_available = lambda: True  # no driver here: we only compile
for _module in (_dispatcher, _compiler):
    _module.get_current_device = lambda: _H100()

from fastconv.backends import numba_cuda as m  # noqa: E402

f32, i64 = nt.float32, nt.int64
A1, A2, A3, A4 = (nt.Array(f32, d, "C") for d in (1, 2, 3, 4))


def ints(n):
    return nt.UniTuple(i64, n)


SIGNATURES = {
    "_fill_kernel": (A1, f32),
    "_sgemm_kernel": (A2, A2, A2, A2, i64, i64, i64, ints(5), f32, f32),
    "_conv2d_implicit_gemm_kernel": (A2, A4, A4, A1, i64, i64, i64, ints(19), f32, f32),
    "_conv2d_direct_kernel": (A4, A4, A1, A4, ints(19)),
    "_max_pool2d_kernel": (A4, A4, ints(16)),
    "_avg_pool2d_kernel": (A4, A4, ints(16)),
    "_global_avg_pool2d_kernel": (A2, A1),
    "_relu_kernel": (A1, A1),
    "_softmax_rows_kernel": (A3, A3),
    "_softmax_columns_kernel": (A3, A3),
    "_lrn_kernel": (A3, A3, i64, f32, f32, f32),
    "_batch_norm_kernel": (A3, A3, A1, A1, A1, A1, f32),
    "_add_kernel": (A1, A1, A1),
    "_copy_into_kernel": (A3, A3, i64),
}


def main():
    assert not m.SIMULATOR, "unset NUMBA_ENABLE_CUDASIM: this checks the GPU configuration"
    print(f"TILE {m.TILE}, TILE_K {m.TILE_K}, threads {m.THREADS_2D}x{m.THREADS_2D}, "
          f"register tile {m.MICRO}x{m.MICRO}")
    failed = 0
    for name, sig in SIGNATURES.items():
        try:
            ptx, _ = cuda.compile_ptx(getattr(m, name).py_func, sig, cc=(9, 0))
        except Exception as exc:  # report every kernel, then fail
            failed += 1
            print(f"{name:32s} FAILED: {type(exc).__name__}: {exc}")
            continue
        print(f"{name:32s} ok  {len(ptx):7d} chars  fma {ptx.count('fma.rn.f32'):4d}  "
              f"ld.shared {ptx.count('ld.shared.f32'):3d}  ld.local {ptx.count('ld.local')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
