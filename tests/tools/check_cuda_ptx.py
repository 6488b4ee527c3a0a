"""Compile every kernel of the cuda backend for a real GPU (sm_90), without a GPU.

The test suite runs the kernels on numba's simulator, which never compiles them, and
with the simulator's small tiles. This script compiles them with NVVM at the GPU
tile sizes (both GEMM tile configurations: 128 x 128 with 8 x 8 register tiles and
64 x 64 with 4 x 4; the split-K reduction; the GEMV per row count) and prints per
kernel the PTX size, FMA count, shared-memory loads and local-memory loads (ld.local
> 0 would mean a register tile was left in local memory). Where ``ptxas`` is found
(the CUDA toolkit's, or the pip nvidia-cuda-nvcc one) it also assembles the PTX and
prints registers per thread and ptxas's spill stores / loads, which must be 0. Exits 1
if a kernel fails to compile, uses local memory or spills.
It needs the CUDA toolkit's NVVM, not a driver:

    python3 -m venv /tmp/venv-cuda && /tmp/venv-cuda/bin/pip install "numba-cuda[cu12]"
    env -u NUMBA_ENABLE_CUDASIM PYTHONPATH=. /tmp/venv-cuda/bin/python tests/tools/check_cuda_ptx.py
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

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


def _gemm(a, b, y, aux, n_ints):
    """(a, b, y, aux, ws, M, N, Kd, ints, alpha, beta, splits)"""
    return (a, b, y, aux, A3, i64, i64, i64, ints(n_ints), f32, f32, i64)


def _gemm_set(label, kernels, gemm_sig, reduce_sig):
    yield f"{label}.big", kernels.big, gemm_sig
    yield f"{label}.small", kernels.small, gemm_sig
    yield f"{label}.reduce", kernels.reduce, reduce_sig


def kernels():
    """(label, kernel, signature) for every kernel of the backend, GEMM variants included."""
    for (ta, tb), ks in m._sgemm_kernels.items():
        yield from _gemm_set(f"_sgemm_kernels.{'NT'[ta]}{'NT'[tb]}", ks,
                             _gemm(A2, A2, A2, A2, 2),
                             (A3, A2, A2, i64, i64, ints(2), f32, f32, i64))
    yield from _gemm_set("_conv2d_implicit_gemm_kernels", m._conv2d_implicit_gemm_kernels,
                         _gemm(A2, A1, A4, A1, 19),
                         (A3, A4, A1, i64, i64, ints(19), f32, f32, i64))
    for rows, kernel in m._gemv_kernels.items():
        yield f"_gemv_kernels.{rows}", kernel, (A2, A2, A2, A2, ints(2), f32, f32)
    for name, sig in SIGNATURES.items():
        yield name, getattr(m, name), sig


SIGNATURES = {
    "_fill_kernel": (A1, f32),
    "_beta_c_kernel": (A2, A2, f32),
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


def _ptxas():
    found = shutil.which("ptxas")
    if found:
        return found
    here = glob.glob(os.path.join(sys.prefix, "lib", "python*", "site-packages", "nvidia",
                                  "cuda_nvcc", "bin", "ptxas"))
    return here[0] if here else None


def _ptxas_report(ptxas, ptx):
    """(registers, spill stores, spill loads) of the one kernel in ``ptx``, summed over
    entries; None if ptxas failed."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        run = subprocess.run([ptxas, "-arch=sm_90", "-v", path, "-o", os.devnull],
                             capture_output=True, text=True)
    if run.returncode:
        return None, run.stderr.strip()[-300:]
    text = run.stderr + run.stdout
    regs = max(map(int, re.findall(r"Used (\d+) registers", text)), default=0)
    stores = sum(map(int, re.findall(r"(\d+) bytes spill stores", text)))
    loads = sum(map(int, re.findall(r"(\d+) bytes spill loads", text)))
    return (regs, stores, loads), None


def main():
    assert not m.SIMULATOR, "unset NUMBA_ENABLE_CUDASIM: this checks the GPU configuration"
    print(f"GEMM tiles {m.GEMM_TILES}, TILE_K {m.TILE_K}, {m.GEMM_THREADS} threads, "
          f"GEMV {m.GEMV_WARPS} warps x {m.GEMV_FEATURES} features, unroll {m.GEMV_UNROLL}")
    ptxas = _ptxas()
    print(f"ptxas: {ptxas or 'not found (no register / spill report)'}")
    failed = 0
    for name, kernel, sig in kernels():
        bounds = getattr(kernel, "targetoptions", {}).get("launch_bounds")
        try:
            extra = {"launch_bounds": bounds} if bounds else {}
            ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0), **extra)
        except Exception as exc:  # report every kernel, then fail
            failed += 1
            print(f"{name:38s} FAILED: {type(exc).__name__}: {exc}")
            continue
        local = ptx.count("ld.local")
        line = (f"{name:38s} ok  {len(ptx):7d} chars  fma {ptx.count('fma.rn.f32'):4d}  "
                f"ld.shared {ptx.count('ld.shared'):3d}  ld.local {local}")
        if local:
            failed += 1
            line += "  <- LOCAL MEMORY"
        if ptxas:
            report, err = _ptxas_report(ptxas, ptx)
            if report is None:
                failed += 1
                line += f"  ptxas FAILED: {err}"
            else:
                regs, stores, loads = report
                line += f"  regs {regs:3d}  spill st/ld {stores}/{loads}"
                if bounds:
                    line += f"  (launch bounds {bounds})"
                if stores or loads:
                    failed += 1
                    line += "  <- SPILLS"
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
