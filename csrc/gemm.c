/* gemm.c -- packed, cache-blocked SGEMM (the BLIS / GotoBLAS structure), row-major.
 *
 * Variants inside, and why:
 *   ukr_avx512_12x32  12 rows x 32 cols (2 zmm per row, 24 accumulators, broadcast FMA):
 *                     AVX-512 CPUs; MC/KC/NC sized for 48 KiB L1d / 2 MiB L2 (not run here:
 *                     built and checked for spills only).
 *   ukr_avx2_6x16     6 x 16 (2 ymm per row, 12 accumulators), BLIS haswell's shape: every
 *                     AVX2+FMA CPU. Its k loop (unrolled by 4, A prefetched) is inline asm
 *                     because 12 accumulators + 2 B vectors + 1 broadcast use all 16 ymm and
 *                     GCC spilled accumulators to the stack from the C version; the C tile is
 *                     prefetched at entry. Blocking tuned on Zen 3 (32 KiB L1d, 512 KiB L2):
 *                     KC 256 (B micropanel 16 KiB in L1), MC 144 (A block 144 KiB in L2),
 *                     NC 2048 (B block 2 MiB in L3).
 *   ukr_generic_4x8   plain C: any CPU, and the reference path (FASTCONV_ISA=generic).
 * The microkernel is picked once at run time (fc_isa: __builtin_cpu_supports, FASTCONV_ISA).
 *   gemv_{n,t}_{avx2,generic}  fc_sgemv, y = op(A) x: memory bound (batch-1 fully connected
 *                     layers), so A is streamed once, 4 rows (n) or 4 k-rows (t) at a time.
 *   gemv_n4_{avx2,generic}  fc_sgemv_multi, Y = X A^T for a few vectors (linear with a small
 *                     batch): 2 rows of A x 4 vectors per pass, so A is read once per 4 rows.
 *   fma_chains_{avx512,avx2,generic}  fc_fma_peak_gflops, not a kernel: the machine's measured
 *                     FP32 peak (independent FMA chains, no memory traffic), the roof that
 *                     `fastconv bench` and `fastconv info` report GFLOP/s against.
 *
 * Loop nest (row-major C = A B; vectors run along N, A values are broadcast), BLIS order:
 *   for jc in N step NC
 *     for pc in K step KC
 *       pack B[pc.., jc..] into NR-column panels                  (B block, L3)
 *       for ic in M step MC
 *         pack A[ic.., pc..] into MR-row panels (or index fc_pack_a_full's output)  (L2)
 *         for jr in NR panels: for ir in MR panels: microkernel   (B micropanel stays in L1)
 * With a single A block (M <= MC: conv tiles, skinny GEMMs) a B block is used once, so its
 * width is capped at FC_B_ONCE_FLOATS / KC (128 KiB) to be read back from L2, not L3.
 * Packing: full 6-row A panels and transposed B (linear's weights) use AVX2 8x8 register
 * transposes; the rest is scalar.
 * beta is applied at the first KC block only; bias+ReLU (the conv epilogue) at the last.
 * Edge tiles (M % MR, N % NR) run the full microkernel into a stack tile, then copy the
 * valid part through the same epilogue, so the microkernels have no edge code.
 * Parallelism: one OpenMP region per GEMM; C is cut into a pm x pn grid of rectangles
 * (pm * pn = threads, pm and pn chosen for the smallest per-thread M/pm + N/pn, in whole
 * MR / NR panels), and each thread runs the loop nest above on its own rectangle with its
 * own workspace: no barriers, no worksharing constructs, so fc_gemm_run(..., nthreads=1) is
 * safe inside someone else's region. (Each thread packs the A rows / B columns it needs, so
 * a 2 x 1 grid packs B twice, in parallel; that costs less than a barrier per block.)
 */
#include "fastconv.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#if FC_X86
#include <immintrin.h>
#endif

#define MAX_MR 12
#define MAX_NR 32
#ifndef FC_PF_A
#define FC_PF_A 384 /* bytes ahead on the A micropanel stream (16 k-steps of 6 rows) */
#endif
#ifndef FC_B_ONCE_FLOATS
#define FC_B_ONCE_FLOATS 32768 /* B block used by one A block only: 128 KiB of L2 */
#endif
#define FC_STR_(x) #x
#define FC_STR(x) FC_STR_(x)

static inline float epi_apply(float acc, const float *c, const fc_epi *e, int64_t row)
{
    float v = e->alpha * acc;
    if (e->beta != 0.0f) v += e->beta * *c;
    if (e->bias) v += e->bias[row];
    if (e->relu) v = fc_relu1(v);
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
/* Epilogue of one 8-float vector of a tile row (alpha, beta, bias, relu read once by the caller). */
#define FC_EPI_V(V, CP, BIAS_I)                                                              \
    do {                                                                                  \
        __m256 v_ = (V);                                                                  \
        if (!alpha_one) v_ = _mm256_mul_ps(alpha, v_);                                    \
        if (has_beta) v_ = _mm256_fmadd_ps(beta, _mm256_loadu_ps(CP), v_);               \
        if (bias) v_ = _mm256_add_ps(v_, _mm256_set1_ps(BIAS_I));                          \
        /* max(0, v) keeps a NaN v (second operand); + 0 turns -0 into +0 */              \
        if (relu) v_ = _mm256_add_ps(_mm256_max_ps(_mm256_setzero_ps(), v_),               \
                                     _mm256_setzero_ps());                                 \
        _mm256_storeu_ps((CP), v_);                                                       \
    } while (0)

/* a (kc,6), b (kc,16) -> c (6,16). k unrolled by 4; the C tile is prefetched at entry so its
   misses overlap the k loop, and b (the stream from L2) is prefetched ~8 k-steps ahead. */
FC_TARGET_AVX2 static void ukr_avx2_6x16(int64_t kc, const float *a, const float *b, float *c,
                                         int64_t ldc, const fc_epi *e)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 15), _MM_HINT_T0);
    }
    /* k loop, unrolled by 4, in asm: exactly 12 accumulators + 2 B vectors + 1 broadcast
       = 16 ymm, which GCC's allocator spilled (2 accumulators on the stack) from C. */
    int64_t k4 = kc / 4;
    if (k4 > 0) {
        __asm__ volatile(
            "1:\n\t"
            "prefetcht0 " FC_STR(FC_PF_A) "(%[a])\n\t"
            "prefetcht0 " FC_STR(FC_PF_A) "+64(%[a])\n\t"
            "vmovaps 0(%[b]), %%ymm14\n\t"
            "vmovaps 32(%[b]), %%ymm15\n\t"
            "vbroadcastss 0(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c00]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c01]\n\t"
            "vbroadcastss 4(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c10]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c11]\n\t"
            "vbroadcastss 8(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c20]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c21]\n\t"
            "vbroadcastss 12(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c30]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c31]\n\t"
            "vbroadcastss 16(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c40]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c41]\n\t"
            "vbroadcastss 20(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c50]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c51]\n\t"
            "vmovaps 64(%[b]), %%ymm14\n\t"
            "vmovaps 96(%[b]), %%ymm15\n\t"
            "vbroadcastss 24(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c00]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c01]\n\t"
            "vbroadcastss 28(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c10]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c11]\n\t"
            "vbroadcastss 32(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c20]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c21]\n\t"
            "vbroadcastss 36(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c30]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c31]\n\t"
            "vbroadcastss 40(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c40]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c41]\n\t"
            "vbroadcastss 44(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c50]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c51]\n\t"
            "vmovaps 128(%[b]), %%ymm14\n\t"
            "vmovaps 160(%[b]), %%ymm15\n\t"
            "vbroadcastss 48(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c00]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c01]\n\t"
            "vbroadcastss 52(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c10]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c11]\n\t"
            "vbroadcastss 56(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c20]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c21]\n\t"
            "vbroadcastss 60(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c30]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c31]\n\t"
            "vbroadcastss 64(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c40]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c41]\n\t"
            "vbroadcastss 68(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c50]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c51]\n\t"
            "vmovaps 192(%[b]), %%ymm14\n\t"
            "vmovaps 224(%[b]), %%ymm15\n\t"
            "vbroadcastss 72(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c00]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c01]\n\t"
            "vbroadcastss 76(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c10]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c11]\n\t"
            "vbroadcastss 80(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c20]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c21]\n\t"
            "vbroadcastss 84(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c30]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c31]\n\t"
            "vbroadcastss 88(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c40]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c41]\n\t"
            "vbroadcastss 92(%[a]), %%ymm13\n\t"
            "vfmadd231ps %%ymm14, %%ymm13, %[c50]\n\t"
            "vfmadd231ps %%ymm15, %%ymm13, %[c51]\n\t"
            "addq $96, %[a]\n\t"
            "addq $256, %[b]\n\t"
            "decq %[n]\n\t"
            "jnz 1b\n\t"
            : [a] "+r"(a), [b] "+r"(b), [n] "+r"(k4),
              [c00] "+x"(c00), [c01] "+x"(c01), [c10] "+x"(c10), [c11] "+x"(c11), [c20] "+x"(c20), [c21] "+x"(c21), [c30] "+x"(c30), [c31] "+x"(c31), [c40] "+x"(c40), [c41] "+x"(c41), [c50] "+x"(c50), [c51] "+x"(c51)
            :
            : "xmm13", "xmm14", "xmm15", "cc", "memory");
    }
    for (int64_t k = kc % 4; k > 0; --k, a += 6, b += 16) {
        const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        __m256 ai = _mm256_broadcast_ss(a + 0);
        c00 = _mm256_fmadd_ps(ai, b0, c00); c01 = _mm256_fmadd_ps(ai, b1, c01);
        ai = _mm256_broadcast_ss(a + 1);
        c10 = _mm256_fmadd_ps(ai, b0, c10); c11 = _mm256_fmadd_ps(ai, b1, c11);
        ai = _mm256_broadcast_ss(a + 2);
        c20 = _mm256_fmadd_ps(ai, b0, c20); c21 = _mm256_fmadd_ps(ai, b1, c21);
        ai = _mm256_broadcast_ss(a + 3);
        c30 = _mm256_fmadd_ps(ai, b0, c30); c31 = _mm256_fmadd_ps(ai, b1, c31);
        ai = _mm256_broadcast_ss(a + 4);
        c40 = _mm256_fmadd_ps(ai, b0, c40); c41 = _mm256_fmadd_ps(ai, b1, c41);
        ai = _mm256_broadcast_ss(a + 5);
        c50 = _mm256_fmadd_ps(ai, b0, c50); c51 = _mm256_fmadd_ps(ai, b1, c51);
    }
    const float *bias = e->bias;
    const int relu = e->relu, has_beta = e->beta != 0.0f, alpha_one = e->alpha == 1.0f;
    const __m256 alpha = _mm256_set1_ps(e->alpha), beta = _mm256_set1_ps(e->beta);
    FC_EPI_V(c00, c, bias ? bias[0] : 0.0f);
    FC_EPI_V(c01, c + 8, bias ? bias[0] : 0.0f);
    FC_EPI_V(c10, c + ldc, bias ? bias[1] : 0.0f);
    FC_EPI_V(c11, c + ldc + 8, bias ? bias[1] : 0.0f);
    FC_EPI_V(c20, c + 2 * ldc, bias ? bias[2] : 0.0f);
    FC_EPI_V(c21, c + 2 * ldc + 8, bias ? bias[2] : 0.0f);
    FC_EPI_V(c30, c + 3 * ldc, bias ? bias[3] : 0.0f);
    FC_EPI_V(c31, c + 3 * ldc + 8, bias ? bias[3] : 0.0f);
    FC_EPI_V(c40, c + 4 * ldc, bias ? bias[4] : 0.0f);
    FC_EPI_V(c41, c + 4 * ldc + 8, bias ? bias[4] : 0.0f);
    FC_EPI_V(c50, c + 5 * ldc, bias ? bias[5] : 0.0f);
    FC_EPI_V(c51, c + 5 * ldc + 8, bias ? bias[5] : 0.0f);
}
#undef FC_EPI_V

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
static const fc_kernel k_generic = {4, 8, 128, 256, 1024, ukr_generic_4x8, "generic"};
#if FC_X86
static const fc_kernel k_avx2 = {6, 16, 144, 256, 2048, ukr_avx2_6x16, "avx2"};
static const fc_kernel k_avx512 = {12, 32, 480, 384, 3072, ukr_avx512_12x32, "avx512"};
#endif

#ifdef FC_GEMM_TUNE /* dev only: FASTCONV_GEMM_BLOCK=mc,kc,nc overrides the avx2 blocking */
#include <stdio.h>
static fc_kernel k_tune;
#endif

const fc_kernel *fc_gemm_kernel(void)
{
#ifdef FC_GEMM_TUNE
    const char *ov = getenv("FASTCONV_GEMM_BLOCK");
    if (ov && fc_isa() == FC_ISA_AVX2) {
        k_tune = k_avx2;
        sscanf(ov, "%ld,%ld,%ld", &k_tune.mc, &k_tune.kc, &k_tune.nc);
        return &k_tune;
    }
#endif
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
    /* Refuse (NULL, which callers report as -1 = out of memory) a negative count (an
       int64 size product that overflowed, see fc_mul_ws) or one whose byte size would wrap
       size_t: before this check n * 4 + 63 wrapped to a small buffer that the caller then
       overran. */
    if (n < 0 || (uint64_t)n > ((uint64_t)SIZE_MAX - 63) / sizeof(float)) return NULL;
    size_t bytes = ((size_t)(n > 0 ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
    return (float *)aligned_alloc(64, bytes);
}

int64_t fc_mul_ws(int64_t a, int64_t b)
{
    int64_t r;
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) return -1;
    return r;
}

void fc_free(void *p) { free(p); }

static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* No shared A workspace any more (kept for source compatibility): each thread packs its A
   blocks into its own workspace, after its B block. */
int64_t fc_ws_a_size(const fc_kernel *k, int64_t M, int64_t K)
{
    (void)k, (void)M, (void)K;
    return 0;
}
/* One thread: B block (KC x NC, 64-byte padded) + A block (MC x KC). */
int64_t fc_ws_b_size(const fc_kernel *k, int64_t N, int64_t K)
{
    int64_t kc = min64(k->kc, K);
    return round_up(min64(k->nc, round_up(N, k->nr)) * kc, 16) + k->mc * kc;
}
int64_t fc_packed_a_size(const fc_kernel *k, int64_t M, int64_t K)
{
    return fc_mul_ws(round_up(M, k->mr), K);
}

/* ------------------------------------------------------------------ packing */

#if FC_X86
/* r[0..7] (rows) -> r[0..7] (columns): the 8 x 8 transpose in registers. */
FC_TARGET_AVX2 static inline void transpose8(__m256 r[8])
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* 8 * G rows of s (row stride lds), k = 0 .. kc -> d[k * ldd + 0 .. 8G-1] (columns of a B
   panel), by 8 x 8 transposes. G = 2 does both transposes of a k-block at once, so that for
   a 16-wide panel each k writes one whole 64-byte line: two G = 1 passes wrote half-lines,
   and over a 147 KB panel the first pass's halves left L1 before the second filled them in
   (AlexNet conv3's 3.5 MB of weights: 159-162 -> 107-121 us). */
FC_TARGET_AVX2 static inline __attribute__((always_inline)) void
pack_bt_avx2(const float *s, int64_t lds, int64_t kc, float *d, int64_t ldd, const int G)
{
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
        __m256 r[2][8];
        for (int g = 0; g < G; ++g) {
#pragma GCC unroll 8
            for (int j = 0; j < 8; ++j) r[g][j] = _mm256_loadu_ps(s + (8 * g + j) * lds + k);
            transpose8(r[g]);
        }
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j)
            for (int g = 0; g < G; ++g) _mm256_storeu_ps(d + (k + j) * ldd + 8 * g, r[g][j]);
    }
    for (; k < kc; ++k)
        for (int j = 0; j < 8 * G; ++j) d[k * ldd + j] = s[j * lds + k];
}
FC_TARGET_AVX2 static void pack_bt8_avx2(const float *s, int64_t lds, int64_t kc, float *d,
                                         int64_t ldd)
{
    pack_bt_avx2(s, lds, kc, d, ldd, 1);
}
FC_TARGET_AVX2 static void pack_bt16_avx2(const float *s, int64_t lds, int64_t kc, float *d)
{
    pack_bt_avx2(s, lds, kc, d, 16, 2);
}

/* 6 full rows of s (row stride lds), k = 0 .. kc -> d[k * 6 + 0..5] (one MR = 6 A panel).
   Each k's 8-float store overlaps the next one's; the last of a group of 8 stores 4 + 2. */
FC_TARGET_AVX2 static void pack_a6_avx2(const float *s, int64_t lds, int64_t kc, float *d)
{
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
        __m256 r[8];
#pragma GCC unroll 6
        for (int j = 0; j < 6; ++j) r[j] = _mm256_loadu_ps(s + j * lds + k);
        r[6] = r[7] = _mm256_setzero_ps();
        transpose8(r);
#pragma GCC unroll 7
        for (int j = 0; j < 7; ++j) _mm256_storeu_ps(d + (k + j) * 6, r[j]);
        __m128 lo = _mm256_castps256_ps128(r[7]), hi = _mm256_extractf128_ps(r[7], 1);
        _mm_storeu_ps(d + (k + 7) * 6, lo);
        _mm_storel_pi((__m64 *)(d + (k + 7) * 6 + 4), hi);
    }
    for (; k < kc; ++k)
        for (int j = 0; j < 6; ++j) d[k * 6 + j] = s[j * lds + k];
}
#endif

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
#if FC_X86
            if (mr == 6 && rows == 6 && fc_isa() >= FC_ISA_AVX2) {
                pack_a6_avx2(A + ib * lda + k0, lda, kc, d);
                continue;
            }
#endif
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
            const float *s0 = B + k0 * ldb + j0 + jp;
            if (cols == 16 && nr == 16) { /* the avx2 panel: an inlined 64-byte copy, no call */
                for (int64_t k = 0; k < kc; ++k) memcpy(dst + k * 16, s0 + k * ldb, 64);
                continue;
            }
            for (int64_t k = 0; k < kc; ++k) {
                const float *s = s0 + k * ldb;
                float *d = dst + k * nr;
                memcpy(d, s, (size_t)cols * sizeof(float));
                for (int64_t j = cols; j < nr; ++j) d[j] = 0.0f;
            }
        } else {
            fc_pack_rows_transposed(B + (j0 + jp) * ldb + k0, ldb, cols, kc, dst, nr);
        }
    }
}

void fc_pack_rows_transposed(const float *s, int64_t lds, int64_t rows, int64_t kc, float *d,
                             int64_t ldd)
{
    int64_t j = 0;
#if FC_X86
    if (fc_isa() >= FC_ISA_AVX2) { /* linear's W (out, in), conv weights: 8 x 8 transposes */
        if (rows == 16 && ldd == 16) /* a whole 16-wide panel (the indirect conv's, NR 16) */
            pack_bt16_avx2(s, lds, kc, d), j = 16;
        for (; j + 8 <= rows; j += 8) pack_bt8_avx2(s + j * lds, lds, kc, d + j, ldd);
    }
#endif
    for (; j < rows; ++j)
        for (int64_t k = 0; k < kc; ++k) d[k * ldd + j] = s[j * lds + k];
    for (j = rows; j < ldd; ++j)
        for (int64_t k = 0; k < kc; ++k) d[k * ldd + j] = 0.0f;
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

/* The packed A block (mc rows, MR panels) x the packed B block (nc columns, NR panels) ->
   C (mc, nc). jr outer, ir inner: one B micropanel (kc x NR) stays in L1 while the A block
   (L2) streams past it. */
static void macro_kernel(const fc_kernel *kr, int64_t kc, int64_t mc, int64_t nc,
                         const float *Ablk, const float *Bblk, float *C, int64_t ldc,
                         const fc_epi *e)
{
    const int mr = kr->mr, nr = kr->nr;
    float tile[MAX_MR * MAX_NR] __attribute__((aligned(64)));
    static const fc_epi raw = {1.0f, 0.0f, NULL, 0};
    for (int64_t jr = 0; jr < nc; jr += nr) {
        const float *b = Bblk + jr * kc;
        int64_t cols = min64(nr, nc - jr);
        for (int64_t ir = 0; ir < mc; ir += mr) {
            const float *a = Ablk + ir * kc;
            float *c = C + ir * ldc + jr;
            int64_t rows = min64(mr, mc - ir);
            fc_epi ei = *e;
            if (ei.bias) ei.bias += ir;
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

/* C[i0:i1, j0:j1] of the GEMM, by one thread with its own workspace ws (fc_ws_b_size floats):
   for jc (NC): for pc (KC): pack B block; for ic (MC): pack A block (or index g->Ap); macro.
   i0 is a multiple of MR (so it starts a panel of g->Ap), and i1 is M or a multiple of MR. */
static void gemm_part(const fc_gemm_args *g, const fc_kernel *kr, float *ws, int64_t i0,
                      int64_t i1, int64_t j0, int64_t j1)
{
    const int mr = kr->mr;
    const int64_t K = g->K, Mp = round_up(g->M, mr);
    float *bbuf = ws, *abuf = ws + round_up(min64(kr->nc, round_up(g->N, kr->nr)) *
                                            min64(kr->kc, K), 16);
    /* With a single A block (conv tiles, small M) each B block is used once: keep it small
       enough to still be in L2 when the microkernels read it back (not NC, an L3 size). */
    int64_t ncb = kr->nc;
    if (i1 - i0 <= kr->mc) {
        int64_t cap = FC_B_ONCE_FLOATS / min64(kr->kc, K) / kr->nr * kr->nr;
        ncb = min64(ncb, cap > kr->nr ? cap : kr->nr);
    }
    for (int64_t jc = j0; jc < j1; jc += ncb) {
        int64_t nc = min64(ncb, j1 - jc);
        for (int64_t pc = 0; pc < K; pc += kr->kc) {
            int64_t kc = min64(kr->kc, K - pc);
            pack_b(kr, g->trans_b, g->B, g->ldb, pc, kc, jc, nc, bbuf);
            const int last = pc + kc >= K;
            for (int64_t ic = i0; ic < i1; ic += kr->mc) {
                int64_t mc = min64(kr->mc, i1 - ic);
                const float *Ablk;
                if (g->Ap) {
                    Ablk = g->Ap + pc * Mp + ic * kc;
                } else {
                    pack_a(kr, g->trans_a, g->A, g->lda, g->M, ic, pc, kc, 0,
                           (mc + mr - 1) / mr, abuf);
                    Ablk = abuf;
                }
                fc_epi e = {g->alpha, pc == 0 ? g->beta : 1.0f,
                            last && g->bias ? g->bias + ic : NULL, last && g->relu};
                macro_kernel(kr, kc, mc, nc, Ablk, bbuf, g->C + ic * g->ldc + jc, g->ldc, &e);
            }
        }
    }
}

/* Thread grid pm x pn = nth for an (M, N) output: the factorisation with the smallest
   per-thread tile perimeter M/pm + N/pn (the packing traffic), so square problems split
   both ways and skinny ones split along their long side only. */
static void thread_grid(int64_t M, int64_t N, int nth, int *pm, int *pn)
{
    double best = -1.0;
    for (int d = 1; d <= nth; ++d) {
        if (nth % d) continue;
        double cost = (double)M / d + (double)N / (nth / d);
        if (best < 0.0 || cost < best) {
            best = cost;
            *pm = d;
            *pn = nth / d;
        }
    }
}

/* The body every thread of one GEMM runs: its own rectangle of C, no barriers. */
static void gemm_thread(const fc_gemm_args *g, const fc_kernel *kr, float *ws_b, int tid,
                        int nth)
{
    const int mr = kr->mr, nr = kr->nr;
    int pm = 1, pn = 1;
    thread_grid(g->M, g->N, nth, &pm, &pn);
    const int tm = tid / pn, tn = tid % pn;
    const int64_t mpan = (g->M + mr - 1) / mr, npan = (g->N + nr - 1) / nr;
    int64_t i0 = mpan * tm / pm * mr, i1 = min64(g->M, mpan * (tm + 1) / pm * mr);
    int64_t j0 = npan * tn / pn * nr, j1 = min64(g->N, npan * (tn + 1) / pn * nr);
    if (i0 >= i1 || j0 >= j1) return;
    gemm_part(g, kr, ws_b + (int64_t)tid * fc_ws_b_size(kr, g->N, g->K), i0, i1, j0, j1);
}

void fc_gemm_run(const fc_gemm_args *g, const fc_kernel *kr, float *ws_a, float *ws_b,
                 int nthreads)
{
    (void)ws_a; /* each thread packs A into its own part of ws_b */
    if (nthreads <= 1) {
        gemm_thread(g, kr, ws_b, 0, 1);
        return;
    }
#pragma omp parallel num_threads(nthreads)
    gemm_thread(g, kr, ws_b, fc_omp_thread_num(), fc_omp_num_threads());
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
    float *wb = fc_alloc_floats(fc_ws_b_size(kr, N, K) * nt);
    int rc = wb ? 0 : -1;
    if (rc == 0) fc_gemm_run(&g, kr, NULL, wb, nt);
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

/* ------------------------------------------------------------------ GEMV (memory bound) */

/* One output: v = alpha*acc (+ beta*y unless beta == 0) (+ bias). */
static inline float gemv_epi(float acc, float alpha, float beta, const float *y,
                             const float *bias, int64_t i)
{
    float v = alpha * acc;
    if (beta != 0.0f) v += beta * y[i];
    if (bias) v += bias[i];
    return v;
}

/* r . x over K, 8 partial sums so the compiler vectorises it at the baseline ISA. */
static inline float dot_generic(const float *r, const float *x, int64_t K)
{
    float s[8] = {0};
    int64_t k = 0;
    for (; k + 8 <= K; k += 8)
        for (int j = 0; j < 8; ++j) s[j] += r[k + j] * x[k + j];
    float acc = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
    for (; k < K; ++k) acc += r[k] * x[k];
    return acc;
}

/* Rows [i0, i1) of y = A x, A (M,K) row stride lda: plain C (the compiler vectorises the
   4-row dot products at the baseline ISA). */
static void gemv_n_generic(int64_t i0, int64_t i1, int64_t K, float alpha, const float *A,
                           int64_t lda, const float *x, float beta, float *y, const float *bias)
{
    for (int64_t i = i0; i < i1; ++i)
        y[i] = gemv_epi(dot_generic(A + i * lda, x, K), alpha, beta, y, bias, i);
}

/* Columns [j0, j1) of y = A^T x, A stored (K,M) row stride lda: a block of y accumulates
   on the stack while the rows of A stream past, 4 at a time. */
#define GEMV_T_BLOCK 1024
static void gemv_t_generic(int64_t j0, int64_t j1, int64_t K, float alpha, const float *A,
                           int64_t lda, const float *x, float beta, float *y, const float *bias)
{
    float acc[GEMV_T_BLOCK];
    for (int64_t jb = j0; jb < j1; jb += GEMV_T_BLOCK) {
        int64_t n = min64(GEMV_T_BLOCK, j1 - jb);
        for (int64_t j = 0; j < n; ++j) acc[j] = 0.0f;
        int64_t k = 0;
        for (; k + 4 <= K; k += 4) {
            const float *r0 = A + k * lda + jb, *r1 = r0 + lda, *r2 = r1 + lda, *r3 = r2 + lda;
            const float x0 = x[k], x1 = x[k + 1], x2 = x[k + 2], x3 = x[k + 3];
            for (int64_t j = 0; j < n; ++j)
                acc[j] += (x0 * r0[j] + x1 * r1[j]) + (x2 * r2[j] + x3 * r3[j]);
        }
        for (; k < K; ++k) {
            const float *r0 = A + k * lda + jb, x0 = x[k];
            for (int64_t j = 0; j < n; ++j) acc[j] += x0 * r0[j];
        }
        for (int64_t j = 0; j < n; ++j) y[jb + j] = gemv_epi(acc[j], alpha, beta, y, bias, jb + j);
    }
}

#if FC_X86
FC_TARGET_AVX2 static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* Rows [i0, i1) of y = A x: 4 rows at a time, 2 accumulators per row (16 k per step), so 8
   independent FMA chains and 4 sequential streams of A; horizontal sums at the end. */
FC_TARGET_AVX2 static void gemv_n_avx2(int64_t i0, int64_t i1, int64_t K, float alpha,
                                       const float *A, int64_t lda, const float *x, float beta,
                                       float *y, const float *bias)
{
    int64_t i = i0;
    for (; i + 4 <= i1; i += 4) {
        const float *r0 = A + i * lda, *r1 = r0 + lda, *r2 = r1 + lda, *r3 = r2 + lda;
        __m256 s00 = _mm256_setzero_ps(), s01 = s00, s10 = s00, s11 = s00;
        __m256 s20 = s00, s21 = s00, s30 = s00, s31 = s00;
        int64_t k = 0;
        for (; k + 16 <= K; k += 16) {
            const __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
            s00 = _mm256_fmadd_ps(_mm256_loadu_ps(r0 + k), x0, s00);
            s01 = _mm256_fmadd_ps(_mm256_loadu_ps(r0 + k + 8), x1, s01);
            s10 = _mm256_fmadd_ps(_mm256_loadu_ps(r1 + k), x0, s10);
            s11 = _mm256_fmadd_ps(_mm256_loadu_ps(r1 + k + 8), x1, s11);
            s20 = _mm256_fmadd_ps(_mm256_loadu_ps(r2 + k), x0, s20);
            s21 = _mm256_fmadd_ps(_mm256_loadu_ps(r2 + k + 8), x1, s21);
            s30 = _mm256_fmadd_ps(_mm256_loadu_ps(r3 + k), x0, s30);
            s31 = _mm256_fmadd_ps(_mm256_loadu_ps(r3 + k + 8), x1, s31);
        }
        if (k + 8 <= K) {
            const __m256 x0 = _mm256_loadu_ps(x + k);
            s00 = _mm256_fmadd_ps(_mm256_loadu_ps(r0 + k), x0, s00);
            s10 = _mm256_fmadd_ps(_mm256_loadu_ps(r1 + k), x0, s10);
            s20 = _mm256_fmadd_ps(_mm256_loadu_ps(r2 + k), x0, s20);
            s30 = _mm256_fmadd_ps(_mm256_loadu_ps(r3 + k), x0, s30);
            k += 8;
        }
        float t0 = hsum8(_mm256_add_ps(s00, s01)), t1 = hsum8(_mm256_add_ps(s10, s11));
        float t2 = hsum8(_mm256_add_ps(s20, s21)), t3 = hsum8(_mm256_add_ps(s30, s31));
        for (; k < K; ++k) {
            t0 += r0[k] * x[k];
            t1 += r1[k] * x[k];
            t2 += r2[k] * x[k];
            t3 += r3[k] * x[k];
        }
        y[i] = gemv_epi(t0, alpha, beta, y, bias, i);
        y[i + 1] = gemv_epi(t1, alpha, beta, y, bias, i + 1);
        y[i + 2] = gemv_epi(t2, alpha, beta, y, bias, i + 2);
        y[i + 3] = gemv_epi(t3, alpha, beta, y, bias, i + 3);
    }
    if (i < i1) gemv_n_generic(i, i1, K, alpha, A, lda, x, beta, y, bias);
}

/* Columns [j0, j1) of y = A^T x: 4 rows of A per pass over a stack block of y. */
FC_TARGET_AVX2 static void gemv_t_avx2(int64_t j0, int64_t j1, int64_t K, float alpha,
                                       const float *A, int64_t lda, const float *x, float beta,
                                       float *y, const float *bias)
{
    float acc[GEMV_T_BLOCK] __attribute__((aligned(32)));
    for (int64_t jb = j0; jb < j1; jb += GEMV_T_BLOCK) {
        int64_t n = min64(GEMV_T_BLOCK, j1 - jb), n8 = n / 8 * 8;
        memset(acc, 0, (size_t)n * sizeof(float));
        int64_t k = 0;
        for (; k + 4 <= K; k += 4) {
            const float *r0 = A + k * lda + jb, *r1 = r0 + lda, *r2 = r1 + lda, *r3 = r2 + lda;
            const __m256 x0 = _mm256_set1_ps(x[k]), x1 = _mm256_set1_ps(x[k + 1]);
            const __m256 x2 = _mm256_set1_ps(x[k + 2]), x3 = _mm256_set1_ps(x[k + 3]);
            int64_t j = 0;
            for (; j < n8; j += 8) {
                __m256 s = _mm256_fmadd_ps(x0, _mm256_loadu_ps(r0 + j), _mm256_load_ps(acc + j));
                __m256 u = _mm256_mul_ps(x1, _mm256_loadu_ps(r1 + j));
                s = _mm256_fmadd_ps(x2, _mm256_loadu_ps(r2 + j), s);
                u = _mm256_fmadd_ps(x3, _mm256_loadu_ps(r3 + j), u);
                _mm256_store_ps(acc + j, _mm256_add_ps(s, u));
            }
            for (; j < n; ++j)
                acc[j] += (x[k] * r0[j] + x[k + 1] * r1[j]) + (x[k + 2] * r2[j] + x[k + 3] * r3[j]);
        }
        for (; k < K; ++k) {
            const float *r0 = A + k * lda + jb;
            const __m256 x0 = _mm256_set1_ps(x[k]);
            int64_t j = 0;
            for (; j < n8; j += 8)
                _mm256_store_ps(acc + j, _mm256_fmadd_ps(x0, _mm256_loadu_ps(r0 + j),
                                                         _mm256_load_ps(acc + j)));
            for (; j < n; ++j) acc[j] += x[k] * r0[j];
        }
        for (int64_t j = 0; j < n; ++j) y[jb + j] = gemv_epi(acc[j], alpha, beta, y, bias, jb + j);
    }
}
#endif

/* Y[v, i0:i1] = A[i0:i1] X[v] for nv <= 4 vectors X[v] (row stride ldx): A streamed once for
   all of them. Plain C. */
static void gemv_n4_generic(int64_t i0, int64_t i1, int64_t K, int nv, float alpha,
                            const float *A, int64_t lda, const float *X, int64_t ldx,
                            float beta, float *Y, int64_t ldy, const float *bias)
{
    for (int64_t i = i0; i < i1; ++i)
        for (int v = 0; v < nv; ++v)
            Y[v * ldy + i] = gemv_epi(dot_generic(A + i * lda, X + v * ldx, K), alpha, beta,
                                      Y + v * ldy, bias, i);
}

#if FC_X86
/* Same, AVX2: 2 rows of A x 4 vectors = 8 accumulators (missing vectors alias X[0], their
   sums are dropped: the loop is memory bound, the spare FMAs are free). */
FC_TARGET_AVX2 static void gemv_n4_avx2(int64_t i0, int64_t i1, int64_t K, int nv, float alpha,
                                        const float *A, int64_t lda, const float *X,
                                        int64_t ldx, float beta, float *Y, int64_t ldy,
                                        const float *bias)
{
    const float *x0 = X, *x1 = nv > 1 ? X + ldx : X, *x2 = nv > 2 ? X + 2 * ldx : X;
    const float *x3 = nv > 3 ? X + 3 * ldx : X;
    int64_t i = i0;
    for (; i + 2 <= i1; i += 2) {
        const float *r0 = A + i * lda, *r1 = r0 + lda;
        __m256 s00 = _mm256_setzero_ps(), s01 = s00, s02 = s00, s03 = s00;
        __m256 s10 = s00, s11 = s00, s12 = s00, s13 = s00;
        int64_t k = 0;
        for (; k + 8 <= K; k += 8) {
            const __m256 a0 = _mm256_loadu_ps(r0 + k), a1 = _mm256_loadu_ps(r1 + k);
            __m256 xv = _mm256_loadu_ps(x0 + k);
            s00 = _mm256_fmadd_ps(a0, xv, s00);
            s10 = _mm256_fmadd_ps(a1, xv, s10);
            xv = _mm256_loadu_ps(x1 + k);
            s01 = _mm256_fmadd_ps(a0, xv, s01);
            s11 = _mm256_fmadd_ps(a1, xv, s11);
            xv = _mm256_loadu_ps(x2 + k);
            s02 = _mm256_fmadd_ps(a0, xv, s02);
            s12 = _mm256_fmadd_ps(a1, xv, s12);
            xv = _mm256_loadu_ps(x3 + k);
            s03 = _mm256_fmadd_ps(a0, xv, s03);
            s13 = _mm256_fmadd_ps(a1, xv, s13);
        }
        float t[2][4] = {{hsum8(s00), hsum8(s01), hsum8(s02), hsum8(s03)},
                         {hsum8(s10), hsum8(s11), hsum8(s12), hsum8(s13)}};
        const float *xs[4] = {x0, x1, x2, x3};
        for (; k < K; ++k)
            for (int v = 0; v < 4; ++v) {
                t[0][v] += r0[k] * xs[v][k];
                t[1][v] += r1[k] * xs[v][k];
            }
        for (int v = 0; v < nv; ++v) {
            float *y = Y + v * ldy;
            y[i] = gemv_epi(t[0][v], alpha, beta, y, bias, i);
            y[i + 1] = gemv_epi(t[1][v], alpha, beta, y, bias, i + 1);
        }
    }
    if (i < i1) gemv_n4_generic(i, i1, K, nv, alpha, A, lda, X, ldx, beta, Y, ldy, bias);
}
#endif

/* Y (nv, M) = alpha X (nv, K) A^T + beta Y + bias, A (M, K): groups of 4 vectors, each group
   streams A once; parallel over blocks of 8 rows of A. */
void fc_sgemv_multi(int64_t nv, int64_t M, int64_t K, float alpha, const float *A, int64_t lda,
                    const float *X, int64_t ldx, float beta, float *Y, int64_t ldy,
                    const float *bias)
{
    if (nv == 1) {
        fc_sgemv(0, M, K, alpha, A, lda, X, beta, Y, bias);
        return;
    }
    void (*f)(int64_t, int64_t, int64_t, int, float, const float *, int64_t, const float *,
              int64_t, float, float *, int64_t, const float *) = gemv_n4_generic;
#if FC_X86
    if (fc_isa() >= FC_ISA_AVX2) f = gemv_n4_avx2;
#endif
    int nt = fc_threads_for(M * K, 1 << 17);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const int t = fc_omp_thread_num(), n = nt > 1 ? fc_omp_num_threads() : 1;
        const int64_t blocks = (M + 7) / 8;
        int64_t i0 = min64(M, blocks * t / n * 8), i1 = min64(M, blocks * (t + 1) / n * 8);
        for (int64_t v = 0; v < nv && i0 < i1; v += 4)
            f(i0, i1, K, (int)min64(4, nv - v), alpha, A, lda, X + v * ldx, ldx, beta,
              Y + v * ldy, ldy, bias);
    }
}

typedef void (*gemv_fn)(int64_t, int64_t, int64_t, float, const float *, int64_t, const float *,
                        float, float *, const float *);

/* trans == 0: A (M,K), trans != 0: A stored (K,M); x (K), bias (M) | NULL -> y (M) */
void fc_sgemv(int trans, int64_t M, int64_t K, float alpha, const float *A, int64_t lda,
              const float *x, float beta, float *y, const float *bias)
{
    gemv_fn f = trans ? gemv_t_generic : gemv_n_generic;
#if FC_X86
    if (fc_isa() >= FC_ISA_AVX2) f = trans ? gemv_t_avx2 : gemv_n_avx2;
#endif
    /* >= 128 Ki elements of A (512 KiB) per thread, or the region costs more than it saves. */
    int nt = fc_threads_for(M * K, 1 << 17);
    if (nt <= 1) {
        f(0, M, K, alpha, A, lda, x, beta, y, bias);
        return;
    }
    /* Row (or column) ranges in multiples of 8, balanced. */
#pragma omp parallel num_threads(nt)
    {
        const int t = fc_omp_thread_num(), n = fc_omp_num_threads();
        const int64_t blocks = (M + 7) / 8;
        int64_t i0 = min64(M, blocks * t / n * 8), i1 = min64(M, blocks * (t + 1) / n * 8);
        if (i0 < i1) f(i0, i1, K, alpha, A, lda, x, beta, y, bias);
    }
}

/* The blocking of the GEMM kernel in use (for tests that probe every block edge). */
void fc_gemm_blocking(int *mr, int *nr, int64_t *mc, int64_t *kc, int64_t *nc)
{
    const fc_kernel *k = fc_gemm_kernel();
    *mr = k->mr;
    *nr = k->nr;
    *mc = k->mc;
    *kc = k->kc;
    *nc = k->nc;
}

/* ------------------------------------------------------------------ FMA peak probe */

/* FMA latency is ~4 cycles and there are up to 2 FMA ports, so >= 8 independent chains keep
   every port busy; 12 leave slack (and still fit the 16 ymm / 32 zmm registers). Each call
   runs `iters` rounds of FMA_CHAINS FMAs and returns nothing the compiler may drop. */
#define FMA_CHAINS 12
#define FMA_ITERS 4096

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* acc = acc * m + a converges to a / (1 - m) = 1: no overflow, no denormals to slow it. */
#if FC_X86
FC_TARGET_AVX512 static float fma_chains_avx512(int64_t iters)
{
    const __m512 m = _mm512_set1_ps(0.999f), a = _mm512_set1_ps(0.001f);
    __m512 acc[FMA_CHAINS];
    for (int c = 0; c < FMA_CHAINS; c++) acc[c] = _mm512_set1_ps((float)c);
    for (int64_t i = 0; i < iters; i++)
        for (int c = 0; c < FMA_CHAINS; c++) acc[c] = _mm512_fmadd_ps(acc[c], m, a);
    __m512 s = acc[0];
    for (int c = 1; c < FMA_CHAINS; c++) s = _mm512_add_ps(s, acc[c]);
    return _mm512_reduce_add_ps(s);
}

FC_TARGET_AVX2 static float fma_chains_avx2(int64_t iters)
{
    const __m256 m = _mm256_set1_ps(0.999f), a = _mm256_set1_ps(0.001f);
    __m256 acc[FMA_CHAINS];
    for (int c = 0; c < FMA_CHAINS; c++) acc[c] = _mm256_set1_ps((float)c);
    for (int64_t i = 0; i < iters; i++)
        for (int c = 0; c < FMA_CHAINS; c++) acc[c] = _mm256_fmadd_ps(acc[c], m, a);
    __m256 s = acc[0];
    for (int c = 1; c < FMA_CHAINS; c++) s = _mm256_add_ps(s, acc[c]);
    return fc_avx2_hsum(s);
}
#endif

/* 8-wide chains in plain C: whatever the baseline ISA vectorises them to (SSE: mul + add). */
static float fma_chains_generic(int64_t iters)
{
    float acc[FMA_CHAINS][8];
    for (int c = 0; c < FMA_CHAINS; c++)
        for (int l = 0; l < 8; l++) acc[c][l] = (float)c;
    for (int64_t i = 0; i < iters; i++)
        for (int c = 0; c < FMA_CHAINS; c++)
            for (int l = 0; l < 8; l++) acc[c][l] = acc[c][l] * 0.999f + 0.001f;
    float s = 0.0f;
    for (int c = 0; c < FMA_CHAINS; c++)
        for (int l = 0; l < 8; l++) s += acc[c][l];
    return s;
}

/* Measured FP32 peak of this process's threads (fc_get_num_threads) in GFLOP/s, counting
   2 flops per FMA lane: every thread runs FMA chains of the widest vectors fc_isa() allows
   (the ISA the GEMM microkernels use) for about `seconds`; flops of all threads / wall time. */
double fc_fma_peak_gflops(double seconds)
{
    int lanes = 8;
    float (*chains)(int64_t) = fma_chains_generic;
#if FC_X86
    if (fc_isa() == FC_ISA_AVX512) { chains = fma_chains_avx512; lanes = 16; }
    else if (fc_isa() == FC_ISA_AVX2) chains = fma_chains_avx2;
#endif
    const int nt = fc_get_num_threads();
    int64_t rounds_total = 0;
    float checksum = 0.0f;
    const double t0 = now_seconds();
#pragma omp parallel num_threads(nt) reduction(+ : rounds_total, checksum)
    {
        const double start = now_seconds();
        do { /* each thread until its own clock says `seconds` have passed */
            checksum += chains(FMA_ITERS);
            rounds_total += FMA_ITERS;
        } while (now_seconds() - start < seconds);
    }
    const double t1 = now_seconds();
    volatile float sink = checksum; /* the chains' results are used, so they are computed */
    (void)sink;
    return 2.0 * FMA_CHAINS * lanes * (double)rounds_total / (t1 - t0) / 1e9;
}
