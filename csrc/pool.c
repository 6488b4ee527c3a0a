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

/* x (N,C,H,W) -> y (N,C,P,Q). Returns 0, or -1 if a row buffer cannot be allocated. */
FC_CLONES int fc_max_pool2d(const float *x, float *y, int64_t N, int64_t C, int64_t H,
                            int64_t W, int64_t P, int64_t Q, int64_t kh, int64_t kw,
                            int64_t stride_h, int64_t stride_w, int64_t pad_top,
                            int64_t pad_left, int64_t dil_h, int64_t dil_w)
{
    int nt = fc_threads_for(N * C * P * Q * kh * kw, 16 * 1024);
    int failed = 0;
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
#pragma omp parallel num_threads(nt) reduction(| : failed)
    {
        /* row buffer (W) + the divisor's column factor per output column (Q) */
        float *row = fc_alloc_floats(W + Q), *colspan = row ? row + W : NULL;
        failed = row == NULL;
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
FC_CLONES void fc_global_avg_pool2d(const float *x, float *y, int64_t N, int64_t C, int64_t HW)
{
    int nt = fc_threads_for(N * C * HW, 32 * 1024);
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
