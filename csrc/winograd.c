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
 * Workspace per thread: 16*(Cg+Kg)*nb floats (nb <= 64 tiles), never the whole layer.
 * Parallel over (image, tile block), tile blocks shrunk to give >= 2 items per thread.
 */
#include "fastconv.h"

#include <string.h>

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
    const int64_t vsz = cdiv(16 * Cg * nb, 16) * 16, msz = cdiv(16 * Kg * nb, 16) * 16;
    const int64_t wbsz = cdiv(fc_ws_b_size(kr, nb, Cg), 16) * 16;
    float *ws = fc_alloc_floats(fc_mul_ws(vsz + msz + wbsz, nt));
    if (!ws) return -1;

#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int64_t it = 0; it < items; ++it) {
        float *V = ws + fc_omp_thread_num() * (vsz + msz + wbsz), *M = V + vsz, *wb = M + msz;
        const int64_t n = it / ntb, t0 = (it % ntb) * nb, tn = min64(nb, T - t0);
        for (int64_t g = 0; g < groups; ++g) {
            /* V[xi][c][t] = (B^T d B)[xi], B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] */
            for (int64_t c = 0; c < Cg; ++c) {
                const float *xc = x + ((n * C + g * Cg + c) * H) * W;
                for (int64_t t = 0; t < tn; ++t) {
                    const int64_t th = (t0 + t) / TW, tw = (t0 + t) % TW;
                    const int64_t h0 = 2 * th - pt, w0 = 2 * tw - pl;
                    float d[4][4];
                    for (int i = 0; i < 4; ++i) {
                        const int64_t ih = h0 + i;
                        for (int j = 0; j < 4; ++j) {
                            const int64_t iw = w0 + j;
                            d[i][j] = ih >= 0 && ih < H && iw >= 0 && iw < W ? xc[ih * W + iw]
                                                                             : 0.0f;
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
                        float *v = V + ((i * 4) * Cg + c) * tn + t;
                        v[0] = e[i][0] - e[i][2];
                        v[Cg * tn] = e[i][1] + e[i][2];
                        v[2 * Cg * tn] = e[i][2] - e[i][1];
                        v[3 * Cg * tn] = e[i][1] - e[i][3];
                    }
                }
            }
            for (int xi = 0; xi < 16; ++xi) {
                fc_gemm_args a = {0, 0, Kg, tn, Cg, 1.0f, 0.0f, NULL, 0,
                                  up + (g * 16 + xi) * apx, V + xi * Cg * tn, tn,
                                  M + xi * Kg * tn, tn, NULL, 0};
                fc_gemm_run(&a, kr, NULL, wb, 1);
            }
            /* y = A^T M A, A^T = [1 1 1 0; 0 1 -1 -1], + bias, ReLU, clipped to (P,Q) */
            for (int64_t k = 0; k < Kg; ++k) {
                const float b = bias ? bias[g * Kg + k] : 0.0f;
                float *yk = y + (n * K + g * Kg + k) * P * Q;
                for (int64_t t = 0; t < tn; ++t) {
                    float m[16];
                    for (int xi = 0; xi < 16; ++xi) m[xi] = M[(xi * Kg + k) * tn + t];
                    float r[2][4];
                    for (int j = 0; j < 4; ++j) {
                        r[0][j] = m[j] + m[4 + j] + m[8 + j];
                        r[1][j] = m[4 + j] - m[8 + j] - m[12 + j];
                    }
                    const int64_t th = (t0 + t) / TW, tw = (t0 + t) % TW;
                    for (int i = 0; i < 2 && 2 * th + i < P; ++i) {
                        float o[2] = {r[i][0] + r[i][1] + r[i][2] + b,
                                      r[i][1] - r[i][2] - r[i][3] + b};
                        for (int j = 0; j < 2 && 2 * tw + j < Q; ++j) {
                            float v = o[j];
                            if (relu) v = fc_relu1(v);
                            yk[(2 * th + i) * Q + 2 * tw + j] = v;
                        }
                    }
                }
            }
        }
    }
    fc_free(ws);
    return 0;
}
