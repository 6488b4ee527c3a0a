/* gemm.c -- packed, cache-blocked SGEMM (the BLIS / GotoBLAS structure), row-major.
 *
 * Variants inside, and why:
 *   ukr_avx512_12x32  12 rows x 32 cols (2 zmm per row, 24 accumulators, broadcast FMA):
 *                     AVX-512 CPUs; MC/KC/NC sized for 48 KiB L1d / 2 MiB L2.
 *   ukr_avx2_6x16     6 x 16 (2 ymm per row, 12 accumulators): every AVX2+FMA CPU;
 *                     blocking of BLIS's haswell sgemm (KC 256, B block ~192 KiB in L2).
 *   ukr_generic_4x8   plain C: any CPU, and the reference path (FASTCONV_ISA=generic).
 * The microkernel is picked once at run time (fc_isa: __builtin_cpu_supports, FASTCONV_ISA).
 *
 * Loop nest (row-major C = A B; vectors run along N, A values are broadcast):
 *   for ic in M step MC          A block (MC x KC) packed into MR-row panels  (L3, shared)
 *     for pc in K step KC
 *       pack A[ic.., pc..]                                        (threads split the panels)
 *       for each (jc block of N, ir range) work item              (threads split the items)
 *         pack B[pc.., jc..] into NR-column panels                (per thread, L2)
 *         for ir in MR panels: for jr in NR panels: microkernel   (A panel stays in L1)
 * beta is applied at the first KC block only; bias+ReLU (the conv epilogue) at the last.
 * Edge tiles (M % MR, N % NR) run the full microkernel into a stack tile, then copy the
 * valid part through the same epilogue, so the microkernels have no edge code.
 * Parallelism: one OpenMP region per GEMM, threads split work by id (no worksharing
 * constructs), so fc_gemm_run(..., nthreads=1) is safe inside someone else's region.
 */
#include "fastconv.h"

#include <stdlib.h>
#include <string.h>

#if FC_X86
#include <immintrin.h>
#endif

#define MAX_MR 12
#define MAX_NR 32

static inline float epi_apply(float acc, const float *c, const fc_epi *e, int64_t row)
{
    float v = e->alpha * acc;
    if (e->beta != 0.0f) v += e->beta * *c;
    if (e->bias) v += e->bias[row];
    if (e->relu) v = v <= 0.0f ? 0.0f : v; /* NaN stays NaN, -0 becomes +0 */
    return v;
}

/* ------------------------------------------------------------------ microkernels */

/* a (kc,4), b (kc,8) -> c (4,8) */
static void ukr_generic_4x8(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                            const fc_epi *e)
{
    float acc[4][8] = {{0}};
    for (int64_t k = 0; k < kc; ++k, a += 4, b += 8)
        for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 8; ++j) acc[i][j] += a[i] * b[j];
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 8; ++j) c[i * ldc + j] = epi_apply(acc[i][j], &c[i * ldc + j], e, i);
}

#if FC_X86
/* a (kc,6), b (kc,16) -> c (6,16) */
FC_TARGET_AVX2 static void ukr_avx2_6x16(int64_t kc, const float *a, const float *b, float *c,
                                         int64_t ldc, const fc_epi *e)
{
    __m256 acc[6][2];
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < kc; ++k, a += 6, b += 16) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
        for (int i = 0; i < 6; ++i) {
            __m256 ai = _mm256_broadcast_ss(a + i);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    const __m256 alpha = _mm256_set1_ps(e->alpha), beta = _mm256_set1_ps(e->beta);
    const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
            float *cp = c + i * ldc + 8 * h;
            __m256 v = _mm256_mul_ps(alpha, acc[i][h]);
            if (e->beta != 0.0f) v = _mm256_fmadd_ps(beta, _mm256_loadu_ps(cp), v);
            if (e->bias) v = _mm256_add_ps(v, _mm256_set1_ps(e->bias[i]));
            /* max(0, v) keeps a NaN v (second operand); + 0 turns -0 into +0 */
            if (e->relu) v = _mm256_add_ps(_mm256_max_ps(zero, v), zero);
            _mm256_storeu_ps(cp, v);
        }
    }
}

/* a (kc,12), b (kc,32) -> c (12,32) */
FC_TARGET_AVX512 static void ukr_avx512_12x32(int64_t kc, const float *a, const float *b,
                                              float *c, int64_t ldc, const fc_epi *e)
{
    __m512 acc[12][2];
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; ++k, a += 12, b += 32) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 12
        for (int i = 0; i < 12; ++i) {
            __m512 ai = _mm512_set1_ps(a[i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    const __m512 alpha = _mm512_set1_ps(e->alpha), beta = _mm512_set1_ps(e->beta);
    const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
            float *cp = c + i * ldc + 16 * h;
            __m512 v = _mm512_mul_ps(alpha, acc[i][h]);
            if (e->beta != 0.0f) v = _mm512_fmadd_ps(beta, _mm512_loadu_ps(cp), v);
            if (e->bias) v = _mm512_add_ps(v, _mm512_set1_ps(e->bias[i]));
            if (e->relu) v = _mm512_add_ps(_mm512_max_ps(zero, v), zero);
            _mm512_storeu_ps(cp, v);
        }
    }
}
#endif

/* MC multiple of MR, NC multiple of NR; NC here is the per-thread B block (L2). */
static const fc_kernel k_generic = {4, 8, 512, 256, 128, ukr_generic_4x8, "generic"};
#if FC_X86
static const fc_kernel k_avx2 = {6, 16, 4080, 256, 192, ukr_avx2_6x16, "avx2"};
static const fc_kernel k_avx512 = {12, 32, 3072, 384, 480, ukr_avx512_12x32, "avx512"};
#endif

const fc_kernel *fc_gemm_kernel(void)
{
#if FC_X86
    switch (fc_isa()) {
    case FC_ISA_AVX512: return &k_avx512;
    case FC_ISA_AVX2: return &k_avx2;
    default: break;
    }
#endif
    return &k_generic;
}

/* ------------------------------------------------------------------ workspace */

float *fc_alloc_floats(int64_t n)
{
    size_t bytes = ((size_t)(n > 0 ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
    return (float *)aligned_alloc(64, bytes);
}

void fc_free(void *p) { free(p); }

static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

int64_t fc_ws_a_size(const fc_kernel *k, int64_t M, int64_t K)
{
    return min64(k->mc, round_up(M, k->mr)) * min64(k->kc, K);
}
int64_t fc_ws_b_size(const fc_kernel *k, int64_t N, int64_t K)
{
    return min64(k->nc, round_up(N, k->nr)) * min64(k->kc, K);
}
int64_t fc_packed_a_size(const fc_kernel *k, int64_t M, int64_t K)
{
    return round_up(M, k->mr) * K;
}

/* ------------------------------------------------------------------ packing */

/* op(A)[i0 + (panels p0..p1)*MR .., k0 .. k0+kc) -> MR-row panels, each kc x MR (k-major),
   zero rows past M. Panel p lands at dst + p*MR*kc. */
static void pack_a(const fc_kernel *kr, int trans_a, const float *A, int64_t lda, int64_t M,
                   int64_t i0, int64_t k0, int64_t kc, int64_t p0, int64_t p1, float *dst)
{
    const int mr = kr->mr;
    for (int64_t p = p0; p < p1; ++p) {
        float *d = dst + p * mr * kc;
        int64_t ib = i0 + p * mr, rows = min64(mr, M - ib);
        if (!trans_a) {
            for (int64_t i = 0; i < rows; ++i) {
                const float *s = A + (ib + i) * lda + k0;
                for (int64_t k = 0; k < kc; ++k) d[k * mr + i] = s[k];
            }
        } else {
            for (int64_t k = 0; k < kc; ++k) {
                const float *s = A + (k0 + k) * lda + ib;
                for (int64_t i = 0; i < rows; ++i) d[k * mr + i] = s[i];
            }
        }
        for (int64_t i = rows; i < mr; ++i)
            for (int64_t k = 0; k < kc; ++k) d[k * mr + i] = 0.0f;
    }
}

/* op(B)[k0 .. k0+kc, j0 .. j0+nc) -> NR-column panels, each kc x NR (k-major), zero cols past nc. */
static void pack_b(const fc_kernel *kr, int trans_b, const float *B, int64_t ldb, int64_t k0,
                   int64_t kc, int64_t j0, int64_t nc, float *dst)
{
    const int nr = kr->nr;
    for (int64_t jp = 0; jp < nc; jp += nr, dst += nr * kc) {
        int64_t cols = min64(nr, nc - jp);
        if (!trans_b) {
            for (int64_t k = 0; k < kc; ++k) {
                const float *s = B + (k0 + k) * ldb + j0 + jp;
                float *d = dst + k * nr;
                memcpy(d, s, (size_t)cols * sizeof(float));
                for (int64_t j = cols; j < nr; ++j) d[j] = 0.0f;
            }
        } else {
            for (int64_t j = 0; j < cols; ++j) {
                const float *s = B + (j0 + jp + j) * ldb + k0;
                for (int64_t k = 0; k < kc; ++k) dst[k * nr + j] = s[k];
            }
            for (int64_t j = cols; j < nr; ++j)
                for (int64_t k = 0; k < kc; ++k) dst[k * nr + j] = 0.0f;
        }
    }
}

void fc_pack_a_full(const fc_kernel *k, int trans_a, int64_t M, int64_t K, const float *A,
                    int64_t lda, float *dst)
{
    /* Layout: KC block starting at k0 sits at dst + k0 * round_up(M, MR); inside it, the
       MR panels of all M rows, each kc x MR. fc_gemm_run indexes it the same way. */
    int64_t Mp = round_up(M, k->mr);
    for (int64_t k0 = 0; k0 < K; k0 += k->kc) {
        int64_t kc = min64(k->kc, K - k0);
        pack_a(k, trans_a, A, lda, M, 0, k0, kc, 0, Mp / k->mr, dst + k0 * Mp);
    }
}

/* ------------------------------------------------------------------ macro kernel */

/* Rows [ir0, ir1) (multiples of MR, relative to the A block) x columns of the packed B block. */
static void macro_kernel(const fc_kernel *kr, int64_t kc, int64_t mc, int64_t nc,
                         const float *Ablk, const float *Bblk, float *C, int64_t ldc,
                         const fc_epi *e, int64_t ir0, int64_t ir1)
{
    const int mr = kr->mr, nr = kr->nr;
    float tile[MAX_MR * MAX_NR] __attribute__((aligned(64)));
    static const fc_epi raw = {1.0f, 0.0f, NULL, 0};
    for (int64_t ir = ir0; ir < ir1; ir += mr) {
        const float *a = Ablk + ir * kc;
        int64_t rows = min64(mr, mc - ir);
        fc_epi ei = *e;
        if (ei.bias) ei.bias += ir;
        for (int64_t jr = 0; jr < nc; jr += nr) {
            const float *b = Bblk + jr * kc;
            float *c = C + ir * ldc + jr;
            int64_t cols = min64(nr, nc - jr);
            if (rows == mr && cols == nr) {
                kr->ukr(kc, a, b, c, ldc, &ei);
            } else {
                kr->ukr(kc, a, b, tile, nr, &raw);
                for (int64_t i = 0; i < rows; ++i)
                    for (int64_t j = 0; j < cols; ++j)
                        c[i * ldc + j] = epi_apply(tile[i * nr + j], &c[i * ldc + j], &ei, i);
            }
        }
    }
}

/* The body every thread of one GEMM runs; tid/nth split the work, barriers only if nth > 1. */
static void gemm_thread(const fc_gemm_args *g, const fc_kernel *kr, float *ws_a, float *ws_b,
                        int tid, int nth)
{
    const int mr = kr->mr, nr = kr->nr;
    const int64_t M = g->M, N = g->N, K = g->K;
    const int64_t Mp = round_up(M, mr);
    float *bbuf = ws_b + (int64_t)tid * fc_ws_b_size(kr, N, K);

    /* Column blocks: a multiple of nth of them when N allows, each <= NC and a multiple of NR.
       With fewer column blocks than threads, each block's rows are split too. */
    int64_t nblk = (N + kr->nc - 1) / kr->nc;
    if (nth > 1) nblk = round_up(nblk, nth);
    int64_t ncb = round_up((N + nblk - 1) / nblk, nr);
    nblk = (N + ncb - 1) / ncb;
    int64_t msplit = nblk >= nth ? 1 : (nth + nblk - 1) / nblk;

    for (int64_t ic = 0; ic < M; ic += kr->mc) {
        int64_t mc = min64(kr->mc, M - ic);
        int64_t npan = (mc + mr - 1) / mr;
        for (int64_t pc = 0; pc < K; pc += kr->kc) {
            int64_t kc = min64(kr->kc, K - pc);
            const float *Ablk;
            if (g->Ap) {
                Ablk = g->Ap + pc * Mp + ic * kc;
            } else {
                int64_t p0 = npan * tid / nth, p1 = npan * (tid + 1) / nth;
                pack_a(kr, g->trans_a, g->A, g->lda, M, ic, pc, kc, p0, p1, ws_a);
                if (nth > 1) {
#pragma omp barrier
                }
                Ablk = ws_a;
            }
            fc_epi e = {g->alpha, pc == 0 ? g->beta : 1.0f,
                        pc + kc >= K && g->bias ? g->bias + ic : NULL, pc + kc >= K && g->relu};
            int64_t packed_jc = -1;
            for (int64_t item = tid; item < nblk * msplit; item += nth) {
                int64_t jb = item / msplit, ms = item % msplit;
                int64_t jc = jb * ncb, nc = min64(ncb, N - jc);
                int64_t ir0 = npan * ms / msplit * mr, ir1 = npan * (ms + 1) / msplit * mr;
                if (ir0 >= ir1) continue;
                if (packed_jc != jc) {
                    pack_b(kr, g->trans_b, g->B, g->ldb, pc, kc, jc, nc, bbuf);
                    packed_jc = jc;
                }
                macro_kernel(kr, kc, mc, nc, Ablk, bbuf, g->C + ic * g->ldc + jc, g->ldc, &e,
                             ir0, ir1);
            }
            if (nth > 1 && !g->Ap) { /* the shared A block is repacked next round */
#pragma omp barrier
            }
        }
    }
}

void fc_gemm_run(const fc_gemm_args *g, const fc_kernel *kr, float *ws_a, float *ws_b,
                 int nthreads)
{
    if (nthreads <= 1) {
        gemm_thread(g, kr, ws_a, ws_b, 0, 1);
        return;
    }
#pragma omp parallel num_threads(nthreads)
    gemm_thread(g, kr, ws_a, ws_b, fc_omp_thread_num(), fc_omp_num_threads());
}

/* ------------------------------------------------------------------ entry points */

static int sgemm_impl(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                       float *C, int64_t ldc, const float *bias, int relu, int parallel)
{
    const fc_kernel *kr = fc_gemm_kernel();
    /* ~2 * 64^3 flops per thread at least, and no more threads than NR-wide column or
       MR-high row panels can feed. */
    int nt = 1;
    if (parallel) {
        int64_t panels = (N + kr->nr - 1) / kr->nr * ((M + kr->mr - 1) / kr->mr);
        nt = fc_threads_for(M * N * K, 64 * 64 * 64);
        if (nt > panels) nt = (int)panels;
        if (nt < 1) nt = 1;
    }
    fc_gemm_args g = {trans_a, trans_b, M, N, K, alpha, beta, A, lda, NULL, B, ldb,
                      C, ldc, bias, relu};
    float *wa = fc_alloc_floats(fc_ws_a_size(kr, M, K));
    float *wb = fc_alloc_floats(fc_ws_b_size(kr, N, K) * nt);
    int rc = wa && wb ? 0 : -1;
    if (rc == 0) fc_gemm_run(&g, kr, wa, wb, nt);
    fc_free(wa);
    fc_free(wb);
    return rc;
}

/* op(A) (M,K), op(B) (K,N) -> C (M,N) */
void fc_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
              int64_t ldc)
{
    (void)sgemm_impl(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL, 0, 1);
}

/* op(A) (M,K), op(B) (K,N), bias (M,) -> C (M,N) */
int fc_sgemm_ex(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                 float *C, int64_t ldc, const float *bias_rows, int relu)
{
    return sgemm_impl(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
                      bias_rows, relu, 1);
}

/* op(A) (M,K), op(B) (K,N), bias (M,) -> C (M,N), one thread */
int fc_sgemm_serial(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                     float *C, int64_t ldc, const float *bias_rows, int relu)
{
    return sgemm_impl(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
                      bias_rows, relu, 0);
}
