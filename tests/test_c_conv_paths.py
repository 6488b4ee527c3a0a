"""Every C conv2d algorithm, forced, against the spec; and the "auto" choice per named layer.

``fastconv.backends.c.conv2d(..., algorithm=...)`` forces one of csrc/conv.c's algorithms
(the public ``fastconv.conv2d`` always runs "auto"). The grid hits ragged edges of every
tile: pixel counts not multiples of 6 / 16, output channels not multiples of 6 / 16,
asymmetric padding, strides, dilation, groups, bias / no bias, ReLU / none. Small shapes use
the naive backend (the spec); larger ones a float64 NumPy reference.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from fastconv import _checks
from fastconv.backends import naive

from helpers import assert_close, case_seed, rand

c = pytest.importorskip("fastconv.backends.c")
HERE = os.path.dirname(os.path.abspath(__file__))

ALGOS = [a for a in c.CONV_ALGORITHMS]

# (N, C, H, W, K, R, S, stride, padding, dilation, groups)
GRID = [
    (1, 3, 9, 11, 7, 3, 3, 1, (1, 2, 0, 1), 1, 1),   # asymmetric pads, K < 16
    (2, 6, 14, 14, 16, 5, 5, 1, 0, 1, 1),            # LeNet conv2, 2 images
    (1, 1, 12, 12, 6, 5, 5, 1, 0, 1, 1),             # LeNet conv1-like, C = 1
    (1, 8, 10, 9, 20, 3, 3, 2, 1, 1, 2),             # stride 2, groups 2
    (2, 5, 7, 7, 13, 1, 1, 1, 0, 1, 1),              # 1x1, 49 pixels, K = 13
    (1, 16, 5, 6, 6, 1, 1, 1, 0, 1, 2),              # 1x1 grouped
    (1, 4, 9, 9, 6, 3, 3, 1, 2, 2, 1),               # dilation 2
    (1, 4, 8, 8, 4, 3, 3, 1, 1, 1, 4),               # depthwise
    (1, 3, 23, 23, 17, 11, 11, 4, 0, 1, 1),          # AlexNet conv1-like, stride 4
    (3, 7, 5, 17, 33, 3, 3, 1, 1, 1, 1),             # odd H/W, K = 33
    (1, 7, 13, 13, 12, 3, 1, (2, 1), (0, 0, 3, 1), 1, 1),  # non-square kernel/stride, pads at end
]
BIG = [
    (1, 40, 13, 13, 50, 3, 3, 1, 1, 1, 2),
    (1, 300, 6, 5, 37, 1, 1, 1, 0, 1, 1),            # 1x1, reduction > 256 (chunked)
    (2, 33, 19, 21, 70, 3, 3, 1, 1, 1, 1),
    (1, 130, 29, 27, 131, 3, 3, 1, (1, 0, 2, 1), 1, 1),  # winograd by auto, odd P/Q
]


def _ref64(x, w, b, p, activation):
    """float64 im2col reference (independent of the C code)."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    xp = np.pad(x, ((0, 0), (0, 0), (p.pad_top, p.pad_bottom), (p.pad_left, p.pad_right)))
    Cg, Kg = p.C // p.groups, p.K // p.groups
    y = np.zeros((p.N, p.K, p.P, p.Q))
    for g in range(p.groups):
        for r in range(p.R):
            for s in range(p.S):
                h0, w0 = r * p.dil_h, s * p.dil_w
                win = xp[:, g * Cg:(g + 1) * Cg, h0:h0 + (p.P - 1) * p.stride_h + 1:p.stride_h,
                         w0:w0 + (p.Q - 1) * p.stride_w + 1:p.stride_w]
                y[:, g * Kg:(g + 1) * Kg] += np.einsum("nchw,kc->nkhw", win,
                                                       w[g * Kg:(g + 1) * Kg, :, r, s])
    if b is not None:
        y += b[None, :, None, None]
    if activation == "relu":
        y = np.maximum(y, 0)
    return y


def _case(shape, bias, activation):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = shape
    seed = case_seed(f"{shape}{bias}{activation}")
    x = rand((N, C, H, W), seed)
    w = rand((K, C // groups, R, S), seed + 1)
    b = rand((K,), seed + 2) if bias else None
    p = _checks.check_conv2d(x, w, b, stride, padding, dilation, groups)
    return x, w, b, p


def _supported(algo, p):
    return bool(c.lib.fc_conv2d_supports(c.CONV_ALGORITHMS[algo], *c._shape(p)))


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", GRID, ids=str)
@pytest.mark.parametrize("algo", ALGOS)
def test_forced_algorithm_matches_spec(algo, shape, bias, activation):
    x, w, b, p = _case(shape, bias, activation)
    if not _supported(algo, p):
        with pytest.raises(ValueError, match="cannot run this shape"):
            c.conv2d(x, w, b, p, activation, algo)
        return
    y = c.conv2d(x, w, b, p, activation, algo)
    ref = naive.conv2d(x, w, b, p, activation)
    assert_close(y, ref, reduction=p.C // p.groups * p.R * p.S, case=f"{algo} {shape}",
                 dtype=np.float32)


@pytest.mark.parametrize("shape", BIG, ids=str)
@pytest.mark.parametrize("algo", ALGOS)
def test_forced_algorithm_bigger_shapes(algo, shape):
    x, w, b, p = _case(shape, True, "relu")
    if not _supported(algo, p):
        with pytest.raises(ValueError, match="cannot run this shape"):
            c.conv2d(x, w, b, p, "relu", algo)
        return
    y = c.conv2d(x, w, b, p, "relu", algo)
    assert_close(y, _ref64(x, w, b, p, "relu"), reduction=p.C // p.groups * p.R * p.S,
                 case=f"{algo} {shape}")


# The indirect conv hands each thread a contiguous range of (image, group, pixel part,
# panel) passes; these shapes make the ranges start and end inside a group's panels, cross
# images and groups (the thread's packed panels must follow the group), and split the
# pixels when there are fewer passes than threads (one 16-channel panel at batch 1).
THREAD_SHAPES = [
    (1, 40, 13, 13, 50, 3, 3, 1, 1, 1, 2),
    (3, 6, 14, 14, 80, 5, 5, 1, 2, 1, 2),
    (1, 1, 64, 64, 16, 5, 5, 1, 0, 1, 1),
]


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
@pytest.mark.parametrize("shape", THREAD_SHAPES, ids=str)
def test_thread_counts_agree(threads, shape):
    import fastconv

    x, w, b, p = _case(shape, True, "relu")
    before = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)
        for algo in ALGOS:
            if _supported(algo, p):
                assert_close(c.conv2d(x, w, b, p, "relu", algo), _ref64(x, w, b, p, "relu"),
                             reduction=p.C // p.groups * p.R * p.S,
                             case=f"{algo} {threads} threads")
    finally:
        fastconv.set_num_threads(before)


_STEAL_SCRIPT = r"""
import sys
import numpy as np
import fastconv
from fastconv.backends import c
sys.path.insert(0, %r)
from test_c_conv_paths import THREAD_SHAPES, _case, _ref64
from helpers import assert_close
# THREAD_SHAPES, plus runs cut into chunks (small panels, many pixels) and, where a run's
# pixels make one chunk, into pieces (6x6 outputs: 6 blocks of 6 pixels); every shape has
# the work for 5 threads (fc_threads_for)
for shape in THREAD_SHAPES + [(4, 3, 40, 40, 24, 3, 3, 1, 1, 1, 1),
                              (1, 96, 27, 27, 64, 5, 5, 1, 2, 1, 2),
                              (2, 64, 6, 6, 80, 3, 3, 1, 1, 1, 1), (3, 32, 7, 7, 80, 3, 3, 1, 1, 1, 2)]:
    x, w, b, p = _case(shape, True, "relu")
    fastconv.set_num_threads(1)
    one = c.conv2d(x, w, b, p, "relu", "indirect")
    for threads in (2, 3, 5):
        fastconv.set_num_threads(threads)
        y = c.conv2d(x, w, b, p, "relu", "indirect")
        assert np.array_equal(y, one), (shape, threads)  # same sums, whoever runs them
        assert_close(y, _ref64(x, w, b, p, "relu"), reduction=p.C // p.groups * p.R * p.S,
                     case=f"indirect {shape} {threads} threads, stealing first")
print("ok")
"""


def test_indirect_conv_items_taken_by_other_threads():
    """The indirect conv's threads take work items off the ends of the others' ranges when
    done with their own (csrc/conv_fast.c). FASTCONV_TEST_STEAL_FIRST=1 makes every thread
    do that first, so that every item runs on a thread that did not own it: it must pack
    the panel and pad the image-group itself, and the outputs must equal one thread's."""
    env = dict(os.environ, FASTCONV_TEST_STEAL_FIRST="1")
    res = subprocess.run([sys.executable, "-c", _STEAL_SCRIPT % HERE], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "ok" in res.stdout, res.stdout + res.stderr


def test_unknown_algorithm():
    x, w, b, p = _case(GRID[0], True, None)
    with pytest.raises(ValueError, match="unknown conv2d algorithm"):
        c.conv2d(x, w, b, p, None, "fft")


# The auto policy documented in csrc/conv.c (fc_conv2d_choose), per named layer:
# (name, N, C, H, W, K, R, S, stride, pad, groups, algorithm)
NAMED = [
    ("alexnet.conv1", 1, 3, 227, 227, 96, 11, 11, 4, 0, 1, "indirect"),
    ("alexnet.conv2", 1, 96, 27, 27, 256, 5, 5, 1, 2, 2, "indirect"),
    ("alexnet.conv3", 1, 256, 13, 13, 384, 3, 3, 1, 1, 1, "indirect"),
    ("alexnet.conv4", 1, 384, 13, 13, 384, 3, 3, 1, 1, 2, "indirect"),
    ("alexnet.conv5", 1, 384, 13, 13, 256, 3, 3, 1, 1, 2, "indirect"),
    ("vgg16.conv1_2", 1, 64, 224, 224, 64, 3, 3, 1, 1, 1, "winograd"),
    ("vgg16.conv3_2", 1, 256, 56, 56, 256, 3, 3, 1, 1, 1, "winograd"),
    ("vgg16.conv5_2", 1, 512, 14, 14, 512, 3, 3, 1, 1, 1, "gemm"),
    ("resnet50.res2_1x1a", 1, 64, 56, 56, 64, 1, 1, 1, 0, 1, "gemm"),
    ("resnet50.res2_1x1c", 1, 64, 56, 56, 256, 1, 1, 1, 0, 1, "gemm"),
    ("resnet50.res3_1x1a", 1, 512, 28, 28, 128, 1, 1, 1, 0, 1, "1x1"),
    ("resnet50.res4_1x1c", 1, 256, 14, 14, 1024, 1, 1, 1, 0, 1, "1x1"),
    ("resnet50.res5_1x1a", 1, 2048, 7, 7, 512, 1, 1, 1, 0, 1, "1x1"),
    ("lenet5.conv1.b1", 1, 1, 32, 32, 6, 5, 5, 1, 0, 1, "indirect"),
    ("lenet5.conv2.b1", 1, 6, 14, 14, 16, 5, 5, 1, 0, 1, "indirect"),
    ("lenet5.conv1.b64", 64, 1, 32, 32, 6, 5, 5, 1, 0, 1, "indirect"),
    ("lenet5.conv2.b64", 64, 6, 14, 14, 16, 5, 5, 1, 0, 1, "indirect"),
    ("depthwise3x3", 1, 32, 56, 56, 32, 3, 3, 1, 1, 32, "direct"),
    ("resnet50.res4_3x3s2", 1, 512, 14, 14, 512, 3, 3, 2, 1, 1, "indirect"),
]


def _named_params(layer):
    _, N, C, H, W, K, R, S, stride, pad, groups, _ = layer
    return _checks.check_conv2d(np.empty((N, C, H, W), np.float32),
                                np.empty((K, C // groups, R, S), np.float32), None, stride,
                                pad, 1, groups)


@pytest.mark.parametrize("layer", NAMED, ids=lambda l: l[0])
def test_auto_choice_per_named_layer(layer):
    name, expected = layer[0], layer[-1]
    assert c.conv2d_choose(_named_params(layer)) == expected, name


# The planner's pick (fc_conv2d_choose_planned): weights prepared once per plan make
# Winograd pay on 3x3 stride-1 layers with enough channels, and the packed GEMM on 1x1
# layers and on small outputs with many weights.
PLANNED = {"alexnet.conv3": "winograd", "alexnet.conv4": "winograd", "alexnet.conv5": "winograd",
           "vgg16.conv1_2": "winograd", "vgg16.conv3_2": "winograd", "vgg16.conv5_2": "winograd",
           "resnet50.res3_1x1a": "gemm", "resnet50.res4_1x1c": "gemm",
           "resnet50.res5_1x1a": "gemm", "resnet50.res4_3x3s2": "gemm"}


@pytest.mark.parametrize("layer", NAMED, ids=lambda l: l[0])
def test_planned_choice_per_named_layer(layer):
    name, auto = layer[0], layer[-1]
    planned = c._ALGO_NAMES[c.lib.fc_conv2d_choose_planned(*c._shape(_named_params(layer)))]
    assert planned == PLANNED.get(name, auto), name


# (N, C, H, W, K, R, stride, padding, groups): shapes the planner sends to prepacked
# Winograd (ragged P/Q, asymmetric pads, groups, batch), to the prepacked GEMM (1x1 with and
# without stride, a strided 3x3 with 64K+ weights, grouped, C = 3 over many pixels), and to
# neither (C = 32).
PREPARED = [
    ((1, 96, 7, 9, 100, 3, 1, 1, 1), "winograd"),
    ((2, 128, 6, 5, 96, 3, 1, (1, 0, 2, 1), 1), "winograd"),
    ((1, 192, 5, 5, 192, 3, 1, 1, 2), "winograd"),
    ((2, 40, 7, 6, 33, 1, 1, 0, 1), "gemm"),
    ((1, 48, 9, 7, 70, 1, 2, 0, 1), "gemm"),
    ((1, 128, 9, 9, 130, 3, 2, 1, 1), "gemm"),
    ((2, 256, 5, 6, 512, 3, 2, 1, 2), "gemm"),
    ((1, 64, 8, 8, 40, 3, 1, 1, 1), "winograd"),
    ((1, 32, 8, 8, 32, 3, 1, 1, 1), "indirect"),
    ((1, 3, 70, 64, 8, 3, 1, 1, 1), "gemm"),
]


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape,planned", PREPARED, ids=str)
def test_prepared_conv2d_matches_conv2d(shape, planned, bias, activation):
    """prepare_conv2d (the network plan's conv) computes what conv2d computes: bit for bit
    the forced algorithm the planner picked, and the spec within float32 rounding."""
    N, C, H, W, K, R, stride, padding, groups = shape
    x, w, b, p = _case((N, C, H, W, K, R, R, stride, padding, 1, groups), bias, activation)
    assert c._ALGO_NAMES[c.lib.fc_conv2d_choose_planned(*c._shape(p))] == planned
    run = c.prepare_conv2d(w, b, p, activation)
    y = run(x)
    np.testing.assert_array_equal(y, c.conv2d(x, w, b, p, activation, planned))
    assert_close(y, _ref64(x, w, b, p, activation), reduction=C // groups * R * R,
                 case=str(shape))
    out = np.full(p.out_shape, np.nan, np.float32)
    assert run(x, out=out) is out
    np.testing.assert_array_equal(out, y)


def test_prepared_winograd_falls_back_on_non_finite_values():
    x, w, b, p = _case((1, 96, 6, 6, 96, 3, 3, 1, 1, 1, 1), True, None)
    run = c.prepare_conv2d(w, b, p, None)
    x[0, 5, 2, 3] = np.inf  # Winograd's transforms would turn the inf into NaN (inf - inf)
    np.testing.assert_array_equal(run(x), c.conv2d(x, w, b, p, None, "indirect"))
    w_inf = w.copy()
    w_inf[3, 0, 1, 1] = -np.inf
    x[0, 5, 2, 3] = 0.5
    np.testing.assert_array_equal(c.prepare_conv2d(w_inf, b, p, None)(x),
                                  c.conv2d(x, w_inf, b, p, None, "auto"))


def test_network_plan_uses_prepared_winograd():
    """A planned Conv2d on the c backend gives the prepacked Winograd result bit for bit."""
    import fastconv
    from fastconv import nn

    layer = nn.Conv2d(128, 128, 3, padding=1)
    model = nn.Sequential(layer)
    x = rand((1, 128, 10, 10), 7)
    with fastconv.use_backend("c"):
        y = model(x)
    p = _checks.check_conv2d(x, layer.weight, layer.bias, 1, 1, 1, 1)
    np.testing.assert_array_equal(y, c.conv2d(x, layer.weight, layer.bias, p, None,
                                              "winograd"))


# Peak RSS from /proc/self/status VmHWM, the high-water mark of this process image:
# getrusage's ru_maxrss would also carry the parent's peak over the fork + exec (Linux
# keeps the larger of the two), and the pytest parent may be bigger than this script.
_RSS_SCRIPT = r"""
import sys, numpy as np
import fastconv
from fastconv import _checks
from fastconv.backends import c

def hwm_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

x = np.ones((8, 64, 224, 224), np.float32)
w = np.ones((64, 64, 3, 3), np.float32) * 0.01
p = _checks.check_conv2d(x, w, None, 1, 1, 1, 1)
y = c.conv2d(x, w, None, p, None, "auto")  # warm-up: pages of x and y touched
base = hwm_kb()
y = None
y = c.conv2d(x, w, None, p, None, "auto")
peak = hwm_kb()
print(base, peak, x.nbytes + y.nbytes)
"""


def test_workspace_bounded_vgg_conv1_2_batch8():
    """Peak RSS of VGG conv1_2 at batch 8 stays near input + output: no whole-layer im2col
    (that alone would be 9 x 103 MB = 925 MB)."""
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT], capture_output=True, text=True,
                         env=dict(os.environ), timeout=300)
    assert out.returncode == 0, out.stderr
    base_kb, peak_kb, io_bytes = map(int, out.stdout.split())
    # The second call may hold the old and the new y at once; its own workspace is bounded
    # by one padded image-group (64 x 226 x 226 floats = 13 MB) plus packed weights.
    assert peak_kb * 1024 < 1.6 * io_bytes + 64 * 2**20, (peak_kb, io_bytes)
