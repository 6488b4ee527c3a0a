/* conv.c -- 2-D convolution (cross-correlation, NCHW), bias and ReLU fused: the algorithms
 * and fc_conv2d, which runs one of them per call (fc_conv2d_choose: the "auto" policy, or
 * the algo argument; tests force each one through fastconv.backends.c.conv2d(algorithm=)).
 *
 * Variants (enum fc_conv_algo in fastconv.h), and when "auto" picks each -- measured
 * single-threaded against PyTorch 2.13 / oneDNN on Zen 3 (AVX2+FMA, 32 KiB L1d, 512 KiB L2):
 *   FC_CONV_DIRECT    (here) conv_direct: tap by tap over whole output rows. Grouped with
 *                     Cg*R*S <= 9 (depthwise, narrow groups), or Kg <= 4 output channels per
 *                     group: a tile of 16 channels or 6 rows would be mostly padding.
 *   FC_CONV_1X1       (conv_fast.c) 1x1 stride 1 unpadded with H*W < 1024: weights and input
 *                     used in place, no packing (the packed GEMM repacks K*C weights per call,
 *                     which dominates at 49..784 pixels: ResNet res3..res5); rows (output
 *                     channels) are split across threads when the pixels cannot be.
 *   FC_CONV_GEMM      (here) conv_gemm: packed GEMM straight on the input for 1x1 with
 *                     H*W >= 1024 (ResNet res2); on bounded im2col tiles (<= 1 MiB per
 *                     thread) for long reductions over many pixels (C*R*S > 2048, P*Q >= 196:
 *                     VGG conv5_2), where the GEMM's KC blocking keeps operands in cache.
 *   FC_CONV_WINOGRAD  (winograd.c) F(2x2,3x3) for 3x3 stride-1 undilated layers with
 *                     Cg >= 64, Kg >= 32 and >= 196 tiles (VGG conv1_2..conv4): 2.25x fewer
 *                     MACs, batched as 16 packed GEMMs per tile block.
 * A network plan prepares the weights of the GEMM and Winograd algorithms once
 * (fc_conv2d_prepare_weights) and picks with fc_conv2d_choose_planned, below.
 *   FC_CONV_INDIRECT  (conv_fast.c) everything else: implicit GEMM, 6 pixels x 16 channels
 *                     broadcast straight from the (padded) input through a tap-offset table,
 *                     weights packed once per call. No im2col at all: AlexNet conv1-5, VGG
 *                     conv1_2, LeNet at batch 1 and 64, strided / dilated / grouped layers.
 * Workspace is bounded in every variant: per thread one padded image-group and one
 * group's weight panels (indirect), one im2col tile (gemm), one 64-tile block (winograd);
 * never the layer.
 * Parallelism: each variant splits (image, group, pixel block[, channel block]) work items
 * over the threads, shrinking blocks until there are >= 2 items per thread (batch 1); the
 * indirect conv gives each thread one contiguous range of (image, group, channel panel)
 * passes and lets it pack and pad what that range reads itself (see fc_conv_indirect).
 * (conv_gemm: when there are fewer items than threads, the GEMM itself runs parallel.)
 */
#include "fastconv.h"

#include <string.h>

#define COL_FLOATS (256 * 1024) /* im2col tile budget: 1 MiB */


/* ------------------------------------------------------------------ direct */

/* x (N,C,H,W), w (K,C/g,R,S) -> y (N,K,P,Q); one output plane per work item. */
static void conv_direct(const float *x, const float *w, const float *bias, float *y,
                        int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R,
                        int64_t S, int64_t P, int64_t Q, int64_t sh, int64_t sw, int64_t pt,
                        int64_t pl, int64_t dh, int64_t dw, int64_t groups, int relu)
{
    const int64_t Cg = C / groups, Kg = K / groups;
    int nt = fc_threads_for(N * K * P * Q * Cg * R * S, 32 * 1024);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t nk = 0; nk < N * K; ++nk) {
        const int64_t n = nk / K, k = nk % K, g = k / Kg;
        float *yp = y + nk * P * Q;
        const float b0 = bias ? bias[k] : 0.0f;
        for (int64_t i = 0; i < P * Q; ++i) yp[i] = b0;
        for (int64_t c = 0; c < Cg; ++c) {
            const float *xp = x + ((n * C + g * Cg + c) * H) * W;
            for (int64_t r = 0; r < R; ++r) {
                int64_t p0, p1;
                valid_range(r * dh - pt, sh, P, H, &p0, &p1);
                for (int64_t s = 0; s < S; ++s) {
                    const float wv = w[((k * Cg + c) * R + r) * S + s];
                    int64_t q0, q1;
                    valid_range(s * dw - pl, sw, Q, W, &q0, &q1);
                    for (int64_t p = p0; p < p1; ++p) {
                        const float *xr = xp + (p * sh - pt + r * dh) * W + (s * dw - pl);
                        float *yr = yp + p * Q;
                        if (sw == 1) {
                            for (int64_t q = q0; q < q1; ++q) yr[q] += wv * xr[q];
                        } else {
                            for (int64_t q = q0; q < q1; ++q) yr[q] += wv * xr[q * sw];
                        }
                    }
                }
            }
        }
        if (relu)
            for (int64_t i = 0; i < P * Q; ++i) yp[i] = fc_relu1(yp[i]);
    }
}

/* ------------------------------------------------------------------ im2col + GEMM */

/* x (Cg,H,W) of one image and group -> col (Cg*R*S, T): output pixels t0 .. t0+T of (P,Q). */
static void im2col_tile(const float *x, int64_t Cg, int64_t H, int64_t W, int64_t R, int64_t S,
                        int64_t Q, int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh,
                        int64_t dw, int64_t t0, int64_t T, float *col)
{
    for (int64_t c = 0; c < Cg; ++c)
        for (int64_t r = 0; r < R; ++r)
            for (int64_t s = 0; s < S; ++s) {
                float *row = col + ((c * R + r) * S + s) * T;
                for (int64_t j = 0, pix = t0; j < T;) {
                    const int64_t p = pix / Q, q = pix % Q;
                    const int64_t run = Q - q < T - j ? Q - q : T - j;
                    const int64_t ih = p * sh - pt + r * dh;
                    float *d = row + j;
                    if (ih < 0 || ih >= H) {
                        memset(d, 0, (size_t)run * sizeof(float));
                    } else {
                        const int64_t iw0 = q * sw - pl + s * dw;
                        const float *xr = x + (c * H + ih) * W + iw0;
                        int64_t u0, u1;
                        valid_range(iw0, sw, run, W, &u0, &u1);
                        for (int64_t u = 0; u < u0; ++u) d[u] = 0.0f;
                        if (sw == 1)
                            memcpy(d + u0, xr + u0, (size_t)(u1 - u0) * sizeof(float));
                        else
                            for (int64_t u = u0; u < u1; ++u) d[u] = xr[u * sw];
                        for (int64_t u = u1; u < run; ++u) d[u] = 0.0f;
                    }
                    j += run;
                    pix += run;
                }
            }
}

typedef struct {
    const float *x, *bias;
    float *y;
    const float *wp;
    const fc_kernel *kr;
    int64_t C, H, W, K, R, S, Q, sh, sw, pt, pl, dh, dw, groups;
    int relu, one_by_one;
    int64_t Cg, Kg, CRS, PQ, T, ntiles, apg;
} conv_ctx;

/* Work item it = (image, group, pixel tile): y[n, group rows, tile] = Wg @ B + bias (ReLU). */
static void conv_item(const conv_ctx *cx, int64_t it, float *col, float *wb, int nthreads)
{
    const int64_t t = it % cx->ntiles, g = (it / cx->ntiles) % cx->groups;
    const int64_t n = it / cx->ntiles / cx->groups;
    const int64_t t0 = t * cx->T, tn = cx->PQ - t0 < cx->T ? cx->PQ - t0 : cx->T;
    const float *xg = cx->x + (n * cx->C + g * cx->Cg) * cx->H * cx->W;
    fc_gemm_args a = {0, 0, cx->Kg, tn, cx->CRS, 1.0f, 0.0f, NULL, 0, cx->wp + g * cx->apg,
                      NULL, 0, cx->y + (n * cx->K + g * cx->Kg) * cx->PQ + t0, cx->PQ,
                      cx->bias ? cx->bias + g * cx->Kg : NULL, cx->relu};
    if (cx->one_by_one) {
        a.B = xg + t0; /* x[n, group] is (Cg, H*W): take columns t0 .. t0+tn */
        a.ldb = cx->PQ;
    } else {
        im2col_tile(xg, cx->Cg, cx->H, cx->W, cx->R, cx->S, cx->Q, cx->sh, cx->sw, cx->pt,
                    cx->pl, cx->dh, cx->dw, t0, tn, col);
        a.B = col;
        a.ldb = tn;
    }
    fc_gemm_run(&a, cx->kr, NULL, wb, nthreads);
}

/* Floats of one group's packed weights (64-byte aligned blocks) and of all groups. */
static int64_t gemm_wpack_group(const fc_kernel *kr, int64_t Kg, int64_t CRS)
{
    return (fc_packed_a_size(kr, Kg, CRS) + 15) / 16 * 16;
}

static int64_t conv_gemm_weights_size(int64_t K, int64_t CRS_g, int64_t groups)
{
    return fc_mul_ws(gemm_wpack_group(fc_gemm_kernel(), K / groups, CRS_g), groups);
}

/* w (K, CRS_g) per group -> the GEMM's packed A panels, groups in parallel. */
static void conv_gemm_weights(const float *w, float *wp, int64_t K, int64_t CRS_g,
                              int64_t groups)
{
    const fc_kernel *kr = fc_gemm_kernel();
    const int64_t Kg = K / groups, apg = gemm_wpack_group(kr, Kg, CRS_g);
    const int nt = groups > 1 ? fc_threads_for(K * CRS_g, 1 << 15) : 1;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t g = 0; g < groups; ++g)
        fc_pack_a_full(kr, 0, Kg, CRS_g, w + g * Kg * CRS_g, CRS_g, wp + g * apg);
}

/* x (N,C,H,W), wp (conv_gemm_weights) -> y (N,K,P,Q) via packed weights x (im2col tile |
   input); 0, or -1 out of memory. */
static int conv_gemm_prepacked(const float *x, const float *wp, const float *bias, float *y,
                               int64_t N, int64_t C, int64_t H, int64_t W, int64_t K,
                               int64_t R, int64_t S, int64_t P, int64_t Q, int64_t sh,
                               int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw,
                               int64_t groups, int relu)
{
    const fc_kernel *kr = fc_gemm_kernel();
    const int64_t Cg = C / groups, Kg = K / groups, CRS = Cg * R * S, PQ = P * Q;
    const int one_by_one = R == 1 && S == 1 && sh == 1 && sw == 1 && pt == 0 && pl == 0 &&
                           P == H && Q == W;
    const int64_t nr = kr->nr;

    /* Pixel tiles: bounded by the im2col budget (never below 4*NR), then split further
       (down to 2*NR) until there are >= 2 work items per thread, for balance. */
    int nt = fc_threads_for(N * K * PQ * CRS, 64 * 64 * 64);
    int64_t tmax = one_by_one ? PQ : (COL_FLOATS / CRS) / nr * nr;
    if (tmax < 4 * nr) tmax = 4 * nr;
    int64_t ntiles = (PQ + tmax - 1) / tmax;
    int64_t want = (2 * nt + N * groups - 1) / (N * groups);
    int64_t most = (PQ + 2 * nr - 1) / (2 * nr);
    if (ntiles < want) ntiles = want < most ? want : most;
    if (ntiles < 1) ntiles = 1;
    int64_t T = (PQ + ntiles - 1) / ntiles;
    if (T > nr) T = (T + nr - 1) / nr * nr;
    ntiles = (PQ + T - 1) / T;
    const int64_t items = N * groups * ntiles;
    const int outer = items >= nt;   /* else: the GEMM is the parallel part */
    const int nbuf = outer ? nt : 1; /* col buffers */

    const int64_t apg = gemm_wpack_group(kr, Kg, CRS), colsz = one_by_one ? 0 : fc_mul_ws(CRS, T);
    float *col = fc_alloc_floats(fc_mul_ws(colsz, nbuf));
    const int64_t wbsz = fc_ws_b_size(kr, T, CRS);
    float *wb = fc_alloc_floats(fc_mul_ws(wbsz, nt));
    if (!col || !wb) {
        fc_free(col);
        fc_free(wb);
        return -1;
    }
    conv_ctx cx = {x, bias, y, wp, kr, C, H, W, K, R, S, Q, sh, sw, pt, pl, dh, dw, groups,
                   relu, one_by_one, Cg, Kg, CRS, PQ, T, ntiles, apg};
    if (outer) {
#pragma omp parallel num_threads(nt)
        {
            const int tid = fc_omp_thread_num();
#pragma omp for schedule(dynamic, 1)
            for (int64_t it = 0; it < items; ++it)
                conv_item(&cx, it, col + tid * colsz, wb + tid * wbsz, 1);
        }
    } else {
        for (int64_t it = 0; it < items; ++it) conv_item(&cx, it, col, wb, nt);
    }
    fc_free(col);
    fc_free(wb);
    return 0;
}

/* The same, packing the weights per call. */
static int conv_gemm(const float *x, const float *w, const float *bias, float *y, int64_t N,
                     int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t S,
                     int64_t P, int64_t Q, int64_t sh, int64_t sw, int64_t pt, int64_t pl,
                     int64_t dh, int64_t dw, int64_t groups, int relu)
{
    const int64_t CRS = C / groups * R * S;
    float *wp = fc_alloc_floats(conv_gemm_weights_size(K, CRS, groups)); /* -1: refused */
    int rc = -1;
    if (wp) {
        conv_gemm_weights(w, wp, K, CRS, groups);
        rc = conv_gemm_prepacked(x, wp, bias, y, N, C, H, W, K, R, S, P, Q, sh, sw, pt, pl, dh,
                                 dw, groups, relu);
    }
    fc_free(wp);
    return rc;
}

#define CONV_SHAPE_ARGS                                                                    \
    int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t S, int64_t P, \
        int64_t Q, int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw,  \
        int64_t groups

static int is_1x1(CONV_SHAPE_ARGS)
{
    (void)N, (void)C, (void)K, (void)dh, (void)dw, (void)groups;
    return R == 1 && S == 1 && sh == 1 && sw == 1 && pt == 0 && pl == 0 && P == H && Q == W;
}

int fc_conv2d_supports(int algo, CONV_SHAPE_ARGS)
{
    switch (algo) {
    case FC_CONV_AUTO:
    case FC_CONV_DIRECT:
    case FC_CONV_GEMM:
    case FC_CONV_INDIRECT: return 1;
    case FC_CONV_1X1:
        return is_1x1(N, C, H, W, K, R, S, P, Q, sh, sw, pt, pl, dh, dw, groups);
    case FC_CONV_WINOGRAD: return R == 3 && S == 3 && sh == 1 && sw == 1 && dh == 1 && dw == 1;
    default: return 0;
    }
}

/* The "auto" policy (single-thread timings vs PyTorch/oneDNN on Zen 3, AVX2, see header). */
int fc_conv2d_choose(CONV_SHAPE_ARGS)
{
    const int64_t Cg = C / groups, Kg = K / groups;
    if (groups > 1 && Cg * R * S <= 9) return FC_CONV_DIRECT; /* depthwise-like */
    /* 1x1: the unpacked kernel while the pixels are few (the packed GEMM would repack all
       K*C weights per call for <= 1024 pixels of work each: ResNet res3..res5); with many
       pixels the packed GEMM's contiguous panels win (res2: 3136 pixels). */
    if (is_1x1(N, C, H, W, K, R, S, P, Q, sh, sw, pt, pl, dh, dw, groups))
        return H * W < 1024 ? FC_CONV_1X1 : FC_CONV_GEMM;
    if (Kg <= 4) return FC_CONV_DIRECT;
    /* Winograd F(2x2,3x3) where its per-call weight transform (16*K*C) is amortised over
       >= 196 tiles and there are channels enough for the tile transforms: 1 thread, VGG
       conv1_2 34 vs 47 ms (indirect), conv3_2 26 vs 42 (GEMM), ResNet 3x3 64 at 56x56 2.2
       vs 2.7. With few tiles (13x13, 14x14: AlexNet conv3-5, VGG conv5_2: 49 tiles) it
       loses (the planner, which transforms the weights once, still picks it there). */
    if (fc_conv2d_supports(FC_CONV_WINOGRAD, N, C, H, W, K, R, S, P, Q, sh, sw, pt, pl, dh, dw,
                           groups) &&
        Cg >= 64 && Kg >= 32 && N * ((P + 1) / 2) * ((Q + 1) / 2) >= 196)
        return FC_CONV_WINOGRAD;
    /* Long reductions over many pixels (VGG conv3_2 / conv5_2: C*R*S >= 2304, >= 196
       pixels): the indirect kernel's weight panel (C*R*S x 16) and the input window of its
       48-pixel chunk overflow L1/L2, while the packed GEMM blocks the reduction by KC = 256. */
    if (Cg * R * S > 2048 && P * Q >= 196) return FC_CONV_GEMM;
    /* Everything else (AlexNet, VGG conv1_2, LeNet at any batch, strided, dilated, grouped):
       the indirect kernel, 1.0-7x PyTorch single-threaded on the named layers. */
    return FC_CONV_INDIRECT;
}

/* The pick for a layer of a planned network, whose weights are prepared once
   (fc_conv2d_prepare_weights). Per call, Winograd then costs its input and output
   transforms alone, and the packed GEMM its B side alone, so both pay where the per-call
   preparation made them lose (single-thread timings on Zen 3, batch 1, prepared vs the
   per-call pick):
   - Winograd: 3x3 s1 with Cg >= 64 and Kg >= 32, however few the tiles: VGG conv1_2 at
     224x224 42 vs 61 ms, conv5 at 14x14 7.1 vs 13.2, AlexNet conv3 at 13x13 1.9 vs 3.0,
     ResNet 3x3 64->64 at 56x56 2.2 vs 2.7. (32 -> 32, 32 -> 64: a tie or a loss.)
   - packed GEMM: every 1x1 (ResNet 1x1 at 7x7..28x28: 1.2-1.5 vs 1.4-2.3 ms, strided 1x1
     downsamples 2.6-3.1 vs 3.6-6.2 ms); layers of <= 256 output pixels with >= 64K weights,
     where the per-call weight packing of the indirect kernel dominated (ResNet 3x3/2 at
     7x7: 4.1 vs 8.3 ms; LeNet's conv2, 2.4K weights, stays indirect: 17 vs 27 us); and
     reductions of <= 32 over >= 4096 pixels (VGG conv1_1, C = 3: 3.2 vs 3.8 ms).
   Everything else: fc_conv2d_choose's pick. */
int fc_conv2d_choose_planned(CONV_SHAPE_ARGS)
{
    const int64_t Cg = C / groups, Kg = K / groups;
    const int per_call = fc_conv2d_choose(N, C, H, W, K, R, S, P, Q, sh, sw, pt, pl, dh, dw,
                                          groups);
    if (per_call == FC_CONV_DIRECT) return per_call; /* depthwise-like, Kg <= 4 */
    if (fc_conv2d_supports(FC_CONV_WINOGRAD, N, C, H, W, K, R, S, P, Q, sh, sw, pt, pl, dh, dw,
                           groups) &&
        Cg >= 64 && Kg >= 32)
        return FC_CONV_WINOGRAD;
    if ((R == 1 && S == 1) || (P * Q <= 256 && Kg * Cg * R * S >= 65536) ||
        (Cg * R * S <= 32 && P * Q >= 4096))
        return FC_CONV_GEMM;
    return per_call;
}

/* x (N,C,H,W), w (K,C/g,R,S), bias (K,) | NULL -> y (N,K,P,Q);
   0 on success, -1 out of memory, -2 algo cannot do this shape */
int fc_conv2d(const float *x, const float *w, const float *bias, float *y, int64_t N,
              int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t S, int64_t P,
              int64_t Q, int64_t stride_h, int64_t stride_w, int64_t pad_top, int64_t pad_left,
              int64_t dil_h, int64_t dil_w, int64_t groups, int relu, int algo)
{
    if (!fc_conv2d_supports(algo, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_top,
                            pad_left, dil_h, dil_w, groups))
        return -2;
    if (algo == FC_CONV_AUTO)
        algo = fc_conv2d_choose(N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_top,
                                pad_left, dil_h, dil_w, groups);
    switch (algo) {
    case FC_CONV_DIRECT:
        conv_direct(x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_top,
                    pad_left, dil_h, dil_w, groups, relu);
        return 0;
    case FC_CONV_1X1: return fc_conv_1x1(x, w, bias, y, N, C, H * W, K, groups, relu);
    case FC_CONV_INDIRECT:
        return fc_conv_indirect(x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w,
                                pad_top, pad_left, dil_h, dil_w, groups, relu);
    case FC_CONV_WINOGRAD:
        return fc_conv_winograd(x, w, bias, y, N, C, H, W, K, P, Q, pad_top, pad_left, groups,
                                relu);
    default:
        return conv_gemm(x, w, bias, y, N, C, H, W, K, R, S, P, Q, stride_h, stride_w,
                         pad_top, pad_left, dil_h, dil_w, groups, relu);
    }
}

/* ------------------------------------------------------------------ prepared weights */

int64_t fc_conv2d_weights_size(int algo, CONV_SHAPE_ARGS)
{
    (void)N, (void)H, (void)W, (void)P, (void)Q, (void)sh, (void)sw, (void)pt, (void)pl;
    (void)dh, (void)dw;
    switch (algo) {
    case FC_CONV_GEMM: return conv_gemm_weights_size(K, C / groups * R * S, groups);
    case FC_CONV_WINOGRAD: return fc_conv_winograd_weights_size(K, C, groups);
    default: return 0;
    }
}

int fc_conv2d_prepare_weights(int algo, const float *w, float *packed, CONV_SHAPE_ARGS)
{
    (void)N, (void)H, (void)W, (void)P, (void)Q, (void)sh, (void)sw, (void)pt, (void)pl;
    (void)dh, (void)dw;
    switch (algo) {
    case FC_CONV_GEMM: conv_gemm_weights(w, packed, K, C / groups * R * S, groups); return 0;
    case FC_CONV_WINOGRAD: return fc_conv_winograd_weights(w, packed, K, C, groups);
    default: return 0;
    }
}

int fc_conv2d_prepacked(int algo, const float *x, const float *packed, const float *bias,
                        float *y, CONV_SHAPE_ARGS, int relu)
{
    switch (algo) {
    case FC_CONV_GEMM:
        return conv_gemm_prepacked(x, packed, bias, y, N, C, H, W, K, R, S, P, Q, sh, sw, pt,
                                   pl, dh, dw, groups, relu);
    case FC_CONV_WINOGRAD:
        return fc_conv_winograd_prepacked(x, packed, bias, y, N, C, H, W, K, P, Q, pt, pl,
                                          groups, relu);
    default: return -2;
    }
}
