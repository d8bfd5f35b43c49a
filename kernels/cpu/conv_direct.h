/* Direct valid cross-correlation fused with max-pooling, for conv_pool_forward in
 * _cpu.pyx.
 *
 * im2col + GEMM moves every input value K/c times through memory, twice more than the
 * arithmetic needs (im2col writes the columns, the BLAS packs them again), then writes
 * the whole pre-pool map and reads it back to pool it: in network3's conv2 at batch 256
 * that traffic took as long as the multiply-adds, and the scalar 2x2 pooling a third of
 * conv1. Here a tile of FV filter vectors (8 floats or 4 doubles, twice as many with
 * AVX-512: one filter per lane) x P output positions (whole pooling windows) keeps its
 * FV*P accumulators in registers,
 * reads the image (in L1) and the packed filters (one contiguous stream) directly (per
 * tap, FV vector loads and P broadcast inputs feed FV*P fused multiply-adds) and pools
 * its windows with vector compares, a vector of filters at a time. The pre-pool map
 * never exists.
 *
 * Written once in conv_direct_impl.h and instantiated for float and double (C has no
 * templates). Needs the GCC/Clang vector extension and AVX2 with FMA (the tiles are sized
 * for 32-byte registers or more; on SSE2 alone they spilled and ran 40x slower), and pooling
 * windows of 1, 2 or 4 positions (a tile holds whole windows): elsewhere, e.g. at the
 * baseline level (isa.h) or on another architecture, fastmom_conv_pool_direct_applies is
 * false and the kernels keep im2col + GEMM. Compiled per level by isa_kernels.c.
 */
#ifndef FASTMOM_CONV_DIRECT_H
#define FASTMOM_CONV_DIRECT_H

#include <stdint.h>
#include <string.h>
#include "pool.h" /* fastmom_dact */

/* Tiles hold whole windows of up to this many positions (2x2 pooling). */
#define FM_WINDOW_MAX 4

#if (defined(__GNUC__) || defined(__clang__)) && defined(__AVX2__) && defined(__FMA__)
#define FASTMOM_DIRECT_CONV 1
#include <immintrin.h> /* masked loads (the row backward's partial vectors) */

/* The forward's tiles (fastmom_conv_pool_direct) in 64-byte vectors, 16 floats or 8
 * doubles, where the CPU has AVX-512, else 32-byte ones: Zen 5 and Intel's AVX-512 cores
 * do twice the multiply-adds a cycle in zmm registers (Zen 4 splits one into two halves,
 * the same rate as two ymm). So do the scattered backward's runs (fm_scatter_sum:
 * contiguous, element-wise sums); the other backward kernels keep 32-byte vectors
 * (FM_LANES).
 *
 * FM_EMULATE_AVX512 (a test build only: setup.py's FASTMOM_EMULATE_AVX512=1) compiles
 * the AVX-512 level's forward, its 64-byte vectors and tile shapes, and the 64-byte
 * scattered backward into the AVX2 level.
 * GCC splits each 64-byte operation into two 32-byte halves: the same sums in the same
 * order, at no particular speed, so a CPU without AVX-512 tests that code against the
 * reference (.ci/isa.sh). */
#if defined(__AVX512VL__) || defined(FM_EMULATE_AVX512)
#define FM_WIDE 1
#define FM_FWD_BYTES 64
#else
#define FM_WIDE 0
#define FM_FWD_BYTES 32
#endif
/* Scalars per forward vector (FM_LANES: per 32 bytes, set by instantiate.h) */
#define FM_FWD_LANES (FM_LANES * FM_FWD_BYTES / 32)

/* Accumulators per tile: FV*P + FV + 1 vectors must fit the vector registers (32 with
 * AVX-512VL, 16 with AVX2 alone). Measured on network3's conv2 (Zen 4, one thread,
 * GFLOP/s of the convolution alone): 8 -> 51, 12 -> 81-91, 16 -> 97, 24 -> 100 (conv1:
 * 27, 45-60, 60, 66): more independent sums hide the FMA latency and amortise the
 * tile's epilogue. */
#ifndef FM_ACC
#if FM_WIDE
#define FM_ACC 24
#else
#define FM_ACC 12
#endif
#endif

/* Filter vectors per tile, at most: 3 with 32 vector registers (a 4-vector tile would get
 * FM_ACC/4 positions, not a whole number of 2x2 windows). With AVX2's 16, a 3 x 4 tile
 * needs every register (12 sums, 3 weights, 1 input): GCC kept one sum in memory, a
 * store-to-load chain every tap, and it ran at 41 GFLOP/s where 2 x 4 tiles ran at 75
 * (network3's conv2 shape, 24 and 16 filters, Zen 3, one thread). */
#if FM_WIDE
#define FM_MAX_FV 3
#else
#define FM_MAX_FV 2
#endif

/* Positions per tile for FV filter vectors: FM_ACC/FV, rounded down to whole windows,
 * at most FM_MAX_P (8, 12, 12 with AVX-512; 4, 8 with AVX2). Each position's input
 * offset lives in a general register, and there are 16 of those at every level: with
 * AVX2 a 1 x 12 tile ran at 49 GFLOP/s, 1 x 8 at 56 (Zen 3, conv2 with 8 filters).
 * With AVX-512, 12: a 1 x 24 tile compiled (GCC 12) to a position loop that was not
 * unrolled (GCC unrolls at most 16 times) with its 24 sums in memory, a load, FMA and
 * store each; 12 positions reload 2 offsets from the stack a tap, 24 would reload 10.
 * (tests/backends/test_kernel_codegen.py checks the tap loops' instructions.) The
 * AVX-512 shapes' speed was measured on Zen 4 with 32-byte vectors, before that cap:
 * not re-measured, no AVX-512 CPU since. */
#if FM_WIDE
#define FM_MAX_P 12
#else
#define FM_MAX_P 8
#endif
#define FM_TILE_P_(fv) (FM_ACC / (fv) / FM_WINDOW_MAX * FM_WINDOW_MAX)
#define FM_TILE_P(fv) (FM_TILE_P_(fv) < FM_MAX_P ? FM_TILE_P_(fv) : FM_MAX_P)

/* The forward of a layer with fewer input channels than a 32-byte vector has lanes
 * (fastmom_conv_pool_forward_rows): with filters as the lanes (fastmom_conv_pool_direct)
 * network3's conv1 (25 taps, 20 filters in 24 lanes) spends about as much on its
 * epilogue, one scalar store per filter and window, as on its multiply-adds. There the
 * lanes run along an output row instead: a tile is FM_ROWSF_F filters x 2 output rows
 * x up to FM_ROWSF_TV vectors of columns (FM_ACC accumulators), each filter tap
 * broadcast, each input vector loaded once for the tile's filters; the tile's rows go
 * to an L1 scratch row, pooled by the vector 2x2 pool (pool.h) into whole vectors of
 * windows. 2x2 windows only (that pool). conv1, Zen 3, one thread, batch 256: 4.0-4.6 ms
 * with filters as lanes, 2.3-2.5 ms here (the tiles alone 2.0 ms: 74 GFLOP/s). */
#define FM_ROWSF_TV 3
#define FM_ROWSF_F (FM_ACC / (2 * FM_ROWSF_TV))

/* Forward vectors summed in registers per block of the scattered backward's runs
 * (fm_scatter_sum: 8 sums, a weight and a load within AVX2's 16 registers; network3's
 * conv2, runs of 5 x 24 floats, is two blocks of 7 and 8 with AVX2, one of 7 + a
 * 32-byte tail with AVX-512). */
#define FM_SCATTER_VB 8

/* Filter-row vectors per tile of the first layer's row backward
 * (fastmom_conv_pool_backward_rows): two sums each, 2 * 5 + 2 operands within AVX2's 16
 * registers; network3's conv1 (5 rows of 5 taps) is one tile. */
#define FM_ROWS_MAX 5

/* Keep a weight vector in a register: GCC otherwise folds its load into each of the P
 * multiply-adds that use it, and the loads became the bottleneck (conv2 81 -> 91
 * GFLOP/s). An empty asm statement that "modifies" the register pins it. */
#if defined(__AVX512F__)
#define FM_IN_REGISTER(v) __asm__("" : "+v"(v)) /* any of the 32 (z/y/x)mm registers */
#elif FM_WIDE
#define FM_IN_REGISTER(v) ((void)0) /* emulated: AVX2 has no 64-byte register to pin */
#else
#define FM_IN_REGISTER(v) __asm__("" : "+x"(v))
#endif

/* Python builds extensions with -fwrapv; under it GCC cannot fold the tiles' int index
 * sums into their addressing (conv2 92 instead of 101 GFLOP/s). Nothing here relies on
 * signed overflow wrapping, so these functions alone are compiled without it. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-wrapv")
#endif

#define FM_TEMPLATE "conv_direct_impl.h"
#include "instantiate.h"
#undef FM_TEMPLATE

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#else
#define FASTMOM_DIRECT_CONV 0
#endif

/* Taps (c*kh*kw) below which im2col + GEMM stays faster: with few taps per output the
 * tile's epilogue (pooling 8 filters per vector, then one scalar store per filter and
 * window) outweighs its multiply-adds. With AVX-512VL network3's conv1 (25 taps) ran
 * 0.86x as fast direct, conv2 (500 taps) 1.32x (one thread, batch 256, Zen 4). With
 * AVX2's 2 x 4 and 1 x 8 tiles conv1 runs 1.25x as fast direct (batch 10 and 64, one
 * thread, Zen 3); fewer taps were not measured. (conv1 itself now takes the row forward,
 * fastmom_conv_rows_forward_applies, at both levels.) */
#if FASTMOM_DIRECT_CONV && FM_WIDE
#define FM_MIN_TAPS 64
#else
#define FM_MIN_TAPS 25
#endif

/* Whether conv_pool_forward takes fastmom_conv_pool_forward_rows (see FM_ROWSF_F): 2x2
 * windows and fewer input channels than `lanes` (the scalars of a 32-byte vector, as
 * for the row backward). */
static inline int fastmom_conv_rows_forward_applies(int c, int ph, int pw, int lanes)
{
    return FASTMOM_DIRECT_CONV && FM_POOL_VECTOR && ph == 2 && pw == 2 && c < lanes;
}

/* Scalars of scratch that fastmom_conv_pool_forward_rows needs (one thread), for
 * scalars of `itemsize` bytes: the image with each row padded to whole vectors of
 * output columns plus kw - 1 (zeros: every load stays inside, no lane sees garbage)
 * and a tile's rows of pre-pool sums, in whole 32-byte vectors of windows, 64-byte
 * aligned. */
static inline long fastmom_conv_rows_forward_scratch(int c, int h, int kw, int PW, int itemsize)
{
#if FASTMOM_DIRECT_CONV
    int lanes = FM_FWD_BYTES / itemsize, cols = (2 * PW + lanes - 1) / lanes * lanes;
    int pl = 32 / itemsize, npw = (PW + pl - 1) / pl * pl;
    return (long)c * h * (cols + kw - 1) + (long)FM_ROWSF_F * 2 * 2 * npw + 64 / itemsize;
#else
    (void)c, (void)h, (void)kw, (void)PW, (void)itemsize;
    return 1;
#endif
}

/* Whether fastmom_conv_pool_direct is the faster path for K = c*kh*kw taps and ph x pw
 * pooling, at the level being compiled. */
static inline int fastmom_conv_pool_direct_applies(int K, int ph, int pw)
{
    return FASTMOM_DIRECT_CONV && K >= FM_MIN_TAPS && ph > 0 && pw > 0 &&
           FM_WINDOW_MAX % (ph * pw) == 0;
}

/* Whether conv_pool_backward scatters each window's gradient from its argmax
 * (fastmom_conv_pool_backward_scatter) rather than multiplying the un-pooled map in two
 * GEMMs: windows of 4 or more positions (the GEMMs spend 3 in 4 multiply-adds on zeros
 * with 2x2 windows), at most 32 (the scatter walks a window's positions as the bits of
 * an unsigned int: 1 << argmax) and at least a vector's worth of input channels (the
 * lanes). */
static inline int fastmom_conv_scatter_applies(int c, int ph, int pw, int lanes)
{
    return FASTMOM_DIRECT_CONV && ph * pw >= 4 && ph * pw <= 32 && c >= lanes;
}

/* Scalars (each at least as wide as an int) of the lists that
 * fastmom_conv_pool_backward_scatter keeps for f filters, nwin windows of ws positions:
 * a filter's windows (offset, g), every filter's g per window, the window positions'
 * list ends and their lists of filters (offset, g). */
static inline long fastmom_conv_scatter_lists(int f, long nwin, int ws)
{
    return 2 * nwin * ws + f * nwin + nwin * ws + 1 + 2L * f * nwin * ws;
}

/* Whether conv_pool_backward of a first layer (no input gradient) sums the weight
 * gradient along filter rows from a list of each filter's nonzero windows
 * (fastmom_conv_pool_backward_rows): fewer input channels than lanes (the scatter's
 * lanes would be mostly empty) and windows of 4 to 32 positions, as for the scatter.
 * One thread, Zen 3 (AVX2), against the GEMM path, weight and bias gradients: network3's
 * conv1 1.65x at batch 64, 1.46x at batch 10; 3 channels, 32x32, 16 filters 5x5, 2.2x. */
static inline int fastmom_conv_rows_applies(int c, int ph, int pw, int lanes, int want_dx)
{
    return FASTMOM_DIRECT_CONV && !want_dx && ph * pw >= 4 && ph * pw <= 32 && c < lanes;
}

#endif
