"""64-bit index arithmetic and workspace-size overflow in the C backend.

* Offsets past 2**31 floats (8 GiB) without 8 GiB of memory: the C GEMM / GEMV entry points
  take leading dimensions (lda, ldb, ldc, ldx, ldy), so operands whose rows lie more than
  2**31 floats apart can live in one sparse anonymous mapping (``MAP_NORESERVE``: only the
  few touched pages are ever backed). A 32-bit ``i * lda`` would wrap and read or write the
  wrong rows (or fault); the results are checked against NumPy on the extracted rows, and
  the untouched gap pages must stay zero.
* A workspace request whose byte count overflows ``size_t`` (or whose ``int64`` element count
  overflows) must be refused (return -1, which ``fastconv.backends.c`` reports as
  ``MemoryError``), never wrap to a small buffer that the kernel then overruns. It runs in
  a subprocess because the failure mode before the fix was a segfault.
"""
from __future__ import annotations

import mmap
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv

pytestmark = pytest.mark.skipif("c" not in fastconv.backends(), reason="C backend not built")

BIG = 2**31 + 37  # floats between consecutive rows: row 1 starts past the int32 range


@pytest.fixture
def sparse():
    """A float32 view of a ~56 GiB anonymous MAP_NORESERVE mapping (pages appear on touch)."""
    # Python < 3.12 lacks the constant; Linux's value is 0x4000
    noreserve = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform.startswith("linux") else 0)
    if sys.maxsize < 2**40 or not noreserve:
        pytest.skip("needs a 64-bit Linux address space and MAP_NORESERVE")
    nbytes = 4 * (7 * BIG + 16384)
    try:
        m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | noreserve)
    except (OSError, OverflowError) as exc:
        pytest.skip(f"cannot reserve {nbytes / 2**30:.0f} GiB of address space: {exc}")
    arr = np.frombuffer(m, np.float32)
    yield arr
    del arr
    try:
        m.close()
    except BufferError:  # a cffi pointer still exports it (e.g. kept by a traceback): GC frees it
        pass


def _rows(buf, base, ld, nrows, ncols):
    """Rows ``nrows x ncols`` at ``base`` with row stride ``ld`` (a strided view of buf)."""
    return np.lib.stride_tricks.as_strided(buf[base:], (nrows, ncols), (4 * ld, 4))


def test_sgemm_leading_dims_past_2_31(sparse):
    from fastconv.backends.c import ffi, lib

    M, N, K = 3, 21, 19
    a0, b0, c0 = 0, 2 * BIG + 4096, 3 * BIG + 8192  # disjoint: A 3 rows, B 2 rows, C 3 rows
    assert c0 + (M - 1) * BIG + N < sparse.size
    rng = np.random.default_rng(0)
    # lda and ldc past 2**31 here (B compact: K rows 2**31 apart would span 150 GiB);
    # ldb past 2**31 below, with trans_b and N = 2 rows.
    A, C = _rows(sparse, a0, BIG, M, K), _rows(sparse, c0, BIG, M, N)
    A[:] = rng.standard_normal((M, K))
    Bc = rng.standard_normal((K, N)).astype(np.float32)
    bsmall = np.ascontiguousarray(Bc)
    C[:] = 1.0
    ptr = ffi.from_buffer("float[]", sparse)
    rc = lib.fc_sgemm_ex(0, 0, M, N, K, 1.0, ptr + a0, BIG, ffi.from_buffer("float[]", bsmall), N,
                         0.5, ptr + c0, BIG, ffi.NULL, 0)
    assert rc == 0
    expect = A.astype(np.float64) @ Bc.astype(np.float64) + 0.5
    np.testing.assert_allclose(C, expect, rtol=1e-5, atol=1e-5)
    # the gaps right after each written row are untouched
    for i in range(M):
        assert not sparse[c0 + i * BIG + N: c0 + i * BIG + N + 64].any()
    del A, C

    # ldb past 2**31 (trans_b: B stored (N, K) with N = 2 rows far apart)
    K2, N2 = 33, 2
    Bt = _rows(sparse, b0, BIG, N2, K2)
    Bt[:] = rng.standard_normal((N2, K2))
    A2 = rng.standard_normal((5, K2)).astype(np.float32)
    C2 = np.zeros((5, N2), np.float32)
    rc = lib.fc_sgemm_ex(0, 1, 5, N2, K2, 1.0, ffi.from_buffer("float[]", A2), K2, ptr + b0, BIG,
                         0.0, ffi.from_buffer("float[]", C2), N2, ffi.NULL, 0)
    assert rc == 0
    np.testing.assert_allclose(C2, A2.astype(np.float64) @ Bt.T.astype(np.float64),
                               rtol=1e-5, atol=1e-5)


def test_sgemv_leading_dims_past_2_31(sparse):
    from fastconv.backends.c import ffi, lib

    rng = np.random.default_rng(1)
    ptr = ffi.from_buffer("float[]", sparse)
    M, K = 4, 45
    A = _rows(sparse, 0, BIG, M, K)
    A[:] = rng.standard_normal((M, K))
    x = rng.standard_normal(K).astype(np.float32)
    y = np.zeros(M, np.float32)
    lib.fc_sgemv(0, M, K, 1.0, ptr, BIG, ffi.from_buffer("float[]", x), 0.0,
                 ffi.from_buffer("float[]", y), ffi.NULL)
    np.testing.assert_allclose(y, A.astype(np.float64) @ x, rtol=1e-5, atol=1e-5)
    # several vectors: X rows and Y rows 2**31 floats apart, A compact
    nv, M2 = 3, 7
    W = rng.standard_normal((M2, K)).astype(np.float32)
    x0, y0 = 3 * BIG + 4096, 5 * BIG + 8192  # after A's 4 rows; 3 rows each
    X, Y = _rows(sparse, x0, BIG, nv, K), _rows(sparse, y0, BIG, nv, M2)
    X[:] = rng.standard_normal((nv, K))
    lib.fc_sgemv_multi(nv, M2, K, 1.0, ffi.from_buffer("float[]", W), K, ptr + x0, BIG, 0.0,
                       ptr + y0, BIG, ffi.NULL)
    np.testing.assert_allclose(Y, X.astype(np.float64) @ W.T.astype(np.float64),
                               rtol=1e-5, atol=1e-5)


_OVERFLOW = textwrap.dedent(r'''
    import sys
    from fastconv.backends.c import ffi, lib, _ok
    mr, nr = ffi.new("int *"), ffi.new("int *")
    mc, kc, nc = ffi.new("int64_t *"), ffi.new("int64_t *"), ffi.new("int64_t *")
    lib.fc_gemm_blocking(mr, nr, mc, kc, nc)
    NULL = ffi.NULL
    def conv(N, C, H, W, K, R, S, P, Q, sh, sw, groups, algo):
        return lib.fc_conv2d(NULL, NULL, NULL, NULL, N, C, H, W, K, R, S, P, Q, sh, sw, 0, 0,
                             1, 1, groups, 0, algo)
    out = {}
    # GEMM conv: packed weights = mr * groups floats; 4 * that wraps size_t to a few bytes
    G = 2**62 // mr[0] + 1
    out["gemm size_t wrap"] = conv(1, G, 1, 1, G, 1, 1, 1, 1, 2, 2, G, 2)
    # indirect conv: each thread's weight panels (K/16 panels x C*R*S x 16 floats, 2**62
    # here) times the threads overflow int64, or with one thread size_t's byte count
    out["indirect int64 wrap"] = conv(1, 2, 1, 1, 2**61, 1, 1, 1, 1, 1, 1, 1, 3)
    # winograd: 16 * groups * packed overflows
    G = 2**59 + 3
    out["winograd int64 wrap"] = conv(1, G, 3, 3, G, 3, 3, 1, 1, 1, 1, G, 5)
    # no overflow, just absurd (2**60 bytes): aligned_alloc must fail cleanly
    out["gemm absurd"] = conv(1, 1, 1, 2**58, 1, 1, 2**58, 1, 1, 1, 1, 1, 2)
    print(out)
    assert all(v == -1 for v in out.values()), out
    try:
        _ok(-1)
    except MemoryError as exc:
        print("MemoryError:", exc)
    else:
        sys.exit("rc -1 did not raise MemoryError")
    print("OK")
''')


def test_workspace_size_overflow_is_refused():
    """fc_alloc_floats refuses negative / size_t-overflowing counts, fc_mul_ws int64 overflow
    (csrc/gemm.c); before, these calls allocated a few bytes and the kernel overran them."""
    res = subprocess.run([sys.executable, "-c", _OVERFLOW], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and "OK" in res.stdout, (
        f"rc={res.returncode} (-11 = segfault: a wrapped workspace size was allocated)\n"
        + res.stdout[-2000:] + res.stderr[-3000:])
