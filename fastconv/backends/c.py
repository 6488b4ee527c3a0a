"""The C + OpenMP backend: thin cffi wrappers over ``csrc/`` (module ``fastconv._cext``).

Inputs arrive validated, float32 and C-contiguous (``fastconv.ops`` guarantees it); the
wrappers only assert that, because ``ffi.from_buffer`` would silently reinterpret any
other dtype. Outputs are fresh ``np.empty`` arrays. cffi releases the GIL for every call.
The microkernel ISA is chosen at run time (``FASTCONV_ISA=generic|avx2`` forces a lower one).
"""
from __future__ import annotations

import numpy as np

from .._cext import ffi, lib
from .._checks import WINOGRAD_NONFINITE_FALLBACK, all_finite


def _p(a):
    """float* into a float32 C-contiguous array (NULL for None)."""
    if a is None:
        return ffi.NULL
    assert a.dtype == np.float32 and a.flags.c_contiguous, (a.dtype, a.flags)
    return ffi.from_buffer("float[]", a)


# The network planner passes ``out=``, a buffer of the output's shape that it reuses call
# after call (no fresh pages to fault in per layer); the public ops never do.
TAKES_OUT = ("conv2d", "max_pool2d", "avg_pool2d", "linear", "relu", "add")


def _out(shape, out=None):
    if out is None:
        return np.empty(shape, np.float32)
    assert out.shape == tuple(shape) and out.dtype == np.float32 and out.flags.c_contiguous
    return out


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


def conv2d(x, weight, bias, p, activation, algorithm="auto", out=None):
    """algorithm: a CONV_ALGORITHMS name (tests and benchmarks force one; the public
    fastconv.conv2d always runs "auto"). ValueError if it cannot do this shape."""
    if algorithm == "auto" and conv2d_choose(p) == "winograd" and not all_finite(x, weight):
        algorithm = WINOGRAD_NONFINITE_FALLBACK["c"]  # see _checks: inf - inf in the tiles
    try:
        algo = CONV_ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(f"unknown conv2d algorithm {algorithm!r}; "
                         f"known: {', '.join(CONV_ALGORITHMS)}") from None
    if not lib.fc_conv2d_supports(algo, *_shape(p)):
        raise ValueError(f"conv2d algorithm {algorithm!r} cannot run this shape: {p}")
    y = _out(p.out_shape, out)
    _ok(lib.fc_conv2d(_p(x), _p(weight), _p(bias), _p(y), *_shape(p),
                      activation == "relu", algo))
    return y


def _aligned_empty(n, align=64):
    """n float32s starting on an ``align``-byte boundary (packed GEMM panels)."""
    raw = np.empty(n + align // 4, np.float32)
    skip = (-raw.ctypes.data % align) // 4
    return raw[skip:skip + n]


def prepare_conv2d(weight, bias, p, activation):
    """conv2d for a network plan, whose weights stay fixed from call to call: a callable
    ``(x, out=None) -> y`` that computes what ``conv2d(x, weight, bias, p, activation)``
    does, with the algorithm ``fc_conv2d_choose_planned`` picks. Where that algorithm
    prepares its weights (the GEMM's packed panels, Winograd's transform: K C R S floats
    written per call, as costly as a whole 7x7 or 14x14 layer), it is done here once.
    Non-finite inputs fall back as in ``conv2d``."""
    algo = lib.fc_conv2d_choose_planned(*_shape(p))
    size = lib.fc_conv2d_weights_size(algo, *_shape(p))
    winograd = _ALGO_NAMES[algo] == "winograd"
    if size == 0 or (winograd and not all_finite(weight)):
        name = "auto" if winograd else _ALGO_NAMES[algo]
        return lambda x, out=None: conv2d(x, weight, bias, p, activation, name, out=out)
    packed = _aligned_empty(size)
    _ok(lib.fc_conv2d_prepare_weights(algo, _p(weight), _p(packed), *_shape(p)))
    relu = activation == "relu"

    def conv2d_prepacked(x, out=None):
        if winograd and not all_finite(x):
            return conv2d(x, weight, bias, p, activation,
                          algorithm=WINOGRAD_NONFINITE_FALLBACK["c"], out=out)
        y = _out(p.out_shape, out)
        _ok(lib.fc_conv2d_prepacked(algo, _p(x), _p(packed), _p(bias), _p(y), *_shape(p), relu))
        return y

    return conv2d_prepacked


def max_pool2d(x, p, out=None):
    y = _out(p.out_shape, out)
    _ok(lib.fc_max_pool2d(_p(x), _p(y), p.N, p.C, p.H, p.W, p.P, p.Q, p.kernel_h, p.kernel_w,
                          p.stride_h, p.stride_w, p.pad_top, p.pad_left, p.dil_h, p.dil_w))
    return y


def avg_pool2d(x, p, out=None):
    y = _out(p.out_shape, out)
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
    M, N = y.shape
    K = a.shape[0] if trans_a else a.shape[1]
    _ok(lib.fc_sgemm_ex(trans_a, trans_b, M, N, K, alpha, _p(a), a.shape[1], _p(b), b.shape[1],
                        beta, _p(y), N, ffi.NULL, 0))
    return y


def _sgemv(trans, A, x, y, alpha, beta, bias=None):
    """y (M,) = alpha op(A) x + beta y + bias, streaming A once (fc_sgemv). A 2-D, row-major:
    (M, K) when not trans, (K, M) when trans; x and y contiguous (any shape of K / M items)."""
    M, K = (A.shape[1], A.shape[0]) if trans else A.shape
    assert x.size == K and y.size == M
    lib.fc_sgemv(trans, M, K, alpha, _p(A), A.shape[1], _p(x), beta, _p(y), _p(bias))
    return y


def _gemm_any(a, b, y, alpha, beta, trans_a, trans_b):
    """y (M, N) = alpha op(a) op(b) + beta y: GEMV when M or N is 1 (a vector operand is
    contiguous whichever way it is transposed), else the blocked SGEMM."""
    M, N = y.shape
    if N == 1:   # y (M,) = op(a) b: b is K contiguous floats
        return _sgemv(trans_a, a, b, y, alpha, beta)
    if M == 1:   # y (N,) = op(b)^T a: op(b)^T is b itself when trans_b, else b^T
        return _sgemv(not trans_b, b, a, y, alpha, beta)
    return _sgemm(a, b, y, alpha, beta, trans_a, trans_b)


def gemm(a, b, c, alpha, beta, trans_a, trans_b):
    """y = alpha op(a) op(b) + beta c; c is None or a fresh (M, N) buffer, overwritten.

    With c given, beta * c is applied as written even for beta == 0 (NaN from 0 * inf).
    M == 1 or N == 1 runs the bandwidth-bound GEMV (fc_sgemv)."""
    M = a.shape[1] if trans_a else a.shape[0]
    N = b.shape[0] if trans_b else b.shape[1]
    if c is None:
        return _gemm_any(a, b, _out((M, N)), alpha, 0.0, trans_a, trans_b)
    if beta == 0.0:
        # The spec applies beta * c as written (ONNX): 0 * inf is NaN. fc_sgemm's beta == 0
        # would skip c (BLAS), so fold the zero in here and accumulate with beta = 1.
        with np.errstate(invalid="ignore"):
            np.multiply(c, 0.0, out=c)
        beta = 1.0
    return _gemm_any(a, b, c, alpha, beta, trans_a, trans_b)


# linear with at most this many rows streams the weights through fc_sgemv_multi (once per 4
# rows); more rows go to the blocked SGEMM. Zen 3, 1 thread, x (rows, 9216) @ W (4096, 9216).T:
# rows 1: 6.4 ms (SGEMM 22, OpenBLAS 7.2); 4: 10 ms (SGEMM 23, OpenBLAS 25); 8: 18 ms
# (SGEMM 26, OpenBLAS 31). Past 8 a third pass over W catches up with the SGEMM.
GEMV_MAX_ROWS = 8


def linear(x, weight, bias, out=None):
    """x (rows, in) @ weight (out, in).T + bias: the bias is broadcast into C, beta = 1.
    Up to GEMV_MAX_ROWS rows: fc_sgemv_multi (weight streamed once per 4 rows, bias fused)."""
    rows = x.shape[0]
    y = _out((rows, weight.shape[0]), out)
    if rows <= GEMV_MAX_ROWS:
        lib.fc_sgemv_multi(rows, weight.shape[0], weight.shape[1], 1.0, _p(weight),
                           weight.shape[1], _p(x), x.shape[1], 0.0, _p(y), y.shape[1],
                           _p(bias))
        return y
    if bias is None:
        return _sgemm(x, weight, y, 1.0, 0.0, False, True)
    y[...] = bias
    return _sgemm(x, weight, y, 1.0, 1.0, False, True)


def relu(x, out=None):
    y = _out(x.shape, out)
    lib.fc_relu(_p(x), _p(y), x.size)
    return y


def add(a, b, activation=None, out=None):
    """a + b (then ReLU) of two equal-shape arrays: the network runner's residual sum (not a
    public op; fastconv.nn.Add uses NumPy elsewhere)."""
    assert a.shape == b.shape
    y = _out(a.shape, out)
    lib.fc_add(_p(a), _p(b), _p(y), a.size, activation == "relu")
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


_peak_cache: dict[int, float] = {}


def fma_peak_gflops(seconds=0.1):
    """The machine's measured FP32 peak in GFLOP/s (2 per FMA lane) at the current thread count:
    csrc's FMA probe (independent FMA chains on the GEMM kernels' vector width, no memory
    traffic) for about ``seconds``. Measured once per process and thread count, then cached,
    because each call burns ``seconds`` of every core."""
    threads = int(lib.fc_get_num_threads())
    if threads not in _peak_cache:
        _peak_cache[threads] = float(lib.fc_fma_peak_gflops(float(seconds)))
    return _peak_cache[threads]
