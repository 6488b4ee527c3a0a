"""The C + OpenMP backend: thin cffi wrappers over ``csrc/`` (module ``fastconv._cext``).

Inputs arrive validated, float32 and C-contiguous (``fastconv.ops`` guarantees it); the
wrappers only assert that, because ``ffi.from_buffer`` would silently reinterpret any
other dtype. Outputs are fresh ``np.empty`` arrays. cffi releases the GIL for every call.
The microkernel ISA is chosen at run time (``FASTCONV_ISA=generic|avx2`` forces a lower one).
"""
from __future__ import annotations

import numpy as np

from .._cext import ffi, lib


def _p(a):
    """float* into a float32 C-contiguous array (NULL for None)."""
    if a is None:
        return ffi.NULL
    assert a.dtype == np.float32 and a.flags.c_contiguous, (a.dtype, a.flags)
    return ffi.from_buffer("float[]", a)


def _out(shape):
    return np.empty(shape, np.float32)


def _ok(rc):
    if rc != 0:
        raise MemoryError("fastconv C backend: cannot allocate its workspace")


#: conv2d algorithms of csrc/conv.c, by name (values of the fc_conv_algo enum).
CONV_ALGORITHMS = {"auto": 0, "direct": 1, "gemm": 2, "indirect": 3, "1x1": 4, "winograd": 5}
_ALGO_NAMES = {v: k for k, v in CONV_ALGORITHMS.items()}


def _shape(p):
    return (p.N, p.C, p.H, p.W, p.K, p.R, p.S, p.P, p.Q, p.stride_h, p.stride_w, p.pad_top,
            p.pad_left, p.dil_h, p.dil_w, p.groups)


def conv2d_choose(p):
    """The algorithm name that ``algorithm="auto"`` runs for Conv2dParams ``p``."""
    return _ALGO_NAMES[lib.fc_conv2d_choose(*_shape(p))]


def conv2d(x, weight, bias, p, activation, algorithm="auto"):
    """algorithm: a CONV_ALGORITHMS name (tests and benchmarks force one; the public
    fastconv.conv2d always runs "auto"). ValueError if it cannot do this shape."""
    try:
        algo = CONV_ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(f"unknown conv2d algorithm {algorithm!r}; "
                         f"known: {', '.join(CONV_ALGORITHMS)}") from None
    if not lib.fc_conv2d_supports(algo, *_shape(p)):
        raise ValueError(f"conv2d algorithm {algorithm!r} cannot run this shape: {p}")
    y = _out(p.out_shape)
    _ok(lib.fc_conv2d(_p(x), _p(weight), _p(bias), _p(y), *_shape(p),
                      activation == "relu", algo))
    return y


def max_pool2d(x, p):
    y = _out(p.out_shape)
    _ok(lib.fc_max_pool2d(_p(x), _p(y), p.N, p.C, p.H, p.W, p.P, p.Q, p.kernel_h, p.kernel_w,
                          p.stride_h, p.stride_w, p.pad_top, p.pad_left, p.dil_h, p.dil_w))
    return y


def avg_pool2d(x, p):
    y = _out(p.out_shape)
    _ok(lib.fc_avg_pool2d(_p(x), _p(y), p.N, p.C, p.H, p.W, p.P, p.Q, p.kernel_h, p.kernel_w,
                          p.stride_h, p.stride_w, p.pad_top, p.pad_left, p.pad_bottom,
                          p.pad_right, p.count_include_pad))
    return y


def global_avg_pool2d(x):
    N, C, H, W = x.shape
    y = _out((N, C, 1, 1))
    lib.fc_global_avg_pool2d(_p(x), _p(y), N, C, H * W)
    return y


def _sgemm(a, b, y, alpha, beta, trans_a, trans_b):
    M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
    N = b.shape[0] if trans_b else b.shape[1]
    assert y.shape == (M, N)
    _ok(lib.fc_sgemm_ex(trans_a, trans_b, M, N, K, alpha, _p(a), a.shape[1], _p(b), b.shape[1],
                        beta, _p(y), N, ffi.NULL, 0))
    return y


def gemm(a, b, c, alpha, beta, trans_a, trans_b):
    """y = alpha op(a) op(b) + beta c; c is None or a fresh (M, N) buffer, overwritten.

    With c given, beta * c is applied as written even for beta == 0 (NaN from 0 * inf)."""
    M = a.shape[1] if trans_a else a.shape[0]
    N = b.shape[0] if trans_b else b.shape[1]
    if c is None:
        return _sgemm(a, b, _out((M, N)), alpha, 0.0, trans_a, trans_b)
    if beta == 0.0:
        # The spec applies beta * c as written (ONNX): 0 * inf is NaN. fc_sgemm's beta == 0
        # would skip c (BLAS), so fold the zero in here and accumulate with beta = 1.
        with np.errstate(invalid="ignore"):
            np.multiply(c, 0.0, out=c)
        beta = 1.0
    return _sgemm(a, b, c, alpha, beta, trans_a, trans_b)


def linear(x, weight, bias):
    """x (rows, in) @ weight (out, in).T + bias: the bias is broadcast into C, beta = 1."""
    y = _out((x.shape[0], weight.shape[0]))
    if bias is None:
        return _sgemm(x, weight, y, 1.0, 0.0, False, True)
    y[...] = bias
    return _sgemm(x, weight, y, 1.0, 1.0, False, True)


def relu(x):
    y = _out(x.shape)
    lib.fc_relu(_p(x), _p(y), x.size)
    return y


def softmax(x):
    y = _out(x.shape)
    lib.fc_softmax(_p(x), _p(y), *x.shape)
    return y


def local_response_norm(x, size, alpha, beta, k):
    y = _out(x.shape)
    lib.fc_lrn(_p(x), _p(y), *x.shape, size, alpha, beta, k)
    return y


def batch_norm(x, mean, var, weight, bias, eps):
    C = x.shape[1]
    weight = np.ones(C, np.float32) if weight is None else weight
    bias = np.zeros(C, np.float32) if bias is None else bias
    y = _out(x.shape)
    lib.fc_batch_norm(_p(x), _p(y), *x.shape, _p(mean), _p(var), _p(weight), _p(bias), eps)
    return y


def set_num_threads(n):
    lib.fc_set_num_threads(int(n))


def build_info():
    return {
        "openmp": bool(lib.fc_has_openmp()),
        "isa": ffi.string(lib.fc_isa_name()).decode(),
        "c_threads": int(lib.fc_get_num_threads()),
        "c_flags": ffi.string(lib.fc_build_flags()).decode(),
    }
