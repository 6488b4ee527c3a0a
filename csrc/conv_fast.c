/* conv_fast.c -- conv2d algorithms that skip the GEMM's packing (called from conv.c).
 *
 * Variants inside, and why:
 *   fc_conv_indirect  "implicit GEMM, pixels x channels": an output tile of 6 pixels x 16
 *                     channels; the 6 pixels' input values are broadcast straight from the
 *                     (padded) image through a table of tap offsets off[c,r,s], the weights are
 *                     packed once per call as (K/16 panels, C*R*S, 16). No im2col at all, so
 *                     its cost is ~0 for tiny C (LeNet) and any stride/dilation/groups; the
 *                     weight packing (K*C*R*S floats) is amortised over the P*Q pixels.
 *                     Padding: a padded copy of one image-group (Cg x Hp x Wp) per thread;
 *                     without padding the input is read in place.
 *   fc_conv_1x1       1x1 stride-1 unpadded: y[n,g] (Kg,HW) = w_g (Kg,Cg) @ x[n,g] (Cg,HW)
 *                     with neither operand packed: 6 weight rows are broadcast, 16 pixels are
 *                     loaded (masked at the ragged end). No per-call weight repacking, which
 *                     is what makes small-pixel layers (ResNet res5: 7x7, C=2048) slow in
 *                     the packed GEMM. Parallel over (image, group, pixel chunk, row chunk):
 *                     rows (output channels) are split when the pixels cannot be.
 * Both: bias + ReLU fused in the store; AVX2+FMA microkernels with a plain C fallback
 * (FASTCONV_ISA=generic, non-x86). 64-bit indices throughout.
 */
#include "fastconv.h"

#include <stdlib.h>
#include <string.h>

#if FC_X86
#include <immintrin.h>
#endif

#define IP 6  /* pixels per indirect tile */
#define IK 16 /* channels per indirect tile */

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
/* v rounded up to a multiple of 16 (floats: 64 bytes); negative (overflowed) stays so */
static inline int64_t round16(int64_t v)
{
    return v < 0 || v > INT64_MAX - 15 ? -1 : (v + 15) & ~(int64_t)15;
}

/* ------------------------------------------------------------------ indirect microkernels */

/* tile (IP,IK) = sum_k px[i][off[k]] * w[k][j] */
static void ind_ukr_generic(int64_t kk, const int64_t *off, const float *const *px,
                            const float *w, float *tile)
{
    float acc[IP][IK] = {{0}};
    for (int64_t k = 0; k < kk; ++k, w += IK) {
        const int64_t o = off[k];
        for (int i = 0; i < IP; ++i) {
            const float a = px[i][o];
            for (int j = 0; j < IK; ++j) acc[i][j] += a * w[j];
        }
    }
    memcpy(tile, acc, sizeof(acc));
}

#if FC_X86
FC_TARGET_AVX2 static void ind_ukr_avx2(int64_t kk, const int64_t *off, const float *const *px,
                                        const float *w, float *tile)
{
    const float *p0 = px[0], *p1 = px[1], *p2 = px[2], *p3 = px[3], *p4 = px[4], *p5 = px[5];
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t k = 0; k < kk; ++k, w += IK) {
        const int64_t o = off[k];
        const __m256 b0 = _mm256_load_ps(w), b1 = _mm256_load_ps(w + 8);
        __m256 a;
        a = _mm256_broadcast_ss(p0 + o); c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(p1 + o); c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(p2 + o); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(p3 + o); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
        a = _mm256_broadcast_ss(p4 + o); c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
        a = _mm256_broadcast_ss(p5 + o); c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
    }
    _mm256_store_ps(tile + 0, c00); _mm256_store_ps(tile + 8, c01);
    _mm256_store_ps(tile + 16, c10); _mm256_store_ps(tile + 24, c11);
    _mm256_store_ps(tile + 32, c20); _mm256_store_ps(tile + 40, c21);
    _mm256_store_ps(tile + 48, c30); _mm256_store_ps(tile + 56, c31);
    _mm256_store_ps(tile + 64, c40); _mm256_store_ps(tile + 72, c41);
    _mm256_store_ps(tile + 80, c50); _mm256_store_ps(tile + 88, c51);
}
#endif

typedef void (*ind_ukr_fn)(int64_t, const int64_t *, const float *const *, const float *,
                           float *);

static ind_ukr_fn ind_ukr(void)
{
#if FC_X86
    if (fc_isa() >= FC_ISA_AVX2) return ind_ukr_avx2;
#endif
    return ind_ukr_generic;
}

/* ------------------------------------------------------------------ indirect conv */

typedef struct {
    const int64_t *off;
    ind_ukr_fn ukr;
    int64_t Kg, CRS, PQ, Q, sh, sw, Wp;
    int relu;
} ind_ctx;

/* Channel panels [kp0,kp1) x pixel blocks [pb0,pb1) of one image-group: src is its (padded)
   input (Cg,Hp,Wp), yg its output (Kg,P,Q), wpg its packed weights, bg its bias or NULL. */
static void ind_item(const ind_ctx *cx, const float *src, float *yg, const float *wpg,
                     const float *bg, int64_t kp0, int64_t kp1, int64_t pb0, int64_t pb1)
{
    float tile[IP * IK] __attribute__((aligned(64)));
    const float *px[IP];
    for (int64_t kp = kp0; kp < kp1; ++kp) {
        const int64_t nch = min64(IK, cx->Kg - kp * IK);
        const float *wpan = wpg + kp * cx->CRS * IK;
        for (int64_t pb = pb0; pb < pb1; ++pb) {
            const int64_t t0 = pb * IP, np = min64(IP, cx->PQ - t0);
            for (int i = 0; i < IP; ++i) {
                const int64_t t = t0 + (i < np ? i : np - 1); /* ragged end: repeat the last */
                px[i] = src + (t / cx->Q) * cx->sh * cx->Wp + (t % cx->Q) * cx->sw;
            }
            cx->ukr(cx->CRS, cx->off, px, wpan, tile);
            for (int64_t j = 0; j < nch; ++j) {
                const float b = bg ? bg[kp * IK + j] : 0.0f;
                float *yr = yg + (kp * IK + j) * cx->PQ + t0;
                if (cx->relu)
                    for (int64_t i = 0; i < np; ++i) yr[i] = fc_relu1(tile[i * IK + j] + b);
                else
                    for (int64_t i = 0; i < np; ++i) yr[i] = tile[i * IK + j] + b;
            }
        }
    }
}

/* Pixel blocks per chunk of a run of np panels (each chunk: every panel of the run over
   the chunk's blocks, so a panel streams from the L3 once per chunk). While the run's
   panels fit in half the L2 they stay there: chunks of 8 blocks (48 pixels), whose input
   window stays in L1 (AlexNet conv1: 3 panels of 23 KiB). Otherwise the chunk grows as long
   as its input window and one panel fit in 3/4 of the L2, the whole image-group where it
   fits: AlexNet conv2 streamed 16 chunks x 8 panels (614 KiB) per group and thread from
   the L3, now 8 panels once (its padded group is 184 KiB). */
#define IND_L2 (512 * 1024)
static int64_t ind_chunk_blocks(int64_t np, int64_t npb, int64_t CRS, int64_t Cg, int64_t Hp,
                                int64_t Wp, int64_t Q, int64_t sh, int64_t R, int64_t dh)
{
    const int64_t panel = CRS * IK * (int64_t)sizeof(float);
    int64_t b = 8;
    if (np * panel <= IND_L2 / 2) return b;
    while (b < npb) {
        /* input rows under 2b blocks: the output rows they span (one more when they start
           mid-row), sh apart, plus the window's height */
        const int64_t orows = (2 * b * IP + Q - 1) / Q + 1;
        const int64_t rows = min64(Hp, (orows - 1) * sh + (R - 1) * dh + 1);
        if (Cg * rows * Wp * (int64_t)sizeof(float) + panel > IND_L2 / 4 * 3) break;
        b *= 2;
    }
    return b;
}

/* One thread's private workspace: the weight panels it uses (panel kp of the current group
   at kp * CRS * IK), which group each slot holds (+1, 0 = none), the tap offsets and a
   padded copy of one image-group. */
typedef struct {
    float *panels, *pad;
    int64_t *packed_for, *off;
    int64_t padded_ng; /* image-group in pad, -1 = none */
} ind_ws;

/* pad[c][i][j] = xg[c][i-pt][j-pl], zero outside */
static void ind_pad(const float *xg, float *pad, int64_t Cg, int64_t H, int64_t W, int64_t Hp,
                    int64_t Wp, int64_t pt, int64_t pl)
{
    for (int64_t ci = 0; ci < Cg * Hp; ++ci) {
        const int64_t c = ci / Hp, i = ci % Hp, ih = i - pt;
        float *d = pad + ci * Wp;
        if (ih < 0 || ih >= H) {
            memset(d, 0, (size_t)Wp * sizeof(float));
            continue;
        }
        const float *s = xg + (c * H + ih) * W;
        const int64_t j0 = pl < Wp ? pl : Wp;
        int64_t j1 = min64(Wp, pl + W);
        memset(d, 0, (size_t)j0 * sizeof(float));
        if (j1 > j0) memcpy(d + j0, s, (size_t)(j1 - j0) * sizeof(float));
        if (j1 < j0) j1 = j0;
        memset(d + j1, 0, (size_t)(Wp - j1) * sizeof(float));
    }
}

/* The work items of a thread's range of panel passes, in the order its owner runs them.
   A run is the range's passes of one image-group and pixel part (panels [kp0, kp1)):
   split into chunks of pixel blocks (ind_chunk_blocks), chunks outer and panels inner;
   a run of one chunk is cut into IND_PIECES pieces of its pixels, panels outer, which
   keeps the owner's order of work and gives the other threads pieces to take. */
#define IND_PIECES 4
#define IND_MAX_THREADS 256 /* stealing only up to this many threads */
typedef struct {
    int64_t nkp, parts, npb, CRS, Cg, Hp, Wp, Q, sh, R, dh;
} ind_split;
typedef struct {
    int64_t ng, pp, kp0, kp1, pb0, pb1; /* image-group, pixel part, panels, pixel blocks */
    int64_t nch, items, next;           /* chunks (1: cut in pieces), items, next run's pass */
} ind_run;

static void ind_run_at(const ind_split *sp, int64_t i, int64_t i1, ind_run *r)
{
    const int64_t ngp = i / sp->nkp;
    r->kp0 = i % sp->nkp;
    r->kp1 = min64(sp->nkp, r->kp0 + (i1 - i));
    r->pp = ngp % sp->parts;
    r->ng = ngp / sp->parts;
    r->next = i + (r->kp1 - r->kp0);
    r->pb0 = sp->npb * r->pp / sp->parts;
    r->pb1 = sp->npb * (r->pp + 1) / sp->parts;
    const int64_t np = r->kp1 - r->kp0, nb = r->pb1 - r->pb0;
    r->nch = cdiv(nb, ind_chunk_blocks(np, sp->npb, sp->CRS, sp->Cg, sp->Hp, sp->Wp, sp->Q,
                                       sp->sh, sp->R, sp->dh));
    r->items = (r->nch > 1 ? r->nch : min64(IND_PIECES, nb)) * np;
}

/* item k of run r: its panel and pixel blocks [b0, b1) */
static void ind_run_item(const ind_run *r, int64_t k, int64_t *kp, int64_t *b0, int64_t *b1)
{
    const int64_t np = r->kp1 - r->kp0, nb = r->pb1 - r->pb0;
    int64_t c, n;
    if (r->nch > 1) { /* chunks outer, panels inner */
        n = r->nch;
        c = k / np;
        *kp = r->kp0 + k % np;
    } else { /* panels outer, pieces inner */
        n = min64(IND_PIECES, nb);
        c = k % n;
        *kp = r->kp0 + k / n;
    }
    *b0 = r->pb0 + nb * c / n;
    *b1 = r->pb0 + nb * (c + 1) / n;
}

/* FASTCONV_TEST_STEAL_FIRST=1, for the tests: every thread first takes the items of the
   others' ranges from their ends, so that every item runs through the taking path. */
static int ind_steal_first(void)
{
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        const char *e = getenv("FASTCONV_TEST_STEAL_FIRST");
        v = e && e[0] == '1';
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}

/* Items left in a thread's range: front (low 32 bits, the owner takes from it in order)
   and back (high 32 bits, a thread done with its own range takes from there). */
static int ind_take_front(uint64_t *st, int64_t *k)
{
    uint64_t v = __atomic_load_n(st, __ATOMIC_RELAXED);
    for (;;) {
        if ((uint32_t)v >= (uint32_t)(v >> 32)) return 0;
        if (__atomic_compare_exchange_n(st, &v, v + 1, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            *k = (uint32_t)v;
            return 1;
        }
    }
}

static int ind_take_back(uint64_t *st, int64_t *k)
{
    uint64_t v = __atomic_load_n(st, __ATOMIC_RELAXED);
    for (;;) {
        if ((uint32_t)v >= (uint32_t)(v >> 32)) return 0;
        if (__atomic_compare_exchange_n(st, &v, v - ((uint64_t)1 << 32), 1, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
            *k = (uint32_t)(v >> 32) - 1;
            return 1;
        }
    }
}

/* x (N,C,H,W), w (K,C/g,R,S) -> y (N,K,P,Q); 0, or -1 out of memory. */
int fc_conv_indirect(const float *x, const float *w, const float *bias, float *y, int64_t N,
                     int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t S,
                     int64_t P, int64_t Q, int64_t sh, int64_t sw, int64_t pt, int64_t pl,
                     int64_t dh, int64_t dw, int64_t groups, int relu)
{
    const int64_t Cg = C / groups, Kg = K / groups, CRS = Cg * R * S, PQ = P * Q;
    const int64_t nkp = cdiv(Kg, IK), npb = cdiv(PQ, IP);
    /* rows/cols of the padded input that the windows touch */
    const int64_t Hn = (P - 1) * sh + (R - 1) * dh + 1, Wn = (Q - 1) * sw + (S - 1) * dw + 1;
    const int need_pad = pt > 0 || pl > 0 || Hn > H || Wn > W;
    const int64_t Hp = need_pad ? Hn : H, Wp = need_pad ? Wn : W;
    const int nt = fc_threads_for(N * K * PQ * CRS, 64 * 64 * 64);

    /* Work split: "panel passes" (image n, group g, pixel part, channel panel kp), kp
       innermost, in one contiguous range per thread (balanced to one pass), run as work
       items (ind_run_item) that a thread done with its own range takes off the ends of the
       others' (median 1 -> 2 thread speedup of AlexNet conv1-5, C driver, alternating
       runs: 1.86 -> 1.95; the two threads' finishing times had differed by a median 3-21%,
       in 10% of calls by over 24%, as the host slowed one vCPU or the other). Each thread
       packs the panels and pads the image-groups that its own range uses, into its own
       workspace, and writes its own outputs: on this 2-vCPU host (the two cores sit ~100-400
       ns apart), a line that one core wrote and the other read must be snooped back on the
       next call's write, and a packing and a padded copy shared by the threads ran at half
       speed per thread (AlexNet conv5: packing 150 us on 1 thread, 130 on each of 2). The
       pixels are split into nt parts (each thread then packs every panel it needs itself)
       when the passes cannot be shared out evenly, or when the image-groups cannot and a
       group's panels are small enough to pack twice (<= L2 / 2): splitting AlexNet conv1's 6
       panels left each thread reading the whole 618 KiB input, and the thread with panels
       3-5 took 10-25% longer than the other; split by pixels it scales as before. */
    const int64_t passes = N * groups * nkp, image_groups = N * groups;
    const int small_panels = nkp * CRS * IK * (int64_t)sizeof(float) <= IND_L2 / 2;
    const int uneven = passes % nt != 0 && passes < 8 * nt;
    const int uneven_groups = image_groups % nt != 0 && image_groups < 8 * nt;
    const int64_t parts = (uneven || (uneven_groups && small_panels)) ? min64(nt, npb) : 1;
    const int64_t total = passes * parts;
    /* per thread, in floats rounded to 16 (64 bytes): panels, pad, then the int64
       packed_for (nkp, rounded to 8) and off (CRS) */
    const int64_t nkp8 = (nkp + 7) & ~(int64_t)7;
    const int64_t ws_panels = fc_mul_ws(nkp, fc_mul_ws(CRS, IK));
    const int64_t ws_pad = need_pad ? round16(fc_mul_ws(fc_mul_ws(Cg, Hp), Wp)) : 0;
    const int64_t ws_ints = round16(2 * (nkp8 + CRS));
    int64_t ws_thread = -1, ws_rest;
    if (ws_panels < 0 || ws_pad < 0 || __builtin_add_overflow(ws_pad, ws_ints, &ws_rest) ||
        __builtin_add_overflow(ws_panels, ws_rest, &ws_thread))
        ws_thread = -1;
    float *ws = fc_alloc_floats(fc_mul_ws(ws_thread, nt));
    if (!ws) return -1;
    const ind_ukr_fn ukr = ind_ukr();
    const ind_split sp = {nkp, parts, npb, CRS, Cg, Hp, Wp, Q, sh, R, dh};
    /* each thread's items left, one 64-byte line apiece; no stealing on one thread or if a
       range had 2^31 items */
    uint64_t left[8 * IND_MAX_THREADS] __attribute__((aligned(64)));
    int steal = nt > 1 && nt <= IND_MAX_THREADS;
    for (int t = 0; steal && t < nt; ++t) {
        const int64_t i1 = total * (t + 1) / nt;
        int64_t n = 0;
        ind_run r;
        for (int64_t i = total * t / nt; i < i1; i = r.next) {
            ind_run_at(&sp, i, i1, &r);
            n += r.items;
        }
        if (n >= INT32_MAX) steal = 0;
        left[t * 8] = (uint64_t)n << 32;
    }
    const int steal_first = steal && ind_steal_first();

#pragma omp parallel num_threads(nt)
    {
        const int t = fc_omp_thread_num();
        float *mine = ws + t * ws_thread;
        ind_ws tw = {mine, mine + ws_panels, (int64_t *)(mine + ws_panels + ws_pad), NULL, -1};
        tw.off = tw.packed_for + nkp8;
        for (int64_t kp = 0; kp < nkp; ++kp) tw.packed_for[kp] = 0;
        for (int64_t c = 0, k = 0; c < Cg; ++c)
            for (int64_t r = 0; r < R; ++r)
                for (int64_t s = 0; s < S; ++s, ++k) tw.off[k] = (c * Hp + r * dh) * Wp + s * dw;
        const ind_ctx cx = {tw.off, ukr, Kg, CRS, PQ, Q, sh, sw, Wp, relu};

        /* one work item: panel kp over pixel blocks [b0, b1) of run r, with this thread's
           workspace (packing the panel or padding the image-group if it has not yet) */
#define IND_RUN_ITEM(r, kp, b0, b1)                                                          \
        do {                                                                                  \
            const int64_t g_ = (r).ng % groups, n_ = (r).ng / groups;                         \
            const float *src_ = x + (n_ * C + g_ * Cg) * H * W;                               \
            if (need_pad) {                                                                   \
                if (tw.padded_ng != (r).ng) ind_pad(src_, tw.pad, Cg, H, W, Hp, Wp, pt, pl);  \
                tw.padded_ng = (r).ng;                                                        \
                src_ = tw.pad;                                                                \
            }                                                                                 \
            if (tw.packed_for[kp] != g_ + 1) {                                                \
                /* panels[kp][k][j] = w[g*Kg + kp*IK + j][k], zero past Kg */                 \
                fc_pack_rows_transposed(w + (g_ * Kg + (kp) * IK) * CRS, CRS,                 \
                                        min64(IK, Kg - (kp) * IK), CRS,                       \
                                        tw.panels + (kp) * CRS * IK, IK);                     \
                tw.packed_for[kp] = g_ + 1;                                                   \
            }                                                                                 \
            ind_item(&cx, src_, y + (n_ * K + g_ * Kg) * PQ, tw.panels,                       \
                     bias ? bias + g_ * Kg : NULL, kp, (kp) + 1, b0, b1);                     \
        } while (0)
        for (int phase = 0; phase < 2; ++phase) {
            if (phase == steal_first) {
                /* this thread's own range, in order: each panel is packed just before its
                   first use, so that it is still in the L2 when the microkernel reads it
                   (packing the whole run first spilled it to the L3 whenever the run's
                   panels outgrew the L2) */
                const int64_t i1 = total * (t + 1) / nt;
                ind_run r;
                int64_t i = total * t / nt, k_run = 0, k;
                if (i < i1) ind_run_at(&sp, i, i1, &r);
                while (i < i1 && (steal ? ind_take_front(&left[t * 8], &k) : 1)) {
                    int64_t kp, b0, b1;
                    ind_run_item(&r, k_run, &kp, &b0, &b1);
                    IND_RUN_ITEM(r, kp, b0, b1);
                    if (++k_run == r.items) {
                        k_run = 0;
                        i = r.next;
                        if (i < i1) ind_run_at(&sp, i, i1, &r);
                    }
                }
            } else {
                /* items off the ends of the others' ranges, once this thread's own are
                   done: a vCPU that the host slows for part of a call no longer holds up
                   the whole call */
                for (int d = 1; steal && d < nt; ++d) {
                    const int o = (t + d) % nt;
                    const int64_t o1 = total * (o + 1) / nt;
                    int64_t k;
                    while (ind_take_back(&left[o * 8], &k)) {
                        ind_run r;
                        int64_t i = total * o / nt, kp, b0, b1;
                        for (ind_run_at(&sp, i, o1, &r); k >= r.items; ind_run_at(&sp, i, o1, &r)) {
                            k -= r.items;
                            i = r.next;
                        }
                        ind_run_item(&r, k, &kp, &b0, &b1);
                        IND_RUN_ITEM(r, kp, b0, b1);
                    }
                }
            }
        }
#undef IND_RUN_ITEM
    }
    fc_free(ws);
    return 0;
}

/* ------------------------------------------------------------------ 1x1 without packing */

#define OR 6  /* output-channel rows per 1x1 tile */
#define OC 16 /* pixels per 1x1 tile */
#define OKC 256 /* reduction chunk: a 256 x 16 strip of x stays in L1 across row tiles */

/* c (OR rows, ldc) (+)= sum_k a[i][k] * b[k*ldb + j], j < npx, k in [0,kc).
   first: start from 0, else from c; last: + bias[i], ReLU. Rows >= nrow are not stored. */
static void o_ukr_generic(int64_t kc, const float *const *a, const float *b, int64_t ldb,
                          int64_t npx, float *c, int64_t ldc, int64_t nrow, int first, int last,
                          const float *bias, int relu)
{
    float acc[OR][OC] = {{0}};
    for (int64_t k = 0; k < kc; ++k)
        for (int i = 0; i < OR; ++i)
            for (int64_t j = 0; j < npx; ++j) acc[i][j] += a[i][k] * b[k * ldb + j];
    for (int64_t i = 0; i < nrow; ++i)
        for (int64_t j = 0; j < npx; ++j) {
            float v = acc[i][j] + (first ? 0.0f : c[i * ldc + j]);
            if (last && bias) v += bias[i];
            if (last && relu) v = fc_relu1(v);
            c[i * ldc + j] = v;
        }
}

#if FC_X86
FC_TARGET_AVX2 static inline __attribute__((always_inline)) void
o_ukr_avx2_body(int64_t kc, const float *const *a, const float *b, int64_t ldb, int64_t npx,
                float *c, int64_t ldc, int64_t nrow, int first, int last, const float *bias,
                int relu, const int masked)
{
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
    __m256i m0 = _mm256_setzero_si256(), m1 = m0;
    if (masked) {
        const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)npx), idx);
        m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)npx - 8), idx);
    }
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t k = 0; k < kc; ++k, b += ldb) {
        __m256 b0, b1, t;
        if (masked) {
            b0 = _mm256_maskload_ps(b, m0);
            b1 = _mm256_maskload_ps(b + 8, m1);
        } else {
            b0 = _mm256_loadu_ps(b);
            b1 = _mm256_loadu_ps(b + 8);
        }
        t = _mm256_broadcast_ss(a0 + k); c00 = _mm256_fmadd_ps(t, b0, c00); c01 = _mm256_fmadd_ps(t, b1, c01);
        t = _mm256_broadcast_ss(a1 + k); c10 = _mm256_fmadd_ps(t, b0, c10); c11 = _mm256_fmadd_ps(t, b1, c11);
        t = _mm256_broadcast_ss(a2 + k); c20 = _mm256_fmadd_ps(t, b0, c20); c21 = _mm256_fmadd_ps(t, b1, c21);
        t = _mm256_broadcast_ss(a3 + k); c30 = _mm256_fmadd_ps(t, b0, c30); c31 = _mm256_fmadd_ps(t, b1, c31);
        t = _mm256_broadcast_ss(a4 + k); c40 = _mm256_fmadd_ps(t, b0, c40); c41 = _mm256_fmadd_ps(t, b1, c41);
        t = _mm256_broadcast_ss(a5 + k); c50 = _mm256_fmadd_ps(t, b0, c50); c51 = _mm256_fmadd_ps(t, b1, c51);
    }
    __m256 acc[OR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    const __m256 zero = _mm256_setzero_ps();
    for (int64_t i = 0; i < nrow; ++i) {
        float *cp = c + i * ldc;
        __m256 v0 = acc[i][0], v1 = acc[i][1];
        if (!first) {
            if (masked) {
                v0 = _mm256_add_ps(v0, _mm256_maskload_ps(cp, m0));
                v1 = _mm256_add_ps(v1, _mm256_maskload_ps(cp + 8, m1));
            } else {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(cp));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(cp + 8));
            }
        }
        if (last && bias) {
            const __m256 bb = _mm256_set1_ps(bias[i]);
            v0 = _mm256_add_ps(v0, bb);
            v1 = _mm256_add_ps(v1, bb);
        }
        if (last && relu) { /* max(0, v) keeps NaN; + 0 turns -0 into +0 */
            v0 = _mm256_add_ps(_mm256_max_ps(zero, v0), zero);
            v1 = _mm256_add_ps(_mm256_max_ps(zero, v1), zero);
        }
        if (masked) {
            _mm256_maskstore_ps(cp, m0, v0);
            _mm256_maskstore_ps(cp + 8, m1, v1);
        } else {
            _mm256_storeu_ps(cp, v0);
            _mm256_storeu_ps(cp + 8, v1);
        }
    }
}

FC_TARGET_AVX2 static void o_ukr_avx2(int64_t kc, const float *const *a, const float *b,
                                      int64_t ldb, int64_t npx, float *c, int64_t ldc,
                                      int64_t nrow, int first, int last, const float *bias,
                                      int relu)
{
    if (npx == OC)
        o_ukr_avx2_body(kc, a, b, ldb, npx, c, ldc, nrow, first, last, bias, relu, 0);
    else
        o_ukr_avx2_body(kc, a, b, ldb, npx, c, ldc, nrow, first, last, bias, relu, 1);
}
#endif

typedef void (*o_ukr_fn)(int64_t, const float *const *, const float *, int64_t, int64_t,
                         float *, int64_t, int64_t, int, int, const float *, int);

/* x (N,C,H,W), w (K,C/g,1,1) -> y (N,K,H,W), stride 1, no padding. Returns 0. */
int fc_conv_1x1(const float *x, const float *w, const float *bias, float *y, int64_t N,
                int64_t C, int64_t HW, int64_t K, int64_t groups, int relu)
{
    const int64_t Cg = C / groups, Kg = K / groups;
    o_ukr_fn ukr = o_ukr_generic;
#if FC_X86
    if (fc_isa() >= FC_ISA_AVX2) ukr = o_ukr_avx2;
#endif
    /* Items: (row chunk, image, group, even pixel chunk of <= 12 tiles). Rows are split only
       when there are fewer than 4 items per thread otherwise (e.g. 49 pixels, one image). */
    int nt = fc_threads_for(N * K * HW * Cg, 64 * 64 * 64);
    const int64_t npj = cdiv(HW, OC), npc = cdiv(npj, 12), pcj = cdiv(npj, npc);
    const int64_t nrb = cdiv(Kg, OR);
    int64_t rch = 1;
    if (N * groups * npc < 4 * nt) rch = min64(nrb, cdiv(4 * nt, N * groups * npc));
    const int64_t rcs = cdiv(nrb, rch);
    rch = cdiv(nrb, rcs);
    const int64_t items = N * groups * npc * rch;

#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t it = 0; it < items; ++it) {
        /* row chunk outermost: a static split gives each thread whole row chunks */
        const int64_t rc = it / (N * groups * npc), pc = it % npc, ng = it / npc % (N * groups);
        const int64_t g = ng % groups, n = ng / groups;
        const float *xg = x + (n * C + g * Cg) * HW, *wg = w + g * Kg * Cg;
        float *yg = y + (n * K + g * Kg) * HW;
        const float *bg = bias ? bias + g * Kg : NULL;
        const int64_t i0 = rc * rcs * OR, i1 = min64(Kg, (rc + 1) * rcs * OR);
        const int64_t j0 = pc * pcj * OC, j1 = min64(HW, (pc + 1) * pcj * OC);
        for (int64_t k0 = 0; k0 < Cg; k0 += OKC) {
            const int64_t kc = min64(OKC, Cg - k0);
            for (int64_t j = j0; j < j1; j += OC) {
                const int64_t npx = min64(OC, j1 - j);
                for (int64_t i = i0; i < i1; i += OR) {
                    const int64_t nrow = min64(OR, i1 - i);
                    const float *a[OR];
                    for (int r = 0; r < OR; ++r) a[r] = wg + (i + (r < nrow ? r : 0)) * Cg + k0;
                    ukr(kc, a, xg + k0 * HW + j, HW, npx, yg + i * HW + j, HW, nrow, k0 == 0,
                        k0 + kc >= Cg, bg ? bg + i : NULL, relu);
                }
            }
        }
    }
    return 0;
}
