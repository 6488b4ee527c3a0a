"""Named layers and GEMM sizes, each backend and peer side by side (grouped by layer)."""
import numpy as np
import pytest

import fastconv
from layers import CONV_LAYERS, GEMM_SIZES, conv_flops

CPU_BACKENDS = [b for b in ("c", "numpy") if b in fastconv.backends()]


def _conv_inputs(layer):
    _, N, C, H, W, K, R, S, stride, pad, groups = layer
    rng = np.random.default_rng(0)
    return (rng.standard_normal((N, C, H, W), dtype=np.float32),
            rng.standard_normal((K, C // groups, R, S), dtype=np.float32),
            rng.standard_normal(K, dtype=np.float32))


def _ort_conv(ort, layer, x, w, b):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    _, N, C, H, W, K, R, S, stride, pad, groups = layer
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=[stride] * 2,
                            pads=[pad] * 4, group=groups)
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    opts = ort.SessionOptions()
    from conftest import THREADS
    opts.intra_op_num_threads = THREADS
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"x": x})


@pytest.mark.parametrize("impl", CPU_BACKENDS + ["torch", "onnxruntime"])
@pytest.mark.parametrize("layer", CONV_LAYERS, ids=[l[0] for l in CONV_LAYERS])
def test_conv2d(benchmark, record, layer, impl, request):
    benchmark.group = f"conv2d {layer[0]}"
    x, w, b = _conv_inputs(layer)
    _, N, C, H, W, K, R, S, stride, pad, groups = layer
    if impl == "torch":
        torch = request.getfixturevalue("torch")
        tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)

        def fn():
            with torch.no_grad():
                return torch.nn.functional.conv2d(tx, tw, tb, stride, pad, 1, groups)
    elif impl == "onnxruntime":
        fn = _ort_conv(request.getfixturevalue("ort"), layer, x, w, b)
    else:
        def fn():
            return fastconv.conv2d(x, w, b, stride, pad, 1, groups, backend=impl)
    fn()
    benchmark(fn)
    record(flops=conv_flops(*layer[1:]), counted="2*N*K*P*Q*C/g*R*S")


@pytest.mark.parametrize("impl", CPU_BACKENDS + ["numpy.matmul"])
@pytest.mark.parametrize("n", GEMM_SIZES)
def test_sgemm(benchmark, record, n, impl):
    benchmark.group = f"sgemm {n}^3"
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    if impl == "numpy.matmul":
        def fn():
            return np.matmul(a, b)
    else:
        def fn():
            return fastconv.gemm(a, b, backend=impl)
    fn()
    benchmark(fn)
    record(flops=2.0 * n ** 3, counted="2*M*N*K")
