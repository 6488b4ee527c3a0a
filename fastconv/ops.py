"""The public ops: validate (``_checks``) -> choose a kernel (``_registry``) -> call -> return.

Every op takes NumPy-compatible arrays in NCHW layout and a keyword ``backend``
(``None`` means the current default, normally ``"auto"``). Semantics follow
``torch.nn.functional``; the conventions are written out in words in
``fastconv.backends.naive``, which is the executable spec.

Dtypes: float32 in, float32 out. float64 inputs give float64 outputs; the
``naive`` and ``numpy`` backends compute them in float64, every other backend
computes in float32 and casts the result back. Integer and bool inputs are
computed as float32. Inputs are never modified.

Device arrays (numba's, or any ``__cuda_array_interface__`` object such as CuPy;
float32, C-contiguous) go to the ``cuda`` backend under ``"auto"``; naming a host
backend for them is a TypeError. The result lives where ``x`` (``a`` for gemm)
lives: see ``fastconv.backends.numba_cuda``.
"""
from __future__ import annotations

import math

import numpy as np

from . import _checks, _registry
from ._checks import as_array, is_device_array, result_dtype

__all__ = list(_registry.OPS)  # one public function per op in the kernel table

ACTIVATIONS = (None, "relu")


def _on_device(*arrays):
    return any(is_device_array(a) for a in arrays if a is not None)


def _prepare(backend, out_dtype, *arrays):
    """C-contiguous copies (or views) in the backend's compute dtype; None and device
    arrays (already float32 and contiguous, see as_array) pass through."""
    dtype = out_dtype if backend in _registry.FLOAT64_BACKENDS else np.float32
    return [a if a is None or (type(a) is np.ndarray and a.dtype == dtype and a.flags.c_contiguous)
            or is_device_array(a) else np.ascontiguousarray(a, dtype=dtype) for a in arrays]


def _finish(y, out_dtype):
    """Cast back to the caller's dtype; device results stay float32 on the device."""
    return y if y.dtype == out_dtype or is_device_array(y) else y.astype(out_dtype)


def _zeros(shape, out_dtype, on_device):
    """The result of an op on an empty input (no kernel runs), where the kernel would put it."""
    if on_device:
        return _registry.backend_module("cuda").zeros(shape)
    return np.zeros(shape, out_dtype)


def _optional(name, value):
    return None if value is None else as_array(name, value)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           activation=None, backend=None):
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    x (N, C, H, W), weight (K, C/groups, R, S), bias (K,) -> y (N, K, P, Q) with
    P = floor((H + pad_top + pad_bottom - dilation*(R-1) - 1) / stride) + 1.

    padding: int, (ph, pw), (top, left, bottom, right), "valid", or "same"
    (stride 1 only; an odd total pad puts the extra row/column at the end).
    groups: C and K must both divide by it; groups == C == K is depthwise.
    activation: None or "relu", applied after the bias (fused where the backend can).
    """
    x, weight, bias = as_array("x", x), as_array("weight", weight), _optional("bias", bias)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} must be one of {ACTIVATIONS}")
    p = _checks.check_conv2d(x, weight, bias, stride, padding, dilation, groups)
    on_device = _on_device(x, weight, bias)
    name, kernel = _registry.resolve("conv2d", backend, on_device)
    out_dtype = result_dtype(x, weight, bias)
    if p.N == 0:
        return _zeros(p.out_shape, out_dtype, is_device_array(x))
    x, weight, bias = _prepare(name, out_dtype, x, weight, bias)
    return _finish(kernel(x, weight, bias, p, activation), out_dtype)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *,
               backend=None):
    """Max pooling, as ``torch.nn.functional.max_pool2d`` (values only, NaN propagates).

    x (N, C, H, W) -> y (N, C, P, Q). stride defaults to kernel_size. Padding
    (int, (ph, pw) or (top, left, bottom, right)) is at most half the kernel and
    counts as -inf.
    """
    x = as_array("x", x)
    p = _checks.check_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, True)
    return _pool("max_pool2d", x, p, backend)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               *, backend=None):
    """Average pooling, as ``torch.nn.functional.avg_pool2d``.

    count_include_pad=True divides by the window clipped to the padded input
    (PyTorch's rule); False divides by the number of real input elements.
    """
    x = as_array("x", x)
    p = _checks.check_pool2d(x, kernel_size, stride, padding, 1, ceil_mode, count_include_pad)
    return _pool("avg_pool2d", x, p, backend)


def _pool(op, x, p, backend):
    on_device = is_device_array(x)
    name, kernel = _registry.resolve(op, backend, on_device)
    out_dtype = result_dtype(x)
    if p.N == 0:
        return _zeros(p.out_shape, out_dtype, on_device)
    (x,) = _prepare(name, out_dtype, x)
    return _finish(kernel(x, p), out_dtype)


def global_avg_pool2d(x, *, backend=None):
    """Mean over H and W: x (N, C, H, W) -> y (N, C, 1, 1)."""
    x = as_array("x", x)
    _checks.check_global_pool(x)
    on_device = is_device_array(x)
    name, kernel = _registry.resolve("global_avg_pool2d", backend, on_device)
    out_dtype = result_dtype(x)
    if x.shape[0] == 0:
        return _zeros((0, x.shape[1], 1, 1), out_dtype, on_device)
    (x,) = _prepare(name, out_dtype, x)
    return _finish(kernel(x), out_dtype)


def gemm(a, b, c=None, *, alpha=1.0, beta=1.0, trans_a=False, trans_b=False, backend=None):
    """y = alpha * op(a) @ op(b) + beta * c  (ONNX Gemm; c broadcasts to (M, N)).

    op(a) is a.T when trans_a, op(b) is b.T when trans_b.
    """
    a, b, c = as_array("a", a), as_array("b", b), _optional("c", c)
    M, N, K = _checks.check_gemm(a, b, c, trans_a, trans_b)
    alpha, beta = _checks.check_real("alpha", alpha), _checks.check_real("beta", beta)
    on_device = _on_device(a, b, c)
    name, kernel = _registry.resolve("gemm", backend, on_device)
    out_dtype = result_dtype(a, b, c)
    if M == 0 or N == 0 or K == 0:
        if on_device:
            raise ValueError(f"gemm on device arrays needs M, N and K >= 1, got "
                             f"M={M}, N={N}, K={K}")
        y = np.zeros((M, N), out_dtype)
        if c is not None and M and N:
            y += beta * np.broadcast_to(c, (M, N))
        return y
    a, b = _prepare(name, out_dtype, a, b)
    if c is not None and not is_device_array(c):
        # A fresh (M, N) buffer: the kernel may accumulate into it in place. (A device c
        # is never written: the cuda epilogue broadcasts it by index.)
        c = np.array(np.broadcast_to(c, (M, N)), dtype=a.dtype, order="C")
    return _finish(kernel(a, b, c, alpha, beta, bool(trans_a), bool(trans_b)), out_dtype)


def linear(x, weight, bias=None, *, backend=None):
    """y = x @ weight.T + bias, as ``torch.nn.functional.linear``.

    x (*, in_features), weight (out_features, in_features), bias (out_features,).
    """
    x, weight, bias = as_array("x", x), as_array("weight", weight), _optional("bias", bias)
    _checks.check_linear(x, weight, bias)
    on_device = _on_device(x, weight, bias)
    name, kernel = _registry.resolve("linear", backend, on_device)
    out_dtype = result_dtype(x, weight, bias)
    out_shape = tuple(x.shape[:-1]) + (weight.shape[0],)
    rows = math.prod(x.shape[:-1])
    if rows == 0:
        return _zeros(out_shape, out_dtype, is_device_array(x))
    if weight.shape[1] == 0:
        if on_device:
            raise ValueError(f"linear on device arrays needs in_features >= 1, got weight "
                             f"of shape {tuple(weight.shape)}")
        y = np.zeros(out_shape, out_dtype)
        return y if bias is None else y + bias.astype(out_dtype)
    x, weight, bias = _prepare(name, out_dtype, x, weight, bias)
    y = kernel(x.reshape(rows, weight.shape[1]), weight, bias)
    return _finish(y, out_dtype).reshape(out_shape)


def relu(x, *, backend=None):
    """max(x, 0) elementwise; NaN stays NaN and -0.0 becomes +0.0."""
    x = as_array("x", x)
    on_device = is_device_array(x)
    name, kernel = _registry.resolve("relu", backend, on_device)
    out_dtype = result_dtype(x)
    if x.size == 0:
        return _zeros(x.shape, out_dtype, on_device)
    (x,) = _prepare(name, out_dtype, x)
    return _finish(kernel(x), out_dtype)


def softmax(x, axis=-1, *, backend=None):
    """exp(x - max) / sum(exp(x - max)) along ``axis`` (numerically stable)."""
    x = as_array("x", x)
    axis = _checks.check_axis(x, axis)
    on_device = is_device_array(x)
    name, kernel = _registry.resolve("softmax", backend, on_device)
    out_dtype = result_dtype(x)
    if x.size == 0:
        return _zeros(x.shape, out_dtype, on_device)
    (x3,) = _prepare(name, out_dtype, x)
    outer = math.prod(x.shape[:axis])
    inner = math.prod(x.shape[axis + 1:])
    y = kernel(x3.reshape(outer, x.shape[axis], inner))
    return _finish(y, out_dtype).reshape(x.shape)


def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0, *, backend=None):
    """Across-channel LRN (AlexNet's NORM), as ``torch.nn.functional.local_response_norm``.

    y[c] = x[c] / (k + alpha/size * sum(x[c']^2 for c' in window(c)))^beta, where
    the window is c - size//2 .. c + (size-1)//2, clipped to the channels.
    x (N, C, ...) with at least 3 dimensions.
    """
    x = as_array("x", x)
    size, alpha, beta, k = _checks.check_lrn(x, size, alpha, beta, k)
    on_device = is_device_array(x)
    name, kernel = _registry.resolve("local_response_norm", backend, on_device)
    out_dtype = result_dtype(x)
    if x.size == 0:
        return _zeros(x.shape, out_dtype, on_device)
    (x3,) = _prepare(name, out_dtype, x)
    y = kernel(x3.reshape(x.shape[0], x.shape[1], -1), size, alpha, beta, k)
    return _finish(y, out_dtype).reshape(x.shape)


def batch_norm(x, mean, var, weight=None, bias=None, eps=1e-5, *, backend=None):
    """Inference batch norm: (x - mean) / sqrt(var + eps) * weight + bias, per channel (axis 1)."""
    x, mean, var = as_array("x", x), as_array("mean", mean), as_array("var", var)
    weight, bias = _optional("weight", weight), _optional("bias", bias)
    eps = _checks.check_batch_norm(x, mean, var, weight, bias, eps)
    on_device = _on_device(x, mean, var, weight, bias)
    name, kernel = _registry.resolve("batch_norm", backend, on_device)
    out_dtype = result_dtype(x, mean, var, weight, bias)
    if x.size == 0:
        return _zeros(x.shape, out_dtype, is_device_array(x))
    C = x.shape[1]
    dtype = np.float32 if on_device else out_dtype
    weight = np.ones(C, dtype) if weight is None else weight
    bias = np.zeros(C, dtype) if bias is None else bias
    x3, mean, var, weight, bias = _prepare(name, out_dtype, x, mean, var, weight, bias)
    y = kernel(x3.reshape(x.shape[0], C, -1), mean, var, weight, bias, eps)
    return _finish(y, out_dtype).reshape(x.shape)
