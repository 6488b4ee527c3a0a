"""ONNX loader robustness: truncated, bit-flipped and adversarial models.

Every case must end in a clear ``ValueError`` / ``NotImplementedError`` (or load and run
correctly), never a crash, a hang, another exception type, or an attempt to allocate absurd
memory. The fuzz loops run in a subprocess under ``RLIMIT_AS`` = 3 GiB and a timeout, so
an absurd allocation shows up as a ``MemoryError`` (a failure here), a crash as a signal and
a hang as a timeout. The adversarial models run in-process: each is refused at load, before
anything is allocated (``fastconv.onnx.MAX_ELEMENTS``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fastconv.onnx as fonnx  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OK_ERRORS = (ValueError, NotImplementedError)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "fuzz", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def lenet_like():
    """A small LeNet-like model: Conv, Relu, MaxPool, LRN, Reshape, Gemm, Softmax, Add."""
    rng = np.random.default_rng(0)
    f = lambda *s: numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.1, None)  # noqa: E731
    inits = []
    for name, arr in [("w1", f(4, 1, 5, 5)), ("b1", f(4)), ("w2", f(6, 4, 3, 3)), ("fc", f(10, 24)),
                      ("fcb", f(10))]:
        arr.name = name
        inits.append(arr)
    inits.append(numpy_helper.from_array(np.array([1, 24], np.int64), "shape"))
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("LRN", ["p1"], ["n1"], size=3),
        helper.make_node("Conv", ["n1", "w2"], ["c2"], strides=[2, 2]),
        helper.make_node("AveragePool", ["c2"], ["p2"], kernel_shape=[1, 1]),
        helper.make_node("Reshape", ["p2", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["g"], transB=1),
        helper.make_node("Add", ["g", "g"], ["g2"]),
        helper.make_node("Softmax", ["g2"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 12, 12])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])
    return _model(nodes, [x], [y], inits)


# --------------------------------------------------------------------------- file fuzzing

_FUZZ = textwrap.dedent(r'''
    import json, os, random, resource, sys, tempfile
    import numpy as np
    sys.path.insert(0, os.environ["FC_TESTS_DIR"])
    import fastconv
    import fastconv.onnx as fonnx
    from test_onnx_fuzz import lenet_like
    try:  # run on C (crashes would show); numpy where it is not built (numba's LLVM would
        import fastconv.backends.c  # reserve more address space than the limit below)
        fastconv.set_default_backend("c")
    except ImportError:
        fastconv.set_default_backend("numpy")
    resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))
    data = lenet_like().SerializeToString()
    x = np.random.default_rng(1).standard_normal((1, 1, 12, 12)).astype(np.float32)
    rng = random.Random(int(sys.argv[2]))
    mode, n = sys.argv[1], int(sys.argv[3])
    results = {"loaded": 0, "ran": 0, "refused": {}, "bad": []}
    path = os.path.join(tempfile.mkdtemp(), "m.onnx")
    for i in range(n):
        if mode == "truncate":
            blob = data[:rng.randrange(len(data))]
        else:
            b = bytearray(data)
            for _ in range(rng.choice([1, 1, 2, 4, 16])):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            blob = bytes(b)
        with open(path, "wb") as f:
            f.write(blob)
        stage = "load"
        try:
            m = fonnx.load(path)
            results["loaded"] += 1
            stage = "run"
            shapes = getattr(m, "input_shapes", {})
            feeds = {k: np.full(s, 0.5, np.float32) for k, s in shapes.items()}
            m.run(feeds)
            results["ran"] += 1
        except (ValueError, NotImplementedError) as exc:
            key = f"{stage}:{type(exc).__name__}"
            results["refused"][key] = results["refused"].get(key, 0) + 1
        except Exception as exc:  # anything else is a bug
            results["bad"].append(f"case {i} {stage}: {type(exc).__name__}: {str(exc)[:300]}")
    print(json.dumps(results))
''')


@pytest.mark.parametrize("mode,seed,n", [("truncate", 1, 150), ("bitflip", 2, 400)])
def test_corrupted_files(mode, seed, n):
    env = dict(os.environ, FC_TESTS_DIR=HERE)
    res = subprocess.run([sys.executable, "-c", _FUZZ, mode, str(seed), str(n)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (
        f"fuzz process died (rc={res.returncode}: negative = signal)\n"
        + res.stdout[-2000:] + res.stderr[-4000:])
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert not out["bad"], f"{mode}: unexpected exception types:\n" + "\n".join(out["bad"][:20])
    # the fuzzer did reach both outcomes (a mode that only ever refuses tests little)
    assert sum(out["refused"].values()) > 0, out
    if mode == "bitflip":
        assert out["loaded"] > 0, out


def test_truncated_to_nothing_and_garbage(tmp_path):
    for name, blob in [("empty", b""), ("one byte", b"\x08"), ("text", b"hello, not onnx\n"),
                       ("zeros", bytes(64)), ("ff", b"\xff" * 64)]:
        p = tmp_path / "m.onnx"
        p.write_bytes(blob)
        with pytest.raises(ValueError, match="not a valid ONNX model"):
            fonnx.load(p)


# --------------------------------------------------------------------------- adversarial models

X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
W = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")


def _raw(name, dims, raw=b"", dtype=TensorProto.FLOAT):
    t = TensorProto()
    t.name, t.data_type = name, dtype
    t.dims.extend(dims)
    t.raw_data = raw
    return t


def _conv_with(w):
    return _model([helper.make_node("Conv", ["x", "w"], ["y"])], [X], [Y], [w])


def _single(op, inputs, inits=(), gin=(X,), **attrs):
    return _model([helper.make_node(op, inputs, ["y"], **attrs)], list(gin), [Y], list(inits))


def _i64(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


T12 = 10**12
ADVERSARIAL = {
    # (model, exception, regex the message must match)
    "negative initializer dim": (_conv_with(_raw("w", [4, -3, 3, 3], bytes(16))), ValueError,
                                 r"initializer 'w' has a negative dimension"),
    "initializer data shorter than dims": (_conv_with(_raw("w", [4, 3, 3, 3], bytes(20))),
                                           ValueError, r"initializer 'w' .*cannot be read"),
    "initializer data longer than dims": (_conv_with(_raw("w", [4, 3, 3, 3], bytes(4 * 109))),
                                          ValueError, r"initializer 'w' .*cannot be read"),
    "initializer 10^12 dims, tiny data": (_conv_with(_raw("w", [10**6, 10**6, 1, 1], bytes(16))),
                                          ValueError, r"initializer 'w' .*MAX_ELEMENTS"),
    "initializer huge dims, no data": (_conv_with(_raw("w", [2**40, 2**40], b"")), ValueError,
                                       r"initializer 'w' .*MAX_ELEMENTS"),
    "graph input 10^12 elements": (
        _single("Relu", ["x"], gin=[helper.make_tensor_value_info(
            "x", TensorProto.FLOAT, [1, 10**6, 10**6])]),
        ValueError, r"graph input 'x' .*MAX_ELEMENTS"),
    "graph input negative dim": (
        _single("Relu", ["x"], gin=[helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                   [1, -5, 3])]),
        NotImplementedError, r"graph input 'x' has a symbolic dimension 1"),
    "ConstantOfShape 10^12": (_single("ConstantOfShape", ["s"], [_i64("s", [T12])], gin=()),
                              ValueError, r"ConstantOfShape.*MAX_ELEMENTS"),
    "ConstantOfShape 10^6 x 10^6": (_single("ConstantOfShape", ["s"], [_i64("s", [10**6] * 2)],
                                            gin=()), ValueError, r"MAX_ELEMENTS"),
    "ConstantOfShape negative": (_single("ConstantOfShape", ["s"], [_i64("s", [-3, 4])], gin=()),
                                 ValueError, r"negative dimension"),
    "Constant attribute huge dims": (
        _single("Constant", [], gin=(), value=_raw("v", [10**6, 10**6], bytes(4))), ValueError,
        r"attribute 'value' .*MAX_ELEMENTS"),
    "Pad to 10^12": (_single("Pad", ["x", "p"], [_i64("p", [0, 0, 0, 0, 0, 0, 10**6, 10**6])]),
                     ValueError, r"output 'y' .*MAX_ELEMENTS"),
    "Conv padding to 10^12": (_single("Conv", ["x", "w"], [W], pads=[10**6] * 4), ValueError,
                              r"MAX_ELEMENTS"),
    "Conv negative pads": (_single("Conv", ["x", "w"], [W], pads=[-5] * 4), ValueError,
                           r"padding=-5 must be >= 0"),
    "Conv huge kernel_shape": (_single("Conv", ["x", "w"], [W], kernel_shape=[10**9] * 2),
                               ValueError, r"kernel_shape"),
    "Reshape to 10^12": (_single("Reshape", ["x", "r"], [_i64("r", [1, 3, 10**6, 10**6])]),
                         ValueError, r"cannot reshape"),
    "missing input": (_single("Relu", ["nope"]), ValueError, r"reads \['nope'\]"),
    "nodes out of order": (
        _model([helper.make_node("Relu", ["c"], ["y"]), helper.make_node("Relu", ["x"], ["c"])],
               [X], [Y]), ValueError, r"not in topological order"),
    "cycle": (
        _model([helper.make_node("Relu", ["y"], ["c"]), helper.make_node("Relu", ["c"], ["y"])],
               [X], [Y]), ValueError, r"reads \['y'\]"),
    "self loop": (_single("Relu", ["y"]), ValueError, r"reads \['y'\]"),
    "output produced by nothing": (
        _model([helper.make_node("Relu", ["x"], ["c"])], [X], [Y]), ValueError,
        r"graph output 'y' is produced by no node"),
    "unknown op": (_single("FooBar", ["x"]), NotImplementedError, r"'FooBar' is not supported"),
    "custom domain": (_model([helper.make_node("Relu", ["x"], ["y"], domain="com.evil")], [X],
                             [Y]), NotImplementedError, r"custom domain"),
    "unknown attribute": (_single("Relu", ["x"], evil=3), NotImplementedError, r"evil"),
    "no outputs": (_model([helper.make_node("Relu", ["x"], ["y"])], [X], []), ValueError,
                   r"0 graph outputs"),
    "integer graph input": (
        _single("Relu", ["x"], gin=[helper.make_tensor_value_info("x", TensorProto.INT64,
                                                                   [1, 3])]),
        NotImplementedError, r"element type"),
    "too many inputs": (_single("Relu", ["x", "x", "x"]), ValueError, r"Relu"),
    "wrongly typed attribute": (_single("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2]),
                                ValueError, r"stride must be"),
}


@pytest.mark.parametrize("case", list(ADVERSARIAL))
def test_adversarial_model_refused_clearly(case, tmp_path):
    model, exc, pattern = ADVERSARIAL[case]
    p = tmp_path / "m.onnx"
    p.write_bytes(model.SerializeToString())
    with pytest.raises(exc, match=pattern):
        fonnx.load(p)


def test_max_elements_is_the_limit(monkeypatch):
    """Just at the limit loads; one element more is refused (the guard is not off by one)."""
    model = _single("ConstantOfShape", ["s"], [_i64("s", [4, 5])], gin=())
    monkeypatch.setattr(fonnx, "MAX_ELEMENTS", 20)
    g = fonnx.from_model(model)
    assert g.run({})["y"].shape == (4, 5)
    monkeypatch.setattr(fonnx, "MAX_ELEMENTS", 19)
    with pytest.raises(ValueError, match="20 elements, more than fastconv.onnx.MAX_ELEMENTS=19"):
        fonnx.from_model(model)


def test_fuzz_base_model_is_valid():
    """The fuzzer's base model loads and matches ONNX Runtime (so the fuzz starts from sense)."""
    ort = pytest.importorskip("onnxruntime")
    model = lenet_like()
    x = np.random.default_rng(1).standard_normal((1, 1, 12, 12)).astype(np.float32)
    y = fonnx.from_model(model)(x)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(y, sess.run(None, {"x": x})[0], rtol=1e-4, atol=1e-6)
