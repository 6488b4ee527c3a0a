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
  * ``_tiled_gemm(load_a, b_col, load_b, store, tile, ...)`` builds the one
    shared-memory SGEMM body, in two tile configurations of 256 threads (16 x 16):
      - big: a 128 x 128 block tile, an 8 x 8 register tile per thread, laid out as
        2 x 2 strips of 4 x 4 spaced 64 apart (rows 4 ty .. 4 ty + 3 and 64 + the
        same; columns likewise with tx). Each thread reads 4 contiguous floats per
        strip from shared memory, and a warp is 8 x 4 threads, so its reads hit
        distinct banks. It does twice the FMAs per shared-memory read of the small tile.
      - small: a 64 x 64 block tile, one 4 x 4 strip per thread: four times the blocks,
        for problems where the big tile leaves SMs idle.
    Per k step of 8, the block stages an A tile (k-major, a_s[k, m]) and a B tile in
    shared memory, double-buffered: the global loads of step s + 1 are issued into
    registers before the FMAs of step s (their latency hides behind them) and stored
    to the other buffer after, one barrier per step. Global loads coalesce: the load
    direction (along k for a row-major A or a transposed B, along m / n otherwise) is
    a compile-time choice made with the loaders.
    ``gemm_plan`` picks per call: the big tile where it gives >= 2 blocks per SM (the
    SM count is read from the device), else the small one; and where even that leaves
    SMs short (batch-1 layers: AlexNet conv3 at batch 1 is 384 x 169, 18 small
    blocks), k is split into slices that run as separate blocks and are summed by a
    reduce kernel, which then applies the epilogue.
    The device functions plugged in decide what A, B and the epilogue are:
      - gemm/linear: A and B are the matrices (one kernel set per trans_a, trans_b),
        the epilogue is ``alpha * acc + beta * c`` (y is filled with beta * c, c
        broadcast by index, before the GEMM), then an optional ReLU.
      - conv2d ("implicit_gemm"): A is the weight as (K, C/groups*R*S), B is the
        im2col matrix computed on the fly from x (padding reads as 0; the column's
        image and window corner are computed once per thread), grid z is the group
        (times the k slices), and the epilogue adds the bias, applies the ReLU and
        scatters into NCHW. No im2col buffer exists.
  * GEMV (``_gemv(rows)``): ``a @ b.T`` with at most 8 rows (linear at small batch,
    which streams the weight once): one warp per 2 output features, lanes reading
    each weight row contiguously with 8 loads in flight, a warp-shuffle reduction and
    the epilogue (which reads c itself). One kernel per row bound (1, 2, 4, 8), so
    the accumulators stay in registers.
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
import inspect
import math
import threading

import numba
import numpy as np
from numba import cuda, float32, int64

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
# the warp layout, the reductions and the ragged edges are exercised the same way
# (every size is a power of two either way), in seconds rather than minutes.
if SIMULATOR:
    TILE_K, THREADS_2D, VEC, LANES_X, WARP_LANES = 4, 4, 2, 2, 4
    THREADS_1D, REDUCE_THREADS = 64, 16
    GEMV_LANES, GEMV_WARPS, GEMV_UNROLL = 8, 2, 2
else:
    TILE_K = 8              # depth of the k step staged in shared memory
    THREADS_2D = 16         # a GEMM block is THREADS_2D x THREADS_2D = 256 threads
    VEC = 4                 # a GEMM thread's rows (and columns) come in strips of VEC
    LANES_X = 8             # a warp covers LANES_X x (WARP_LANES / LANES_X) of the threads
    WARP_LANES = 32
    THREADS_1D = 256        # threads per block of the one-thread-per-element kernels
    REDUCE_THREADS = 128    # threads per block of the reductions (a power of two)
    GEMV_LANES = 32         # a warp per GEMV output feature pair
    GEMV_WARPS = 4          # warps per GEMV block
    GEMV_UNROLL = 8         # weight loads each lane keeps in flight per feature
GEMM_THREADS = THREADS_2D * THREADS_2D
LANES_Y = WARP_LANES // LANES_X
WARPS_X = THREADS_2D // LANES_X
# The two GEMM tile configurations (one kernel body, see _tiled_gemm): the big one
# has 2 x 2 strips of VEC per thread (an 8 x 8 register tile on a GPU, 128 x 128 per
# block), the small one 1 x 1 (4 x 4 per thread, 64 x 64 per block).
TILE_BIG = 2 * VEC * THREADS_2D
TILE_SMALL = VEC * THREADS_2D
GEMM_TILES = {"big": TILE_BIG, "small": TILE_SMALL}
SMEM_PAD = 4  # shared tile rows are TILE + 4 floats: k-fast stores hit 32 distinct banks
GEMV_FEATURES = 2            # output features per GEMV warp (each x load feeds both)
GEMV_ROW_KERNELS = (1, 2, 4, 8)  # rows of x per GEMV kernel specialisation
GEMV_MAX_ROWS = GEMV_ROW_KERNELS[-1]
GEMV_THREADS = GEMV_LANES * GEMV_WARPS
SIMULATED_SM_COUNT = 2       # what gemm_plan assumes under the simulator

_F0 = float32(0.0)
_NEG_INF = float32(-math.inf)


def _log2(n):
    """log2 of a power of two (a Python int: a constant inside the kernels)."""
    assert n > 0 and n & (n - 1) == 0, n
    return n.bit_length() - 1


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
def _div(a, b):
    """a // b for 0 <= a < 2**50 and b > 0, without a 64-bit integer division (a long
    PTX subroutine): the reciprocal is a float64 of b alone (hoisted out of loops where
    b is loop-invariant), and the +0.5 keeps the product's rounding error (< a * 2**-51)
    inside the gap to the neighbouring integers (>= 0.5 / b)."""
    return int64((a + 0.5) * (1.0 / b))


@cuda.jit(device=True)
def _relu_value(v):
    """max(v, 0): NaN stays NaN, -0.0 becomes +0.0 (the spec's _relu_scalar)."""
    if v > 0 or v != v:
        return v
    return _F0


# --------------------------------------------------------------------------- tiled SGEMM


def _tiled_gemm(load_a, b_col, load_b, store, tile, a_kfast, b_kfast, min_blocks):
    """The shared-memory SGEMM kernel for a ``tile`` x ``tile`` block (see module doc).

    Loaders: load_a(a, ints, g, m, k) and load_b(b, ints, g, k, c0, c1, c2) are only
    called inside the (M, Kd) and (Kd, N) bounds; out-of-range tile slots hold 0, which
    makes every ragged M, N and K edge exact. (c0, c1, c2) = b_col(ints, g, n) is the
    part of column n's addressing that does not depend on k (for conv2d: the image and
    the window's corner, two divisions); walking B along n, a thread loads the same
    column at every k step, so it is computed once, before the k loop.
    store(y, aux, ints, alpha, beta, g, m, n, acc) writes one finished element.

    a_kfast / b_kfast (compile-time, as the loaders are): which way neighbouring threads
    walk when loading A and B, along k for a row-major A or a transposed B, along m / n
    otherwise, so that global loads coalesce whatever the layout. min_blocks: the
    launch bound (blocks per SM) that caps registers, None for none.

    Kernel arguments beyond the loaders': ws, the (groups * splits, M, N) split-K
    workspace (written only when splits > 1), and splits, the number of k slices (grid
    z = group * splits + slice).
    """
    micro = tile // THREADS_2D  # rows (and columns) of y per thread: 8 big, 4 small
    span = tile * VEC // micro  # a thread's VEC-wide strips are span apart (64 big)
    loads = tile * TILE_K // GEMM_THREADS  # A (and B) elements each thread stages per k step
    row = tile + SMEM_PAD
    assert GEMM_THREADS % tile == 0 and loads * GEMM_THREADS == tile * TILE_K
    warp_shift, lx_shift, ly_shift, wx_shift = map(_log2, (WARP_LANES, LANES_X, LANES_Y,
                                                           WARPS_X))

    @_gemm_jit(min_blocks)
    def kernel(a, b, y, aux, ws, M, N, Kd, ints, alpha, beta, splits):
        # A is staged k-major (a_s[k, m]) like B, so that the inner loop reads both as
        # rows. Two buffers: the next k step is stored while others still read this one.
        a_s = cuda.shared.array((2, TILE_K, row), float32)
        b_s = cuda.shared.array((2, TILE_K, row), float32)
        acc = cuda.local.array((micro, micro), float32)
        a_reg = cuda.local.array(micro, float32)
        b_reg = cuda.local.array(micro, float32)
        a_next = cuda.local.array(loads, float32)
        b_next = cuda.local.array(loads, float32)
        # Index arithmetic the compiler can see is >= 0: the mask is a no-op (the block
        # has GEMM_THREADS threads) and tx, ty come from bit operations, so Python's
        # negative-number fix-ups of % and // and the negative-index wraparound of
        # every shared-memory read disappear: the reads become one base address plus
        # constant offsets, and far fewer registers stay live.
        tid = cuda.threadIdx.x & (GEMM_THREADS - 1)
        # A warp is LANES_X x LANES_Y threads (8 x 4): per shared read it touches 4 A
        # strips and 8 B strips of VEC contiguous floats, all in distinct banks.
        lane = tid & (WARP_LANES - 1)
        warp = tid >> warp_shift
        tx = ((warp & (WARPS_X - 1)) << lx_shift) | (lane & (LANES_X - 1))
        ty = ((warp >> wx_shift) << ly_shift) | (lane >> lx_shift)
        m0 = cuda.blockIdx.y * tile
        n0 = cuda.blockIdx.x * tile
        g = cuda.blockIdx.z // splits
        steps = (Kd + TILE_K - 1) // TILE_K
        per = (steps + splits - 1) // splits
        k_begin = (cuda.blockIdx.z - g * splits) * per * TILE_K
        k_steps = max(0, min(per, steps - k_begin // TILE_K))
        # Walking B along n, all of a thread's load slots are in column tid % tile
        # (GEMM_THREADS is a multiple of tile): its k-independent addressing is
        # computed once, here. (Along k, each slot has its own column: computed per load.)
        c0, c1, c2 = b_col(ints, g, n0 + tid % tile)
        for i in range(micro):
            for j in range(micro):
                acc[i, j] = _F0
        # Software pipeline, one barrier per k step: step s stores the registers
        # fetched at step s - 1 into shared buffer (s - 1) % 2, then issues the global
        # loads of k step s (into registers: their latency hides behind the FMAs),
        # then multiplies buffer (s - 1) % 2.
        for s in range(k_steps + 1):
            buf = (s + 1) & 1
            if s > 0:
                for l in range(loads):
                    e = tid + l * GEMM_THREADS
                    if a_kfast:
                        a_s[buf, e % TILE_K, e // TILE_K] = a_next[l]
                    else:
                        a_s[buf, e // tile, e % tile] = a_next[l]
                    if b_kfast:
                        b_s[buf, e % TILE_K, e // TILE_K] = b_next[l]
                    else:
                        b_s[buf, e // tile, e % tile] = b_next[l]
                cuda.syncthreads()
            if s < k_steps:
                k0 = k_begin + s * TILE_K
                for l in range(loads):
                    e = tid + l * GEMM_THREADS
                    # k-fast: TILE_K neighbours read one row's TILE_K consecutive floats
                    # (32 bytes); otherwise a warp reads 32 consecutive floats of a row.
                    if a_kfast:
                        kk, mm = e % TILE_K, e // TILE_K
                    else:
                        kk, mm = e // tile, e % tile
                    v = _F0
                    if m0 + mm < M and k0 + kk < Kd:
                        v = load_a(a, ints, g, m0 + mm, k0 + kk)
                    a_next[l] = v
                    v = _F0
                    if b_kfast:
                        kk, nn = e % TILE_K, e // TILE_K
                        if n0 + nn < N and k0 + kk < Kd:
                            d0, d1, d2 = b_col(ints, g, n0 + nn)
                            v = load_b(b, ints, g, k0 + kk, d0, d1, d2)
                    else:
                        kk = e // tile
                        if n0 + tid % tile < N and k0 + kk < Kd:
                            v = load_b(b, ints, g, k0 + kk, c0, c1, c2)
                    b_next[l] = v
            if s > 0:
                for kk in range(TILE_K):
                    for i in range(micro):  # one flat loop: unrolled, a_reg in registers
                        a_reg[i] = a_s[buf, kk, (i // VEC) * span + ty * VEC + i % VEC]
                        b_reg[i] = b_s[buf, kk, (i // VEC) * span + tx * VEC + i % VEC]
                    for i in range(micro):
                        for j in range(micro):
                            acc[i, j] += a_reg[i] * b_reg[j]
        # The epilogue loops are too big to unroll (the store is inlined), and acc[i, j]
        # with a loop-variable index would send all of acc to local memory. So each
        # element is taken from acc[0, 0], then acc shifts by one (constant-index moves,
        # unrolled): acc stays in registers.
        for i in range(micro):
            m = m0 + (i // VEC) * span + ty * VEC + i % VEC
            for j in range(micro):
                n = n0 + (j // VEC) * span + tx * VEC + j % VEC
                if m < M and n < N:
                    if splits > 1:
                        ws[cuda.blockIdx.z, m, n] = acc[0, 0]
                    else:
                        store(y, aux, ints, alpha, beta, g, m, n, acc[0, 0])
                for jj in range(micro - 1):
                    acc[0, jj] = acc[0, jj + 1]
            for ii in range(micro - 1):
                for jj in range(micro):
                    acc[ii, jj] = acc[ii + 1, jj]

    return kernel


def _split_k_reduce(store):
    """Sum the split-K slices of ws (groups * splits, M, N), then the usual epilogue:
    one thread per element of y, neighbours along n."""

    @cuda.jit
    def kernel(ws, y, aux, M, N, ints, alpha, beta, splits):
        i = cuda.grid(1)
        MN = M * N
        if i >= (ws.shape[0] // splits) * MN:
            return
        g = i // MN
        mn = i - g * MN
        m = mn // N
        n = mn - m * N
        acc = _F0
        for s in range(splits):
            acc += ws[g * splits + s, m, n]
        store(y, aux, ints, alpha, beta, g, m, n, acc)

    return kernel


def _gemm_jit(min_blocks):
    """cuda.jit, with launch bounds (GEMM_THREADS, min_blocks) where numba-cuda has them."""
    if SIMULATOR or min_blocks is None or \
            "launch_bounds" not in inspect.signature(cuda.jit).parameters:
        return cuda.jit
    return cuda.jit(launch_bounds=(GEMM_THREADS, min_blocks))


class _GemmKernels:
    """One op's GEMM kernels, all from the same loaders and epilogue: the two tile
    configurations and the split-K reduction (shared when given: it only depends on
    the epilogue).

    big_min_blocks: 2 caps the big tile at 128 registers, so that two of its blocks
    share an SM (one block's barrier stalls are covered by the other), where ptxas
    fits that without spilling (tests/tools/check_cuda_ptx.py checks); None lets
    ptxas use what it needs (then one 256-thread block per SM)."""

    def __init__(self, load_a, b_col, load_b, store, a_kfast, b_kfast, reduce=None,
                 big_min_blocks=None):
        self.big = _tiled_gemm(load_a, b_col, load_b, store, TILE_BIG, a_kfast, b_kfast,
                               big_min_blocks)
        self.small = _tiled_gemm(load_a, b_col, load_b, store, TILE_SMALL, a_kfast, b_kfast,
                                 None)
        self.reduce = reduce or _split_k_reduce(store)


# Per-call choice (gemm_plan), from timing every (tile, k splits) on an H200 (132 SMs;
# `python benchmarks/gpu.py --plans`, table in benchmarks/RESULTS.md). The big tile does
# twice the FMAs per shared-memory read of the small one, but has a quarter as many
# blocks: it is used while it gives BIG_BLOCKS_PER_SM blocks per SM, if need be by
# splitting k into slices of at least MIN_BIG_SLICE_STEPS k steps that run as separate
# blocks and are summed by a second kernel (SGEMM 2048^3: 256 blocks, no split, 0.91 ms
# vs 1.41 small; VGG conv5_2 at batch 8: 52 blocks x 4 slices, 0.90 ms vs 1.68 unsplit),
# and while rounding M and N up to it adds at most BIG_TILE_MAX_PADDING times the small
# tile's rounded work (64 output channels fill a small tile but half a big one: VGG
# conv1_2, ResNet's 1x1 256->64). Otherwise the small tile, split along k into slices of
# at least MIN_SPLIT_STEPS k steps until there are SMALL_BLOCKS_PER_SM blocks per SM
# (SGEMM 1024^3: 256 small blocks x 3 slices, 0.44 ms vs 0.67 for 64 big blocks x 5;
# AlexNet conv3 at batch 1, 18 small blocks: x 9 slices, 0.41 ms vs 0.60 unsplit).
BIG_BLOCKS_PER_SM = 1.5
SMALL_BLOCKS_PER_SM = 4
BIG_TILE_MAX_PADDING = 1.5
MIN_BIG_SLICE_STEPS = 48  # a big-tile k slice is at least 48 k steps (384 deep on a GPU)
MIN_SPLIT_STEPS = 32      # a small-tile k slice is at least 32 k steps (256 deep)
MAX_SPLITS = 64           # bounds the workspace: splits * M * N floats


@functools.lru_cache(maxsize=None)
def _device_sm_count(device_id):
    return cuda.get_current_device().MULTIPROCESSOR_COUNT


def sm_count():
    """Streaming multiprocessors of the current device (read from it, once per device)."""
    if SIMULATOR:
        return SIMULATED_SM_COUNT
    return _device_sm_count(cuda.get_current_device().id)


def gemm_plan(M, N, Kd, groups=1, sms=None):
    """(tile config, k splits) for ``groups`` GEMMs of M x N x Kd (see the rule above)."""
    sms = sm_count() if sms is None else sms
    steps = _blocks(Kd, TILE_K)

    def blocks(tile):
        return _blocks(M, tile) * _blocks(N, tile) * groups

    padding = blocks(TILE_BIG) * TILE_BIG ** 2 / (blocks(TILE_SMALL) * TILE_SMALL ** 2)
    if padding <= BIG_TILE_MAX_PADDING:
        want = math.ceil(BIG_BLOCKS_PER_SM * sms)
        most = max(1, min(steps // MIN_BIG_SLICE_STEPS, MAX_SPLITS))
        splits = _even_splits(Kd, min(_blocks(want, blocks(TILE_BIG)), most))
        if blocks(TILE_BIG) * splits >= want:
            return "big", splits
    most = max(1, min(steps // MIN_SPLIT_STEPS, MAX_SPLITS))
    splits = min(_blocks(SMALL_BLOCKS_PER_SM * sms, blocks(TILE_SMALL)), most)
    return "small", _even_splits(Kd, splits)


def _even_splits(Kd, splits):
    """Fewer splits where the last ones would be empty (k is split in whole k steps)."""
    steps = max(1, _blocks(Kd, TILE_K))
    return _blocks(steps, _blocks(steps, max(1, min(splits, steps))))


_scratch = threading.local()


def _workspace(shape):
    """A float32 device array of ``shape`` for the split-K slices: a view of a buffer
    kept per thread and device and grown as needed, since numba's allocations go
    straight to cuMemAlloc (tens of microseconds: a batch-1 layer's whole budget).
    Per thread, so that two threads' launches never share one; kernels on one
    thread's stream run in order, so a buffer is free again when the next launch of
    the same thread starts."""
    size = math.prod(shape)
    key = 0 if SIMULATOR else cuda.get_current_device().id
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    buf = buffers.get(key)
    if buf is None or buf.size < size:
        buf = buffers[key] = _empty(max(size, 2 * (0 if buf is None else buf.size)))
    return buf[:size].reshape(shape)


def _launch_tiled(kernels, a, b, y, aux, M, N, Kd, ints, alpha=1.0, beta=0.0, groups=1,
                  plan=None):
    """plan: None (gemm_plan decides) or (config, splits) to force one (tests)."""
    config, splits = gemm_plan(M, N, Kd, groups) if plan is None else plan
    splits = _even_splits(Kd, splits)
    tile = GEMM_TILES[config]
    ws = _workspace((groups * splits, M, N) if splits > 1 else (1, 1, 1))
    grid = (_blocks(N, tile), _blocks(M, tile), groups * splits)
    getattr(kernels, config)[grid, GEMM_THREADS](
        a, b, y, aux, ws, M, N, Kd, ints, float32(alpha), float32(beta), splits)
    if splits > 1:
        _launch_1d(kernels.reduce, groups * M * N, ws, y, aux, M, N, ints, float32(alpha),
                   float32(beta), splits)


# gemm: ints = (has_c, relu). With a c, y is first filled with beta * c (broadcast by
# index, _beta_c_kernel) and the epilogue adds alpha * acc to it, as BLAS does with
# beta * C: the 8 x 8 epilogue then needs no c addressing (fewer registers live).


@cuda.jit(device=True)
def _gemm_load_a(a, ints, g, m, k):
    return a[m, k]


@cuda.jit(device=True)
def _gemm_load_a_t(a, ints, g, m, k):
    return a[k, m]


@cuda.jit(device=True)
def _gemm_b_col(ints, g, n):
    return n, 0, 0


@cuda.jit(device=True)
def _gemm_load_b(b, ints, g, k, n, unused1, unused2):
    return b[k, n]


@cuda.jit(device=True)
def _gemm_load_b_t(b, ints, g, k, n, unused1, unused2):
    return b[n, k]


@cuda.jit(device=True)
def _gemm_store(y, unused, ints, alpha, beta, g, m, n, acc):
    v = alpha * acc
    if ints[0]:
        v += y[m, n]  # beta * c
    if ints[1]:
        v = _relu_value(v)
    y[m, n] = v


@cuda.jit(device=True)
def _gemm_c_store(y, c, ints, alpha, beta, g, m, n, acc):
    """The GEMV's epilogue (no register pressure there): reads c itself, saving the
    launch of _beta_c_kernel, a large share of a batch-1 Linear's time."""
    v = alpha * acc
    if ints[0]:
        v += beta * c[m if c.shape[0] > 1 else 0, n if c.shape[1] > 1 else 0]
    if ints[1]:
        v = _relu_value(v)
    y[m, n] = v


@cuda.jit
def _beta_c_kernel(c, y, beta):
    """y (M, N) = beta * c, each dimension of c being 1 or full (checked by the API)."""
    i = cuda.grid(1)
    M, N = y.shape
    if i < M * N:
        m = i // N
        n = i - m * N
        y[m, n] = beta * c[m if c.shape[0] > 1 else 0, n if c.shape[1] > 1 else 0]


# One kernel set per (trans_a, trans_b): the loaders and the load direction are
# compile-time, so each variant holds only its own addressing in registers. (numba
# compiles a kernel on its first call: unused variants cost nothing.) The big tile
# fits 128 registers without spills in every variant but a @ b.T (linear's layout:
# 4 bytes of spills at sm_90), which is left unbounded.
_sgemm_reduce_kernel = _split_k_reduce(_gemm_store)
_sgemm_kernels = {
    (ta, tb): _GemmKernels(_gemm_load_a_t if ta else _gemm_load_a, _gemm_b_col,
                           _gemm_load_b_t if tb else _gemm_load_b, _gemm_store,
                           a_kfast=not ta, b_kfast=tb, reduce=_sgemm_reduce_kernel,
                           big_min_blocks=None if (tb and not ta) else 2)
    for ta in (False, True) for tb in (False, True)}

# --------------------------------------------------------------------------- GEMV


if SIMULATOR:
    @cuda.jit(device=True)
    def _shfl_xor(v, offset, buf, tid):
        """The simulator has no warp shuffles: the same exchange through shared memory."""
        buf[tid] = v
        cuda.syncthreads()
        w = buf[tid ^ offset]
        cuda.syncthreads()
        return w
else:
    @cuda.jit(device=True)
    def _shfl_xor(v, offset, buf, tid):
        return cuda.shfl_xor_sync(0xFFFFFFFF, v, offset)


def _gemv(rows):
    """y (R, O) = x (R, Kd) @ w (O, Kd).T for R <= rows, then _gemm_c_store's epilogue.

    Few rows (linear at batch <= 8) make the GEMM a stream of the weight matrix, read
    once: one warp per GEMV_FEATURES output features, its lanes reading each weight
    row contiguously (coalesced) and GEMV_UNROLL loads apart (several in flight per
    lane), every x element loaded once for all the warp's features; a butterfly of
    warp shuffles sums the lanes. ``rows`` is a compile-time bound so the (rows x
    features) accumulators stay in registers; rows past R repeat row R - 1, unstored.
    """
    shuffles = _log2(GEMV_LANES)
    n_acc = rows * GEMV_FEATURES
    sweep = GEMV_LANES * GEMV_UNROLL  # inputs a warp covers per main-loop iteration

    @cuda.jit(device=True)
    def accumulate(x, w, kk, o0, O, R, acc, wv):
        """acc[r, f] += x[r, kk] * w[o0 + f, kk] (rows and features past the end clamped:
        valid addresses, results never stored)."""
        for f in range(GEMV_FEATURES):
            wv[f] = w[min(o0 + f, O - 1), kk]
        for r in range(rows):
            xv = x[min(r, R - 1), kk]
            for f in range(GEMV_FEATURES):
                acc[r * GEMV_FEATURES + f] += xv * wv[f]

    @cuda.jit
    def kernel(x, w, y, c, ints, alpha, beta):
        buf = cuda.shared.array(GEMV_THREADS, float32)  # only the simulator's shuffles
        acc = cuda.local.array(n_acc, float32)  # acc[r * GEMV_FEATURES + f]
        wv = cuda.local.array(GEMV_FEATURES, float32)
        R = x.shape[0]
        Kd = x.shape[1]
        O = w.shape[0]
        tid = cuda.threadIdx.x
        lane = tid % GEMV_LANES
        o0 = (cuda.blockIdx.x * GEMV_WARPS + tid // GEMV_LANES) * GEMV_FEATURES
        for i in range(n_acc):
            acc[i] = _F0
        # Whole sweeps, without bounds checks: the GEMV_UNROLL steps unroll and their
        # loads are all issued before the FMAs that use them.
        full = Kd - Kd % sweep
        for k in range(lane, full, sweep):
            for u in range(GEMV_UNROLL):
                accumulate(x, w, k + u * GEMV_LANES, o0, O, R, acc, wv)
        for kk in range(full + lane, Kd, GEMV_LANES):  # the rest, less than one sweep
            accumulate(x, w, kk, o0, O, R, acc, wv)
        # Every lane of every warp reaches the shuffles (full mask): no early return.
        # As in _tiled_gemm's epilogue, acc[0] is taken and acc shifts down (constant
        # indices), so that acc stays in registers although this loop is not unrolled.
        for i in range(n_acc):
            v = acc[0]
            for t in range(shuffles):
                v += _shfl_xor(v, GEMV_LANES >> (t + 1), buf, tid)
            r = i // GEMV_FEATURES
            o = o0 + i - r * GEMV_FEATURES
            if lane == 0 and r < R and o < O:
                _gemm_c_store(y, c, ints, alpha, beta, 0, r, o, v)
            for j in range(n_acc - 1):
                acc[j] = acc[j + 1]

    return kernel


_gemv_kernels = {rows: _gemv(rows) for rows in GEMV_ROW_KERNELS}


def _launch_gemv(x, w, y, c, ints, alpha, beta):
    rows = next(r for r in GEMV_ROW_KERNELS if r >= x.shape[0])
    blocks = _blocks(w.shape[0], GEMV_WARPS * GEMV_FEATURES)
    _gemv_kernels[rows][blocks, GEMV_THREADS](x, w, y, c, ints, float32(alpha), float32(beta))


GEMM_PATHS = ("auto", "gemv", "big", "small")


def _gemm_device(a, b, c, alpha, beta, trans_a, trans_b, relu=False, path="auto", splits=None):
    """y = alpha op(a) op(b) + beta c on device arrays; c is None or 2-D, broadcastable.

    path: "auto", or one of GEMM_PATHS forced (tests); splits: with "big" / "small",
    the k slices (default 1). "auto" takes the GEMV for a @ b.T with at most
    GEMV_MAX_ROWS rows (linear at small batch), else gemm_plan's tiles."""
    if path not in GEMM_PATHS:
        raise ValueError(f"unknown gemm path {path!r}; known: {', '.join(GEMM_PATHS)}")
    M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
    N = b.shape[0] if trans_b else b.shape[1]
    y = _empty((M, N))
    has_c = c is not None
    ints = (int(has_c), int(relu))
    gemv_fits = trans_b and not trans_a and M <= GEMV_MAX_ROWS
    if path == "gemv" and not gemv_fits:
        raise ValueError(f"the gemv path takes a @ b.T with at most {GEMV_MAX_ROWS} rows")
    if path == "gemv" or (path == "auto" and gemv_fits):
        _launch_gemv(a, b, y, c if has_c else y, ints, alpha, beta)  # (y: never read)
    else:
        if has_c:
            _launch_1d(_beta_c_kernel, M * N, c, y, float32(beta))
        plan = None if path == "auto" else (path, splits or 1)
        _launch_tiled(_sgemm_kernels[bool(trans_a), bool(trans_b)], a, b, y, y, M, N, K, ints,
                      alpha, beta, plan=plan)
    return y


@_public
def gemm(a, b, c, alpha, beta, trans_a, trans_b, path="auto", splits=None):
    """c arrives as a fresh (M, N) host array, or, from device inputs, as given (any of
    ONNX's broadcastable shapes), which _beta_c_kernel broadcasts by index."""
    if c is not None:
        c = c.reshape((1,) * (2 - c.ndim) + tuple(c.shape))
    y = _gemm_device(_device(a), _device(b), _device(c), alpha, beta, trans_a, trans_b,
                     path=path, splits=splits)
    return _returned(y, a)


@_public
def linear(x, weight, bias, activation=None, path="auto", splits=None):
    """x @ weight.T + bias (then ReLU if activation == "relu"): the GEMM with trans_b
    and the bias as a broadcast row of c; at batch <= GEMV_MAX_ROWS, the GEMV."""
    c = None if bias is None else _device(bias).reshape(1, bias.shape[0])
    y = _gemm_device(_device(x), _device(weight), c, 1.0, 1.0, False, True,
                     relu=activation == "relu", path=path, splits=splits)
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
def _conv_b_col(ints, g, n):
    """Column n = (image, p, q) of the group's im2col matrix, as (offset of the image's
    first channel of group g in the flat x, top row, left column of the window)."""
    PQ = ints[_P] * ints[_Q]
    img = _div(n, PQ)
    pq = n - img * PQ
    p = _div(pq, ints[_Q])
    q = pq - p * ints[_Q]
    base = (img * ints[_C] + g * ints[_CG]) * ints[_H] * ints[_W]
    return base, p * ints[_SH] - ints[_PT], q * ints[_SW] - ints[_PL]


@cuda.jit(device=True)
def _conv_load_b(x1, ints, g, k, base, h0, w0):
    """im2col on the fly: row k = (c, r, s) of the group, of the column _conv_b_col gave."""
    RS = ints[_R] * ints[_S]
    c = _div(k, RS)
    rs = k - c * RS
    r = _div(rs, ints[_S])
    h = h0 + r * ints[_DH]
    w = w0 + (rs - r * ints[_S]) * ints[_DW]
    if h < 0 or h >= ints[_H] or w < 0 or w >= ints[_W]:
        return _F0  # zero padding
    return x1[base + (c * ints[_H] + h) * ints[_W] + w]


@cuda.jit(device=True)
def _conv_store(y, bias, ints, alpha, beta, g, m, n, acc):
    PQ = ints[_P] * ints[_Q]
    img = _div(n, PQ)
    pq = n - img * PQ
    p = _div(pq, ints[_Q])
    _conv_epilogue(y, bias, ints, img, g * ints[_KG] + m, p, pq - p * ints[_Q], acc)


# A: weight rows (K, C/groups*R*S), walked along k; B: im2col columns walked along
# output pixels (q, then p, then image), which are consecutive in x for stride 1.
_conv2d_implicit_gemm_kernels = _GemmKernels(_conv_load_a, _conv_b_col, _conv_load_b,
                                              _conv_store, a_kfast=True, b_kfast=False,
                                              big_min_blocks=2)


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
def conv2d(x, weight, bias, p, activation, algorithm="auto", plan=None):
    """algorithm: one of CONV_ALGORITHMS (tests force each; the public op runs "auto").
    plan: None, or (tile config, k splits) to force one on "implicit_gemm" (tests)."""
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
        _launch_tiled(_conv2d_implicit_gemm_kernels, wd.reshape(p.K, CRS), xd.reshape(xd.size),
                      y, bd, Kg, p.N * p.P * p.Q, CRS, ints, groups=p.groups, plan=plan)
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
