"""Every op x every backend in KERNELS, against the naive spec AND an independent oracle.

The oracle is ONNX Runtime (single-node models built with ``onnx.helper``, see
helpers.py); PyTorch is a second oracle where installed. The naive backend is
compared with the oracles only (comparing it with itself would prove nothing);
every other backend is compared with both. "large" cases (shapes big enough to
reach the tiled / blocked / winograd / 1x1 code paths of the fast backends) skip
naive, which is pure Python loops, and use the oracle alone.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastconv as fc
from helpers import (
    assert_close,
    case_seed,
    norm_pads,
    oracle_local_response_norm,
    ort_avg_pool2d,
    ort_batch_norm,
    ort_conv2d,
    ort_gemm,
    ort_global_avg_pool2d,
    ort_linear,
    ort_max_pool2d,
    ort_relu,
    ort_softmax,
    rand,
    ref_avg_pool2d,
    ref_lrn,
    ref_max_pool2d,
)

_naive_cache: dict = {}


def naive(op, key, *args, **kwargs):
    """The spec's answer for one case, computed once per test session."""
    if (op, key) not in _naive_cache:
        _naive_cache[(op, key)] = getattr(fc, op)(*args, backend="naive", **kwargs)
    return _naive_cache[(op, key)]


def check(op, backend, key, y, oracle, args, kwargs, *, reduction=1, oracle_name="ORT",
          with_naive=True):
    """Compare ``y`` (from ``backend``) with the oracle and, unless naive itself, with naive."""
    assert_close(y, oracle, reduction=reduction, case=f"{op}[{key}] {backend} vs {oracle_name}",
                 dtype=np.float32)
    if with_naive and backend != "naive":
        ref = naive(op, key, *args, **kwargs)
        assert_close(y, ref, reduction=reduction, case=f"{op}[{key}] {backend} vs naive")


def oracle(fn, *args, **kwargs):
    with threadpool_limits(1):
        return fn(*args, **kwargs)


# =========================================================================== conv2d

# id: (N, C, H, W, K, R, S, kwargs, with_bias)
CONV_CASES = {
    "base": (1, 3, 6, 6, 4, 3, 3, {}, True),
    "no_bias": (1, 3, 6, 6, 4, 3, 3, {}, False),
    "batch3": (3, 2, 5, 5, 3, 3, 3, {"padding": 1}, True),
    "stride2": (1, 3, 7, 7, 4, 3, 3, {"stride": 2}, True),
    "stride3": (1, 2, 8, 8, 3, 3, 3, {"stride": 3}, True),
    "stride3_pad1": (1, 2, 8, 7, 3, 2, 2, {"stride": 3, "padding": 1}, True),
    "stride_2x1": (1, 2, 7, 6, 3, 3, 3, {"stride": (2, 1)}, True),
    "pad1": (1, 3, 5, 5, 4, 3, 3, {"padding": 1}, True),
    "pad2": (1, 2, 4, 4, 2, 3, 3, {"padding": 2}, True),
    "pad_hw": (1, 2, 5, 6, 3, 3, 3, {"padding": (1, 2)}, True),
    "pad_tlbr_a": (1, 2, 5, 6, 3, 3, 3, {"padding": (0, 1, 2, 1)}, True),
    "pad_tlbr_b": (1, 2, 6, 5, 3, 3, 2, {"padding": (2, 0, 1, 3)}, True),
    "pad_tlbr_stride2": (2, 2, 7, 6, 3, 3, 3, {"padding": (1, 0, 0, 2), "stride": 2}, True),
    "same_3x3": (1, 3, 6, 5, 4, 3, 3, {"padding": "same"}, True),
    "same_even_4x2": (1, 2, 6, 5, 3, 4, 2, {"padding": "same"}, True),
    "same_dil2": (1, 2, 7, 6, 3, 3, 2, {"padding": "same", "dilation": 2}, True),
    "valid": (1, 3, 6, 5, 4, 3, 3, {"padding": "valid"}, True),
    "dil2": (1, 2, 8, 8, 3, 3, 3, {"dilation": 2}, True),
    "dil_1x2_pad": (1, 2, 6, 8, 3, 3, 3, {"dilation": (1, 2), "padding": 1}, True),
    "dil2_stride2": (1, 2, 9, 9, 3, 3, 3, {"dilation": 2, "stride": 2, "padding": 1}, True),
    "groups2": (1, 4, 6, 6, 6, 3, 3, {"groups": 2, "padding": 1}, True),
    "groups3_stride2": (2, 6, 7, 7, 3, 3, 3, {"groups": 3, "stride": 2}, True),
    "depthwise": (1, 4, 6, 6, 4, 3, 3, {"groups": 4, "padding": 1}, True),
    "depthwise_mult2": (1, 3, 6, 6, 6, 3, 3, {"groups": 3}, True),
    "1x1": (2, 5, 4, 5, 6, 1, 1, {}, True),
    "1x1_stride2": (1, 5, 5, 5, 4, 1, 1, {"stride": 2}, True),
    "1x1_pad1": (1, 3, 4, 4, 2, 1, 1, {"padding": 1}, True),
    "kernel_eq_input": (2, 3, 5, 5, 4, 5, 5, {}, True),
    "kernel_eq_input_rect": (1, 2, 3, 7, 3, 3, 7, {}, True),
    "odd_rect": (1, 3, 7, 5, 2, 3, 2, {}, True),
    "odd_rect_5x1": (1, 2, 9, 4, 3, 5, 1, {"padding": (2, 0)}, True),
    "single_pixel": (1, 2, 1, 1, 3, 1, 1, {}, True),
    "relu": (1, 3, 6, 6, 4, 3, 3, {"padding": 1, "activation": "relu"}, True),
    "relu_no_bias_groups": (1, 4, 5, 5, 4, 3, 3, {"groups": 2, "activation": "relu"}, False),
    "relu_stride2_depthwise": (1, 3, 7, 7, 3, 3, 3,
                               {"groups": 3, "stride": 2, "padding": 1, "activation": "relu"},
                               True),
}

# Shapes for the fast paths (blocked GEMM, im2col tiles, winograd 3x3, 1x1-as-gemm,
# stem convs): oracle only, naive would take seconds.
CONV_LARGE = {
    "w3x3_s1_p1": (2, 32, 17, 15, 48, 3, 3, {"padding": 1}, True),
    "w3x3_relu_odd": (1, 19, 13, 11, 37, 3, 3, {"padding": 1, "activation": "relu"}, True),
    "w3x3_valid": (1, 16, 12, 12, 24, 3, 3, {}, False),
    "pw_1x1": (2, 64, 9, 9, 72, 1, 1, {}, True),
    "pw_1x1_odd": (1, 67, 7, 5, 33, 1, 1, {}, True),
    "alexnet_stem_like": (1, 3, 43, 43, 16, 11, 11, {"stride": 4, "padding": 2}, True),
    "5x5_s2_pad": (1, 12, 19, 19, 20, 5, 5, {"stride": 2, "padding": 2}, True),
    "groups2_big": (1, 32, 11, 11, 32, 3, 3, {"groups": 2, "padding": 1}, True),
    "depthwise_big": (2, 32, 14, 14, 32, 3, 3, {"groups": 32, "padding": 1}, True),
    "dil2_big": (1, 16, 15, 15, 16, 3, 3, {"dilation": 2, "padding": 2}, True),
    "asym_big": (1, 16, 14, 13, 24, 3, 3, {"padding": (1, 0, 2, 1), "stride": (1, 2)}, True),
}


def _conv_inputs(key, case):
    N, C, H, W, K, R, S, kw, with_bias = case
    groups = kw.get("groups", 1)
    seed = case_seed(key)
    x = rand((N, C, H, W), seed)
    w = rand((K, C // groups, R, S), seed + 1)
    b = rand((K,), seed + 2) if with_bias else None
    return x, w, b, dict(kw), (C // groups) * R * S


@pytest.mark.op("conv2d")
@pytest.mark.parametrize("key", list(CONV_CASES))
def test_conv2d(backend, key):
    x, w, b, kw, red = _conv_inputs(key, CONV_CASES[key])
    y = fc.conv2d(x, w, b, backend=backend, **kw)
    check("conv2d", backend, key, y, oracle(ort_conv2d, x, w, b, **kw), (x, w, b), kw,
          reduction=red)


@pytest.mark.op("conv2d", exclude=("naive",))
@pytest.mark.parametrize("key", list(CONV_LARGE))
def test_conv2d_large(backend, key):
    x, w, b, kw, red = _conv_inputs(key, CONV_LARGE[key])
    y = fc.conv2d(x, w, b, backend=backend, **kw)
    check("conv2d", backend, key, y, oracle(ort_conv2d, x, w, b, **kw), (x, w, b), kw,
          reduction=red, with_naive=False)


@pytest.mark.op("conv2d")
@pytest.mark.parametrize("key", ["base", "pad_tlbr_a", "same_even_4x2", "same_dil2", "dil2_stride2",
                                 "groups3_stride2", "depthwise_mult2", "relu"])
def test_conv2d_torch(backend, key):
    pytest.importorskip("torch")
    from helpers import torch_conv2d

    x, w, b, kw, red = _conv_inputs(key, CONV_CASES[key])
    y = fc.conv2d(x, w, b, backend=backend, **kw)
    assert_close(y, oracle(torch_conv2d, x, w, b, **kw), reduction=red,
                 case=f"conv2d[{key}] {backend} vs torch")


# =========================================================================== pooling

# id: (N, C, H, W, kernel_size, stride, padding, dilation, ceil_mode)
POOL_CASES = {
    "k2s2": (2, 3, 6, 6, 2, None, 0, 1, False),
    "k2s2_odd": (1, 2, 7, 5, 2, None, 0, 1, False),
    "k3s2": (1, 2, 7, 7, 3, 2, 0, 1, False),
    "k3s1p1": (1, 2, 5, 6, 3, 1, 1, 1, False),
    "k3s3": (1, 2, 9, 8, 3, 3, 0, 1, False),
    "k3s2p1": (2, 2, 8, 7, 3, 2, 1, 1, False),
    "rect_k2x3_s1x2": (1, 2, 6, 7, (2, 3), (1, 2), 0, 1, False),
    "rect_pad_1x0": (1, 2, 6, 7, (3, 2), (2, 1), (1, 0), 1, False),
    "asym_pad": (1, 2, 6, 6, 3, 2, (0, 1, 1, 0), 1, False),
    "asym_pad_b": (1, 2, 7, 5, 3, 1, (1, 0, 0, 1), 1, False),
    "kernel_eq_input": (2, 3, 4, 5, (4, 5), None, 0, 1, False),
    "k1": (1, 2, 3, 4, 1, None, 0, 1, False),
    "ceil_k2s2_odd": (1, 2, 5, 7, 2, 2, 0, 1, True),
    "ceil_k3s2": (1, 2, 6, 6, 3, 2, 0, 1, True),
    "ceil_k3s2p1": (1, 2, 6, 7, 3, 2, 1, 1, True),
    # last window would start inside the end padding: PyTorch drops it
    "ceil_drop_k2s2p1": (1, 2, 5, 5, 2, 2, 1, 1, True),
    "ceil_drop_k3s3p1": (1, 2, 7, 7, 3, 3, 1, 1, True),
    "ceil_k3s3_H8": (1, 2, 8, 8, 3, 3, 0, 1, True),
    "ceil_asym": (1, 2, 6, 7, 3, 2, (1, 0, 0, 1), 1, True),
    "ceil_noop": (1, 2, 6, 6, 2, 2, 0, 1, True),
    "ceil_stride3_rect": (1, 2, 8, 6, (2, 3), 3, (1, 0), 1, True),
}
# dilation only exists for max pooling
MAXPOOL_DIL_CASES = {
    "dil2": (1, 2, 7, 7, 3, 1, 0, 2, False),
    "dil2_s2_p1": (1, 2, 8, 8, 3, 2, 1, 2, False),
    "dil_1x2": (1, 2, 6, 8, 2, 1, 0, (1, 2), False),
    "dil2_ceil": (1, 2, 8, 7, 2, 2, 1, 2, True),
}
POOL_LARGE = {
    "alexnet_pool": (2, 64, 27, 27, 3, 2, 0, 1, False),
    "alexnet_pool_ceil": (2, 48, 26, 26, 3, 2, 0, 1, True),
    "vgg_pool": (1, 64, 28, 28, 2, 2, 0, 1, False),
    "googlenet_pool_p1_ceil": (1, 32, 29, 29, 3, 2, 1, 1, True),
    "resnet_pool": (1, 64, 30, 30, 3, 2, 1, 1, False),
}


def _pool_inputs(key, case):
    N, C, H, W, k, s, p, d, ceil = case
    return rand((N, C, H, W), case_seed(key)), k, s, p, d, ceil


@pytest.mark.op("max_pool2d")
@pytest.mark.parametrize("key", list(POOL_CASES) + list(MAXPOOL_DIL_CASES))
def test_max_pool2d(backend, key):
    x, k, s, p, d, ceil = _pool_inputs(key, {**POOL_CASES, **MAXPOOL_DIL_CASES}[key])
    kw = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
    y = fc.max_pool2d(x, backend=backend, **kw)
    check("max_pool2d", backend, key, y, oracle(ort_max_pool2d, x, **kw), (x,), kw)
    # max pooling selects an input value: exact, against the hand-written loop too
    assert_close(y, ref_max_pool2d(x, **kw), rtol=0, atol=0, case=f"max_pool2d[{key}] vs ref")


@pytest.mark.op("avg_pool2d")
@pytest.mark.parametrize("count_include_pad", [True, False], ids=["cip1", "cip0"])
@pytest.mark.parametrize("key", list(POOL_CASES))
def test_avg_pool2d(backend, key, count_include_pad):
    x, k, s, p, d, ceil = _pool_inputs(key, POOL_CASES[key])
    kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil,
              count_include_pad=count_include_pad)
    kk = k if isinstance(k, tuple) else (k, k)
    y = fc.avg_pool2d(x, backend=backend, **kw)
    red = kk[0] * kk[1]
    check("avg_pool2d", backend, f"{key}-{count_include_pad}", y, oracle(ort_avg_pool2d, x, **kw),
          (x,), kw, reduction=red)
    assert_close(y, ref_avg_pool2d(x, **kw), reduction=red, case=f"avg_pool2d[{key}] vs ref")


@pytest.mark.op("max_pool2d", exclude=("naive",))
@pytest.mark.parametrize("key", list(POOL_LARGE))
def test_max_pool2d_large(backend, key):
    x, k, s, p, d, ceil = _pool_inputs(key, POOL_LARGE[key])
    kw = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
    y = fc.max_pool2d(x, backend=backend, **kw)
    check("max_pool2d", backend, key, y, oracle(ort_max_pool2d, x, **kw), (x,), kw,
          with_naive=False)


@pytest.mark.op("avg_pool2d", exclude=("naive",))
@pytest.mark.parametrize("count_include_pad", [True, False], ids=["cip1", "cip0"])
@pytest.mark.parametrize("key", list(POOL_LARGE))
def test_avg_pool2d_large(backend, key, count_include_pad):
    x, k, s, p, d, ceil = _pool_inputs(key, POOL_LARGE[key])
    kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil,
              count_include_pad=count_include_pad)
    y = fc.avg_pool2d(x, backend=backend, **kw)
    check("avg_pool2d", backend, key, y, oracle(ort_avg_pool2d, x, **kw), (x,), kw,
          reduction=9, with_naive=False)


@pytest.mark.op("avg_pool2d")
@pytest.mark.parametrize("count_include_pad", [True, False], ids=["cip1", "cip0"])
@pytest.mark.parametrize("key", [k for k, v in POOL_CASES.items()
                                 if norm_pads(v[6])[:2] == norm_pads(v[6])[2:]])
def test_avg_pool2d_torch(backend, key, count_include_pad):
    pytest.importorskip("torch")
    from helpers import torch_avg_pool2d

    x, k, s, p, d, ceil = _pool_inputs(key, POOL_CASES[key])
    kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil,
              count_include_pad=count_include_pad)
    y = fc.avg_pool2d(x, backend=backend, **kw)
    assert_close(y, torch_avg_pool2d(x, **kw), reduction=9, case=f"avg_pool2d[{key}] vs torch")


@pytest.mark.op("max_pool2d")
@pytest.mark.parametrize("key", [k for k, v in {**POOL_CASES, **MAXPOOL_DIL_CASES}.items()
                                 if norm_pads(v[6])[:2] == norm_pads(v[6])[2:]])
def test_max_pool2d_torch(backend, key):
    pytest.importorskip("torch")
    from helpers import torch_max_pool2d

    x, k, s, p, d, ceil = _pool_inputs(key, {**POOL_CASES, **MAXPOOL_DIL_CASES}[key])
    kw = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
    y = fc.max_pool2d(x, backend=backend, **kw)
    assert_close(y, torch_max_pool2d(x, **kw), rtol=0, atol=0, case=f"max_pool2d[{key}] vs torch")


_EDGE_GRID = [
    (H, k, s, p, ceil)
    for H, k, s, p, ceil in itertools.product([5, 6, 7], [2, 3], [1, 2, 3], [0, 1], [False, True])
    if p <= k // 2
]


def test_oracles_agree_pooling_edges():
    """ORT, PyTorch and the hand-written loops agree on ceil_mode / count_include_pad edges.

    If a future ORT changes its edge-window rule this fails, telling us the ORT
    oracle must no longer be trusted for those cases (use torch / ref instead).
    """
    torch = pytest.importorskip("torch")  # noqa: F841
    from helpers import torch_avg_pool2d, torch_max_pool2d

    for H, k, s, p, ceil in _EDGE_GRID:
        x = rand((1, 2, H, H + 1), H * 100 + k * 10 + s)
        name = f"H={H} k={k} s={s} p={p} ceil={ceil}"
        for cip in (True, False):
            kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil, count_include_pad=cip)
            t = torch_avg_pool2d(x, **kw)
            assert_close(ort_avg_pool2d(x, **kw), t, case=f"avg ORT vs torch {name} cip={cip}")
            assert_close(ref_avg_pool2d(x, **kw), t, case=f"avg ref vs torch {name} cip={cip}")
        kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil)
        t = torch_max_pool2d(x, **kw)
        assert_close(ort_max_pool2d(x, **kw), t, rtol=0, atol=0, case=f"max ORT vs torch {name}")
        assert_close(ref_max_pool2d(x, **kw), t, rtol=0, atol=0, case=f"max ref vs torch {name}")


def test_oracles_disagree_on_all_padding_max_window():
    """A dilated max window that sees only padding: -inf in PyTorch (and fastconv's spec),
    -FLT_MAX in raw ORT. ``ort_max_pool2d`` translates; this pins the difference down."""
    torch = pytest.importorskip("torch")
    from helpers import ort_run

    x = np.full((1, 1, 1, 1), 0.5, np.float32)
    kw = dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 2])
    raw = ort_run("MaxPool", [x], kw)
    t = torch.nn.functional.max_pool2d(torch.from_numpy(x), 2, padding=1, dilation=(1, 2))
    assert np.isneginf(t.numpy()).all()
    assert_close(ort_max_pool2d(x, 2, None, 1, (1, 2)), t.numpy(), case="translated ORT")
    assert raw[0, 0, 0, 0] in (np.finfo(np.float32).min, -np.inf), raw


@pytest.mark.op("max_pool2d")
def test_max_pool2d_all_padding_window(backend):
    x = np.full((1, 2, 2, 1), 0.5, np.float32)  # W=1: the dilated column taps -1, 1 miss it
    y = fc.max_pool2d(x, 2, padding=1, dilation=(1, 2), backend=backend)
    assert_close(y, ref_max_pool2d(x, 2, padding=1, dilation=(1, 2)), rtol=0, atol=0,
                 case=f"all-padding window {backend}")
    assert np.isneginf(y).any(), y


def test_oracles_agree_asymmetric_pooling():
    """Torch has no asymmetric pooling pads: ORT and the hand-written loops must agree."""
    for pads, ceil, cip in itertools.product([(0, 1, 1, 0), (1, 0, 0, 1), (1, 1, 0, 0)],
                                             [False, True], [False, True]):
        x = rand((1, 2, 7, 6), 7)
        kw = dict(kernel_size=3, stride=2, padding=pads, ceil_mode=ceil)
        assert_close(ort_avg_pool2d(x, count_include_pad=cip, **kw),
                     ref_avg_pool2d(x, count_include_pad=cip, **kw), case=f"avg {pads} {ceil}")
        assert_close(ort_max_pool2d(x, **kw), ref_max_pool2d(x, **kw), case=f"max {pads} {ceil}")


# =========================================================================== global avg pool

GAP_CASES = {"2x3x5x4": (2, 3, 5, 4), "1x5x1x1": (1, 5, 1, 1), "1x2x7x9": (1, 2, 7, 9),
             "3x1x3x1": (3, 1, 3, 1)}


@pytest.mark.op("global_avg_pool2d")
@pytest.mark.parametrize("key", list(GAP_CASES))
def test_global_avg_pool2d(backend, key):
    x = rand(GAP_CASES[key], case_seed(key))
    y = fc.global_avg_pool2d(x, backend=backend)
    red = x.shape[2] * x.shape[3]
    check("global_avg_pool2d", backend, key, y, oracle(ort_global_avg_pool2d, x), (x,), {},
          reduction=red)


@pytest.mark.op("global_avg_pool2d", exclude=("naive",))
def test_global_avg_pool2d_large(backend):
    x = rand((2, 128, 14, 13), 11, scale=3) + 5  # offset: catches sum-then-divide bugs
    y = fc.global_avg_pool2d(x, backend=backend)
    check("global_avg_pool2d", backend, "large", y, oracle(ort_global_avg_pool2d, x), (x,), {},
          reduction=14 * 13, with_naive=False)


# =========================================================================== gemm

C_SHAPES = {"none": None, "scalar": (), "row_N": ("N",), "col_M1": ("M", 1),
            "row_1N": (1, "N"), "full_MN": ("M", "N")}
ALPHA_BETA = [(1.0, 1.0), (0.5, 2.0), (-1.5, 0.0)]


def _gemm_inputs(M, N, K, trans_a, trans_b, c_key, seed):
    a = rand((K, M) if trans_a else (M, K), seed)
    b = rand((N, K) if trans_b else (K, N), seed + 1)
    spec = C_SHAPES[c_key]
    c = None
    if spec is not None:
        shape = tuple({"M": M, "N": N}.get(d, d) for d in spec)
        c = rand(shape, seed + 2)
    return a, b, c


@pytest.mark.op("gemm")
@pytest.mark.parametrize("alpha,beta", ALPHA_BETA, ids=[f"a{a}_b{b}" for a, b in ALPHA_BETA])
@pytest.mark.parametrize("c_key", list(C_SHAPES))
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)),
                         ids=["nn", "nt", "tn", "tt"])
def test_gemm(backend, trans_a, trans_b, c_key, alpha, beta):
    M, N, K = 5, 7, 6
    key = f"{int(trans_a)}{int(trans_b)}-{c_key}-{alpha}-{beta}"
    a, b, c = _gemm_inputs(M, N, K, trans_a, trans_b, c_key, case_seed(key))
    kw = dict(alpha=alpha, beta=beta, trans_a=trans_a, trans_b=trans_b)
    y = fc.gemm(a, b, c, backend=backend, **kw)
    check("gemm", backend, key, y, oracle(ort_gemm, a, b, c, **kw), (a, b, c), kw, reduction=K)


GEMM_SHAPES = {"1x1x1": (1, 1, 1), "M1": (1, 9, 5), "N1": (8, 1, 5), "K1": (6, 7, 1),
               "tall": (13, 2, 3), "wide": (2, 13, 3)}


@pytest.mark.op("gemm")
@pytest.mark.parametrize("key", list(GEMM_SHAPES))
def test_gemm_degenerate_shapes(backend, key):
    M, N, K = GEMM_SHAPES[key]
    a, b, c = _gemm_inputs(M, N, K, False, True, "row_N", case_seed(key))
    y = fc.gemm(a, b, c, trans_b=True, beta=0.5, backend=backend)
    check("gemm", backend, key, y, oracle(ort_gemm, a, b, c, trans_b=True, beta=0.5), (a, b, c),
          dict(trans_b=True, beta=0.5), reduction=K)


# Sizes that are not multiples of any plausible block / micro-tile (and one that is).
GEMM_LARGE = [(67, 131, 259), (128, 96, 64), (3, 300, 517), (257, 5, 129)]


@pytest.mark.op("gemm", exclude=("naive",))
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)),
                         ids=["nn", "nt", "tn", "tt"])
@pytest.mark.parametrize("shape", GEMM_LARGE, ids=["x".join(map(str, s)) for s in GEMM_LARGE])
def test_gemm_large(backend, shape, trans_a, trans_b):
    M, N, K = shape
    key = f"{shape}-{trans_a}{trans_b}"
    a, b, c = _gemm_inputs(M, N, K, trans_a, trans_b, "col_M1", case_seed(key))
    kw = dict(alpha=0.75, beta=-1.25, trans_a=trans_a, trans_b=trans_b)
    y = fc.gemm(a, b, c, backend=backend, **kw)
    check("gemm", backend, key, y, oracle(ort_gemm, a, b, c, **kw), (a, b, c), kw, reduction=K,
          with_naive=False)


# =========================================================================== linear

LINEAR_CASES = {"x1d": (6,), "x2d": (4, 6), "x3d": (2, 3, 6), "x4d": (2, 1, 3, 6),
                "x2d_one_row": (1, 6)}


@pytest.mark.op("linear")
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("key", list(LINEAR_CASES))
def test_linear(backend, key, with_bias):
    seed = case_seed(key)
    x = rand(LINEAR_CASES[key], seed)
    w = rand((5, 6), seed + 1)
    b = rand((5,), seed + 2) if with_bias else None
    y = fc.linear(x, w, b, backend=backend)
    assert y.shape == LINEAR_CASES[key][:-1] + (5,)
    check("linear", backend, f"{key}-{with_bias}", y, oracle(ort_linear, x, w, b), (x, w, b), {},
          reduction=6)


@pytest.mark.op("linear", exclude=("naive",))
def test_linear_large(backend):
    x = rand((3, 11, 300), 5)
    w = rand((70, 300), 6)
    b = rand((70,), 7)
    y = fc.linear(x, w, b, backend=backend)
    check("linear", backend, "large", y, oracle(ort_linear, x, w, b), (x, w, b), {},
          reduction=300, with_naive=False)


# =========================================================================== relu


@pytest.mark.op("relu")
@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (7,), (2, 3), (1, 1, 1, 1)],
                         ids=lambda s: "x".join(map(str, s)))
def test_relu(backend, shape):
    x = rand(shape, sum(shape))
    x.flat[::5] = 0.0
    x.flat[1::7] = -0.0
    y = fc.relu(x, backend=backend)
    key = "x".join(map(str, shape))
    assert_close(y, ort_relu(x), rtol=0, atol=0, case=f"relu[{key}] {backend} vs ORT",
                 dtype=np.float32)
    if backend != "naive":
        assert_close(y, naive("relu", key, x), rtol=0, atol=0, case=f"relu[{key}] vs naive")
    assert not np.signbit(y).any(), f"relu[{key}] {backend} returned -0.0 (or a negative)"


@pytest.mark.op("relu", exclude=("naive",))
def test_relu_large(backend):
    x = rand((4, 33, 17, 19), 3)
    y = fc.relu(x, backend=backend)
    assert_close(y, ort_relu(x), rtol=0, atol=0, case=f"relu large {backend}")


# =========================================================================== softmax

SOFTMAX_CASES = {
    "4d_last": ((2, 3, 4, 5), -1), "4d_ax0": ((2, 3, 4, 5), 0), "4d_ax1": ((2, 3, 4, 5), 1),
    "4d_ax2": ((2, 3, 4, 5), 2), "4d_ax-3": ((2, 3, 4, 5), -3), "1d": ((9,), 0),
    "2d_ax0": ((4, 6), 0), "2d_ax1": ((4, 6), 1), "len1_axis": ((3, 1, 4), 1),
    "3d_mid": ((2, 17, 3), -2), "wide_row": ((2, 1000), -1),
}


@pytest.mark.op("softmax")
@pytest.mark.parametrize("key", list(SOFTMAX_CASES))
def test_softmax(backend, key):
    shape, axis = SOFTMAX_CASES[key]
    x = rand(shape, case_seed(key), scale=5)
    y = fc.softmax(x, axis=axis, backend=backend)
    red = shape[axis]
    check("softmax", backend, key, y, oracle(ort_softmax, x, axis), (x,), dict(axis=axis),
          reduction=red)
    assert_close(np.asarray(y.sum(axis=axis)), np.ones(np.delete(shape, axis % len(shape))), reduction=red,
                 case=f"softmax[{key}] sums to 1")


@pytest.mark.op("softmax")
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_torch(backend, axis):
    pytest.importorskip("torch")
    from helpers import torch_softmax

    x = rand((3, 5, 4), 13 + axis, scale=10)
    assert_close(fc.softmax(x, axis, backend=backend), torch_softmax(x, axis), reduction=5,
                 case=f"softmax axis={axis} {backend} vs torch")


# =========================================================================== LRN

LRN_PARAMS = {"default": (1e-4, 0.75, 1.0), "strong": (0.5, 0.75, 2.0), "beta1_k0.5": (0.05, 1.0, 0.5)}


@pytest.mark.op("local_response_norm")
@pytest.mark.parametrize("pkey", list(LRN_PARAMS))
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_local_response_norm(backend, size, pkey):
    alpha, beta, k = LRN_PARAMS[pkey]
    key = f"{size}-{pkey}"
    x = rand((2, 7, 3, 4), case_seed(key), scale=3)
    kw = dict(size=size, alpha=alpha, beta=beta, k=k)
    y = fc.local_response_norm(x, backend=backend, **kw)
    name = "ORT" if size % 2 else "hand-written (ORT refuses even sizes)"
    check("local_response_norm", backend, key, y,
          oracle(oracle_local_response_norm, x, **kw), (x,), kw, reduction=size,
          oracle_name=name)


@pytest.mark.op("local_response_norm")
@pytest.mark.parametrize("shape,size", [((1, 3, 2, 2), 5), ((2, 6, 5), 3), ((2, 6, 5), 4),
                                        ((1, 5, 2, 3, 2), 3), ((1, 4, 1, 1), 2)],
                         ids=["size_gt_C", "3d_odd", "3d_even", "5d", "1x1_even"])
def test_local_response_norm_shapes(backend, shape, size):
    """3-D / 5-D inputs and windows wider than C, against the hand-written loop."""
    x = rand(shape, len(shape) * 10 + size, scale=3)
    kw = dict(size=size, alpha=0.3, beta=0.75, k=1.0)
    y = fc.local_response_norm(x, backend=backend, **kw)
    assert_close(y, ref_lrn(x, **kw), reduction=size, case=f"lrn {shape} size={size} {backend}",
                 dtype=np.float32)


@pytest.mark.op("local_response_norm")
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
def test_local_response_norm_torch(backend, size):
    """PyTorch decides the even-size window direction (fastconv follows PyTorch)."""
    pytest.importorskip("torch")
    from helpers import torch_local_response_norm

    x = rand((2, 8, 3, 3), 40 + size, scale=3)
    kw = dict(size=size, alpha=0.2, beta=0.75, k=1.0)
    assert_close(fc.local_response_norm(x, backend=backend, **kw),
                 torch_local_response_norm(x, **kw), reduction=size,
                 case=f"lrn size={size} {backend} vs torch")


def test_oracles_agree_lrn():
    """ORT (odd sizes), PyTorch and the hand-written loop agree; onnx.reference is not used."""
    torch = pytest.importorskip("torch")  # noqa: F841
    from helpers import torch_local_response_norm

    x = rand((2, 8, 3, 3), 5, scale=3)
    for size in range(1, 8):
        kw = dict(size=size, alpha=0.1, beta=0.75, k=1.0)
        t = torch_local_response_norm(x, **kw)
        assert_close(ref_lrn(x, **kw), t, case=f"ref vs torch size={size}")
        assert_close(oracle_local_response_norm(x, **kw), t, case=f"oracle vs torch size={size}")


@pytest.mark.op("local_response_norm", exclude=("naive",))
def test_local_response_norm_large(backend):
    x = rand((2, 96, 13, 13), 3, scale=3)
    kw = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)  # AlexNet's LRN
    y = fc.local_response_norm(x, backend=backend, **kw)
    check("local_response_norm", backend, "alexnet", y, oracle(oracle_local_response_norm, x, **kw),
          (x,), kw, reduction=5, with_naive=False)


# =========================================================================== batch_norm

BN_SHAPES = {"2d": (3, 4), "3d": (2, 4, 5), "4d": (2, 4, 3, 5), "1x1": (1, 4, 1, 1)}


@pytest.mark.op("batch_norm")
@pytest.mark.parametrize("eps", [1e-5, 0.1])
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
@pytest.mark.parametrize("key", list(BN_SHAPES))
def test_batch_norm(backend, key, affine, eps):
    shape = BN_SHAPES[key]
    seed = case_seed(key + affine)
    x = rand(shape, seed, scale=2)
    C = shape[1]
    mean = rand((C,), seed + 1)
    var = rand((C,), seed + 2, low=0.1, high=3.0)
    weight = rand((C,), seed + 3) if affine in ("both", "weight") else None
    bias = rand((C,), seed + 4) if affine in ("both", "bias") else None
    y = fc.batch_norm(x, mean, var, weight, bias, eps=eps, backend=backend)
    check("batch_norm", backend, f"{key}-{affine}-{eps}", y,
          oracle(ort_batch_norm, x, mean, var, weight, bias, eps), (x, mean, var, weight, bias),
          dict(eps=eps))


@pytest.mark.op("batch_norm", exclude=("naive",))
def test_batch_norm_large(backend):
    x = rand((2, 64, 14, 15), 1)
    C = 64
    mean, var = rand((C,), 2), rand((C,), 3, low=0.01, high=2.0)
    weight, bias = rand((C,), 4), rand((C,), 5)
    y = fc.batch_norm(x, mean, var, weight, bias, backend=backend)
    check("batch_norm", backend, "large", y, oracle(ort_batch_norm, x, mean, var, weight, bias),
          (x, mean, var, weight, bias), {}, with_naive=False)
