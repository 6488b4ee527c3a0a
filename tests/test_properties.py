"""Hypothesis property tests: random valid shapes and hyper-parameters, every backend vs naive.

The naive backend itself is compared with the independent oracle (ONNX Runtime,
or the hand-written LRN loop for even sizes). Shapes stay small because naive is
pure Python. The number of examples comes from the hypothesis profile (conftest:
``ci`` by default; ``HYPOTHESIS_PROFILE=long`` for 1000 examples per test).
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
    eff_r, eff_s = dil[0] * (R - 1) + 1, dil[1] * (S - 1) + 1
    H = draw(st.integers(max(1, eff_r - pads[0] - pads[2]), max(1, eff_r - pads[0] - pads[2]) + 5))
    W = draw(st.integers(max(1, eff_s - pads[1] - pads[3]), max(1, eff_s - pads[1] - pads[3]) + 5))
    N = draw(st.integers(1, 2))
    kw = dict(stride=stride, padding=padding, dilation=dil, groups=groups,
              activation=draw(st.sampled_from([None, "relu"])))
    return (N, C, H, W), (K, C // groups, R, S), draw(st.booleans()), kw


@pytest.mark.op("conv2d")
@given(params=conv_params(), seed=seeds)
def test_conv2d_property(backend, params, seed):
    xs, ws, with_bias, kw = params
    # keep the pure-Python spec under ~0.1 s per example
    macs = xs[0] * ws[0] * (xs[2] + 4) * (xs[3] + 4) * ws[1] * ws[2] * ws[3]
    assume(macs < 60_000)
    x, w = rand(xs, seed), rand(ws, seed + 1)
    b = rand((ws[0],), seed + 2) if with_bias else None
    y = fc.conv2d(x, w, b, backend=backend, **kw)
    _compare(backend, y, lambda: fc.conv2d(x, w, b, backend="naive", **kw),
             lambda: ort_conv2d(x, w, b, **kw), reduction=ws[1] * ws[2] * ws[3],
             case=f"conv2d x{xs} w{ws} bias={with_bias} {kw}")


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
    H = draw(st.integers(max(1, eff_h - pads[0] - pads[2]), max(1, eff_h - pads[0] - pads[2]) + 6))
    W = draw(st.integers(max(1, eff_w - pads[1] - pads[3]), max(1, eff_w - pads[1] - pads[3]) + 6))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), H, W)
    kwargs = dict(kernel_size=(kh, kw), stride=stride, padding=padding,
                  ceil_mode=draw(st.booleans()))
    if with_dilation:
        kwargs["dilation"] = dil
    return shape, kwargs


@pytest.mark.op("max_pool2d")
@given(params=pool_params(with_dilation=True), seed=seeds)
def test_max_pool2d_property(backend, params, seed):
    shape, kw = params
    x = rand(shape, seed)
    if seed % 4 == 0:  # sprinkle NaNs: they must propagate identically everywhere
        x.flat[seed % x.size] = np.nan
    y = fc.max_pool2d(x, backend=backend, **kw)
    # max selects values: the hand-written loop decides exactly, NaN included
    assert_close(y, ref_max_pool2d(x, **kw), rtol=0, atol=0, case=f"max_pool2d {shape} {kw}")
    if not np.isnan(x).any():
        _compare(backend, y, lambda: fc.max_pool2d(x, backend="naive", **kw),
                 lambda: ort_max_pool2d(x, **kw), reduction=1, case=f"max_pool2d {shape} {kw}")


@pytest.mark.op("avg_pool2d")
@given(params=pool_params(with_dilation=False), cip=st.booleans(), seed=seeds)
def test_avg_pool2d_property(backend, params, cip, seed):
    shape, kw = params
    kw = dict(kw, count_include_pad=cip)
    x = rand(shape, seed)
    y = fc.avg_pool2d(x, backend=backend, **kw)
    red = kw["kernel_size"][0] * kw["kernel_size"][1]
    _compare(backend, y, lambda: fc.avg_pool2d(x, backend="naive", **kw),
             lambda: ort_avg_pool2d(x, **kw), reduction=red, case=f"avg_pool2d {shape} {kw}")
    assert_close(y, ref_avg_pool2d(x, **kw), reduction=red, case=f"avg_pool2d {shape} {kw} ref")


# --------------------------------------------------------------------------- LRN


@pytest.mark.op("local_response_norm")
@given(C=st.integers(1, 8), size=st.integers(1, 7),
       spatial=st.lists(st.integers(1, 4), min_size=1, max_size=3),
       alpha=st.floats(1e-4, 1.0), beta=st.floats(0.5, 1.0), k=st.floats(0.5, 2.0), seed=seeds)
def test_lrn_property(backend, C, size, spatial, alpha, beta, k, seed):
    shape = (2, C, *spatial)
    x = rand(shape, seed, scale=3)
    kw = dict(size=size, alpha=alpha, beta=beta, k=k)
    y = fc.local_response_norm(x, backend=backend, **kw)
    # ORT's LRN oracle for 4-D input; the hand-written loop for 3-D / 5-D
    oracle = (lambda: oracle_local_response_norm(x, **kw)) if len(shape) == 4 else (
        lambda: ref_lrn(x, **kw))
    _compare(backend, y, lambda: fc.local_response_norm(x, backend="naive", **kw), oracle,
             reduction=size, case=f"lrn {shape} {kw}")


# --------------------------------------------------------------------------- softmax


@pytest.mark.op("softmax")
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), data=st.data(),
       scale=st.sampled_from([1.0, 10.0, 100.0]), seed=seeds)
def test_softmax_property(backend, shape, data, scale, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    x = rand(tuple(shape), seed, scale=scale)
    y = fc.softmax(x, axis=axis, backend=backend)
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
       seed=seeds)
def test_gemm_property(backend, M, N, K, trans_a, trans_b, c_kind, alpha, beta, seed):
    a = rand((K, M) if trans_a else (M, K), seed)
    b = rand((N, K) if trans_b else (K, N), seed + 1)
    c_shape = {None: None, "scalar": (), "row": (N,), "col": (M, 1), "row2": (1, N),
               "full": (M, N)}[c_kind]
    c = None if c_shape is None else rand(c_shape, seed + 2)
    kw = dict(alpha=alpha, beta=beta, trans_a=trans_a, trans_b=trans_b)
    y = fc.gemm(a, b, c, backend=backend, **kw)
    _compare(backend, y, lambda: fc.gemm(a, b, c, backend="naive", **kw),
             lambda: ort_gemm(a, b, c, **kw), reduction=K,
             case=f"gemm M={M} N={N} K={K} c={c_shape} {kw}")
