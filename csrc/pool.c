/* pool.c -- max / average / global-average pooling, NCHW, parallel over N*C planes.
 *
 * Variants inside, and why:
 *   fc_max_pool2d         dilated windows clipped to the input (padding acts as -inf, so
 *                         skipping it is the same); NaN propagates (PyTorch semantics).
 *                         Both pools are separable: fold the window's rows into a row
 *                         buffer (contiguous, vectorises), then the columns (kh*W + kw*Q
 *                         operations per output row rather than kh*kw*Q strided ones).
 *                         AVX2: each plane runs with plain max_ps and is rerun with a
 *                         NaN-propagating max when MXCSR's invalid flag says it held a NaN
 *                         (pool_op); 3x3/2 without padding (AlexNet) and 3x3/1 "same"
 *                         (GoogLeNet) have register-only kernels.
 *   fc_avg_pool2d         count_include_pad: divisor = window clipped to the padded input
 *                         [-pad_top, H+pad_bottom) x [-pad_left, W+pad_right) (PyTorch's rule,
 *                         which matters for ceil_mode windows running past the padding);
 *                         otherwise divisor = the number of real input elements.
 *   fc_global_avg_pool2d  one reduction per plane, 16 partial sums so it vectorises
 *                         without -ffast-math; AVX2: eight planes at a time, reduced
 *                         together by one transposed sum.
 */
#include "fastconv.h"

#include <math.h>
#include <stdlib.h>

/* The average divisor's factor along one axis for the window [start, start + k): clipped
   to the padded input [-pad_begin, size + pad_end) with count_include_pad (PyTorch's rule;
   start never lies before -pad_begin), else to the input [0, size). */
static inline int64_t avg_span(int64_t start, int64_t k, int64_t size, int64_t pad_end,
                               int count_include_pad)
{
    int64_t end = start + k;
    if (end > size + pad_end) end = size + pad_end;
    if (count_include_pad) return end - start;
    if (start < 0) start = 0;
    if (end > size) end = size;
    return end - start;
}

/* Separable windows: a 2-D max (or sum) is a max over the window's rows of a max over
   its columns. For each output row we first fold the kh input rows of the window into
   one row buffer (contiguous loads, vectorises), then fold kw taps of that buffer per
   output (stride_w apart, but from L1). That is kh*W + kw*Q operations per output row
   instead of kh*kw*Q strided ones. Each thread owns one W-float row buffer. */

static inline float max_nan(float v, float m) { return (v > m || v != v) ? v : m; }

/* yr[q] = max (or sum) over taps j of row[q*sw + j*dw - pl], taps outside [0, W) skipped.
   Always inlined and called with sw = 1 / 2 as literals, so the strided loads become
   constant-stride ones that the compiler vectorises (shuffles for stride 2). */
static inline __attribute__((always_inline)) void
fold_columns(const float *row, float *yr, int64_t Q, int64_t W, int64_t kw, int64_t sw,
             int64_t dw, int64_t pl, int is_max)
{
    for (int64_t q = 0; q < Q; ++q) yr[q] = is_max ? -INFINITY : 0.0f;
    for (int64_t j = 0; j < kw; ++j) {
        int64_t q0, q1;
        valid_range(j * dw - pl, sw, Q, W, &q0, &q1);
        const float *rj = row + j * dw - pl;
        if (is_max) {
#pragma omp simd
            for (int64_t q = q0; q < q1; ++q) yr[q] = max_nan(rj[q * sw], yr[q]);
        } else {
#pragma omp simd
            for (int64_t q = q0; q < q1; ++q) yr[q] += rj[q * sw];
        }
    }
}

static inline __attribute__((always_inline)) void fold_columns_any(const float *row, float *yr, int64_t Q, int64_t W, int64_t kw,
                             int64_t sw, int64_t dw, int64_t pl, int is_max)
{
    if (sw == 1)
        fold_columns(row, yr, Q, W, kw, 1, dw, pl, is_max);
    else if (sw == 2)
        fold_columns(row, yr, Q, W, kw, 2, dw, pl, is_max);
    else
        fold_columns(row, yr, Q, W, kw, sw, dw, pl, is_max);
}

#if FC_X86
/* ---------------------------------------------------------------- AVX2 paths
   Same separable scheme, hand-vectorised: the folded row lives in a buffer with the
   padding value (-inf for max, 0 for sums) on both sides, so the column fold needs no
   per-tap range clipping: tap j of output q reads buf[q*sw + j*dw] (buf[pl] is x column 0).
   Row tails use masked loads/stores (the masked-off lanes leave the padding untouched);
   output tails are masked stores. Column taps: stride 1 plain loads, stride 2 two loads
   deinterleaved with shuffle + permute, larger strides a gather. */

/* Floats of the padded row buffer: reads reach (Q+8)*sw + kw*dw (+16 for the stride-2 pair). */
static int64_t pool_buf_len(int64_t W, int64_t Q, int64_t kw, int64_t sw, int64_t dw, int64_t pl)
{
    return pl + W + (Q + 8) * sw + kw * dw + 32;
}

/* Software prefetch distance (floats) of the row folds: the rows are short and interleaved,
   which the hardware prefetchers follow poorly from L3. */
#define POOL_PF 512

/* Output rows per block: row-fold a block of rows into separate buffers (about 16 KiB),
   then column-fold them, so the column loads never wait on the row stores. */
static int64_t pool_block_rows(int64_t bl, int64_t P)
{
    int64_t b = 4096 / bl;
    if (b > P) b = P;
    return b < 1 ? 1 : b;
}

/* Tap of 8 consecutive outputs starting at p (stride sw between outputs). */
FC_TARGET_AVX2 static inline __m256 tap8(const float *p, int64_t sw, __m256i gidx)
{
    if (sw == 1) return _mm256_loadu_ps(p);
    if (sw == 2) {
        __m256 e = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8),
                                     _MM_SHUFFLE(2, 0, 2, 0));
        return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8));
    }
    return _mm256_i32gather_ps(p, gidx, 4);
}

/* Whether a max_ps saw a NaN since the last call: MXCSR's sticky invalid-operation flag
   (bit 0), which this clears. Read after a noinline function returns, so its max_ps have
   all run; a flag left by other code only costs a needless rerun. */
static inline int fp_invalid_take(void)
{
    const unsigned csr = _mm_getcsr();
    if (!(csr & 1u)) return 0;
    _mm_setcsr(csr & ~1u);
    return 1;
}

/* The fold of a pooling window. IS_MAX: 0 a sum; 1 a NaN-propagating max; 2 a plain max_ps,
   a third of nanmax's instructions: it drops a NaN in its first operand, but raises MXCSR's
   invalid flag for any NaN operand, quiet ones too, and fc_max_pool2d reruns a plane that
   raised it with IS_MAX = 1. */
FC_TARGET_AVX2 static inline __attribute__((always_inline)) __m256
pool_op(__m256 a, __m256 b, const int IS_MAX)
{
    return IS_MAX == 2 ? _mm256_max_ps(a, b)
           : IS_MAX    ? fc_avx2_nanmax(a, b)
                       : _mm256_add_ps(a, b);
}

/* Floats a[1..7], b[0] (a shifted left by one, b's first lane coming in) and a[-1] in the
   same sense: c[7], a[0..6]. Two in-lane alignr around one cross-lane permute each. */
FC_TARGET_AVX2 static inline __m256 shift_in_right(__m256 a, __m256 ab)
{   /* ab = permute2f128(a, b, 0x21) = (a.hi, b.lo) */
    return _mm256_castsi256_ps(_mm256_alignr_epi8(_mm256_castps_si256(ab),
                                                  _mm256_castps_si256(a), 4));
}
FC_TARGET_AVX2 static inline __m256 shift_in_left(__m256 a, __m256 ca)
{   /* ca = permute2f128(c, a, 0x21) = (c.hi, a.lo) */
    return _mm256_castsi256_ps(_mm256_alignr_epi8(_mm256_castps_si256(a),
                                                  _mm256_castps_si256(ca), 12));
}

/* 3-wide, stride-1 columns with one column of padding each side and Q == W (the "same"
   3x3/1 pool of GoogLeNet / Inception): no row buffer. Each 8-column vector of the folded
   row stays in a register; the taps q-1, q, q+1 are it and its neighbours shifted in by one
   lane (the padding value beyond the row), so an output vector costs the kh input loads
   and no buffer traffic. The row tail's vector is stored whole where that stays inside the
   plane (it spills into the next output rows, written after it; no masked store). */
FC_TARGET_AVX2 static inline __attribute__((always_inline)) void
pool_k3s1_t(const float *xp, float *yp, int64_t H, int64_t W, int64_t P, int64_t kh,
            int64_t sh, int64_t pt, int64_t pb, int64_t dh, int count_include_pad,
            const float *rc, const int IS_MAX, const int KH)
{
    const int64_t nv = (W + 7) / 8, qp = nv * 8;
    const __m256i wmask = fc_avx2_tailmask(W - (nv - 1) * 8);
    const __m256 pad = _mm256_set1_ps(IS_MAX ? -INFINITY : 0.0f), zero = _mm256_setzero_ps();
    for (int64_t p = 0; p < P; ++p) {
        const int64_t h0 = p * sh - pt;
        int64_t i0, i1;
        valid_range(h0, dh, kh, H, &i0, &i1);
        const float *r0 = xp + (h0 + i0 * dh) * W;
        const int64_t nr = i1 - i0, rs = dh * W;
        /* the divisor's reciprocals for this row (rowspan as in the portable path) */
        const float *rcp =
            IS_MAX ? rc : rc + avg_span(p * sh - pt, kh, H, pb, count_include_pad) * qp;
        /* row-folded vector k (columns 8k..8k+7; the padding value from column W on) */
#define ROWV(k, out)                                                                        \
        do {                                                                                \
            const int64_t w_ = (k) * 8;                                                     \
            if (nr <= 0) out = pad;                                                         \
            else if (w_ + 8 <= W) {                                                         \
                __m256 m_ = _mm256_loadu_ps(r0 + w_);                                       \
                /* the newest row only: the others were the newest of earlier output rows */ \
                _mm_prefetch((const char *)(r0 + (nr - 1) * rs + w_ + POOL_PF), _MM_HINT_T0); \
                if (KH && nr == KH)                                                         \
                    for (int i_ = 1; i_ < KH; ++i_)                                         \
                        m_ = pool_op(m_, _mm256_loadu_ps(r0 + i_ * rs + w_), IS_MAX);       \
                else                                                                        \
                    for (int64_t i_ = 1; i_ < nr; ++i_)                                     \
                        m_ = pool_op(m_, _mm256_loadu_ps(r0 + i_ * rs + w_), IS_MAX);       \
                out = m_;                                                                   \
            } else {                                                                        \
                __m256 m_ = _mm256_maskload_ps(r0 + w_, wmask);                             \
                for (int64_t i_ = 1; i_ < nr; ++i_)                                         \
                    m_ = pool_op(m_, _mm256_maskload_ps(r0 + i_ * rs + w_, wmask), IS_MAX); \
                out = _mm256_blendv_ps(pad, m_, _mm256_castsi256_ps(wmask));               \
            }                                                                               \
        } while (0)
        __m256 cur, nxt, lt = _mm256_permute2f128_ps(pad, pad, 0x21);
        ROWV(0, cur);
        lt = _mm256_permute2f128_ps(pad, cur, 0x21);
        float *yr = yp + p * W;
        for (int64_t k = 0; k < nv; ++k) {
            if (k + 1 < nv) ROWV(k + 1, nxt);
            else nxt = pad;
            const __m256 rt = _mm256_permute2f128_ps(cur, nxt, 0x21);
            /* taps in order: column q-1, q, q+1 */
            __m256 m = pool_op(pool_op(shift_in_left(cur, lt), cur, IS_MAX),
                               shift_in_right(cur, rt), IS_MAX);
            if (!IS_MAX) /* "+ 0": the portable path's +0 start (see pool_plane_t) */
                m = _mm256_fmadd_ps(m, _mm256_loadu_ps(rcp + 8 * k), zero);
            if (p * W + 8 * k + 8 <= P * W) _mm256_storeu_ps(yr + 8 * k, m);
            else _mm256_maskstore_ps(yr + 8 * k, wmask, m);
            lt = rt;
            cur = nxt;
        }
#undef ROWV
    }
}

/* Lanes l of 8 with lo <= l < hi. */
FC_TARGET_AVX2 static inline __m256i lanes_in(int64_t lo, int64_t hi)
{
    const __m256i l = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_and_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)hi), l),
                            _mm256_cmpgt_epi32(l, _mm256_set1_epi32((int)lo - 1)));
}

/* h[c] = op(r[c-1], r[c], r[c+1]) for 8 columns of one row, from three unaligned loads of
   the row. Taps that may leave the row are masked loads (EL: the left tap, ER: the right,
   EC: all three, for W < 8) whose lanes outside the row read the padding value, and which
   touch nothing outside the plane. */
FC_TARGET_AVX2 static inline __attribute__((always_inline)) __m256
k3_row(const float *r, __m256i lm, __m256i cm, __m256i rm, __m256 pad, const int IS_MAX,
       const int EL, const int ER, const int EC)
{
#define K3_TAP(off, E, msk)                                                                 \
    (!(E) ? _mm256_loadu_ps(r + (off))                                                      \
          : IS_MAX ? _mm256_blendv_ps(pad, _mm256_maskload_ps(r + (off), msk),              \
                                      _mm256_castsi256_ps(msk))                             \
                   : _mm256_maskload_ps(r + (off), msk))
    return pool_op(pool_op(K3_TAP(-1, EL || EC, lm), K3_TAP(0, EC, cm), IS_MAX),
                   K3_TAP(1, ER || EC, rm), IS_MAX);
#undef K3_TAP
}

/* NS (1..4) strips of 8 output columns from c[0] < c[1] < ..., walked down together (less
   loop overhead, a row's stores close together), output rows [p0, p1): with h of the
   window's rows in registers, y[p] = op(h[p-pt], h[p-pt+1], h[p-pt+2]) (h of rows outside
   the plane: the padding value). The first strip's left tap and the last one's right tap
   are masked (full masks inside the row), EC: all taps and the store (W < 8, one strip).
   Average: times the reciprocal of the divisor, 1 / cdiv when all windows share it (UNI),
   else rc[rowspan(p) * qp + q] (as pool_plane_t); an FMA with +0 so a -0 sum gives +0, as
   the portable path's sums from +0 do. (Software prefetch of the input or, for writing,
   the output a plane or two ahead was no faster in an A/B timing from L3.) */
FC_TARGET_AVX2 static inline __attribute__((always_inline)) void
k3s1_strips(const float *xp, float *yp, int64_t H, int64_t W, const int64_t *c, int64_t p0,
            int64_t p1, int64_t pt, int64_t pb, int count_include_pad, const float *rc,
            int64_t qp, float cdiv, const int IS_MAX, const int UNI, const int NS,
            const int EC)
{
    const __m256 pad = _mm256_set1_ps(IS_MAX ? -INFINITY : 0.0f), zero = _mm256_setzero_ps();
    const __m256 rcd = _mm256_set1_ps(1.0f / cdiv);
    const int64_t cl = c[NS - 1];
    const __m256i lm = lanes_in(1 - c[0], W + 1 - c[0]), cm = lanes_in(-c[0], W - c[0]),
                  rm = lanes_in(-1 - cl, W - 1 - cl);
    /* h of row r for strip k */
#define K3_ROW(k, r)                                                                        \
    k3_row(xp + c[k] + (r) * W, lm, cm, rm, pad, IS_MAX, (k) == 0, (k) == NS - 1, EC)
#define K3_H(k, r) ((r) >= 0 && (r) < H ? K3_ROW(k, r) : pad)
    /* one row step of every strip (the row checked when CHK): op, scale, store */
#define K3_STEP(CHK)                                                                        \
    do {                                                                                    \
        const int64_t r_ = p - pt + 2;                                                      \
        for (int k = 0; k < NS; ++k) {                                                      \
            const __m256 hc = CHK ? K3_H(k, r_) : K3_ROW(k, r_);                            \
            __m256 m = pool_op(pool_op(ha[k], hb[k], IS_MAX), hc, IS_MAX);                  \
            if (!IS_MAX)                                                                    \
                m = _mm256_fmadd_ps(m, UNI ? rcd : _mm256_loadu_ps(rc + c[k] + qp *        \
                                    avg_span(p - pt, 3, H, pb, count_include_pad)), zero);  \
            if (EC) _mm256_maskstore_ps(yp + p * W + c[k], cm, m);                          \
            else _mm256_storeu_ps(yp + p * W + c[k], m);                                    \
            ha[k] = hb[k], hb[k] = hc;                                                      \
        }                                                                                   \
    } while (0)
    __m256 ha[4], hb[4];
    for (int k = 0; k < NS; ++k) ha[k] = K3_H(k, p0 - pt), hb[k] = K3_H(k, p0 - pt + 1);
    /* the window's last row p - pt + 2 lies inside the plane for p in [lo, hi): no checks */
    const int64_t lo = pt - 2 < p0 ? p0 : pt - 2 > p1 ? p1 : pt - 2;
    const int64_t hi = H + pt - 2 < lo ? lo : H + pt - 2 > p1 ? p1 : H + pt - 2;
    int64_t p = p0;
    for (; p < lo; ++p) K3_STEP(1);
    for (; p < hi; ++p) K3_STEP(0);
    for (; p < p1; ++p) K3_STEP(1);
#undef K3_STEP
#undef K3_H
#undef K3_ROW
}

/* 3x3, stride 1, dilation 1, one column of padding each side and Q == W (the "same" 3x3/1
   pool of GoogLeNet / Inception): columns first, straight from the input (three unaligned
   loads per row and strip, k3_row), then the rows in registers down strips of 8 columns,
   up to four at a time (k3s1_strips): no buffer, no store-to-load traffic. Strips at
   columns 0, 8, ..., and W - 8 for a ragged W >= 8 (overlapping: the same values again);
   W < 8 one masked strip. Output rows in blocks whose input stays in L1 across the block's
   strips. The sums add the taps of each row, then the rows (the portable path: rows, then
   taps; equal up to rounding). UNI: every window's divisor is cdiv. */
FC_TARGET_AVX2 static inline __attribute__((always_inline)) void
pool_k3s1_same_t(const float *xp, float *yp, int64_t H, int64_t W, int64_t P, int64_t pt,
                 int64_t pb, int count_include_pad, const float *rc, float cdiv,
                 const int IS_MAX, const int UNI)
{
    const int64_t qp = (W + 7) & ~(int64_t)7, ns = (W + 7) / 8;
    int64_t pbk = 4096 / W - 2; /* (rows + 2) * W floats: 16 KiB */
    if (pbk < 8) pbk = 8;
    for (int64_t p0 = 0; p0 < P; p0 += pbk) {
        const int64_t p1 = p0 + pbk < P ? p0 + pbk : P;
        for (int64_t g = 0; g < ns; g += 4) { /* strips g .. g+3, strip k at min(8k, W-8) */
            int64_t c[4];
            const int n = ns - g < 4 ? (int)(ns - g) : 4;
            for (int k = 0; k < n; ++k) c[k] = 8 * (g + k) + 8 <= W ? 8 * (g + k) : W - 8;
#define K3_STRIPS(NS, EC)                                                                   \
            k3s1_strips(xp, yp, H, W, c, p0, p1, pt, pb, count_include_pad, rc, qp, cdiv, \
                        IS_MAX, UNI, NS, EC)
            if (W < 8) c[0] = 0, K3_STRIPS(1, 1);
            else if (n == 4) K3_STRIPS(4, 0);
            else if (n == 3) K3_STRIPS(3, 0);
            else if (n == 2) K3_STRIPS(2, 0);
            else K3_STRIPS(1, 0);
#undef K3_STRIPS
        }
    }
}

/* Its own function (not inlined into pool_plane_t): the strips' loops get the registers. */
FC_TARGET_AVX2 __attribute__((noinline)) static void
pool_k3s1_same(const float *xp, float *yp, int64_t H, int64_t W, int64_t P, int64_t pt,
               int64_t pb, int count_include_pad, const float *rc, float cdiv, int is_max)
{
    if (is_max == 2)
        pool_k3s1_same_t(xp, yp, H, W, P, pt, pb, count_include_pad, rc, cdiv, 2, 0);
    else if (is_max)
        pool_k3s1_same_t(xp, yp, H, W, P, pt, pb, count_include_pad, rc, cdiv, 1, 0);
    else if (cdiv != 0.0f)
        pool_k3s1_same_t(xp, yp, H, W, P, pt, pb, count_include_pad, rc, cdiv, 0, 1);
    else
        pool_k3s1_same_t(xp, yp, H, W, P, pt, pb, count_include_pad, rc, cdiv, 0, 0);
}

/* 3x3 max pool, stride 2, no padding or dilation (AlexNet / ZFNet pool1..5, GoogLeNet).
   Output row p reads input rows 2p..2p+2, so a pass does rows p and p+1, which share row
   2p+2 (5 row loads, not 6), and keeps them paired in the two 128-bit lanes of a vector:
   lane 0 row p, lane 1 row p+1, four outputs each. Every shuffle of the column fold then
   stays inside a lane (two per cycle on Zen 3; the cross-lane ones issue once per cycle).
     - Per 8-column vector: v = the max of the window's rows, for each row of the pair.
     - Pair them (two cross-lane permutes) and split even / odd columns in-lane:
       E = v[c], v[c+2], v[c+4], v[c+6] and O = v[c+1], v[c+3], ... per lane.
     - out[q] = max(v[2q], v[2q+1], v[2q+2]) = max(E, O, E shifted by one), the shift
       taking the next vector's first even column (one in-lane alignr).
   NaN: max_ps alone drops a NaN in its first operand, and a check per load cost a fifth of
   the kernel. But every input element is an operand of some max_ps, and max_ps raises the
   invalid-operation flag in MXCSR for any NaN operand, quiet ones too (a compare would
   not). So the kernel checks nothing: fc_max_pool2d reads the flag after the plane and
   reruns a flagged plane with the NaN-propagating max (pool_op). Returns the output rows
   done: those whose window lies inside the plane; the rest run past the bottom and take
   the generic path. */
FC_TARGET_AVX2 static inline __attribute__((always_inline)) void
k3s2_pair_eo(__m256 v0, __m256 v1, __m256 *E, __m256 *O)
{   /* v0, v1: columns c..c+7 of rows p, p+1 */
    const __m256 a = _mm256_permute2f128_ps(v0, v1, 0x20), b = _mm256_permute2f128_ps(v0, v1, 0x31);
    *E = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    *O = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
}

/* Four outputs of each row of the pair from columns c..c+8: E, O of c..c+7, En of c+8.. */
FC_TARGET_AVX2 static inline __attribute__((always_inline)) __m256
k3s2_out(__m256 E, __m256 O, __m256 En)
{
    const __m256 e2 = _mm256_castsi256_ps(
        _mm256_alignr_epi8(_mm256_castps_si256(En), _mm256_castps_si256(E), 4));
    return _mm256_max_ps(_mm256_max_ps(E, O), e2);
}

/* E, O of 8-column vector k for a pass reading rows r0, r0+W, r2, r2+S, r2+2S (S = 0 for a
   lone last row): the last vector masked (lanes from W on -inf), -inf beyond it. */
FC_TARGET_AVX2 static inline __attribute__((always_inline)) void
k3s2_cols_checked(const float *r0, const float *r2, int64_t W, int64_t S, int64_t k,
                  int64_t nv, __m256i wmask, __m256 *E, __m256 *O)
{
    const __m256 pad = _mm256_set1_ps(-INFINITY);
    if (k >= nv) {
        *E = *O = pad;
        return;
    }
    const float *a = r0 + 8 * k, *b = r2 + 8 * k;
    __m256 v0, v1;
    if (k + 1 < nv) {
        const __m256 l2 = _mm256_loadu_ps(b);
        v0 = _mm256_max_ps(_mm256_max_ps(_mm256_loadu_ps(a), _mm256_loadu_ps(a + W)), l2);
        v1 = _mm256_max_ps(_mm256_max_ps(l2, _mm256_loadu_ps(b + S)), _mm256_loadu_ps(b + 2 * S));
    } else { /* masked-off lanes read 0, then become -inf */
        const __m256 l2 = _mm256_maskload_ps(b, wmask), keep = _mm256_castsi256_ps(wmask);
        v0 = _mm256_max_ps(_mm256_max_ps(_mm256_maskload_ps(a, wmask),
                                         _mm256_maskload_ps(a + W, wmask)), l2);
        v1 = _mm256_max_ps(_mm256_max_ps(l2, _mm256_maskload_ps(b + S, wmask)),
                           _mm256_maskload_ps(b + 2 * S, wmask));
        v0 = _mm256_blendv_ps(pad, v0, keep), v1 = _mm256_blendv_ps(pad, v1, keep);
    }
    k3s2_pair_eo(v0, v1, E, O);
}

/* Output rows p, p+1 (y0, y0 + Q) from input rows r0..r0+4W with whole loads and stores:
   the caller makes sure the loads (8 * nq + 8 floats of each row, past the row's end into
   the next rows) and the stores (4 * nq floats of each output row) stay inside the plane.
   Lanes read past the row only reach outputs q >= Q when 2Q <= W - 1; with 2Q == W
   (ceil_mode) output Q-1 reads column W, which the fix-up at the end takes as -inf. */
FC_TARGET_AVX2 static inline __attribute__((always_inline)) void
k3s2_fast_pass(const float *r0, float *y0, int64_t W, int64_t Q, int64_t nq)
{
    const float *r1 = r0 + W, *r2 = r1 + W, *r3 = r2 + W, *r4 = r3 + W;
    float *y1 = y0 + Q;
    __m256 E, O, En, On;
#define K3S2_EO(c, E_, O_)                                                                   \
    do {                                                                                     \
        const __m256 l2 = _mm256_loadu_ps(r2 + (c));                                         \
        k3s2_pair_eo(                                                                        \
            _mm256_max_ps(_mm256_max_ps(_mm256_loadu_ps(r0 + (c)), _mm256_loadu_ps(r1 + (c))), \
                          l2),                                                               \
            _mm256_max_ps(_mm256_max_ps(l2, _mm256_loadu_ps(r3 + (c))),                      \
                          _mm256_loadu_ps(r4 + (c))),                                        \
            &E_, &O_);                                                                       \
    } while (0)
#define K3S2_STORE(j, o)                                                                     \
    do {                                                                                     \
        _mm_storeu_ps(y0 + 4 * (j), _mm256_castps256_ps128(o));                              \
        _mm_storeu_ps(y1 + 4 * (j), _mm256_extractf128_ps(o, 1));                            \
    } while (0)
    K3S2_EO(0, E, O);
    K3S2_EO(8, En, On);
    __m256 o = k3s2_out(E, O, En);
    _mm_storeu_ps(y0, _mm256_castps256_ps128(o));
    const __m128 first1 = _mm256_extractf128_ps(o, 1); /* stored last: row p's tail spills on it */
    int64_t j = 1;
    for (; j + 2 <= nq; j += 2) { /* two steps a trip: E, O and En, On swap roles */
        K3S2_EO(8 * j + 8, E, O);
        o = k3s2_out(En, On, E);
        K3S2_STORE(j, o);
        K3S2_EO(8 * j + 16, En, On);
        o = k3s2_out(E, O, En);
        K3S2_STORE(j + 1, o);
    }
    if (j < nq) {
        K3S2_EO(8 * j + 8, E, O);
        o = k3s2_out(En, On, E);
        K3S2_STORE(j, o);
    }
#undef K3S2_STORE
#undef K3S2_EO
    _mm_storeu_ps(y1, first1);
    if (2 * Q == W) { /* output Q-1's window is columns W-2, W-1 and the -inf past the edge */
        for (int i = 0; i < 2; ++i) {
            const float *r = r0 + 2 * i * W + W - 2;
            float m = r[0];
            for (int t = 0; t < 3; ++t) {
                m = r[t * W] > m ? r[t * W] : m;
                m = r[t * W + 1] > m ? r[t * W + 1] : m;
            }
            y0[i * Q + Q - 1] = m;
        }
    }
}

FC_TARGET_AVX2 __attribute__((noinline)) static int64_t
pool_max_k3s2(const float *xp, float *yp, int64_t H, int64_t W, int64_t P, int64_t Q)
{
    const int64_t pf = P < (H - 1) / 2 ? P : (H - 1) / 2; /* rows with 2p + 2 <= H - 1 */
    const int64_t nv = (W + 7) / 8, nq = (Q + 3) / 4;
    int64_t p = 0;
    /* fast passes while their loads (rows 2p..2p+4 and 8 * nq + 8 floats from the start of
       row 2p+4) and stores (rows p, p+1 to 4 * nq floats) stay inside the plane */
    if (Q >= 4 && 2 * Q <= W)
        for (; p + 2 <= pf && (2 * p + 4) * W + 8 * nq + 8 <= H * W &&
               (p + 1) * Q + 4 * nq <= P * Q;
             p += 2)
            k3s2_fast_pass(xp + 2 * p * W, yp + p * Q, W, Q, nq);
    const __m256i wmask = fc_avx2_tailmask(W - 8 * (nv - 1));
    const __m128i qmask = _mm256_castsi256_si128(fc_avx2_tailmask(Q - 4 * (nq - 1)));
    for (; p < pf; p += 2) { /* the rest: masked loads, stores checked against the plane's end */
        const int two = p + 1 < pf;
        const float *r0 = xp + 2 * p * W, *r2 = r0 + 2 * W;
        float *y0 = yp + p * Q, *y1 = y0 + Q;
        __m256 E, O, En, On;
        __m128 first1 = _mm_setzero_ps();
        /* a lone last row pairs with itself (S = 0); its lane 1 is dropped */
        k3s2_cols_checked(r0, r2, W, two ? W : 0, 0, nv, wmask, &E, &O);
        for (int64_t j = 0; j < nq; ++j) {
            k3s2_cols_checked(r0, r2, W, two ? W : 0, j + 1, nv, wmask, &En, &On);
            const __m256 o = k3s2_out(E, O, En);
            const __m128 lo = _mm256_castps256_ps128(o), hi = _mm256_extractf128_ps(o, 1);
            if (p * Q + 4 * j + 4 <= P * Q) _mm_storeu_ps(y0 + 4 * j, lo);
            else _mm_maskstore_ps(y0 + 4 * j, qmask, lo);
            if (two && j == 0) first1 = hi;
            else if (two && (p + 1) * Q + 4 * j + 4 <= P * Q) _mm_storeu_ps(y1 + 4 * j, hi);
            else if (two) _mm_maskstore_ps(y1 + 4 * j, qmask, hi);
            E = En, O = On;
        }
        if (two && Q >= 4 && (p + 1) * Q + 4 <= P * Q) _mm_storeu_ps(y1, first1);
        else if (two) _mm_maskstore_ps(y1, _mm256_castsi256_si128(fc_avx2_tailmask(Q)), first1);
    }
    return pf;
}

/* One plane of max (IS_MAX) or average pooling. buf: pbk row buffers of bl floats, the
   padding value (-inf for max, 0 for sums) outside [pl, pl+W) of each.
   Average: dh = dw = 1; the divisor of output (p, q) is rowspan(p) * colspan(q) as in the
   portable path, which multiplies by its reciprocal too: rc[rowspan * qp + q] =
   1 / (rowspan * colspan(q)) (qp: Q rounded up to 8; rc padded with 1); cdiv: the divisor
   when all outputs share it, else 0. The product is within an ulp of the quotient and
   cheaper (a divide issues once per 3.5+ cycles on Zen 3). Sums run in the portable path's
   order: the rows of a column in order, then the taps in order; the portable path starts
   both folds from +0, which only turns a -0 sum into +0: the scaling FMA's "+ 0" does the
   same.
   Always inlined into the instances below with KH, KW, SW literal (0: take kh, kw, sw), so
   the common shapes get unrolled taps and no stride branch. Output rows go in blocks of pbk:
   row-fold the block into its buffers, then column-fold them (the column loads never wait
   on the row stores). */
FC_TARGET_AVX2 static inline __attribute__((always_inline)) void
pool_plane_t(const float *xp, float *yp, int64_t H, int64_t W, int64_t P, int64_t Q, int64_t kh,
             int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t pb,
             int64_t dh, int64_t dw, int count_include_pad, const float *rc,
             float cdiv, float *buf, int64_t bl, int64_t pbk, const int IS_MAX, const int KH,
             const int KW, const int SW)
{
    if (KH) kh = KH;
    if (KW) kw = KW, dw = 1;
    if (SW) sw = SW;
    if (!IS_MAX) dh = dw = 1;
    if (KH == 3 && KW == 3 && SW == 1 && pl == 1 && Q == W && sh == 1 && dh == 1) {
        pool_k3s1_same(xp, yp, H, W, P, pt, pb, count_include_pad, rc, cdiv, IS_MAX);
        return;
    }
    if (IS_MAX == 2 && KH == 3 && KW == 3 && SW == 2 && sh == 2 && dh == 1 && pt == 0 &&
        pl == 0) {
        const int64_t done = pool_max_k3s2(xp, yp, H, W, P, Q);
        if (done == P) return;
        /* the rest (windows running past the bottom) as a plane of its own below */
        xp += 2 * done * W, yp += done * Q, H -= 2 * done, P -= done;
    }
    if (KW == 3 && SW == 1 && pl == 1 && Q == W) {
        pool_k3s1_t(xp, yp, H, W, P, kh, sh, pt, pb, dh, count_include_pad, rc, IS_MAX, KH);
        return;
    }
    const int64_t wv = W & ~(int64_t)7, qv = Q & ~(int64_t)7, qp = (Q + 7) & ~(int64_t)7;
    const __m256i wmask = fc_avx2_tailmask(W - wv), qmask = fc_avx2_tailmask(Q - qv);
    const __m256i gidx = _mm256_mullo_epi32(_mm256_set1_epi32((int)sw),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 pad = _mm256_set1_ps(IS_MAX ? -INFINITY : 0.0f), zero = _mm256_setzero_ps();
    for (int64_t p0 = 0; p0 < P; p0 += pbk) {
      const int64_t p1 = p0 + pbk < P ? p0 + pbk : P;
      for (int64_t p = p0; p < p1; ++p) {
        float *row = buf + (p - p0) * bl + pl;
        const int64_t h0 = p * sh - pt;
        int64_t i0, i1;
        valid_range(h0, dh, kh, H, &i0, &i1);
        const float *r0 = xp + (h0 + i0 * dh) * W;
        const int64_t nr = i1 - i0, rs = dh * W;
        /* fold the window's rows into row[0, W) */
        if (nr <= 0) {
            for (int64_t w = 0; w < wv; w += 8) _mm256_storeu_ps(row + w, pad);
            if (wv < W) _mm256_maskstore_ps(row + wv, wmask, pad);
        } else {
            int64_t w = 0;
            if (KH && nr == KH) /* interior rows: taps unrolled */
                for (; w < wv; w += 8) {
                    __m256 m = _mm256_loadu_ps(r0 + w);
                    _mm_prefetch((const char *)(r0 + w + POOL_PF), _MM_HINT_T0);
                    for (int i = 1; i < KH; ++i) {
                        _mm_prefetch((const char *)(r0 + i * rs + w + POOL_PF), _MM_HINT_T0);
                        m = pool_op(m, _mm256_loadu_ps(r0 + i * rs + w), IS_MAX);
                    }
                    _mm256_storeu_ps(row + w, m);
                }
            for (; w < wv; w += 8) {
                __m256 m = _mm256_loadu_ps(r0 + w);
                for (int64_t i = 1; i < nr; ++i)
                    m = pool_op(m, _mm256_loadu_ps(r0 + i * rs + w), IS_MAX);
                _mm256_storeu_ps(row + w, m);
            }
            if (w < W && W >= 8) { /* tail: the last 8 columns again, overlapping */
                w = W - 8;
                __m256 m = _mm256_loadu_ps(r0 + w);
                for (int64_t i = 1; i < nr; ++i)
                    m = pool_op(m, _mm256_loadu_ps(r0 + i * rs + w), IS_MAX);
                _mm256_storeu_ps(row + w, m);
            } else if (w < W) {
                __m256 m = _mm256_maskload_ps(r0 + w, wmask);
                for (int64_t i = 1; i < nr; ++i)
                    m = pool_op(m, _mm256_maskload_ps(r0 + i * rs + w, wmask), IS_MAX);
                _mm256_maskstore_ps(row + w, wmask, m);
            }
        }
      }
      /* fold the columns of the block's rows (stored a while ago: no store-forwarding
         stalls on the overlapping unaligned loads): y[q] = op_j buf[q*sw + j*dw] */
      for (int64_t p = p0; p < p1; ++p) {
        float *yr = yp + p * Q;
        const float *rcp =
            IS_MAX ? rc : rc + avg_span(p * sh - pt, kh, H, pb, count_include_pad) * qp;
        /* Q % 8 tail: when Q >= 8 the last 8 outputs again, overlapping (a masked store
           costs ~20 cycles on Zen 3), else a masked store */
        for (int64_t q = 0; q < Q; q = Q < 8 || q + 16 <= Q || q + 8 >= Q ? q + 8 : Q - 8) {
            const float *b = buf + (p - p0) * bl + q * sw;
            __m256 m = tap8(b, sw, gidx);
            for (int64_t j = 1; j < kw; ++j) m = pool_op(m, tap8(b + j * dw, sw, gidx), IS_MAX);
            if (!IS_MAX) /* "+ 0" as above */
                m = _mm256_fmadd_ps(m, _mm256_loadu_ps(rcp + q), zero);
            if (q < qv) _mm256_storeu_ps(yr + q, m);
            else _mm256_maskstore_ps(yr + q, qmask, m);
        }
      }
    }
}

/* noinline: fc_max_pool2d reads MXCSR after it returns, when all its max_ps have run. */
FC_TARGET_AVX2 __attribute__((noinline)) static void
pool_plane_avx2(const float *xp, float *yp, int64_t H, int64_t W, int64_t P, int64_t Q,
                int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl,
                int64_t pb, int64_t dh, int64_t dw, int count_include_pad, const float *rc,
                float cdiv, float *buf, int64_t bl, int64_t pbk, int is_max)
{
#define POOLP(m, a, b, c)                                                                  \
    pool_plane_t(xp, yp, H, W, P, Q, kh, kw, sh, sw, pt, pl, pb, dh, dw, count_include_pad, \
                 rc, cdiv, buf, bl, pbk, m, a, b, c)
#define POOL_SHAPES(m)                                                                     \
    if (dw == 1 && kh == 3 && kw == 3 && sw == 2) POOLP(m, 3, 3, 2);                       \
    else if (dw == 1 && kh == 2 && kw == 2 && sw == 2) POOLP(m, 2, 2, 2);                  \
    else if (dw == 1 && kh == 3 && kw == 3 && sw == 1) POOLP(m, 3, 3, 1);                  \
    else if (sw == 1) POOLP(m, 0, 0, 1);                                                   \
    else if (sw == 2) POOLP(m, 0, 0, 2);                                                   \
    else POOLP(m, 0, 0, 0);
    if (is_max == 2) {
        POOL_SHAPES(2)
    } else if (is_max) {
        POOL_SHAPES(1)
    } else {
        POOL_SHAPES(0)
    }
#undef POOL_SHAPES
#undef POOLP
}
#endif

/* One plane of the portable path (max when is_max, else average): fold the window's rows
   into row[0, W) (padding is -inf for max and 0 for the sums), fold the columns, and for
   the average divide by rowspan(p) * colspan[q]. Always inlined with is_max a literal, so
   each caller (and each of its target clones) gets its own straight-line loops. */
static inline __attribute__((always_inline)) void
pool_plane_portable(const float *xp, float *yp, int64_t H, int64_t W, int64_t P, int64_t Q,
                    int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl,
                    int64_t pb, int64_t dh, int64_t dw, int count_include_pad,
                    const float *colspan, float *row, int is_max)
{
    for (int64_t p = 0; p < P; ++p) {
        float *yr = yp + p * Q;
        const int64_t h0 = p * sh - pt;
        int64_t i0, i1;
        valid_range(h0, dh, kh, H, &i0, &i1);
        for (int64_t w = 0; w < W; ++w) row[w] = is_max ? -INFINITY : 0.0f;
        for (int64_t i = i0; i < i1; ++i) {
            const float *xr = xp + (h0 + i * dh) * W;
            if (is_max) {
#pragma omp simd
                for (int64_t w = 0; w < W; ++w) row[w] = max_nan(xr[w], row[w]);
            } else {
#pragma omp simd
                for (int64_t w = 0; w < W; ++w) row[w] += xr[w];
            }
        }
        fold_columns_any(row, yr, Q, W, kw, sw, dw, pl, is_max);
        if (!is_max) {
            /* divisor = rows x columns, both exact small integers in float; times its
               reciprocal, as the AVX2 path (within an ulp of the quotient) */
            const float rowspan = (float)avg_span(h0, kh, H, pb, count_include_pad);
#pragma omp simd
            for (int64_t q = 0; q < Q; ++q) yr[q] = yr[q] * (1.0f / (rowspan * colspan[q]));
        }
    }
}

/* x (N,C,H,W) -> y (N,C,P,Q). Returns 0, or -1 if a row buffer cannot be allocated. */
FC_CLONES int fc_max_pool2d(const float *x, float *y, int64_t N, int64_t C, int64_t H,
                            int64_t W, int64_t P, int64_t Q, int64_t kh, int64_t kw,
                            int64_t stride_h, int64_t stride_w, int64_t pad_top,
                            int64_t pad_left, int64_t dil_h, int64_t dil_w)
{
    int nt = fc_threads_for(N * C * P * Q * kh * kw, 16 * 1024);
    int failed = 0;
#if FC_X86
    if (fc_isa() >= FC_ISA_AVX2) {
        const int64_t bl = pool_buf_len(W, Q, kw, stride_w, dil_w, pad_left);
        const int64_t pbk = pool_block_rows(bl, P);
#pragma omp parallel num_threads(nt) reduction(| : failed)
        {
            /* the planes find NaNs through MXCSR's invalid flag (pool_op, IS_MAX = 2):
               exceptions masked, flags cleared, the caller's MXCSR back at the end */
            const unsigned csr = _mm_getcsr();
            _mm_setcsr((csr | 0x1f80u) & ~0x3fu);
            float *buf = fc_alloc_floats(bl * pbk);
            failed = buf == NULL;
            for (int64_t i = 0; buf && i < bl * pbk; ++i) buf[i] = -INFINITY;
#pragma omp for schedule(static)
            for (int64_t nc = 0; nc < N * C; ++nc) {
                if (!buf) continue;
#define POOL_MAX_PLANE(mode)                                                                \
    pool_plane_avx2(x + nc * H * W, y + nc * P * Q, H, W, P, Q, kh, kw, stride_h, stride_w,  \
                    pad_top, pad_left, 0, dil_h, dil_w, 0, NULL, 0.0f, buf, bl, pbk, mode)
                POOL_MAX_PLANE(2); /* plain max_ps */
                if (fp_invalid_take()) { /* the plane holds a NaN: again, NaN-propagating */
                    POOL_MAX_PLANE(1);
                    fp_invalid_take();
                }
#undef POOL_MAX_PLANE
            }
            fc_free(buf);
            _mm_setcsr(csr);
        }
        return failed ? -1 : 0;
    }
#endif
#pragma omp parallel num_threads(nt) reduction(| : failed)
    {
        float *row = fc_alloc_floats(W);
        failed = row == NULL;
#pragma omp for schedule(static)
        for (int64_t nc = 0; nc < N * C; ++nc)
            if (row)
                pool_plane_portable(x + nc * H * W, y + nc * P * Q, H, W, P, Q, kh, kw,
                                    stride_h, stride_w, pad_top, pad_left, 0, dil_h, dil_w, 0,
                                    NULL, row, 1);
        fc_free(row);
    }
    return failed ? -1 : 0;
}

/* x (N,C,H,W) -> y (N,C,P,Q). Returns 0, or -1 if a row buffer cannot be allocated. */
FC_CLONES int fc_avg_pool2d(const float *x, float *y, int64_t N, int64_t C, int64_t H,
                            int64_t W, int64_t P, int64_t Q, int64_t kh, int64_t kw,
                            int64_t stride_h, int64_t stride_w, int64_t pad_top,
                            int64_t pad_left, int64_t pad_bottom, int64_t pad_right,
                            int count_include_pad)
{
    int nt = fc_threads_for(N * C * P * Q * kh * kw, 16 * 1024);
    int failed = 0;
#if FC_X86
    if (fc_isa() >= FC_ISA_AVX2) {
        const int64_t bl = pool_buf_len(W, Q, kw, stride_w, 1, pad_left);
        const int64_t pbk = pool_block_rows(bl, P), qp = (Q + 7) & ~(int64_t)7;
        const int64_t nb = bl * pbk + qp * (kh + 1);
        /* cdiv: the divisor when every window has the same one (else 0) */
        int64_t rs0 = -1, cs0 = -1, same = 1;
        for (int64_t p = 0; p < P && same; ++p) {
            const int64_t r = avg_span(p * stride_h - pad_top, kh, H, pad_bottom,
                                       count_include_pad);
            same = rs0 < 0 || r == rs0;
            rs0 = r;
        }
        for (int64_t q = 0; q < Q && same; ++q) {
            const int64_t c = avg_span(q * stride_w - pad_left, kw, W, pad_right,
                                       count_include_pad);
            same = cs0 < 0 || c == cs0;
            cs0 = c;
        }
        const float cdiv = same && rs0 > 0 && cs0 > 0 ? (float)rs0 * (float)cs0 : 0.0f;
#pragma omp parallel num_threads(nt) reduction(| : failed)
        {
            /* pbk row buffers (0 outside the row), then the reciprocals of the divisors
               rc[rowspan * qp + q] for rowspan 0..kh (padding lanes 1) */
            float *buf = fc_alloc_floats(nb);
            failed = buf == NULL;
            if (buf) {
                float *rc = buf + bl * pbk;
                for (int64_t i = 0; i < nb; ++i) buf[i] = i < bl * pbk ? 0.0f : 1.0f;
                for (int64_t q = 0; q < Q; ++q) {
                    const float cs = (float)avg_span(q * stride_w - pad_left, kw, W, pad_right,
                                                     count_include_pad);
                    for (int64_t r = 0; r <= kh; ++r) rc[r * qp + q] = 1.0f / ((float)r * cs);
                }
            }
#pragma omp for schedule(static)
            for (int64_t nc = 0; nc < N * C; ++nc)
                if (buf)
                    pool_plane_avx2(x + nc * H * W, y + nc * P * Q, H, W, P, Q, kh, kw,
                                    stride_h, stride_w, pad_top, pad_left, pad_bottom, 1, 1,
                                    count_include_pad, buf + bl * pbk, cdiv, buf, bl, pbk, 0);
            fc_free(buf);
        }
        return failed ? -1 : 0;
    }
#endif
#pragma omp parallel num_threads(nt) reduction(| : failed)
    {
        /* row buffer (W) + the divisor's column factor per output column (Q) */
        float *row = fc_alloc_floats(W + Q), *colspan = row ? row + W : NULL;
        failed = row == NULL;
        for (int64_t q = 0; row && q < Q; ++q) {
            colspan[q] = (float)avg_span(q * stride_w - pad_left, kw, W, pad_right,
                                         count_include_pad);
        }
#pragma omp for schedule(static)
        for (int64_t nc = 0; nc < N * C; ++nc)
            if (row)
                pool_plane_portable(x + nc * H * W, y + nc * P * Q, H, W, P, Q, kh, kw,
                                    stride_h, stride_w, pad_top, pad_left, pad_bottom, 1, 1,
                                    count_include_pad, colspan, row, 0);
        fc_free(row);
    }
    return failed ? -1 : 0;
}

/* x (N,C,H,W) -> y (N,C,1,1) */
#if FC_X86
/* Lane p of the result: the sum of a[p]'s 8 lanes (an 8 x 8 transpose folded into the adds:
   in-lane unpacks and shuffles, then one cross-lane pair). */
FC_TARGET_AVX2 static inline __m256 gap_sum8(const __m256 *a)
{
    __m256 t[4];
    for (int j = 0; j < 4; ++j) /* per 128-bit lane: a0+a2, b0+b2, a1+a3, b1+b3 */
        t[j] = _mm256_add_ps(_mm256_unpacklo_ps(a[2 * j], a[2 * j + 1]),
                             _mm256_unpackhi_ps(a[2 * j], a[2 * j + 1]));
    const __m256 u0 = _mm256_add_ps(_mm256_shuffle_ps(t[0], t[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                    _mm256_shuffle_ps(t[0], t[1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m256 u1 = _mm256_add_ps(_mm256_shuffle_ps(t[2], t[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                    _mm256_shuffle_ps(t[2], t[3], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                         _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* Planes [n0, n1). With HW >= 8, eight planes at a time: one 8-lane sum per plane (the whole
   vectors, then the plane's last 8 floats again with the lanes already counted zeroed, so no
   masked load), the eight reduced together by gap_sum8 and stored as one vector: about a
   quarter of the instructions of one horizontal sum per plane (ResNet's 7 x 7 planes). The
   rest one plane at a time: two partial sums, masked tail, horizontal add. */
FC_TARGET_AVX2 static void gap_avx2(const float *x, float *y, int64_t n0, int64_t n1, int64_t HW)
{
    const int64_t hv = HW & ~(int64_t)7;
    const __m256i tm = fc_avx2_tailmask(HW - hv);
    int64_t nc = n0;
    if (HW >= 8) {
        /* lanes 8 - HW % 8 .. 7 of the last 8 floats are the ones past the whole vectors */
        const __m256 keep = _mm256_castsi256_ps(
            _mm256_cmpgt_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                               _mm256_set1_epi32((int)(7 - (HW - hv)))));
        const __m256 vhw = _mm256_set1_ps((float)HW);
        for (; nc + 8 <= n1; nc += 8) {
            const float *xb = x + nc * HW;
            __m256 acc[8];
            for (int p = 0; p < 8; ++p) acc[p] = _mm256_loadu_ps(xb + p * HW);
            for (int64_t i = 8; i < hv; i += 8)
                for (int p = 0; p < 8; ++p)
                    acc[p] = _mm256_add_ps(acc[p], _mm256_loadu_ps(xb + p * HW + i));
            if (hv < HW)
                for (int p = 0; p < 8; ++p)
                    acc[p] = _mm256_add_ps(
                        acc[p], _mm256_and_ps(_mm256_loadu_ps(xb + p * HW + HW - 8), keep));
            _mm256_storeu_ps(y + nc, _mm256_div_ps(gap_sum8(acc), vhw));
        }
    }
    for (; nc < n1; ++nc) {
        const float *xp = x + nc * HW;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        int64_t i = 0;
        for (; i + 16 <= hv; i += 16) {
            a0 = _mm256_add_ps(a0, _mm256_loadu_ps(xp + i));
            a1 = _mm256_add_ps(a1, _mm256_loadu_ps(xp + i + 8));
        }
        if (i < hv) a0 = _mm256_add_ps(a0, _mm256_loadu_ps(xp + i));
        if (hv < HW) a1 = _mm256_add_ps(a1, _mm256_maskload_ps(xp + hv, tm));
        y[nc] = fc_avx2_hsum(_mm256_add_ps(a0, a1)) / (float)HW;
    }
}
#endif

FC_CLONES void fc_global_avg_pool2d(const float *x, float *y, int64_t N, int64_t C, int64_t HW)
{
    int nt = fc_threads_for(N * C * HW, 32 * 1024);
#if FC_X86
    if (fc_isa() >= FC_ISA_AVX2) {
        /* even contiguous plane ranges per thread */
#pragma omp parallel num_threads(nt)
        {
            const int64_t t = fc_omp_thread_num(), T = fc_omp_num_threads(), NC = N * C;
            gap_avx2(x, y, NC * t / T, NC * (t + 1) / T, HW);
        }
        return;
    }
#endif
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t nc = 0; nc < N * C; ++nc) {
        const float *xp = x + nc * HW;
        float acc[16] = {0};
        int64_t i = 0;
        for (; i + 16 <= HW; i += 16)
            for (int l = 0; l < 16; ++l) acc[l] += xp[i + l];
        float s = 0.0f;
        for (; i < HW; ++i) s += xp[i];
        for (int l = 0; l < 16; ++l) s += acc[l];
        y[nc] = s / (float)HW;
    }
}
