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

/* x (N,C,H,W) -> y (N,C,P,Q). Returns 0, or -1 if a row buffer cannot be allocated. */
int fc_max_pool2d(const float *x, float *y, int64_t N, int64_t C, int64_t H, int64_t W,
                  int64_t P, int64_t Q, int64_t kh, int64_t kw, int64_t stride_h,
                  int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t dil_h,
                  int64_t dil_w)
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
                float *yr = yp + p * Q;
                const int64_t h0 = p * stride_h - pad_top;
                int64_t i0, i1;
                valid_range(h0, dil_h, kh, H, &i0, &i1);
                for (int64_t w = 0; w < W; ++w) row[w] = -INFINITY; /* padding is -inf */
                for (int64_t i = i0; i < i1; ++i) {
                    const float *xr = xp + (h0 + i * dil_h) * W;
                    for (int64_t w = 0; w < W; ++w) row[w] = max_nan(xr[w], row[w]);
                }
                for (int64_t q = 0; q < Q; ++q) yr[q] = -INFINITY;
                for (int64_t j = 0; j < kw; ++j) {
                    int64_t q0, q1;
                    valid_range(j * dil_w - pad_left, stride_w, Q, W, &q0, &q1);
                    const float *rj = row + j * dil_w - pad_left;
                    for (int64_t q = q0; q < q1; ++q) yr[q] = max_nan(rj[q * stride_w], yr[q]);
                }
            }
        }
        fc_free(row);
    }
    return failed ? -1 : 0;
}

/* x (N,C,H,W) -> y (N,C,P,Q). Returns 0, or -1 if a row buffer cannot be allocated. */
int fc_avg_pool2d(const float *x, float *y, int64_t N, int64_t C, int64_t H, int64_t W,
                  int64_t P, int64_t Q, int64_t kh, int64_t kw, int64_t stride_h,
                  int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t pad_bottom,
                  int64_t pad_right, int count_include_pad)
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
                float *yr = yp + p * Q;
                int64_t hs = p * stride_h - pad_top, he = hs + kh;
                if (he > H + pad_bottom) he = H + pad_bottom;
                const int64_t hspan = he - hs; /* rows of the window inside the padded input */
                if (hs < 0) hs = 0;
                if (he > H) he = H;
                for (int64_t w = 0; w < W; ++w) row[w] = 0.0f;
                for (int64_t h = hs; h < he; ++h) {
                    const float *xr = xp + h * W;
                    for (int64_t w = 0; w < W; ++w) row[w] += xr[w];
                }
                for (int64_t q = 0; q < Q; ++q) yr[q] = 0.0f;
                for (int64_t j = 0; j < kw; ++j) {
                    int64_t q0, q1;
                    valid_range(j - pad_left, stride_w, Q, W, &q0, &q1);
                    const float *rj = row + j - pad_left;
                    for (int64_t q = q0; q < q1; ++q) yr[q] += rj[q * stride_w];
                }
                for (int64_t q = 0; q < Q; ++q) {
                    int64_t ws = q * stride_w - pad_left, we = ws + kw;
                    if (we > W + pad_right) we = W + pad_right;
                    const int64_t wspan = we - ws;
                    if (ws < 0) ws = 0;
                    if (we > W) we = W;
                    const int64_t div = count_include_pad ? hspan * wspan : (he - hs) * (we - ws);
                    yr[q] = yr[q] / (float)div;
                }
            }
        }
        fc_free(row);
    }
    return failed ? -1 : 0;
}

/* x (N,C,H,W) -> y (N,C,1,1) */
void fc_global_avg_pool2d(const float *x, float *y, int64_t N, int64_t C, int64_t HW)
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
