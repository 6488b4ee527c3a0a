"""Benchmark machinery shared by ``fastconv bench``, ``benchmarks/compare.py`` and the
pytest-benchmark suites in ``benchmarks/``: timing, peers, cases, the table, JSON, the plot.

What is counted (every row says it again in ``counted``):
  * conv2d, gemm, linear, whole models: GFLOP/s = 2 * MACs / time (bias, activation,
    pooling and normalisation are not counted; for models the MACs are nn.summary's).
  * memory-bound ops (pooling, LRN, ReLU, softmax, batch norm): GB/s = (bytes of the
    input read + bytes of the output written) / time.
  * the machine's peak: csrc's FMA probe (``fastconv.backends.c.fma_peak_gflops``),
    2 flops per FMA lane, at the benchmark's thread count.

Hygiene (CONVENTIONS.md): every candidate is called once before any timing (Numba JIT,
page faults, thread pools), then the candidates of one case are timed in alternating
rounds with a pause between libraries (OpenBLAS and OpenMP workers keep spinning for
~0.1 s after a call), and each ratio is the median of the per-round ratios, so drift on a
shared machine cancels out. The naive loops are timed once, outside the rounds: on a
large layer they run on a slice (one group, a few filters, a few output rows) and their
time is scaled up by the work ratio; such rows say ``naive (slice, scaled)``.

The named layers come from ``benchmarks/layers.py`` (the one table), which ships with the
source tree, not with the installed package.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field

import numpy as np

import fastconv
from fastconv import _registry

# ---------------------------------------------------------------------------- timing


def median_time(fn, seconds, min_calls=3, max_calls=10_000, fastest=None):
    """Median seconds of repeated calls for about ``seconds`` (at least ``min_calls``).
    ``fastest``: a list that gets the fastest call's seconds appended."""
    times, start = [], time.perf_counter()
    while len(times) < min_calls or (time.perf_counter() - start < seconds
                                     and len(times) < max_calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    if fastest is not None:
        fastest.append(min(times))
    return float(np.median(times))


def alternate(candidates, rounds, seconds, pause=0.2, min_calls=3, on_step=None, fastest=None):
    """{name: [median seconds per round]}, timing each candidate once per round, in turn.

    Every candidate is called once first (warm-up outside the timer). ``pause`` seconds
    of sleep before each timing let the previous library's spinning threads go idle.
    ``on_step(name)`` is called before each candidate's warm-up (progress display).
    ``fastest``: a dict that gets {name: [fastest call's seconds per round]}."""
    for name, fn in candidates.items():
        if on_step:
            on_step(name)
        fn()
    results = {name: [] for name in candidates}
    if fastest is not None:
        fastest.update({name: [] for name in candidates})
    for _ in range(rounds):
        for name, fn in candidates.items():
            time.sleep(pause)
            results[name].append(median_time(fn, seconds, min_calls,
                                             fastest=None if fastest is None else fastest[name]))
    return results


def round_ratio(numerator, denominator):
    """Median over rounds of numerator[r] / denominator[r] (> 1: the denominator is faster)."""
    return float(np.median(np.asarray(numerator) / np.asarray(denominator)))


# ---------------------------------------------------------------------------- machine


def limit_threads(threads):
    """Run fastconv (OpenMP + Numba), BLAS and PyTorch (if loaded) on ``threads`` threads.
    Returns a function that puts the previous counts back (the CLI may run in-process,
    e.g. from the tests, and must not leave its thread counts behind)."""
    before = fastconv.get_num_threads()
    fastconv.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
        blas = threadpool_limits(threads)  # holds the previous limits until restored
    except ImportError:
        blas = None
    torch = sys.modules.get("torch")
    torch_before = torch.get_num_threads() if torch else None
    if torch:
        torch.set_num_threads(threads)

    def restore():
        fastconv.set_num_threads(before)
        if blas is not None:
            blas.restore_original_limits()
        if torch_before:
            torch.set_num_threads(torch_before)
    return restore


def torch_peer(threads=None):
    """The torch module on ``threads`` threads, or None when PyTorch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    if threads:
        torch.set_num_threads(threads)
    return torch


def _module_version(name):
    try:
        return __import__(name).__version__
    except Exception:  # not installed, or broken: either way not a peer
        return None


def blas_info():
    """NumPy's BLAS as threadpoolctl sees it, e.g. 'openblas 0.3.29 (Haswell)'."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    return ", ".join(f"{d['internal_api']} {d['version']} ({d.get('architecture')})"
                     for d in threadpool_info() if d["user_api"] == "blas") or "unknown"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def real_gpu():
    """Whether the cuda backend runs on a real GPU (never time numba's simulator)."""
    return "cuda" in fastconv.backends() and "simulator" not in fastconv.info().get("cuda", "")


def measured_peak():
    """GFLOP/s of csrc's FMA probe at the current thread count (cached), or None without C."""
    if "c" not in fastconv.backends():
        return None
    return _registry.backend_module("c").fma_peak_gflops()


def header(threads, **extra):
    """What a result depends on: threads, ISA, versions, CPU, measured peak."""
    info = fastconv.info()
    return {
        "threads": threads,
        "isa": info.get("isa"),
        "openmp": info.get("openmp"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "peak_gflops": measured_peak(),
        "peak_counted": "FMA probe: independent FMA chains on the GEMM kernels' vector "
                        "width, 2 flops per lane, all threads",
        "versions": {"python": platform.python_version(), "fastconv": info["version"],
                     "numpy": np.__version__, "numba": info.get("numba"), "blas": blas_info(),
                     "torch": _module_version("torch"),
                     "onnxruntime": _module_version("onnxruntime")},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        **extra,
    }


# ---------------------------------------------------------------------------- peers

PEERS = ("openblas", "torch", "onnxruntime")


def available_peers():
    """The peers that are installed (openblas is NumPy's BLAS, always there)."""
    found = ["openblas"]
    if _module_version("torch"):
        found.append("torch")
    if _module_version("onnxruntime") and _module_version("onnx"):
        found.append("onnxruntime")
    return found


def ort_single_node(op_type, feeds, initializers=None, attrs=None, threads=1, opset=17):
    """A callable running one ONNX node on ONNX Runtime's CPU provider, session built once.

    feeds: {input name: array}, passed on every call; initializers: {name: array}, constant
    inputs baked into the model (weights). The node's inputs are feeds then initializers,
    in dict order. All graph optimisations stay on (this is a peer, not an oracle)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    initializers = initializers or {}
    node = helper.make_node(op_type, list(feeds) + list(initializers), ["out"], **(attrs or {}))
    graph = helper.make_graph(
        [node], op_type.lower(),
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape))
         for n, a in feeds.items()],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(a, n) for n, a in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)  # what older ORT releases accept
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, feeds)


def torch_model(torch, model):
    """A callable ``f(xt)`` running a fastconv.nn graph in PyTorch eager with the same
    weights, layer by layer through torch.nn.functional; NotImplementedError for a layer
    type it does not know (the peer is then left out)."""
    from fastconv.nn import layers as L

    F, t = torch.nn.functional, (lambda a: None if a is None else torch.from_numpy(a))

    def step(layer):
        kind = type(layer)
        if kind is L.Conv2d:
            w, b = t(layer.weight), t(layer.bias)
            act = F.relu if layer.activation == "relu" else (lambda v: v)
            return lambda x: act(F.conv2d(x, w, b, layer.stride, layer.padding, layer.dilation,
                                          layer.groups))
        if kind is L.MaxPool2d:
            return lambda x: F.max_pool2d(x, layer.kernel_size, layer.stride, layer.padding,
                                          layer.dilation, ceil_mode=layer.ceil_mode)
        if kind is L.AvgPool2d:
            return lambda x: F.avg_pool2d(x, layer.kernel_size, layer.stride, layer.padding,
                                          layer.ceil_mode, layer.count_include_pad)
        if kind is L.GlobalAvgPool2d:
            return lambda x: F.adaptive_avg_pool2d(x, 1)
        if kind is L.LocalResponseNorm:
            return lambda x: F.local_response_norm(x, layer.size, layer.alpha, layer.beta,
                                                   layer.k)
        if kind is L.ReLU:
            return F.relu
        if kind is L.Dropout:
            return lambda x: x
        if kind is L.Flatten:
            return lambda x: torch.flatten(x, layer.start_dim)
        if kind is L.Linear:
            w, b = t(layer.weight), t(layer.bias)
            return lambda x: F.linear(x, w, b)
        if kind is L.Softmax:
            return lambda x: F.softmax(x, layer.axis)
        if kind is L.BatchNorm2d:
            m, v, w, b = (t(a) for a in (layer.running_mean, layer.running_var, layer.weight,
                                         layer.bias))
            return lambda x: F.batch_norm(x, m, v, w, b, False, 0.0, layer.eps)
        if kind is L.Concat:
            return lambda *xs: torch.cat(xs, layer.axis)
        if kind is L.Add:
            act = F.relu if layer.activation == "relu" else (lambda v: v)
            return lambda a, b: act(a + b)
        raise NotImplementedError(f"no PyTorch translation for {kind.__name__}")

    steps = [(node.name, step(node.layer), node.inputs) for node in model.nodes]
    out_name = model.outputs[0]

    def forward(xt):
        values = {model.input_names[0]: xt}
        with torch.no_grad():
            for name, fn, inputs in steps:
                values[name] = fn(*(values[i] for i in inputs))
        return values[out_name]
    return forward


# ---------------------------------------------------------------------------- layers

_layers = None


def named_layers():
    """benchmarks/layers.py, the one table of named layers (source checkout only)."""
    global _layers
    if _layers is None:
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "benchmarks", "layers.py")
        if not os.path.exists(path):
            raise SystemExit(f"fastconv bench needs the named-layer table {path}: run it from "
                             "a source checkout (an editable install)")
        spec = importlib.util.spec_from_file_location("fastconv_bench_layers", path)
        _layers = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_layers)
    return _layers


# ---------------------------------------------------------------------------- cases

# The naive loops cost ~1.5 us per MAC (conv) and ~2.5 us per element (pooling, LRN) on
# this class of machine: these budgets keep one naive call near 0.1 s.
NAIVE_MACS = 60_000
NAIVE_ELEMENTS = 20_000
NAIVE_MODEL_MACS = 1_000_000  # a whole LeNet-5 at batch 1 (0.42 M MACs), not more

# Small, fast cases for --quick (names from benchmarks/layers.py): one or two per op of the
# seed networks' hot path. Ops without one here (avg_pool2d, batch_norm, global_avg_pool2d)
# are left out of a quick run unless --ops names them (then their first layer runs).
QUICK = {"lenet5.conv2.b64", "alexnet.conv3", "gemm 256", "alexnet_fc7",
         "alexnet.pool1 3x3/2", "alexnet.norm1 LRN5", "alexnet.relu1", "softmax 64x1000"}

OPS = ("conv2d", "gemm", "linear", "max_pool2d", "avg_pool2d", "local_response_norm", "relu",
       "softmax", "batch_norm", "global_avg_pool2d")
OP_ALIASES = {"lrn": "local_response_norm", "gemv": "linear", "pool": "max_pool2d"}


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _device(arrays, impl):
    """The arrays as the implementation takes them: on the GPU for cuda (uploaded once,
    outside the timer), host arrays otherwise."""
    if impl != "cuda":
        return arrays
    from numba import cuda
    return [None if a is None else cuda.to_device(a) for a in arrays]


def _synced(fn, impl):
    """cuda launches are asynchronous: synchronise inside the timed call."""
    if impl != "cuda":
        return fn
    from numba import cuda

    def run():
        fn()
        cuda.synchronize()
    return run


@dataclass
class Case:
    """One benchmark case (a named layer, a GEMM size, a model at a batch).

    ``spec`` is the tuple of sizes; ``shrink()`` returns a smaller Case of the same kind
    that the naive loops can run in ~0.1 s; ``make(impl)`` returns a zero-argument callable
    running backend or peer ``impl`` (NotImplementedError: this impl cannot run it)."""
    op: str
    name: str
    spec: tuple
    threads: int = 1
    _work: float = field(default=None, repr=False)

    unit = "GFLOP/s"
    counted = ""

    def work(self):
        """Flops (2 * MACs) or bytes (read + written), whichever ``unit`` rates."""
        raise NotImplementedError

    def naive_cost(self):
        """MACs or elements: what the naive loops' time grows with."""
        raise NotImplementedError

    def shape(self):
        raise NotImplementedError

    def shrink(self):
        raise NotImplementedError

    def peers(self):
        return ()

    def naive(self):
        """(callable, scale): the naive loops on this case or on a slice of it, and the
        factor their time is multiplied by (1.0: not sliced)."""
        small = self if self.naive_cost() <= self.budget() else self.shrink()
        return small.make("naive"), self.work() / small.work()

    def budget(self):
        return NAIVE_MACS


class ConvCase(Case):
    """spec (N, C, H, W, K, R, S, stride, pad, groups), as in layers.CONV_LAYERS."""
    counted = "2*N*K*P*Q*(C/groups)*R*S (bias not counted)"

    def work(self):
        return float(named_layers().conv_flops(*self.spec))

    def naive_cost(self):
        return self.work() / 2

    def shape(self):
        N, C, H, W, K, R, S, stride, pad, groups = self.spec
        g = f" g{groups}" if groups > 1 else ""
        return f"{N}x{C}x{H}x{W} k{K} {R}x{S}/{stride} p{pad}{g}"

    def shrink(self):
        """One group, N = 1, at most 4 filters, then as few output rows (and columns) as
        keep the MACs under the budget: the input is cropped to what those rows read."""
        N, C, H, W, K, R, S, stride, pad, groups = self.spec
        C, K, N, groups = C // groups, min(K // groups, 4), 1, 1
        per_row = K * C * R * S * ((W + 2 * pad - S) // stride + 1)
        rows = max(1, NAIVE_MACS // per_row)
        H = min(H, max(1, R - 2 * pad, (rows - 1) * stride + R - 2 * pad))
        if per_row > NAIVE_MACS:  # a single output row is too much: crop columns too
            cols = max(1, NAIVE_MACS // (K * C * R * S))
            W = min(W, max(1, S - 2 * pad, (cols - 1) * stride + S - 2 * pad))
        return ConvCase(self.op, self.name, (N, C, H, W, K, R, S, stride, pad, groups),
                        self.threads)

    def peers(self):
        return ("torch", "onnxruntime")

    def make(self, impl):
        N, C, H, W, K, R, S, stride, pad, groups = self.spec
        x, w, b = _rand((N, C, H, W)), _rand((K, C // groups, R, S), 1), _rand(K, 2)
        if impl == "torch":
            import torch
            tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)

            def run():
                with torch.no_grad():
                    return torch.nn.functional.conv2d(tx, tw, tb, stride, pad, 1, groups)
            return run
        if impl == "onnxruntime":
            return ort_single_node("Conv", {"x": x}, {"w": w, "b": b},
                                   dict(strides=[stride] * 2, pads=[pad] * 4, group=groups,
                                        kernel_shape=[R, S]), self.threads)
        if impl in PEERS:
            raise NotImplementedError(impl)
        x, w, b = _device([x, w, b], impl)
        return _synced(lambda: fastconv.conv2d(x, w, b, stride, pad, 1, groups, backend=impl),
                       impl)


class GemmCase(Case):
    """spec (M, N, K): C (M, N) = A (M, K) @ B (K, N)."""
    counted = "2*M*N*K"

    def work(self):
        M, N, K = self.spec
        return 2.0 * M * N * K

    def naive_cost(self):
        return self.work() / 2

    def shape(self):
        return "x".join(map(str, self.spec))

    def shrink(self):
        M, N, K = self.spec
        side = max(1, int(math.sqrt(NAIVE_MACS / K)))
        return GemmCase(self.op, self.name, (min(M, side), min(N, side), K), self.threads)

    def peers(self):
        return ("openblas", "torch")

    def make(self, impl):
        M, N, K = self.spec
        a, b = _rand((M, K)), _rand((K, N), 1)
        if impl == "openblas":
            return lambda: np.matmul(a, b)
        if impl == "torch":
            import torch
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            return lambda: torch.mm(ta, tb)
        if impl in PEERS:
            raise NotImplementedError(impl)
        a, b = _device([a, b], impl)
        return _synced(lambda: fastconv.gemm(a, b, backend=impl), impl)


class LinearCase(GemmCase):
    """spec (rows, in, out): y = x (rows, in) @ W.T + b, W (out, in). At batch 1 (GEMV) it is
    memory bound: the JSON also gives GB/s of W (read once)."""
    counted = "2*rows*in*out (JSON gbytes_per_s: W bytes once)"

    def bytes_moved(self):
        return 4.0 * self.spec[1] * self.spec[2]

    def shape(self):
        rows, fin, fout = self.spec
        return f"{rows}x{fin} -> {fout}"

    def shrink(self):
        rows, fin, fout = self.spec
        return LinearCase(self.op, self.name, (1, fin, max(1, min(fout, NAIVE_MACS // fin))),
                          self.threads)

    def make(self, impl):
        rows, fin, fout = self.spec
        x, w, b = _rand((rows, fin)), _rand((fout, fin), 1), _rand(fout, 2)
        if impl == "openblas":
            return lambda: x @ w.T + b
        if impl == "torch":
            import torch
            tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
            return lambda: torch.nn.functional.linear(tx, tw, tb)
        if impl in PEERS:
            raise NotImplementedError(impl)
        x, w, b = _device([x, w, b], impl)
        return _synced(lambda: fastconv.linear(x, w, b, backend=impl), impl)


# op -> (ONNX op type, attrs from the kwargs), for the memory-bound ops ORT is a peer for.
def _ort_pool_attrs(kw):
    k = kw["kernel_size"]
    s, p = kw.get("stride") or k, kw.get("padding", 0)
    return dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)


_ORT_MEMORY = {
    "max_pool2d": ("MaxPool", _ort_pool_attrs),
    "avg_pool2d": ("AveragePool", lambda kw: dict(_ort_pool_attrs(kw), count_include_pad=1)),
    "local_response_norm": ("LRN", lambda kw: dict(size=kw["size"], alpha=1e-4, beta=0.75,
                                                    bias=1.0)),
}


class MemoryCase(Case):
    """spec (input shape, kwargs) of a memory-bound op, as in layers.MEMORY_OPS."""
    unit = "GB/s"
    counted = "bytes of the input read + bytes of the output written"

    def _inputs(self):
        shape, _ = self.spec
        x, args = _rand(shape), ()
        if self.op == "batch_norm":
            C = shape[1]
            args = (_rand(C, 1), np.random.default_rng(2).random(C, dtype=np.float32) + 0.5)
        return x, args

    def work(self):
        if self._work is None:  # the output's size, from running the op once
            x, args = self._inputs()
            y = getattr(fastconv, self.op)(x, *args, **self.spec[1])
            self._work = float(x.nbytes + y.nbytes)
        return self._work

    def naive_cost(self):
        return math.prod(self.spec[0])

    def budget(self):
        return NAIVE_ELEMENTS

    def shape(self):
        return "x".join(map(str, self.spec[0]))

    def shrink(self):
        """N = 1, then as few channels (or rows, for 2-D input) as fit the budget."""
        shape, kwargs = self.spec
        shape = (1,) + tuple(shape[1:])
        rest = math.prod(shape[2:])
        keep = max(1, min(shape[1], NAIVE_ELEMENTS // rest))
        if self.op == "softmax" and kwargs.get("axis") == 1 and len(shape) == 2:
            keep = shape[1]  # the softmax axis stays whole
        return MemoryCase(self.op, self.name, ((1, keep) + shape[2:], kwargs), self.threads)

    def peers(self):
        return ("torch", "onnxruntime") if self.op in _ORT_MEMORY else ("torch",)

    def make(self, impl):
        x, args = self._inputs()
        kw = self.spec[1]
        if impl == "torch":
            return self._torch(x, args, kw)
        if impl == "onnxruntime":
            if self.op not in _ORT_MEMORY:
                raise NotImplementedError(impl)
            op_type, attrs = _ORT_MEMORY[self.op]
            return ort_single_node(op_type, {"x": x}, attrs=attrs(kw), threads=self.threads)
        if impl in PEERS:
            raise NotImplementedError(impl)
        fn = getattr(fastconv, self.op)
        x, *args = _device([x, *args], impl)
        return _synced(lambda: fn(x, *args, backend=impl, **kw), impl)

    def _torch(self, x, args, kw):
        import torch
        F, tx = torch.nn.functional, torch.from_numpy(x)
        targs = [torch.from_numpy(a) for a in args]
        calls = {
            "max_pool2d": lambda: F.max_pool2d(tx, kw["kernel_size"], kw.get("stride"),
                                               kw.get("padding", 0)),
            "avg_pool2d": lambda: F.avg_pool2d(tx, kw["kernel_size"], kw.get("stride"),
                                               kw.get("padding", 0)),
            "local_response_norm": lambda: F.local_response_norm(tx, kw["size"]),
            "relu": lambda: F.relu(tx),
            "softmax": lambda: F.softmax(tx, kw.get("axis", -1)),
            "batch_norm": lambda: F.batch_norm(tx, *targs, training=False),
            "global_avg_pool2d": lambda: F.adaptive_avg_pool2d(tx, 1),
        }
        call = calls[self.op]

        def run():
            with torch.no_grad():
                return call()
        return run


# Input (C, H, W) of each model; the rest take 224x224 RGB.
MODEL_INPUTS = {"lenet5": (1, 32, 32), "alexnet": (3, 227, 227)}


class ModelCase(Case):
    """spec (model name, batch): a full forward pass of fastconv.models.<name> (planned
    once, outside the timer), against the same graph in PyTorch eager."""
    counted = "2*MACs of all layers (nn.summary)"

    def _model(self):
        from fastconv import models
        if not hasattr(self, "_built"):
            self._built = getattr(models, self.spec[0])()
        return self._built

    def input_shape(self):
        return (self.spec[1],) + MODEL_INPUTS.get(self.spec[0], (3, 224, 224))

    def work(self):
        if self._work is None:
            from fastconv import nn
            macs = sum(r["macs"] for r in nn.summary(self._model(), self.input_shape()))
            self._work = 2.0 * macs
        return self._work

    def naive_cost(self):
        return self.work() / 2 / self.spec[1]  # naive runs batch 1, scaled by the batch

    def budget(self):
        return NAIVE_MODEL_MACS

    def naive(self):
        if self.naive_cost() > NAIVE_MODEL_MACS:
            raise NotImplementedError("naive loops on a whole network: too slow to time")
        small = ModelCase(self.op, self.name, (self.spec[0], 1), self.threads)
        small._built = self._model()
        return small.make("naive"), float(self.spec[1])

    def shape(self):
        return "x".join(map(str, self.input_shape()))

    def peers(self):
        return ("torch",)

    def make(self, impl):
        model, x = self._model(), _rand(self.input_shape())
        if impl == "torch":
            import torch
            forward, xt = torch_model(torch, model), torch.from_numpy(x)
            return lambda: forward(xt)
        if impl in PEERS:
            raise NotImplementedError(impl)
        (xd,) = _device([x], impl)
        plan = model.plan_for(xd, backend=impl)
        return _synced(lambda: plan.run(xd), impl)


def cases(ops=None, models=(), batch=1, quick=False, layers=None, threads=1):
    """The Cases of ``ops`` (fastconv op names; None: all) drawn from benchmarks/layers.py,
    plus one ModelCase per model name at ``batch``. quick: only the QUICK layers (for an op
    with none of them, its first layer). layers: substrings of names to keep."""
    t = named_layers()
    explicit = ops is not None
    ops = list(OPS) if ops is None else [OP_ALIASES.get(o, o) for o in ops]
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; known: {', '.join(OPS)} "
                         f"(aliases: {', '.join(OP_ALIASES)})")
    found = []
    for name, *spec in t.CONV_LAYERS:
        found.append(ConvCase("conv2d", name, tuple(spec), threads))
    for n in t.GEMM_SIZES:
        found.append(GemmCase("gemm", f"gemm {n}", (n, n, n), threads))
    for name, fin, fout in t.FC_LAYERS:
        found.append(LinearCase("linear", name, (1, fin, fout), threads))
    for name, op, shape, kwargs in t.MEMORY_OPS:
        found.append(MemoryCase(op, name, (tuple(shape), kwargs), threads))
    chosen = []
    for op in ops:
        mine = [c for c in found if c.op == op]
        if layers:
            mine = [c for c in mine if any(s in c.name for s in layers)]
        if quick:
            mine = [c for c in mine if c.name in QUICK] or (mine[:1] if explicit else [])
        chosen += mine
    from fastconv import models as fc_models
    for m in models:
        if m not in fc_models.__all__:
            raise ValueError(f"unknown model {m!r}; known: {', '.join(fc_models.__all__)}")
        chosen.append(ModelCase("model", m, (m, batch), threads))
    return chosen


# ---------------------------------------------------------------------------- running

NAIVE_SCALED = "naive (slice, scaled)"


def run_case(case, backends, peers, rounds, seconds, pause=0.2, on_step=None):
    """Rows (dicts) for one case: each backend and peer timed in alternating rounds, the
    naive loops once (sliced and scaled on large cases). The references naive and numpy
    always run, since the speedup columns are relative to them."""
    rows, times, scaled = [], {}, {}
    if on_step:
        on_step("naive")
    try:
        fn, scale = case.naive()
        # Pure Python: nothing to warm up, and each call takes ~0.1 s, so a quick run
        # (rounds <= 2) times a single call; otherwise the median of 3.
        t = median_time(fn, 0.0, min_calls=1 if rounds <= 2 else 3)
        times["naive"], scaled["naive"] = [t * scale] * max(rounds, 1), scale != 1.0
    except NotImplementedError:
        pass
    candidates = {}
    impls = [b for b in backends if b != "naive"]
    if "numpy" not in impls:
        impls.insert(0, "numpy")
    for impl in impls + [p for p in peers if p in case.peers()]:
        try:
            candidates[impl] = case.make(impl)
        except NotImplementedError:
            continue
    times.update(alternate(candidates, rounds, seconds, pause, on_step=on_step))

    peer_names = [p for p in times if p in PEERS]
    best_peer = min(peer_names, key=lambda p: np.median(times[p])) if peer_names else None
    best_per_round = (np.min([times[p] for p in peer_names], axis=0) if peer_names else None)
    work = case.work()
    for impl, ts in times.items():
        med = float(np.median(ts))
        row = {
            "op": case.op, "layer": case.name, "shape": case.shape(),
            "backend": NAIVE_SCALED if scaled.get(impl) else impl,
            "peer": impl in PEERS, "naive_scaled": bool(scaled.get(impl)),
            "ms": med * 1e3, "unit": case.unit, "counted": case.counted,
            "rate": work / med / 1e9,
            "gflops": work / med / 1e9 if case.unit == "GFLOP/s" else None,
            "gbytes_per_s": work / med / 1e9 if case.unit == "GB/s" else None,
            "speedup_naive": float(np.median(times["naive"]) / med) if "naive" in times else None,
            "speedup_numpy": round_ratio(times["numpy"], ts) if "numpy" in times else None,
            "ratio_best_peer": (float(np.median(best_per_round / np.asarray(ts)))
                                if best_peer else None),
            "best_peer": best_peer,
            "rounds_ms": [t * 1e3 for t in ts],
        }
        if isinstance(case, LinearCase):
            row["gbytes_per_s"] = case.bytes_moved() / med / 1e9
        rows.append(row)
    return rows


class Progress:
    """A plain text progress bar on stderr: [#####-----] 3/12 conv2d alexnet.conv3: c.
    Redrawn in place (carriage return) on a terminal; one line per step otherwise, so
    that logs stay readable."""

    def __init__(self, total, stream=sys.stderr, width=30):
        self.total, self.done, self.stream, self.width = total, 0, stream, width
        self.start = time.perf_counter()
        self.tty = getattr(stream, "isatty", lambda: False)()

    def show(self, label):
        filled = self.width * self.done // max(self.total, 1)
        bar = "#" * filled + "-" * (self.width - filled)
        text = (f"\r[{bar}] {self.done}/{self.total} {time.perf_counter() - self.start:5.0f}s "
                f"{label}")
        self.stream.write(text[:110].ljust(110) if self.tty else text[1:] + "\n")
        self.stream.flush()

    def finish(self):
        self.done = self.total
        self.show("done")
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()


def run(case_list, backends, peers, rounds, seconds, pause=0.2, progress=True):
    """All rows of all cases, with a progress bar on stderr."""
    bar = Progress(len(case_list)) if progress else None
    rows = []
    for case in case_list:
        step = (lambda impl, c=case: bar.show(f"{c.op} {c.name}: {impl}")) if bar else None
        rows += run_case(case, backends, peers, rounds, seconds, pause, on_step=step)
        if bar:
            bar.done += 1
    if bar:
        bar.finish()
    return rows


# ---------------------------------------------------------------------------- output


def _fmt(v, spec=".2f", suffix=""):
    return "-" if v is None else f"{v:{spec}}{suffix}"


def format_table(rows):
    """Markdown table: op, layer, shape, backend, ms, rate, x naive, x numpy, x best peer."""
    head = ["op", "layer", "shape", "backend", "ms", "GFLOP/s (GB/s)", "x naive", "x numpy",
            "x best peer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 4 + "---:|" * 5]
    for r in rows:
        rate = _fmt(r["rate"], ".1f" if r["rate"] >= 1 else ".3f",
                    " GB/s" if r["unit"] == "GB/s" else "")
        peer = _fmt(r["ratio_best_peer"])
        if r["best_peer"] and r["backend"] == r["best_peer"]:
            peer += " (best)"
        lines.append(f"| {r['op']} | {r['layer']} | {r['shape']} | {r['backend']} | "
                     f"{r['ms']:.3f} | {rate} | {_fmt(r['speedup_naive'], '.1f')} | "
                     f"{_fmt(r['speedup_numpy'])} | {peer} |")
    return "\n".join(lines)


def write_json(path, head, rows):
    with open(path, "w") as f:
        json.dump({"header": head, "rows": rows}, f, indent=1)


def plot(path, head, rows):
    """PNG: rate per layer (x) and implementation (bars; peers hatched, scaled naive
    dotted), log scale, the measured peak as a horizontal line on the GFLOP/s panel."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'fastconv[bench]' "
                         "(or pip install matplotlib)") from None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    panels = [u for u in ("GFLOP/s", "GB/s") if any(r["unit"] == u for r in rows)]
    impls = list(dict.fromkeys(("naive" if r["naive_scaled"] else r["backend"])
                               for r in rows))
    colors = {impl: plt.cm.tab10(i % 10) for i, impl in enumerate(impls)}
    n_layers = max(len({r["layer"] for r in rows if r["unit"] == u}) for u in panels)
    fig, axes = plt.subplots(len(panels), 1, squeeze=False, figsize=(
        2.5 + max(4.0, 0.18 * n_layers * len(impls)), 3.6 * len(panels)))
    for ax, unit in zip(axes[:, 0], panels):
        mine = [r for r in rows if r["unit"] == unit]
        layers = list(dict.fromkeys(r["layer"] for r in mine))
        width = 0.8 / len(impls)
        for j, impl in enumerate(impls):
            xs, ys, hatch = [], [], []
            for i, layer in enumerate(layers):
                for r in mine:
                    name = "naive" if r["naive_scaled"] else r["backend"]
                    if r["layer"] == layer and name == impl:
                        xs.append(i + (j - (len(impls) - 1) / 2) * width)
                        ys.append(r["rate"])
                        hatch.append("//" if r["peer"] else (".." if r["naive_scaled"] else ""))
            if xs:
                label = f"{impl} (peer)" if impl in PEERS else impl
                for x, y, h, first in zip(xs, ys, hatch, [True] + [False] * len(xs)):
                    ax.bar(x, y, width, color=colors[impl], hatch=h, edgecolor="black",
                           linewidth=0.3, label=label if first else None)
        if unit == "GFLOP/s" and head.get("peak_gflops"):
            ax.axhline(head["peak_gflops"], color="red", linestyle="--", linewidth=1,
                       label=f"measured peak {head['peak_gflops']:.0f} GFLOP/s (FMA probe)")
        ax.set_yscale("log")
        ax.set_ylabel(unit + (" (2*MACs)" if unit == "GFLOP/s" else " (read + written)"))
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers, rotation=30, ha="right", fontsize=7)
        ax.grid(axis="y", which="major", alpha=0.3)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[0, 0].set_title(f"fastconv bench: {head['threads']} threads, {head.get('isa')}, "
                         f"{head.get('cpu')} (naive dotted: slice, scaled; peers hatched)",
                         fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
