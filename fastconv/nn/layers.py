"""Layers: parameters, shape inference and a forward that calls the public ops.

Every layer knows three things about itself, all from input *shapes* (with batch):
``output_shape(*shapes)``, ``macs(*shapes)`` (multiply-accumulates, for summaries) and
``describe()`` (the lecture's one-line wording). ``forward(*xs)`` runs it through
``fastconv``'s public ops, on whichever backend is current; the graph's planner
(``fastconv.nn.graph``) bypasses that for speed, but never changes the result.

Weights: NCHW / torch layouts (conv weight (K, C/groups, R, S), linear weight
(out, in)), He-initialised (normal, std sqrt(2 / fan_in)) unless given, biases zero.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _checks, _registry, ops


class _Shape:
    """Stands in for an array in the ``_checks`` functions, which only read shape/ndim."""

    def __init__(self, shape):
        self.shape = tuple(int(d) for d in shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32)


def _he(rng, shape, fan_in):
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)


def _param(name, value, shape):
    """A given parameter as float32, checked against the shape the layer needs."""
    arr = np.ascontiguousarray(value, dtype=np.float32)
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} of shape {arr.shape} must have shape {tuple(shape)}")
    return arr


def _to_device(gpu, x):
    return x if _checks.is_device_array(x) else gpu.constant(x)


def _xy(pair):
    return f"{pair[0]}x{pair[1]}" if pair[0] != pair[1] else f"{pair[0]}x{pair[0]}"


class Layer:
    """Base class. ``n_inputs`` is how many tensors ``forward`` takes (-1: any number)."""

    n_inputs = 1
    kind = "LAYER"  # the lecture's upper-case name: CONV, POOL, NORM, FC ...

    def parameters(self):
        """{name: array} of the learnable parameters (``weight``, ``bias``, ...)."""
        return {}

    def set_parameters(self, params):
        """Replace parameters from {name: array}; shapes must match (ValueError otherwise)."""
        current = self.parameters()
        for key, value in params.items():
            if key not in current:
                raise ValueError(f"{type(self).__name__} has no parameter {key!r} "
                                 f"(it has {sorted(current)})")
            setattr(self, key, _param(key, value, current[key].shape))

    def output_shape(self, *shapes):
        return tuple(shapes[0])

    def macs(self, *shapes):
        return 0

    def describe(self):
        return type(self).__name__

    def forward(self, *xs):
        raise NotImplementedError

    def __call__(self, *xs):
        return self.forward(*xs)

    def __repr__(self):
        return f"{type(self).__name__}({self.describe()})"


class _Weighted(Layer):
    """A layer with a weight (out, ...) and an optional bias (out,): Conv2d and Linear."""

    def _init_weights(self, shape, fan_in, weight, bias, bias_value, rng):
        """The given weight / bias_value (shape-checked), else He init and a zero bias
        (none when bias is False)."""
        rng = rng if rng is not None else np.random.default_rng(0)
        self.weight = _he(rng, shape, fan_in) if weight is None else _param("weight", weight,
                                                                             shape)
        if bias_value is not None:
            self.bias = _param("bias", bias_value, (shape[0],))
        else:
            self.bias = np.zeros(shape[0], np.float32) if bias else None

    def parameters(self):
        if self.bias is None:
            return {"weight": self.weight}
        return {"weight": self.weight, "bias": self.bias}


class Conv2d(_Weighted):
    """conv2d with the layer's weight (K, C/groups, R, S) and bias (K,), optional fused ReLU."""

    kind = "CONV"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, activation=None, *, weight=None, bias_value=None,
                 rng=None):
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _checks.pair("kernel_size", kernel_size, 1)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.activation = activation
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels={in_channels} and out_channels={out_channels} "
                             f"must both divide by groups={groups}")
        shape = (out_channels, in_channels // groups) + self.kernel_size
        self._init_weights(shape, shape[1] * shape[2] * shape[3], weight, bias, bias_value, rng)

    def params_for(self, shape):
        return _checks.check_conv2d(_Shape(shape), _Shape(self.weight.shape),
                                    None if self.bias is None else _Shape(self.bias.shape),
                                    self.stride, self.padding, self.dilation, self.groups)

    def output_shape(self, shape):
        return self.params_for(shape).out_shape

    def macs(self, shape):
        return self.params_for(shape).macs

    def describe(self):
        p = self.padding if isinstance(self.padding, str) else _checks.pads4("padding",
                                                                             self.padding)
        pad = p if isinstance(p, str) else (p[0] if len(set(p)) == 1 else p)
        stride = _checks.pair("stride", self.stride, 1)
        text = (f"{self.out_channels} {_xy(self.kernel_size)} filters at stride "
                f"{stride[0] if stride[0] == stride[1] else stride}, pad {pad}")
        if self.groups > 1:
            text += f", groups {self.groups}"
        if self.activation:
            text += f", {self.activation}"
        return text

    def forward(self, x):
        return ops.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                          self.groups, activation=self.activation)


class _Pool(Layer):
    kind = "POOL"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        self.kernel_size, self.padding, self.ceil_mode = kernel_size, padding, ceil_mode
        self.stride = kernel_size if stride is None else stride

    def describe(self):
        k, s = _checks.pair("kernel_size", self.kernel_size, 1), _checks.pair("stride",
                                                                              self.stride, 1)
        text = f"{self.mode} {_xy(k)} filters at stride {s[0] if s[0] == s[1] else s}"
        if self.padding:
            text += f", pad {self.padding}"
        return text + (", ceil" if self.ceil_mode else "")


class MaxPool2d(_Pool):
    mode = "max"

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.dilation = dilation

    def output_shape(self, shape):
        return _checks.check_pool2d(_Shape(shape), self.kernel_size, self.stride, self.padding,
                                    self.dilation, self.ceil_mode, True).out_shape

    def forward(self, x):
        return ops.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                              self.ceil_mode)


class AvgPool2d(_Pool):
    mode = "avg"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = count_include_pad

    def output_shape(self, shape):
        return _checks.check_pool2d(_Shape(shape), self.kernel_size, self.stride, self.padding,
                                    1, self.ceil_mode, self.count_include_pad).out_shape

    def forward(self, x):
        return ops.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                              self.count_include_pad)


class GlobalAvgPool2d(Layer):
    kind = "POOL"

    def output_shape(self, shape):
        return tuple(shape[:2]) + (1, 1)

    def describe(self):
        return "global average"

    def forward(self, x):
        return ops.global_avg_pool2d(x)


class LocalResponseNorm(Layer):
    kind = "NORM"

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def describe(self):
        return f"local response norm, size {self.size}"

    def forward(self, x):
        return ops.local_response_norm(x, self.size, self.alpha, self.beta, self.k)


class ReLU(Layer):
    kind = "RELU"

    def describe(self):
        return "max(x, 0)"

    def forward(self, x):
        return ops.relu(x)


class Dropout(Layer):
    """Identity at inference (the planner removes it)."""

    kind = "DROPOUT"

    def __init__(self, p=0.5):
        self.p = p

    def describe(self):
        return f"p={self.p} (identity at inference)"

    def forward(self, x):
        return x


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...), as torch.flatten(x, start_dim)."""

    kind = "FLATTEN"

    def __init__(self, start_dim=1):
        self.start_dim = start_dim

    def output_shape(self, shape):
        return tuple(shape[:self.start_dim]) + (math.prod(shape[self.start_dim:]),)

    def describe(self):
        return f"from dim {self.start_dim}"

    def forward(self, x):
        return x.reshape(self.output_shape(x.shape))


class Linear(_Weighted):
    kind = "FC"

    def __init__(self, in_features, out_features, bias=True, *, weight=None, bias_value=None,
                 rng=None):
        self.in_features, self.out_features = in_features, out_features
        self._init_weights((out_features, in_features), in_features, weight, bias, bias_value,
                           rng)

    def output_shape(self, shape):
        _checks.check_linear(_Shape(shape), _Shape(self.weight.shape),
                             None if self.bias is None else _Shape(self.bias.shape))
        return tuple(shape[:-1]) + (self.out_features,)

    def macs(self, shape):
        return math.prod(shape[:-1]) * self.in_features * self.out_features

    def describe(self):
        return f"{self.out_features} neurons"

    def forward(self, x):
        return ops.linear(x, self.weight, self.bias)


class Softmax(Layer):
    kind = "SOFTMAX"

    def __init__(self, axis=-1):
        self.axis = axis

    def describe(self):
        return f"over axis {self.axis}"

    def forward(self, x):
        return ops.softmax(x, self.axis)


class BatchNorm2d(Layer):
    """Inference batch norm with running statistics; folded into a preceding conv by the planner."""

    kind = "BN"

    def __init__(self, num_features, eps=1e-5, *, weight=None, bias=None, running_mean=None,
                 running_var=None):
        C = num_features
        self.num_features, self.eps = C, eps
        self.weight = np.ones(C, np.float32) if weight is None else _param("weight", weight, (C,))
        self.bias = np.zeros(C, np.float32) if bias is None else _param("bias", bias, (C,))
        self.running_mean = (np.zeros(C, np.float32) if running_mean is None
                             else _param("running_mean", running_mean, (C,)))
        self.running_var = (np.ones(C, np.float32) if running_var is None
                            else _param("running_var", running_var, (C,)))

    def parameters(self):
        return {"weight": self.weight, "bias": self.bias, "running_mean": self.running_mean,
                "running_var": self.running_var}

    def describe(self):
        return f"{self.num_features} channels"

    def scale_shift(self):
        """y = x * scale + shift per channel, in float64 (for folding into a conv)."""
        scale = self.weight.astype(np.float64) / np.sqrt(self.running_var.astype(np.float64)
                                                         + self.eps)
        return scale, self.bias - self.running_mean.astype(np.float64) * scale

    def forward(self, x):
        return ops.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                              self.eps)


class Concat(Layer):
    """Concatenate along an axis (channels by default): Inception's branch merge."""

    n_inputs = -1
    kind = "CONCAT"

    def __init__(self, axis=1):
        self.axis = axis

    def output_shape(self, *shapes):
        axis = self.axis % len(shapes[0])
        for s in shapes[1:]:
            if len(s) != len(shapes[0]) or any(a != b for i, (a, b) in
                                               enumerate(zip(s, shapes[0])) if i != axis):
                raise ValueError(f"Concat along axis {self.axis}: shapes {shapes} differ "
                                 "outside that axis")
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        return tuple(out)

    def describe(self):
        return f"along axis {self.axis}"

    def forward(self, *xs):
        if any(_checks.is_device_array(x) for x in xs):  # keep GPU activations on the GPU
            gpu = _registry.backend_module("cuda")
            return gpu.concat([_to_device(gpu, x) for x in xs], self.axis % len(xs[0].shape))
        return np.concatenate([np.asarray(x) for x in xs], axis=self.axis)


class Add(Layer):
    """Elementwise sum of its inputs (ResNet's shortcut), optionally followed by ReLU."""

    n_inputs = -1
    kind = "ADD"

    def __init__(self, activation=None):
        self.activation = activation

    def output_shape(self, *shapes):
        return tuple(np.broadcast_shapes(*shapes))

    def describe(self):
        return "elementwise sum" + (f", {self.activation}" if self.activation else "")

    def forward(self, *xs):
        if any(_checks.is_device_array(x) for x in xs):  # keep GPU activations on the GPU
            gpu = _registry.backend_module("cuda")
            if len({tuple(x.shape) for x in xs}) != 1:
                raise ValueError(f"Add on device arrays needs equal shapes, got "
                                 f"{[tuple(x.shape) for x in xs]}")
            y = _to_device(gpu, xs[0])
            for x in xs[1:]:
                y = gpu.add(y, _to_device(gpu, x))
        else:
            y = np.add(xs[0], xs[1])
            for x in xs[2:]:
                np.add(y, x, out=y)
        return ops.relu(y) if self.activation == "relu" else y
