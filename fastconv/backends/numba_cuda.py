"""The CUDA backend: Numba (``numba-cuda``) kernels, ``_<op>_kernel`` + ``<op>`` launcher pairs.

Install with ``pip install fastconv[cuda]``. Without a GPU, ``NUMBA_ENABLE_CUDASIM=1``
(set before numba is imported) runs the same kernels on numba's simulator, one
Python thread per CUDA thread: as slow as the naive loops, but it checks the
indexing, the shared-memory tiling and the ragged edges (the test suite does this).

Where data lives
  * Inputs may be host arrays (copied to the GPU once per call) or device arrays:
    numba device arrays, the simulator's, or anything with
    ``__cuda_array_interface__`` such as CuPy (``fastconv._checks.as_array`` wraps
    those with ``numba.cuda.as_cuda_array``, no copy).
  * The output lives where ``x`` (``a`` for gemm) lives: a device ``x`` gives a numba
    device array (``cupy.asarray(y)`` views it without a copy), a host ``x`` gives a
    NumPy array. So a network whose input is moved to the GPU once keeps every
    activation there, and only what the caller copies back leaves the device.

Kernels
  * ``_tiled_gemm(load_a, load_b, store)`` builds the one shared-memory SGEMM: a
    block computes a TILE x TILE (64 x 64) tile of y with 16 x 16 threads, each
    holding a 4 x 4 register tile (rows ty + 16 i, columns tx + 16 j, so a warp's
    stores and shared-memory reads are consecutive). Per 8-deep k step the block
    stages an A and a B tile in shared memory. The three device functions plugged in
    decide what A, B and the epilogue are:
      - gemm/linear: A and B are the matrices (trans flags in the loader), the
        epilogue is ``alpha * acc + beta * c`` with c broadcast by index modulo.
      - conv2d ("implicit_gemm"): A is the weight as (K, C/groups*R*S), B is the
        im2col matrix computed on the fly from x (padding reads as 0), grid z is
        the group, and the epilogue adds the bias, applies the ReLU and scatters
        into NCHW. No im2col buffer exists.
  * conv2d "direct": one thread per output element. Used where the GEMM's M side
    (output channels per group) is too small to fill a 64-row tile: depthwise and
    other thin grouped convolutions.
  * Pooling, LRN, batch-norm, ReLU: one thread per output element.
  * Global average pooling and softmax over a contiguous row: one block per plane /
    row, with a shared-memory tree reduction. Softmax over a strided axis (the
    channels of NCHW): one thread per column.
"""
from __future__ import annotations

import functools
import math
import threading

import numba
import numpy as np
from numba import cuda, float32

from .._checks import is_device_array

if not cuda.is_available():
    raise ImportError("numba.cuda sees no usable GPU (set NUMBA_ENABLE_CUDASIM=1 before "
                      "numba is imported to run the CUDA kernels on numba's simulator)")

SIMULATOR = bool(numba.config.ENABLE_CUDASIM)

# The simulator swaps this module's ``cuda`` global for a fake while a kernel runs,
# so two Python threads in it at once break each other: under the simulator the
# public ops take turns. (On a GPU they run concurrently, as numba allows.)
_simulator_lock = threading.Lock()


def _public(op):
    if not SIMULATOR:
        return op

    @functools.wraps(op)
    def serialized(*args, **kwargs):
        with _simulator_lock:
            return op(*args, **kwargs)

    return serialized

# --------------------------------------------------------------------------- launch geometry

# The simulator runs one Python thread per CUDA thread, so under it the same kernels
# are launched with small tiles and blocks: the indexing, the shared-memory staging,
# the reductions and the ragged edges are exercised the same way (every size is a
# power of two either way), in seconds rather than minutes.
if SIMULATOR:
    TILE, TILE_K, THREADS_2D, THREADS_1D, REDUCE_THREADS = 16, 4, 8, 64, 16
else:
    TILE = 64               # rows and columns of y per GEMM block
    TILE_K = 8              # depth of the k step staged in shared memory
    THREADS_2D = 16         # the GEMM block is THREADS_2D x THREADS_2D threads
    THREADS_1D = 256        # threads per block of the one-thread-per-element kernels
    REDUCE_THREADS = 128    # threads per block of the reductions (a power of two)
MICRO = TILE // THREADS_2D  # each GEMM thread holds a MICRO x MICRO register tile
LOADS = TILE * TILE_K // (THREADS_2D * THREADS_2D)  # A (and B) elements each thread stages

_F0 = float32(0.0)
_NEG_INF = float32(-math.inf)


def _blocks(total, threads):
    return (total + threads - 1) // threads


def _threads_1d(total):
    """A full block, or fewer (a multiple of the warp) when there is less work."""
    return min(THREADS_1D, max(32, _blocks(total, 32) * 32))


def _launch_1d(kernel, total, *args):
    """Run a one-thread-per-element kernel over ``total`` elements."""
    threads = _threads_1d(total)
    kernel[_blocks(total, threads), threads](*args)


def _device(a):
    """Device arrays pass through; host arrays are copied once."""
    return a if a is None or is_device_array(a) else cuda.to_device(a)


def _returned(y, like):
    """The output goes where ``like`` (the op's main input) lives."""
    return y if is_device_array(like) else y.copy_to_host()


def constant(a):
    """A host array uploaded once (the network runner keeps weights and inputs this way)."""
    return cuda.to_device(np.ascontiguousarray(a, dtype=np.float32))


def synchronize():
    """Wait for every launched kernel (for timing)."""
    cuda.synchronize()


def _empty(shape):
    return cuda.device_array(shape, np.float32)


@_public
def zeros(shape):
    """A device array of zeros (the public ops' answer for empty device inputs)."""
    y = _empty(shape)
    if y.size:
        _launch_1d(_fill_kernel, y.size, y.reshape(y.size), _F0)
    return y


@cuda.jit
def _fill_kernel(y, value):
    i = cuda.grid(1)
    if i < y.shape[0]:
        y[i] = value


@cuda.jit(device=True)
def _unravel_nchw(i, C, H, W):
    """The (n, c, h, w) of flat index i into a C-contiguous (N, C, H, W) array."""
    w = i % W
    t = i // W
    h = t % H
    t //= H
    return t // C, t % C, h, w


@cuda.jit(device=True)
def _unravel_ncl(i, C, L):
    """The (n, c, l) of flat index i into a C-contiguous (N, C, L) array."""
    return i // (C * L), (i // L) % C, i % L


@cuda.jit(device=True)
def _relu_value(v):
    """max(v, 0): NaN stays NaN, -0.0 becomes +0.0 (the spec's _relu_scalar)."""
    if v > 0 or v != v:
        return v
    return _F0


# --------------------------------------------------------------------------- tiled SGEMM


def _tiled_gemm(load_a, load_b, store):
    """The shared-memory SGEMM kernel with the given loaders and epilogue (see module doc).

    load_a(a, ints, g, m, k) and load_b(b, ints, g, k, n) are only called inside
    the (M, Kd) and (Kd, N) bounds; out-of-range tile slots hold 0, which is what
    makes every ragged M, N and K edge exact.
    store(y, aux, ints, alpha, beta, g, m, n, acc) writes one finished element.
    """

    @cuda.jit
    def kernel(a, b, y, aux, M, N, Kd, ints, alpha, beta):
        a_tile = cuda.shared.array((TILE_K, TILE), float32)
        b_tile = cuda.shared.array((TILE_K, TILE), float32)
        acc = cuda.local.array((MICRO, MICRO), float32)
        a_reg = cuda.local.array(MICRO, float32)
        b_reg = cuda.local.array(MICRO, float32)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * THREADS_2D + tx
        m0 = cuda.blockIdx.y * TILE
        n0 = cuda.blockIdx.x * TILE
        g = cuda.blockIdx.z
        for i in range(MICRO):
            for j in range(MICRO):
                acc[i, j] = _F0
        for k0 in range(0, Kd, TILE_K):
            for load in range(LOADS):
                e = tid + load * THREADS_2D * THREADS_2D
                # A: neighbouring threads walk k (contiguous in a row-major A)
                kk = e % TILE_K
                mm = e // TILE_K
                v = _F0
                if m0 + mm < M and k0 + kk < Kd:
                    v = load_a(a, ints, g, m0 + mm, k0 + kk)
                a_tile[kk, mm] = v
                # B: neighbouring threads walk n (contiguous in B and in im2col columns)
                nn = e % TILE
                kk = e // TILE
                v = _F0
                if n0 + nn < N and k0 + kk < Kd:
                    v = load_b(b, ints, g, k0 + kk, n0 + nn)
                b_tile[kk, nn] = v
            cuda.syncthreads()
            for kk in range(TILE_K):
                for i in range(MICRO):
                    a_reg[i] = a_tile[kk, ty + i * THREADS_2D]
                for j in range(MICRO):
                    b_reg[j] = b_tile[kk, tx + j * THREADS_2D]
                for i in range(MICRO):
                    for j in range(MICRO):
                        acc[i, j] += a_reg[i] * b_reg[j]
            cuda.syncthreads()  # the tiles are overwritten by the next k step
        for i in range(MICRO):
            m = m0 + ty + i * THREADS_2D
            if m < M:
                for j in range(MICRO):
                    n = n0 + tx + j * THREADS_2D
                    if n < N:
                        store(y, aux, ints, alpha, beta, g, m, n, acc[i, j])

    return kernel


def _launch_tiled(kernel, a, b, y, aux, M, N, Kd, ints, alpha=1.0, beta=0.0, groups=1):
    grid = (_blocks(N, TILE), _blocks(M, TILE), groups)
    kernel[grid, (THREADS_2D, THREADS_2D)](a, b, y, aux, M, N, Kd, ints,
                                          float32(alpha), float32(beta))


# gemm: ints = (trans_a, trans_b, c_rows, c_cols, has_c); c is read at [m % c_rows, n % c_cols]


@cuda.jit(device=True)
def _gemm_load_a(a, ints, g, m, k):
    return a[k, m] if ints[0] else a[m, k]


@cuda.jit(device=True)
def _gemm_load_b(b, ints, g, k, n):
    return b[n, k] if ints[1] else b[k, n]


@cuda.jit(device=True)
def _gemm_store(y, c, ints, alpha, beta, g, m, n, acc):
    v = alpha * acc
    if ints[4]:
        v += beta * c[m % ints[2], n % ints[3]]
    y[m, n] = v


_sgemm_kernel = _tiled_gemm(_gemm_load_a, _gemm_load_b, _gemm_store)


def _gemm_device(a, b, c, alpha, beta, trans_a, trans_b):
    """y = alpha op(a) op(b) + beta c on device arrays; c is None or 2-D, broadcastable."""
    M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
    N = b.shape[0] if trans_b else b.shape[1]
    y = _empty((M, N))
    has_c = c is not None
    if not has_c:
        c = _empty((1, 1))  # never read
    ints = (int(trans_a), int(trans_b), c.shape[0], c.shape[1], int(has_c))
    _launch_tiled(_sgemm_kernel, a, b, y, c, M, N, K, ints, alpha, beta)
    return y


@_public
def gemm(a, b, c, alpha, beta, trans_a, trans_b):
    """c arrives as a fresh (M, N) host array, or, from device inputs, as given (any of
    ONNX's broadcastable shapes), which the epilogue broadcasts by index."""
    if c is not None:
        c = c.reshape((1,) * (2 - c.ndim) + tuple(c.shape))
    y = _gemm_device(_device(a), _device(b), _device(c), alpha, beta, trans_a, trans_b)
    return _returned(y, a)


@_public
def linear(x, weight, bias):
    """x @ weight.T + bias: the GEMM with trans_b and the bias as a broadcast row of c."""
    c = None if bias is None else _device(bias).reshape(1, bias.shape[0])
    y = _gemm_device(_device(x), _device(weight), c, 1.0, 1.0, False, True)
    return _returned(y, x)


# --------------------------------------------------------------------------- conv2d

# ints for every conv kernel (_conv_ints): the Conv2dParams fields the kernels need,
# plus the epilogue switches.
_N, _C, _H, _W, _K, _R, _S, _P, _Q, _SH, _SW, _PT, _PL, _DH, _DW, _CG, _KG, _BIAS, _RELU = \
    range(19)


def _conv_ints(p, has_bias, relu):
    return (p.N, p.C, p.H, p.W, p.K, p.R, p.S, p.P, p.Q, p.stride_h, p.stride_w, p.pad_top,
            p.pad_left, p.dil_h, p.dil_w, p.C // p.groups, p.K // p.groups, int(has_bias),
            int(relu))


@cuda.jit(device=True)
def _conv_epilogue(y, bias, ints, img, k, p, q, acc):
    if ints[_BIAS]:
        acc += bias[k]
    if ints[_RELU]:
        acc = _relu_value(acc)
    y[img, k, p, q] = acc


@cuda.jit(device=True)
def _conv_load_a(w2, ints, g, m, k):
    """The weight as a (K, C/groups*R*S) matrix; group g owns rows g*Kg .. g*Kg+Kg-1."""
    return w2[g * ints[_KG] + m, k]


@cuda.jit(device=True)
def _conv_load_b(x, ints, g, k, n):
    """im2col on the fly: row k = (c, r, s) of the group, column n = (image, p, q)."""
    PQ = ints[_P] * ints[_Q]
    img = n // PQ
    pq = n - img * PQ
    p = pq // ints[_Q]
    q = pq - p * ints[_Q]
    RS = ints[_R] * ints[_S]
    c = k // RS
    rs = k - c * RS
    r = rs // ints[_S]
    s = rs - r * ints[_S]
    h = p * ints[_SH] - ints[_PT] + r * ints[_DH]
    w = q * ints[_SW] - ints[_PL] + s * ints[_DW]
    if h < 0 or h >= ints[_H] or w < 0 or w >= ints[_W]:
        return _F0  # zero padding
    return x[img, g * ints[_CG] + c, h, w]


@cuda.jit(device=True)
def _conv_store(y, bias, ints, alpha, beta, g, m, n, acc):
    PQ = ints[_P] * ints[_Q]
    img = n // PQ
    pq = n - img * PQ
    p = pq // ints[_Q]
    _conv_epilogue(y, bias, ints, img, g * ints[_KG] + m, p, pq - p * ints[_Q], acc)


_conv2d_implicit_gemm_kernel = _tiled_gemm(_conv_load_a, _conv_load_b, _conv_store)


@cuda.jit
def _conv2d_direct_kernel(x, w, bias, y, ints):
    i = cuda.grid(1)
    P, Q, K = ints[_P], ints[_Q], ints[_K]
    if i >= ints[_N] * K * P * Q:
        return
    img, k, p, q = _unravel_nchw(i, K, P, Q)
    c0 = (k // ints[_KG]) * ints[_CG]
    acc = _F0
    for c in range(ints[_CG]):
        for r in range(ints[_R]):
            h = p * ints[_SH] - ints[_PT] + r * ints[_DH]
            if h < 0 or h >= ints[_H]:
                continue
            for s in range(ints[_S]):
                wc = q * ints[_SW] - ints[_PL] + s * ints[_DW]
                if wc >= 0 and wc < ints[_W]:
                    acc += x[img, c0 + c, h, wc] * w[k, c, r, s]
    _conv_epilogue(y, bias, ints, img, k, p, q, acc)


CONV_ALGORITHMS = ("auto", "implicit_gemm", "direct")

# Below this many output channels per group, a 64-row GEMM tile would be mostly
# empty rows: one thread per output (direct) does less wasted work.
DIRECT_MAX_CHANNELS_PER_GROUP = 16


def conv2d_choose(p):
    """The algorithm that ``algorithm="auto"`` runs for Conv2dParams ``p``."""
    return "direct" if p.K // p.groups < DIRECT_MAX_CHANNELS_PER_GROUP else "implicit_gemm"


@_public
def conv2d(x, weight, bias, p, activation, algorithm="auto"):
    """algorithm: one of CONV_ALGORITHMS (tests force each; the public op runs "auto")."""
    if algorithm not in CONV_ALGORITHMS:
        raise ValueError(f"unknown conv2d algorithm {algorithm!r}; known: "
                         f"{', '.join(CONV_ALGORITHMS)}")
    if algorithm == "auto":
        algorithm = conv2d_choose(p)
    xd, wd = _device(x), _device(weight)
    has_bias = bias is not None
    bd = _device(bias) if has_bias else _empty(1)  # never read without a bias
    y = _empty(p.out_shape)
    ints = _conv_ints(p, has_bias, activation == "relu")
    if algorithm == "direct":
        _launch_1d(_conv2d_direct_kernel, y.size, xd, wd, bd, y, ints)
    else:
        Kg, CRS = p.K // p.groups, (p.C // p.groups) * p.R * p.S
        _launch_tiled(_conv2d_implicit_gemm_kernel, wd.reshape(p.K, CRS), xd, y, bd,
                      Kg, p.N * p.P * p.Q, CRS, ints, groups=p.groups)
    return _returned(y, x)


# --------------------------------------------------------------------------- pooling

# ints: (C, H, W, P, Q, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
#        pad_bottom, pad_right, dil_h, dil_w, count_include_pad)


def _pool_ints(p):
    return (p.C, p.H, p.W, p.P, p.Q, p.kernel_h, p.kernel_w, p.stride_h, p.stride_w,
            p.pad_top, p.pad_left, p.pad_bottom, p.pad_right, p.dil_h, p.dil_w,
            int(p.count_include_pad))


@cuda.jit
def _max_pool2d_kernel(x, y, ints):
    C, H, W, P, Q = ints[0], ints[1], ints[2], ints[3], ints[4]
    i = cuda.grid(1)
    if i >= x.shape[0] * C * P * Q:
        return
    n, c, p, q = _unravel_nchw(i, C, P, Q)
    m = _NEG_INF  # padding never wins; NaN wins (propagates), as in the spec
    for r in range(ints[5]):
        h = p * ints[7] - ints[9] + r * ints[13]
        if h < 0 or h >= H:
            continue
        for s in range(ints[6]):
            w = q * ints[8] - ints[10] + s * ints[14]
            if w >= 0 and w < W:
                v = x[n, c, h, w]
                if v > m or v != v:
                    m = v
    y[n, c, p, q] = m


@cuda.jit
def _avg_pool2d_kernel(x, y, ints):
    C, H, W, P, Q = ints[0], ints[1], ints[2], ints[3], ints[4]
    i = cuda.grid(1)
    if i >= x.shape[0] * C * P * Q:
        return
    n, c, p, q = _unravel_nchw(i, C, P, Q)
    # The window, clipped to the padded input, then to the real input (see the spec).
    h0 = p * ints[7] - ints[9]
    w0 = q * ints[8] - ints[10]
    h1 = min(h0 + ints[5], H + ints[11])
    w1 = min(w0 + ints[6], W + ints[12])
    hs, he = max(h0, 0), min(h1, H)
    ws, we = max(w0, 0), min(w1, W)
    acc = _F0
    for h in range(hs, he):
        for w in range(ws, we):
            acc += x[n, c, h, w]
    if ints[15]:
        divisor = (h1 - h0) * (w1 - w0)
    else:
        divisor = (he - hs) * (we - ws)
    y[n, c, p, q] = acc / float32(divisor)


def _pool(kernel, x, p):
    y = _empty(p.out_shape)
    _launch_1d(kernel, y.size, _device(x), y, _pool_ints(p))
    return _returned(y, x)


@_public
def max_pool2d(x, p):
    return _pool(_max_pool2d_kernel, x, p)


@_public
def avg_pool2d(x, p):
    return _pool(_avg_pool2d_kernel, x, p)


@cuda.jit(device=True)
def _block_sum(buf, tid):
    """Tree-sum buf[0 .. REDUCE_THREADS) in shared memory; every thread gets the total."""
    stride = REDUCE_THREADS // 2
    while stride > 0:
        cuda.syncthreads()
        if tid < stride:
            buf[tid] += buf[tid + stride]
        stride //= 2
    cuda.syncthreads()
    total = buf[0]
    cuda.syncthreads()  # buf may be reused right after
    return total


@cuda.jit(device=True)
def _block_max(buf, tid):
    """Tree-max like _block_sum; a NaN anywhere may or may not win (callers don't care)."""
    stride = REDUCE_THREADS // 2
    while stride > 0:
        cuda.syncthreads()
        if tid < stride and buf[tid + stride] > buf[tid]:
            buf[tid] = buf[tid + stride]
        stride //= 2
    cuda.syncthreads()
    best = buf[0]
    cuda.syncthreads()
    return best


@cuda.jit
def _global_avg_pool2d_kernel(x2, y):
    """One block per (n, c) plane: x2 is (N*C, H*W), y is (N*C,)."""
    plane = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    buf = cuda.shared.array(REDUCE_THREADS, float32)
    L = x2.shape[1]
    acc = _F0
    for i in range(tid, L, REDUCE_THREADS):
        acc += x2[plane, i]
    buf[tid] = acc
    total = _block_sum(buf, tid)
    if tid == 0:
        y[plane] = total / float32(L)


@_public
def global_avg_pool2d(x):
    N, C, H, W = x.shape
    y = _empty((N, C, 1, 1))
    _global_avg_pool2d_kernel[N * C, REDUCE_THREADS](_device(x).reshape(N * C, H * W),
                                                     y.reshape(N * C))
    return _returned(y, x)


# --------------------------------------------------------------------------- elementwise


@cuda.jit
def _relu_kernel(x, y):
    i = cuda.grid(1)
    if i < x.shape[0]:
        y[i] = _relu_value(x[i])


@_public
def relu(x):
    xd = _device(x).reshape(x.size)
    y = _empty(x.size)
    _launch_1d(_relu_kernel, x.size, xd, y)
    return _returned(y.reshape(x.shape), x)


@cuda.jit
def _softmax_rows_kernel(x, y):
    """inner == 1: one block per row of x (outer, L, 1): max, sum of exp, scale."""
    o = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    L = x.shape[1]
    buf = cuda.shared.array(REDUCE_THREADS, float32)
    m = _NEG_INF
    for l in range(tid, L, REDUCE_THREADS):
        if x[o, l, 0] > m:
            m = x[o, l, 0]
    buf[tid] = m
    m = _block_max(buf, tid)
    total = _F0
    for l in range(tid, L, REDUCE_THREADS):
        e = math.exp(x[o, l, 0] - m)  # NaN (from a NaN or an all -inf row) poisons the row
        y[o, l, 0] = e
        total += e
    buf[tid] = total
    total = _block_sum(buf, tid)
    for l in range(tid, L, REDUCE_THREADS):
        y[o, l, 0] = y[o, l, 0] / total


@cuda.jit
def _softmax_columns_kernel(x, y):
    """inner > 1 (softmax over channels of NCHW): one thread per (outer, inner) column,
    whose neighbours read the neighbouring addresses."""
    outer, L, inner = x.shape
    i = cuda.grid(1)
    if i >= outer * inner:
        return
    o = i // inner
    j = i - o * inner
    m = _NEG_INF
    for l in range(L):
        if x[o, l, j] > m:
            m = x[o, l, j]
    total = _F0
    for l in range(L):
        e = math.exp(x[o, l, j] - m)
        y[o, l, j] = e
        total += e
    for l in range(L):
        y[o, l, j] = y[o, l, j] / total


@_public
def softmax(x):
    outer, L, inner = x.shape
    y = _empty(x.shape)
    if inner == 1:
        _softmax_rows_kernel[outer, REDUCE_THREADS](_device(x), y)
    else:
        _launch_1d(_softmax_columns_kernel, outer * inner, _device(x), y)
    return _returned(y, x)


@cuda.jit
def _lrn_kernel(x, y, size, scale, beta, k):
    N, C, L = x.shape
    i = cuda.grid(1)
    if i >= N * C * L:
        return
    n, c, l = _unravel_ncl(i, C, L)
    sumsq = _F0
    for cc in range(max(c - size // 2, 0), min(c + (size - 1) // 2, C - 1) + 1):
        v = x[n, cc, l]
        sumsq += v * v
    y[n, c, l] = x[n, c, l] / math.pow(k + scale * sumsq, beta)


@_public
def local_response_norm(x, size, alpha, beta, k):
    y = _empty(x.shape)
    _launch_1d(_lrn_kernel, y.size, _device(x), y, size, float32(alpha / size), float32(beta),
               float32(k))
    return _returned(y, x)


@cuda.jit
def _batch_norm_kernel(x, y, mean, var, weight, bias, eps):
    N, C, L = x.shape
    i = cuda.grid(1)
    if i >= N * C * L:
        return
    n, c, l = _unravel_ncl(i, C, L)
    y[n, c, l] = (x[n, c, l] - mean[c]) / math.sqrt(var[c] + eps) * weight[c] + bias[c]


@_public
def batch_norm(x, mean, var, weight, bias, eps):
    y = _empty(x.shape)
    _launch_1d(_batch_norm_kernel, y.size, _device(x), y, _device(mean), _device(var),
               _device(weight), _device(bias), float32(eps))
    return _returned(y, x)


# --------------------------------------------------------------------------- graph glue
# Not ops of the public API: what fastconv.nn's Add and Concat need so that ResNet's
# shortcuts and Inception's branch merges stay on the device.


@cuda.jit
def _add_kernel(a, b, y):
    i = cuda.grid(1)
    if i < y.shape[0]:
        y[i] = a[i] + b[i]


@_public
def add(a, b):
    """a + b for two device arrays of the same shape -> a device array."""
    y = _empty(a.shape)
    n = y.size
    _launch_1d(_add_kernel, n, a.reshape(n), b.reshape(n), y.reshape(n))
    return y


@cuda.jit
def _copy_into_kernel(x, y, offset):
    """x (outer, Cx, inner) into y[:, offset:offset + Cx, :] of y (outer, Cy, inner)."""
    outer, Cx, inner = x.shape
    i = cuda.grid(1)
    if i >= outer * Cx * inner:
        return
    j = i % inner
    t = i // inner
    c = t % Cx
    o = t // Cx
    y[o, offset + c, j] = x[o, c, j]


@_public
def concat(xs, axis):
    """Concatenate device arrays along ``axis`` (shapes equal elsewhere) -> a device array."""
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    y = _empty(tuple(shape))
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    y3 = y.reshape(outer, shape[axis], inner)
    offset = 0
    for x in xs:
        n = x.size
        if n:
            _launch_1d(_copy_into_kernel, n, x.reshape(outer, x.shape[axis], inner), y3, offset)
        offset += x.shape[axis]
    return y


# --------------------------------------------------------------------------- info


def build_info():
    if SIMULATOR:
        return {"cuda": "numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1), not a GPU"}
    device = cuda.get_current_device()
    name = device.name.decode() if isinstance(device.name, bytes) else device.name
    return {"cuda": f"GPU: {name} (compute capability "
                    f"{'.'.join(map(str, device.compute_capability))})"}
