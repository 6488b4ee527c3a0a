/* winograd.c -- Winograd F(2x2,3x3) conv2d for 3x3, stride 1, dilation 1 (any padding, groups).
 *
 * One variant, and why: 2x2 outputs from a 4x4 input patch with 16 multiplies instead of 36
 * (2.25x fewer MACs). F(2,3)'s transforms use only 0, +-1, +-1/2, so the result stays within
 * float32 rounding of the direct sum (the 1e-4 relative test bound holds); F(4,3) would save
 * 4x but amplifies rounding ~10x more.
 *   U[xi] (Kg,Cg) = (G g G^T)[xi]     packed into the GEMM's A layout: per call, or once per
 *                                     network plan (fc_conv_winograd_weights, then
 *                                     fc_conv_winograd_prepacked: the weight transform is
 *                                     16*K*C floats written, which at 14x14 and 28x28 cost as
 *                                     much as the convolution itself)
 *   V[xi] (Cg,nb) = (B^T d B)[xi]     per block of nb tiles of one image (per thread)
 *   M[xi] = U[xi] @ V[xi]             16 packed GEMMs (fc_gemm_run, serial, per thread)
 *   y tile = A^T M A + bias (ReLU)    output transform, clipped at ragged P/Q edges
 * The two tile transforms run on 8 tiles of a tile row at once with AVX2 (scalar for the
 * generic ISA): scalar, they cost a third of the layer (VGG conv1_2: 84 -> 42 ms).
 * Workspace per thread: 16*(Cg+Kg)*nb floats (nb <= 64 tiles), never the whole layer.
 * Parallel over (image, tile block), tile blocks shrunk to give >= 2 items per thread.
 */
#include "fastconv.h"

#include <string.h>
#if FC_X86
#include <immintrin.h>
#endif

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Floats of one (group, xi) packed U block and of all of them. */
static int64_t packed_u_block(const fc_kernel *kr, int64_t Kg, int64_t Cg)
{
    return cdiv(fc_packed_a_size(kr, Kg, Cg), 16) * 16; /* 64-byte aligned blocks */
}

int64_t fc_conv_winograd_weights_size(int64_t K, int64_t C, int64_t groups)
{
    return fc_mul_ws(fc_mul_ws(groups, 16),
                     packed_u_block(fc_gemm_kernel(), K / groups, C / groups));
}

/* w (K,C/g,3,3) -> up: U = G g G^T, G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1], transformed into
   ut[xi][k][c] (parallel over output channels), then packed per (group, xi) (parallel over
   the 16 xi). 0, or -1 out of memory. */
int fc_conv_winograd_weights(const float *w, float *up, int64_t K, int64_t C, int64_t groups)
{
    const fc_kernel *kr = fc_gemm_kernel();
    const int64_t Cg = C / groups, Kg = K / groups, apx = packed_u_block(kr, Kg, Cg);
    float *ut = fc_alloc_floats(fc_mul_ws(16, fc_mul_ws(Kg, Cg)));
    if (!ut) return -1;
    const int nt = fc_threads_for(16 * Kg * Cg, 1 << 15);
    for (int64_t g = 0; g < groups; ++g) {
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int64_t k = 0; k < Kg; ++k)
            for (int64_t c = 0; c < Cg; ++c) {
                const float *f = w + ((g * Kg + k) * Cg + c) * 9;
                float t[4][3];
                for (int j = 0; j < 3; ++j) {
                    t[0][j] = f[j];
                    t[1][j] = 0.5f * (f[j] + f[3 + j] + f[6 + j]);
                    t[2][j] = 0.5f * (f[j] - f[3 + j] + f[6 + j]);
                    t[3][j] = f[6 + j];
                }
                for (int i = 0; i < 4; ++i) {
                    float u[4] = {t[i][0], 0.5f * (t[i][0] + t[i][1] + t[i][2]),
                                  0.5f * (t[i][0] - t[i][1] + t[i][2]), t[i][2]};
                    for (int j = 0; j < 4; ++j) ut[((i * 4 + j) * Kg + k) * Cg + c] = u[j];
                }
            }
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int xi = 0; xi < 16; ++xi)
            fc_pack_a_full(kr, 0, Kg, Cg, ut + xi * Kg * Cg, Cg, up + (g * 16 + xi) * apx);
    }
    fc_free(ut);
    return 0;
}

/* x (N,C,H,W), w (K,C/g,3,3) -> y (N,K,P,Q); 0, or -1 out of memory. */
int fc_conv_winograd(const float *x, const float *w, const float *bias, float *y, int64_t N,
                     int64_t C, int64_t H, int64_t W, int64_t K, int64_t P, int64_t Q,
                     int64_t pt, int64_t pl, int64_t groups, int relu)
{
    float *up = fc_alloc_floats(fc_conv_winograd_weights_size(K, C, groups));
    int rc = up ? fc_conv_winograd_weights(w, up, K, C, groups) : -1;
    if (rc == 0)
        rc = fc_conv_winograd_prepacked(x, up, bias, y, N, C, H, W, K, P, Q, pt, pl, groups,
                                        relu);
    fc_free(up);
    return rc;
}

/* ------------------------------------------------------------------ tile transforms */

/* Scalar transforms of one tile (the generic ISA). V[xi][c][t] = (B^T d B)[xi] with
   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]; d the 4x4 patch at (h0, w0), 0 outside. */
static void wino_in_tile(const float *xc, int64_t H, int64_t W, int64_t h0, int64_t w0,
                         float *v, int64_t xs)
{
    float d[4][4];
    for (int i = 0; i < 4; ++i) {
        const int64_t ih = h0 + i;
        for (int j = 0; j < 4; ++j) {
            const int64_t iw = w0 + j;
            d[i][j] = ih >= 0 && ih < H && iw >= 0 && iw < W ? xc[ih * W + iw] : 0.0f;
        }
    }
    float e[4][4];
    for (int j = 0; j < 4; ++j) {
        e[0][j] = d[0][j] - d[2][j];
        e[1][j] = d[1][j] + d[2][j];
        e[2][j] = d[2][j] - d[1][j];
        e[3][j] = d[1][j] - d[3][j];
    }
    for (int i = 0; i < 4; ++i) {
        float *vi = v + 4 * i * xs;
        vi[0] = e[i][0] - e[i][2];
        vi[xs] = e[i][1] + e[i][2];
        vi[2 * xs] = e[i][2] - e[i][1];
        vi[3 * xs] = e[i][1] - e[i][3];
    }
}

/* y tile at (2 th, 2 tw) = A^T M A + b (ReLU), A^T = [1 1 1 0; 0 1 -1 -1], clipped to (P,Q);
   m: M[0][k][t], xs apart per xi. */
static void wino_out_tile(const float *m0, int64_t xs, float *yk, int64_t P, int64_t Q,
                          int64_t th, int64_t tw, float b, int relu)
{
    float m[16];
    for (int xi = 0; xi < 16; ++xi) m[xi] = m0[xi * xs];
    float r[2][4];
    for (int j = 0; j < 4; ++j) {
        r[0][j] = m[j] + m[4 + j] + m[8 + j];
        r[1][j] = m[4 + j] - m[8 + j] - m[12 + j];
    }
    for (int i = 0; i < 2 && 2 * th + i < P; ++i) {
        float o[2] = {r[i][0] + r[i][1] + r[i][2] + b, r[i][1] - r[i][2] - r[i][3] + b};
        for (int j = 0; j < 2 && 2 * tw + j < Q; ++j) {
            float v = o[j];
            if (relu) v = fc_relu1(v);
            yk[(2 * th + i) * Q + 2 * tw + j] = v;
        }
    }
}

#if FC_X86
/* AVX2: 8 tiles of one tile row at once, the same operations in the same order as the
   scalar code (bit-identical results). A tile block's tiles go by row segments (tiles of
   one tile row) and within them by groups of up to 8.
   Input: the segment's 4 input rows are staged, zero-padded, into a row buffer (no bounds
   checks, and a group may read past its last tile); for 8 tiles the patch columns
   j = 0..3 are the even / odd lanes of 16 consecutive floats from columns 0 and 2, which
   one in-lane shuffle each yields in the lane order (t0 t1 t4 t5 | t2 t3 t6 t7). A full
   group keeps that order in its V columns, and the output transform, which works on the
   same columns of M, turns it back into output order with one unpack per pair of rows --
   no cross-lane permute on either side. A partial group (r < 8 tiles, at a segment's end)
   permutes to tile order and stores r lanes. */
static const int64_t WINO_STAGE_PAD = 18; /* columns a group may read past its segment */

static int64_t wino_stage_ld(int64_t TW) { return (2 * TW + 2 + WINO_STAGE_PAD + 7) & ~7; }

/* Rows h0..h0+3, columns w0 .. w0 + 2 st + 1 of plane xc into st4 (4 rows of ld), 0
   outside the plane and past the segment. */
static void wino_stage(const float *xc, int64_t H, int64_t W, int64_t h0, int64_t w0,
                       int64_t st, float *st4, int64_t ld)
{
    const int64_t n = 2 * st + 2, lo = w0 < 0 ? -w0 : 0, hi = W - w0 < n ? W - w0 : n;
    for (int i = 0; i < 4; ++i) {
        float *d = st4 + i * ld;
        const int64_t ih = h0 + i;
        if (ih < 0 || ih >= H || hi <= lo) {
            memset(d, 0, (size_t)ld * sizeof(float));
            continue;
        }
        for (int64_t u = 0; u < lo; ++u) d[u] = 0.0f;
        memcpy(d + lo, xc + ih * W + w0 + lo, (size_t)(hi - lo) * sizeof(float));
        for (int64_t u = hi; u < ld; ++u) d[u] = 0.0f;
    }
}

FC_TARGET_AVX2 static inline __m256 wino_tile_order(__m256 v)
{   /* (t0 t1 t4 t5 | t2 t3 t6 t7) -> t0..t7 */
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xD8));
}

/* V columns of the r <= 8 tiles whose patches start at staged column 2q. */
FC_TARGET_AVX2 static void wino_in_group(const float *st4, int64_t ld, int64_t q, int r,
                                         float *v, int64_t xs)
{
    __m256 d[4][4];
    for (int i = 0; i < 4; ++i) {
        const float *row = st4 + i * ld + 2 * q;
        const __m256 a = _mm256_loadu_ps(row), b = _mm256_loadu_ps(row + 8);
        const __m256 a2 = _mm256_loadu_ps(row + 2), b2 = _mm256_loadu_ps(row + 10);
        d[i][0] = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
        d[i][1] = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
        d[i][2] = _mm256_shuffle_ps(a2, b2, _MM_SHUFFLE(2, 0, 2, 0));
        d[i][3] = _mm256_shuffle_ps(a2, b2, _MM_SHUFFLE(3, 1, 3, 1));
    }
    __m256 e[4][4];
    for (int j = 0; j < 4; ++j) {
        e[0][j] = _mm256_sub_ps(d[0][j], d[2][j]);
        e[1][j] = _mm256_add_ps(d[1][j], d[2][j]);
        e[2][j] = _mm256_sub_ps(d[2][j], d[1][j]);
        e[3][j] = _mm256_sub_ps(d[1][j], d[3][j]);
    }
    const __m256i mask = fc_avx2_tailmask(r);
    for (int i = 0; i < 4; ++i) {
        __m256 o[4] = {_mm256_sub_ps(e[i][0], e[i][2]), _mm256_add_ps(e[i][1], e[i][2]),
                       _mm256_sub_ps(e[i][2], e[i][1]), _mm256_sub_ps(e[i][1], e[i][3])};
        for (int j = 0; j < 4; ++j) {
            float *dst = v + (4 * i + j) * xs;
            if (r == 8) _mm256_storeu_ps(dst, o[j]);
            else _mm256_maskstore_ps(dst, mask, wino_tile_order(o[j]));
        }
    }
}

/* Output rows 2 th, 2 th + 1, columns 2 tw .. 2 (tw + r) - 1 (clipped to P, Q) of the r
   tiles whose M columns start at m0 (full group: lane order (t0 t1 t4 t5 | t2 t3 t6 t7)). */
FC_TARGET_AVX2 static void wino_out_group(const float *m0, int64_t xs, float *yk, int64_t P,
                                          int64_t Q, int64_t th, int64_t tw, int r, float b,
                                          int relu)
{
    __m256 m[16];
    for (int xi = 0; xi < 16; ++xi) m[xi] = _mm256_loadu_ps(m0 + xi * xs);
    __m256 rr[2][4];
    for (int j = 0; j < 4; ++j) {
        rr[0][j] = _mm256_add_ps(_mm256_add_ps(m[j], m[4 + j]), m[8 + j]);
        rr[1][j] = _mm256_sub_ps(_mm256_sub_ps(m[4 + j], m[8 + j]), m[12 + j]);
    }
    const __m256 vb = _mm256_set1_ps(b), zero = _mm256_setzero_ps();
    const int64_t c0 = 2 * tw, ncol = (2 * (tw + r) < Q ? 2 * (tw + r) : Q) - c0;
    for (int i = 0; i < 2 && 2 * th + i < P; ++i) {
        __m256 o0 = _mm256_add_ps(
            _mm256_add_ps(_mm256_add_ps(rr[i][0], rr[i][1]), rr[i][2]), vb);
        __m256 o1 = _mm256_add_ps(
            _mm256_sub_ps(_mm256_sub_ps(rr[i][1], rr[i][2]), rr[i][3]), vb);
        if (relu) { /* fc_relu1: +0 for v <= 0 and -0, NaN kept */
            o0 = _mm256_add_ps(_mm256_max_ps(zero, o0), zero);
            o1 = _mm256_add_ps(_mm256_max_ps(zero, o1), zero);
        }
        __m256 lo = _mm256_unpacklo_ps(o0, o1), hi = _mm256_unpackhi_ps(o0, o1);
        if (r < 8) { /* tile order: the unpacks hold (t0 t1 | t4 t5), (t2 t3 | t6 t7) */
            const __m256 l = lo;
            lo = _mm256_permute2f128_ps(l, hi, 0x20);
            hi = _mm256_permute2f128_ps(l, hi, 0x31);
        }
        float *d = yk + (2 * th + i) * Q + c0;
        if (ncol >= 16) {
            _mm256_storeu_ps(d, lo);
            _mm256_storeu_ps(d + 8, hi);
        } else {
            _mm256_maskstore_ps(d, fc_avx2_tailmask(ncol), lo);
            if (ncol > 8) _mm256_maskstore_ps(d + 8, fc_avx2_tailmask(ncol - 8), hi);
        }
    }
}
#endif

/* x (N,C,H,W), up from fc_conv_winograd_weights -> y (N,K,P,Q); 0, or -1 out of memory. */
int fc_conv_winograd_prepacked(const float *x, const float *up, const float *bias, float *y,
                               int64_t N, int64_t C, int64_t H, int64_t W, int64_t K,
                               int64_t P, int64_t Q, int64_t pt, int64_t pl, int64_t groups,
                               int relu)
{
    const fc_kernel *kr = fc_gemm_kernel();
    const int64_t Cg = C / groups, Kg = K / groups, TH = cdiv(P, 2), TW = cdiv(Q, 2);
    const int64_t T = TH * TW;
    int nt = fc_threads_for(N * K * P * Q * Cg * 9, 64 * 64 * 64);
    /* tile blocks of <= 64 tiles, as even as possible, and per image a multiple of the
       thread count when the batch alone cannot feed the threads */
    int64_t nblk = cdiv(T, 64);
    if (N < 4 * nt) nblk = min64(T, cdiv(nblk, nt) * nt);
    const int64_t nb = cdiv(T, nblk), ntb = cdiv(T, nb), items = N * ntb;
    if (items < nt) nt = (int)items;
    const int64_t apx = packed_u_block(kr, Kg, Cg); /* one packed U[g][xi] */
    /* per-thread V, M, GEMM B workspace, each rounded to 16 floats (64-byte aligned) */
    /* (M gets 8 floats of slack: a partial output group loads 8 lanes from its columns) */
    const int64_t vsz = cdiv(16 * Cg * nb, 16) * 16, msz = cdiv(16 * Kg * nb + 8, 16) * 16;
    const int64_t wbsz = cdiv(fc_ws_b_size(kr, nb, Cg), 16) * 16;
#if FC_X86
    const int avx2 = fc_isa() >= FC_ISA_AVX2;
    const int64_t sld = wino_stage_ld(TW); /* staged input rows (AVX2 path) */
#else
    const int64_t sld = 0;
#endif
    const int64_t per_thread = vsz + msz + wbsz + cdiv(4 * sld, 16) * 16;
    float *ws = fc_alloc_floats(fc_mul_ws(per_thread, nt));
    if (!ws) return -1;

#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int64_t it = 0; it < items; ++it) {
        float *V = ws + fc_omp_thread_num() * per_thread, *M = V + vsz, *wb = M + msz;
        float *stage = wb + wbsz;
        (void)stage;
        const int64_t n = it / ntb, t0 = (it % ntb) * nb, tn = min64(nb, T - t0);
        for (int64_t g = 0; g < groups; ++g) {
            const float *xg = x + (n * C + g * Cg) * H * W;
            const float *bg = bias ? bias + g * Kg : NULL;
            float *yg = y + (n * K + g * Kg) * P * Q;
            /* V[xi][c][t] for the block's tiles */
#if FC_X86
            if (avx2) {
                for (int64_t t = 0; t < tn;) { /* row segments of the block */
                    const int64_t th = (t0 + t) / TW, tw = (t0 + t) % TW;
                    const int64_t st = min64(TW - tw, tn - t);
                    for (int64_t c = 0; c < Cg; ++c) {
                        wino_stage(xg + c * H * W, H, W, 2 * th - pt, 2 * tw - pl, st, stage,
                                   sld);
                        for (int64_t q = 0; q < st; q += 8)
                            wino_in_group(stage, sld, q, (int)min64(8, st - q),
                                          V + c * tn + t + q, Cg * tn);
                    }
                    t += st;
                }
            } else
#endif
                for (int64_t c = 0; c < Cg; ++c)
                    for (int64_t t = 0; t < tn; ++t) {
                        const int64_t th = (t0 + t) / TW, tw = (t0 + t) % TW;
                        wino_in_tile(xg + c * H * W, H, W, 2 * th - pt, 2 * tw - pl,
                                     V + c * tn + t, Cg * tn);
                    }
            for (int xi = 0; xi < 16; ++xi) {
                fc_gemm_args a = {0, 0, Kg, tn, Cg, 1.0f, 0.0f, NULL, 0,
                                  up + (g * 16 + xi) * apx, V + xi * Cg * tn, tn,
                                  M + xi * Kg * tn, tn, NULL, 0};
                fc_gemm_run(&a, kr, NULL, wb, 1);
            }
            /* y tiles from M[xi][k][t], + bias, ReLU, clipped to (P,Q) */
            for (int64_t k = 0; k < Kg; ++k) {
                const float b = bg ? bg[k] : 0.0f;
#if FC_X86
                if (avx2) {
                    for (int64_t t = 0; t < tn;) {
                        const int64_t th = (t0 + t) / TW, tw = (t0 + t) % TW;
                        const int64_t st = min64(TW - tw, tn - t);
                        for (int64_t q = 0; q < st; q += 8)
                            wino_out_group(M + k * tn + t + q, Kg * tn, yg + k * P * Q, P, Q,
                                           th, tw + q, (int)min64(8, st - q), b, relu);
                        t += st;
                    }
                    continue;
                }
#endif
                for (int64_t t = 0; t < tn; ++t)
                    wino_out_tile(M + k * tn + t, Kg * tn, yg + k * P * Q, P, Q,
                                  (t0 + t) / TW, (t0 + t) % TW, b, relu);
            }
        }
    }
    fc_free(ws);
    return 0;
}
