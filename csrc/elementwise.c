/* elementwise.c -- relu, softmax, local response norm, inference batch norm; plus the
 * process-wide settings every file uses: thread count and run-time ISA choice.
 *
 * Variants inside, and why:
 *   fc_relu        v <= 0 ? 0 : v, which maps -0 to +0 and keeps NaN (PyTorch), vectorises.
 *   fc_add         a + b (then ReLU): the network runner's residual sum, one pass, no
 *                  temporaries (NumPy's add then a ReLU pass read and write twice).
 *   fc_softmax     inner == 1: one contiguous row at a time; inner > 1: 256 inner columns
 *                  at a time so every pass over L runs along contiguous memory.
 *                  Max-subtracted; the max propagates NaN, so a NaN or +inf row gives NaN
 *                  like PyTorch, and +-1e30 logits stay finite. exp is an AVX2 Cephes
 *                  polynomial (~2 ulp) when the CPU has AVX2, else libm expf.
 *   fc_lrn         PyTorch's window [c - size/2, c + (size-1)/2] clipped to [0, C); direct
 *                  sum per window (no running sum, so no cancellation); beta = 0.75 uses
 *                  sqrt(t) * sqrt(sqrt(t)) instead of powf. AVX2, beta = 0.75, x^-0.75
 *                  from two rsqrt + a first-order correction; size 5: four output channels
 *                  a step along whole rows, squares recomputed from 8 x rows (streams that
 *                  the prefetchers follow); other sizes: one fused pass per (n, 512-float
 *                  spatial chunk) squares channel s into a ring and writes output channel
 *                  s - (size-1)/2 (x read from memory once).
 *   fc_batch_norm  (x - mean) * (weight / sqrt(var + eps)) + bias, scale computed in double.
 * Threads: one global count, passed as num_threads(...) to every parallel region, because
 * omp_set_num_threads only changes the calling thread's ICV and Python may call from any
 * thread. fc_threads_for returns 1 inside a parallel region, so regions never nest.
 */
#include "fastconv.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ settings */

static int g_threads = 0; /* 0: not set yet -> OpenMP's default */

void fc_set_num_threads(int n) { __atomic_store_n(&g_threads, n < 1 ? 1 : n, __ATOMIC_RELAXED); }

int fc_get_num_threads(void)
{
    int n = __atomic_load_n(&g_threads, __ATOMIC_RELAXED);
#ifdef _OPENMP
    if (n < 1) n = omp_get_max_threads();
#endif
    return n < 1 ? 1 : n;
}

int fc_has_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int fc_threads_for(int64_t work, int64_t min_per_thread)
{
    if (fc_omp_in_parallel()) return 1;
    int64_t n = fc_get_num_threads(), by_work = work / (min_per_thread > 0 ? min_per_thread : 1);
    if (n > by_work) n = by_work;
    return n < 1 ? 1 : (int)n;
}

static int g_isa = -1;

static fc_isa_t detect_isa(void)
{
    fc_isa_t best = FC_ISA_GENERIC;
#if FC_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = FC_ISA_AVX2;
    if (best == FC_ISA_AVX2 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq"))
        best = FC_ISA_AVX512;
#endif
    const char *env = getenv("FASTCONV_ISA");
    fc_isa_t want = best;
    if (env && strcmp(env, "generic") == 0) want = FC_ISA_GENERIC;
    else if (env && strcmp(env, "avx2") == 0) want = FC_ISA_AVX2;
    return want < best ? want : best; /* may lower, never raise */
}

fc_isa_t fc_isa(void)
{
    int v = __atomic_load_n(&g_isa, __ATOMIC_ACQUIRE);
    if (v < 0) { /* racing first calls compute the same value */
        v = (int)detect_isa();
        __atomic_store_n(&g_isa, v, __ATOMIC_RELEASE);
    }
    return (fc_isa_t)v;
}

const char *fc_isa_name(void) { return fc_gemm_kernel()->name; }

/* ------------------------------------------------------------------ relu */

/* y = relu(a) (b == NULL), or a + b then ReLU when relu, over n floats: parallel in chunks
   of 64K floats, each loop plain enough to vectorise. y may alias a or b. */
FC_CLONES static void elementwise_pass(const float *a, const float *b, float *y, int64_t n,
                                       int relu)
{
    const int64_t chunk = 1 << 16;
    int64_t nchunks = (n + chunk - 1) / chunk;
    int nt = fc_threads_for(n, chunk);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t c = 0; c < nchunks; ++c) {
        const int64_t i0 = c * chunk, i1 = (c + 1) * chunk < n ? (c + 1) * chunk : n;
        if (!b)
            for (int64_t i = i0; i < i1; ++i) y[i] = fc_relu1(a[i]);
        else if (relu)
            for (int64_t i = i0; i < i1; ++i) y[i] = fc_relu1(a[i] + b[i]);
        else
            for (int64_t i = i0; i < i1; ++i) y[i] = a[i] + b[i];
    }
}

/* x (n,) -> y (n,) */
void fc_relu(const float *x, float *y, int64_t n) { elementwise_pass(x, NULL, y, n, 1); }

/* a, b (n,) -> y (n,) = a + b, then ReLU when relu; y may be a or b. */
void fc_add(const float *a, const float *b, float *y, int64_t n, int relu)
{
    elementwise_pass(a, b, y, n, relu);
}

/* ------------------------------------------------------------------ softmax */

#if FC_X86
#include <immintrin.h>

/* exp of 8 lanes: Cephes expf (n = round(x log2 e), degree-6 polynomial on the remainder,
   times 2^n). Relative error ~2 ulp; -inf and x < -88 give 0, NaN stays NaN. */
FC_TARGET_AVX2 static inline __m256 exp8_avx2(__m256 x)
{
    const __m256 lo = _mm256_set1_ps(-88.0f), hi = _mm256_set1_ps(88.3f);
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2_hi = _mm256_set1_ps(0.693359375f), ln2_lo = _mm256_set1_ps(-2.12194440e-4f);
    const __m256 c0 = _mm256_set1_ps(1.9875691500e-4f), c1 = _mm256_set1_ps(1.3981999507e-3f);
    const __m256 c2 = _mm256_set1_ps(8.3334519073e-3f), c3 = _mm256_set1_ps(4.1665795894e-2f);
    const __m256 c4 = _mm256_set1_ps(1.6666665459e-1f), c5 = _mm256_set1_ps(5.0000001201e-1f);
    const __m256 one = _mm256_set1_ps(1.0f);
    x = _mm256_min_ps(hi, _mm256_max_ps(lo, x)); /* operand order keeps NaN */
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fx, ln2_hi, x);
    r = _mm256_fnmadd_ps(fx, ln2_lo, r);
    __m256 p = _mm256_fmadd_ps(c0, r, c1);
    p = _mm256_fmadd_ps(p, r, c2);
    p = _mm256_fmadd_ps(p, r, c3);
    p = _mm256_fmadd_ps(p, r, c4);
    p = _mm256_fmadd_ps(p, r, c5);
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, one));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* y = exp(y) in place, 8 lanes at a time, masked tail. */
FC_TARGET_AVX2 static void vexp_avx2(float *y, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp8_avx2(_mm256_loadu_ps(y + i)));
    if (i < n) {
        const __m256i m = fc_avx2_tailmask(n - i);
        _mm256_maskstore_ps(y + i, m, exp8_avx2(_mm256_maskload_ps(y + i, m)));
    }
}

/* One softmax row of L contiguous floats: NaN-propagating max, y = exp(x - max) with the
   sum in the same pass, then y *= 1/sum. */
FC_TARGET_AVX2 static void softmax_row_avx2(const float *x, float *y, int64_t L)
{
    const int64_t lv = L & ~(int64_t)7;
    const __m256i tm = fc_avx2_tailmask(L - lv);
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 m0 = ninf, m1 = ninf;
    int64_t l = 0;
    for (; l + 16 <= lv; l += 16) {
        m0 = fc_avx2_nanmax(m0, _mm256_loadu_ps(x + l));
        m1 = fc_avx2_nanmax(m1, _mm256_loadu_ps(x + l + 8));
    }
    for (; l < lv; l += 8) m0 = fc_avx2_nanmax(m0, _mm256_loadu_ps(x + l));
    if (lv < L)
        m1 = fc_avx2_nanmax(m1, _mm256_blendv_ps(ninf, _mm256_maskload_ps(x + lv, tm),
                                                 _mm256_castsi256_ps(tm)));
    m0 = fc_avx2_nanmax(m0, m1);
    float lanes[8], m = -INFINITY;
    _mm256_storeu_ps(lanes, m0);
    for (int u = 0; u < 8; ++u)
        if (lanes[u] > m || lanes[u] != lanes[u]) m = lanes[u];
    const __m256 vm = _mm256_set1_ps(m);
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    for (l = 0; l + 16 <= lv; l += 16) {
        const __m256 e0 = exp8_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + l), vm));
        const __m256 e1 = exp8_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + l + 8), vm));
        _mm256_storeu_ps(y + l, e0);
        _mm256_storeu_ps(y + l + 8, e1);
        s0 = _mm256_add_ps(s0, e0);
        s1 = _mm256_add_ps(s1, e1);
    }
    for (; l < lv; l += 8) {
        const __m256 e0 = exp8_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + l), vm));
        _mm256_storeu_ps(y + l, e0);
        s0 = _mm256_add_ps(s0, e0);
    }
    if (lv < L) {
        const __m256 e = _mm256_and_ps(exp8_avx2(_mm256_sub_ps(_mm256_maskload_ps(x + lv, tm), vm)),
                                       _mm256_castsi256_ps(tm));
        _mm256_maskstore_ps(y + lv, tm, e);
        s1 = _mm256_add_ps(s1, e);
    }
    const __m256 inv = _mm256_set1_ps(1.0f / fc_avx2_hsum(_mm256_add_ps(s0, s1)));
    for (l = 0; l < lv; l += 8) _mm256_storeu_ps(y + l, _mm256_mul_ps(_mm256_loadu_ps(y + l), inv));
    if (lv < L) _mm256_maskstore_ps(y + lv, tm, _mm256_mul_ps(_mm256_maskload_ps(y + lv, tm), inv));
}

#endif

/* y = exp(y) in place */
static void vexp(float *y, int64_t n)
{
#if FC_X86
    if (fc_isa() >= FC_ISA_AVX2) {
        vexp_avx2(y, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; ++i) y[i] = expf(y[i]);
}

#define SM_CH 256

/* x (outer,L,inner) -> y (outer,L,inner), softmax over L */
FC_CLONES void fc_softmax(const float *x, float *y, int64_t outer, int64_t L, int64_t inner)
{
    const int64_t nch = (inner + SM_CH - 1) / SM_CH, items = outer * nch;
    int nt = fc_threads_for(outer * L * inner, 16 * 1024);
    if (nt > items) nt = (int)items;
#if FC_X86
    const int avx2 = fc_isa() >= FC_ISA_AVX2;
#endif
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t it = 0; it < items; ++it) {
        const int64_t o = it / nch, i0 = (it % nch) * SM_CH;
        const int64_t n = inner - i0 < SM_CH ? inner - i0 : SM_CH;
        const float *xb = x + o * L * inner + i0;
        float *yb = y + o * L * inner + i0;
        if (inner == 1) {
#if FC_X86
            if (avx2) {
                softmax_row_avx2(xb, yb, L);
                continue;
            }
#endif
            float m = -INFINITY, mx[16], acc[16] = {0}, s = 0.0f;
            int64_t l = 0;
            for (int u = 0; u < 16; ++u) mx[u] = -INFINITY;
            for (; l + 16 <= L; l += 16) /* 16 NaN-propagating lanes: vectorises */
                for (int u = 0; u < 16; ++u) {
                    const float v = xb[l + u];
                    mx[u] = (v > mx[u] || v != v) ? v : mx[u];
                }
            for (; l < L; ++l)
                if (xb[l] > m || isnan(xb[l])) m = xb[l];
            for (int u = 0; u < 16; ++u)
                if (mx[u] > m || isnan(mx[u])) m = mx[u];
            for (l = 0; l < L; ++l) yb[l] = xb[l] - m;
            vexp(yb, L);
            l = 0;
            for (; l + 16 <= L; l += 16)
                for (int u = 0; u < 16; ++u) acc[u] += yb[l + u];
            for (; l < L; ++l) s += yb[l];
            for (int u = 0; u < 16; ++u) s += acc[u];
            for (l = 0; l < L; ++l) yb[l] = yb[l] / s;
            continue;
        }
        float m[SM_CH], s[SM_CH];
        for (int64_t i = 0; i < n; ++i) m[i] = -INFINITY, s[i] = 0.0f;
        for (int64_t l = 0; l < L; ++l) {
            const float *xr = xb + l * inner;
            for (int64_t i = 0; i < n; ++i) m[i] = (xr[i] > m[i] || xr[i] != xr[i]) ? xr[i] : m[i];
        }
        for (int64_t l = 0; l < L; ++l) {
            const float *xr = xb + l * inner;
            float *yr = yb + l * inner;
            for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] - m[i];
            vexp(yr, n);
            for (int64_t i = 0; i < n; ++i) s[i] += yr[i];
        }
        for (int64_t l = 0; l < L; ++l) {
            float *yr = yb + l * inner;
            for (int64_t i = 0; i < n; ++i) yr[i] = yr[i] / s[i];
        }
    }
}

/* ------------------------------------------------------------------ LRN */

#define LRN_CH 1024

#if FC_X86
#ifndef LRN_AVX_CH
#define LRN_AVX_CH 512
#endif
/* ring row stride: 16 floats more than a chunk, so that the ring rows are not 4 KiB apart
   (a store to one row would otherwise falsely alias the loads of the row two slots away) */
#define LRN_RING_LD (LRN_AVX_CH + 16)
#ifndef LRN_PF
#define LRN_PF 2 /* prefetch the x row this many channels ahead */
#endif

/* y = x * c * t^-0.75 of 8 lanes, for normal, finite t > 0, with lc = {2.25 c, 0.75 c, 0.5 c}.
   r = rsqrt(t) and s = rsqrt(r) are ~12-bit; u0 = r (r s) ~ t^-0.75 (1+e1)^1.5 (1+e2) where
   h1 = r^2 t = (1+e1)^2 and h2 = s^2 r = (1+e2)^2 measure the two errors, so
   t^-0.75 = u0 h1^-0.75 h2^-0.5 ~ u0 (2.25 - 0.75 h1 - 0.5 h2), second-order error < 1e-6.
   h1 and h2 are independent of each other (short dependency chains), and every intermediate
   is t^(+-1/4), t^(+-1/2), t^-0.75 or ~1, so nothing over- or underflows for t in
   [FLT_MIN, FLT_MAX]. The callers take the exact path for rows with t outside that range
   (0, subnormal, inf). NaN and negative t give NaN here, as the exact formula does. */
typedef struct { __m256 c225, c075, c05; } lrn_consts;

FC_TARGET_AVX2 static inline __m256 lrn_apply_avx2(__m256 x, __m256 t, lrn_consts lc)
{
    const __m256 r = _mm256_rsqrt_ps(t), s = _mm256_rsqrt_ps(r);
    const __m256 rs = _mm256_mul_ps(r, s);
    const __m256 h1 = _mm256_mul_ps(_mm256_mul_ps(r, t), r), h2 = _mm256_mul_ps(rs, s);
    const __m256 corr = _mm256_fnmadd_ps(h2, lc.c05, _mm256_fnmadd_ps(h1, lc.c075, lc.c225));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(x, r), rs), corr);
}

/* one output row chunk from the squares in the ring, exactly (1 / (sqrt(t) sqrt(sqrt(t)))):
   the rare rows where some t is 0, subnormal or inf. Same summation order as the fast loop. */
static void lrn_row_exact(const float *const *rp, int64_t nw, const float *xr, float *yr,
                          int64_t len, float a, float k)
{
    for (int64_t i = 0; i < len; ++i) {
        float s = rp[0][i];
        for (int64_t w = 1; w < nw; ++w) s += rp[w][i];
        const float t = k + a * s, r = sqrtf(t);
        yr[i] = xr[i] / (r * sqrtf(r));
    }
}

/* Whether a row's t left [FLT_MIN, FLT_MAX] (vmin, vmax: its lane-wise extremes), so that
   it takes the exact path. NaN lanes are skipped by min/max (they are right on the fast
   path). */
FC_TARGET_AVX2 static inline int lrn_t_out_of_range(__m256 vmin, __m256 vmax)
{
    return _mm256_movemask_ps(
        _mm256_or_ps(_mm256_cmp_ps(vmin, _mm256_set1_ps(FLT_MIN), _CMP_LT_OQ),
                     _mm256_cmp_ps(vmax, _mm256_set1_ps(FLT_MAX), _CMP_GT_OQ)));
}

/* Size 5 (AlexNet's, GoogLeNet's): rows of up to LRN5_ROW floats, four output channels a
   step, every square computed afresh from the 8 x rows c-2..c+5 (a zero row outside [0, C)).
   Against the ring of lrn_avx2 this streams x and y along whole rows, which the hardware
   prefetchers follow (a copy in 512-float pieces of each row ran at 50-58 GB/s on 2 threads
   here, along whole rows at 78-88), and keeps no ring: the 4 x rows a step re-reads were
   read one step earlier and are still in the L2. 2 multiplies more per output, and the
   loop is software-pipelined (the window sums of the next 8 floats are computed while the
   current ones are applied) so that the add -> rsqrt -> multiply chains overlap: 8.3 -> 6.8
   cycles per 8 outputs in L1. AlexNet norm1 at batch 8, 2 threads: 690 -> 460 us. */
#define LRN5_ROW 4096 /* 8 x rows + 4 y rows of a step: 192 KiB, well inside the L2 */
static const float lrn5_zero_row[LRN5_ROW];

/* the square as a separate multiply: an empty asm hides the product from the compiler, which
   would otherwise fuse it into the window sums' adds (FMAs run on the two ports that the
   rsqrt and multiplies already fill; the adds have two of their own) */
FC_TARGET_AVX2 static inline __m256 lrn5_sq(__m256 v)
{
    __m256 q = _mm256_mul_ps(v, v);
    __asm__("" : "+x"(q));
    return q;
}

/* One output row exactly from its window's x rows w[0..5), the squares associated as in
   lrn5_quad (odd: ((w0+w1)+(w2+w3))+w4, even: (w0+(w1+w2))+(w3+w4)): rows where some t
   is 0, subnormal or inf. */
static void lrn5_row_exact(const float *const *w, int odd, float *yr, int64_t len, float a,
                           float k)
{
    for (int64_t i = 0; i < len; ++i) {
        float q[5];
        for (int m = 0; m < 5; ++m) q[m] = w[m][i] * w[m][i];
        const float s = odd ? ((q[0] + q[1]) + (q[2] + q[3])) + q[4]
                            : (q[0] + (q[1] + q[2])) + (q[3] + q[4]);
        const float t = k + a * s, r = sqrtf(t);
        yr[i] = w[2][i] / (r * sqrtf(r));
    }
}

/* Output rows yr[0..nout) (channels c..c+nout-1) from x rows xr[0..8) (channels c-2..c+5),
   len floats each. The four windows share p12 = q1+q2, p34 = q3+q4 (+ k/a when scaled, so
   t needs no add of its own) and p56 = q5+q6: 11 adds for 4 sums. */
FC_TARGET_AVX2 static inline __attribute__((always_inline)) void
lrn5_quad(const float *const *xr, float *const *yr, const int nout, int64_t len, __m256i tm,
          int scaled, __m256 va, __m256 vk, lrn_consts lc, float a, float k)
{
    __m256 vmin = _mm256_set1_ps(INFINITY), vmax = _mm256_setzero_ps();
    const int64_t lv = len & ~(int64_t)7;
#define LRN5_SUMS(i, LOAD, FOLD, s)                                                            \
    do {                                                                                       \
        const __m256 q0 = lrn5_sq(LOAD(xr[0] + (i))), q1 = lrn5_sq(LOAD(xr[1] + (i))),          \
                     q2 = lrn5_sq(LOAD(xr[2] + (i))), q3 = lrn5_sq(LOAD(xr[3] + (i))),          \
                     q4 = lrn5_sq(LOAD(xr[4] + (i))), q5 = lrn5_sq(LOAD(xr[5] + (i))),          \
                     q6 = lrn5_sq(LOAD(xr[6] + (i))), q7 = lrn5_sq(LOAD(xr[7] + (i)));          \
        const __m256 p12 = _mm256_add_ps(q1, q2), p34 = FOLD(_mm256_add_ps(q3, q4)),           \
                     p56 = _mm256_add_ps(q5, q6);                                              \
        s[0] = _mm256_add_ps(_mm256_add_ps(q0, p12), p34);                                     \
        s[1] = _mm256_add_ps(_mm256_add_ps(p12, p34), q5);                                     \
        s[2] = _mm256_add_ps(_mm256_add_ps(q2, p34), p56);                                     \
        s[3] = _mm256_add_ps(_mm256_add_ps(p34, p56), q7);                                     \
    } while (0)
#define LRN5_APPLY(i, LOAD, STORE, TOT, s)                                                     \
    do {                                                                                       \
        for (int j = 0; j < nout; ++j) {                                                       \
            const __m256 t = TOT(s[j]);                                                        \
            vmin = _mm256_min_ps(t, vmin);                                                     \
            vmax = _mm256_max_ps(t, vmax);                                                     \
            STORE(yr[j] + (i), lrn_apply_avx2(LOAD(xr[j + 2] + (i)), t, lc));                  \
        }                                                                                      \
    } while (0)
    /* whole vectors, pipelined one vector deep; then the ragged end, masked lanes t = 1 */
#define LRN5_ROWS(FOLD, TOT)                                                                   \
    do {                                                                                       \
        int64_t i = 0;                                                                         \
        if (lv > 0) {                                                                          \
            __m256 cur[4], nxt[4];                                                             \
            LRN5_SUMS(0, LRN5_LD, FOLD, cur);                                                  \
            for (; i + 8 < lv; i += 8) {                                                       \
                LRN5_SUMS(i + 8, LRN5_LD, FOLD, nxt);                                          \
                LRN5_APPLY(i, LRN5_LD, LRN5_ST, TOT, cur);                                     \
                for (int j = 0; j < 4; ++j) cur[j] = nxt[j];                                   \
            }                                                                                  \
            LRN5_APPLY(i, LRN5_LD, LRN5_ST, TOT, cur);                                         \
            i += 8;                                                                            \
        }                                                                                      \
        if (i < len) {                                                                         \
            __m256 cur[4];                                                                     \
            LRN5_SUMS(i, LRN5_MLD, FOLD, cur);                                                 \
            LRN5_APPLY(i, LRN5_MLD, LRN5_MST, LRN5_ONE_##TOT, cur);                            \
        }                                                                                      \
    } while (0)
#define LRN5_LD(p) _mm256_loadu_ps(p)
#define LRN5_ST(p, v) _mm256_storeu_ps(p, v)
#define LRN5_MLD(p) _mm256_maskload_ps(p, tm)
#define LRN5_MST(p, v) _mm256_maskstore_ps(p, tm, v)
#define LRN5_ADDK(v) _mm256_add_ps(v, vk)
#define LRN5_KEEP(v) (v)
#define LRN5_AFFINE(v) _mm256_fmadd_ps(va, v, vk)
#define LRN5_MASK1(t) _mm256_blendv_ps(_mm256_set1_ps(1.0f), t, _mm256_castsi256_ps(tm))
#define LRN5_ONE_LRN5_KEEP(v) LRN5_MASK1(v)
#define LRN5_ONE_LRN5_AFFINE(v) LRN5_MASK1(LRN5_AFFINE(v))
    if (scaled)
        LRN5_ROWS(LRN5_ADDK, LRN5_KEEP);
    else
        LRN5_ROWS(LRN5_KEEP, LRN5_AFFINE);
#undef LRN5_SUMS
#undef LRN5_APPLY
#undef LRN5_ROWS
#undef LRN5_LD
#undef LRN5_ST
#undef LRN5_MLD
#undef LRN5_MST
#undef LRN5_ADDK
#undef LRN5_KEEP
#undef LRN5_AFFINE
#undef LRN5_MASK1
#undef LRN5_ONE_LRN5_KEEP
#undef LRN5_ONE_LRN5_AFFINE
    if (lrn_t_out_of_range(vmin, vmax))
        for (int j = 0; j < nout; ++j) lrn5_row_exact(xr + j, j & 1, yr[j], len, a, k);
}

/* size 5, beta 0.75: items (image, part of the row); parts only to give the threads equal
   shares or to keep a row within LRN5_ROW */
FC_TARGET_AVX2 static void lrn5_avx2(const float *x, float *y, int64_t N, int64_t C, int64_t L,
                                     float a, float k)
{
    int nt = fc_threads_for(N * C * L * 5, 16 * 1024);
    int64_t parts = (L + LRN5_ROW - 1) / LRN5_ROW;
    if ((N * parts) % nt != 0 && N * parts < 8 * nt && L >= 128 * nt) parts *= nt;
    /* part lengths in whole 64-byte lines, so that two threads' parts share no line */
    const int64_t chl = ((L + parts - 1) / parts + 15) & ~(int64_t)15, items = N * parts;
    if (nt > items) nt = (int)items;
    /* (k + a S)^-0.75 = a^-0.75 (S + k/a)^-0.75: with a in a sane range the window sum takes
       k/a in one of its adds and a^-0.75 goes into lc */
    const int scaled = a >= 1e-30f && a <= 1e30f;
    const float ca = scaled ? (float)pow((double)a, -0.75) : 1.0f;
    const __m256 va = _mm256_set1_ps(scaled ? 1.0f : a), vk = _mm256_set1_ps(scaled ? k / a : k);
    const lrn_consts lc = {_mm256_set1_ps(2.25f * ca), _mm256_set1_ps(0.75f * ca),
                           _mm256_set1_ps(0.5f * ca)};
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t it = 0; it < items; ++it) {
        const int64_t n = it / parts, l0 = (it % parts) * chl;
        if (l0 >= L) continue;
        const int64_t len = L - l0 < chl ? L - l0 : chl;
        const __m256i tm = fc_avx2_tailmask(len & 7);
        const float *xn = x + n * C * L + l0;
        float *yn = y + n * C * L + l0;
        for (int64_t c = 0; c < C; c += 4) {
            const float *xr[8];
            float *yr[4];
            for (int m = 0; m < 8; ++m) {
                const int64_t cc = c - 2 + m;
                xr[m] = cc >= 0 && cc < C ? xn + cc * L : lrn5_zero_row;
            }
            for (int j = 0; j < 4; ++j) yr[j] = c + j < C ? yn + (c + j) * L : NULL;
            switch (C - c < 4 ? C - c : 4) { /* nout a constant in each copy */
            case 4: lrn5_quad(xr, yr, 4, len, tm, scaled, va, vk, lc, a, k); break;
            case 3: lrn5_quad(xr, yr, 3, len, tm, scaled, va, vk, lc, a, k); break;
            case 2: lrn5_quad(xr, yr, 2, len, tm, scaled, va, vk, lc, a, k); break;
            default: lrn5_quad(xr, yr, 1, len, tm, scaled, va, vk, lc, a, k); break;
            }
        }
    }
}

/* beta == 0.75. Per (n, spatial chunk of <= LRN_AVX_CH floats) one pass over the channels:
   step s squares the newest channel row s into a ring of `size` rows (each x loaded
   from memory once, its square reused by `size` outputs) and, in the same loop, sums the
   window of output channel s - (size-1)/2 directly (no running sum, so no cancellation)
   and writes that output row; x of the output row was loaded (size-1)/2 steps ago, so it
   is still in L1. The x row LRN_PF channels ahead is prefetched. Size 5 takes lrn5_avx2
   instead. */
FC_TARGET_AVX2 static int lrn_avx2(const float *x, float *y, int64_t N, int64_t C, int64_t L,
                                    int64_t size, float a, float k)
{
    /* chunks of at most LRN_AVX_CH floats, equal lengths rounded up to 8 */
    const int64_t nch = (L + LRN_AVX_CH - 1) / LRN_AVX_CH, items = N * nch;
    const int64_t chl = ((L + nch - 1) / nch + 7) & ~(int64_t)7;
    const int64_t lo = size / 2, hi = (size - 1) / 2;
    int nt = fc_threads_for(N * C * L * size, 16 * 1024);
    if (nt > items) nt = (int)items;
    int failed = 0;
#pragma omp parallel num_threads(nt) reduction(| : failed)
    {
        float *ring = fc_alloc_floats(size * LRN_RING_LD);
        const float **rp = malloc((size_t)size * sizeof(*rp)); /* the window's ring rows */
        failed = !ring || !rp;
        /* (k + a S)^-0.75 = a^-0.75 (S + k/a)^-0.75: with a in a sane range the hot loop
           adds k/a (an add, off the busy multiply ports) and a^-0.75 goes into lc */
        const int scaled = a >= 1e-30f && a <= 1e30f;
        const float ca = scaled ? (float)pow((double)a, -0.75) : 1.0f;
        const __m256 va = _mm256_set1_ps(scaled ? 1.0f : a), vk = _mm256_set1_ps(scaled ? k / a : k);
        const lrn_consts lc = {_mm256_set1_ps(2.25f * ca), _mm256_set1_ps(0.75f * ca),
                               _mm256_set1_ps(0.5f * ca)};
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; ++it) {
            if (!ring || !rp) continue;
            const int64_t n = it / nch, l0 = (it % nch) * chl;
            if (l0 >= L) continue;
            const int64_t len = L - l0 < chl ? L - l0 : chl;
            const int64_t lv = len & ~(int64_t)7;
            const __m256i tm = fc_avx2_tailmask(len - lv);
            const float *xn = x + n * C * L + l0;
            float *yn = y + n * C * L + l0;
            for (int64_t s = 0; s < C + hi; ++s) {
                const int newest = s < C; /* channel s is squared in this step */
                const float *xs = xn + s * L;
                float *sq = ring + (s % size) * LRN_RING_LD;
                const float *pf = xn + (s + LRN_PF < C ? s + LRN_PF : C - 1) * L;
                const int64_t c = s - hi; /* output channel of this step */
                if (c < 0) { /* window not complete yet: only square */
                    int64_t i = 0;
                    for (; i < lv; i += 8) {
                        const __m256 v = _mm256_loadu_ps(xs + i);
                        _mm_prefetch((const char *)(pf + i), _MM_HINT_T0);
                        _mm256_store_ps(sq + i, _mm256_mul_ps(v, v));
                    }
                    if (i < len) {
                        const __m256 v = _mm256_maskload_ps(xs + i, tm);
                        _mm256_store_ps(sq + i, _mm256_mul_ps(v, v));
                    }
                    continue;
                }
                const int64_t c0 = c - lo < 0 ? 0 : c - lo;
                const int64_t c1 = c + hi >= C ? C - 1 : c + hi;
                const int64_t nw = c1 - c0 + 1;
                for (int64_t cc = c0; cc <= c1; ++cc)
                    rp[cc - c0] = ring + (cc % size) * LRN_RING_LD;
                const float *xr = xn + c * L;
                float *yr = yn + c * L;
                __m256 vmin = _mm256_set1_ps(INFINITY), vmax = _mm256_setzero_ps();
                int64_t i = 0;
                for (; i < lv; i += 8) {
                    __m256 sum;
                    if (newest) {
                        const __m256 v = _mm256_loadu_ps(xs + i);
                        _mm_prefetch((const char *)(pf + i), _MM_HINT_T0);
                        _mm256_store_ps(sq + i, _mm256_mul_ps(v, v));
                    }
                    sum = _mm256_load_ps(rp[0] + i);
                    for (int64_t w = 1; w < nw; ++w) sum = _mm256_add_ps(sum, _mm256_load_ps(rp[w] + i));
                    const __m256 t = _mm256_fmadd_ps(va, sum, vk);
                    vmin = _mm256_min_ps(t, vmin);
                    vmax = _mm256_max_ps(t, vmax);
                    _mm256_storeu_ps(yr + i, lrn_apply_avx2(_mm256_loadu_ps(xr + i), t, lc));
                }
                if (i < len) { /* ragged end of the last chunk: masked lanes load 0 */
                    if (newest) {
                        const __m256 v = _mm256_maskload_ps(xs + i, tm);
                        _mm256_store_ps(sq + i, _mm256_mul_ps(v, v));
                    }
                    __m256 sum = _mm256_load_ps(rp[0] + i);
                    for (int64_t w = 1; w < nw; ++w) sum = _mm256_add_ps(sum, _mm256_load_ps(rp[w] + i));
                    const __m256 t = _mm256_blendv_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(va, sum, vk), _mm256_castsi256_ps(tm));
                    vmin = _mm256_min_ps(t, vmin);
                    vmax = _mm256_max_ps(t, vmax);
                    _mm256_maskstore_ps(yr + i, tm, lrn_apply_avx2(_mm256_maskload_ps(xr + i, tm), t, lc));
                }
                if (lrn_t_out_of_range(vmin, vmax)) lrn_row_exact(rp, nw, xr, yr, len, a, k);
            }
        }
        fc_free(ring);
        free(rp);
    }
    return failed; /* then the caller runs the portable path (no heap) over everything */
}
#endif

/* x (N,C,L) -> y (N,C,L) */
FC_CLONES void fc_lrn(const float *x, float *y, int64_t N, int64_t C, int64_t L, int64_t size,
            float alpha, float beta, float k)
{
    const int64_t nch = (L + LRN_CH - 1) / LRN_CH, items = N * C * nch;
    const float a = alpha / (float)size;
#if FC_X86
    /* the ring buffer is size * LRN_AVX_CH floats: fall back for absurd window sizes */
    if (beta == 0.75f && size == 5 && fc_isa() >= FC_ISA_AVX2) {
        lrn5_avx2(x, y, N, C, L, a, k);
        return;
    }
    if (beta == 0.75f && size <= 4096 && fc_isa() >= FC_ISA_AVX2) {
        if (lrn_avx2(x, y, N, C, L, size, a, k) == 0) return;
    }
#endif
    int nt = fc_threads_for(N * C * L * size, 16 * 1024);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t it = 0; it < items; ++it) {
        const int64_t nc = it / nch, n = nc / C, c = nc % C, l0 = (it % nch) * LRN_CH;
        const int64_t len = L - l0 < LRN_CH ? L - l0 : LRN_CH;
        const int64_t c0 = c - size / 2 < 0 ? 0 : c - size / 2;
        const int64_t c1 = c + (size - 1) / 2 >= C ? C - 1 : c + (size - 1) / 2;
        float s[LRN_CH];
        for (int64_t i = 0; i < len; ++i) s[i] = 0.0f;
        for (int64_t cc = c0; cc <= c1; ++cc) {
            const float *xr = x + (n * C + cc) * L + l0;
            for (int64_t i = 0; i < len; ++i) s[i] += xr[i] * xr[i];
        }
        const float *xr = x + nc * L + l0;
        float *yr = y + nc * L + l0;
        if (beta == 0.75f) {
#pragma omp simd
            for (int64_t i = 0; i < len; ++i) {
                const float t = k + a * s[i], r = sqrtf(t);
                yr[i] = xr[i] / (r * sqrtf(r));
            }
        } else {
            for (int64_t i = 0; i < len; ++i) yr[i] = xr[i] / powf(k + a * s[i], beta);
        }
    }
}

/* ------------------------------------------------------------------ batch norm */

/* x (N,C,L), mean/var/weight/bias (C,) -> y (N,C,L) */
FC_CLONES void fc_batch_norm(const float *x, float *y, int64_t N, int64_t C, int64_t L,
                   const float *mean, const float *var, const float *weight,
                   const float *bias, float eps)
{
    int nt = fc_threads_for(N * C * L, 32 * 1024);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t nc = 0; nc < N * C; ++nc) {
        const int64_t c = nc % C;
        const float sc = (float)((double)weight[c] / sqrt((double)var[c] + (double)eps));
        const float m = mean[c], b = bias[c];
        const float *xr = x + nc * L;
        float *yr = y + nc * L;
        for (int64_t i = 0; i < L; ++i) yr[i] = (xr[i] - m) * sc + b;
    }
}
