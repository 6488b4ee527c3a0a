"""The C backend's memory-bound fast paths (csrc/pool.c, csrc/elementwise.c).

The AVX2 paths (picked with fc_isa()) are forced on by default on an AVX2 machine; the
portable paths run in a subprocess with FASTCONV_ISA=generic. Both are checked against
the naive backend (pooling) or NumPy float64 references, over ragged widths, strides,
kernel sizes, dilation, padding and NaN / -inf / -0.0 inputs.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv

pytestmark = pytest.mark.skipif("c" not in fastconv.backends(), reason="C backend not built")

HERE = os.path.dirname(os.path.abspath(__file__))


def _specials(x, rng):
    flat = x.reshape(-1)
    n = flat.size
    flat[rng.integers(0, n, max(1, n // 50))] = np.nan
    flat[rng.integers(0, n, max(1, n // 50))] = -np.inf
    flat[rng.integers(0, n, max(1, n // 50))] = -0.0
    return x


POOL_CASES = [(k, s, p, d, cm) for (k, s, p, d, cm) in [
    (1, 1, 0, 1, False), (2, 2, 0, 1, False), (2, 1, 1, 1, True), (3, 2, 0, 1, False),
    (3, 1, 1, 1, False), (3, 3, 1, 1, True), (5, 2, 2, 1, True), (5, 1, 2, 1, False),
    (3, 2, 1, 2, False), (2, 3, 1, 3, True), (3, 2, 1, 1, True), (3, 1, 1, 1, True)]]
WIDTHS = list(range(1, 21)) + [28, 31, 55]


def _pool_ok(W, k, p, d):
    return (k - 1) * d + 1 <= W + 2 * p


@np.errstate(invalid="ignore", over="ignore", divide="ignore")
def run_checks():
    rng = np.random.default_rng(7)
    for W in WIDTHS:
        H = W % 7 + 3
        for k, s, p, d, cm in POOL_CASES:
            if not _pool_ok(W, k, p, d) or not _pool_ok(H, k, p, d):
                continue
            x = _specials(rng.standard_normal((2, 3, H, W)).astype(np.float32), rng)
            a = fastconv.max_pool2d(x, k, s, p, d, cm, backend="c")
            b = fastconv.max_pool2d(x, k, s, p, d, cm, backend="naive")
            assert np.array_equal(a, b, equal_nan=True), ("max", W, k, s, p, d, cm)
            if d != 1:
                continue
            xf = np.nan_to_num(x, nan=1.5, neginf=-2.0)
            for cip in (True, False):
                a = fastconv.avg_pool2d(xf, k, s, p, cm, cip, backend="c")
                b = fastconv.avg_pool2d(xf, k, s, p, cm, cip, backend="naive")
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6,
                                           err_msg=str(("avg", W, k, s, p, cm, cip)))
    # average pooling with +-inf / NaN inputs (the AVX2 divide is a reciprocal + FMA
    # residual that must keep inf / NaN), and the register-only 3x3/1 "same" pool
    for W in (1, 2, 3, 7, 8, 9, 17, 28):
        x = rng.standard_normal((2, 3, W % 5 + 3, W)).astype(np.float32)
        x.flat[rng.integers(0, x.size, 3)] = np.inf
        x.flat[rng.integers(0, x.size, 2)] = -np.inf
        x.flat[rng.integers(0, x.size, 1)] = np.nan
        for k, s, p in [(3, 1, 1), (3, 2, 1), (2, 2, 0), (3, 1, 0)]:
            if not _pool_ok(W, k, p, 1) or not _pool_ok(W % 5 + 3, k, p, 1):
                continue
            for cip in (True, False):
                a = fastconv.avg_pool2d(x, k, s, p, False, cip, backend="c")
                b = fastconv.avg_pool2d(x, k, s, p, False, cip, backend="naive")
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6,
                                           err_msg=str(("avg inf", W, k, s, p, cip)))
    # the 3x3/1 "same" pool (Q == W, one column of padding each side): strips of 8 columns
    # with masked edge taps, the overlapping last strip (ragged W), W < 8 / == 8, row blocks
    # (W = 200: several per plane), top / bottom padding of 0..1 rows (4-tuple padding),
    # windows with both +inf and -inf, all -0.0 windows (the average is +0.0), NaN for max
    for H, W in [(1, 1), (3, 5), (2, 8), (5, 9), (9, 16), (4, 17), (28, 28), (7, 31),
                 (40, 200)]:
        x = rng.standard_normal((2, 3, H, W)).astype(np.float32)
        x.flat[rng.integers(0, x.size, 2)] = np.inf
        x.flat[rng.integers(0, x.size, 2)] = -np.inf
        x[1, 1] = -0.0
        xn = x.copy()
        xn.flat[rng.integers(0, x.size, 2)] = np.nan
        for pad in [1, (1, 1, 1, 1), (0, 1, 1, 1), (1, 1, 0, 1), (0, 1, 0, 1)]:
            if H + (2 if pad == 1 else pad[0] + pad[2]) < 3:
                continue
            a = fastconv.max_pool2d(xn, 3, 1, pad, backend="c")
            b = fastconv.max_pool2d(xn, 3, 1, pad, backend="naive")
            assert np.array_equal(a, b, equal_nan=True), ("max 3x3/1", H, W, pad)
            for cip in (True, False):
                a = fastconv.avg_pool2d(x, 3, 1, pad, False, cip, backend="c")
                b = fastconv.avg_pool2d(x, 3, 1, pad, False, cip, backend="naive")
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6,
                                           err_msg=str(("avg 3x3/1", H, W, pad, cip)))
                assert not np.signbit(a[1, 1]).any(), ("avg 3x3/1 -0", H, W, pad, cip)
    # 3x3/2 max without padding (the two-rows-per-pass register path, csrc/pool.c
    # pool_max_k3s2): odd / even heights (a last single-row pass), ragged widths (masked
    # last vector, spilled / masked output tails), planes tall enough for the whole-vector
    # passes and the checked passes after them, ceil_mode windows past the right edge (the
    # -inf column W, fixed up after a whole-vector pass when 2Q == W) and the bottom edge
    # (rows left to the generic path). NaNs: the kernel finds them through MXCSR's invalid
    # flag and reruns the plane, so they go anywhere in one plane (the next must not rerun
    # wrongly), in the last row or column, and in a column no window reads (W even, floor:
    # the whole-vector loads still read it; the rerun must give no NaN)
    for H, W in [(3, 3), (4, 5), (5, 8), (7, 9), (9, 16), (8, 17), (11, 23), (13, 24),
                 (27, 31), (55, 55), (56, 56), (6, 40), (12, 12), (21, 40), (41, 57),
                 (30, 8), (17, 120)]:
        for cm in (False, True):
            x = rng.standard_normal((2, 3, H, W)).astype(np.float32)
            x[1, 2].flat[rng.integers(0, H * W)] = np.nan
            x[0, 1].flat[rng.integers(0, H * W)] = -np.inf
            x[0, 2, H - 1, rng.integers(0, W)] = np.nan
            x[1, 0, rng.integers(0, H), W - 1] = -np.nan
            x[1, 1, H // 2, W // 2] = np.inf
            for x_ in (x, np.nan_to_num(x, nan=7.0)):
                a = fastconv.max_pool2d(x_, 3, 2, 0, 1, cm, backend="c")
                b = fastconv.max_pool2d(x_, 3, 2, 0, 1, cm, backend="naive")
                assert np.array_equal(a, b, equal_nan=True), ("max 3x3/2", H, W, cm)
        if W % 2 == 0:
            x = rng.standard_normal((1, 2, H, W)).astype(np.float32)
            x[0, 0, :, W - 1] = np.nan  # read by no window of the floor-mode output
            a = fastconv.max_pool2d(x, 3, 2, backend="c")
            assert not np.isnan(a).any(), ("max 3x3/2 unread NaN", H, W)
            assert np.array_equal(a, fastconv.max_pool2d(x, 3, 2, backend="naive"))
    # global average pooling: ragged plane sizes; 33 planes, so eight-plane blocks (HW >= 8),
    # a leftover plane and, on two threads, ranges that start mid-block; a NaN and a +inf
    # plane inside a block
    for HW in list(range(1, 20)) + [49, 64, 65]:
        x = rng.standard_normal((3, 11, HW, 1)).astype(np.float32)
        x[1, 2, HW // 2] = np.nan
        x[2, 9, 0] = np.inf
        np.testing.assert_allclose(fastconv.global_avg_pool2d(x, backend="c"),
                                   x.astype(np.float64).mean(axis=(2, 3), keepdims=True),
                                   rtol=1e-6, atol=1e-6, err_msg=str(HW))
    # relu: NaN kept, -0.0 -> +0.0
    for n in list(range(1, 20)) + [1000]:
        x = _specials(rng.standard_normal(n).astype(np.float32), rng)
        y = fastconv.relu(x, backend="c")
        ref = np.where(x > 0, x, np.float32(0.0)).astype(np.float32)
        ref[np.isnan(x)] = np.nan
        assert np.array_equal(y, ref, equal_nan=True) and not np.signbit(y[y == 0]).any()
    # softmax rows (inner == 1) of ragged lengths, NaN / +inf rows give NaN
    for L in list(range(1, 20)) + [33, 1000]:
        x = (rng.standard_normal((4, L)) * 5).astype(np.float32)
        x[1, 0] = np.nan
        x[2, -1] = np.inf
        x[3, :] = x[3, :] + 1e30
        e = np.exp(x.astype(np.float64) - x.astype(np.float64).max(axis=1, keepdims=True))
        ref = e / e.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(fastconv.softmax(x, axis=1, backend="c"), ref, rtol=1e-5,
                                   atol=1e-7, err_msg=str(L))
    # LRN, beta 0.75 (fast path) and 0.5 (portable), odd / even sizes, ragged spatial sizes
    for (N, C, H, W) in [(2, 7, 3, 5), (1, 12, 55, 55), (2, 3, 1, 1), (1, 10, 9, 65)]:
        for size in (1, 2, 3, 4, 5):
            for k, alpha, beta in [(1.0, 1e-4, 0.75), (2.0, 1e-2, 0.75), (1e-3, 1.0, 0.75),
                                   (1.0, 1e-3, 0.5)]:
                x = (rng.standard_normal((N, C, H, W)) * 3).astype(np.float32)
                x.flat[0] = np.nan
                xd = x.astype(np.float64)
                sq = np.zeros_like(xd)
                for c in range(C):
                    lo, hi = max(0, c - size // 2), min(C - 1, c + (size - 1) // 2)
                    sq[:, c] = (xd[:, lo:hi + 1] ** 2).sum(axis=1)
                ref = xd / (k + alpha / size * sq) ** beta
                got = fastconv.local_response_norm(x, size, alpha, beta, k, backend="c")
                np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6,
                                           err_msg=str((N, C, H, W, size, k, alpha, beta)))

    # LRN: sizes 1..7 over channel counts below / around the window and spatial sizes of
    # one or several chunks (the AVX2 ring path, sizes other than 5, works in chunks of <= 512
    # floats) with ragged ends; inf / NaN / zero inputs; squares that overflow (rows of
    # t = inf) and positions where all x are 0 with k = 0 (t = 0): both take the exact per-row
    # fallback. The reference sums the float32 squares in float32 like the kernels, then
    # works in float64.
    for (N, C, H, W) in [(1, 3, 9, 65), (2, 8, 23, 47), (1, 6, 1, 513), (1, 9, 2, 7)]:
        for size in range(1, 8):
            for k, alpha, scale in [(1.0, 1e-4, 1.0), (2.0, 1e-4, 30.0), (1.0, 1e-4, 1e25),
                                    (0.0, 1e-2, 1.0), (1.0, 1e-4, 1e-20)]:
                x = (rng.standard_normal((N, C, H, W)) * scale).astype(np.float32)
                x.flat[rng.integers(0, x.size, 3)] = np.nan
                x.flat[rng.integers(0, x.size, 2)] = np.inf
                x[:, :, 0, :3] = 0.0
                sq32 = x * x
                s32 = np.zeros_like(x)
                for c in range(C):
                    lo, hi = max(0, c - size // 2), min(C - 1, c + (size - 1) // 2)
                    acc = sq32[:, lo].copy()
                    for cc in range(lo + 1, hi + 1):
                        acc = acc + sq32[:, cc]
                    s32[:, c] = acc
                ref = x.astype(np.float64) / (k + alpha / size * s32.astype(np.float64)) ** 0.75
                got = fastconv.local_response_norm(x, size, alpha, 0.75, k, backend="c")
                np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-30,
                                           err_msg=str(("lrn", N, C, H, W, size, k, alpha, scale)))

    # LRN size 5 (lrn5_avx2): rows over 4096 floats cut in parts, rows split for the threads
    # (N not a multiple of them), 1-4 output channels in the last step, and one channel c* so
    # large that its square overflows: exactly the windows holding c* take the exact path,
    # whichever of a step's four outputs they are, next to outputs of the fast path.
    for (N, C, H, W) in [(1, 7, 3, 1500), (3, 9, 1, 130), (1, 5, 1, 300), (1, 4, 2, 4099),
                         (2, 6, 1, 33)]:
        for hot in range(C):
            for k, alpha in [(2.0, 1e-4), (1.0, 1e-38)]:  # scaled and unscaled t
                x = rng.standard_normal((N, C, H, W)).astype(np.float32)
                x[:, hot, :, ::3] *= np.float32(1e25)
                x.flat[rng.integers(0, x.size, 2)] = np.nan
                sq = x.astype(np.float64) ** 2
                s = np.zeros_like(sq)
                for c in range(C):
                    s[:, c] = sq[:, max(0, c - 2):c + 3].sum(axis=1)
                s[s > np.finfo(np.float32).max] = np.inf  # float32 squares overflow
                ref = x.astype(np.float64) / (k + alpha / 5 * s) ** 0.75
                got = fastconv.local_response_norm(x, 5, alpha, 0.75, k, backend="c")
                np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-30,
                                           err_msg=str(("lrn5", N, C, H, W, hot, k, alpha)))


def test_memory_paths_best_isa():
    run_checks()


def test_memory_paths_two_threads():
    old = fastconv.get_num_threads()
    fastconv.set_num_threads(2)
    try:
        run_checks()
    finally:
        fastconv.set_num_threads(old)


def test_memory_paths_generic_isa():
    env = dict(os.environ, FASTCONV_ISA="generic")
    code = ("import sys; sys.path.insert(0, %r); import test_c_memory_paths as t; t.run_checks()"
            % HERE)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr


_MXCSR_CHECK = r"""
import ctypes, ctypes.util, sys
import numpy as np
import fastconv
libm = ctypes.CDLL(ctypes.util.find_library("m"))
FE_INVALID, FE_ALL = 0x01, 0x3d  # <fenv.h> on x86
x = np.random.default_rng(0).standard_normal((2, 4, 23, 31)).astype(np.float32)
x[1, 2, 5, 7] = np.nan
fastconv.set_num_threads(int(sys.argv[1]))
libm.feclearexcept(FE_ALL)
libm.feenableexcept(FE_INVALID)  # a NaN operand of max_ps would now raise SIGFPE
shapes = [(3, 2, 0), (3, 1, 1), (2, 2, 0), (3, 2, 1)]  # kernel, stride, padding
ys = [fastconv.max_pool2d(x, k, s, p, backend="c") for k, s, p in shapes]
enabled, raised = libm.fegetexcept(), libm.fetestexcept(FE_INVALID)
libm.fedisableexcept(FE_INVALID)
for (k, s, p), y in zip(shapes, ys):
    ref = fastconv.max_pool2d(x, k, s, p, backend="naive")
    assert np.array_equal(y, ref, equal_nan=True) and np.isnan(y[1, 2]).any(), (k, s, p)
assert enabled == FE_INVALID, enabled  # the caller's exception masks are back
assert raised == 0, raised  # and its flags: the kernel's invalid flag does not leak
print("ok")
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_max_pool_nan_flag_leaves_caller_fp_state(threads):
    """The AVX2 max pools find NaNs through MXCSR's invalid flag (csrc/pool.c): they must mask
    the exception (no SIGFPE where the caller unmasked it) and restore the caller's MXCSR."""
    from fastconv import _registry
    if _registry.backend_module("c").build_info()["isa"] == "generic":
        pytest.skip("the MXCSR path is the AVX2 one; this CPU has no AVX2")
    res = subprocess.run([sys.executable, "-c", _MXCSR_CHECK, str(threads)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, (res.returncode, res.stdout, res.stderr)
