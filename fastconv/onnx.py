"""Load an ONNX model as a ``fastconv.nn.Graph``.

    import fastconv.onnx
    model = fastconv.onnx.load("resnet50.onnx")
    probs = model(x)                       # one output -> an array, several -> a list
    outs = model.run({"data_0": x})        # {output name: array}
    with fastconv.use_backend("numba"):
        probs = model(x)

The graph's inputs are the ONNX graph inputs that are not initializers; its outputs are
the ONNX outputs. It runs on whichever backend is current, like every ``nn`` model, and
the planner's BN folding and ReLU fusion apply (ONNX ``Conv`` becomes ``nn.Conv2d``,
``BatchNormalization`` ``nn.BatchNorm2d``, ``Relu`` ``nn.ReLU`` ...).

How the loader works
  * Every ONNX node goes to a *handler*: a plain function named after the op, whose
    keyword arguments are the op's ONNX attributes with the spec's defaults. Where an
    op's definition changed between opsets, the handler carries the opset it starts at
    (``Softmax_1``, ``Softmax_13``) and the loader picks the newest one at or below the
    model's opset.
  * A handler gets the node's inputs as a list: an ``np.ndarray`` for a constant (an
    initializer, a ``Constant``, or anything folded from constants), a ``Tensor`` for a
    value computed at run time (its name and shape), None for an omitted optional input.
    It returns an ``nn.Layer`` that takes the node's run-time inputs in order (constant
    inputs are folded into it as its weights), or an ``np.ndarray`` (the node is a
    constant), or a ``Tensor`` (the node passes an input through, as ``Identity``).
  * Constant folding: a node whose inputs are all constants runs at load time, through
    the very layer its handler builds (its first input is handed over as the "run-time"
    one), so load-time and run-time semantics are one code path.
  * Shapes: the loader tracks every Tensor's shape, counting a symbolic batch dimension
    as 1; handlers use it for ``auto_pad`` (SAME_* padding depends on H and W, which must
    be fixed) and for checks. The Graph infers the real shapes again for every input
    shape it is called with, so a symbolic batch runs at any batch size.
  * Ops without a fastconv kernel (Sigmoid, Clip, Mul, Pad, LogSoftmax ...) are small
    layers below computed with NumPy on the host (device arrays are copied there and back).

An op with no handler raises ``NotImplementedError`` naming the op and the node and
listing ``SUPPORTED_OPS``. Only 2-D convolution and pooling (NCHW) are supported, and
of multi-output ops only the first output (Dropout's mask, MaxPool's indices: no).
"""
from __future__ import annotations

import errno
import functools
import inspect
import math
import os
import re
from dataclasses import dataclass

import numpy as np

from . import _checks, _registry, nn, ops
from .nn.layers import _Shape

__all__ = ["load", "from_model", "Tensor", "SUPPORTED_OPS", "LIGHT_MODELS", "light_model_path",
           "randomized", "MAX_ELEMENTS"]

#: The most elements of any tensor the loader materialises or plans (initializers, constant
#: attributes, ConstantOfShape, folded constants, graph inputs and every node's output, a
#: symbolic batch counted as 1): 2**31, 8 GiB of float32, 20x VGG's largest weight. A
#: model asking for more (a corrupt or adversarial file) is refused with ValueError
#: before anything is allocated.
MAX_ELEMENTS = 2**31


def _check_size(shape, what):
    """ValueError, naming ``what``, for a negative dimension or more than MAX_ELEMENTS."""
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"{what} has a negative dimension: shape {list(shape)}")
    n = math.prod(shape)
    if n > MAX_ELEMENTS:
        raise ValueError(f"{what} of shape {list(shape)} has {n} elements, more than "
                         f"fastconv.onnx.MAX_ELEMENTS={MAX_ELEMENTS}: refused (corrupt model?)")
    return shape


def _to_array(numpy_helper, tensor, what):
    """numpy_helper.to_array, after checking the dims it would allocate; ValueError naming
    ``what`` for any inconsistent tensor (data size != product of dims, bad type ...)."""
    _check_size(tensor.dims, what)
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError) as exc:
        raise ValueError(f"{what} of shape {list(tensor.dims)} cannot be read: {exc}") from exc


def _onnx():
    try:
        import onnx
    except ImportError as exc:  # an optional dependency (the "onnx" extra)
        raise ImportError("fastconv.onnx needs the onnx package: pip install onnx") from exc
    return onnx


# ============================================================================ loading


def load(path):
    """The ONNX model at ``path`` as a ``fastconv.nn.Graph`` (see the module doc).

    FileNotFoundError when there is no file; ValueError when it is not a valid ONNX
    model; NotImplementedError (naming the op and node) for an unsupported op.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, "no ONNX model file at this path", path)
    onnx = _onnx()
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(path)
    except (DecodeError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path!r} is not a valid ONNX model: {exc}") from exc
    return from_model(model, source=path)


def from_model(model, *, source="model"):
    """An ``onnx.ModelProto`` (already in memory) as a ``fastconv.nn.Graph``."""
    # protobuf parses many byte strings (an empty file among them) into an empty
    # message without complaint, so "parsed" does not mean "is a model".
    if not model.graph.output or not model.opset_import:
        raise ValueError(f"{source!r} is not a valid ONNX model: it has "
                         f"{len(model.graph.output)} graph outputs and "
                         f"{len(model.opset_import)} opset imports")
    return _Loader(model).graph


# ============================================================================ test models

LIGHT_MODELS = ("bvlc_alexnet", "zfnet512", "vgg19", "inception_v1", "resnet50")


def light_model_path(name):
    """Path of a "light" model that the onnx package ships for its backend tests
    (``LIGHT_MODELS``): the real architectures, with constant placeholder weights."""
    onnx = _onnx()
    path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light",
                        f"light_{name}.onnx")
    if not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, f"no light model {name!r} in this onnx "
                                f"package (known: {', '.join(LIGHT_MODELS)})", path)
    return path


def _uniform(rng, shape, low, high):
    a = rng.random(shape, dtype=np.float32)  # in place from here: no 0.4 GB temporaries
    a *= high - low
    a += low
    return a


def randomized(model, seed=0):
    """A copy of ``model`` (a ModelProto or a path) whose float weights are seeded random
    initializers: for testing and benchmarking models shipped without real weights.

    Weights made by ``ConstantOfShape`` of a constant shape (the light models' form)
    become initializers too. Conv and Gemm weights are He-like (uniform with variance
    2 / fan_in) so activations stay O(1) through ReLU layers; BatchNormalization scales
    and variances are uniform(0.5, 1.5) (variances must be positive); everything else
    (biases, BN shifts and means) uniform(-0.1, 0.1). Unused initializers are dropped (also
    from the graph inputs, where models of IR version < 4 list them).
    (Uniform rather than normal: VGG19 has 140M weights and this runs in every test run.)
    """
    onnx = _onnx()
    TensorProto = onnx.TensorProto
    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    else:
        model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    shapes = {name: a.shape for name, a in inits.items() if a.dtype.kind == "f"}
    nodes = []
    for node in g.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shapes[node.output[0]] = tuple(int(d) for d in inits[node.input[0]])
        else:
            nodes.append(node)
    first_use = {}
    for node in nodes:
        for k, name in enumerate(node.input):
            first_use.setdefault(name, (node, k))
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in shapes.items():
        if name not in first_use:
            continue
        node, k = first_use[name]
        if node.op_type == "BatchNormalization" and k in (1, 4):
            weights[name] = _uniform(rng, shape, 0.5, 1.5)
        elif node.op_type in ("Conv", "Gemm") and k == 1:
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            fan_in = math.prod(shape[1:]) if node.op_type == "Conv" or trans_b else shape[0]
            bound = math.sqrt(6.0 / fan_in)
            weights[name] = _uniform(rng, shape, -bound, bound)
        else:
            weights[name] = _uniform(rng, shape, -0.1, 0.1)
    kept = [i for i in g.initializer if i.name in first_use and i.name not in weights]
    inputs = [i for i in g.input if i.name in first_use and i.name not in weights]
    for field, values in ((g.node, nodes), (g.initializer, kept), (g.input, inputs)):
        del field[:]
        field.extend(values)
    for name, w in weights.items():
        # filled in place: numpy_helper.from_array + extend would copy VGG's 0.5 GB twice
        tensor = g.initializer.add()
        tensor.name, tensor.data_type, tensor.raw_data = name, TensorProto.FLOAT, w.tobytes()
        tensor.dims.extend(w.shape)
    return model




@dataclass(frozen=True)
class Tensor:
    """A value computed at run time, as handlers see it.

    ``shape`` is the load-time shape (a symbolic batch dimension counted as 1; ``static``
    is False then). ``value`` is set only while a node is constant-folded: the constant
    that this "run-time" input stands for.
    """

    name: str
    shape: tuple
    static: bool = True
    value: np.ndarray | None = None


class _Loader:
    """Walks the ONNX nodes once (they are in topological order) and builds the Graph."""

    def __init__(self, model):
        onnx = _onnx()
        self.numpy_helper = onnx.numpy_helper
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                          None)
        if self.opset is None:
            raise ValueError("the model imports no version of the default ONNX opset")
        g = model.graph
        # name -> np.ndarray (a constant) or Tensor (a run-time value)
        self.values = {init.name: _to_array(self.numpy_helper, init, f"initializer {init.name!r}")
                       for init in g.initializer}
        runtime_inputs = [vi for vi in g.input if vi.name not in self.values]
        for vi in runtime_inputs:
            self.values[vi.name] = _input_tensor(vi)
        self.graph = nn.Graph(inputs=[vi.name for vi in runtime_inputs], name=g.name or "onnx")
        # the ONNX input shapes, a symbolic batch counted as 1 (``fastconv run`` uses them)
        self.graph.input_shapes = {vi.name: self.values[vi.name].shape for vi in runtime_inputs}
        # Names read by some node or by the graph: a node output in here must be computed.
        self.used = {name for node in g.node for name in node.input} | {o.name for o in g.output}
        for i, node in enumerate(g.node):
            first = node.output[0] if node.output else "no output"
            self._add(node, node.name or f"#{i} ({node.op_type} -> {first})")
        self.graph.output_names = [self._output(o.name) for o in g.output]

    def _add(self, node, label):
        if node.domain not in ("", "ai.onnx"):
            raise NotImplementedError(
                f"node {label!r}: op {node.domain}.{node.op_type} is from a custom domain; "
                f"fastconv.onnx supports the default ONNX ops {', '.join(SUPPORTED_OPS)}")
        handler = _handler(node.op_type, self.opset)
        if handler is None:
            raise NotImplementedError(
                f"node {label!r}: ONNX op {node.op_type!r} is not supported by fastconv.onnx; "
                f"supported ops: {', '.join(SUPPORTED_OPS)}")
        if not node.output or not node.output[0]:
            raise ValueError(f"node {label!r} ({node.op_type}) names no output")
        for k, extra in enumerate(node.output[1:], 1):
            if extra and extra in self.used:
                raise NotImplementedError(
                    f"node {label!r} ({node.op_type}): its output {k} ({extra!r}) is used, but "
                    "fastconv.onnx computes only the first output of an op")
        missing = [name for name in node.input if name and name not in self.values]
        if missing:
            raise ValueError(f"node {label!r} ({node.op_type}) reads {missing}, which nothing "
                             "before it produces (the nodes are not in topological order?)")
        args = [self.values[name] if name else None for name in node.input]
        folding = bool(args) and not any(isinstance(a, Tensor) for a in args)
        if folding and args[0] is not None:
            args[0] = Tensor(node.input[0], args[0].shape, value=args[0])
        attrs = {a.name: self._attribute(a) for a in node.attribute}
        try:
            unknown = sorted(set(attrs) - set(inspect.signature(handler).parameters))
            if unknown:
                raise NotImplementedError(f"attribute(s) {unknown} are not supported")
            result = handler(args, **attrs)
            if isinstance(result, nn.Layer):
                result = self._place(node.output[0], result, args, folding)
            elif isinstance(result, Tensor) and result.value is not None:
                result = result.value  # a pass-through (Identity) of a folded constant
        except (ValueError, TypeError, NotImplementedError) as exc:
            shapes = ", ".join(_describe(name, a) for name, a in zip(node.input, args))
            # a wrongly typed attribute (TypeError from the op's checks) is a malformed model
            kind = ValueError if isinstance(exc, TypeError) else type(exc)
            raise kind(f"node {label!r} ({node.op_type}) on inputs [{shapes}]: "
                       f"{exc}") from exc
        self.values[node.output[0]] = result

    def _place(self, name, layer, args, folding):
        """Run a folded layer now (-> its constant), or add it to the graph (-> its Tensor)."""
        runtime = [a for a in args if isinstance(a, Tensor)]
        if not runtime:
            raise ValueError("the node has no data input")
        if folding:
            return np.asarray(layer.forward(*(t.value for t in runtime)))
        shape = _check_size(layer.output_shape(*(t.shape for t in runtime)), f"output {name!r}")
        self.graph.add(name, layer, [t.name for t in runtime])
        return Tensor(name, shape, static=all(t.static for t in runtime))

    def _output(self, name):
        """The graph's name for ONNX output ``name``: a pass-through or a constant output
        gets a node of its own so that ``run`` reports it under its ONNX name."""
        if name not in self.values:
            raise ValueError(f"graph output {name!r} is produced by no node, initializer or input")
        value = self.values[name]
        if isinstance(value, Tensor) and value.name == name:
            return name
        layer = _Constant(value) if isinstance(value, np.ndarray) else _Identity()
        self.graph.add(name, layer, [] if isinstance(value, np.ndarray) else [value.name])
        return name

    def _attribute(self, attr):
        onnx = _onnx()
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, onnx.TensorProto):
            return _to_array(self.numpy_helper, value, f"attribute {attr.name!r}")
        if isinstance(value, list):
            return [v.decode() if isinstance(v, bytes) else v for v in value]
        return value


def _input_tensor(vi):
    """A graph input's Tensor: its shape with a symbolic batch dimension counted as 1."""
    t = vi.type.tensor_type
    if t.elem_type not in (1, 10, 11):  # FLOAT, FLOAT16, DOUBLE: the graph computes in float32
        raise NotImplementedError(f"graph input {vi.name!r} has element type {t.elem_type}; "
                                  "fastconv.onnx takes floating-point inputs only")
    if not t.HasField("shape"):
        raise NotImplementedError(f"graph input {vi.name!r} has no shape; fastconv.onnx needs "
                                  "every dimension but the batch to be fixed")
    shape, static = [], True
    for i, d in enumerate(t.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(int(d.dim_value))
        elif i == 0:
            shape.append(1)
            static = False
        else:
            raise NotImplementedError(
                f"graph input {vi.name!r} has a symbolic dimension {i} ({d.dim_param!r}); "
                "fastconv.onnx needs every dimension but the batch (0) to be fixed")
    return Tensor(vi.name, _check_size(shape, f"graph input {vi.name!r}"), static)


def _describe(name, arg):
    if arg is None:
        return "(omitted)"
    if isinstance(arg, Tensor) and arg.value is None:
        return f"{name} {arg.shape}"
    return f"{name} constant {np.shape(arg.value if isinstance(arg, Tensor) else arg)}"


_HANDLER_NAME = re.compile(r"^([A-Z][A-Za-z0-9]*)(?:_(\d+))?$")


def _handlers():
    """{op: {first opset: function}} from this module's handler functions."""
    table = {}
    for name, fn in globals().items():
        match = _HANDLER_NAME.match(name)
        if match and inspect.isfunction(fn):
            table.setdefault(match[1], {})[int(match[2] or 1)] = fn
    return table


def _handler(op, opset):
    versions = _HANDLERS.get(op, {})
    usable = [v for v in versions if v <= opset]
    return versions[max(usable)] if usable else None


# ============================================================================ helpers


def _inputs(inputs, n):
    """The node's inputs padded with None to ``n`` (trailing optional inputs may be absent)."""
    if len(inputs) > n:
        raise ValueError(f"takes at most {n} inputs, got {len(inputs)}")
    return list(inputs) + [None] * (n - len(inputs))


def _const(arg, what):
    """The array of an input that must be constant (``what`` names it in the error)."""
    if isinstance(arg, np.ndarray):
        return arg
    if isinstance(arg, Tensor) and arg.value is not None:
        return arg.value
    raise NotImplementedError(f"{what} must be a constant (an initializer, or computed from "
                              "them), but it is computed at run time")


def _runtime(arg, what):
    """The Tensor of the data input (a constant one only while folding)."""
    if not isinstance(arg, Tensor):
        raise NotImplementedError(f"{what} must be a value computed at run time")
    return arg


def _bind(inputs):
    """Operands for a layer with constants bound: the constant, or None where the layer
    receives the input at run time."""
    return [None if isinstance(a, Tensor) else a for a in inputs]


def _rank(x, ndim, op):
    if len(x.shape) != ndim:
        raise NotImplementedError(f"fastconv's {op} takes {ndim}-D input (2-D spatial, NCHW), "
                                  f"got shape {x.shape}")


def _padding(auto_pad, pads, x_shape, kernel, strides, dilations):
    """ONNX padding as fastconv's (top, left, bottom, right) for input shape (N, C, H, W).

    ONNX ``pads`` are [top, left, bottom, right] already. SAME_* pads so that
    out = ceil(in / stride); SAME_UPPER puts the odd extra row/column at the end,
    SAME_LOWER at the start.
    """
    if auto_pad == "NOTSET":
        pads = (0, 0, 0, 0) if pads is None else tuple(int(p) for p in pads)
        if len(pads) != 4:
            raise NotImplementedError(f"pads={list(pads)}: only 2-D padding (4 values) is "
                                      "supported")
        return pads
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ValueError(f"auto_pad={auto_pad!r} must be NOTSET, SAME_UPPER, SAME_LOWER or "
                         "VALID")
    begin, end = [], []
    for size, k, s, d in zip(x_shape[2:], kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return (begin[0], begin[1], end[0], end[1])


def _ints(values, default):
    return tuple(int(v) for v in (default if values is None else values))


# ============================================================================ layers
# Small layers for ops that fastconv has no kernel for. They compute with NumPy on the
# host; on the cuda backend the activations are device arrays, copied there and back.


class _NumPyLayer(nn.Layer):
    """Base: subclasses define ``compute(*host_arrays)``; ``forward`` moves device arrays."""

    def compute(self, *xs):
        raise NotImplementedError

    def forward(self, *xs):
        on_device = any(_checks.is_device_array(x) for x in xs)
        y = self.compute(*(x.copy_to_host() if _checks.is_device_array(x) else np.asarray(x)
                           for x in xs))
        return _registry.backend_module("cuda").constant(y) if on_device else y


class _Bound(_NumPyLayer):
    """A NumPy op over the node's inputs with the constant ones bound at load:
    ``operands`` holds each constant, and None where ``forward`` supplies the input."""

    n_inputs = -1

    def __init__(self, kind, fn, operands, text):
        self.kind, self.fn, self.operands, self.text = kind, fn, list(operands), text

    def _fill(self, runtime, of=lambda a: a):
        runtime = iter(runtime)
        return [next(runtime) if o is None else of(o) for o in self.operands]

    def describe(self):
        return self.text

    def compute(self, *xs):
        return self.fn(*self._fill(xs))


class _Elementwise(_Bound):
    """fn applied left to right over its operands (Add, Mul, Sum ...), NumPy broadcasting."""

    def output_shape(self, *shapes):
        return tuple(np.broadcast_shapes(*self._fill(shapes, of=np.shape)))

    def compute(self, *xs):
        return functools.reduce(self.fn, self._fill(xs))


class _Concat(_Bound):
    def __init__(self, operands, axis):
        super().__init__("CONCAT", None, operands, f"along axis {axis}")
        self.axis = axis

    def output_shape(self, *shapes):
        return nn.Concat(self.axis).output_shape(*self._fill(shapes, of=np.shape))

    def compute(self, *xs):
        return np.concatenate(self._fill(xs), axis=self.axis)


class _MatMul(_Bound):
    def __init__(self, operands):
        super().__init__("MATMUL", np.matmul, operands, "matrix product (np.matmul)")

    def output_shape(self, *shapes):
        a, b = self._fill(shapes, of=np.shape)
        # np.matmul's rule: a 1-D a is a row vector, a 1-D b a column vector, and the
        # dimension added for it is dropped from the result.
        a2 = tuple(a) if len(a) > 1 else (1,) + tuple(a)
        b2 = tuple(b) if len(b) > 1 else tuple(b) + (1,)
        if a2[-1] != b2[-2]:
            raise ValueError(f"MatMul of shapes {tuple(a)} and {tuple(b)}: inner dimensions "
                             f"{a2[-1]} and {b2[-2]} differ")
        rows = () if len(a) == 1 else (a2[-2],)
        cols = () if len(b) == 1 else (b2[-1],)
        return tuple(np.broadcast_shapes(a2[:-2], b2[:-2])) + rows + cols


class _Unary(_NumPyLayer):
    """y = fn(x) elementwise (Sigmoid, LeakyRelu, Clip)."""

    def __init__(self, kind, fn, text):
        self.kind, self.fn, self.text = kind, fn, text

    def describe(self):
        return self.text

    def compute(self, x):
        return self.fn(x)


def _sigmoid(x):
    # 1 / (1 + exp(-x)) overflows exp for very negative x; this form never does.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


class _Reshape(nn.Layer):
    """y = x.reshape(target(x.shape)): Reshape, and Flatten at an axis other than 1.
    (Works on device arrays as is.)"""

    kind = "RESHAPE"

    def __init__(self, target, text):
        self.target, self.text = target, text

    def output_shape(self, shape):
        return self.target(tuple(shape))

    def describe(self):
        return self.text

    def forward(self, x):
        return x.reshape(self.target(tuple(x.shape)))


def _rows(shape, axis):
    """ONNX's "coerce to 2-D" at ``axis``: (prod(shape[:axis]), prod(shape[axis:]))."""
    return (math.prod(shape[:axis]), math.prod(shape[axis:]))


class _SoftmaxRows(nn.Softmax):
    """Softmax before opset 13: the input flattened to 2-D at ``axis``, each row normalised."""

    def describe(self):
        return f"over the flattened axes {self.axis}.."

    def forward(self, x):
        return ops.softmax(x.reshape(_rows(x.shape, self.axis)), -1).reshape(x.shape)


class _LogSoftmax(_NumPyLayer):
    """log(softmax(x)) computed as x - max - log(sum(exp(x - max))), which stays finite
    where softmax underflows to 0. ``rows``: the pre-opset-13 flattening (see above)."""

    kind = "SOFTMAX"

    def __init__(self, axis, rows):
        self.axis, self.rows = axis, rows

    def describe(self):
        return f"log softmax over axis {self.axis}" + (" (rows)" if self.rows else "")

    def compute(self, x):
        z = x.reshape(_rows(x.shape, self.axis)) if self.rows else x
        axis = -1 if self.rows else self.axis
        z = z - z.max(axis=axis, keepdims=True)
        return (z - np.log(np.exp(z).sum(axis=axis, keepdims=True))).reshape(x.shape)


class _LocalResponseNormOnnxWindow(nn.LocalResponseNorm):
    """LRN with ONNX's window for an even ``size``: c - (size/2 - 1) .. c + size/2.

    fastconv (as PyTorch) uses c - size/2 .. c + size/2 - 1: the mirror image. So
    reversing the channels, normalising with fastconv's window and reversing back gives
    ONNX's exactly (the clipping at the first and last channel mirrors too).
    Host arrays only (the flips are NumPy views).
    """

    def describe(self):
        return super().describe() + " (ONNX window)"

    def forward(self, x):
        flipped = np.ascontiguousarray(np.asarray(x)[:, ::-1])
        y = ops.local_response_norm(flipped, self.size, self.alpha, self.beta, self.k)
        return np.ascontiguousarray(y[:, ::-1])


class _Gemm(nn.Layer):
    """fastconv.gemm with constant B and C: for the Gemm forms nn.Linear does not cover."""

    kind = "FC"

    def __init__(self, b, c, alpha, beta, trans_a, trans_b):
        self.b, self.c = np.asarray(b, np.float32), None if c is None else np.asarray(c,
                                                                                      np.float32)
        self.alpha, self.beta, self.trans_a, self.trans_b = alpha, beta, trans_a, trans_b

    def parameters(self):
        return {"b": self.b} if self.c is None else {"b": self.b, "c": self.c}

    def output_shape(self, shape):
        M, N, _ = _checks.check_gemm(_Shape(shape), _Shape(self.b.shape),
                                     None if self.c is None else _Shape(self.c.shape),
                                     self.trans_a, self.trans_b)
        return (M, N)

    def macs(self, shape):
        return math.prod(self.output_shape(shape)) * (shape[0] if self.trans_a else shape[1])

    def describe(self):
        return (f"gemm alpha={self.alpha} beta={self.beta} transA={int(self.trans_a)} "
                f"transB={int(self.trans_b)}")

    def forward(self, a):
        return ops.gemm(a, self.b, self.c, alpha=self.alpha, beta=self.beta,
                        trans_a=self.trans_a, trans_b=self.trans_b)


class _Pad(_NumPyLayer):
    """np.pad per axis with (begin, end) widths; negative widths crop (ONNX allows them)."""

    n_inputs = 1
    kind = "PAD"
    _NUMPY_MODE = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}

    def __init__(self, widths, mode, value):
        if mode not in self._NUMPY_MODE:
            raise NotImplementedError(f"Pad mode={mode!r}; supported: {sorted(self._NUMPY_MODE)}")
        self.widths, self.mode, self.value = widths, mode, value

    def output_shape(self, shape):
        if len(shape) != len(self.widths):
            raise ValueError(f"pads for {len(self.widths)} axes, input has shape {tuple(shape)}")
        out = tuple(d + b + e for d, (b, e) in zip(shape, self.widths))
        if min(out) < 0:
            raise ValueError(f"pads {self.widths} crop more than the input {tuple(shape)} has")
        return out

    def describe(self):
        return f"{self.mode} pad {self.widths}"

    def compute(self, x):
        grow = [(max(b, 0), max(e, 0)) for b, e in self.widths]
        extra = {"constant_values": self.value} if self.mode == "constant" else {}
        y = np.pad(x, grow, mode=self._NUMPY_MODE[self.mode], **extra)
        return y[tuple(slice(-min(b, 0), n + min(e, 0))
                       for n, (b, e) in zip(y.shape, self.widths))]


class _Identity(nn.Layer):
    """Passes its input on: a graph output that is another value under a second name."""

    def forward(self, x):
        return x


class _Constant(nn.Layer):
    """A graph output that is a constant: no inputs, always the same array."""

    n_inputs = 0

    def __init__(self, value):
        self.value = np.asarray(value)

    def output_shape(self):
        return self.value.shape

    def forward(self):
        return self.value


# ============================================================================ handlers
# One per ONNX op, named after it; ``inputs`` as described in the module doc, then the
# op's attributes with the defaults of the ONNX spec.


def Conv(inputs, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
         strides=None):
    x, w, b = _inputs(inputs, 3)
    x, w = _runtime(x, "Conv's input X"), _const(w, "Conv's weight W")
    b = None if b is None else _const(b, "Conv's bias B")
    _rank(x, 4, "Conv")
    if w.ndim != 4 or (kernel_shape is not None and tuple(kernel_shape) != w.shape[2:]):
        raise ValueError(f"weight W of shape {w.shape} must be (M, C/group, kH, kW) with "
                         f"kernel_shape={kernel_shape}")
    strides, dilations = _ints(strides, (1, 1)), _ints(dilations, (1, 1))
    padding = _padding(auto_pad, pads, x.shape, w.shape[2:], strides, dilations)
    return nn.Conv2d(w.shape[1] * group, w.shape[0], tuple(w.shape[2:]), stride=strides,
                     padding=padding, dilation=dilations, groups=group, bias=b is not None,
                     weight=w, bias_value=b)


def _pool_args(inputs, op, auto_pad, kernel_shape, pads, strides, dilations):
    """(kernel, stride, padding, dilation) of a 2-D pooling node. ONNX's strides default
    to 1, not to the kernel as in PyTorch."""
    (x,) = inputs
    x = _runtime(x, f"{op}'s input X")
    _rank(x, 4, op)
    if kernel_shape is None or len(kernel_shape) != 2:
        raise ValueError(f"kernel_shape={kernel_shape} must give 2 sizes")
    kernel, strides, dilations = _ints(kernel_shape, ()), _ints(strides, (1, 1)), _ints(
        dilations, (1, 1))
    return kernel, strides, _padding(auto_pad, pads, x.shape, kernel, strides, dilations), \
        dilations


def MaxPool(inputs, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None,
            pads=None, storage_order=0, strides=None):
    # storage_order only concerns the Indices output, which fastconv does not compute.
    k, s, p, d = _pool_args(inputs, "MaxPool", auto_pad, kernel_shape, pads, strides, dilations)
    return nn.MaxPool2d(k, s, p, d, ceil_mode=bool(ceil_mode))


def AveragePool(inputs, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None,
                kernel_shape=None, pads=None, strides=None):
    # Note ONNX's count_include_pad defaults to 0 (PyTorch's and nn.AvgPool2d's to True).
    k, s, p, d = _pool_args(inputs, "AveragePool", auto_pad, kernel_shape, pads, strides,
                            dilations)
    if d != (1, 1):
        raise NotImplementedError(f"AveragePool with dilations={list(d)}: fastconv's "
                                  "avg_pool2d has no dilation")
    return nn.AvgPool2d(k, s, p, ceil_mode=bool(ceil_mode),
                        count_include_pad=bool(count_include_pad))


def GlobalAveragePool(inputs):
    _rank(_runtime(inputs[0], "GlobalAveragePool's input X"), 4, "GlobalAveragePool")
    return nn.GlobalAvgPool2d()


def LRN(inputs, *, alpha=0.0001, beta=0.75, bias=1.0, size=None):
    if size is None:
        raise ValueError("LRN needs the size attribute")
    # For an odd size ONNX's window and fastconv's (PyTorch's) agree; for an even size
    # they lean opposite ways and the mirrored layer reproduces ONNX's.
    layer = nn.LocalResponseNorm if size % 2 else _LocalResponseNormOnnxWindow
    return layer(size, alpha, beta, bias)


def Gemm(inputs, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    a, b, c = _inputs(inputs, 3)
    a, b = _runtime(a, "Gemm's input A"), _const(b, "Gemm's input B")
    c = None if c is None else _const(c, "Gemm's input C")
    if len(a.shape) != 2 or b.ndim != 2:
        raise ValueError(f"Gemm takes 2-D A and B, got A {a.shape} and B {b.shape}")
    n = b.shape[0] if transB else b.shape[1]
    if not transA and alpha == 1 and beta == 1 and (c is None or c.shape in ((n,), (1, n))):
        # y = A @ op(B) + C is a fully connected layer with weight op(B).T (out, in): B
        # as given when transB=1, else transposed once here. C is then its bias.
        weight = b if transB else b.T
        return nn.Linear(weight.shape[1], weight.shape[0], bias=c is not None, weight=weight,
                         bias_value=None if c is None else c.reshape(n))
    return _Gemm(b, c, alpha, beta, bool(transA), bool(transB))


def MatMul(inputs):
    a, b = inputs
    if isinstance(a, Tensor) and isinstance(b, np.ndarray) and b.ndim == 2 and len(a.shape) >= 2:
        # (*, K) @ (K, N) with a constant (K, N) is nn.Linear with weight B.T.
        return nn.Linear(b.shape[0], b.shape[1], bias=False, weight=b.T)
    return _MatMul(_bind(inputs))


def _elementwise(kind, fn, inputs, text):
    return _Elementwise(kind, fn, _bind(inputs), text)


def Add(inputs):
    if all(isinstance(a, Tensor) and a.value is None for a in inputs):
        return nn.Add()  # the planner fuses a following ReLU into it (ResNet's shortcut)
    return _elementwise("ADD", np.add, inputs, "x + y")


def Sum(inputs):
    if len(inputs) == 1:
        return inputs[0]
    return Add(inputs)


def Sub(inputs):
    return _elementwise("SUB", np.subtract, inputs, "x - y")


def Mul(inputs):
    return _elementwise("MUL", np.multiply, inputs, "x * y")


def _divide(a, b):
    """ONNX Div: true division for floats, truncation toward zero for integers (as C)."""
    if np.issubdtype(np.result_type(a, b), np.integer):
        return np.trunc(np.true_divide(a, b)).astype(np.result_type(a, b))
    return np.true_divide(a, b)


def Div(inputs):
    return _elementwise("DIV", _divide, inputs, "x / y")


def Relu(inputs):
    return nn.ReLU()


def LeakyRelu(inputs, *, alpha=0.01):
    alpha = np.float32(alpha)
    return _Unary("RELU", lambda x: np.where(x >= 0, x, x * alpha), f"leaky relu, alpha {alpha}")


def Sigmoid(inputs):
    return _Unary("SIGMOID", _sigmoid, "1 / (1 + exp(-x))")


def _clip(lo, hi):
    return _Unary("CLIP", lambda x: np.minimum(np.maximum(x, lo), hi), f"clip to [{lo}, {hi}]")


_FLOAT_MAX = float(np.finfo(np.float32).max)


def Clip_6(inputs, *, min=-_FLOAT_MAX, max=_FLOAT_MAX):  # noqa: A002 (ONNX's names)
    return _clip(np.float32(min), np.float32(max))


def Clip_11(inputs):
    # From opset 11, min and max are (optional) inputs instead of attributes.
    _, lo, hi = _inputs(inputs, 3)
    lo = -_FLOAT_MAX if lo is None else _const(lo, "Clip's min")[()]
    hi = _FLOAT_MAX if hi is None else _const(hi, "Clip's max")[()]
    return _clip(lo, hi)


def Dropout(inputs, *, ratio=0.5, seed=None, is_test=0, consumed_inputs=None):
    # The identity at inference: the output is the input under a second name (the planner
    # would remove an nn.Dropout anyway). Opset 12 moved ratio and training_mode to inputs.
    x, _, training = _inputs(inputs, 3)
    if training is not None and bool(_const(training, "Dropout's training_mode")):
        raise NotImplementedError("Dropout with training_mode=True (fastconv does inference)")
    return x


def _softmax(inputs, axis, log, rows):
    """Softmax / LogSoftmax along ``axis``; ``rows``: the pre-opset-13 semantics, which
    flatten the input to 2-D at ``axis`` and normalise each row (same thing when ``axis``
    is the last one)."""
    x = _runtime(inputs[0], "the input")
    ndim = len(x.shape)
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis} is out of range for a {ndim}-D input")
    axis %= ndim
    rows = rows and axis != ndim - 1
    if log:
        return _LogSoftmax(axis, rows)
    return _SoftmaxRows(axis) if rows else nn.Softmax(axis)


def Softmax_1(inputs, *, axis=1):
    return _softmax(inputs, axis, log=False, rows=True)


def Softmax_13(inputs, *, axis=-1):
    return _softmax(inputs, axis, log=False, rows=False)


def LogSoftmax_1(inputs, *, axis=1):
    return _softmax(inputs, axis, log=True, rows=True)


def LogSoftmax_13(inputs, *, axis=-1):
    return _softmax(inputs, axis, log=True, rows=False)


def Flatten(inputs, *, axis=1):
    ndim = len(_runtime(inputs[0], "the input").shape)
    if not -ndim <= axis <= ndim:
        raise ValueError(f"axis={axis} is out of range for a {ndim}-D input")
    axis = axis + ndim if axis < 0 else axis
    if axis == 1:
        return nn.Flatten(1)  # ONNX's (N, rest) is torch.flatten(x, 1) exactly when axis=1
    return _Reshape(lambda shape: _rows(shape, axis), f"to 2-D at axis {axis}")


def _reshape_target(target, allowzero):
    """ONNX Reshape's output shape for an input shape: 0 copies the input's dimension
    (unless allowzero), -1 takes whatever is left."""
    target = [int(d) for d in target]
    if target.count(-1) > 1:
        raise ValueError(f"shape {target} has more than one -1")

    def output_shape(shape):
        if not allowzero and any(d == 0 and i >= len(shape) for i, d in enumerate(target)):
            raise ValueError(f"shape {target} copies (0) a dimension that input {shape} lacks")
        out = [shape[i] if d == 0 and not allowzero else d for i, d in enumerate(target)]
        if -1 in out:
            known = math.prod(d for d in out if d != -1)
            if known == 0 or math.prod(shape) % known:
                raise ValueError(f"cannot reshape {shape} to {target}")
            out[out.index(-1)] = math.prod(shape) // known
        if math.prod(out) != math.prod(shape):
            raise ValueError(f"cannot reshape {shape} ({math.prod(shape)} values) to {target}")
        return tuple(out)

    return output_shape


def Reshape_5(inputs, *, allowzero=0):
    x, shape = inputs
    _runtime(x, "Reshape's data")
    target = _const(shape, "Reshape's shape")
    return _Reshape(_reshape_target(target, allowzero), f"to {list(target)}")


def Reshape_1(inputs, *, shape=None, consumed_inputs=None):
    # Before opset 5 the target shape was an attribute.
    return Reshape_5([inputs[0], np.asarray(shape)])


def Concat(inputs, *, axis=None):
    if axis is None:
        raise ValueError("Concat needs the axis attribute")
    if all(isinstance(a, Tensor) and a.value is None for a in inputs):
        return nn.Concat(axis)
    return _Concat(_bind(inputs), axis)


def BatchNormalization(inputs, *, epsilon=1e-05, momentum=0.9, spatial=1, training_mode=0,
                       is_test=0, consumed_inputs=None):
    x, scale, bias, mean, var = inputs
    if training_mode or not spatial:
        raise NotImplementedError("BatchNormalization in training mode or with spatial=0")
    scale = _const(scale, "BatchNormalization's scale")
    return nn.BatchNorm2d(len(scale), epsilon, weight=scale, bias=_const(bias, "B"),
                          running_mean=_const(mean, "input_mean"),
                          running_var=_const(var, "input_var"))


def Constant(inputs, *, value=None, value_float=None, value_floats=None, value_int=None,
             value_ints=None, value_string=None, value_strings=None, sparse_value=None):
    if sparse_value is not None:
        raise NotImplementedError("Constant with a sparse_value")
    given = [v for v in (value, value_float, value_floats, value_int, value_ints, value_string,
                         value_strings) if v is not None]
    if len(given) != 1:
        raise ValueError("Constant needs exactly one value attribute")
    if value_float is not None or value_floats is not None:
        return np.asarray(given[0], np.float32)
    if value_int is not None or value_ints is not None:
        return np.asarray(given[0], np.int64)
    return np.asarray(given[0])


def ConstantOfShape(inputs, *, value=None):
    shape = _check_size(_const(inputs[0], "ConstantOfShape's shape").astype(np.int64).reshape(-1),
                        "ConstantOfShape's output")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value)
    return np.full(tuple(shape), value.reshape(-1)[0], dtype=value.dtype)


def Shape(inputs, *, start=0, end=None):
    x = _runtime(inputs[0], "Shape's input")
    if x.value is None and not x.static:
        raise NotImplementedError("Shape of a value with a symbolic batch dimension: fastconv "
                                  "graphs fold shapes into constants at load")
    shape = np.shape(x.value) if x.value is not None else x.shape
    return np.asarray(shape[start:end], np.int64)


def Identity(inputs):
    return inputs[0]


def _pad_widths(pads, axes, ndim):
    """ONNX pads [x1_begin, x2_begin, ..., x1_end, x2_end, ...] over ``axes`` -> per axis
    (begin, end) for all ``ndim`` axes."""
    pads = [int(p) for p in pads]
    axes = list(range(ndim)) if axes is None else [int(a) % ndim for a in axes]
    if len(pads) != 2 * len(axes):
        raise ValueError(f"pads {pads} must have 2 values per padded axis ({len(axes)} axes)")
    widths = [(0, 0)] * ndim
    for i, axis in enumerate(axes):
        widths[axis] = (pads[i], pads[i + len(axes)])
    return widths


def Pad_2(inputs, *, mode="constant", pads=None, value=0.0):
    x = _runtime(inputs[0], "Pad's data")
    if pads is None:
        raise ValueError("Pad needs the pads attribute")
    return _Pad(_pad_widths(pads, None, len(x.shape)), mode, np.float32(value))


def Pad_11(inputs, *, mode="constant"):
    # From opset 11, pads (and constant_value, and from 18 axes) are inputs.
    x, pads, value, axes = _inputs(inputs, 4)
    x = _runtime(x, "Pad's data")
    pads = _const(pads, "Pad's pads")
    axes = None if axes is None else _const(axes, "Pad's axes")
    value = 0 if value is None else _const(value, "Pad's constant_value")[()]
    return _Pad(_pad_widths(pads, axes, len(x.shape)), mode, value)


_HANDLERS = _handlers()
SUPPORTED_OPS = sorted(_HANDLERS)
