"""fastconv.onnx: single-op models against ONNX Runtime, the light model zoo, and errors.

Every per-op test builds a one-node model (constant inputs as initializers, the rest as
graph inputs), runs it on ONNX Runtime and through ``fastconv.onnx.from_model`` on the
default backend, and compares with the suite's ``assert_close``. The importer's job is
the mapping (pads order, auto_pad, opset differences ...); the kernels themselves are
tested per backend elsewhere.

The real models are the light versions of bvlc_alexnet, zfnet512, vgg19, inception_v1
and resnet50 that the onnx package ships: their weights are ConstantOfShape fills of
0.02, so ``fastconv.onnx.randomized`` turns them into seeded random initializers first, and
the Softmax's input is exposed as a second output so that the logits are compared too
(random networks often saturate the softmax).
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

import fastconv
from fastconv import nn

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fastconv.onnx as fonnx  # noqa: E402
from conftest import check_usable  # noqa: E402

from helpers import assert_close, case_seed, ort_run_model, rand  # noqa: E402

# --------------------------------------------------------------------------- model builders


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)  # what ORT 1.32 reads
    return model


def single_node(op, inputs, attrs=None, *, const=(), opset=17):
    """(model, feeds): one ``op`` node on ``inputs`` (arrays; None = omitted). Inputs whose
    index is in ``const`` become initializers, the others graph inputs."""
    names, graph_inputs, inits, feeds = [], [], [], {}
    for i, arr in enumerate(inputs):
        if arr is None:
            names.append("")
            continue
        name, arr = f"in{i}", np.asarray(arr)
        names.append(name)
        if i in const:
            inits.append(numpy_helper.from_array(arr, name))
        else:
            elem = helper.np_dtype_to_tensor_dtype(arr.dtype)
            graph_inputs.append(helper.make_tensor_value_info(name, elem, arr.shape))
            feeds[name] = arr
    node = helper.make_node(op, names, ["out"], name=f"the_{op.lower()}", **(attrs or {}))
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    return _model([node], graph_inputs, [out], inits, opset), feeds


def check(op, inputs, attrs=None, *, const=(), opset=17, reduction=1, case=""):
    """ONNX Runtime vs fastconv on a one-node model; returns the fastconv Graph."""
    model, feeds = single_node(op, inputs, attrs, const=const, opset=opset)
    (expected,) = ort_run_model(model, feeds)
    graph = fonnx.from_model(model)
    actual = graph.run(feeds)["out"]
    assert_close(actual, expected, reduction=reduction,
                 case=case or f"{op} opset {opset} {attrs}")
    return graph


def layer_types(graph):
    return [type(n.layer).__name__ for n in graph.nodes]


# --------------------------------------------------------------------------- conv and pooling

AUTO_PADS = ["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]


def _pad_attrs(auto_pad, pads):
    return {"auto_pad": auto_pad} if auto_pad != "NOTSET" else {"pads": pads}


@pytest.mark.parametrize("auto_pad", AUTO_PADS)
@pytest.mark.parametrize("kernel", [3, 2, 4])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_conv_auto_pad(auto_pad, kernel, stride):
    """SAME_* on odd and even sizes puts the odd extra pad at the end (UPPER) / start (LOWER)."""
    seed = case_seed(f"conv{auto_pad}{kernel}{stride}")
    x, w, b = rand((2, 3, 9, 8), seed), rand((4, 3, kernel, kernel), seed + 1), rand((4,), 2)
    attrs = dict(kernel_shape=[kernel, kernel], strides=[stride, stride],
                 **_pad_attrs(auto_pad, [1, 0, 2, 1]))
    graph = check("Conv", [x, w, b], attrs, const=(1, 2), reduction=3 * kernel * kernel)
    assert layer_types(graph) == ["Conv2d"]


@pytest.mark.parametrize("attrs, groups, bias", [
    (dict(dilations=[2, 1], pads=[2, 1, 2, 1]), 1, True),
    (dict(dilations=[2, 3], strides=[2, 1]), 1, False),
    (dict(group=2, pads=[1, 1, 1, 1]), 2, True),
    (dict(group=4, pads=[0, 1, 1, 0], strides=[2, 2]), 4, True),  # depthwise
    (dict(group=2, auto_pad="SAME_LOWER", strides=[2, 2]), 2, False),
])
def test_conv_dilation_groups(attrs, groups, bias):
    x = rand((2, 4, 10, 9), 3)
    w = rand((8, 4 // groups, 3, 3), 4)
    inputs = [x, w, rand((8,), 5)] if bias else [x, w]
    check("Conv", inputs, attrs, const=(1, 2), reduction=4 * 9 // groups)


POOL_CASES = [(auto_pad, kernel, stride, ceil)
              for auto_pad in AUTO_PADS for kernel in (3, 2) for stride in (1, 2)
              for ceil in (0, 1)]


def _pool_attrs(auto_pad, kernel, stride, ceil):
    # pads [top, left, bottom, right], asymmetric, at most half the kernel
    pads = [1, 0, 0, 1] if kernel == 3 else [0, 1, 1, 0]
    return dict(kernel_shape=[kernel, kernel], strides=[stride, stride], ceil_mode=ceil,
                **_pad_attrs(auto_pad, pads))


@pytest.mark.parametrize("auto_pad, kernel, stride, ceil", POOL_CASES)
def test_max_pool(auto_pad, kernel, stride, ceil):
    x = rand((2, 3, 9, 8), case_seed(f"max{auto_pad}{kernel}{stride}{ceil}"))
    check("MaxPool", [x], _pool_attrs(auto_pad, kernel, stride, ceil))


def test_max_pool_dilation():
    attrs = dict(kernel_shape=[3, 2], strides=[2, 1], dilations=[2, 2], pads=[1, 1, 1, 0],
                 ceil_mode=1)
    check("MaxPool", [rand((1, 2, 11, 9), 6)], attrs)


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("auto_pad, kernel, stride, ceil", POOL_CASES)
def test_average_pool(auto_pad, kernel, stride, ceil, count_include_pad):
    x = rand((2, 3, 9, 8), case_seed(f"avg{auto_pad}{kernel}{stride}{ceil}"))
    attrs = _pool_attrs(auto_pad, kernel, stride, ceil)
    attrs["count_include_pad"] = count_include_pad
    check("AveragePool", [x], attrs, reduction=kernel * kernel)


def test_average_pool_default_excludes_padding():
    """ONNX's count_include_pad defaults to 0 (PyTorch's to True)."""
    graph = check("AveragePool", [rand((1, 2, 5, 5), 7)], dict(kernel_shape=[3, 3],
                                                              pads=[1, 1, 1, 1]))
    assert graph.nodes[0].layer.count_include_pad is False


def test_global_average_pool():
    check("GlobalAveragePool", [rand((2, 5, 7, 6), 8)], reduction=42)


@pytest.mark.parametrize("size", [1, 3, 5])
def test_lrn_odd_sizes(size):
    x = rand((2, 7, 4, 5), size, scale=3.0)
    check("LRN", [x], dict(size=size, alpha=0.02, beta=0.75, bias=2.0))


def _onnx_lrn(x, size, alpha, beta, bias):
    """The ONNX spec's LRN, written out: window c - floor((size-1)/2) .. c + ceil((size-1)/2)."""
    x = x.astype(np.float64)
    C = x.shape[1]
    y = np.empty_like(x)
    for c in range(C):
        lo, hi = max(0, c - (size - 1) // 2), min(C - 1, c + math.ceil((size - 1) / 2))
        y[:, c] = x[:, c] / (bias + alpha / size * (x[:, lo:hi + 1] ** 2).sum(axis=1)) ** beta
    return y


@pytest.mark.parametrize("size", [2, 4])
def test_lrn_even_sizes_use_the_onnx_window(size):
    """ORT refuses even sizes; the spec's window leans the other way from fastconv's
    (PyTorch's), which the importer reproduces by mirroring the channels."""
    x = rand((2, 6, 3, 4), size, scale=3.0)
    model, feeds = single_node("LRN", [x], dict(size=size, alpha=0.05, beta=0.75, bias=1.0))
    actual = fonnx.from_model(model).run(feeds)["out"]
    assert_close(actual, _onnx_lrn(x, size, 0.05, 0.75, 1.0), case=f"LRN size {size}")


# --------------------------------------------------------------------------- gemm and matmul

GEMM_C = {"none": None, "row": (5,), "row2d": (1, 5), "full": (3, 5), "scalar": ()}


@pytest.mark.parametrize("c_shape", list(GEMM_C))
@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (0.5, -2.0)])
@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm(trans_a, trans_b, alpha, beta, c_shape):
    a = rand((4, 3) if trans_a else (3, 4), 9)
    b = rand((5, 4) if trans_b else (4, 5), 10)
    shape = GEMM_C[c_shape]
    inputs = [a, b] + ([] if shape is None else [rand(shape, 11)])
    attrs = dict(alpha=alpha, beta=beta, transA=trans_a, transB=trans_b)
    graph = check("Gemm", inputs, attrs, const=(1, 2), reduction=4)
    fc = not trans_a and alpha == beta == 1 and c_shape in ("none", "row", "row2d")
    assert layer_types(graph) == (["Linear"] if fc else ["_Gemm"])


@pytest.mark.parametrize("a_shape, b_shape, const", [
    ((2, 3, 5), (5, 4), (1,)),          # constant 2-D B: nn.Linear
    ((3, 5), (5, 4), ()),
    ((2, 3, 5), (5,), ()),
    ((5,), (2, 5, 3), ()),
    ((2, 1, 3, 5), (4, 5, 2), ()),
])
def test_matmul(a_shape, b_shape, const):
    graph = check("MatMul", [rand(a_shape, 12), rand(b_shape, 13)], const=const, reduction=5)
    assert layer_types(graph) == (["Linear"] if const else ["_MatMul"])


# --------------------------------------------------------------------------- elementwise


@pytest.mark.parametrize("op, shapes, const", [
    ("Add", [(2, 3, 4, 5), (2, 3, 4, 5)], ()),
    ("Add", [(2, 3, 4, 5), (3, 1, 1)], (1,)),
    ("Add", [(4, 1), (2, 3, 4, 5)], ()),
    ("Sub", [(3, 1, 1), (2, 3, 4, 5)], (0,)),
    ("Mul", [(2, 3, 4, 5), (4, 1)], ()),
    ("Mul", [(2, 3, 4, 5), ()], (1,)),
    ("Div", [(2, 3, 4, 5), (5,)], (1,)),
    ("Sum", [(2, 3, 4, 5), (2, 3, 4, 5), (2, 3, 4, 5)], ()),
    ("Sum", [(2, 3, 4, 5), (1, 3, 1, 1), (5,)], (2,)),
])
def test_elementwise(op, shapes, const):
    inputs = [rand(s, i + 20) for i, s in enumerate(shapes)]
    if op == "Div":
        inputs[1] = rand(shapes[1], 30, low=0.5, high=2.0)
    graph = check(op, inputs, const=const)
    if op in ("Add", "Sum") and not const and len({*shapes}) == 1:
        assert layer_types(graph) == ["Add"]  # nn.Add: the planner fuses a following ReLU


def test_sum_of_one_passes_through():
    check("Sum", [rand((2, 3), 31)])


@pytest.mark.parametrize("op, attrs", [
    ("Relu", {}), ("LeakyRelu", {}), ("LeakyRelu", dict(alpha=0.3)), ("Sigmoid", {}),
])
def test_activations(op, attrs):
    x = rand((2, 3, 4, 5), 32, scale=30.0)  # large magnitudes: Sigmoid must not overflow
    x[0, 0, 0, :3] = [0.0, -0.0, 1e-30]
    check(op, [x], attrs)


@pytest.mark.parametrize("opset, inputs, attrs", [
    (6, [None, None], dict(min=-0.5, max=0.7)),
    (6, [None, None], dict(min=-0.5)),
    (6, [None, None], {}),
    (13, [np.float32(-0.5), np.float32(0.7)], {}),
    (13, [np.float32(-0.5)], {}),
    (13, [None, np.float32(0.7)], {}),
])
def test_clip_attributes_then_inputs(opset, inputs, attrs):
    """Clip's min/max are attributes up to opset 6 and (optional) inputs from opset 11."""
    x = rand((3, 4, 5), 33)
    given = [x] + ([] if opset < 11 else inputs)
    check("Clip", given, attrs, const=(1, 2), opset=opset)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset, axis", [
    (11, None), (11, 0), (11, 1), (11, 2), (11, -1), (13, None), (13, 0), (13, 1), (13, -2),
])
def test_softmax_axis_per_opset(op, opset, axis):
    """Before opset 13: flatten to 2-D at axis (default 1); from 13: along axis (default -1)."""
    x = rand((2, 3, 4, 5), case_seed(f"{op}{opset}{axis}"), scale=5.0)
    check(op, [x], {} if axis is None else dict(axis=axis), opset=opset, reduction=120)


@pytest.mark.parametrize("opset, attrs, extra", [
    (7, dict(ratio=0.3), []),
    (13, {}, [np.float32(0.3)]),
])
def test_dropout_is_identity(opset, attrs, extra):
    graph = check("Dropout", [rand((2, 3), 34)] + extra, attrs, const=(1,), opset=opset)
    assert layer_types(graph) == ["_Identity"]  # only to name the graph output


# --------------------------------------------------------------------------- shapes and constants


@pytest.mark.parametrize("axis", [0, 1, 2, -1, 4])
def test_flatten(axis):
    check("Flatten", [rand((2, 3, 4, 5), 35)], dict(axis=axis))


@pytest.mark.parametrize("shape", [[0, -1], [-1, 20], [0, 3, -1, 2], [4, 0, 10], [120]])
def test_reshape_zero_and_minus_one(shape):
    check("Reshape", [rand((2, 3, 4, 5), 36), np.array(shape, np.int64)], const=(1,))


@pytest.mark.parametrize("shapes, axis, const", [
    ([(2, 3, 4), (2, 5, 4)], 1, ()),
    ([(2, 3, 4), (2, 3, 2)], -1, (1,)),
    ([(1, 3), (2, 3), (3, 3)], 0, (0,)),
])
def test_concat(shapes, axis, const):
    inputs = [rand(s, 40 + i) for i, s in enumerate(shapes)]
    graph = check("Concat", inputs, dict(axis=axis), const=const)
    assert layer_types(graph) == (["_Concat"] if const else ["Concat"])


@pytest.mark.parametrize("opset", [9, 15])
def test_batch_normalization(opset):
    C = 4
    inputs = [rand((2, C, 3, 5), 50), rand((C,), 51), rand((C,), 52), rand((C,), 53),
              rand((C,), 54, low=0.5, high=1.5)]
    graph = check("BatchNormalization", inputs, dict(epsilon=1e-3), const=(1, 2, 3, 4),
                  opset=opset)
    assert layer_types(graph) == ["BatchNorm2d"]


@pytest.mark.parametrize("mode, pads, value", [
    ("constant", [0, 0, 1, 2, 0, 0, 2, 1], 1.5),
    ("constant", [0, 1, -1, 0, 0, 0, 2, -2], None),  # negative pads crop
    ("reflect", [0, 0, 2, 1, 0, 0, 1, 2], None),
    ("edge", [0, 0, 2, 3, 0, 0, 1, 0], None),
])
def test_pad_inputs(mode, pads, value):
    inputs = [rand((2, 3, 4, 5), 55), np.array(pads, np.int64)]
    if value is not None:
        inputs.append(np.array(value, np.float32))
    check("Pad", inputs, dict(mode=mode), const=(1, 2), opset=13)


def test_pad_attributes_and_axes():
    x = rand((2, 3, 4, 5), 56)
    check("Pad", [x], dict(mode="constant", pads=[0, 0, 1, 1, 0, 0, 2, 0], value=-1.0), opset=7)
    check("Pad", [x, np.array([1, 2, 3, 0], np.int64), None, np.array([-1, 2], np.int64)],
          dict(mode="reflect"), const=(1, 3), opset=18)


def test_constant_folding_and_identity():
    """Shape, slices of it, Constant, ConstantOfShape and Concat fold away at load; only
    the run-time arithmetic stays in the graph, and outputs keep their ONNX names."""
    x = rand((2, 3, 4, 5), 57)
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("ConstantOfShape", ["shape"], ["half"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5])),
        helper.make_node("Constant", [], ["two"], value_float=2.0),
        helper.make_node("Mul", ["half", "two"], ["one"]),           # folded: all constant
        helper.make_node("Add", ["x", "one"], ["y"]),
        helper.make_node("Shape", ["x"], ["batch"], start=0, end=1),
        helper.make_node("Constant", [], ["rest"], value_ints=[-1]),
        helper.make_node("Concat", ["batch", "rest"], ["target"], axis=0),
        helper.make_node("Reshape", ["y", "target"], ["flat"]),
        helper.make_node("Identity", ["flat"], ["out"]),
        helper.make_node("Identity", ["two"], ["const_out"]),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                   [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                    for n in ("out", "const_out")])
    expected = ort_run_model(model, {"x": x})
    graph = fonnx.from_model(model)
    assert layer_types(graph) == ["_Elementwise", "_Reshape", "_Identity", "_Constant"]
    got = graph.run({"x": x})
    assert list(got) == ["out", "const_out"]
    assert_close(got["out"], expected[0], case="folded graph")
    assert_close(np.asarray(got["const_out"], np.float32), expected[1], case="constant output")


# --------------------------------------------------------------------------- whole graphs


def _small_net(batch="N"):
    """Conv(SAME_UPPER, stride 2) -> BN -> Relu -> MaxPool -> Flatten -> Gemm -> Softmax."""
    rng = np.random.default_rng(60)
    inits = {
        "w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3,
        "b": rng.standard_normal(8).astype(np.float32),
        "s": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "beta": rng.standard_normal(8).astype(np.float32),
        "mean": rng.standard_normal(8).astype(np.float32),
        "var": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "fc": rng.standard_normal((10, 8 * 3 * 3)).astype(np.float32) * 0.1,
        "fcb": rng.standard_normal(10).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], auto_pad="SAME_UPPER", strides=[2, 2],
                         kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c", "s", "beta", "mean", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
    ]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 11, 11])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("prob",
                                                                                "logits")]
    return _model(nodes, [x_info], outs, [numpy_helper.from_array(v, k)
                                          for k, v in inits.items()], opset=11)


@pytest.mark.parametrize("batch", [1, 3])
def test_symbolic_batch_runs_at_any_batch(batch):
    model = _small_net()
    graph = fonnx.from_model(model)
    x = rand((batch, 3, 11, 11), 61 + batch)
    prob, logits = ort_run_model(model, {"x": x})
    out = graph.run({"x": x})
    assert_close(out["logits"], logits, reduction=72, case=f"logits batch {batch}")
    assert_close(graph(x)[0], prob, case=f"prob batch {batch}")
    # the planner folded the BN into the conv and fused the ReLU: conv, pool, flatten, fc, softmax
    steps = [name for name, *_ in graph.plan_for(x).steps]
    assert steps == ["c", "p", "f", "logits", "prob"]


def test_runs_on_every_host_backend():
    model = _small_net(batch=2)
    graph = fonnx.from_model(model)
    x = rand((2, 3, 11, 11), 64)
    _, logits = ort_run_model(model, {"x": x})
    for name in ("naive", "numpy", "c", "numba"):
        if name in fastconv.backends():  # (every usable host backend, in one test)
            with fastconv.use_backend(name):
                assert_close(graph.run({"x": x})["logits"], logits, reduction=72, case=name)


def test_numpy_layers_on_the_cuda_backend():
    """On cuda the activations are device arrays: the NumPy layers (Sigmoid, Pad, Mul,
    LogSoftmax) copy them to the host and back, _Gemm and the kernels take them as they are.
    Tiny shapes: without a GPU this runs on numba's simulator."""
    check_usable("cuda")
    rng = np.random.default_rng(65)
    inits = {"w": rng.standard_normal((2, 2, 3, 3)), "c": rng.standard_normal((2, 1, 1)),
             "fc": rng.standard_normal((3, 2 * 5 * 6))}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()]
    inits.append(numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 0, 1], np.int64), "pads"))
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["a"], ["b"]),
             helper.make_node("Pad", ["b", "pads"], ["p"], mode="edge"),
             helper.make_node("Mul", ["p", "c"], ["m"]),
             helper.make_node("Flatten", ["m"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["g"], transB=1, alpha=0.5),
             helper.make_node("LogSoftmax", ["g"], ["out"], axis=1)]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                   [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    x = rand((1, 2, 4, 4), 66)
    (expected,) = ort_run_model(model, {"x": x})
    with fastconv.use_backend("cuda"):
        actual = fonnx.from_model(model)(x)
    assert_close(actual, expected, reduction=60, case="cuda")


# --------------------------------------------------------------------------- the light model zoo

ZOO = ["bvlc_alexnet", "zfnet512", "vgg19", "inception_v1", "resnet50"]
# c for every model; numpy and numba for two (the kernels differ, the import does not)
ZOO_CASES = [(m, "c") for m in ZOO] + [(m, b) for m in ("bvlc_alexnet", "resnet50")
                                       for b in ("numpy", "numba")]
ZOO_CASES.sort(key=lambda case: ZOO.index(case[0]))  # one model in memory at a time


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """zoo(name) -> (fastconv graph, feeds, {output: ONNX Runtime result}), built once per
    model; only the latest model is kept (VGG19 alone is 0.5 GB of weights)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache.clear()
            model = fonnx.randomized(fonnx.light_model_path(name), seed=case_seed(name))
            softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
            model.graph.output.append(helper.make_tensor_value_info(softmax.input[0],
                                                                    TensorProto.FLOAT, None))
            data = model.SerializeToString()
            path = tmp_path_factory.mktemp("zoo") / f"{name}.onnx"
            path.write_bytes(data)
            del model
            graph = fonnx.load(path)
            feeds = {graph.input_names[0]: rand((1, 3, 224, 224), case_seed(name) + 1)}
            outputs = [o.name for o in onnx.load(path, load_external_data=False).graph.output]
            expected = dict(zip(outputs, ort_run_model(data, feeds, threads=2)))
            cache[name] = graph, feeds, expected
        return cache[name]

    return get


# (not named ``backend``: conftest parametrises that name over every backend)
@pytest.mark.parametrize("name, kernels", ZOO_CASES, ids=[f"{m}-{b}" for m, b in ZOO_CASES])
def test_light_model_zoo(zoo, name, kernels):
    """Probabilities and logits within 1e-4 of the largest reference value."""
    check_usable(kernels)
    graph, feeds, expected = zoo(name)
    with fastconv.use_backend(kernels):
        got = graph.run(feeds)
    assert list(got) == list(expected)
    for out, ref in expected.items():
        assert got[out].shape == ref.shape, out
        err = float(np.max(np.abs(got[out] - ref)) / np.max(np.abs(ref)))
        assert err <= 1e-4, f"{name} on {kernels}: output {out!r} max|diff|/max|ref| = {err:.3g}"


# --------------------------------------------------------------------------- errors


def test_unsupported_op_names_op_node_and_supported_ops():
    model, _ = single_node("Hardmax", [rand((2, 3), 70)])
    with pytest.raises(NotImplementedError) as info:
        fonnx.from_model(model)
    text = str(info.value)
    assert "'Hardmax'" in text and "the_hardmax" in text and "Conv" in text and "Softmax" in text


def test_unsupported_second_output_and_custom_domain():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "mask")]
    model = _model([helper.make_node("Dropout", ["x"], ["y", "mask"], name="drop")], [x], outs)
    with pytest.raises(NotImplementedError, match="drop.*output 1"):
        fonnx.from_model(model)
    node = helper.make_node("Gelu", ["x"], ["y"], name="gelu", domain="com.microsoft")
    with pytest.raises(NotImplementedError, match="gelu.*com.microsoft"):
        fonnx.from_model(_model([node], [x], outs[:1]))


def test_bad_shapes_and_runtime_weights_name_the_node():
    model, _ = single_node("Conv", [rand((1, 3, 8, 8), 71), rand((4, 2, 3, 3), 72)],
                           const=(1,))
    with pytest.raises(ValueError, match=r"the_conv.*\(1, 3, 8, 8\).*C=3"):
        fonnx.from_model(model)
    model, _ = single_node("Conv", [rand((1, 3, 8, 8), 71), rand((4, 3, 3, 3), 72)])
    with pytest.raises(NotImplementedError, match="the_conv.*weight W must be a constant"):
        fonnx.from_model(model)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.onnx"
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        fonnx.load(path)


@pytest.mark.parametrize("content", [b"", b"\x07garbage\xff\xfe not a protobuf " * 10,
                                     b"ir_version: 8\n"])
def test_garbage_file(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        fonnx.load(path)


def test_nn_graph_is_returned():
    model, _ = single_node("Relu", [rand((2, 3), 73)])
    graph = fonnx.from_model(model)
    assert isinstance(graph, nn.Graph) and graph.input_names == ["in0"]
    assert graph.outputs == ["out"]
