/* Run-time choice of the instruction-set level of the hot C kernels.
 *
 * A build must run on every x86-64 machine, and the direct convolution needs AVX2 + FMA
 * to be fast (on SSE2 alone its tiles spill, see conv_direct.h). So, as NumPy and
 * oneDNN do, the kernels of conv_direct.h, pool.h, dense_small.h, momentum.h and
 * bias_act.h are compiled once per level into the one extension and _cpu.pyx calls them
 * through the table of the level that this CPU runs, chosen at import from cpuid.
 *
 * Why one object per level rather than per-function target attributes: the kernels are
 * written once (conv_direct_impl.h, pool_impl.h), type-generic, with always_inline
 * helpers. Per-level flags (setup.py compiles isa_kernels.c once per level with -mavx2
 * -mfma etc.) recompile exactly that source, helpers and libc inlines included, with
 * the level's macros (__AVX2__, __AVX512VL__) that size the tiles, and work the same with
 * GCC and Clang; target attributes would have to be repeated on every function, and an
 * inlined helper without one is an error. Each object defines one table
 * (fastmom_isa_<level>); setup.py defines FASTMOM_HAVE_<LEVEL> for the levels that this
 * compiler could build (all three on x86-64 with GCC >= 11 or Clang, only the baseline,
 * generic C, elsewhere).
 *
 * The Cython code itself (_cpu.pyx, with rows.h and pool.h's fastmom_dact inlined) is
 * compiled for the compiler's default target only, so it runs everywhere: a loop whose
 * speed is its vector width (the momentum step, 1.25-1.4x slower there than at
 * -march=native; the activations, scalar libm calls there) belongs in this table
 * instead.
 */
#ifndef FASTMOM_ISA_H
#define FASTMOM_ISA_H

#include <stddef.h>

/* Levels, lowest first: indices into fastmom_isa_names and fastmom_isa_table. */
enum { FM_ISA_BASELINE = 0, FM_ISA_AVX2 = 1, FM_ISA_AVX512 = 2, FM_ISA_COUNT = 3 };

/* The kernels of one level, per scalar type (S: f float, d double); `ties` selects the
 * max-pool tie rule, 0 "first" (argmax holds a position), 1 "all" (a bitmask of the tied
 * positions: see fastmom.backends.reference). A level without the
 * direct convolution (the baseline) has NULL kernels there and applies functions that
 * say false: callers take the im2col + GEMM paths. The small-batch dense kernels
 * (dense_small.h) are NULL only where the compiler lacks the vector extension: callers
 * then keep the BLAS. momentum_range (momentum.h) and bias_act (bias_act.h) are never
 * NULL. */
#define FM_ISA_KERNELS(T, S)                                                                \
    void (*pack_filters_##S)(const T *w, int f, int K, T *wp);                              \
    void (*conv_pool_direct_##S)(const T *x, int c, int h, int wd, const T *wp, int f,      \
                                 int kh, int kw, int ph, int pw, int PH, int PW, T *y,      \
                                 int *argmax, int ties);                                    \
    void (*conv_pool_forward_rows_##S)(const T *x, int c, int h, int wd, const T *w, int f, \
                                       int kh, int kw, int PH, int PW, T *y, int *argmax,   \
                                       int ties, T *scratch);                               \
    void (*pack_filters_cl_##S)(const T *w, int f, int c, int kh, int kw, int cp, T *wt);   \
    void (*conv_pool_backward_scatter_##S)(                                                 \
        const T *x, int c, int h, int wd, const T *wt, int f, int kh, int kw, int ph, int pw, \
        int PH, int PW, const T *dy, const T *y, const int *argmax, int act, int ties, T *xt, \
        T *dxt, T *lists, T *dwt, T *db, T *dx);                                            \
    void (*conv_pool_backward_rows_##S)(                                                    \
        const T *x, int c, int h, int wd, int f, int kh, int kw, int ph, int pw, int PH,    \
        int PW, const T *dy, const T *y, const int *argmax, int act, int ties, T *list,      \
        T *dwr, T *db);                                                                     \
    void (*pool2x2_row_##S)(const T *r0, const T *r1, int n, T *m, int *best, int ties);    \
    T (*unpool2x2_row_##S)(const T *dy, const T *y, const int *best, int n, int act,        \
                           int ties, T *z0, T *z1);                                         \
    void (*dense_small_forward_##S)(const T *x, int m, int nin, const T *w, int nout,       \
                                    T scale, int j0, int j1, T *y);                         \
    void (*dense_small_backward_##S)(const T *x, int m, int nin, const T *w, int nout,      \
                                     const T *dz, int k0, int k1, T *dw, T *dx);          \
    void (*momentum_range_##S)(T *p, const T *g, T *v, ptrdiff_t lo, ptrdiff_t hi,          \
                               ptrdiff_t n_decay, T eta, T mu, T decay, int mode);      \
    void (*bias_act_##S)(T *y, int rows, int cols, ptrdiff_t ld, const T *bias, int per_row, \
                         int act);

typedef struct fastmom_isa_kernels {
    const char *name;
    /* bytes per vector of conv_pool_direct's tiles (32, or 64 with AVX-512), which sets
     * pack_filters' layout and length; 0 where the level has no direct convolution */
    int forward_vector_bytes;
    int (*conv_pool_direct_applies)(int K, int ph, int pw);
    int (*conv_scatter_applies)(int c, int ph, int pw, int lanes);
    int (*conv_rows_applies)(int c, int ph, int pw, int lanes, int want_dx);
    int (*conv_rows_forward_applies)(int c, int ph, int pw, int lanes);
    long (*conv_rows_forward_scratch)(int c, int h, int kw, int PW, int itemsize);
    long (*conv_scatter_lists)(int f, long nwin, int ws);
    FM_ISA_KERNELS(float, f)
    FM_ISA_KERNELS(double, d)
} fastmom_isa_kernels;

#ifndef FM_ISA /* the extension's side (_cpu.pyx): the tables that were built, and cpuid */

static const char *const fastmom_isa_names[FM_ISA_COUNT] = {"baseline", "avx2", "avx512"};

extern const fastmom_isa_kernels fastmom_isa_baseline;
#ifdef FASTMOM_HAVE_AVX2
extern const fastmom_isa_kernels fastmom_isa_avx2;
#endif
#ifdef FASTMOM_HAVE_AVX512
extern const fastmom_isa_kernels fastmom_isa_avx512;
#endif

/* The table of `level`, or NULL where this build has none. */
static inline const fastmom_isa_kernels *fastmom_isa_table(int level)
{
    switch (level) {
    case FM_ISA_BASELINE: return &fastmom_isa_baseline;
#ifdef FASTMOM_HAVE_AVX2
    case FM_ISA_AVX2: return &fastmom_isa_avx2;
#endif
#ifdef FASTMOM_HAVE_AVX512
    case FM_ISA_AVX512: return &fastmom_isa_avx512;
#endif
    default: return 0;
    }
}

/* Whether this CPU (and its OS: libgcc's cpuid code checks that XSAVE enables the YMM
 * and ZMM state) runs `level`'s code. The baseline is x86-64-v2 on x86 (the features a
 * compiler may use at -march=x86-64-v2; cx16 and lahf it never emits in these loops),
 * the compiler's default target elsewhere. */
static inline int fastmom_isa_cpu_runs(int level)
{
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    int v2 = __builtin_cpu_supports("sse3") && __builtin_cpu_supports("ssse3") &&
             __builtin_cpu_supports("sse4.1") && __builtin_cpu_supports("sse4.2") &&
             __builtin_cpu_supports("popcnt");
    int v3 = v2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    switch (level) {
    case FM_ISA_BASELINE: return v2;
    case FM_ISA_AVX2: return v3;
    case FM_ISA_AVX512:
        return v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    default: return 0;
    }
#else
    return level == FM_ISA_BASELINE;
#endif
}

#endif /* !FM_ISA */
#endif
