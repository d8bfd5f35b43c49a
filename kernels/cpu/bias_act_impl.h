/* The type-generic source of bias_act.h, instantiated per type by instantiate.h. */

#if defined(__GNUC__) || defined(__clang__)

typedef FM_T FM_NAME(fm_bavec) __attribute__((vector_size(FM_BA_BYTES), aligned(sizeof(FM_T)), may_alias));
typedef FM_INT FM_NAME(fm_baint) __attribute__((vector_size(FM_BA_BYTES), aligned(sizeof(FM_T)), may_alias));

/* scalars per vector of this level */
#define FM_BA_V ((int)(FM_BA_BYTES / sizeof(FM_T)))

/* The type's constants: mantissa bits and exponent bias; 1.5 * 2^mant, whose addition
 * rounds to an integer held in the low mantissa bits; the lowest argument of exp (below
 * it exp rounds to 0 in this type, and k stays within two halves of normal exponents);
 * ln 2 in two parts, the first with few enough bits that k * FM_BA_LN2HI is exact
 * (fdlibm's for double, Cephes' for float); the Taylor coefficients 1/n!. */
#if FM_LANES == 8
#define FM_BA_MANT 23
#define FM_BA_EBIAS 127
#define FM_BA_MAGIC 12582912.0f
#define FM_BA_LO -104.0f
#define FM_BA_LOG2E 1.44269504088896341f
#define FM_BA_LN2HI 0.693359375f
#define FM_BA_LN2LO -2.12194440e-4f
#define FM_BA_SIGN ((FM_INT)0x80000000u)
#else
#define FM_BA_MANT 52
#define FM_BA_EBIAS 1023
#define FM_BA_MAGIC 6755399441055744.0
#define FM_BA_LO -746.0
#define FM_BA_LOG2E 1.44269504088896338700e+00
#define FM_BA_LN2HI 6.93147180369123816490e-01
#define FM_BA_LN2LO 1.90821492927058770002e-10
#define FM_BA_SIGN ((FM_INT)0x8000000000000000ull)
#endif

/* a vector of s in every lane */
#define FM_BA_SPLAT(s) ((FM_NAME(fm_bavec)){0} + (FM_T)(s))

/* lanes of a where m is set (all ones), of b elsewhere */
static inline __attribute__((always_inline)) FM_NAME(fm_bavec)
    FM_NAME(fm_ba_select)(FM_NAME(fm_baint) m, FM_NAME(fm_bavec) a, FM_NAME(fm_bavec) b)
{
    typedef FM_NAME(fm_bavec) vec;
    typedef FM_NAME(fm_baint) ivec;
    return (vec)(((ivec)a & m) | ((ivec)b & ~m));
}

/* 2^k for integer lanes k in [2 (1 - bias), 0]: two normal halves, one rounding. */
static inline __attribute__((always_inline)) FM_NAME(fm_bavec)
    FM_NAME(fm_ba_pow2)(FM_NAME(fm_baint) k)
{
    typedef FM_NAME(fm_bavec) vec;
    FM_NAME(fm_baint) k1 = k >> 1, k2 = k - k1;
    return (vec)((k1 + FM_BA_EBIAS) << FM_BA_MANT) * (vec)((k2 + FM_BA_EBIAS) << FM_BA_MANT);
}

/* x <= 0 (NaN passes through): 2^k into *s and expm1(r) as the result, x = k ln2 + r. */
static inline __attribute__((always_inline)) FM_NAME(fm_bavec)
    FM_NAME(fm_ba_reduce)(FM_NAME(fm_bavec) x, FM_NAME(fm_bavec) *s)
{
    typedef FM_NAME(fm_bavec) vec;
    typedef FM_NAME(fm_baint) ivec;
    vec lo = FM_BA_SPLAT(FM_BA_LO);
    x = FM_NAME(fm_ba_select)((ivec)(x < lo), lo, x);
    vec t = x * FM_BA_LOG2E + FM_BA_MAGIC;
    vec kf = t - FM_BA_MAGIC;
    *s = FM_NAME(fm_ba_pow2)((ivec)t - (ivec)FM_BA_SPLAT(FM_BA_MAGIC));
    vec r = (x - kf * FM_BA_LN2HI) - kf * FM_BA_LN2LO;
#if FM_LANES == 8
    vec p = FM_BA_SPLAT(1.0 / 5040);
    p = p * r + (FM_T)(1.0 / 720);
    p = p * r + (FM_T)(1.0 / 120);
    p = p * r + (FM_T)(1.0 / 24);
    p = p * r + (FM_T)(1.0 / 6);
    p = p * r + (FM_T)0.5;
#else
    vec p = FM_BA_SPLAT(1.0 / 6227020800.0);
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
#endif
    return r + (r * r) * p;
}

/* act(z) lane by lane (act a literal at every call). */
static inline __attribute__((always_inline)) FM_NAME(fm_bavec)
    FM_NAME(fm_ba_act)(FM_NAME(fm_bavec) z, const int act)
{
    typedef FM_NAME(fm_bavec) vec;
    typedef FM_NAME(fm_baint) ivec;
    const ivec sign = (ivec){0} + FM_BA_SIGN;
    vec one = FM_BA_SPLAT(1), s, q;
    if (act == FASTMOM_LINEAR)
        return z;
    if (act == FASTMOM_RELU) /* z < 0 is false for NaN, which stays */
        return FM_NAME(fm_ba_select)((ivec)(z < (vec){0}), (vec){0}, z);
    vec a = (vec)((ivec)z & ~sign); /* |z| */
    if (act == FASTMOM_SIGMOID) {
        q = FM_NAME(fm_ba_reduce)(-a, &s);
        vec e = s * (one + q); /* exp(-|z|) */
        return FM_NAME(fm_ba_select)((ivec)(z >= (vec){0}), one, e) / (one + e);
    }
    /* tanh */
    q = FM_NAME(fm_ba_reduce)(-(a + a), &s);
    vec m = s * q + (s - one); /* expm1(-2|z|) */
    vec t = -m / (FM_BA_SPLAT(2) + m); /* -0 at z = 0: the sign comes from z alone */
    return (vec)(((ivec)t & ~sign) | ((ivec)z & sign));
}

/* The rows of fastmom_bias_act with literal act and bias layout. */
static inline __attribute__((always_inline)) void FM_NAME(fm_ba_rows)(
    FM_T *y, int rows, int cols, ptrdiff_t ld, const FM_T *bias, const int per_row,
    const int act)
{
    typedef FM_NAME(fm_bavec) vec;
    for (int i = 0; i < rows; i++) {
        FM_T *yr = y + (ptrdiff_t)i * ld;
        vec brow = {0};
        if (per_row)
            brow = FM_BA_SPLAT(bias[i]);
        int j = 0;
        for (; j + FM_BA_V <= cols; j += FM_BA_V) {
            vec z = *(const vec *)(yr + j);
            if (per_row)
                z += brow;
            else
                z += *(const vec *)(bias + j);
            *(vec *)(yr + j) = FM_NAME(fm_ba_act)(z, act);
        }
        if (j < cols) { /* the same vector operations on a zero-padded copy */
            size_t bytes = (size_t)(cols - j) * sizeof(FM_T);
            vec z = {0}, b = brow;
            memcpy(&z, yr + j, bytes);
            if (!per_row)
                memcpy(&b, bias + j, bytes);
            z = FM_NAME(fm_ba_act)(z + b, act);
            memcpy(yr + j, &z, bytes);
        }
    }
}

#undef FM_BA_V
#undef FM_BA_MANT
#undef FM_BA_EBIAS
#undef FM_BA_MAGIC
#undef FM_BA_LO
#undef FM_BA_LOG2E
#undef FM_BA_LN2HI
#undef FM_BA_LN2LO
#undef FM_BA_SIGN
#undef FM_BA_SPLAT

#else /* no vector extension: libm, one element at a time */

#include <math.h>

static inline FM_T FM_NAME(fm_ba_act)(FM_T z, int act)
{
    FM_T e;
    if (act == FASTMOM_LINEAR)
        return z;
    if (act == FASTMOM_RELU)
        return z < 0 ? 0 : z;
    if (act == FASTMOM_TANH)
        return (FM_T)tanh((double)z);
    e = (FM_T)exp(-fabs((double)z));
    return (z >= 0 ? 1 : e) / (1 + e);
}

static void FM_NAME(fm_ba_rows)(FM_T *y, int rows, int cols, ptrdiff_t ld, const FM_T *bias,
                                int per_row, int act)
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            y[(ptrdiff_t)i * ld + j] =
                FM_NAME(fm_ba_act)(y[(ptrdiff_t)i * ld + j] + bias[per_row ? i : j], act);
}

#endif

/* y[i, j] = act(y[i, j] + b) for i < rows, j < cols (row stride ld), b = bias[i] where
 * per_row (a conv layer's filter planes), else bias[j] (a dense layer's columns). */
static void FM_NAME(fastmom_bias_act)(FM_T *y, int rows, int cols, ptrdiff_t ld,
                                      const FM_T *bias, int per_row, int act)
{
#define FM_BA_CASE(code)                                                                   \
    case code:                                                                             \
        if (per_row)                                                                       \
            FM_NAME(fm_ba_rows)(y, rows, cols, ld, bias, 1, code);                          \
        else                                                                               \
            FM_NAME(fm_ba_rows)(y, rows, cols, ld, bias, 0, code);                          \
        break;
    switch (act) {
        FM_BA_CASE(FASTMOM_SIGMOID)
        FM_BA_CASE(FASTMOM_TANH)
        FM_BA_CASE(FASTMOM_RELU)
        FM_BA_CASE(FASTMOM_LINEAR)
    }
#undef FM_BA_CASE
}
