/* The type-generic source of dense_small.h, instantiated per type by instantiate.h. */

#include <string.h>

typedef FM_T FM_NAME(fm_dsvec) __attribute__((vector_size(FM_DS_BYTES), aligned(sizeof(FM_T)), may_alias));

/* scalars per vector of this level */
#define FM_DS_V ((int)(FM_DS_BYTES / sizeof(FM_T)))

/* The first n lanes at p (n >= FM_DS_V: a whole vector), the rest zero; nothing past
 * p + n is read. */
static inline __attribute__((always_inline)) FM_NAME(fm_dsvec)
    FM_NAME(fm_ds_load)(const FM_T *p, int n)
{
    typedef FM_NAME(fm_dsvec) vec;
    if (n >= FM_DS_V)
        return *(const vec *)p;
#if defined(__AVX512F__) && FM_LANES == 8
    return (vec)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
#elif defined(__AVX512F__)
    return (vec)_mm512_maskz_loadu_pd((__mmask8)((1u << n) - 1), p);
#elif defined(__AVX2__) && FM_LANES == 8
    return (vec)_mm256_maskload_ps(
        p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
#elif defined(__AVX2__)
    return (vec)_mm256_maskload_pd(
        p, _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3)));
#else
    vec v = {0};
    for (int l = 0; l < n; l++)
        v[l] = p[l];
    return v;
#endif
}

/* Store the first n lanes of v at p (n >= FM_DS_V: all); nothing past p + n is
 * written. */
static inline __attribute__((always_inline)) void FM_NAME(fm_ds_store)(FM_T *p, FM_NAME(fm_dsvec) v,
                                                                       int n)
{
    typedef FM_NAME(fm_dsvec) vec;
    if (n >= FM_DS_V) {
        *(vec *)p = v;
        return;
    }
#if defined(__AVX512F__) && FM_LANES == 8
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v);
#elif defined(__AVX512F__)
    _mm512_mask_storeu_pd(p, (__mmask8)((1u << n) - 1), (__m512d)v);
#elif defined(__AVX2__) && FM_LANES == 8
    _mm256_maskstore_ps(
        p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)),
        (__m256)v);
#elif defined(__AVX2__)
    _mm256_maskstore_pd(
        p, _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3)), (__m256d)v);
#else
    for (int l = 0; l < n; l++)
        p[l] = v[l];
#endif
}

/* The lanes' sum by a fixed halving tree (lane l + lane l + h: 64 -> 32 -> 16 bytes, then
 * the last 4 or 2 scalars alike), the same on every call; a sequential sum would be a
 * chain of FM_DS_V dependent adds per output. Halves go through memcpy, which the
 * compiler turns into register extracts. */
typedef FM_T FM_NAME(fm_ds16) __attribute__((vector_size(16), aligned(sizeof(FM_T)), may_alias));
#if FM_DS_BYTES > 16
typedef FM_T FM_NAME(fm_ds32) __attribute__((vector_size(32), aligned(sizeof(FM_T)), may_alias));
#endif

static inline __attribute__((always_inline)) FM_T FM_NAME(fm_ds_hsum)(FM_NAME(fm_dsvec) a)
{
    FM_NAME(fm_ds16) lo;
#if FM_DS_BYTES == 64
    FM_NAME(fm_ds32) a0, a1;
    memcpy(&a0, &a, 32);
    memcpy(&a1, (const char *)&a + 32, 32);
    a0 += a1;
#elif FM_DS_BYTES == 32
    FM_NAME(fm_ds32) a0 = a;
#endif
#if FM_DS_BYTES > 16
    FM_NAME(fm_ds16) hi;
    memcpy(&lo, &a0, 16);
    memcpy(&hi, (const char *)&a0 + 16, 16);
    lo += hi;
#else
    lo = a;
#endif
#if FM_LANES == 8 /* float: 4 lanes left */
    return (lo[0] + lo[2]) + (lo[1] + lo[3]);
#else
    return lo[0] + lo[1];
#endif
}

/* -- forward: y = scale * x @ w ------------------------------------------------------ */

/* R batch rows x C column vectors of y (x at the tile's first row, w and y at its first
 * column; `last`: the valid lanes of the last vector). */
static inline __attribute__((always_inline)) void FM_NAME(fm_ds_forward_tile)(
    const FM_T *x, int nin, const FM_T *w, int nout, FM_T scale, FM_T *y, const int R,
    const int C, int last)
{
    typedef FM_NAME(fm_dsvec) vec;
    vec acc[FM_DS_FROWS][2];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++)
            acc[r][c] = (vec){0};
    for (int k = 0; k < nin; k++) {
        const FM_T *wk = w + (ptrdiff_t)k * nout;
        if (k + FM_DS_PREFETCH < nin)
            for (int c = 0; c < C; c++)
                __builtin_prefetch(wk + (ptrdiff_t)FM_DS_PREFETCH * nout + c * FM_DS_V);
        vec wv[2];
        for (int c = 0; c < C; c++) {
            wv[c] = FM_NAME(fm_ds_load)(wk + c * FM_DS_V, c == C - 1 ? last : FM_DS_V);
            FM_DS_PIN(wv[c]); /* one load, R multiply-adds (GCC would fold it into each) */
        }
        for (int r = 0; r < R; r++) {
            FM_T xs = x[(ptrdiff_t)r * nin + k];
            for (int c = 0; c < C; c++)
                acc[r][c] += xs * wv[c];
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++)
            FM_NAME(fm_ds_store)(y + (ptrdiff_t)r * nout + c * FM_DS_V, scale * acc[r][c],
                                 c == C - 1 ? last : FM_DS_V);
}

#define FM_DS_FWD_CASE(r)                                                                  \
    case r:                                                                                \
        if (C == 2)                                                                        \
            FM_NAME(fm_ds_forward_tile)(xr, nin, wj, nout, scale, yr, r, 2, last);          \
        else                                                                               \
            FM_NAME(fm_ds_forward_tile)(xr, nin, wj, nout, scale, yr, r, 1, last);          \
        break;

/* Columns j0 <= j < j1 of y = scale * x @ w, for m <= FASTMOM_DENSE_SMALL_MAX_ROWS rows:
 * column strips of two vectors, each walked down the weights once per group of at most
 * FM_DS_FROWS rows (balanced groups; the strip is in L2 for the second). */
static void FM_NAME(fastmom_dense_small_forward)(const FM_T *x, int m, int nin, const FM_T *w,
                                                 int nout, FM_T scale, int j0, int j1, FM_T *y)
{
    int ng = (m + FM_DS_FROWS - 1) / FM_DS_FROWS;
    for (int j = j0; j < j1; j += 2 * FM_DS_V) {
        int left = j1 - j, C = left > FM_DS_V ? 2 : 1;
        int last = left >= 2 * FM_DS_V ? FM_DS_V : left - (C - 1) * FM_DS_V;
        const FM_T *wj = w + j;
        for (int g = 0; g < ng; g++) {
            int r0 = m * g / ng, R = m * (g + 1) / ng - r0;
            const FM_T *xr = x + (ptrdiff_t)r0 * nin;
            FM_T *yr = y + (ptrdiff_t)r0 * nout + j;
            switch (R) {
                FM_DS_FWD_CASE(1) FM_DS_FWD_CASE(2) FM_DS_FWD_CASE(3)
                FM_DS_FWD_CASE(4) FM_DS_FWD_CASE(5) FM_DS_FWD_CASE(6)
#if FM_DS_FROWS > 6
                FM_DS_FWD_CASE(7) FM_DS_FWD_CASE(8) FM_DS_FWD_CASE(9)
                FM_DS_FWD_CASE(10) FM_DS_FWD_CASE(11) FM_DS_FWD_CASE(12)
#endif
            }
        }
    }
}
#undef FM_DS_FWD_CASE

/* -- backward: dW = x^T @ dz ---------------------------------------------------------- */

/* K weight rows x C column vectors of dW (x at column k, dz and dw at the strip's
 * first column): the m outer-product terms summed in batch-row order. */
static inline __attribute__((always_inline)) void FM_NAME(fm_ds_dw_tile)(
    const FM_T *x, int nin, const FM_T *dz, int nout, int m, FM_T *dw, const int K,
    const int C, int last)
{
    typedef FM_NAME(fm_dsvec) vec;
    vec acc[4][FM_DS_WCOLS];
    for (int r = 0; r < K; r++)
        for (int c = 0; c < C; c++)
            acc[r][c] = (vec){0};
    for (int i = 0; i < m; i++) {
        vec d[FM_DS_WCOLS];
        for (int c = 0; c < C; c++) {
            d[c] = FM_NAME(fm_ds_load)(dz + (ptrdiff_t)i * nout + c * FM_DS_V,
                                       c == C - 1 ? last : FM_DS_V);
            FM_DS_PIN(d[c]);
        }
        for (int r = 0; r < K; r++) {
            FM_T xs = x[(ptrdiff_t)i * nin + r];
            for (int c = 0; c < C; c++)
                acc[r][c] += xs * d[c];
        }
    }
    for (int r = 0; r < K; r++)
        for (int c = 0; c < C; c++)
            FM_NAME(fm_ds_store)(dw + (ptrdiff_t)r * nout + c * FM_DS_V, acc[r][c],
                                 c == C - 1 ? last : FM_DS_V);
}

#define FM_DS_DW_C(k, c)                                                                   \
    case c: FM_NAME(fm_ds_dw_tile)(xk, nin, dz + j, nout, m, dwk + j, k, c, last); break;
#if FM_DS_WCOLS > 2
#define FM_DS_DW_K(k)                                                                      \
    case k:                                                                                \
        switch (C) { FM_DS_DW_C(k, 1) FM_DS_DW_C(k, 2) FM_DS_DW_C(k, 3) FM_DS_DW_C(k, 4) } \
        break;
#else
#define FM_DS_DW_K(k)                                                                      \
    case k:                                                                                \
        switch (C) { FM_DS_DW_C(k, 1) FM_DS_DW_C(k, 2) }                                   \
        break;
#endif

/* -- backward: dx = dz @ w^T ---------------------------------------------------------- */

/* One column vector (n valid lanes) of the dot products of K weight rows with R rows
 * of dz, into acc. */
static inline __attribute__((always_inline)) void FM_NAME(fm_ds_dx_step)(
    const FM_T *w, const FM_T *dz, int nout, FM_NAME(fm_dsvec) acc[FM_DS_XK][FM_DS_XROWS], const int K,
    const int R, int n)
{
    typedef FM_NAME(fm_dsvec) vec;
    vec wv[FM_DS_XK];
    for (int r = 0; r < K; r++) {
        wv[r] = FM_NAME(fm_ds_load)(w + (ptrdiff_t)r * nout, n);
        FM_DS_PIN(wv[r]);
    }
    for (int i = 0; i < R; i++) {
        vec d = FM_NAME(fm_ds_load)(dz + (ptrdiff_t)i * nout, n);
        for (int r = 0; r < K; r++)
            acc[r][i] += d * wv[r];
    }
}

/* dx[i, k + r] for R batch rows i (dz, dx at the tile's first row) and K weight rows
 * (w at row k): per-lane sums along the row, then the fixed lane tree. */
static inline __attribute__((always_inline)) void FM_NAME(fm_ds_dx_tile)(
    const FM_T *w, const FM_T *dz, int nout, int nin, FM_T *dx, const int K, const int R)
{
    typedef FM_NAME(fm_dsvec) vec;
    vec acc[FM_DS_XK][FM_DS_XROWS];
    for (int r = 0; r < K; r++)
        for (int i = 0; i < R; i++)
            acc[r][i] = (vec){0};
    int j = 0;
    for (; j + FM_DS_V <= nout; j += FM_DS_V)
        FM_NAME(fm_ds_dx_step)(w + j, dz + j, nout, acc, K, R, FM_DS_V);
    if (j < nout)
        FM_NAME(fm_ds_dx_step)(w + j, dz + j, nout, acc, K, R, nout - j);
    for (int r = 0; r < K; r++)
        for (int i = 0; i < R; i++)
            dx[(ptrdiff_t)i * nin + r] = FM_NAME(fm_ds_hsum)(acc[r][i]);
}

#define FM_DS_DX_K(k, r)                                                                   \
    case k: FM_NAME(fm_ds_dx_tile)(wk, dzr, nout, nin, dxr, k, r); break;
#if FM_DS_XK == 4
#define FM_DS_DX_KS(r) FM_DS_DX_K(1, r) FM_DS_DX_K(2, r) FM_DS_DX_K(3, r) FM_DS_DX_K(4, r)
#elif FM_DS_XK == 3
#define FM_DS_DX_KS(r) FM_DS_DX_K(1, r) FM_DS_DX_K(2, r) FM_DS_DX_K(3, r)
#else
#define FM_DS_DX_KS(r) FM_DS_DX_K(1, r) FM_DS_DX_K(2, r)
#endif
#define FM_DS_DX_CASE(r)                                                                   \
    case r: switch (K) { FM_DS_DX_KS(r) } break;

/* Weight rows k0 <= k < k1 of dW = x^T @ dz and, unless dx is NULL, the same columns
 * of dx = dz @ w^T, for m <= FASTMOM_DENSE_SMALL_MAX_ROWS rows of dz (in L1/L2 for the
 * whole call): dW in tiles of 4 rows x FM_DS_WCOLS vectors, dx in tiles of FM_DS_XK
 * weight rows x at most FM_DS_XROWS batch rows (balanced groups). */
static void FM_NAME(fastmom_dense_small_backward)(const FM_T *x, int m, int nin, const FM_T *w,
                                                  int nout, const FM_T *dz, int k0, int k1,
                                                  FM_T *dw, FM_T *dx)
{
    const int width = FM_DS_WCOLS * FM_DS_V;
    for (int k = k0; k < k1; k += 4) {
        int K = k1 - k < 4 ? k1 - k : 4;
        const FM_T *xk = x + k;
        FM_T *dwk = dw + (ptrdiff_t)k * nout;
        for (int j = 0; j < nout; j += width) {
            int left = nout - j, C = left >= width ? FM_DS_WCOLS : (left + FM_DS_V - 1) / FM_DS_V;
            int last = left >= width ? FM_DS_V : left - (C - 1) * FM_DS_V;
            switch (K) { FM_DS_DW_K(1) FM_DS_DW_K(2) FM_DS_DW_K(3) FM_DS_DW_K(4) }
        }
    }
    if (!dx)
        return;
    int ng = (m + FM_DS_XROWS - 1) / FM_DS_XROWS;
    for (int k = k0; k < k1; k += FM_DS_XK) {
        int K = k1 - k < FM_DS_XK ? k1 - k : FM_DS_XK;
        const FM_T *wk = w + (ptrdiff_t)k * nout;
        for (int g = 0; g < ng; g++) {
            int r0 = m * g / ng, R = m * (g + 1) / ng - r0;
            const FM_T *dzr = dz + (ptrdiff_t)r0 * nout;
            FM_T *dxr = dx + (ptrdiff_t)r0 * nin + k;
            switch (R) {
                FM_DS_DX_CASE(1) FM_DS_DX_CASE(2) FM_DS_DX_CASE(3) FM_DS_DX_CASE(4)
#if FM_DS_XROWS > 4
                FM_DS_DX_CASE(5) FM_DS_DX_CASE(6)
#endif
#if FM_DS_XROWS > 6
                FM_DS_DX_CASE(7) FM_DS_DX_CASE(8) FM_DS_DX_CASE(9)
                FM_DS_DX_CASE(10) FM_DS_DX_CASE(11) FM_DS_DX_CASE(12)
#endif
            }
        }
    }
}
#undef FM_DS_DW_C
#undef FM_DS_DW_K
#undef FM_DS_DX_CASE
#undef FM_DS_DX_K
#undef FM_DS_DX_KS
#undef FM_DS_V
