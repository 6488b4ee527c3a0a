"""The Numba backend's internal paths, forced one by one (the generic suite only sees "auto").

* the SIMD layer: the LLVM-IR ``<8 x float>`` microkernel ``_ukr_6x16`` against NumPy and
  against its plain-loop twin, with each epilogue flag (accumulate, ReLU with NaN / -0.0),
  on packed A panels and on A rows read in place (conv weights, ragged last panel);
* the packed GEMM over ragged edges: M, N, K around the microkernel tile (6 x 16) and the
  cache blocks (KC, MC, NC), including 1, every trans flag, SIMD and plain-loop kernels;
* each conv2d algorithm (direct, 1x1, implicit GEMM, Winograd F(2x2,3x3)) forced on shapes it can run, with
  padding, stride, dilation, groups, bias and fused ReLU, against the naive spec.
Shapes stay small: the kernels are JIT-compiled once and cached (``cache=True``).
"""
from __future__ import annotations

import numpy as np
import pytest

from fastconv import _checks, _registry
from fastconv.backends import naive

from helpers import assert_close

numba = pytest.importorskip("numba")
nb = _registry.backend_module("numba") if "numba" in _registry.backends() else None
pytestmark = pytest.mark.skipif(nb is None, reason=str(_registry.unavailable().get("numba")))

RNG = np.random.default_rng(1234)


def _f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------- SIMD layer


def _packed_panels(kc):
    a = _f32(nb.MR, kc)
    b = _f32(kc, nb.NR)
    return a, b, np.ascontiguousarray(a.T).reshape(-1), b.reshape(-1).copy()


@pytest.mark.parametrize("simd", [True, False], ids=["simd", "loops"])
@pytest.mark.parametrize("kc", [1, 2, 3, 17, 256])
def test_microkernel_matches_numpy(simd, kc):
    a, b, pa, pb = _packed_panels(kc)
    ldc, off = 21, 5  # C rows of stride 21 from element 5: unaligned, strided stores
    c = np.full(off + nb.MR * ldc, 7.0, np.float32)
    nb._simd_selftest(pa, pb, c, off, ldc, 0, simd)
    got = c[off:].reshape(nb.MR, ldc)
    assert_close(got[:, :nb.NR], a @ b, reduction=kc)
    assert np.all(got[:, nb.NR:] == 7.0), "microkernel wrote outside its 6x16 tile"
    assert np.all(c[:off] == 7.0)


@pytest.mark.parametrize("simd", [True, False], ids=["simd", "loops"])
def test_microkernel_accumulate_and_relu(simd):
    kc = 9
    a, b, pa, pb = _packed_panels(kc)
    c0 = _f32(nb.MR, nb.NR)
    c = c0.copy().reshape(-1)
    nb._simd_selftest(pa, pb, c, 0, nb.NR, 1, simd)  # accumulate
    assert_close(c.reshape(nb.MR, nb.NR), a @ b + c0, reduction=kc)
    c = c0.copy().reshape(-1)
    nb._simd_selftest(pa, pb, c, 0, nb.NR, 3, simd)  # accumulate + relu
    assert_close(c.reshape(nb.MR, nb.NR), np.maximum(a @ b + c0, 0), reduction=kc)


@pytest.mark.parametrize("simd", [True, False], ids=["simd", "loops"])
def test_microkernel_relu_keeps_nan_and_clears_negative_zero(simd):
    kc = 1
    pa = np.zeros(nb.MR * kc, np.float32)          # product is +0.0 everywhere
    pb = np.zeros(nb.NR * kc, np.float32)
    c = np.zeros(nb.MR * nb.NR, np.float32)
    c[0], c[1], c[2], c[3] = np.nan, -0.0, -3.0, 2.0
    c[4] = np.inf
    nb._simd_selftest(pa, pb, c, 0, nb.NR, 3, simd)
    assert np.isnan(c[0])
    assert c[1] == 0.0 and not np.signbit(c[1])
    assert c[2] == 0.0 and not np.signbit(c[2])
    assert c[3] == 2.0 and c[4] == np.inf


@pytest.mark.parametrize("simd", [True, False], ids=["simd", "loops"])
@pytest.mark.parametrize("mr", [6, 5, 1])
def test_microkernel_reads_rows_in_place(simd, mr):
    """A as rows of a row-major matrix (conv weights, never packed): A(r, k) = a[r*lda + k];
    rows past mr must not be read (they do not exist at a matrix's end): the kernel
    repeats row mr - 1 there, so rows >= mr of C equal row mr - 1."""
    kc, lda = 19, 23
    rows = _f32(nb.MR, lda)
    rows[mr:] = np.nan  # poison: any read of a row past mr shows up as NaN
    b = _f32(kc, nb.NR)
    c = np.zeros(nb.MR * nb.NR, np.float32)
    nb._simd_selftest(rows.reshape(-1), b.reshape(-1), c, 0, nb.NR, 0, simd, lda, 1, mr)
    c = c.reshape(nb.MR, nb.NR)
    ref = rows[:mr, :kc].astype(np.float64) @ b
    assert_close(c[:mr], ref, reduction=kc)
    assert_close(c[mr:], np.broadcast_to(ref[mr - 1], (nb.MR - mr, nb.NR)), reduction=kc)


def test_simd_and_loop_kernels_agree():
    a, b, pa, pb = _packed_panels(64)
    out = []
    for simd in (True, False):
        c = np.zeros(nb.MR * nb.NR, np.float32)
        nb._simd_selftest(pa, pb, c, 0, nb.NR, 0, simd)
        out.append(c)
    np.testing.assert_allclose(out[0], out[1], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- packed GEMM

# around MR=6, NR=16, KC=256, MC=96 and (for N) the 2*NR split and NC=512
_SIZES = [(1, 1, 1), (1, 17, 3), (5, 1, 2), (6, 16, 1), (7, 15, 255), (12, 32, 256),
          (13, 33, 257), (95, 31, 5), (97, 48, 300), (2, 513, 7), (101, 530, 520)]


@pytest.mark.parametrize("trans_b", [False, True], ids=["b", "bT"])
@pytest.mark.parametrize("trans_a", [False, True], ids=["a", "aT"])
@pytest.mark.parametrize("mnk", _SIZES, ids=lambda s: "x".join(map(str, s)))
def test_packed_gemm_ragged(mnk, trans_a, trans_b):
    M, N, K = mnk
    a = _f32(K, M) if trans_a else _f32(M, K)
    b = _f32(N, K) if trans_b else _f32(K, N)
    ref = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    c = _f32(M, N)
    y = nb.gemm(a, b, c.copy(), 0.5, -2.0, trans_a, trans_b)
    assert_close(y, 0.5 * ref - 2.0 * c, reduction=K)
    y = nb.gemm(a, b, None, 1.0, 0.0, trans_a, trans_b)
    assert_close(y, ref, reduction=K)


@pytest.mark.parametrize("mnk", [(1, 1, 1), (7, 17, 257), (13, 40, 30)],
                         ids=lambda s: "x".join(map(str, s)))
def test_packed_gemm_plain_loop_fallback(mnk):
    M, N, K = mnk
    a, b = _f32(M, K), _f32(K, N)
    y = nb.gemm(a, b, None, 1.0, 0.0, False, False, simd=False)
    assert_close(y, a.astype(np.float64) @ b, reduction=K)


@pytest.mark.parametrize("threads", [1, 2])
def test_packed_gemm_thread_grids(threads):
    """Every row x column grid the driver can pick covers C exactly once."""
    import numba

    old = numba.get_num_threads()
    nb.set_num_threads(threads)
    try:
        for M, N in [(1, 200), (200, 1), (50, 40), (7, 7)]:
            a, b = _f32(M, 33), _f32(33, N)
            for nrows, ncols in [(1, 1), (1, 2), (2, 1), (3, 2)]:
                Mp = -(-M // nb.MR) * nb.MR
                pa = np.empty(Mp * 33, np.float32)
                nb._pack_a(a.reshape(-1), 0, 0, 33, False, M, 33, np.float32(1.0), pa, 0, 0, 1)
                y = np.full((M, N), np.nan, np.float32)
                nb._sgemm(pa, M, N, 33, nb.B_ROWMAJOR, b.reshape(-1), N, y.reshape(-1), N,
                          False, True, nrows, ncols)
                assert_close(y, a.astype(np.float64) @ b, reduction=33)
    finally:
        numba.set_num_threads(old)


# --------------------------------------------------------------------------- conv2d algorithms

# (N, C, H, W, K, R, S, stride, padding, dilation, groups)
_CONV = [
    (1, 3, 9, 11, 8, 3, 3, 1, 1, 1, 1),
    (2, 4, 10, 7, 13, 3, 2, (2, 1), (1, 0, 2, 1), 1, 1),
    (1, 6, 12, 12, 10, 3, 3, 1, 2, 2, 2),
    (1, 5, 8, 8, 7, 5, 5, 2, 2, 1, 1),
    (1, 8, 7, 9, 8, 3, 3, 1, 1, 1, 8),        # depthwise
    (3, 4, 5, 5, 4, 1, 1, 1, 0, 1, 2),        # 1x1 grouped
    (1, 20, 6, 6, 33, 1, 1, 1, 0, 1, 1),      # 1x1, ragged M and N
    (1, 3, 40, 40, 2, 4, 4, 3, 1, 1, 1),      # K <= 4
    (2, 5, 7, 6, 9, 3, 3, 1, (0, 2, 1, 0), 1, 1),  # 3x3 s1, asymmetric pad: winograd
    (1, 3, 2, 3, 7, 3, 3, 1, 1, 1, 1),        # winograd: fewer pixels than one tile row
]


def _conv_case(case):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    x, w, bias = _f32(N, C, H, W), _f32(K, C // groups, R, S), _f32(K)
    p = _checks.check_conv2d(x, w, bias, stride, padding, dilation, groups)
    return x, w, bias, p


def _can_run(algo, p):
    if algo == "1x1":
        return nb._is_1x1(p)
    if algo == "winograd":
        return nb._winograd_ok(p)
    return True


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("algo", ["direct", "1x1", "implicit", "winograd", "auto"])
@pytest.mark.parametrize("case", _CONV, ids=lambda c: "-".join(map(str, c)))
def test_conv_algorithms_match_naive(case, algo, activation):
    x, w, bias, p = _conv_case(case)
    if not _can_run(algo, p):
        with pytest.raises(ValueError, match=algo):
            nb.conv2d(x, w, bias, p, activation, algorithm=algo)
        return
    ref = naive.conv2d(x.astype(np.float64), w.astype(np.float64), bias.astype(np.float64),
                       p, activation)
    red = p.C // p.groups * p.R * p.S
    for b in (bias, None):
        y = nb.conv2d(x, w, b, p, activation, algorithm=algo)
        expect = ref if b is not None else naive.conv2d(
            x.astype(np.float64), w.astype(np.float64), None, p, activation)
        assert_close(y, expect, reduction=red)


@pytest.mark.parametrize("algo", ["implicit", "1x1", "winograd"])
def test_conv_gemm_plain_loop_fallback(algo):
    x, w, bias, p = _conv_case({"1x1": _CONV[6], "implicit": _CONV[1], "winograd": _CONV[8]}[algo])
    y = nb.conv2d(x, w, bias, p, "relu", algorithm=algo, simd=False)
    ref = naive.conv2d(x.astype(np.float64), w.astype(np.float64), bias.astype(np.float64),
                       p, "relu")
    assert_close(y, ref, reduction=p.C // p.groups * p.R * p.S)


@pytest.mark.parametrize("case", [
    (1, 260, 4, 5, 7, 3, 3, 1, 1, 1, 1),    # C > KC: two KC blocks of packed V panels; K % 6
    (2, 3, 19, 18, 13, 3, 3, 1, (1, 0, 0, 1), 1, 1),  # 100 tiles: a ragged second block
], ids=["C>KC", "ragged-blocks"])
@pytest.mark.parametrize("threads", [1, 2])
def test_winograd_blocks_and_panels(case, threads):
    """Winograd writes U and V straight into packed GEMM panels (KC blocks, zero rows past
    K, a ragged last panel of tiles) and splits the tiles into blocks per thread count."""
    x, w, bias, p = _conv_case(case)
    ref = naive.conv2d(x.astype(np.float64), w.astype(np.float64), bias.astype(np.float64),
                       p, "relu")
    import fastconv

    before = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)  # conv2d applies it (clamped to numba's maximum)
        y = nb.conv2d(x, w, bias, p, "relu", algorithm="winograd")
    finally:
        fastconv.set_num_threads(before)
    assert_close(y, ref, reduction=p.C * 9)


def test_winograd_block_size_balances_threads():
    assert nb._wino_block(784, 1, 1) == nb.WINO_T
    assert nb._wino_block(784, 8, 2) == nb.WINO_T  # enough images
    assert nb._wino_block(704, 1, 2) == 32  # 11 or 15 blocks would leave a thread idle
    assert nb._wino_block(784, 1, 2) == nb.WINO_T  # no multiple of NR >= 32 evens it out


def test_conv_relu_keeps_nan_in_every_algorithm():
    x, w, bias, p = _conv_case(_CONV[0])
    x[0, 0, 4, 4] = np.nan
    ref = naive.conv2d(x, w, bias, p, "relu")
    for algo in ("direct", "implicit", "winograd"):
        y = nb.conv2d(x, w, bias, p, "relu", algorithm=algo)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
        assert not np.signbit(y[~np.isnan(y)]).any()


def test_conv_choose_mirrors_c_rules():
    cases = {_CONV[4]: "direct", _CONV[6]: "1x1", _CONV[7]: "direct", _CONV[0]: "implicit"}
    for case, algo in cases.items():
        assert nb.conv2d_choose(_conv_case(case)[3]) == algo
    big = _checks.check_conv2d(np.empty((1, 128, 28, 28), np.float32),
                               np.empty((128, 128, 3, 3), np.float32), None, 1, 1, 1, 1)
    assert nb.conv2d_choose(big) == "winograd"


def test_unknown_algorithm_is_refused():
    x, w, bias, p = _conv_case(_CONV[0])
    with pytest.raises(ValueError, match="unknown conv2d algorithm"):
        nb.conv2d(x, w, bias, p, None, algorithm="fft")


# --------------------------------------------------------------------------- threads / info


def test_set_num_threads_clamps_to_numba_maximum():
    import numba

    old = numba.get_num_threads()
    try:
        nb.set_num_threads(10_000)
        assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
        nb.set_num_threads(1)
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(old)


def test_info_reports_numba():
    import fastconv

    info = fastconv.info()
    assert "numba" in info["backends"]
    assert info["numba"] and "numba_threading_layer" in info


def test_thread_count_reaches_other_python_threads():
    """numba's thread count is thread-local: fastconv's count must apply in a thread that
    never called set_num_threads itself."""
    import threading

    import fastconv

    before = fastconv.get_num_threads()
    seen = []

    def work():
        fastconv.relu(np.ones(4, np.float32), backend="numba")
        seen.append(numba.get_num_threads())

    try:
        fastconv.set_num_threads(1)
        t = threading.Thread(target=work)
        t.start()
        t.join()
    finally:
        fastconv.set_num_threads(before)
    assert seen == [1]


@pytest.mark.parametrize("rows", [1, 2, 5, 8, 9], ids=lambda r: f"rows{r}")
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_linear_gemv_and_gemm_paths(rows, with_bias):
    """Up to GEMV_MAX_ROWS rows linear is the streaming GEMV, past it the packed GEMM;
    out features not a multiple of the GEMV block."""
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 37), dtype=np.float32)
    w = rng.standard_normal((45, 37), dtype=np.float32)
    b = rng.standard_normal(45, dtype=np.float32) if with_bias else None
    assert (rows <= nb.GEMV_MAX_ROWS) == (rows < 9)
    assert_close(nb.linear(x, w, b), naive.linear(x, w, b), reduction=37,
                 case=f"numba linear rows={rows} bias={with_bias}")
