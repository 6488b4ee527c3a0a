/* fastconv.h -- the one shared header of the fastconv C backend.
 *
 * Contents:
 *   - public fc_* prototypes (the cffi cdef in fastconv/_build.py mirrors them);
 *   - the OpenMP guard: fc_omp_* helpers compile to serial stubs without _OPENMP,
 *     so a compiler without OpenMP still builds a (serial) module;
 *   - thread-count policy: one global count (fc_set_num_threads) that every parallel
 *     region passes as num_threads(...), and fc_threads_for() which returns 1 inside
 *     an enclosing parallel region, so regions never nest;
 *   - ISA dispatch helpers: FC_TARGET_AVX512 / FC_TARGET_AVX2 function attributes and
 *     fc_isa(), which asks __builtin_cpu_supports at run time (never -march=native);
 *   - the internal GEMM interface that conv.c shares with gemm.c (packed weights,
 *     per-thread workspace, fused bias+ReLU epilogue).
 *
 * All dimensions and indices are int64_t. Arrays are float32, C-contiguous, row-major.
 */
#ifndef FASTCONV_H
#define FASTCONV_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------ public API */
/* BEGIN CFFI CDEF: fastconv/_build.py feeds the lines up to END CFFI CDEF to cffi's cdef,
   so every prototype here is callable from Python and declared in one place only. */

/* Row-major BLAS SGEMM: C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C; beta == 0: C not read. */
void fc_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
              float *C, int64_t ldc);
/* Same, plus epilogue: C[i,:] += bias[i] (bias may be NULL), then ReLU if relu != 0.
   Runs serially when called from inside a parallel region. Returns 0, or -1 out of memory. */
int fc_sgemm_ex(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                 float *C, int64_t ldc, const float *bias_rows, int relu);
/* Always serial (for callers that already run one GEMM per thread). Returns 0 or -1. */
int fc_sgemm_serial(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                     float *C, int64_t ldc, const float *bias_rows, int relu);

/* GEMV, streaming A once (memory bound: batch-1 fully connected layers, gemm with M or N 1):
   y (M) = alpha * op(A) x + beta * y + bias; beta == 0: y not read; bias (M,) or NULL.
   trans == 0: A is (M,K), row stride lda; trans != 0: A is stored (K,M), row stride lda, and
   op(A) = A^T. x (K,) and y (M,) are contiguous. Parallel over blocks of y. */
void fc_sgemv(int trans, int64_t M, int64_t K, float alpha, const float *A, int64_t lda,
              const float *x, float beta, float *y, const float *bias);
/* A few vectors at once (linear with a small batch): Y (nv,M) = alpha X (nv,K) A^T + beta Y
   + bias[col]; A (M,K) row stride lda, X row stride ldx, Y row stride ldy. A is streamed once
   per 4 vectors. */
void fc_sgemv_multi(int64_t nv, int64_t M, int64_t K, float alpha, const float *A, int64_t lda,
                    const float *X, int64_t ldx, float beta, float *Y, int64_t ldy,
                    const float *bias);

/* conv2d algorithms (conv.c's header says when "auto" picks each). */
typedef enum {
    FC_CONV_AUTO = 0,
    FC_CONV_DIRECT = 1,   /* tap-by-tap loops over whole rows (narrow groups, depthwise) */
    FC_CONV_GEMM = 2,     /* packed GEMM on the input (1x1) or on bounded im2col tiles */
    FC_CONV_INDIRECT = 3, /* implicit GEMM: 6 pixels x 16 channels, input read in place */
    FC_CONV_1X1 = 4,      /* 1x1 stride 1 unpadded, GEMM with neither operand packed */
    FC_CONV_WINOGRAD = 5  /* F(2x2,3x3), 3x3 stride 1 dilation 1 */
} fc_conv_algo;

/* x (N,C,H,W), w (K,C/groups,R,S), bias (K,) or NULL -> y (N,K,P,Q); relu != 0 fuses ReLU.
   algo: an fc_conv_algo (FC_CONV_AUTO: fc_conv2d_choose's pick).
   Returns 0, -1 when its workspace cannot be allocated, -2 when algo cannot do this shape. */
int fc_conv2d(const float *x, const float *w, const float *bias, float *y,
               int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t S,
               int64_t P, int64_t Q, int64_t stride_h, int64_t stride_w,
               int64_t pad_top, int64_t pad_left, int64_t dil_h, int64_t dil_w,
               int64_t groups, int relu, int algo);
/* The algorithm FC_CONV_AUTO runs for this shape (same arguments, minus the arrays). */
int fc_conv2d_choose(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R,
                     int64_t S, int64_t P, int64_t Q, int64_t stride_h, int64_t stride_w,
                     int64_t pad_top, int64_t pad_left, int64_t dil_h, int64_t dil_w,
                     int64_t groups);
/* Whether algo can run this shape (1) or not (0). */
int fc_conv2d_supports(int algo, int64_t N, int64_t C, int64_t H, int64_t W, int64_t K,
                       int64_t R, int64_t S, int64_t P, int64_t Q, int64_t stride_h,
                       int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t dil_h,
                       int64_t dil_w, int64_t groups);

/* Weights prepared once, for a network plan whose weights stay fixed from call to call:
   fc_conv2d_weights_size(algo, ...) floats (0: algo has nothing to prepare; allocate them
   64-byte aligned) take fc_conv2d_prepare_weights's output -- the packed GEMM panels
   (FC_CONV_GEMM) or the Winograd transform U = G w G^T packed the same way
   (FC_CONV_WINOGRAD), both for this process's GEMM kernel -- and fc_conv2d_prepacked runs
   algo on them instead of preparing them per call. Shapes as fc_conv2d; algo must support
   the shape (fc_conv2d_supports). Both return 0, or -1 out of memory.
   fc_conv2d_choose_planned: the pick for such a layer (preparation changes what pays). */
int64_t fc_conv2d_weights_size(int algo, int64_t N, int64_t C, int64_t H, int64_t W,
                               int64_t K, int64_t R, int64_t S, int64_t P, int64_t Q,
                               int64_t stride_h, int64_t stride_w, int64_t pad_top,
                               int64_t pad_left, int64_t dil_h, int64_t dil_w, int64_t groups);
int fc_conv2d_prepare_weights(int algo, const float *w, float *packed, int64_t N, int64_t C,
                              int64_t H, int64_t W, int64_t K, int64_t R, int64_t S, int64_t P,
                              int64_t Q, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                              int64_t pad_left, int64_t dil_h, int64_t dil_w, int64_t groups);
int fc_conv2d_prepacked(int algo, const float *x, const float *packed, const float *bias,
                        float *y, int64_t N, int64_t C, int64_t H, int64_t W, int64_t K,
                        int64_t R, int64_t S, int64_t P, int64_t Q, int64_t stride_h,
                        int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t dil_h,
                        int64_t dil_w, int64_t groups, int relu);
int fc_conv2d_choose_planned(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R,
                             int64_t S, int64_t P, int64_t Q, int64_t stride_h,
                             int64_t stride_w, int64_t pad_top, int64_t pad_left,
                             int64_t dil_h, int64_t dil_w, int64_t groups);

/* x (N,C,H,W) -> y (N,C,P,Q); window kh x kw, dilated; padding counts as -inf; NaN propagates.
   Both pools return 0, or -1 when a row buffer cannot be allocated. */
int fc_max_pool2d(const float *x, float *y, int64_t N, int64_t C, int64_t H, int64_t W,
                   int64_t P, int64_t Q, int64_t kh, int64_t kw, int64_t stride_h,
                   int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t dil_h,
                   int64_t dil_w);
/* x (N,C,H,W) -> y (N,C,P,Q); divisor: window clipped to the padded input (count_include_pad)
   or the number of real input elements in the window. */
int fc_avg_pool2d(const float *x, float *y, int64_t N, int64_t C, int64_t H, int64_t W,
                   int64_t P, int64_t Q, int64_t kh, int64_t kw, int64_t stride_h,
                   int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t pad_bottom,
                   int64_t pad_right, int count_include_pad);
/* x (N,C,H,W) -> y (N,C,1,1): mean over H*W. */
void fc_global_avg_pool2d(const float *x, float *y, int64_t N, int64_t C, int64_t HW);

/* x (n,) -> y (n,): x > 0 ? x : +0, NaN stays NaN. */
void fc_relu(const float *x, float *y, int64_t n);
/* a, b (n,) -> y (n,): a + b, then ReLU when relu != 0 (as fc_relu). y may alias a or b. */
void fc_add(const float *a, const float *b, float *y, int64_t n, int relu);
/* x (outer,L,inner) -> y, softmax over L (max-subtracted). */
void fc_softmax(const float *x, float *y, int64_t outer, int64_t L, int64_t inner);
/* x (N,C,L) -> y: x / (k + alpha/size * sum_{c' in [c-size/2, c+(size-1)/2]} x[c']^2)^beta. */
void fc_lrn(const float *x, float *y, int64_t N, int64_t C, int64_t L, int64_t size,
            float alpha, float beta, float k);
/* x (N,C,L) -> y: (x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]. */
void fc_batch_norm(const float *x, float *y, int64_t N, int64_t C, int64_t L,
                   const float *mean, const float *var, const float *weight,
                   const float *bias, float eps);

void fc_set_num_threads(int n);
int fc_get_num_threads(void);
int fc_has_openmp(void);
const char *fc_isa_name(void);
/* The run-time GEMM kernel's register tile and cache blocking (tests probe every block edge). */
void fc_gemm_blocking(int *mr, int *nr, int64_t *mc, int64_t *kc, int64_t *nc);
/* Measured FP32 peak in GFLOP/s (2 per FMA lane) of fc_get_num_threads() threads, each running
   independent FMA chains on the widest vectors fc_isa() allows for about `seconds`. */
double fc_fma_peak_gflops(double seconds);
/* END CFFI CDEF */

/* ------------------------------------------------------------------ OpenMP guard */

#ifdef _OPENMP
static inline int fc_omp_thread_num(void) { return omp_get_thread_num(); }
static inline int fc_omp_num_threads(void) { return omp_get_num_threads(); }
static inline int fc_omp_in_parallel(void) { return omp_in_parallel(); }
#else
static inline int fc_omp_thread_num(void) { return 0; }
static inline int fc_omp_num_threads(void) { return 1; }
static inline int fc_omp_in_parallel(void) { return 0; }
#endif

/* ------------------------------------------------------------------ scalar ReLU */

/* max(v, 0) by the spec's rules: NaN stays NaN, -0.0 and -inf become +0.0. Branch-free
   (a select on the bits): with a branch, activations of random sign mispredict half the
   time, which cost the indirect conv's epilogue ~9 ms on a 224x224x64 layer. */
static inline float fc_relu1(float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    bits &= (uint32_t)0 - (uint32_t)((v > 0.0f) | (v != v));
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* Threads for a region with `work` units, each worth a thread only if >= min_per_thread:
   min(global count, work / min_per_thread), at least 1; 1 inside a parallel region. */
int fc_threads_for(int64_t work, int64_t min_per_thread);

/* ------------------------------------------------------------------ ISA dispatch */

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FC_X86 1
#define FC_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define FC_TARGET_AVX2 __attribute__((target("avx2,fma")))
/* Memory-bound loops (pooling, elementwise): let the compiler vectorise them twice and let
   the loader pick the AVX2 clone on CPUs that have it (ifunc); OpenMP regions inside
   are cloned too. FASTCONV_ISA does not reach these, only the GEMM microkernels. */
#if defined(__linux__) && !defined(__clang__)
#define FC_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FC_CLONES
#endif
#else
#define FC_X86 0
#define FC_CLONES
#endif

#if FC_X86
#include <immintrin.h>
/* AVX2 helpers for the memory-bound kernels (pool.c, elementwise.c). */
/* Lanes [0, n) set, n in 0..8: the mask of _mm256_maskload_ps / maskstore for a row tail. */
FC_TARGET_AVX2 static inline __m256i fc_avx2_tailmask(int64_t n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
/* NaN-propagating max: NaN when either lane is NaN (max_ps alone returns b then, losing a
   NaN in a), else max(a, b). The NaN it returns is all-ones (a quiet NaN). */
FC_TARGET_AVX2 static inline __m256 fc_avx2_nanmax(__m256 a, __m256 b)
{
    return _mm256_or_ps(_mm256_max_ps(a, b), _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
}
/* Sum of the 8 lanes. */
FC_TARGET_AVX2 static inline float fc_avx2_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

typedef enum { FC_ISA_GENERIC = 0, FC_ISA_AVX2 = 1, FC_ISA_AVX512 = 2 } fc_isa_t;
/* The best ISA this CPU supports, lowered by env FASTCONV_ISA=generic|avx2|avx512 (never raised). */
fc_isa_t fc_isa(void);

/* ------------------------------------------------------------------ internal GEMM interface */

/* Epilogue of one output tile: v = alpha*acc (+ beta*C unless beta == 0) (+ bias[row]) (relu). */
typedef struct {
    float alpha, beta;
    const float *bias; /* first row of the tile, or NULL */
    int relu;
} fc_epi;

/* a: kc x MR panel (k-major), b: kc x NR panel (k-major) -> full MR x NR tile of c (ldc). */
typedef void (*fc_ukr_fn)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                          const fc_epi *e);

/* One microkernel and its cache blocking: MC rows of A (A block in L2), KC depth (B micropanel
   in L1), NC columns of B (B block in L3). */
typedef struct {
    int mr, nr;
    int64_t mc, kc, nc;
    fc_ukr_fn ukr;
    const char *name;
} fc_kernel;

const fc_kernel *fc_gemm_kernel(void);

/* rows x kc of s (row stride lds) -> d[k * ldd + j]: row j becomes column j, columns
   rows .. ldd-1 zero (ldd >= rows). The transposed B panels of the GEMM (linear's weights)
   and the indirect conv's weight panels. */
void fc_pack_rows_transposed(const float *s, int64_t lds, int64_t rows, int64_t kc, float *d,
                             int64_t ldd);
/* Floats of a fully packed A (M,K) for kernel k: ceil(M/mr)*mr*K. */
int64_t fc_packed_a_size(const fc_kernel *k, int64_t M, int64_t K);
/* Pack op(A) (M,K) once (e.g. conv weights) in the layout fc_gemm_run reads. */
void fc_pack_a_full(const fc_kernel *k, int trans_a, int64_t M, int64_t K, const float *A,
                    int64_t lda, float *dst);
/* Floats of the shared A workspace (now 0: kept for source compatibility) and of one
   thread's workspace (its B block and its A block), for an (M,N,K) GEMM (monotone in each
   argument, so a buffer sized for the largest call serves smaller ones). */
int64_t fc_ws_a_size(const fc_kernel *k, int64_t M, int64_t K);
int64_t fc_ws_b_size(const fc_kernel *k, int64_t N, int64_t K);

typedef struct {
    int trans_a, trans_b;
    int64_t M, N, K;
    float alpha, beta;
    const float *A; int64_t lda; /* read when Ap == NULL */
    const float *Ap;             /* fc_pack_a_full output, or NULL */
    const float *B; int64_t ldb;
    float *C; int64_t ldc;
    const float *bias;           /* per row of C, or NULL */
    int relu;
} fc_gemm_args;

/* Run one GEMM with nthreads threads (1: serial, no parallel region is opened).
   ws_a: unused (may be NULL; each thread packs A into its own part of ws_b);
   ws_b: nthreads * fc_ws_b_size floats, thread t using ws_b + t * fc_ws_b_size(k, g->N, g->K).
   Threads own disjoint rectangles of C (no barriers).
   Both 64-byte aligned. */
void fc_gemm_run(const fc_gemm_args *g, const fc_kernel *k, float *ws_a, float *ws_b,
                 int nthreads);

/* Window clipping shared by conv.c and pool.c. */
/* Indices u in [0, count) with 0 <= start + u*step < limit form [*lo, *hi). */
static inline void valid_range(int64_t start, int64_t step, int64_t count, int64_t limit,
                               int64_t *lo, int64_t *hi)
{
    if (step == 1) { /* no divisions (they were a visible part of a 28-wide row) */
        int64_t l = start < 0 ? -start : 0, h = limit - start;
        if (h > count) h = count;
        if (h < 0) h = 0;
        *lo = l > h ? h : l;
        *hi = h;
        return;
    }
    int64_t l = start < 0 ? (-start + step - 1) / step : 0;
    int64_t h = start >= limit ? 0 : (limit - 1 - start) / step + 1;
    if (h > count) h = count;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* 64-byte aligned allocation of n floats (NULL on failure, and for n < 0 or a byte size
   that would overflow size_t), and its release. */
float *fc_alloc_floats(int64_t n);
/* a * b for workspace sizes: -1 (which fc_alloc_floats refuses) when either is negative or
   the product overflows int64_t. */
int64_t fc_mul_ws(int64_t a, int64_t b);
void fc_free(void *p);

/* ------------------------------------------------------------------ internal conv algorithms */
/* (conv_fast.c / winograd.c, dispatched by fc_conv2d in conv.c; same shape conventions) */

int fc_conv_indirect(const float *x, const float *w, const float *bias, float *y, int64_t N,
                     int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t S,
                     int64_t P, int64_t Q, int64_t sh, int64_t sw, int64_t pt, int64_t pl,
                     int64_t dh, int64_t dw, int64_t groups, int relu);
/* w (K,C/g,3,3), stride 1, dilation 1; U: fc_conv_winograd_weights_size floats */
int64_t fc_conv_winograd_weights_size(int64_t K, int64_t C, int64_t groups);
int fc_conv_winograd_weights(const float *w, float *up, int64_t K, int64_t C, int64_t groups);
int fc_conv_winograd_prepacked(const float *x, const float *up, const float *bias, float *y,
                               int64_t N, int64_t C, int64_t H, int64_t W, int64_t K,
                               int64_t P, int64_t Q, int64_t pt, int64_t pl, int64_t groups,
                               int relu);
int fc_conv_winograd(const float *x, const float *w, const float *bias, float *y, int64_t N,
                     int64_t C, int64_t H, int64_t W, int64_t K, int64_t P, int64_t Q,
                     int64_t pt, int64_t pl, int64_t groups, int relu);
/* x (N,C,HW), w (K,C/g) -> y (N,K,HW) */
int fc_conv_1x1(const float *x, const float *w, const float *bias, float *y, int64_t N,
                int64_t C, int64_t HW, int64_t K, int64_t groups, int relu);

#endif /* FASTCONV_H */
