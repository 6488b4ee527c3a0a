/* pool.c -- max / average / global-average pooling, NCHW, parallel over N*C planes.
 *
 * Variants inside, and why:
 *   fc_max_pool2d         dilated windows clipped to the input (padding acts as -inf, so
 *                         skipping it is the same); NaN propagates (PyTorch semantics).
 *                         Both pools are separable: fold the window's rows into a row
 *                         buffer (contiguous, vectorises), then the columns (kh*W + kw*Q
 *                         operations per output row rather than kh*kw*Q strided ones).
 *   fc_avg_pool2d         count_include_pad: divisor = window clipped to the padded input
 *                         [-pad_top, H+pad_bottom) x [-pad_left, W+pad_right) (PyTorch's rule,
 *                         which matters for ceil_mode windows running past the padding);
 *                         otherwise divisor = the number of real input elements.
 *   fc_global_avg_pool2d  one reduction per plane, 16 partial sums so it vectorises
 *                         without -ffast-math.
 */
#include "fastconv.h"

#include <math.h>
#include <stdlib.h>

/* Indices u in [0, count) with 0 <= start + u*step < limit form [*lo, *hi). */
static void valid_range(int64_t start, int64_t step, int64_t count, int64_t limit,
                        int64_t *lo, int64_t *hi)
{
    int64_t l = start < 0 ? (-start + step - 1) / step : 0;
    int64_t h = start >= limit ? 0 : (limit - 1 - start) / step + 1;
    if (h > count) h = count;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
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

/* One plane of max pooling. buf: pool_buf_len floats, all -inf outside [pl, pl+W).
   Always inlined into the instances below with KH, KW, SW literal (0: take kh, kw, sw), so
   the common shapes get unrolled taps and no stride branch. */
FC_TARGET_AVX2 static inline __attribute__((always_inline)) void
max_plane_t(const float *xp, float *yp, int64_t H, int64_t W, int64_t P, int64_t Q, int64_t kh,
            int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw,
            float *buf, int64_t bl, int64_t pbk, const int KH, const int KW, const int SW)
{
    if (KH) kh = KH;
    if (KW) kw = KW, dw = 1;
    if (SW) sw = SW;
    const int64_t wv = W & ~(int64_t)7, qv = Q & ~(int64_t)7;
    const __m256i wmask = fc_avx2_tailmask(W - wv), qmask = fc_avx2_tailmask(Q - qv);
    const __m256i gidx = _mm256_mullo_epi32(_mm256_set1_epi32((int)sw),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
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
            for (int64_t w = 0; w < wv; w += 8) _mm256_storeu_ps(row + w, ninf);
            if (wv < W) _mm256_maskstore_ps(row + wv, wmask, ninf);
        } else {
            int64_t w = 0;
            if (KH && nr == KH) /* interior rows: taps unrolled */
                for (; w < wv; w += 8) {
                    __m256 m = _mm256_loadu_ps(r0 + w);
                    _mm_prefetch((const char *)(r0 + w + POOL_PF), _MM_HINT_T0);
                    for (int i = 1; i < KH; ++i) {
                        _mm_prefetch((const char *)(r0 + i * rs + w + POOL_PF), _MM_HINT_T0);
                        m = fc_avx2_nanmax(m, _mm256_loadu_ps(r0 + i * rs + w));
                    }
                    _mm256_storeu_ps(row + w, m);
                }
            for (; w < wv; w += 8) {
                __m256 m = _mm256_loadu_ps(r0 + w);
                for (int64_t i = 1; i < nr; ++i)
                    m = fc_avx2_nanmax(m, _mm256_loadu_ps(r0 + i * rs + w));
                _mm256_storeu_ps(row + w, m);
            }
            if (w < W) {
                __m256 m = _mm256_maskload_ps(r0 + w, wmask);
                for (int64_t i = 1; i < nr; ++i)
                    m = fc_avx2_nanmax(m, _mm256_maskload_ps(r0 + i * rs + w, wmask));
                _mm256_maskstore_ps(row + w, wmask, m);
            }
        }
      }
      /* fold the columns of the block's rows (stored a while ago: no store-forwarding
         stalls on the overlapping unaligned loads): y[q] = max_j buf[q*sw + j*dw] */
      for (int64_t p = p0; p < p1; ++p) {
        float *yr = yp + p * Q;
        for (int64_t q = 0; q < Q; q += 8) {
            const float *b = buf + (p - p0) * bl + q * sw;
            __m256 m = tap8(b, sw, gidx);
            for (int64_t j = 1; j < kw; ++j) m = fc_avx2_nanmax(m, tap8(b + j * dw, sw, gidx));
            if (q < qv) _mm256_storeu_ps(yr + q, m);
            else _mm256_maskstore_ps(yr + q, qmask, m);
        }
      }
    }
}

FC_TARGET_AVX2 static void max_plane_avx2(const float *xp, float *yp, int64_t H, int64_t W,
                                          int64_t P, int64_t Q, int64_t kh, int64_t kw,
                                          int64_t sh, int64_t sw, int64_t pt, int64_t pl,
                                          int64_t dh, int64_t dw, float *buf, int64_t bl,
                                          int64_t pbk)
{
#define MAXP(a, b, c) \
    max_plane_t(xp, yp, H, W, P, Q, kh, kw, sh, sw, pt, pl, dh, dw, buf, bl, pbk, a, b, c)
    if (dw == 1 && kh == 3 && kw == 3 && sw == 2) MAXP(3, 3, 2);
    else if (dw == 1 && kh == 2 && kw == 2 && sw == 2) MAXP(2, 2, 2);
    else if (dw == 1 && kh == 3 && kw == 3 && sw == 1) MAXP(3, 3, 1);
    else if (sw == 1) MAXP(0, 0, 1);
    else if (sw == 2) MAXP(0, 0, 2);
    else MAXP(0, 0, 0);
#undef MAXP
}

/* One plane of average pooling (sums; the divisor as in the portable path). buf: 0 outside
   [pl, pl+W). colspan: the divisor's column factor per output column. */
FC_TARGET_AVX2 static void avg_plane_avx2(const float *xp, float *yp, int64_t H, int64_t W,
                                          int64_t P, int64_t Q, int64_t kh, int64_t kw,
                                          int64_t sh, int64_t sw, int64_t pt, int64_t pl,
                                          int64_t pb, int count_include_pad, float *buf,
                                          const float *colspan)
{
    float *row = buf + pl;
    const int64_t wv = W & ~(int64_t)7, qv = Q & ~(int64_t)7;
    const __m256i wmask = fc_avx2_tailmask(W - wv), qmask = fc_avx2_tailmask(Q - qv);
    const __m256i gidx = _mm256_mullo_epi32(_mm256_set1_epi32((int)sw),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 zero = _mm256_setzero_ps();
    for (int64_t p = 0; p < P; ++p) {
        int64_t hs = p * sh - pt, he = hs + kh;
        if (he > H + pb) he = H + pb;
        const int64_t hspan = he - hs;
        if (hs < 0) hs = 0;
        if (he > H) he = H;
        const float *r0 = xp + hs * W;
        const int64_t nr = he - hs;
        int64_t w = 0;
        for (; w < wv; w += 8) { /* 0 + rows in order, as the portable path */
            __m256 s = zero;
            for (int64_t i = 0; i < nr; ++i) s = _mm256_add_ps(s, _mm256_loadu_ps(r0 + i * W + w));
            _mm256_storeu_ps(row + w, s);
        }
        if (w < W) {
            __m256 s = zero;
            for (int64_t i = 0; i < nr; ++i)
                s = _mm256_add_ps(s, _mm256_maskload_ps(r0 + i * W + w, wmask));
            _mm256_maskstore_ps(row + w, wmask, s);
        }
        const __m256 rowspan = _mm256_set1_ps((float)(count_include_pad ? hspan : he - hs));
        float *yr = yp + p * Q;
        for (int64_t q = 0; q < Q; q += 8) {
            const float *b = buf + q * sw;
            __m256 s = zero;
            for (int64_t j = 0; j < kw; ++j) s = _mm256_add_ps(s, tap8(b + j, sw, gidx));
            const __m256 cs = q < qv ? _mm256_loadu_ps(colspan + q)
                                     : _mm256_maskload_ps(colspan + q, qmask);
            /* masked-off lanes divide by 0 * rowspan; they are not stored */
            s = _mm256_div_ps(s, _mm256_mul_ps(rowspan, cs));
            if (q < qv) _mm256_storeu_ps(yr + q, s);
            else _mm256_maskstore_ps(yr + q, qmask, s);
        }
    }
}
#endif

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
            float *buf = fc_alloc_floats(bl * pbk);
            failed = buf == NULL;
            for (int64_t i = 0; buf && i < bl * pbk; ++i) buf[i] = -INFINITY;
#pragma omp for schedule(static)
            for (int64_t nc = 0; nc < N * C; ++nc)
                if (buf)
                    max_plane_avx2(x + nc * H * W, y + nc * P * Q, H, W, P, Q, kh, kw, stride_h,
                                   stride_w, pad_top, pad_left, dil_h, dil_w, buf, bl, pbk);
            fc_free(buf);
        }
        return failed ? -1 : 0;
    }
#endif
#pragma omp parallel num_threads(nt) reduction(| : failed)
    {
        float *row = fc_alloc_floats(W);
        failed = row == NULL;
#pragma omp for schedule(static)
        for (int64_t nc = 0; nc < N * C; ++nc) {
            if (!row) continue;
            const float *xp = x + nc * H * W;
            float *yp = y + nc * P * Q;
            for (int64_t p = 0; p < P; ++p) {
                const int64_t h0 = p * stride_h - pad_top;
                int64_t i0, i1;
                valid_range(h0, dil_h, kh, H, &i0, &i1);
                for (int64_t w = 0; w < W; ++w) row[w] = -INFINITY; /* padding is -inf */
                for (int64_t i = i0; i < i1; ++i) {
                    const float *xr = xp + (h0 + i * dil_h) * W;
#pragma omp simd
                    for (int64_t w = 0; w < W; ++w) row[w] = max_nan(xr[w], row[w]);
                }
                fold_columns_any(row, yp + p * Q, Q, W, kw, stride_w, dil_w, pad_left, 1);
            }
        }
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
    const int avx2 = fc_isa() >= FC_ISA_AVX2;
#else
    const int avx2 = 0;
#endif
    const int64_t bl = avx2 ? pool_buf_len(W, Q, kw, stride_w, 1, pad_left) : W;
#pragma omp parallel num_threads(nt) reduction(| : failed)
    {
        /* row buffer (W) + the divisor's column factor per output column (Q) */
        float *row = fc_alloc_floats(bl + Q + 8), *colspan = row ? row + bl : NULL;
        failed = row == NULL;
        for (int64_t i = 0; row && i < bl + Q + 8; ++i) row[i] = 0.0f;
        for (int64_t q = 0; row && q < Q; ++q) {
            int64_t ws = q * stride_w - pad_left, we = ws + kw;
            if (we > W + pad_right) we = W + pad_right;
            const int64_t wspan = we - ws; /* columns inside the padded input */
            if (ws < 0) ws = 0;
            if (we > W) we = W;
            colspan[q] = (float)(count_include_pad ? wspan : we - ws);
        }
#pragma omp for schedule(static)
        for (int64_t nc = 0; nc < N * C; ++nc) {
            if (!row) continue;
            const float *xp = x + nc * H * W;
            float *yp = y + nc * P * Q;
#if FC_X86
            if (avx2) {
                avg_plane_avx2(xp, yp, H, W, P, Q, kh, kw, stride_h, stride_w, pad_top,
                               pad_left, pad_bottom, count_include_pad, row, colspan);
                continue;
            }
#endif
            for (int64_t p = 0; p < P; ++p) {
                float *yr = yp + p * Q;
                int64_t hs = p * stride_h - pad_top, he = hs + kh;
                if (he > H + pad_bottom) he = H + pad_bottom;
                const int64_t hspan = he - hs; /* rows of the window inside the padded input */
                if (hs < 0) hs = 0;
                if (he > H) he = H;
                for (int64_t w = 0; w < W; ++w) row[w] = 0.0f;
                for (int64_t h = hs; h < he; ++h) {
                    const float *xr = xp + h * W;
#pragma omp simd
                    for (int64_t w = 0; w < W; ++w) row[w] += xr[w];
                }
                fold_columns_any(row, yr, Q, W, kw, stride_w, 1, pad_left, 0);
                /* divisor = rows x columns, both exact small integers in float */
                const float rowspan = (float)(count_include_pad ? hspan : he - hs);
#pragma omp simd
                for (int64_t q = 0; q < Q; ++q) yr[q] = yr[q] / (rowspan * colspan[q]);
            }
        }
        fc_free(row);
    }
    return failed ? -1 : 0;
}

/* x (N,C,H,W) -> y (N,C,1,1) */
#if FC_X86
/* Planes [n0, n1): two 8-lane partial sums per plane, masked tail, horizontal add. */
FC_TARGET_AVX2 static void gap_avx2(const float *x, float *y, int64_t n0, int64_t n1, int64_t HW)
{
    const int64_t hv = HW & ~(int64_t)7;
    const __m256i tm = fc_avx2_tailmask(HW - hv);
    for (int64_t nc = n0; nc < n1; ++nc) {
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
