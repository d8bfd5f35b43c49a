/* The type-generic source of pool.h, instantiated per type by instantiate.h. */

/* The activation's derivative through its output y. Always inlined (GCC kept a call per
 * window in the backward's loops). */
static inline __attribute__((always_inline)) FM_T FM_NAME(fastmom_dact)(FM_T y, int act)
{
    if (act == FASTMOM_RELU)
        return y > 0 ? 1 : 0;
    if (act == FASTMOM_LINEAR)
        return 1;
    if (act == FASTMOM_TANH)
        return 1 - y * y;
    return y * (1 - y);
}

/* 32-byte vectors of FM_T and of lane masks, unaligned (the per-level objects only:
 * _cpu.pyx's target may have no 32-byte vectors) */
#if defined(FM_ISA) && (defined(__GNUC__) || defined(__clang__))
typedef FM_T FM_NAME(fm_pvec) __attribute__((vector_size(32), aligned(sizeof(FM_T)), may_alias));
typedef FM_INT FM_NAME(fm_pmask) __attribute__((vector_size(32), aligned(sizeof(FM_T)), may_alias));

/* fastmom_dact of each lane of y, branch-free (ReLU's derivative a mask: a branch on the
 * sign of random values mispredicts). */
static inline __attribute__((always_inline)) FM_NAME(fm_pvec) FM_NAME(fm_dact_vec)(
    FM_NAME(fm_pvec) y, int act)
{
    typedef FM_NAME(fm_pvec) vec;
    if (act == FASTMOM_RELU)
        return (vec)((FM_NAME(fm_pmask))((vec){0} + 1) & (y > 0));
    if (act == FASTMOM_LINEAR)
        return (vec){0} + 1;
    if (act == FASTMOM_TANH)
        return 1 - y * y;
    return y * (1 - y);
}
#endif

/* Windows j0 <= j < n of fastmom_pool2x2_row, one at a time: `v > mx ? v : mx` is a
 * maxss, the index arithmetic branch-free. */
static inline __attribute__((always_inline)) void FM_NAME(fm_pool2x2_scalar)(
    const FM_T *r0, const FM_T *r1, int j0, int n, FM_T *m, int *best, const int ties)
{
    for (int j = j0; j < n; j++) {
        FM_T c[3] = {r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]}, mx = r0[2 * j];
        int bi = 0;
        for (int s = 0; s < 3; s++) {
            int gt = c[s] > mx;
            bi += (s + 1 - bi) * gt;
            mx = c[s] > mx ? c[s] : mx;
        }
        m[j] = mx;
        /* ties: every position equal to the maximum, and the first maximum's bit (a NaN
         * maximum equals nothing) */
        best[j] = ties ? 1 << bi | (r0[2 * j] == mx) | (c[0] == mx) << 1 | (c[1] == mx) << 2 |
                             (c[2] == mx) << 3
                       : bi;
    }
}

/* Windows j0 <= j < n of fastmom_unpool2x2_row, one at a time; returns their g's sum in
 * order. The four stores select g or zero by bit masks: a branch on the argmax
 * mispredicts on random data. */
static inline __attribute__((always_inline)) FM_T FM_NAME(fm_unpool2x2_scalar)(
    const FM_T *dy, const FM_T *y, const int *best, int j0, int n, int act, FM_T *z0, FM_T *z1,
    const int ties)
{
    FM_T sum = 0;
    for (int j = j0; j < n; j++) {
        FM_T g = dy[j] * FM_NAME(fastmom_dact)(y[j], act);
        FM_INT bits, out[4];
        memcpy(&bits, &g, sizeof bits);
        for (int s = 0; s < 4; s++)
            out[s] = bits & -(FM_INT)(ties ? best[j] >> s & 1 : best[j] == s);
        memcpy(z0 + 2 * j, out, 2 * sizeof(FM_T));
        memcpy(z1 + 2 * j, out + 2, 2 * sizeof(FM_T));
        sum += g;
    }
    return sum;
}

#if FM_POOL_VECTOR

typedef int FM_NAME(fm_pidx) __attribute__((vector_size(FM_LANES * 4), aligned(4), may_alias));

/* FM_EVEN, FM_ODD: the even and odd columns of a, b within each 16-byte lane (one vshufps
 * or vunpck each), so the windows come in the order 0 1 4 5 2 3 6 7 (doubles: 0 2 1 3);
 * FM_WINDOWS puts them back in order, one cross-lane permute. The exact even / odd
 * (a cross-lane permute per vector, eight per 8 windows) made the pool cost half as
 * much as the forward's multiply-adds in network3's conv1 (Zen 3). */
#if FM_LANES == 8
#define FM_EVEN(a, b) __builtin_shufflevector(a, b, 0, 2, 8, 10, 4, 6, 12, 14)
#define FM_ODD(a, b) __builtin_shufflevector(a, b, 1, 3, 9, 11, 5, 7, 13, 15)
#define FM_WINDOWS(v) __builtin_shufflevector(v, v, 0, 1, 4, 5, 2, 3, 6, 7)
#define FM_ZIP_LO(a, b) __builtin_shufflevector(a, b, 0, 8, 1, 9, 2, 10, 3, 11)
#define FM_ZIP_HI(a, b) __builtin_shufflevector(a, b, 4, 12, 5, 13, 6, 14, 7, 15)
#else
#define FM_EVEN(a, b) __builtin_shufflevector(a, b, 0, 4, 2, 6)
#define FM_ODD(a, b) __builtin_shufflevector(a, b, 1, 5, 3, 7)
#define FM_WINDOWS(v) __builtin_shufflevector(v, v, 0, 2, 1, 3)
#define FM_ZIP_LO(a, b) __builtin_shufflevector(a, b, 0, 4, 1, 5)
#define FM_ZIP_HI(a, b) __builtin_shufflevector(a, b, 2, 6, 3, 7)
#endif

/* FM_LANES windows in registers: *m and *best get the max and argmax (ties: the bitmask
 * of the tied positions) of the windows at columns 2j, 2j+1 of r0 and r1. */
static inline __attribute__((always_inline)) void FM_NAME(fm_pool2x2_win)(
    const FM_T *r0, const FM_T *r1, FM_NAME(fm_pvec) *m, FM_NAME(fm_pmask) *best,
    const int ties)
{
    typedef FM_NAME(fm_pvec) vec;
    typedef FM_NAME(fm_pmask) mask;
    vec p = *(const vec *)r0, q = *(const vec *)(r0 + FM_LANES);
    vec s = *(const vec *)r1, t = *(const vec *)(r1 + FM_LANES);
    vec cand[3] = {FM_ODD(p, q), FM_EVEN(s, t), FM_ODD(s, t)};
    vec mx = FM_EVEN(p, q);
    mask bi = (mask){0};
    for (int c = 0; c < 3; c++) {
        mask gt = cand[c] > mx;
        mx = (vec)(((mask)cand[c] & gt) | ((mask)mx & ~gt));
        bi = (bi & ~gt) | (((mask){0} + (c + 1)) & gt);
    }
    if (ties) {
        mask first = FM_EVEN(p, q) == mx;
        bi = ((mask){0} + 1) << bi | (first & 1);
        for (int c = 0; c < 3; c++)
            bi |= (cand[c] == mx) & (2 << c);
    }
    *m = FM_WINDOWS(mx);
    *best = FM_WINDOWS(bi);
}

/* fm_pool2x2_win's windows stored to m[0:FM_LANES], best[0:FM_LANES]. */
static inline __attribute__((always_inline)) void FM_NAME(fm_pool2x2_vec)(
    const FM_T *r0, const FM_T *r1, FM_T *m, int *best, const int ties)
{
    FM_NAME(fm_pvec) mx;
    FM_NAME(fm_pmask) bi;
    FM_NAME(fm_pool2x2_win)(r0, r1, &mx, &bi, ties);
    *(FM_NAME(fm_pvec) *)m = mx;
    *(FM_NAME(fm_pidx) *)best = __builtin_convertvector(bi, FM_NAME(fm_pidx));
}

/* FM_LANES windows backward: g = dy * act'(y) to each window's argmax in z0, z1;
 * returns g. */
static inline __attribute__((always_inline)) FM_NAME(fm_pvec) FM_NAME(fm_unpool2x2_vec)(
    const FM_T *dy, const FM_T *y, const int *best, int act, FM_T *z0, FM_T *z1, const int ties)
{
    typedef FM_NAME(fm_pvec) vec;
    typedef FM_NAME(fm_pmask) mask;
    vec g = *(const vec *)dy * FM_NAME(fm_dact_vec)(*(const vec *)y, act);
    mask a = __builtin_convertvector(*(const FM_NAME(fm_pidx) *)best, mask);
    /* the positions the record names: the argmax, or each set bit of the tie mask */
    mask s0 = ties ? (a & 1) != 0 : a == 0, s1 = ties ? (a & 2) != 0 : a == 1;
    mask s2 = ties ? (a & 4) != 0 : a == 2, s3 = ties ? (a & 8) != 0 : a == 3;
    vec v0 = (vec)((mask)g & s0), v1 = (vec)((mask)g & s1);
    vec v2 = (vec)((mask)g & s2), v3 = (vec)((mask)g & s3);
    *(vec *)z0 = FM_ZIP_LO(v0, v1);
    *(vec *)(z0 + FM_LANES) = FM_ZIP_HI(v0, v1);
    *(vec *)z1 = FM_ZIP_LO(v2, v3);
    *(vec *)(z1 + FM_LANES) = FM_ZIP_HI(v2, v3);
    return g;
}

#undef FM_EVEN
#undef FM_ODD
#undef FM_WINDOWS
#undef FM_ZIP_LO
#undef FM_ZIP_HI

/* The row loops for a literal tie flag: the default rule's code is compiled apart,
 * without the tie masks. */
static inline __attribute__((always_inline)) void FM_NAME(fm_pool2x2_rows)(
    const FM_T *r0, const FM_T *r1, int n, FM_T *m, int *best, const int ties)
{
    int j = 0;
    for (; j + FM_LANES <= n; j += FM_LANES)
        FM_NAME(fm_pool2x2_vec)(r0 + 2 * j, r1 + 2 * j, m + j, best + j, ties);
    FM_NAME(fm_pool2x2_scalar)(r0, r1, j, n, m, best, ties);
}

/* m[j], best[j]: max and argmax (0..3, row-major) of the window at columns 2j, 2j+1 of
 * rows r0 and r1, for j < n; with ties, best[j] is the bitmask of every position equal
 * to the maximum (pool_ties="all"). */
static inline void FM_NAME(fastmom_pool2x2_row)(const FM_T *r0, const FM_T *r1, int n, FM_T *m,
                                                int *best, int ties)
{
    if (ties)
        FM_NAME(fm_pool2x2_rows)(r0, r1, n, m, best, 1);
    else
        FM_NAME(fm_pool2x2_rows)(r0, r1, n, m, best, 0);
}

static inline __attribute__((always_inline)) FM_T FM_NAME(fm_unpool2x2_rows)(
    const FM_T *dy, const FM_T *y, const int *best, int n, int act, FM_T *z0, FM_T *z1,
    const int ties)
{
    FM_NAME(fm_pvec) acc = {0};
    FM_T sum = 0;
    int j = 0;
    for (; j + FM_LANES <= n; j += FM_LANES)
        acc += FM_NAME(fm_unpool2x2_vec)(dy + j, y + j, best + j, act, z0 + 2 * j, z1 + 2 * j,
                                         ties);
    for (int l = 0; l < FM_LANES; l++)
        sum += acc[l];
    return sum + FM_NAME(fm_unpool2x2_scalar)(dy, y, best, j, n, act, z0, z1, ties);
}

/* The adjoint: g[j] = dy[j] * act'(y[j]) to the argmax of window j in rows z0, z1
 * (columns 2j, 2j+1; with ties, to every position set in the tie mask best[j]), zero at
 * its other positions; returns the sum of the g (the bias gradient's share: lane sums of
 * the vector blocks in lane order, then the last windows in order). */
static inline FM_T FM_NAME(fastmom_unpool2x2_row)(const FM_T *dy, const FM_T *y, const int *best,
                                                  int n, int act, int ties, FM_T *z0, FM_T *z1)
{
    if (ties)
        return FM_NAME(fm_unpool2x2_rows)(dy, y, best, n, act, z0, z1, 1);
    return FM_NAME(fm_unpool2x2_rows)(dy, y, best, n, act, z0, z1, 0);
}

#else /* scalar loops, the same results */

static inline void FM_NAME(fastmom_pool2x2_row)(const FM_T *r0, const FM_T *r1, int n, FM_T *m,
                                                int *best, int ties)
{
    if (ties)
        FM_NAME(fm_pool2x2_scalar)(r0, r1, 0, n, m, best, 1);
    else
        FM_NAME(fm_pool2x2_scalar)(r0, r1, 0, n, m, best, 0);
}

static inline FM_T FM_NAME(fastmom_unpool2x2_row)(const FM_T *dy, const FM_T *y, const int *best,
                                                  int n, int act, int ties, FM_T *z0, FM_T *z1)
{
    if (ties)
        return FM_NAME(fm_unpool2x2_scalar)(dy, y, best, 0, n, act, z0, z1, 1);
    return FM_NAME(fm_unpool2x2_scalar)(dy, y, best, 0, n, act, z0, z1, 0);
}

#endif
