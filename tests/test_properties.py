"""Hypothesis property tests: random valid shapes and hyper-parameters, every backend vs naive.

The naive backend itself is compared with the independent oracle (ONNX Runtime,
or the hand-written LRN loop for even sizes). Shapes stay small because naive is
pure Python. The number of examples comes from the hypothesis profile (conftest:
``ci`` by default; ``HYPOTHESIS_PROFILE=long`` for 1000 examples per test).

Drawn inputs also cover: empty batches (N = 0), 1x1 kernels and kernel = input
(one output pixel), Fortran-ordered / strided / negatively-strided inputs (``layouts``),
and NaN / +-inf / -0.0 values (``specials``; compared with the spec by ``assert_close``,
which requires NaN exactly where the reference has NaN and infinities equal). With
special values the oracle comparison is skipped (ONNX Runtime is not the spec for them);
the backend-vs-naive comparison and the hand-written references still run.
``test_invalid_arguments_raise`` draws invalid calls of every op on every backend: each
must raise ValueError / TypeError naming the argument, before any kernel runs.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, note
from hypothesis import strategies as st

import fastconv as fc
from helpers import (
    assert_close,
    oracle_local_response_norm,
    ort_avg_pool2d,
    ort_conv2d,
    ort_gemm,
    ort_max_pool2d,
    ort_softmax,
    rand,
    ref_avg_pool2d,
    ref_lrn,
    ref_max_pool2d,
)

seeds = st.integers(0, 2**32 - 1)
#: memory layouts with the same values: C order, Fortran order, a strided view, negative strides
layouts = st.sampled_from(["C", "F", "strided", "reversed"])
#: None, or which special values to sprinkle into the inputs
specials = st.sampled_from([None, None, "nan", "inf", "mixed"])


def relayout(a, kind):
    """``a`` (values unchanged) in memory layout ``kind``."""
    if a is None or kind == "C" or a.ndim == 0:
        return a
    if kind == "F":
        return np.asfortranarray(a)
    if kind == "strided":  # every other element of a twice-as-long last axis
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    flip = (slice(None, None, -1),) * a.ndim  # "reversed": negative strides on every axis
    return np.ascontiguousarray(a[flip])[flip]


def sprinkle(a, kind, seed):
    """A copy of ``a`` with ~1/8 of its elements (at least one) set to special values."""
    if kind is None or a.size == 0:
        return a
    values = {"nan": [np.nan, -0.0], "inf": [np.inf, -np.inf, -0.0],
              "mixed": [np.nan, np.inf, -np.inf, -0.0]}[kind]
    rng = np.random.default_rng(seed)
    out = a.copy()
    idx = rng.choice(a.size, max(1, a.size // 8), replace=False)
    out.flat[idx] = rng.choice(values, idx.size)
    return out


def _compare(backend, y, spec_fn, oracle_fn, *, reduction, case):
    """backend vs naive (spec); naive vs the oracle."""
    note(case)
    expected = oracle_fn() if backend == "naive" else spec_fn()
    assert_close(y, expected, reduction=reduction, case=f"{case} {backend}", dtype=np.float32)


# --------------------------------------------------------------------------- conv2d


@st.composite
def conv_params(draw):
    groups = draw(st.integers(1, 3))
    C = groups * draw(st.integers(1, 2))
    K = groups * draw(st.integers(1, 3))
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    kind = draw(st.sampled_from(["int", "pair", "tlbr", "same", "valid"]))
    if kind == "same":
        stride = (1, 1)
        padding = "same"
        pads = (0, 0, 0, 0)  # 'same' always fits
    elif kind == "valid":
        padding, pads = "valid", (0, 0, 0, 0)
    elif kind == "int":
        p = draw(st.integers(0, 2))
        padding, pads = p, (p, p, p, p)
    elif kind == "pair":
        ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
        padding, pads = (ph, pw), (ph, pw, ph, pw)
    else:
        pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
        padding = pads
    if draw(st.integers(0, 5)) == 0:  # force the 1x1 kernel sometimes
        R = S = 1
        if kind == "same":
            pads = (0, 0, 0, 0)
    eff_r, eff_s = dil[0] * (R - 1) + 1, dil[1] * (S - 1) + 1
    if kind == "same":  # 'same' pads depend on the kernel: recompute them (as _checks does)
        pads = ((eff_r - 1) // 2, (eff_s - 1) // 2, eff_r - 1 - (eff_r - 1) // 2,
                eff_s - 1 - (eff_s - 1) // 2)
    if draw(st.integers(0, 4)) == 0:  # kernel = (padded) input: one output pixel
        H, W = max(1, eff_r - pads[0] - pads[2]), max(1, eff_s - pads[1] - pads[3])
    else:
        H = draw(st.integers(max(1, eff_r - pads[0] - pads[2]),
                             max(1, eff_r - pads[0] - pads[2]) + 5))
        W = draw(st.integers(max(1, eff_s - pads[1] - pads[3]),
                             max(1, eff_s - pads[1] - pads[3]) + 5))
    N = draw(st.integers(0, 2))  # N = 0: an empty batch
    kw = dict(stride=stride, padding=padding, dilation=dil, groups=groups,
              activation=draw(st.sampled_from([None, "relu"])))
    return (N, C, H, W), (K, C // groups, R, S), draw(st.booleans()), kw


@pytest.mark.op("conv2d")
@given(params=conv_params(), layout=layouts, special=specials, seed=seeds)
def test_conv2d_property(backend, params, layout, special, seed):
    xs, ws, with_bias, kw = params
    # keep the pure-Python spec under ~0.1 s per example
    macs = xs[0] * ws[0] * (xs[2] + 4) * (xs[3] + 4) * ws[1] * ws[2] * ws[3]
    assume(macs < 60_000)
    x, w = sprinkle(rand(xs, seed), special, seed), rand(ws, seed + 1)
    b = rand((ws[0],), seed + 2) if with_bias else None
    xl, wl = relayout(x, layout), relayout(w, layout)
    y = fc.conv2d(xl, wl, b, backend=backend, **kw)
    case = f"conv2d x{xs} w{ws} bias={with_bias} {kw} layout={layout} special={special}"
    if special:
        note(case)
        assert_close(y, fc.conv2d(x, w, b, backend="naive", **kw),
                     reduction=ws[1] * ws[2] * ws[3], case=f"{case} {backend}", dtype=np.float32)
    else:
        _compare(backend, y, lambda: fc.conv2d(x, w, b, backend="naive", **kw),
                 lambda: ort_conv2d(x, w, b, **kw), reduction=ws[1] * ws[2] * ws[3], case=case)


# --------------------------------------------------------------------------- pooling


@st.composite
def pool_params(draw, with_dilation):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    form = draw(st.sampled_from(["int", "pair", "tlbr"]))
    if form == "int":
        p = draw(st.integers(0, min(kh, kw) // 2))
        padding, pads = p, (p, p, p, p)
    elif form == "pair":
        padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
        pads = padding * 2
    else:
        padding = pads = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)),
                          draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if with_dilation else (1, 1)
    eff_h, eff_w = dil[0] * (kh - 1) + 1, dil[1] * (kw - 1) + 1
    if draw(st.integers(0, 4)) == 0:  # window = (padded) input
        H, W = max(1, eff_h - pads[0] - pads[2]), max(1, eff_w - pads[1] - pads[3])
    else:
        H = draw(st.integers(max(1, eff_h - pads[0] - pads[2]),
                             max(1, eff_h - pads[0] - pads[2]) + 6))
        W = draw(st.integers(max(1, eff_w - pads[1] - pads[3]),
                             max(1, eff_w - pads[1] - pads[3]) + 6))
    shape = (draw(st.integers(0, 2)), draw(st.integers(1, 3)), H, W)  # N = 0: empty batch
    kwargs = dict(kernel_size=(kh, kw), stride=stride, padding=padding,
                  ceil_mode=draw(st.booleans()))
    if with_dilation:
        kwargs["dilation"] = dil
    return shape, kwargs


@pytest.mark.op("max_pool2d")
@given(params=pool_params(with_dilation=True), layout=layouts, special=specials, seed=seeds)
def test_max_pool2d_property(backend, params, layout, special, seed):
    shape, kw = params
    x = sprinkle(rand(shape, seed), special, seed)
    if seed % 4 == 0 and x.size:  # sprinkle NaNs: they must propagate identically everywhere
        x.flat[seed % x.size] = np.nan
    y = fc.max_pool2d(relayout(x, layout), backend=backend, **kw)
    # max selects values: the hand-written loop decides exactly, NaN and infinities included
    assert_close(y, ref_max_pool2d(x, **kw), rtol=0, atol=0,
                 case=f"max_pool2d {shape} {kw} layout={layout} special={special}")
    if np.isfinite(x).all():
        _compare(backend, y, lambda: fc.max_pool2d(x, backend="naive", **kw),
                 lambda: ort_max_pool2d(x, **kw), reduction=1, case=f"max_pool2d {shape} {kw}")


@pytest.mark.op("avg_pool2d")
@given(params=pool_params(with_dilation=False), cip=st.booleans(), layout=layouts,
       special=specials, seed=seeds)
def test_avg_pool2d_property(backend, params, cip, layout, special, seed):
    shape, kw = params
    kw = dict(kw, count_include_pad=cip)
    x = sprinkle(rand(shape, seed), special, seed)
    y = fc.avg_pool2d(relayout(x, layout), backend=backend, **kw)
    red = kw["kernel_size"][0] * kw["kernel_size"][1]
    case = f"avg_pool2d {shape} {kw} layout={layout} special={special}"
    if special:
        note(case)
        assert_close(y, fc.avg_pool2d(x, backend="naive", **kw), reduction=red,
                     case=f"{case} {backend}", dtype=np.float32)
    else:
        _compare(backend, y, lambda: fc.avg_pool2d(x, backend="naive", **kw),
                 lambda: ort_avg_pool2d(x, **kw), reduction=red, case=case)
    assert_close(y, ref_avg_pool2d(x, **kw), reduction=red, case=f"{case} ref")


# --------------------------------------------------------------------------- LRN


@pytest.mark.op("local_response_norm")
@given(C=st.integers(1, 8), size=st.integers(1, 7),
       spatial=st.lists(st.integers(1, 4), min_size=1, max_size=3),
       alpha=st.floats(1e-4, 1.0), beta=st.floats(0.5, 1.0), k=st.floats(0.5, 2.0),
       layout=layouts, special=specials, seed=seeds)
def test_lrn_property(backend, C, size, spatial, alpha, beta, k, layout, special, seed):
    shape = (2, C, *spatial)
    x = sprinkle(rand(shape, seed, scale=3), special, seed)
    kw = dict(size=size, alpha=alpha, beta=beta, k=k)
    y = fc.local_response_norm(relayout(x, layout), backend=backend, **kw)
    if special:  # the window's NaN / inf must reach exactly the outputs the spec says
        assert_close(y, fc.local_response_norm(x, backend="naive", **kw), reduction=size,
                     case=f"lrn {shape} {kw} special={special} {backend}", dtype=np.float32)
        return
    # ORT's LRN oracle for 4-D input; the hand-written loop for 3-D / 5-D
    oracle = (lambda: oracle_local_response_norm(x, **kw)) if len(shape) == 4 else (
        lambda: ref_lrn(x, **kw))
    _compare(backend, y, lambda: fc.local_response_norm(x, backend="naive", **kw), oracle,
             reduction=size, case=f"lrn {shape} {kw}")


# --------------------------------------------------------------------------- softmax


@pytest.mark.op("softmax")
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), data=st.data(),
       scale=st.sampled_from([1.0, 10.0, 100.0]), layout=layouts, special=specials, seed=seeds)
def test_softmax_property(backend, shape, data, scale, layout, special, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    x = sprinkle(rand(tuple(shape), seed, scale=scale), special, seed)
    y = fc.softmax(relayout(x, layout), axis=axis, backend=backend)
    if special:  # NaN poisons its row, +inf makes it NaN (inf - inf), -inf gives 0
        assert_close(y, fc.softmax(x, axis=axis, backend="naive"), reduction=shape[axis],
                     case=f"softmax {shape} axis={axis} special={special} {backend}",
                     dtype=np.float32)
        return
    _compare(backend, y, lambda: fc.softmax(x, axis=axis, backend="naive"),
             lambda: ort_softmax(x, axis), reduction=shape[axis],
             case=f"softmax {shape} axis={axis} scale={scale}")
    assert (y >= 0).all() and (y <= 1).all()


# --------------------------------------------------------------------------- gemm


@pytest.mark.op("gemm")
@given(M=st.integers(1, 12), N=st.integers(1, 12), K=st.integers(1, 12),
       trans_a=st.booleans(), trans_b=st.booleans(),
       c_kind=st.sampled_from([None, "scalar", "row", "col", "row2", "full"]),
       alpha=st.sampled_from([1.0, 0.0, -0.5, 2.25]), beta=st.sampled_from([1.0, 0.0, 0.5, -3.0]),
       layout=layouts, special=specials, seed=seeds)
def test_gemm_property(backend, M, N, K, trans_a, trans_b, c_kind, alpha, beta, layout, special,
                       seed):
    a = relayout(sprinkle(rand((K, M) if trans_a else (M, K), seed), special, seed), layout)
    b = relayout(rand((N, K) if trans_b else (K, N), seed + 1), layout)
    c_shape = {None: None, "scalar": (), "row": (N,), "col": (M, 1), "row2": (1, N),
               "full": (M, N)}[c_kind]
    c = None if c_shape is None else rand(c_shape, seed + 2)
    kw = dict(alpha=alpha, beta=beta, trans_a=trans_a, trans_b=trans_b)
    y = fc.gemm(a, b, c, backend=backend, **kw)
    if special:
        assert_close(y, fc.gemm(a, b, c, backend="naive", **kw), reduction=K,
                     case=f"gemm M={M} N={N} K={K} c={c_shape} {kw} special={special} {backend}",
                     dtype=np.float32)
        return
    _compare(backend, y, lambda: fc.gemm(a, b, c, backend="naive", **kw),
             lambda: ort_gemm(a, b, c, **kw), reduction=K,
             case=f"gemm M={M} N={N} K={K} c={c_shape} {kw}")
