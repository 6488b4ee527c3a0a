"""The Numba CPU backend: ``@njit(parallel=True, cache=True)`` kernels named as in ``csrc/``.

Inputs arrive validated, float32 and C-contiguous (``fastconv.ops`` guarantees it); every
kernel computes in float32 and returns a fresh array. Each Python entry point below (the
registry contract) only flattens arrays to 1-D and converts scalars to int64 / float32, so
each jitted kernel compiles exactly one signature (``cache=True`` keeps it across processes,
in ``__pycache__`` or ``NUMBA_CACHE_DIR``).

Structure (diff it against csrc/):
  * SIMD layer: ``_ukr_6x16``, an ``numba.extending.intrinsic`` that emits the whole 6x16
    GEMM microkernel as LLVM IR on ``<8 x float>`` vectors: 12 accumulators kept in SSA
    registers (phi nodes, never memory), per k one broadcast of 6 A values (from a packed
    panel, or from 6 rows of a matrix read in place), two vector loads of B and 12
    ``llvm.fma.v8f32``. It is the csrc/gemm.c AVX2 kernel (6x16, 12 ymm accumulators).
    On a CPU without AVX2/FMA LLVM legalises the vectors and the fma to
    what the target has, so the answer stays the same (only slower).
    ``_ukr_6x16_loops`` is the same contract in plain loops (tests run both: ``simd=0``).
  * ``_sgemm_block``: BLIS-order blocked GEMM over a rectangle of C (NC / KC / MC loops,
    then NR x MR microkernel calls). A is pre-packed for the whole matrix (``_pack_a``,
    parallel over row panels, alpha folded in), or -- conv weights -- read in place. B is
    packed per work item into a private buffer by ``_pack_b`` from one of three sources:
    a row-major matrix, a transposed one, or -- for convolution -- straight from the NCHW
    input (implicit GEMM: im2col happens while packing, so no column matrix ever exists;
    workspace is one KC x NC panel per work item).
    Bias (prefilled into C) and ReLU (in the last KC block's microkernel store) are fused.
  * ``_sgemm``: the parallel driver (a 2-D grid of row x column blocks over ``prange``).
  * conv2d: ``conv2d_choose`` mirrors ``fc_conv2d_choose`` where it pays:
      direct   grouped with Cg*R*S <= 9 (depthwise, narrow groups) or Kg <= 4
      1x1      1x1 stride 1 unpadded: the packed GEMM on the input itself (B = x[n, g])
      implicit everything else: packed GEMM whose B panels are gathered from the input
      winograd 3x3 stride 1, C, K >= 128, >= 196 tiles (VGG conv3_2): F(2x2, 3x3), 16 packed
               GEMMs per block of 64 tiles (2.25x fewer multiply-adds)
  * pooling, relu, softmax, LRN, batch-norm: straightforward ``prange`` loops.

fastmath: the flag set ``_FM`` = contract, reassoc, arcp: never "nnan"/"ninf"/"nsz", so
NaN tests (``v != v``), +-inf and the sign of zero keep IEEE meaning (max-pool NaN
propagation, relu(NaN) = NaN and relu(-0.0) = +0.0, softmax of a row with +inf / all -inf).

Threads: fastconv's count (``fastconv.set_num_threads``) maps to ``numba.set_num_threads``
clamped to ``numba.config.NUMBA_NUM_THREADS`` (the maximum, fixed when numba is imported).
Numba's setting is per calling thread, so every entry point re-applies fastconv's count in
the thread that calls it (``_in_fastconv_threads``).
"""
from __future__ import annotations

import functools

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .. import _registry
from .._checks import WINOGRAD_NONFINITE_FALLBACK, all_finite

# IEEE-preserving fast-math: reassociation (vectorised reductions), FMA contraction and
# reciprocal division; no nnan / ninf / nsz.
_FM = {"contract", "reassoc", "arcp"}


def _in_fastconv_threads(fn):
    """Entry point: run with fastconv's thread count in the calling thread (numba's is
    thread-local, so a count set in another Python thread would not apply here)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        set_num_threads(_registry.get_num_threads())
        return fn(*args, **kwargs)
    return wrapper


# GEMM blocking (float32, Zen 3: 32 KiB L1d, 512 KiB L2): microkernel MR x NR = 6 x 16;
# a KC x NR panel of B (16 KiB) stays in L1, an MC x KC block of A (96 KiB) in L2.
MR, NR = 6, 16
KC, MC, NC = 256, 96, 512
# The microkernel prefetches its packed A panel this many k steps ahead (16 x 6 floats =
# 384 bytes, as csrc/gemm.c's FC_PF_A).
A_PF_K = 16

# ----------------------------------------------------------------------------- SIMD layer

_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V8 = ir.VectorType(_F32, 8)


def _data_at(context, builder, arrty, arr, off):
    """float* to element ``off`` of a 1-D float32 array."""
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.gep(data, [off])


def _vload(builder, ptr):
    """<8 x float> from 8 consecutive floats at ``ptr`` (unaligned)."""
    return builder.load(builder.bitcast(ptr, _V8.as_pointer()), align=4)


def _vstore(builder, vec, ptr):
    builder.store(vec, builder.bitcast(ptr, _V8.as_pointer()), align=4)


def _vbroadcast(builder, scalar):
    """<8 x float> with every lane = ``scalar`` (one vbroadcastss)."""
    undef = ir.Constant(_V8, ir.Undefined)
    v = builder.insert_element(undef, scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(_I32, 8), [0] * 8))


def _vfma(builder, a, b, c):
    """a * b + c per lane, as one llvm.fma.v8f32 (vfmadd231ps ymm on AVX2)."""
    from numba.core import cgutils
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8, [_V8] * 3),
                                         "llvm.fma.v8f32")
    return builder.call(fma, [a, b, c])


def _prefetch(builder, ptr):
    """Hint the cache line holding ``ptr`` into L1 (llvm.prefetch: read, locality 3, data:
    prefetcht0 on x86; never faults, dropped on targets without prefetch)."""
    from numba.core import cgutils
    i8p = ir.IntType(8).as_pointer()
    fn = cgutils.get_or_insert_function(builder.module,
                                        ir.FunctionType(ir.VoidType(), [i8p, _I32, _I32, _I32]),
                                        "llvm.prefetch")
    builder.call(fn, [builder.bitcast(ptr, i8p)] + [ir.Constant(_I32, v) for v in (0, 3, 1)])


def _gep(builder, ptr, i):
    return builder.gep(ptr, [ir.Constant(_I64, i)]) if isinstance(i, int) else \
        builder.gep(ptr, [i])


def _ukr_k_loop(builder, name, kc, a_at, pb_p, done, a_pf=None):
    """Emit the microkernel's k loop (k = 0 .. kc-1, kc >= 1) as one block ``name``, entered
    from the current block and leaving to ``done``: per k, two <8 x float> loads of the B
    panel row and, per row r, one broadcast of A(r, k) (``a_at(k, r)``: its float*) and two
    FMAs into that row's accumulators (phi values: LLVM keeps them in registers, 12 of the
    16 ymm on AVX2). ``a_pf(k)``, if given: a float* in the A stream to prefetch at step k.
    Returns (the loop block, the accumulators it leaves with)."""
    entry = builder.basic_block
    loop = builder.append_basic_block(name)
    builder.branch(loop)
    builder.position_at_end(loop)
    k = builder.phi(_I64, "k")
    k.add_incoming(ir.Constant(_I64, 0), entry)
    accs = []
    for i in range(2 * MR):
        phi = builder.phi(_V8, f"acc{i}")
        phi.add_incoming(ir.Constant(_V8, [0.0] * 8), entry)
        accs.append(phi)
    if a_pf is not None:
        _prefetch(builder, a_pf(k))
    bp = builder.gep(pb_p, [builder.mul(k, ir.Constant(_I64, NR))])
    b0 = _vload(builder, bp)
    b1 = _vload(builder, _gep(builder, bp, 8))
    new = []
    for r in range(MR):
        a = _vbroadcast(builder, builder.load(a_at(k, r)))
        new.append(_vfma(builder, a, b0, accs[2 * r]))
        new.append(_vfma(builder, a, b1, accs[2 * r + 1]))
    k_next = builder.add(k, ir.Constant(_I64, 1))
    k.add_incoming(k_next, loop)
    for phi, v in zip(accs, new):
        phi.add_incoming(v, loop)
    builder.cbranch(builder.icmp_signed("<", k_next, kc), loop, done)
    return loop, new


@intrinsic
def _ukr_6x16(typingctx, kc, pa, pa_off, a_rs, a_ks, mr, pb, pb_off, c, c_off, ldc, flags):
    """C[6 x 16] (row stride ldc, from c[c_off]) = sum over k < kc of A panel x B panel.

    A(r, k) is pa[pa_off + r*a_rs + k*a_ks], in one of two layouts: a_ks == 1, rows of a
    row-major matrix used in place (a_rs = its row stride: conv weights, which then need
    no per-call packing); otherwise a packed panel, a_rs = 1 and a_ks = 6, all 6 rows
    present (zero past the matrix). In place, rows r >= mr read row mr - 1 instead (such a
    matrix has no zero rows past its end). Rows r >= mr of C are the caller's to drop. Each
    layout gets its own loop with its own addressing
    (one pointer + constant offsets for the panel; six row pointers + k for the rows): one
    loop for both, with the strides as run-time values, made LLVM keep 12 strength-reduced
    row pointers and spill them to the stack every k (GEMM 1024^2 ~8% slower).
    pb[pb_off + k*16 + j] is B(k, j) (a packed panel).
    flags bit 0: accumulate (C += product, else C = product); bit 1: ReLU on the stored value
    (v <= 0 -> +0.0, NaN stays NaN). kc >= 1.
    """
    sig = types.void(kc, pa, pa_off, a_rs, a_ks, mr, pb, pb_off, c, c_off, ldc, flags)

    def codegen(context, builder, signature, args):
        (kc_v, pa_v, paoff_v, ars_v, aks_v, mr_v, pb_v, pboff_v, c_v, coff_v, ldc_v,
         flags_v) = args
        at = signature.args
        pa_p = _data_at(context, builder, at[1], pa_v, paoff_v)
        pb_p = _data_at(context, builder, at[6], pb_v, pboff_v)
        c_p = _data_at(context, builder, at[8], c_v, coff_v)
        zero = ir.Constant(_V8, [0.0] * 8)
        # C tile: its 6 rows are ldc apart (a cache miss each for a large C); prefetched
        # here, the misses overlap the k loop instead of stalling the stores after it
        for r in range(MR):
            row = builder.gep(c_p, [builder.mul(ldc_v, ir.Constant(_I64, r))])
            _prefetch(builder, row)
            _prefetch(builder, _gep(builder, row, NR - 1))
        rows_pre = builder.append_basic_block("ukr.rows.pre")
        panel_pre = builder.append_basic_block("ukr.panel.pre")
        done = builder.append_basic_block("ukr.done")
        builder.cbranch(builder.icmp_signed("==", aks_v, ir.Constant(_I64, 1)), rows_pre,
                        panel_pre)
        builder.position_at_end(rows_pre)  # in place: six row pointers, indexed by k
        last = builder.sub(mr_v, ir.Constant(_I64, 1))
        row_p = []
        for r in range(MR):  # rows past mr clamped to the last valid one
            rr = ir.Constant(_I64, r)
            rr = builder.select(builder.icmp_signed("<", rr, mr_v), rr, last)
            row_p.append(builder.gep(pa_p, [builder.mul(rr, ars_v)]))
        rows_loop, acc_rows = _ukr_k_loop(builder, "ukr.rows", kc_v,
                                          lambda k, r: builder.gep(row_p[r], [k]), pb_p, done)
        builder.position_at_end(panel_pre)  # packed: one pointer per k, rows at offsets 0..5
        panel_loop, acc_pan = _ukr_k_loop(
            builder, "ukr.panel", kc_v,
            lambda k, r: _gep(builder, builder.gep(pa_p, [builder.mul(k, aks_v)]), r),
            pb_p, done,
            # the panel streams from L2: ask for it A_PF_K steps ahead
            lambda k: _gep(builder, builder.gep(pa_p, [builder.mul(k, aks_v)]), A_PF_K * MR))
        builder.position_at_end(done)
        new = []
        for i in range(2 * MR):
            phi = builder.phi(_V8, f"acc.out{i}")
            phi.add_incoming(acc_rows[i], rows_loop)
            phi.add_incoming(acc_pan[i], panel_loop)
            new.append(phi)

        accumulate = builder.icmp_signed("!=", builder.and_(flags_v, ir.Constant(_I64, 1)),
                                         ir.Constant(_I64, 0))
        relu = builder.icmp_signed("!=", builder.and_(flags_v, ir.Constant(_I64, 2)),
                                   ir.Constant(_I64, 0))
        for r in range(MR):
            row = builder.gep(c_p, [builder.mul(ldc_v, ir.Constant(_I64, r))])
            for h in range(2):
                ptr = _gep(builder, row, 8 * h)
                v = new[2 * r + h]
                v = builder.select(accumulate, builder.fadd(v, _vload(builder, ptr)), v)
                # ordered <=: false for NaN, so NaN is kept; -0.0 <= 0 gives +0.0
                le = builder.fcmp_ordered("<=", v, zero)
                v = builder.select(relu, builder.select(le, zero, v), v)
                _vstore(builder, v, ptr)
        return context.get_dummy_value()

    return sig, codegen


@njit(fastmath=_FM, cache=True)
def _ukr_6x16_loops(kc, pa, pa_off, a_rs, a_ks, mr, pb, pb_off, c, c_off, ldc, flags):
    """The plain-loop twin of ``_ukr_6x16`` (same arguments, same results up to rounding)."""
    acc = np.zeros((MR, NR), np.float32)
    for k in range(kc):
        for r in range(MR):
            a = pa[pa_off + min(r, mr - 1) * a_rs + k * a_ks]
            for j in range(NR):
                acc[r, j] += a * pb[pb_off + k * NR + j]
    for r in range(MR):
        for j in range(NR):
            i = c_off + r * ldc + j
            v = acc[r, j]
            if flags & 1:
                v += c[i]
            if flags & 2 and v <= 0:
                v = np.float32(0.0)
            c[i] = v


@njit(cache=True)
def _simd_selftest(a, b, c, c_off, ldc, flags, simd, a_rs=1, a_ks=MR, mr=MR):
    """One microkernel call (tests compare it against NumPy): A from ``a`` as the kernel
    reads it (default: a packed panel), B a packed panel."""
    kc = b.shape[0] // NR
    if simd:
        _ukr_6x16(kc, a, 0, a_rs, a_ks, mr, b, 0, c, c_off, ldc, flags)
    else:
        _ukr_6x16_loops(kc, a, 0, a_rs, a_ks, mr, b, 0, c, c_off, ldc, flags)


# ----------------------------------------------------------------------------- packing

# An index known to be >= 0, as unsigned: Numba then indexes without its wraparound test.
_u = np.uint64


@njit(fastmath=_FM, cache=True)
def _pack_a_panel(a, a_off, lda, trans, M, K, alpha, pa, pa_off, ip):
    """Row panel ip (rows ip*MR .. +MR) of op(A) (M x K; A[i, k] = a[a_off + i*lda + k], or
    a[a_off + k*lda + i] if trans) times alpha, into pa[pa_off:]: per KC block (k0, kc) the
    panel sits at pa_off + k0*Mp + ip*MR*kc, element (r, k) at + k*MR + r. Rows past M are
    zero. k outer, the MR rows inner: MR read streams and one contiguous write stream (a
    row-by-row order would write with stride MR, ~5x slower)."""
    Mp = (M + MR - 1) // MR * MR
    i0 = ip * MR
    mr = min(MR, M - i0)
    for k0 in range(0, K, KC):
        kc = min(KC, K - k0)
        base = pa_off + k0 * Mp + ip * MR * kc
        # full panels index through _u: unsigned indices skip Numba's negative-index
        # wraparound (a compare and select per access, more than the copy itself)
        if mr == MR and not trans:
            for kk in range(kc):
                src = a_off + i0 * lda + k0 + kk
                for r in range(MR):
                    pa[_u(base + kk * MR + r)] = alpha * a[_u(src + r * lda)]
        elif mr == MR:
            for kk in range(kc):
                src = a_off + (k0 + kk) * lda + i0
                for r in range(MR):
                    pa[_u(base + kk * MR + r)] = alpha * a[_u(src + r)]
        else:  # ragged last panel
            for kk in range(kc):
                for r in range(MR):
                    v = np.float32(0.0)
                    if r < mr:
                        if trans:
                            v = alpha * a[a_off + (k0 + kk) * lda + i0 + r]
                        else:
                            v = alpha * a[a_off + (i0 + r) * lda + k0 + kk]
                    pa[base + kk * MR + r] = v


@njit(parallel=True, fastmath=_FM, cache=True)
def _pack_a(a, a_off, a_step, lda, trans, M, K, alpha, pa, pa_off, pa_step, nmat):
    """Pack nmat matrices op(A_m) (A_m from a[a_off + m*a_step]) as GEMM A into
    pa[pa_off + m*pa_step:] (layout: _pack_a_panel), in parallel over (matrix, row panel):
    per call the weights of a conv layer are repacked (AlexNet conv3: 0.9 M floats, a
    sixth of the layer's single-thread time when it ran serially)."""
    npan = (M + MR - 1) // MR
    for it in prange(nmat * npan):
        m = it // npan
        _pack_a_panel(a, a_off + m * a_step, lda, trans, M, K, alpha, pa,
                      pa_off + m * pa_step, it - m * npan)


# B sources for _pack_b; B_PACKED: B is already in _pack_b's layout (_sgemm_block reads it
# in place, no packing)
B_ROWMAJOR, B_TRANS, B_CONV, B_PACKED = 0, 1, 2, 3


@njit(fastmath=_FM, cache=True)
def _pack_b(mode, b, b_off, ldb, geo, k0, kc, j0, nb, pb, ih0, iw0):
    """Pack B rows k0..k0+kc, columns j0..j0+nb into NR-column panels: pb[(jp*kc + kk)*NR + jj].
    Columns past nb are zero. mode B_ROWMAJOR: B[k, j] = b[b_off + k*ldb + j]; B_TRANS:
    B[k, j] = b[b_off + j*ldb + k]; B_CONV (implicit im2col): row k = (c, r, s), column j =
    output pixel (p, q) -> b[b_off + (c*H + p*sh - pt + r*dh)*W + q*sw - pl + s*dw], zero
    outside the input. For B_CONV b is the zero-padded input (``_pad_input``), so the tap
    is b[b_off + (c*Hp + p*sh + r*dh)*Wp + q*sw + s*dw] with no bounds test; geo = (Hp, Wp,
    R, S, Q, sh, sw, pt, pl, dh, dw). ih0 (NC): scratch for per-pixel offsets. Hot loops
    index through _u (no wraparound tests)."""
    npan = (nb + NR - 1) // NR
    if mode == B_ROWMAJOR:
        for jp in range(npan):
            jn = min(NR, nb - jp * NR)
            for kk in range(kc):
                src = b_off + (k0 + kk) * ldb + j0 + jp * NR
                dst = (jp * kc + kk) * NR
                for jj in range(jn):
                    pb[_u(dst + jj)] = b[_u(src + jj)]
                for jj in range(jn, NR):
                    pb[dst + jj] = 0.0
    elif mode == B_TRANS:
        for jp in range(npan):
            jn = min(NR, nb - jp * NR)
            for jj in range(NR):
                if jj < jn:
                    src = b_off + (j0 + jp * NR + jj) * ldb + k0
                    for kk in range(kc):
                        pb[_u((jp * kc + kk) * NR + jj)] = b[_u(src + kk)]
                else:
                    for kk in range(kc):
                        pb[(jp * kc + kk) * NR + jj] = 0.0
    else:
        Hp, Wp, R, S, Q = geo[0], geo[1], geo[2], geo[3], geo[4]
        sh, sw, dh, dw = geo[5], geo[6], geo[9], geo[10]
        for jj in range(npan * NR):  # pixel -> offset of its window's corner in the plane
            j = min(j0 + jj, j0 + nb - 1)
            ih0[jj] = (j // Q) * sh * Wp + (j % Q) * sw
        c0 = k0 // (R * S)
        r0 = (k0 - c0 * R * S) // S
        s0 = k0 - c0 * R * S - r0 * S
        for jp in range(npan):
            jn = min(NR, nb - jp * NR)
            c, r, s = c0, r0, s0  # tap (c, r, s) of row k0 + kk, stepped without divisions
            for kk in range(kc):
                base = b_off + (c * Hp + r * dh) * Wp + s * dw
                dst = (jp * kc + kk) * NR
                for jj in range(NR):
                    pb[_u(dst + jj)] = b[_u(base + ih0[_u(jp * NR + jj)])]
                for jj in range(jn, NR):
                    pb[dst + jj] = 0.0
                s += 1
                if s == S:
                    s = 0
                    r += 1
                    if r == R:
                        r = 0
                        c += 1


@njit(parallel=True, fastmath=_FM, cache=True)
def _pad_input(x, xp, planes, H, W, Hp, Wp, pt, pl):
    """xp (planes, Hp, Wp) = x (planes, H, W) placed at (pt, pl), zeros around it (the
    implicit GEMM then gathers its B panels with no bounds checks)."""
    for c in prange(planes):
        o = c * Hp * Wp
        for i in range(Hp * Wp):
            xp[o + i] = 0.0
        for h in range(H):
            if h + pt < Hp:
                for w in range(min(W, Wp - pl)):
                    xp[o + (h + pt) * Wp + pl + w] = x[(c * H + h) * W + w]


# ----------------------------------------------------------------------------- GEMM


@njit(fastmath=_FM, cache=True)
def _sgemm_block(pa, pa_base, Mp, lda_a, kdim, m0, m1, n0, n1, mode, b, b_off, ldb, geo,
                 y, y_off, ldc, init, relu, simd, pb, tmp, ih0, iw0):
    """Y[m0:m1, n0:n1] (= y[y_off + i*ldc + j]) (+)= A @ B, BLIS loop order.

    lda_a == 0: A packed by _pack_a from pa[pa_base] (Mp = padded rows); lda_a > 0: A is
    row-major in place, A[i, k] = pa[pa_base + i*lda_a + k]. m0 a multiple of MR. init: C
    already holds a value to add to (bias, beta*c); else the first KC block overwrites.
    relu: ReLU fused into the last KC block's store. pb (KC*NC), tmp (MR*NR), ih0/iw0 (NC):
    this work item's private buffers. mode B_PACKED: b holds B packed as _pack_b writes it,
    for columns 0..ldb (a multiple of NR), one KC block after another (block k0 from
    b[b_off + k0*ldb]); the microkernel reads those panels in place."""
    for j0 in range(n0, n1, NC):
        nb = min(NC, n1 - j0)
        npan = (nb + NR - 1) // NR
        a_outer = npan <= 4
        for k0 in range(0, kdim, KC):
            kc = min(KC, kdim - k0)
            if mode == B_PACKED:
                bsrc, pb_base = b, b_off + k0 * ldb + j0 * kc
            else:
                _pack_b(mode, b, b_off, ldb, geo, k0, kc, j0, nb, pb, ih0, iw0)
                bsrc, pb_base = pb, 0
            flags = 0
            if init or k0 > 0:
                flags |= 1
            if relu and k0 + kc >= kdim:
                flags |= 2
            for i0 in range(m0, m1, MC):
                ib = min(MC, m1 - i0)
                nip = (ib + MR - 1) // MR
                for t in range(nip * npan):
                    if a_outer:  # few B panels (<= 4, in L2): each A panel once, from L1
                        ip = t // npan
                        jp = t - ip * npan
                    else:        # B panel in L1, the MC x KC block of A streamed from L2
                        jp = t // nip
                        ip = t - jp * nip
                    jn = min(NR, nb - jp * NR)
                    pb_off = pb_base + jp * NR * kc
                    i = i0 + ip * MR
                    mr = min(MR, m1 - i)
                    if lda_a:
                        pa_off, a_rs, a_ks = pa_base + i * lda_a + k0, lda_a, 1
                    else:
                        pa_off, a_rs, a_ks = pa_base + k0 * Mp + (i // MR) * MR * kc, 1, MR
                    c_off = y_off + i * ldc + j0 + jp * NR
                    if mr == MR and jn == NR:
                        if simd:
                            _ukr_6x16(kc, pa, pa_off, a_rs, a_ks, mr, bsrc, pb_off, y, c_off,
                                      ldc, flags)
                        else:
                            _ukr_6x16_loops(kc, pa, pa_off, a_rs, a_ks, mr, bsrc, pb_off, y,
                                            c_off, ldc, flags)
                    else:  # ragged edge: full tile into tmp, then the valid part
                        if simd:
                            _ukr_6x16(kc, pa, pa_off, a_rs, a_ks, mr, bsrc, pb_off, tmp, 0,
                                      NR, 0)
                        else:
                            _ukr_6x16_loops(kc, pa, pa_off, a_rs, a_ks, mr, bsrc, pb_off, tmp,
                                            0, NR, 0)
                        for r in range(mr):
                            for jj in range(jn):
                                v = tmp[r * NR + jj]
                                idx = c_off + r * ldc + jj
                                if flags & 1:
                                    v += y[idx]
                                if flags & 2 and v <= 0:
                                    v = np.float32(0.0)
                                y[idx] = v


def _grid(M, N, nt):
    """Row x column blocks for nt threads: columns first (B is packed per item), rows when
    the columns run out; blocks aligned to MR / NR."""
    ncols = max(1, min(nt, -(-N // (2 * NR))))
    nrows = max(1, min(-(-nt // ncols), -(-M // MR)))
    return nrows, ncols


@njit(parallel=True, fastmath=_FM, cache=True)
def _sgemm(pa, M, N, K, mode, b, ldb, y, ldc, init, simd, nrows, ncols):
    """y (M x N, row stride ldc) (+)= A_packed @ op(B) over an nrows x ncols grid of work
    items (prange), each with its own B panel buffer."""
    Mp = (M + MR - 1) // MR * MR
    mstep = ((M + nrows - 1) // nrows + MR - 1) // MR * MR
    nstep = ((N + ncols - 1) // ncols + NR - 1) // NR * NR
    geo = np.zeros(11, np.int64)
    for it in prange(nrows * ncols):
        m0 = (it // ncols) * mstep
        n0 = (it % ncols) * nstep
        m1 = min(M, m0 + mstep)
        n1 = min(N, n0 + nstep)
        if m0 < m1 and n0 < n1:
            pb = np.empty(KC * NC, np.float32)
            tmp = np.empty(MR * NR, np.float32)
            ih0 = np.empty(NC, np.int64)
            _sgemm_block(pa, 0, Mp, 0, K, m0, m1, n0, n1, mode, b, 0, ldb, geo, y, 0, ldc,
                         init, False, simd, pb, tmp, ih0, ih0)


def _packed_gemm(a, b, y, alpha, trans_a, trans_b, init, simd=True):
    """y (M, N) (+)= alpha op(a) op(b) with the Numba packed GEMM (a, b 2-D C-contiguous)."""
    M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
    N = b.shape[0] if trans_b else b.shape[1]
    Mp = -(-M // MR) * MR
    pa = np.empty(Mp * K, np.float32)
    _pack_a(a.reshape(-1), 0, 0, a.shape[1], bool(trans_a), M, K, np.float32(alpha), pa, 0,
            0, 1)
    nrows, ncols = _grid(M, N, numba.get_num_threads())
    _sgemm(pa, M, N, K, B_TRANS if trans_b else B_ROWMAJOR, b.reshape(-1), b.shape[1],
           y.reshape(-1), N, bool(init), bool(simd), nrows, ncols)
    return y


@_in_fastconv_threads
def gemm(a, b, c, alpha, beta, trans_a, trans_b, simd=True):
    """y = alpha op(a) op(b) + beta c (ONNX Gemm); c is None or a fresh (M, N) buffer.
    beta * c is applied as written (0 * inf is NaN); alpha is folded into the packed A."""
    M = a.shape[1] if trans_a else a.shape[0]
    N = b.shape[0] if trans_b else b.shape[1]
    if c is None:
        y = np.empty((M, N), np.float32)
        return _packed_gemm(a, b, y, alpha, trans_a, trans_b, False, simd)
    with np.errstate(invalid="ignore", over="ignore"):
        np.multiply(c, np.float32(beta), out=c)
    return _packed_gemm(a, b, c, alpha, trans_a, trans_b, True, simd)


# Up to this many rows (batch-1 fully connected layers), linear is a GEMV: the weight
# matrix is streamed once, straight from where it lies, instead of being packed for the
# GEMM on every call (AlexNet's FC6-8 would pack 234 MB per image). As in the C backend.
GEMV_MAX_ROWS = 8
_GEMV_BLOCK = 16  # output rows per parallel work item


@njit(parallel=True, fastmath=_FM, cache=True)
def _sgemv_multi(x, w, bias, has_bias, y):
    """y (rows, out) = x (rows, in) @ w (out, in).T (+ bias): one pass over w; each weight
    row is reused from cache for every row of x."""
    rows, n_in = x.shape
    n_out = w.shape[0]
    for blk in prange((n_out + _GEMV_BLOCK - 1) // _GEMV_BLOCK):
        for o in range(blk * _GEMV_BLOCK, min(n_out, (blk + 1) * _GEMV_BLOCK)):
            for r in range(rows):
                acc = np.float32(0.0)
                for k in range(n_in):
                    acc += w[o, k] * x[r, k]
                y[r, o] = acc + bias[o] if has_bias else acc


@_in_fastconv_threads
def linear(x, weight, bias):
    """x (rows, in) @ weight (out, in).T + bias. Up to GEMV_MAX_ROWS rows: _sgemv_multi;
    otherwise the packed GEMM with the bias prefilled into y (B = weight^T)."""
    y = np.empty((x.shape[0], weight.shape[0]), np.float32)
    if x.shape[0] <= GEMV_MAX_ROWS:
        has_bias = bias is not None
        _sgemv_multi(x, weight, bias if has_bias else y[0], has_bias, y)
        return y
    if bias is not None:
        y[...] = bias
    return _packed_gemm(x, weight, y, 1.0, False, True, bias is not None)


# ----------------------------------------------------------------------------- conv2d

CONV_ALGORITHMS = ("auto", "direct", "1x1", "implicit", "winograd")


def _is_1x1(p):
    return (p.R == 1 and p.S == 1 and p.stride_h == 1 and p.stride_w == 1 and p.pad_top == 0
            and p.pad_left == 0 and p.P == p.H and p.Q == p.W)


def conv2d_choose(p):
    """The algorithm that ``algorithm="auto"`` runs (fc_conv2d_choose's rules)."""
    Cg, Kg = p.C // p.groups, p.K // p.groups
    if p.groups > 1 and Cg * p.R * p.S <= 9:
        return "direct"
    if _is_1x1(p):
        return "1x1"
    if Kg <= 4:
        return "direct"
    if _winograd_ok(p) and Cg >= 128 and Kg >= 128 and p.N * ((p.P + 1) // 2) * (
            (p.Q + 1) // 2) >= 196:
        return "winograd"
    return "implicit"


@njit(parallel=True, fastmath=_FM, cache=True)
def _conv2d_direct(x, w, bias, has_bias, y, N, C, H, W, K, R, S, P, Q, sh, sw, pt, pl, dh,
                   dw, groups, relu):
    """Tap by tap over whole output rows, one output plane per work item (conv_direct)."""
    Cg = C // groups
    Kg = K // groups
    for nk in prange(N * K):
        n = nk // K
        k = nk % K
        g = k // Kg
        yo = nk * P * Q
        b0 = bias[k] if has_bias else np.float32(0.0)
        for i in range(P * Q):
            y[yo + i] = b0
        for c in range(Cg):
            xo = (n * C + g * Cg + c) * H * W
            for r in range(R):
                # output rows whose tap r lands inside the input
                st = r * dh - pt
                p0 = (-st + sh - 1) // sh if st < 0 else 0
                p1 = 0 if st >= H else min(P, (H - 1 - st) // sh + 1)
                for s in range(S):
                    wv = w[((k * Cg + c) * R + r) * S + s]
                    ss = s * dw - pl
                    q0 = (-ss + sw - 1) // sw if ss < 0 else 0
                    q1 = 0 if ss >= W else min(Q, (W - 1 - ss) // sw + 1)
                    for p in range(p0, p1):
                        xr = xo + (p * sh + st) * W + ss
                        yr = yo + p * Q
                        for q in range(q0, q1):
                            y[yr + q] += wv * x[xr + q * sw]
        if relu:
            for i in range(P * Q):
                v = y[yo + i]
                if v <= 0:
                    y[yo + i] = 0.0


@njit(parallel=True, fastmath=_FM, cache=True)
def _conv2d_gemm(x, w, bias, has_bias, y, N, C, K, PQ, CRS, mode, geo, groups, T, mblk,
                 relu, simd):
    """GEMM per work item (image, group, pixel tile, channel block):
    y[n, g*Kg + rows, tile] = W_g @ B + bias, B = x[n, g] itself (mode B_ROWMAJOR, 1x1) or
    gathered from the input while packing (mode B_CONV, implicit im2col). A = W_g is the
    weight tensor in place, a (Kg, CRS) row-major block: the microkernel reads 6 weight
    rows directly, so the weights are never repacked per call (that copy of K*CRS floats
    cost AlexNet conv3 a seventh of its time, more than the in-place reads lose)."""
    Cg = C // groups
    Kg = K // groups
    ntiles = (PQ + T - 1) // T
    nm = (Kg + mblk - 1) // mblk
    HW = geo[0] * geo[1]  # (padded) plane of the B source
    for it in prange(N * groups * ntiles * nm):
        mi = it % nm
        t = (it // nm) % ntiles
        g = (it // nm // ntiles) % groups
        n = it // nm // ntiles // groups
        m0 = mi * mblk
        m1 = min(Kg, m0 + mblk)
        j0 = t * T
        j1 = min(PQ, j0 + T)
        y_off = (n * K + g * Kg) * PQ
        if has_bias:
            for i in range(m0, m1):
                bv = bias[g * Kg + i]
                for j in range(j0, j1):
                    y[y_off + i * PQ + j] = bv
        pb = np.empty(KC * NC, np.float32)
        tmp = np.empty(MR * NR, np.float32)
        ih0 = np.empty(NC, np.int64)
        iw0 = np.empty(NC, np.int64)
        _sgemm_block(w, g * Kg * CRS, 0, CRS, CRS, m0, m1, j0, j1, mode, x,
                     (n * C + g * Cg) * HW, PQ, geo, y, y_off, PQ, has_bias, relu, simd,
                     pb, tmp, ih0, iw0)


# Winograd F(2x2, 3x3) (winograd.c): per output tile of 2x2 from a 4x4 input patch d,
# y = A^T [ (G g G^T) . (B^T d B) ] A; the elementwise product over the 16 positions and C
# channels is 16 GEMMs (K x C) @ (C x tiles), on the packed GEMM, per block of up to WINO_T
# tiles. Both transforms write straight into the layout their consumer reads (U as packed
# GEMM A, V as packed GEMM B panels), so nothing is repacked; each 4x4 patch lives in
# scalars (a scratch array there is not kept in registers: the transforms then cost as
# much as the GEMMs).
WINO_T = 64
# The 16 V (C x T) and M (K x T) matrices sit WINO_PAD floats apart beyond their size: at
# C*T = 16384 floats (64 KiB, the L2 set stride) all 16 streams of a transform would map to
# the same L1 and L2 sets and evict each other (input transform 2-3x slower).
WINO_PAD = 128


@njit(fastmath=_FM, cache=True)
def _wino_g(a, b, c):
    """G [a b c]^T, G = [[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]]."""
    return a, np.float32(0.5) * (a + b + c), np.float32(0.5) * (a - b + c), c


@njit(fastmath=_FM, cache=True)
def _wino_bt(a, b, c, d):
    """B^T [a b c d]^T, B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]."""
    return a - c, b + c, c - b, b - d


@njit(fastmath=_FM, cache=True)
def _wino_at(a, b, c, d):
    """A^T [a b c d]^T, A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]."""
    return a + b + c, b - c - d


@njit(parallel=True, fastmath=_FM, cache=True)
def _winograd_weights(w, K, C, pa):
    """U[e] (K x C) = (G g G^T)[e] for each (k, c), e < 16, written straight into the
    packed GEMM A layout (_pack_a_panel's, matrix e at pa[e*Mp*C]; rows K..Mp zero), in
    parallel over row panels: no U matrix and no packing pass."""
    Mp = (K + MR - 1) // MR * MR
    for ip in prange(Mp // MR):
        for k0 in range(0, C, KC):
            kc = min(KC, C - k0)
            for kk in range(kc):
                for r in range(MR):
                    dst = k0 * Mp + ip * MR * kc + kk * MR + r
                    k = ip * MR + r
                    if k >= K:
                        for e in range(16):
                            pa[e * Mp * C + dst] = 0.0
                        continue
                    o = (k * C + k0 + kk) * 9
                    # G g: columns j of g -> (t0j, t1j, t2j, t3j)
                    c0 = _wino_g(w[o], w[o + 3], w[o + 6])
                    c1 = _wino_g(w[o + 1], w[o + 4], w[o + 7])
                    c2 = _wino_g(w[o + 2], w[o + 5], w[o + 8])
                    for i in range(4):  # (G g) G^T: row i -> U[4i .. 4i+3]
                        u = _wino_g(c0[i], c1[i], c2[i])
                        for j in range(4):
                            pa[(4 * i + j) * Mp * C + dst] = u[j]


def _wino_block(ntiles, N, nt):
    """Tiles per work item: WINO_T, unless the images alone cannot keep nt threads busy;
    then the smallest multiple of NR (>= 32: narrower GEMMs lose more than an idle thread)
    that makes the (image, block) items a multiple of nt, else WINO_T."""
    if nt <= 1 or N >= 4 * nt:
        return WINO_T
    for T in range(WINO_T, 2 * NR - 1, -NR):
        if (N * -(-ntiles // T)) % nt == 0:
            return T
    return WINO_T


@njit(parallel=True, fastmath=_FM, cache=True)
def _conv2d_winograd(xp, Hp, Wp, pa, bias, has_bias, y, N, C, K, P, Q, T, relu, simd):
    """Blocks of T tiles (a multiple of NR) per work item, from xp: the input zero-padded to
    (N*C, Hp, Wp), tile (ti, tj) reading rows 2ti.. 2ti+3, columns 2tj .. 2tj+3.
    V = B^T d B into packed B panels (per e: C x T, as _pack_b lays them out; tiles past
    the block's last repeat it), 16 GEMMs reading those panels in place into M (16, K, T),
    then the output transform + bias (+ ReLU), clipped at ragged P / Q edges."""
    tQ = (Q + 1) // 2
    ntiles = (P + 1) // 2 * tQ
    nblk = (ntiles + T - 1) // T
    Mp = (K + MR - 1) // MR * MR
    geo = np.zeros(11, np.int64)
    for it in prange(N * nblk):
        n = it // nblk
        t0 = (it % nblk) * T
        tn = min(T, ntiles - t0)
        vs = C * T + WINO_PAD  # stride of the 16 V and M matrices (see WINO_PAD)
        ms = K * T + WINO_PAD
        v = np.empty(16 * vs, np.float32)
        m = np.empty(16 * ms, np.float32)
        d = np.empty(4 * T, np.float32)  # one channel's 2x2 outputs, tile-minor
        tmp = np.empty(MR * NR, np.float32)
        ih0 = np.empty(1, np.int64)
        tpad = (tn + NR - 1) // NR * NR  # columns of the B panels the GEMMs read
        toff = np.empty(T, np.int64)  # tile -> its patch corner in a padded plane
        for tt in range(tpad):
            t = t0 + min(tt, tn - 1)
            toff[tt] = 2 * (t // tQ) * Wp + 2 * (t % tQ)
        for c in range(C):  # channel outer, tiles inner: each of the 16 v streams contiguous
            k0 = c // KC * KC
            kc = min(KC, C - k0)
            vo = k0 * T + (c - k0) * NR  # element (c, tile 0) of the block's B panels
            xo = (n * C + c) * Hp * Wp
            for tt in range(tpad):
                o = xo + toff[tt]
                # B^T d: columns j of the patch
                d0 = _wino_bt(xp[o], xp[o + Wp], xp[o + 2 * Wp], xp[o + 3 * Wp])
                d1 = _wino_bt(xp[o + 1], xp[o + 1 + Wp], xp[o + 1 + 2 * Wp],
                              xp[o + 1 + 3 * Wp])
                d2 = _wino_bt(xp[o + 2], xp[o + 2 + Wp], xp[o + 2 + 2 * Wp],
                              xp[o + 2 + 3 * Wp])
                d3 = _wino_bt(xp[o + 3], xp[o + 3 + Wp], xp[o + 3 + 2 * Wp],
                              xp[o + 3 + 3 * Wp])
                dst = vo + (tt // NR) * kc * NR + tt % NR
                for i in range(4):  # (B^T d) B: row i -> V[4i .. 4i+3]
                    r = _wino_bt(d0[i], d1[i], d2[i], d3[i])
                    for j in range(4):
                        v[(4 * i + j) * vs + dst] = r[j]
        for e in range(16):  # (B_PACKED: no pb scratch; v stands in for it)
            _sgemm_block(pa, e * Mp * C, Mp, 0, C, 0, K, 0, tn, B_PACKED, v, e * vs, T,
                         geo, m, e * ms, T, False, False, simd, v, tmp, ih0, ih0)
        for k in range(K):  # output channel outer: the 16 m streams read contiguously
            b0 = bias[k] if has_bias else np.float32(0.0)
            mo = k * T
            for tt in range(tn):
                # A^T m: columns j of the 4x4 m (m[4i + j] from M[4i + j])
                s0 = _wino_at(m[mo + tt], m[mo + 4 * ms + tt], m[mo + 8 * ms + tt],
                              m[mo + 12 * ms + tt])
                s1 = _wino_at(m[mo + ms + tt], m[mo + 5 * ms + tt], m[mo + 9 * ms + tt],
                              m[mo + 13 * ms + tt])
                s2 = _wino_at(m[mo + 2 * ms + tt], m[mo + 6 * ms + tt],
                              m[mo + 10 * ms + tt], m[mo + 14 * ms + tt])
                s3 = _wino_at(m[mo + 3 * ms + tt], m[mo + 7 * ms + tt],
                              m[mo + 11 * ms + tt], m[mo + 15 * ms + tt])
                for i in range(2):  # (A^T m) A: d[2i + j][tt] = output (i, j) + bias
                    o = _wino_at(s0[i], s1[i], s2[i], s3[i])
                    d[2 * i * T + tt] = o[0] + b0
                    d[(2 * i + 1) * T + tt] = o[1] + b0
            yo = (n * K + k) * P * Q
            for tt in range(tn):  # scatter, clipped at ragged P / Q edges
                t = t0 + tt
                oh = 2 * (t // tQ)
                ow = 2 * (t % tQ)
                for i in range(2):
                    if oh + i < P:
                        for j in range(2):
                            if ow + j < Q:
                                val = d[(2 * i + j) * T + tt]
                                if relu and val <= 0:
                                    val = np.float32(0.0)
                                y[yo + (oh + i) * Q + ow + j] = val


def _winograd_ok(p):
    return (p.R == 3 and p.S == 3 and p.stride_h == 1 and p.stride_w == 1 and p.dil_h == 1
            and p.dil_w == 1 and p.groups == 1)


def _conv_tiles(p, nt):
    """Pixel tile T and channel block for >= 2 work items per thread (as conv_gemm does)."""
    Kg, PQ = p.K // p.groups, p.P * p.Q
    base = p.N * p.groups
    want = -(-2 * nt // base)
    ntiles = max(1, min(want, -(-PQ // (2 * NR)))) if nt > 1 else 1
    T = -(-PQ // ntiles)
    if T > NR:
        T = -(-T // NR) * NR
    ntiles = -(-PQ // T)
    mblk = Kg
    if nt > 1 and base * ntiles < 2 * nt:  # few pixels: split the output channels as well
        nm = min(-(-2 * nt // (base * ntiles)), -(-Kg // (2 * MR)))
        mblk = -(-(-(-Kg // max(nm, 1))) // MR) * MR
    return T, mblk


@_in_fastconv_threads
def conv2d(x, weight, bias, p, activation, algorithm="auto", simd=True):
    """algorithm: a CONV_ALGORITHMS name (tests force one; the public op runs "auto").
    ValueError if it cannot do this shape ("1x1" needs a 1x1 stride-1 unpadded layer)."""
    if algorithm not in CONV_ALGORITHMS:
        raise ValueError(f"unknown conv2d algorithm {algorithm!r}; "
                         f"known: {', '.join(CONV_ALGORITHMS)}")
    if algorithm == "auto":
        algorithm = conv2d_choose(p)
        if algorithm == "winograd" and not all_finite(x, weight):
            algorithm = WINOGRAD_NONFINITE_FALLBACK["numba"]  # see _checks: inf - inf
    if algorithm == "1x1" and not _is_1x1(p):
        raise ValueError(f"conv2d algorithm '1x1' cannot run this shape: {p}")
    if algorithm == "winograd" and not _winograd_ok(p):
        raise ValueError(f"conv2d algorithm 'winograd' cannot run this shape: {p}")
    relu = activation == "relu"
    has_bias = bias is not None
    bias1 = bias if has_bias else np.zeros(1, np.float32)
    y = np.empty(p.out_shape, np.float32)
    xf, wf, yf = x.reshape(-1), weight.reshape(-1), y.reshape(-1)
    if algorithm == "direct":
        _conv2d_direct(xf, wf, bias1, has_bias, yf, p.N, p.C, p.H, p.W, p.K, p.R, p.S, p.P,
                       p.Q, p.stride_h, p.stride_w, p.pad_top, p.pad_left, p.dil_h, p.dil_w,
                       p.groups, relu)
        return y
    Kg, CRS = p.K // p.groups, p.C // p.groups * p.R * p.S
    Mp = -(-Kg // MR) * MR
    if algorithm == "winograd":
        pa = np.empty(16 * Mp * p.C, np.float32)
        _winograd_weights(wf, p.K, p.C, pa)
        # padded so that every tile's 4x4 patch is inside: 2 * tiles + 2 rows / columns
        Hp, Wp = 2 * ((p.P + 1) // 2) + 2, 2 * ((p.Q + 1) // 2) + 2
        xp = np.empty(p.N * p.C * Hp * Wp, np.float32)
        _pad_input(xf, xp, p.N * p.C, p.H, p.W, Hp, Wp, p.pad_top, p.pad_left)
        T = _wino_block(((p.P + 1) // 2) * ((p.Q + 1) // 2), p.N, numba.get_num_threads())
        _conv2d_winograd(xp, Hp, Wp, pa, bias1, has_bias, yf, p.N, p.C, p.K, p.P, p.Q, T,
                         relu, bool(simd))
        return y
    if algorithm == "1x1":
        mode, src, Hp, Wp = B_ROWMAJOR, xf, p.H, p.W
    else:  # implicit GEMM on a zero-padded copy of the input (input-sized, not im2col-sized)
        mode = B_CONV
        Hp = max(p.H + p.pad_top, (p.P - 1) * p.stride_h + (p.R - 1) * p.dil_h + 1)
        Wp = max(p.W + p.pad_left, (p.Q - 1) * p.stride_w + (p.S - 1) * p.dil_w + 1)
        src = np.empty(p.N * p.C * Hp * Wp, np.float32)
        _pad_input(xf, src, p.N * p.C, p.H, p.W, Hp, Wp, p.pad_top, p.pad_left)
    geo = np.array([Hp, Wp, p.R, p.S, p.Q, p.stride_h, p.stride_w, p.pad_top, p.pad_left,
                    p.dil_h, p.dil_w], np.int64)
    T, mblk = _conv_tiles(p, numba.get_num_threads())
    _conv2d_gemm(src, wf, bias1, has_bias, yf, p.N, p.C, p.K, p.P * p.Q, CRS, mode, geo,
                 p.groups, T, mblk, relu, bool(simd))
    return y


# ----------------------------------------------------------------------------- pooling


@njit(parallel=True, fastmath=_FM, cache=True)
def _max_pool2d(x, y, NC_, H, W, P, Q, kh, kw, sh, sw, pt, pl, dh, dw):
    """Max over each window; padding never wins; NaN propagates (v > m or v != v)."""
    for nc in prange(NC_):
        xo = nc * H * W
        yo = nc * P * Q
        for oh in range(P):
            for ow in range(Q):
                m = np.float32(-np.inf)
                for i in range(kh):
                    h = oh * sh - pt + i * dh
                    if h < 0 or h >= H:
                        continue
                    for j in range(kw):
                        w = ow * sw - pl + j * dw
                        if w < 0 or w >= W:
                            continue
                        v = x[xo + h * W + w]
                        if v > m or v != v:
                            m = v
                y[yo + oh * Q + ow] = m


@njit(parallel=True, fastmath=_FM, cache=True)
def _avg_pool2d(x, y, NC_, H, W, P, Q, kh, kw, sh, sw, pt, pl, pb_, pr, include_pad):
    """Mean over each window; the divisor as in the naive spec (count_include_pad rule)."""
    for nc in prange(NC_):
        xo = nc * H * W
        yo = nc * P * Q
        for oh in range(P):
            h0 = oh * sh - pt
            h1 = min(h0 + kh, H + pb_)
            hs = max(h0, 0)
            he = min(h1, H)
            for ow in range(Q):
                w0 = ow * sw - pl
                w1 = min(w0 + kw, W + pr)
                ws = max(w0, 0)
                we = min(w1, W)
                if include_pad:
                    div = (h1 - h0) * (w1 - w0)
                else:
                    div = (he - hs) * (we - ws)
                acc = np.float32(0.0)
                for h in range(hs, he):
                    for w in range(ws, we):
                        acc += x[xo + h * W + w]
                y[yo + oh * Q + ow] = acc / np.float32(div)


@njit(parallel=True, fastmath=_FM, cache=True)
def _global_avg_pool2d(x, y, NC_, L):
    for nc in prange(NC_):
        acc = np.float32(0.0)
        for i in range(L):
            acc += x[nc * L + i]
        y[nc] = acc / np.float32(L)


@_in_fastconv_threads
def max_pool2d(x, p):
    y = np.empty(p.out_shape, np.float32)
    _max_pool2d(x.reshape(-1), y.reshape(-1), p.N * p.C, p.H, p.W, p.P, p.Q, p.kernel_h,
                p.kernel_w, p.stride_h, p.stride_w, p.pad_top, p.pad_left, p.dil_h, p.dil_w)
    return y


@_in_fastconv_threads
def avg_pool2d(x, p):
    y = np.empty(p.out_shape, np.float32)
    _avg_pool2d(x.reshape(-1), y.reshape(-1), p.N * p.C, p.H, p.W, p.P, p.Q, p.kernel_h,
                p.kernel_w, p.stride_h, p.stride_w, p.pad_top, p.pad_left, p.pad_bottom,
                p.pad_right, bool(p.count_include_pad))
    return y


@_in_fastconv_threads
def global_avg_pool2d(x):
    N, C, H, W = x.shape
    y = np.empty((N, C, 1, 1), np.float32)
    _global_avg_pool2d(x.reshape(-1), y.reshape(-1), N * C, H * W)
    return y


# ----------------------------------------------------------------------------- elementwise

_CHUNK = 16384


@njit(parallel=True, fastmath=_FM, cache=True)
def _relu(x, y):
    """max(v, 0): NaN stays NaN, every v <= 0 (-0.0 included) gives +0.0."""
    n = x.shape[0]
    for ch in prange((n + _CHUNK - 1) // _CHUNK):
        for i in range(ch * _CHUNK, min(n, (ch + 1) * _CHUNK)):
            v = x[i]
            y[i] = np.float32(0.0) if v <= 0 else v


@njit(parallel=True, fastmath=_FM, cache=True)
def _softmax(x, y, outer, L, inner):
    """Stable softmax over L of (outer, L, inner): exp(v - max) / sum; a NaN, an all -inf row
    or a +inf in the row give NaN as in the spec (no nnan/ninf fast-math)."""
    for oi in prange(outer * inner):
        o = oi // inner
        i = oi % inner
        base = o * L * inner + i
        m = np.float32(-np.inf)
        for l in range(L):
            v = x[base + l * inner]
            if v > m:
                m = v
        total = np.float32(0.0)
        for l in range(L):
            e = np.exp(x[base + l * inner] - m)
            y[base + l * inner] = e
            total += e
        for l in range(L):
            y[base + l * inner] = y[base + l * inner] / total


@njit(parallel=True, fastmath=_FM, cache=True)
def _lrn(x, y, N, C, L, size, scale, beta, k):
    """x / (k + alpha/size * sum of x^2 over channels c - size//2 .. c + (size-1)//2)^beta."""
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        lo = max(c - size // 2, 0)
        hi = min(c + (size - 1) // 2, C - 1)
        yo = nc * L
        for l in range(L):
            s = np.float32(0.0)
            for cc in range(lo, hi + 1):
                v = x[(n * C + cc) * L + l]
                s += v * v
            y[yo + l] = x[yo + l] / (k + scale * s) ** beta


@njit(parallel=True, fastmath=_FM, cache=True)
def _batch_norm(x, y, N, C, L, mean, var, weight, bias, eps):
    """(x - mean) / sqrt(var + eps) * weight + bias per channel."""
    for nc in prange(N * C):
        c = nc % C
        std = np.sqrt(var[c] + eps)
        m, wv, bv = mean[c], weight[c], bias[c]
        for l in range(nc * L, (nc + 1) * L):
            y[l] = (x[l] - m) / std * wv + bv


@_in_fastconv_threads
def relu(x):
    y = np.empty(x.shape, np.float32)
    _relu(x.reshape(-1), y.reshape(-1))
    return y


@_in_fastconv_threads
def softmax(x):
    y = np.empty(x.shape, np.float32)
    _softmax(x.reshape(-1), y.reshape(-1), *x.shape)
    return y


@_in_fastconv_threads
def local_response_norm(x, size, alpha, beta, k):
    y = np.empty(x.shape, np.float32)
    N, C, L = x.shape
    _lrn(x.reshape(-1), y.reshape(-1), N, C, L, int(size),
         np.float32(np.float32(alpha) / np.float32(size)), np.float32(beta), np.float32(k))
    return y


@_in_fastconv_threads
def batch_norm(x, mean, var, weight, bias, eps):
    y = np.empty(x.shape, np.float32)
    N, C, L = x.shape
    _batch_norm(x.reshape(-1), y.reshape(-1), N, C, L, mean, var, weight, bias,
                np.float32(eps))
    return y


# ----------------------------------------------------------------------------- threads


def set_num_threads(n):
    """numba.set_num_threads(n) in the calling thread, clamped to 1 .. NUMBA_NUM_THREADS."""
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)


def build_info():
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        layer = f"not yet chosen (NUMBA_THREADING_LAYER={numba.config.THREADING_LAYER})"
    return {"numba": numba.__version__, "numba_threading_layer": layer,
            "numba_threads": numba.get_num_threads(),
            "numba_max_threads": numba.config.NUMBA_NUM_THREADS}
