"""The C SGEMM's blocking edges, transposes, alpha/beta, epilogue, thread split, and the
GEMV paths (fc_sgemv: linear with <= GEMV_MAX_ROWS rows, gemm with M == 1 or N == 1).

Sizes are derived from the blocking of the kernel in use (``fc_gemm_blocking``: MR, NR,
MC, KC, NC), so each block edge is hit from both sides. References are float64 NumPy.
``test_isa_variant`` reruns this whole file in a subprocess under FASTCONV_ISA=generic
(the ISA is picked once per process), so the generic 4x8 kernel and GEMV are covered too.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import conftest
from helpers import assert_close, rand

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def c():
    conftest.check_usable("c")
    from fastconv.backends import c as cb
    return cb


@pytest.fixture(scope="module")
def blk(c):
    ffi, lib = c.ffi, c.lib
    mr, nr = ffi.new("int *"), ffi.new("int *")
    mc, kc, nc = ffi.new("int64_t *"), ffi.new("int64_t *"), ffi.new("int64_t *")
    lib.fc_gemm_blocking(mr, nr, mc, kc, nc)
    return dict(mr=mr[0], nr=nr[0], mc=mc[0], kc=kc[0], nc=nc[0])


@pytest.fixture
def threads():
    import fastconv
    old = fastconv.get_num_threads()
    yield fastconv.set_num_threads
    fastconv.set_num_threads(old)


def _ref(a, b, c, alpha, beta, ta, tb):
    a64 = a.astype(np.float64).T if ta else a.astype(np.float64)
    b64 = b.astype(np.float64).T if tb else b.astype(np.float64)
    y = alpha * (a64 @ b64)
    if c is not None:
        y = y + beta * np.broadcast_to(c.astype(np.float64), y.shape)
    return y


def _check(M, N, K, ta=False, tb=False, alpha=1.0, beta=1.0, with_c=False, seed=0, case=""):
    import fastconv
    a = rand((K, M) if ta else (M, K), seed)
    b = rand((N, K) if tb else (K, N), seed + 1)
    cc = rand((M, N), seed + 2) if with_c else None
    y = fastconv.gemm(a, b, cc, alpha=alpha, beta=beta, trans_a=ta, trans_b=tb, backend="c")
    assert_close(y, _ref(a, b, cc, alpha, beta, ta, tb), reduction=K, dtype=np.float32,
                 case=f"{case} M={M} N={N} K={K} ta={ta} tb={tb} alpha={alpha} beta={beta}")


def _around(v, lo=1):
    return sorted({max(lo, x) for x in (v - 1, v, v + 1)})


# ------------------------------------------------------------------ SGEMM block edges

def test_edges_m(c, blk):
    for M in sorted({2, *_around(blk["mr"]), 2 * blk["mr"] + 1, *_around(blk["mc"])}):
        _check(M, blk["nr"] + 3, 37, case="M edge")


def test_edges_n(c, blk):
    for N in sorted({2, *_around(blk["nr"]), 2 * blk["nr"] + 1, *_around(blk["nc"])}):
        _check(blk["mr"] + 1, N, 29, case="N edge")


def test_edges_k(c, blk):
    for K in sorted({1, 2, 3, 5, *_around(blk["kc"]), *_around(2 * blk["kc"])}):
        _check(2 * blk["mr"] + 1, 2 * blk["nr"] + 5, K, case="K edge")


def test_edges_all_at_once(c, blk):
    # one block and one element past MC, NC and KC together, every transpose
    M, N, K = blk["mc"] + 1, blk["nc"] + 1, blk["kc"] + 1
    for ta in (False, True):
        for tb in (False, True):
            _check(M, N, K, ta, tb, alpha=0.75, beta=-0.5, with_c=True, case="all edges")


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25), (1.0, 1.0)])
def test_trans_alpha_beta(c, blk, ta, tb, alpha, beta):
    # ragged in every dimension, and K spans two KC blocks (beta applied at the first only)
    _check(3 * blk["mr"] + 2, 3 * blk["nr"] + 7, blk["kc"] + 13, ta, tb, alpha, beta,
           with_c=True, case="trans/alpha/beta")


def test_beta_zero_ignores_c_nan(c):
    # fc_sgemm_ex with beta == 0 must not read C (BLAS): NaN in C stays out of the result
    a, b = rand((13, 21), 1), rand((21, 19), 2)
    y = np.full((13, 19), np.nan, np.float32)
    assert c.lib.fc_sgemm_ex(0, 0, 13, 19, 21, 1.0, c._p(a), 21, c._p(b), 19, 0.0, c._p(y), 19,
                             c.ffi.NULL, 0) == 0
    assert_close(y, a.astype(np.float64) @ b, reduction=21, case="beta=0")


@pytest.mark.parametrize("relu", [0, 1])
def test_bias_relu_epilogue(c, blk, relu):
    # the conv epilogue (bias per row of C, then ReLU) applies after the last KC block only
    M, N, K = 2 * blk["mr"] + 3, 2 * blk["nr"] + 3, 2 * blk["kc"] + 3
    a, b, bias = rand((M, K), 3), rand((K, N), 4), rand((M,), 5)
    y = np.empty((M, N), np.float32)
    assert c.lib.fc_sgemm_ex(0, 0, M, N, K, 1.0, c._p(a), K, c._p(b), N, 0.0, c._p(y), N,
                             c._p(bias), relu) == 0
    ref = a.astype(np.float64) @ b + bias[:, None]
    if relu:
        ref = np.maximum(ref, 0.0)
        assert not np.signbit(y[y == 0]).any(), "ReLU returned -0.0"
    assert_close(y, ref, reduction=K, case=f"bias relu={relu}")


@pytest.mark.parametrize("shape", [(1000, 40, 300), (40, 1000, 300), (300, 300, 300),
                                   (7, 3000, 50), (3000, 7, 50), (20, 20, 2000)])
def test_two_threads_split(c, threads, shape):
    # the 2-D thread grid: square, skinny either way, deep; same result as 1 thread
    import fastconv
    M, N, K = shape
    a, b = rand((M, K), 6), rand((K, N), 7)
    threads(1)
    y1 = fastconv.gemm(a, b, backend="c")
    threads(2)
    y2 = fastconv.gemm(a, b, backend="c")
    assert_close(y2, a.astype(np.float64) @ b, reduction=K, case=f"2 threads {shape}")
    np.testing.assert_array_equal(y1, y2)  # each tile is computed the same way either way


# ------------------------------------------------------------------ GEMV paths

@pytest.mark.parametrize("K", list(range(1, 18)) + [31, 64, 255, 1000])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_one_row_gemv(c, K, bias):
    import fastconv
    out = 37  # 9 blocks of 4 rows + 1, and ragged against the 8-row thread split
    x, w = rand((1, K), 10 + K), rand((out, K), 11 + K)
    bb = rand((out,), 12) if bias else None
    y = fastconv.linear(x, w, bb, backend="c")
    ref = x.astype(np.float64) @ w.T.astype(np.float64) + (0 if bb is None else bb)
    assert_close(y, ref, reduction=K, dtype=np.float32, case=f"linear 1 row K={K}")


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 8, 9, 10])
@pytest.mark.parametrize("K", [13, 301])
def test_linear_rows_around_gemv_cutoff(c, rows, K):
    # fc_sgemv_multi up to c.GEMV_MAX_ROWS (8) rows (4 vectors per pass, 2 rows of W per
    # step: out = 203 is odd), the SGEMM past it
    import fastconv
    x, w, bb = rand((rows, K), 13), rand((203, K), 14), rand((203,), 15)
    assert_close(fastconv.linear(x, w, bb, backend="c"),
                 x.astype(np.float64) @ w.T.astype(np.float64) + bb, reduction=K,
                 case=f"linear rows={rows} K={K}")


@pytest.mark.parametrize("nv", [2, 3, 4, 5, 9])
def test_sgemv_multi_direct(c, threads, nv):
    # strided X and Y rows, beta != 0, 1 and 2 threads
    M, K = 1031, 263
    A, X, bias = rand((M, K), 30), rand((nv, K + 5), 31), rand((M,), 32)
    ref = X[:, :K].astype(np.float64) @ A.T.astype(np.float64)
    for nt in (1, 2):
        threads(nt)
        y0 = rand((nv, M + 3), 33)
        y = y0.copy()
        c.lib.fc_sgemv_multi(nv, M, K, 0.5, c._p(A), K, c._p(X), K + 5, 2.0, c._p(y), M + 3,
                             c._p(bias))
        assert_close(y[:, :M], 0.5 * ref + 2.0 * y0[:, :M] + bias, reduction=K,
                     case=f"sgemv_multi nv={nv} nt={nt}")
        np.testing.assert_array_equal(y[:, M:], y0[:, M:])


def test_linear_gemv_leading_dims(c):
    import fastconv
    x, w = rand((1, 1, 77), 16), rand((19, 77), 17)
    y = fastconv.linear(x, w, backend="c")
    assert y.shape == (1, 1, 19)
    assert_close(y, x.astype(np.float64) @ w.T.astype(np.float64), reduction=77)


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("MN", [(1, 45), (45, 1), (1, 1), (1, 1030), (1030, 1)])
@pytest.mark.parametrize("K", [1, 7, 17, 260])
def test_gemm_vector_shapes(c, ta, tb, MN, K):
    M, N = MN
    _check(M, N, K, ta, tb, alpha=0.5, beta=2.0, with_c=True, case="gemv via gemm")
    _check(M, N, K, ta, tb, case="gemv via gemm, no c")


@pytest.mark.parametrize("trans", [0, 1])
def test_sgemv_direct(c, threads, trans):
    # fc_sgemv itself: beta == 0 does not read y, bias, large enough for 2 threads
    M, K = 1029, 517
    A = rand((K, M) if trans else (M, K), 20)
    x, bias = rand((K,), 21), rand((M,), 22)
    ref = (A.astype(np.float64).T if trans else A.astype(np.float64)) @ x
    for nt in (1, 2):
        threads(nt)
        y = np.full(M, np.nan, np.float32)
        c.lib.fc_sgemv(trans, M, K, 2.0, c._p(A), A.shape[1], c._p(x), 0.0, c._p(y), c._p(bias))
        assert_close(y, 2.0 * ref + bias, reduction=K, case=f"sgemv trans={trans} nt={nt}")
        y0 = rand((M,), 23)
        y = y0.copy()
        c.lib.fc_sgemv(trans, M, K, 1.0, c._p(A), A.shape[1], c._p(x), -0.5, c._p(y), c.ffi.NULL)
        assert_close(y, ref - 0.5 * y0, reduction=K, case=f"sgemv beta trans={trans} nt={nt}")


# ------------------------------------------------------------------ other ISAs

@pytest.mark.parametrize("isa", ["generic"])
def test_isa_variant(isa):
    """This file again, in a child whose FASTCONV_ISA is ``isa`` (own blocking and kernels)."""
    conftest.check_usable("c")
    if os.environ.get("FASTCONV_ISA"):
        pytest.skip("already running under a forced ISA")
    env = dict(os.environ, FASTCONV_ISA=isa)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           os.path.abspath(__file__), "-k", "not test_isa_variant"],
                          env=env, capture_output=True, text=True, timeout=600,
                          cwd=os.path.dirname(os.path.abspath(__file__)))
    assert proc.returncode == 0, f"FASTCONV_ISA={isa}:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
