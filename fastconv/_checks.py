"""Argument validation, normalisation and output-shape math, shared by every backend.

This is the one place where shapes are checked. Each ``check_*`` function takes
the arguments of the public op as the user gave them, raises ``ValueError`` /
``TypeError`` naming the argument, its value and the rule it broke, and returns a
small frozen parameter object with every hyper-parameter normalised (padding
as four ints, stride as two, ...) plus the output shape. Kernels receive that
object and assume it is valid: they only ``assert``.

The arithmetic follows ``torch.nn.functional`` (see the naive backend for the
conventions written out in words).
"""
from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass

import numpy as np

# --------------------------------------------------------------------------- dtypes


def is_device_array(value):
    """A GPU array: a numba device array (the simulator's included), CuPy, or anything
    else exposing ``__cuda_array_interface__``."""
    return not isinstance(value, np.ndarray) and (
        hasattr(value, "__cuda_array_interface__") or hasattr(value, "copy_to_host"))


def as_array(name, value):
    """Return ``value`` as an ndarray of a real numeric dtype, or raise TypeError.

    Integer and bool arrays are accepted (they are computed in floating point);
    complex, object, string and datetime arrays are refused.

    Device arrays stay on the device (only the cuda backend takes them): numba's
    pass through, other ``__cuda_array_interface__`` objects (CuPy) are viewed as
    numba device arrays without a copy. They must be float32 and C-contiguous,
    because converting them would mean a hidden copy on the device.
    """
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    if is_device_array(value):
        return _device_array(name, value)
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} has dtype {arr.dtype}, which is not a real numeric dtype "
            "(expected float32, float64, an integer or bool array)"
        )
    return arr


def _device_array(name, value):
    if not hasattr(value, "copy_to_host"):  # CuPy & co: a zero-copy numba view
        from numba import cuda

        value = cuda.as_cuda_array(value)
    if value.dtype != np.float32:
        raise TypeError(f"{name} is a device array of dtype {value.dtype}; the cuda backend "
                        "takes float32 device arrays (convert it on the device first)")
    if not value.is_c_contiguous():
        raise ValueError(f"{name} is a non-contiguous device array of shape "
                         f"{tuple(value.shape)}; the cuda backend needs C-contiguous device "
                         "arrays (make a contiguous copy on the device first)")
    return value


def all_finite(*arrays):
    """No inf or NaN in any of the (float32) arrays: one summing pass each, no temporaries.
    (A finite sum that overflows reads as "not finite": a harmless false alarm.)"""
    with np.errstate(over="ignore", invalid="ignore"):
        return all(bool(np.isfinite(np.sum(a))) for a in arrays if a is not None)


# Winograd F(2x2,3x3) adds and subtracts the pixels of a 4x4 tile, so one +-inf input gives
# inf - inf = NaN across the tile where the direct sum gives +-inf. "auto" therefore runs
# Winograd only on finite data; the backends fall back to this GEMM-based algorithm otherwise.
WINOGRAD_NONFINITE_FALLBACK = {"c": "indirect", "numba": "implicit"}


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def result_dtype(*arrays):
    """float64 if any floating input is float64, otherwise float32."""
    for a in arrays:
        if a is not None and a.dtype.type is np.float64:  # (faster than dtype == float64)
            return _F64
    return _F32


def _check_rank(name, arr, rank, layout):
    if arr.ndim != rank:
        raise ValueError(
            f"{name} must be {rank}-D {layout}, got shape {tuple(arr.shape)} ({arr.ndim}-D)"
        )


def _is_int(value):
    """An integer that is not a bool. Plain ints take the fast path: the ABC check
    (numpy integers and friends) costs microseconds, which small layers feel."""
    return type(value) is int or (
        not isinstance(value, bool) and isinstance(value, numbers.Integral))


def _check_int(name, value, minimum):
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}={value} must be >= {minimum}")
    return int(value)


def check_real(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name}={value} must be finite")
    return value


def pair(name, value, minimum):
    """Normalise an int or a 2-sequence to ``(h, w)``, each ``>= minimum``."""
    if _is_int(value):
        values = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        values = tuple(value)
    else:
        raise TypeError(f"{name} must be an int or a pair (h, w) of ints, got {value!r}")
    return tuple(_check_int(f"{name}", v, minimum) for v in values)


def pads4(name, value):
    """Normalise padding to ``(top, left, bottom, right)``.

    Accepts an int (all sides), ``(ph, pw)`` (symmetric, PyTorch style) or
    ``(top, left, bottom, right)`` (the order of ONNX ``pads`` for 2-D).
    """
    if _is_int(value):
        values = (value,) * 4
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        values = (value[0], value[1], value[0], value[1])
    elif isinstance(value, (tuple, list)) and len(value) == 4:
        values = tuple(value)
    else:
        raise TypeError(
            f"{name} must be an int, (ph, pw), (top, left, bottom, right), "
            f"'same' or 'valid', got {value!r}"
        )
    return tuple(_check_int(name, v, 0) for v in values)


# --------------------------------------------------------------------------- memo

_MEMO_SIZE = 512


def _plain(value):
    """A hyper-parameter that is safe as a cache key: None, a str, a bool, or a plain int
    or tuple of plain ints. (1 == 1.0 == np.int64(1) hash alike, so anything else --
    numpy integers, floats that must be refused -- takes the uncached path; the key
    also holds each value's type, which keeps True apart from 1.)"""
    t = type(value)
    return value is None or t is int or t is str or t is bool or (
        t is tuple and all(type(v) is int for v in value))


def memo_by_shapes(n_arrays):
    """Cache a ``check_*`` whose result depends only on the shapes of its first
    ``n_arrays`` arguments (arrays or None) and on its other, plain, arguments: the same
    layer called again skips ~10 us of Python validation. Only successful results are
    cached, so every error is raised (and worded) exactly as without the cache."""
    def wrap(check):
        cache = {}

        @functools.wraps(check)
        def cached(*args):
            arrays, rest = args[:n_arrays], args[n_arrays:]
            if not all(_plain(v) for v in rest):
                return check(*args)
            try:
                key = (tuple(None if a is None else tuple(a.shape) for a in arrays) + rest
                       + tuple(type(v) for v in rest))  # stride=True must not hit stride=1
            except (AttributeError, TypeError):
                return check(*args)
            hit = cache.get(key)
            if hit is None:
                hit = check(*args)
                if len(cache) >= _MEMO_SIZE:
                    cache.clear()
                cache[key] = hit
            return hit

        return cached

    return wrap


# --------------------------------------------------------------------------- conv2d


def conv_output_size(size, kernel, stride, pad_begin, pad_end, dilation):
    """floor((size + pads - dilation*(kernel-1) - 1) / stride) + 1  (the (N-F+2P)/S+1 rule)."""
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True)
class Conv2dParams:
    """x (N,C,H,W), w (K,C/groups,R,S) -> y (N,K,P,Q)."""

    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    P: int
    Q: int
    stride_h: int
    stride_w: int
    pad_top: int
    pad_left: int
    pad_bottom: int
    pad_right: int
    dil_h: int
    dil_w: int
    groups: int

    @property
    def out_shape(self):
        return (self.N, self.K, self.P, self.Q)

    @property
    def macs(self):
        """Multiply-accumulates of the whole layer (FLOPs = 2 * macs)."""
        return self.N * self.K * self.P * self.Q * (self.C // self.groups) * self.R * self.S


@memo_by_shapes(3)
def check_conv2d(x, weight, bias, stride, padding, dilation, groups):
    _check_rank("x", x, 4, "(N, C, H, W)")
    _check_rank("weight", weight, 4, "(K, C/groups, R, S)")
    groups = _check_int("groups", groups, 1)
    stride_h, stride_w = pair("stride", stride, 1)
    dil_h, dil_w = pair("dilation", dilation, 1)
    N, C, H, W = (int(d) for d in x.shape)
    K, Cg, R, S = (int(d) for d in weight.shape)
    if min(C, H, W) < 1:
        raise ValueError(f"x of shape {tuple(x.shape)} must have C, H and W >= 1")
    if min(K, Cg, R, S) < 1:
        raise ValueError(f"weight of shape {tuple(weight.shape)} must have every dimension >= 1")
    if C % groups:
        raise ValueError(f"x has C={C} channels, which is not divisible by groups={groups}")
    if K % groups:
        raise ValueError(
            f"weight has K={K} output channels, which is not divisible by groups={groups}"
        )
    if Cg * groups != C:
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} expects C/groups={Cg} input channels per "
            f"group, but x of shape {tuple(x.shape)} has C={C} and groups={groups} "
            f"(C/groups={C // groups})"
        )
    if bias is not None:
        if bias.ndim != 1 or bias.shape[0] != K:
            raise ValueError(
                f"bias of shape {tuple(bias.shape)} must have shape ({K},), "
                f"one value per output channel of weight {tuple(weight.shape)}"
            )
    eff_r, eff_s = dil_h * (R - 1) + 1, dil_w * (S - 1) + 1
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            pads = (0, 0, 0, 0)
        elif mode == "same":
            if stride_h != 1 or stride_w != 1:
                raise ValueError(
                    f"padding='same' needs stride 1 (as in PyTorch), got stride={stride!r}"
                )
            # PyTorch's rule: the odd extra pad goes at the end (bottom/right).
            th, tw = eff_r - 1, eff_s - 1
            pads = (th // 2, tw // 2, th - th // 2, tw - tw // 2)
        else:
            raise ValueError(f"padding={padding!r} must be 'same', 'valid' or integers")
    else:
        pads = pads4("padding", padding)
    pt, pl, pb, pr = pads
    if H + pt + pb < eff_r or W + pl + pr < eff_s:
        raise ValueError(
            f"kernel of effective size ({eff_r}, {eff_s}) (weight {tuple(weight.shape)}, "
            f"dilation ({dil_h}, {dil_w})) is larger than the padded input "
            f"({H + pt + pb}, {W + pl + pr}) (x {tuple(x.shape)}, padding {pads})"
        )
    P = conv_output_size(H, R, stride_h, pt, pb, dil_h)
    Q = conv_output_size(W, S, stride_w, pl, pr, dil_w)
    return Conv2dParams(N, C, H, W, K, R, S, P, Q, stride_h, stride_w,
                        pt, pl, pb, pr, dil_h, dil_w, groups)


# --------------------------------------------------------------------------- pooling


def pool_output_size(size, kernel, stride, pad_begin, pad_end, dilation, ceil_mode):
    """PyTorch's pooling_output_shape, generalised to asymmetric padding.

    With ceil_mode the last window may run past the padded input, but a window
    that would *start* inside the end padding is dropped.
    """
    span = size + pad_begin + pad_end - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + pad_begin:
            out -= 1
    else:
        out = span // stride + 1
    return out


@dataclass(frozen=True)
class Pool2dParams:
    """x (N,C,H,W) -> y (N,C,P,Q), window kernel_h x kernel_w."""

    N: int
    C: int
    H: int
    W: int
    P: int
    Q: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_top: int
    pad_left: int
    pad_bottom: int
    pad_right: int
    dil_h: int
    dil_w: int
    ceil_mode: bool
    count_include_pad: bool

    @property
    def out_shape(self):
        return (self.N, self.C, self.P, self.Q)


@memo_by_shapes(1)
def check_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, count_include_pad):
    _check_rank("x", x, 4, "(N, C, H, W)")
    kh, kw = pair("kernel_size", kernel_size, 1)
    sh, sw = pair("stride", kernel_size if stride is None else stride, 1)
    dh, dw = pair("dilation", dilation, 1)
    pt, pl, pb, pr = pads4("padding", padding)
    N, C, H, W = (int(d) for d in x.shape)
    if min(C, H, W) < 1:
        raise ValueError(f"x of shape {tuple(x.shape)} must have C, H and W >= 1")
    for side, pad, k in (("top", pt, kh), ("left", pl, kw), ("bottom", pb, kh), ("right", pr, kw)):
        if pad > k // 2:
            raise ValueError(
                f"padding {side}={pad} is more than half of kernel_size={k} "
                f"(padding {(pt, pl, pb, pr)}, kernel_size {(kh, kw)})"
            )
    eff_h, eff_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if H + pt + pb < eff_h or W + pl + pr < eff_w:
        raise ValueError(
            f"pooling window of effective size ({eff_h}, {eff_w}) is larger than the padded "
            f"input ({H + pt + pb}, {W + pl + pr}) (x {tuple(x.shape)}, padding "
            f"{(pt, pl, pb, pr)})"
        )
    ceil_mode, count_include_pad = bool(ceil_mode), bool(count_include_pad)
    P = pool_output_size(H, kh, sh, pt, pb, dh, ceil_mode)
    Q = pool_output_size(W, kw, sw, pl, pr, dw, ceil_mode)
    return Pool2dParams(N, C, H, W, P, Q, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw,
                        ceil_mode, count_include_pad)


def check_global_pool(x):
    _check_rank("x", x, 4, "(N, C, H, W)")
    if min(x.shape[1:]) < 1:
        raise ValueError(f"x of shape {tuple(x.shape)} must have C, H and W >= 1")


# --------------------------------------------------------------------------- gemm / linear


def check_gemm(a, b, c, trans_a, trans_b):
    """ONNX Gemm: y = alpha * op(a) @ op(b) + beta * c, c broadcast to (M, N). Returns (M, N, K)."""
    _check_rank("a", a, 2, "(M, K) (or (K, M) with trans_a)")
    _check_rank("b", b, 2, "(K, N) (or (N, K) with trans_b)")
    M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
    Kb, N = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if K != Kb:
        raise ValueError(
            f"inner dimensions differ: op(a) is ({M}, {K}) from a {tuple(a.shape)} "
            f"(trans_a={bool(trans_a)}) but op(b) is ({Kb}, {N}) from b {tuple(b.shape)} "
            f"(trans_b={bool(trans_b)})"
        )
    if c is not None:
        if c.ndim > 2:
            raise ValueError(f"c of shape {tuple(c.shape)} must have at most 2 dimensions")
        try:
            np.broadcast_shapes(c.shape, (M, N))
        except ValueError:
            raise ValueError(
                f"c of shape {tuple(c.shape)} cannot be broadcast to the output shape ({M}, {N})"
            ) from None
        if np.broadcast_shapes(c.shape, (M, N)) != (M, N):
            raise ValueError(
                f"c of shape {tuple(c.shape)} cannot be broadcast to the output shape ({M}, {N})"
            )
    return int(M), int(N), int(K)


def check_linear(x, weight, bias):
    """x (*, in), weight (out, in), bias (out,) -> y (*, out)."""
    if x.ndim < 1:
        raise ValueError(f"x must have at least 1 dimension (*, in_features), got shape {x.shape}")
    _check_rank("weight", weight, 2, "(out_features, in_features)")
    in_features = tuple(x.shape)[-1]  # tuple(): the CUDA simulator's shapes refuse [-1]
    if in_features != weight.shape[1]:
        raise ValueError(
            f"x of shape {tuple(x.shape)} has in_features={in_features} but weight of shape "
            f"{tuple(weight.shape)} expects in_features={weight.shape[1]}"
        )
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != weight.shape[0]):
        raise ValueError(
            f"bias of shape {tuple(bias.shape)} must have shape ({weight.shape[0]},), "
            f"one value per row of weight {tuple(weight.shape)}"
        )


# --------------------------------------------------------------------------- elementwise


def check_axis(x, axis):
    """Normalise axis to 0..ndim-1."""
    if not _is_int(axis):
        raise TypeError(f"axis must be an int, got {axis!r}")
    if x.ndim == 0:
        raise ValueError("x must have at least 1 dimension for softmax, got a 0-D array")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis={axis} is out of range for x of shape {tuple(x.shape)} ({x.ndim}-D)")
    return int(axis) % x.ndim


def check_lrn(x, size, alpha, beta, k):
    if x.ndim < 3:
        raise ValueError(
            f"x must have at least 3 dimensions (N, C, ...) for local_response_norm, "
            f"got shape {tuple(x.shape)}"
        )
    size = _check_int("size", size, 1)
    return size, check_real("alpha", alpha), check_real("beta", beta), check_real("k", k)


def check_batch_norm(x, mean, var, weight, bias, eps):
    if x.ndim < 2:
        raise ValueError(
            f"x must have at least 2 dimensions (N, C, ...) for batch_norm, got shape {tuple(x.shape)}"
        )
    C = x.shape[1]
    for name, arr in (("mean", mean), ("var", var), ("weight", weight),
                      ("bias", bias)):
        if arr is not None and (arr.ndim != 1 or arr.shape[0] != C):
            raise ValueError(
                f"{name} of shape {tuple(arr.shape)} must have shape ({C},), one value per "
                f"channel of x {tuple(x.shape)}"
            )
    eps = check_real("eps", eps)
    if eps < 0:
        raise ValueError(f"eps={eps} must be >= 0")
    return eps
