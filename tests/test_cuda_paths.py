"""The cuda backend beyond the shared op grid: each conv algorithm forced on, the tiled
GEMM's ragged edges, device residency, "auto" routing and device-array errors.

Without a GPU these run on numba's CUDA simulator (conftest sets
NUMBA_ENABLE_CUDASIM=1), with the simulator's small tiles (GEMM tiles 16 ("big") and
8 ("small"), k step 4; GEMV blocks of 4 features, 16 inputs per lane sweep), so the
shapes below straddle several blocks and k steps. Each GEMM configuration (big,
small, split-K) and the GEMV are forced on in turn; "auto" picks between them.
Tests marked ``gpu`` need a real GPU (realistic layer shapes,
``__cuda_array_interface__`` objects); they skip under the simulator and run
wherever a GPU exists.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from conftest import check_usable
from fastconv import _checks, _registry
from helpers import assert_close, ort_conv2d, rand


@pytest.fixture(scope="module")
def nc():
    check_usable("cuda")
    return _registry.backend_module("cuda")


@pytest.fixture(scope="module")
def cuda(nc):
    from numba import cuda

    return cuda


def needs_gpu(nc):
    if nc.SIMULATOR:
        pytest.skip("needs a real CUDA GPU (running on the simulator)")


# ---------------------------------------------------------------------------- conv paths

# (N, C, H, W, K, R, S, kwargs): stride, padding (asymmetric too), dilation, groups,
# and K, N*P*Q, C*R*S that are not multiples of the tile (16 under the simulator).
CONV_PATH_CASES = {
    "3x3_p1_ragged": (2, 3, 5, 6, 17, 3, 3, {"padding": 1}),
    "stride2_asym": (1, 4, 9, 8, 18, 3, 3, {"stride": 2, "padding": (1, 0, 2, 1)}),
    "dil2_rect": (1, 3, 8, 9, 16, 3, 2, {"dilation": (2, 1), "padding": 1}),
    "groups2": (1, 6, 6, 6, 34, 3, 3, {"groups": 2, "padding": 1}),
    "depthwise": (2, 5, 6, 7, 5, 3, 3, {"groups": 5, "padding": 1}),
    "1x1_stride2": (1, 9, 7, 7, 20, 1, 1, {"stride": 2}),
    "5x5_s3": (1, 2, 11, 10, 3, 5, 5, {"stride": 3, "padding": 2}),
}


def _conv_path_case(key, seed):
    """x, w, b, the validated params and the conv kwargs of CONV_PATH_CASES[key]."""
    N, C, H, W, K, R, S, kw = CONV_PATH_CASES[key]
    groups = kw.get("groups", 1)
    x, w = rand((N, C, H, W), seed), rand((K, C // groups, R, S), seed + 1)
    b = rand((K,), seed + 2)
    p = _checks.check_conv2d(x, w, b, kw.get("stride", 1), kw.get("padding", 0),
                             kw.get("dilation", 1), groups)
    return x, w, b, p, kw


# The implicit GEMM with ReLU runs in test_conv2d_implicit_gemm_each_plan (a simulated
# GEMM conv costs seconds), so here it runs without; the direct kernel both ways.
ALGORITHM_ACTIVATIONS = [("implicit_gemm", None), ("direct", None), ("direct", "relu")]


@pytest.mark.parametrize("algorithm,activation", ALGORITHM_ACTIVATIONS)
@pytest.mark.parametrize("key", list(CONV_PATH_CASES))
def test_conv2d_each_algorithm(nc, key, algorithm, activation):
    x, w, b, p, kw = _conv_path_case(key, 1)
    C, groups, R, S = p.C, p.groups, p.R, p.S
    y = nc.conv2d(x, w, b, p, activation, algorithm=algorithm)
    ref = fc.conv2d(x, w, b, activation=activation, backend="naive", **kw)
    red = (C // groups) * R * S
    assert_close(y, ref, reduction=red, case=f"cuda {algorithm} {key} vs naive")
    want = ort_conv2d(x, w, b, **kw)
    if activation == "relu":
        want = np.maximum(want, 0)
    assert_close(y, want, reduction=red, case=f"cuda {algorithm} {key} vs ORT")


# (tile config, k splits): both tiles, and split-K (3 slices; 2 for the big tile), each
# forced on the implicit GEMM whatever gemm_plan would choose.
GEMM_PLANS = [("big", 1), ("small", 1), ("small", 3), ("big", 2)]


# Every conv case on one plan (the plans taken in turn), and the ragged 3x3 on all four:
# the loaders are shared by both tiles, so the full product (28 simulated convs, ~2 min
# of the default run) would repeat the same checks.
CONV_PLAN_CASES = sorted(
    {(key, GEMM_PLANS[i % len(GEMM_PLANS)]) for i, key in enumerate(CONV_PATH_CASES)}
    | {("3x3_p1_ragged", plan) for plan in GEMM_PLANS})


@pytest.mark.parametrize("key,plan", CONV_PLAN_CASES,
                         ids=[f"{k}-{p[0]}-split{p[1]}" for k, p in CONV_PLAN_CASES])
def test_conv2d_implicit_gemm_each_plan(nc, key, plan):
    x, w, b, p, kw = _conv_path_case(key, 4)
    C, groups, R, S = p.C, p.groups, p.R, p.S
    y = nc.conv2d(x, w, b, p, "relu", algorithm="implicit_gemm", plan=plan)
    ref = fc.conv2d(x, w, b, activation="relu", backend="naive", **kw)
    assert_close(y, ref, reduction=(C // groups) * R * S, case=f"cuda {plan} {key} vs naive")


def test_conv2d_implicit_gemm_no_bias_long_k(nc):
    """C*R*S = 72 is 18 k steps of 4: with 5 slices the last one is short."""
    x, w = rand((1, 8, 6, 5), 7), rand((9, 8, 3, 3), 8)
    p = _checks.check_conv2d(x, w, None, 1, 1, 1, 1)
    ref = fc.conv2d(x, w, None, padding=1, backend="naive")
    for plan in [("small", 5), ("small", 40)]:  # 40 > 18 steps: one step per slice
        y = nc.conv2d(x, w, None, p, None, algorithm="implicit_gemm", plan=plan)
        assert_close(y, ref, reduction=72, case=f"cuda no bias {plan}")


def test_conv2d_choice(nc):
    p = _checks.check_conv2d(rand((1, 8, 5, 5), 0), rand((8, 1, 3, 3), 1), None, 1, 1, 1, 8)
    assert nc.conv2d_choose(p) == "direct"  # depthwise: one output channel per group
    p = _checks.check_conv2d(rand((1, 8, 5, 5), 0), rand((32, 8, 3, 3), 1), None, 1, 1, 1, 1)
    assert nc.conv2d_choose(p) == "implicit_gemm"
    with pytest.raises(ValueError, match="unknown conv2d algorithm"):
        nc.conv2d(rand((1, 8, 5, 5), 0), rand((32, 8, 3, 3), 1), None, p, None,
                  algorithm="winograd")


# ---------------------------------------------------------------------------- gemm edges

# M, N, K around the tile (16) and the k step (4): 1, one short, one past, several tiles.
GEMM_EDGE_SHAPES = [(1, 1, 1), (15, 17, 3), (16, 16, 4), (17, 33, 5), (40, 3, 9), (2, 50, 18)]


# (False, True) is linear's layout, which test_gemm_each_plan and the GEMV tests cover.
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, True)])
@pytest.mark.parametrize("shape", GEMM_EDGE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gemm_ragged_edges(nc, shape, trans_a, trans_b):
    M, N, K = shape
    a = rand((K, M) if trans_a else (M, K), M)
    b = rand((N, K) if trans_b else (K, N), N)
    c = rand((M, 1), K)
    y = fc.gemm(a, b, c, alpha=0.5, beta=-2.0, trans_a=trans_a, trans_b=trans_b,
                backend="cuda")
    opa, opb = (a.T if trans_a else a), (b.T if trans_b else b)
    want = 0.5 * (opa.astype(np.float64) @ opb) - 2.0 * c
    assert_close(y, want, reduction=K, case=f"cuda gemm {shape} {trans_a}{trans_b}")
    ref = fc.gemm(a, b, c, alpha=0.5, beta=-2.0, trans_a=trans_a, trans_b=trans_b,
                  backend="naive")
    assert_close(y, ref, reduction=K, case=f"cuda gemm {shape} vs naive")


# Around both simulator tiles (8 and 16) and the k step (4): K = 1, N = 1, M = 1, one
# short of / one past a tile, several tiles and k steps.
GEMM_PLAN_SHAPES = [(1, 1, 1), (17, 9, 5), (16, 16, 8), (9, 33, 1), (20, 1, 13), (1, 20, 13),
                    (33, 18, 21)]


# Every plan on every shape untransposed, and on two ragged shapes with all four trans
# flags (the flags pick the loaders, which all plans share).
TRANS_FLAGS = [(False, False), (True, False), (False, True), (True, True)]
GEMM_PLAN_CASES = [(shape, plan, ta, tb) for shape in GEMM_PLAN_SHAPES for plan in GEMM_PLANS
                   for ta, tb in (TRANS_FLAGS if shape in ((17, 9, 5), (33, 18, 21))
                                  else TRANS_FLAGS[:1])]


@pytest.mark.parametrize("shape,plan,trans_a,trans_b", GEMM_PLAN_CASES,
                         ids=["x".join(map(str, s)) + f"-{p[0]}-split{p[1]}-t{a:d}{b:d}"
                              for s, p, a, b in GEMM_PLAN_CASES])
def test_gemm_each_plan(nc, shape, plan, trans_a, trans_b):
    M, N, K = shape
    a = rand((K, M) if trans_a else (M, K), M + 1)
    b = rand((N, K) if trans_b else (K, N), N + 2)
    c = rand((1, N), K + 3)
    y = nc.gemm(a, b, c, 1.5, -0.5, trans_a, trans_b, path=plan[0], splits=plan[1])
    opa, opb = (a.T if trans_a else a), (b.T if trans_b else b)
    want = 1.5 * (opa.astype(np.float64) @ opb) - 0.5 * c
    assert_close(y, want, reduction=K, case=f"cuda gemm {shape} {plan} t{trans_a:d}{trans_b:d}")


def test_gemm_plan_rule(nc):
    """Big tile while it gives 1.5 blocks per SM, split if need be into slices of at least
    MIN_BIG_SLICE_STEPS k steps; else the small tile, split into slices of at least
    MIN_SPLIT_STEPS k steps up to 4 blocks per SM; never into empty slices."""
    big, small, tk = nc.TILE_BIG, nc.TILE_SMALL, nc.TILE_K
    big_slice, small_slice = nc.MIN_BIG_SLICE_STEPS, nc.MIN_SPLIT_STEPS
    assert nc.gemm_plan(4 * big, 4 * big, 64, sms=8) == ("big", 1)   # 16 blocks >= 12
    assert nc.gemm_plan(4 * big, 2 * big, 64, groups=2, sms=8) == ("big", 1)
    # 16 big blocks on 16 SMs (24 wanted): 2 slices where k holds two big slices ...
    assert nc.gemm_plan(4 * big, 4 * big, tk * 2 * big_slice, sms=16) == ("big", 2)
    # ... else the 64 small blocks, already 4 per SM
    assert nc.gemm_plan(4 * big, 4 * big, tk * (2 * big_slice - 1), sms=16) == ("small", 1)
    # SGEMM 1024^3 on 132 SMs: 64 big blocks x at most 2 slices < 198 -> 256 small x 3
    assert nc.gemm_plan(8 * big, 8 * big, tk * 128, sms=132) == ("small", 3)
    # M = one small tile: the big tile would be half padding (VGG conv1_2's 64 channels)
    assert nc.gemm_plan(small, 64 * big, 64, sms=8) == ("small", 1)
    assert nc.gemm_plan(big - small // 2, 64 * big, 64, sms=8) == ("big", 1)  # 96 of 128
    # a batch-1 layer: 6 small blocks on 132 SMs, long k -> 50 slices of 32 steps
    assert nc.gemm_plan(2 * small, 3 * small, tk * 1600, sms=132) == ("small", 50)
    # short k: no slice under MIN_SPLIT_STEPS k steps
    assert nc.gemm_plan(2 * small, 3 * small, tk * 2 * small_slice, sms=132) == ("small", 2)
    assert nc.gemm_plan(2 * small, 3 * small, tk * 5, sms=132) == ("small", 1)
    assert nc.gemm_plan(1, 1, tk * 10 ** 6, sms=132)[1] == nc.MAX_SPLITS
    for steps in range(1, 60):
        for want in (1, 2, 3, 7, 16, 64):
            got = nc._even_splits(steps * tk, want)
            per = -(-steps // got)
            assert 1 <= got <= max(1, min(want, steps)) and (got - 1) * per < steps, \
                (steps, want, got)


def test_split_k_workspace_is_reused(nc):
    """Split-K slices go to a per-thread buffer that grows, not a fresh allocation."""
    nc._workspace((2, 3, 4))
    first = nc._workspace((3, 5))
    assert first.shape == (3, 5)
    again = nc._workspace((2, 7))
    assert again.shape == (2, 7)
    bigger = nc._workspace((40, 50))
    assert bigger.shape == (40, 50)
    a, b = rand((20, 16), 1), rand((16, 9), 2)  # results stay right across reuse
    for splits in (2, 4, 3):
        y = nc.gemm(a, b, None, 1.0, 0.0, False, False, path="small", splits=splits)
        assert_close(y, a.astype(np.float64) @ b, reduction=16, case=f"reuse split {splits}")


def test_sm_count(nc, cuda):
    if nc.SIMULATOR:
        assert nc.sm_count() == nc.SIMULATED_SM_COUNT
    else:
        assert nc.sm_count() == cuda.get_current_device().MULTIPROCESSOR_COUNT


# ---------------------------------------------------------------------------- GEMV

# (out_features, in_features) around the simulator's GEMV block (4 features) and lane
# sweep (8 lanes x 2 unrolled = 16 inputs): 1, ragged, several blocks and sweeps.
GEMV_SHAPES = [(1, 1), (5, 7), (9, 37), (4, 16)]


def _check_gemv(nc, rows, shape, bias, activation):
    out_f, in_f = shape
    x, w = rand((rows, in_f), rows), rand((out_f, in_f), in_f)
    b = rand((out_f,), out_f) if bias else None
    y = nc.linear(x, w, b, activation=activation, path="gemv")
    want = x.astype(np.float64) @ w.T + (0 if b is None else b)
    if activation == "relu":
        want = np.maximum(want, 0)
    assert_close(y, want, reduction=in_f, case=f"gemv rows={rows} {shape} {bias} {activation}")


@pytest.mark.parametrize("rows", [1, 2, 4, 5, 8])
def test_linear_gemv_rows(nc, rows):
    """Each kernel (1, 2, 4 and 8 rows) and a count between them (5: the 8-row kernel with
    rows repeated; test_linear_gemv_shapes has 3), with bias + ReLU on odd counts and
    neither on even ones."""
    odd = rows % 2 == 1
    _check_gemv(nc, rows, (9, 37), odd, "relu" if odd else None)


@pytest.mark.parametrize("rows", [1, 3, 8])
@pytest.mark.parametrize("shape", GEMV_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear_gemv_shapes(nc, rows, shape):
    _check_gemv(nc, rows, shape, rows != 3, "relu" if rows == 8 else None)


def test_gemm_gemv_alpha_beta_broadcast(nc):
    """gemm(a, b.T) with few rows takes the GEMV, with gemm's epilogue."""
    a, b = rand((3, 21), 1), rand((6, 21), 2)
    for c in (rand((3, 6), 3), rand((1, 6), 4), rand((3, 1), 5), None):
        y = nc.gemm(a, b, c, -2.0, 0.25, False, True, path="gemv")
        want = -2.0 * (a.astype(np.float64) @ b.T) + (0 if c is None else 0.25 * c)
        case = f"gemv gemm c={None if c is None else c.shape}"
        assert_close(y, want, reduction=21, case=case)


def test_gemv_path_errors(nc):
    with pytest.raises(ValueError, match="the gemv path takes a @ b.T"):
        nc.gemm(rand((3, 4), 1), rand((5, 4), 2), None, 1.0, 0.0, True, True, path="gemv")
    with pytest.raises(ValueError, match="the gemv path takes a @ b.T"):
        nc.linear(rand((9, 4), 1), rand((5, 4), 2), None, path="gemv")
    with pytest.raises(ValueError, match="unknown gemm path"):
        nc.linear(rand((2, 4), 1), rand((5, 4), 2), None, path="winograd")


@pytest.fixture
def gemv_calls(nc, monkeypatch):
    calls = []
    launch = nc._launch_gemv

    def counting(x, *args):
        calls.append(x.shape[0])
        return launch(x, *args)

    monkeypatch.setattr(nc, "_launch_gemv", counting)
    return calls


def test_auto_linear_takes_gemv_up_to_8_rows(nc, gemv_calls):
    w, b = rand((6, 10), 1), rand((6,), 2)
    for rows in (1, nc.GEMV_MAX_ROWS, nc.GEMV_MAX_ROWS + 1):
        x = rand((rows, 10), rows)
        y = fc.linear(x, w, b, backend="cuda")
        assert_close(y, x.astype(np.float64) @ w.T + b, reduction=10, case=f"auto rows={rows}")
    assert gemv_calls == [1, nc.GEMV_MAX_ROWS]  # 9 rows went to the tiled GEMM


def test_network_linear_at_batch_1_takes_gemv(nc, gemv_calls):
    """The runner binds the backend's linear: at batch 1 on cuda that is the GEMV."""
    from fastconv import nn

    model = nn.Sequential(("fc1", nn.Linear(12, 7, rng=np.random.default_rng(1))),
                          ("relu1", nn.ReLU()),
                          ("fc2", nn.Linear(7, 3, rng=np.random.default_rng(2))))
    x = rand((1, 12), 3)
    with fc.use_backend("cuda"):
        y = model(x)
    with fc.use_backend("naive"):
        ref = model(x)
    assert_close(y, ref, reduction=12, case="Linear-ReLU-Linear at batch 1")
    assert gemv_calls == [1, 1]


@pytest.mark.parametrize("c_shape", [(), (7,), (1, 7), (5, 1), (5, 7)])
def test_gemm_device_c_broadcast_by_index(cuda, c_shape):
    """A device c is not copied into an (M, N) buffer: the epilogue broadcasts it."""
    a, b = rand((5, 3), 1), rand((3, 7), 2)
    c = rand(c_shape, 3)
    y = fc.gemm(cuda.to_device(a), cuda.to_device(b), cuda.to_device(c), beta=1.5)
    assert_close(y.copy_to_host(), a @ b + 1.5 * c, reduction=3, case=f"device c {c_shape}")


# ---------------------------------------------------------------------------- residency


def test_device_in_device_out_host_in_host_out(cuda):
    x = rand((2, 3, 8, 8), 4)
    y_host = fc.max_pool2d(x, 2, backend="cuda")
    assert isinstance(y_host, np.ndarray)
    y_dev = fc.max_pool2d(cuda.to_device(x), 2)  # auto: a device array goes to cuda
    assert _checks.is_device_array(y_dev) and not isinstance(y_dev, np.ndarray)
    assert_close(y_dev.copy_to_host(), y_host, rtol=0, atol=0, case="device vs host input")


def test_network_stays_on_device(cuda):
    """A small forward pass (conv-relu-pool-lrn-gap-linear-softmax) on device arrays:
    every intermediate is a device array, and only the end is copied back."""
    x, w, b = rand((2, 3, 12, 12), 5), rand((8, 3, 3, 3), 6), rand((8,), 7)
    fw, fb = rand((4, 8), 8), rand((4,), 9)

    def forward(x, backend):
        with fc.use_backend(backend):
            h = fc.conv2d(x, w, b, padding=1, activation="relu")
            h = fc.local_response_norm(fc.max_pool2d(h, 3, stride=2), 3)
            h = fc.batch_norm(h, rand((8,), 10), rand((8,), 11) ** 2 + 0.5)
            h = fc.global_avg_pool2d(fc.relu(h))
            trail = [h]
            return fc.softmax(fc.linear(h.reshape(2, 8), fw, fb), axis=1), trail

    y_dev, trail = forward(cuda.to_device(x), "auto")
    assert all(_checks.is_device_array(t) for t in trail + [y_dev])
    y_ref, _ = forward(x, "naive")
    assert_close(y_dev.copy_to_host(), y_ref, reduction=27, case="device network vs naive")


def test_auto_never_sends_host_arrays_to_cuda():
    assert "cuda" not in _registry.AUTO_ORDER
    name, _ = _registry.resolve("relu", "auto", on_device=False)
    assert name != "cuda"


def test_device_array_rejected_by_host_backend(cuda):
    xd = cuda.to_device(rand((1, 2, 4, 4), 1))
    for backend in ("c", "numpy", "naive"):
        with pytest.raises(TypeError, match=f"backend '{backend}' works on host arrays"):
            fc.relu(xd, backend=backend)


def test_device_array_dtype_and_layout_errors(cuda):
    with pytest.raises(TypeError, match="x is a device array of dtype float64"):
        fc.relu(cuda.to_device(np.zeros((2, 3))))
    strided = cuda.to_device(np.zeros((4, 6), np.float32))[:, ::2]
    with pytest.raises(ValueError, match="non-contiguous device array"):
        fc.relu(strided)


def test_empty_device_input_gives_device_zeros(cuda):
    y = fc.max_pool2d(cuda.to_device(np.zeros((0, 3, 4, 4), np.float32)), 2)
    assert _checks.is_device_array(y) and y.shape == (0, 3, 2, 2)


def test_backends_and_info_name_the_cuda_kind(nc):
    assert "cuda" in fc.backends()
    kind = fc.info()["cuda"]
    assert ("simulator" in kind) == nc.SIMULATOR, kind


# ---------------------------------------------------------------------------- real GPU only


class _InterfaceOnly:
    """An array known only by ``__cuda_array_interface__`` (what CuPy and PyTorch expose)."""

    def __init__(self, device_array):
        self._keep = device_array
        self.__cuda_array_interface__ = device_array.__cuda_array_interface__


@pytest.mark.gpu
def test_cuda_array_interface_objects(nc, cuda):
    needs_gpu(nc)
    x = rand((2, 3, 9, 9), 3)
    y = fc.relu(_InterfaceOnly(cuda.to_device(x)))
    assert_close(y.copy_to_host(), np.maximum(x, 0), rtol=0, atol=0, case="CAI relu")


@pytest.mark.gpu
@pytest.mark.parametrize("layer", ["alexnet.conv2", "alexnet.conv3", "vgg16.conv3_2",
                                   "resnet50.res2_1x1c", "lenet5.conv2.b64"])
def test_real_layers_against_c(nc, layer):
    """Seed layers at full size against the C backend (GPU tiles: 128 and 64, k step 8)."""
    needs_gpu(nc)
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from layers import CONV_LAYERS

    N, C, H, W, K, R, S, stride, pad, groups = {e[0]: e[1:] for e in CONV_LAYERS}[layer]
    x, w, b = rand((N, C, H, W), 1), rand((K, C // groups, R, S), 2), rand((K,), 3)
    kw = dict(stride=stride, padding=pad, groups=groups)
    y = fc.conv2d(x, w, b, backend="cuda", **kw)
    assert_close(y, fc.conv2d(x, w, b, backend="c", **kw), reduction=(C // groups) * R * S,
                 case=f"{layer} cuda vs c")


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(1024, 1024, 1024), (1000, 999, 1001), (384, 169, 2304)],
                         ids=lambda s: "x".join(map(str, s)))
def test_real_gemm_sizes_auto(nc, shape):
    """Sizes that take the big tile, the small one with ragged edges, and split-K."""
    needs_gpu(nc)
    M, N, K = shape
    a, b = rand((M, K), 1), rand((K, N), 2)
    y = fc.gemm(a, b, backend="cuda")
    assert_close(y, a.astype(np.float64) @ b, reduction=K,
                 case=f"gemm {shape} {nc.gemm_plan(M, N, K)}")


@pytest.mark.gpu
@pytest.mark.parametrize("rows", [1, 3, 8])
def test_real_gemv_fc6(nc, rows):
    """AlexNet FC6 (9216 -> 4096) at small batch, through the GEMV."""
    needs_gpu(nc)
    x, w, b = rand((rows, 9216), 1), rand((4096, 9216), 2), rand((4096,), 3)
    y = fc.linear(x, w, b, backend="cuda")
    assert_close(y, x.astype(np.float64) @ w.T.astype(np.float64) + b, reduction=9216,
                 case=f"fc6 rows={rows}")
