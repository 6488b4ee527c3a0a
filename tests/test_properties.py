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


def _input_size(draw, eff_h, eff_w, pads, extra):
    """(H, W) for a window of effective size (eff_h, eff_w) with pads (top, left, bottom,
    right): a fifth of the time the smallest input it fits (window = padded input, one
    output pixel), else up to ``extra`` more rows and columns."""
    lo_h, lo_w = max(1, eff_h - pads[0] - pads[2]), max(1, eff_w - pads[1] - pads[3])
    if draw(st.integers(0, 4)) == 0:
        return lo_h, lo_w
    return draw(st.integers(lo_h, lo_h + extra)), draw(st.integers(lo_w, lo_w + extra))


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
    H, W = _input_size(draw, eff_r, eff_s, pads, extra=5)
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
    H, W = _input_size(draw, eff_h, eff_w, pads, extra=6)
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


# --------------------------------------------------------------------------- invalid arguments


def _arr(shape, dtype=np.float32):
    return np.ones(shape, dtype)


@st.composite
def invalid_calls(draw, ops):
    """(op, args, kwargs, argument name the message must contain) for an invalid call."""
    op = draw(st.sampled_from(sorted(ops)))
    n = st.integers(1, 3)
    bad_int = st.sampled_from([0, -1, -7])
    bad_dtype = draw(st.sampled_from([np.complex64, object, "U3", "M8[s]"]))
    x4 = _arr((draw(n), 2, draw(st.integers(4, 6)), draw(st.integers(4, 6))))
    if op == "conv2d":
        w = _arr((4, 2, 3, 3))
        case = draw(st.sampled_from([
            "x rank", "w rank", "zero C", "zero H", "zero K", "groups", "groups zero", "stride",
            "dilation", "padding neg", "padding type", "padding str", "kernel too big", "bias",
            "dtype", "w dtype", "groups bool", "stride float", "activation", "channels"]))
        rank = draw(st.sampled_from([0, 1, 2, 3, 5]))
        return {
            "x rank": (op, (_arr((2,) * rank), w), {}, "x"),
            "w rank": (op, (x4, _arr((2,) * rank)), {}, "weight"),
            "zero C": (op, (_arr((1, 0, 5, 5)), _arr((4, 0, 3, 3))), {}, "x"),
            "zero H": (op, (_arr((1, 2, 0, 5)), w), {}, "x"),
            "zero K": (op, (x4, _arr((0, 2, 3, 3))), {}, "weight"),
            "groups": (op, (_arr((1, 6, 5, 5)), _arr((4, 3, 3, 3))), dict(groups=4), "groups"),
            "groups zero": (op, (x4, w), dict(groups=draw(bad_int)), "groups"),
            "stride": (op, (x4, w), dict(stride=(1, draw(bad_int))), "stride"),
            "dilation": (op, (x4, w), dict(dilation=draw(bad_int)), "dilation"),
            "padding neg": (op, (x4, w), dict(padding=(0, 0, draw(st.integers(-3, -1)), 0)),
                            "padding"),
            "padding type": (op, (x4, w), dict(padding=(1, 2, 3)), "padding"),
            "padding str": (op, (x4, w), dict(padding="full"), "padding"),
            "kernel too big": (op, (x4, _arr((4, 2, 9, 9))), {}, "kernel"),
            "bias": (op, (x4, w, _arr((draw(st.sampled_from([3, 5])),))), {}, "bias"),
            "dtype": (op, (x4.astype(bad_dtype), w), {}, "x"),
            "w dtype": (op, (x4, w.astype(bad_dtype)), {}, "weight"),
            "groups bool": (op, (x4, w), dict(groups=True), "groups"),
            "stride float": (op, (x4, w), dict(stride=1.5), "stride"),
            "activation": (op, (x4, w), dict(activation="gelu"), "activation"),
            "channels": (op, (x4, _arr((4, 3, 3, 3))), {}, "C"),
        }[case]
    if op in ("max_pool2d", "avg_pool2d"):
        case = draw(st.sampled_from(["rank", "kernel", "stride", "pad > half", "window",
                                     "dtype", "zero W", "padding type"]))
        k = draw(st.integers(1, 3))
        return {
            "rank": (op, (_arr((2,) * draw(st.sampled_from([0, 1, 2, 3, 5]))), 2), {}, "x"),
            "kernel": (op, (x4, draw(bad_int)), {}, "kernel_size"),
            "stride": (op, (x4, 2), dict(stride=draw(bad_int)), "stride"),
            "pad > half": (op, (x4, k), dict(padding=k // 2 + draw(st.integers(1, 3))),
                           "padding"),
            "window": (op, (x4, 9), {}, "window"),
            "dtype": (op, (x4.astype(bad_dtype), 2), {}, "x"),
            "zero W": (op, (_arr((1, 2, 4, 0)), 2), {}, "x"),
            "padding type": (op, (x4, 2), dict(padding=(1, 1, 1)), "padding"),
        }[case]
    if op == "global_avg_pool2d":
        case = draw(st.sampled_from(["rank", "zero", "dtype"]))
        return {"rank": (op, (_arr((2,) * draw(st.sampled_from([0, 1, 2, 3, 5]))),), {}, "x"),
                "zero": (op, (_arr((1, 2, 0, 3)),), {}, "x"),
                "dtype": (op, (x4.astype(bad_dtype),), {}, "x")}[case]
    if op in ("gemm", "linear"):
        M, K, N = draw(n), draw(st.integers(2, 4)), draw(n)
        a, b = _arr((M, K)), _arr((K, N))
        if op == "gemm":
            case = draw(st.sampled_from(["inner", "rank", "c shape", "c rank", "dtype"]))
            return {"inner": (op, (a, _arr((K + 1, N))), {}, "inner"),
                    "rank": (op, (_arr((M, K, 1)), b), {}, "a"),
                    "c shape": (op, (a, b, _arr((M + 1, N + 1))), {}, "c"),
                    "c rank": (op, (a, b, _arr((1, M, N))), {}, "c"),
                    "dtype": (op, (a, b.astype(bad_dtype)), {}, "b")}[case]
        case = draw(st.sampled_from(["in", "w rank", "bias", "x 0-D"]))
        w = _arr((N, K))
        return {"in": (op, (a, _arr((N, K + 1))), {}, "in_features"),
                "w rank": (op, (a, _arr((N, K, 1))), {}, "weight"),
                "bias": (op, (a, w, _arr((N + 1,))), {}, "bias"),
                "x 0-D": (op, (_arr(()), w), {}, "x")}[case]
    if op == "softmax":
        case = draw(st.sampled_from(["axis", "axis type", "0-D", "dtype"]))
        return {"axis": (op, (x4,), dict(axis=draw(st.sampled_from([4, -5, 99]))), "axis"),
                "axis type": (op, (x4,), dict(axis=draw(st.sampled_from([1.0, None, "1"]))),
                              "axis"),
                "0-D": (op, (_arr(()),), {}, "x"),
                "dtype": (op, (x4.astype(bad_dtype),), {}, "x")}[case]
    if op == "local_response_norm":
        case = draw(st.sampled_from(["rank", "size", "alpha", "beta", "k"]))
        bad_real = draw(st.sampled_from([np.nan, np.inf, "1", None]))
        return {"rank": (op, (_arr((2, 3)), 3), {}, "x"),
                "size": (op, (x4, draw(bad_int)), {}, "size"),
                "alpha": (op, (x4, 3), dict(alpha=bad_real), "alpha"),
                "beta": (op, (x4, 3), dict(beta=bad_real), "beta"),
                "k": (op, (x4, 3), dict(k=bad_real), "k")}[case]
    if op == "batch_norm":
        C = x4.shape[1]
        case = draw(st.sampled_from(["mean", "var", "weight", "eps", "rank"]))
        good = _arr((C,))
        return {"mean": (op, (x4, _arr((C + 1,)), good), {}, "mean"),
                "var": (op, (x4, good, _arr((C, 1))), {}, "var"),
                "weight": (op, (x4, good, good, _arr((C + 2,))), {}, "weight"),
                "eps": (op, (x4, good, good), dict(eps=draw(st.sampled_from([-1e-3, np.nan]))),
                        "eps"),
                "rank": (op, (_arr((3,)), good, good), {}, "x")}[case]
    # relu (and any op added later): a non-numeric dtype
    return (op, (x4.astype(bad_dtype),), {}, "x")


@given(data=st.data())
def test_invalid_arguments_raise(backend, data):
    """Random invalid calls of every op the backend implements: ValueError / TypeError whose
    message names the offending argument, raised before any kernel runs (never a crash)."""
    from fastconv import _registry

    ops = {op for (op, b) in _registry.KERNELS if b == backend}
    op, args, kwargs, name = data.draw(invalid_calls(ops), label="call")
    note(f"{op}(shapes={[getattr(a, 'shape', a) for a in args]}, {kwargs}) -> mentions {name!r}")
    with pytest.raises((ValueError, TypeError)) as info:
        getattr(fc, op)(*args, backend=backend, **kwargs)
    assert name in str(info.value), f"{op}: {info.value!r} does not name {name!r}"
    assert "backend" not in str(info.value).lower() or name == "backend", info.value
