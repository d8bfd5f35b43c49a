/* The hot C kernels of one instruction-set level (see isa.h): the only source of the
 * per-level objects. setup.py compiles it once per level, with that level's flags and
 * -DFM_ISA=<level>, and links every object into the one extension; this file defines
 * the level's table, fastmom_isa_<level>. */
#ifndef FM_ISA
#error "compile with -DFM_ISA=baseline|avx2|avx512 (setup.py does)"
#endif

/* GCC warns that the pool rows' vector-returning helpers change the ABI below AVX; they
 * are static and inlined, so no such value crosses this object's boundary. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#include "isa.h"
#include "conv_direct.h"
#include "pool.h"
#include "dense_small.h"
#include "momentum.h"
#include "bias_act.h"

#define FM_CAT_(a, b) a##b
#define FM_CAT(a, b) FM_CAT_(a, b)
#define FM_STR_(a) #a
#define FM_STR(a) FM_STR_(a)

static int fm_direct_applies(int K, int ph, int pw)
{
    return fastmom_conv_pool_direct_applies(K, ph, pw);
}

static int fm_scatter_applies(int c, int ph, int pw, int lanes)
{
    return fastmom_conv_scatter_applies(c, ph, pw, lanes);
}

static int fm_rows_applies(int c, int ph, int pw, int lanes, int want_dx)
{
    return fastmom_conv_rows_applies(c, ph, pw, lanes, want_dx);
}

static int fm_rows_forward_applies(int c, int ph, int pw, int lanes)
{
    return fastmom_conv_rows_forward_applies(c, ph, pw, lanes);
}

static long fm_rows_forward_scratch(int c, int h, int kw, int PW, int itemsize)
{
    return fastmom_conv_rows_forward_scratch(c, h, kw, PW, itemsize);
}

static long fm_scatter_lists(int f, long nwin, int ws)
{
    return fastmom_conv_scatter_lists(f, nwin, ws);
}

#if FASTMOM_DIRECT_CONV
#define FM_DIRECT(fn) fn
#else
#define FM_DIRECT(fn) 0 /* never called: the applies functions say false */
#endif

#if FASTMOM_DIRECT_CONV && FM_POOL_VECTOR
#define FM_ROWS_FORWARD(fn) fn
#else
#define FM_ROWS_FORWARD(fn) 0 /* never called: fastmom_conv_rows_forward_applies is false */
#endif

#if FASTMOM_DENSE_SMALL
#define FM_DENSE_SMALL(fn) fn
#else
#define FM_DENSE_SMALL(fn) 0 /* _cpu.pyx keeps the BLAS */
#endif

#define FM_ENTRIES(S)                                                                      \
    .pack_filters_##S = FM_DIRECT(fastmom_pack_filters_##S),                               \
    .conv_pool_direct_##S = FM_DIRECT(fastmom_conv_pool_direct_##S),                       \
    .conv_pool_forward_rows_##S = FM_ROWS_FORWARD(fastmom_conv_pool_forward_rows_##S),     \
    .pack_filters_cl_##S = FM_DIRECT(fastmom_pack_filters_cl_##S),                         \
    .conv_pool_backward_scatter_##S = FM_DIRECT(fastmom_conv_pool_backward_scatter_##S),   \
    .conv_pool_backward_rows_##S = FM_DIRECT(fastmom_conv_pool_backward_rows_##S),         \
    .pool2x2_row_##S = fastmom_pool2x2_row_##S, .unpool2x2_row_##S = fastmom_unpool2x2_row_##S,    \
    .dense_small_forward_##S = FM_DENSE_SMALL(fastmom_dense_small_forward_##S),             \
    .dense_small_backward_##S = FM_DENSE_SMALL(fastmom_dense_small_backward_##S),          \
    .momentum_range_##S = fastmom_momentum_range_##S,                                       \
    .bias_act_##S = fastmom_bias_act_##S,

/* visibility: the table is for the extension's own object only */
__attribute__((visibility("hidden"))) extern const fastmom_isa_kernels FM_CAT(fastmom_isa_, FM_ISA);
const fastmom_isa_kernels FM_CAT(fastmom_isa_, FM_ISA) = {
    .name = FM_STR(FM_ISA),
#if FASTMOM_DIRECT_CONV
    .forward_vector_bytes = FM_FWD_BYTES,
#endif
    .conv_pool_direct_applies = fm_direct_applies,
    .conv_scatter_applies = fm_scatter_applies,
    .conv_rows_applies = fm_rows_applies,
    .conv_rows_forward_applies = fm_rows_forward_applies,
    .conv_rows_forward_scratch = fm_rows_forward_scratch,
    .conv_scatter_lists = fm_scatter_lists,
    FM_ENTRIES(f)
    FM_ENTRIES(d)
};
