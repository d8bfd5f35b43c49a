/* Dense layers at small batches (M <= 32 rows), for dense_forward / dense_backward in
 * _cpu.pyx.
 *
 * At network3's batch of 10, sgemm copies the whole 1000x1000 weight matrix into its
 * panel layout on every call and then does only 10 multiply-adds per weight it packed
 * (issue 14). Here every weight is read once, where it lies:
 *
 * - forward, y = x @ w: a tile of R batch rows x C vectors of output columns keeps its
 *   R*C sums in registers and walks down the weight rows (C vector loads and R
 *   broadcast inputs per row feed R*C multiply-adds); with 32 vector registers
 *   (AVX-512) R = 12 covers a batch of 10 in one pass over the weights;
 * - dW = x^T @ dz: a tile of K weight rows x C column vectors sums the M outer-product
 *   terms in registers and stores each weight gradient once;
 * - dx = dz @ w^T: each weight row is read once per group of R batch rows and dotted
 *   with those rows of dz (R vector sums per weight row, reduced at the row's end).
 *
 * Every output element is one sum in a fixed order (ascending k for y, ascending batch
 * row for dW, lanes then a fixed halving tree for dx), whatever the tile or slice it
 * falls in: the result is the same for any column/row slicing and so for any thread
 * count. A strip narrower than a vector uses masked loads and stores (AVX2/AVX-512) or
 * a zero-padded copy (baseline), never a scalar loop of another summation order.
 *
 * Bias and activation are left to the caller's epilogue (_cpu.pyx applies them to the
 * slice it just computed, still in L1, with the BLAS path's code: one definition of
 * the activations).
 *
 * Written once in dense_small_impl.h, instantiated for float and double, compiled per
 * instruction-set level by isa_kernels.c (vector width and tile sizes follow the
 * level). Needs the GCC/Clang vector extension; elsewhere FASTMOM_DENSE_SMALL is 0, the
 * table's entries are NULL and _cpu.pyx keeps the BLAS.
 */
#ifndef FASTMOM_DENSE_SMALL_H
#define FASTMOM_DENSE_SMALL_H

#if defined(__GNUC__) || defined(__clang__)
#define FASTMOM_DENSE_SMALL 1

#include <stddef.h>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

/* Vector bytes and registers of the level: the tiles below are sized to fit. */
#if defined(__AVX512F__)
#define FM_DS_BYTES 64
#define FM_DS_REGS 32
/* "v": any of the 32 vector registers ("x" allows only the first 16) */
#define FM_DS_PIN(v) __asm__("" : "+v"(v))
#else
#if defined(__AVX__)
#define FM_DS_BYTES 32
#else
#define FM_DS_BYTES 16
#endif
#define FM_DS_REGS 16
#define FM_DS_PIN(v) __asm__("" : "+x"(v))
#endif

/* Tile sizes (accumulators + operands <= registers):
 * forward: FM_DS_FROWS rows x 2 vectors (+ 2 weight vectors + 1 broadcast);
 * dW: 4 weight rows x FM_DS_WCOLS vectors (+ FM_DS_WCOLS dz vectors + 1 broadcast);
 * dx: FM_DS_XK weight rows x FM_DS_XROWS batch rows (+ FM_DS_XK weight vectors + 1 dz
 * vector). dx's shapes measured best of (2, 12), (3, 8), (4, 6) with AVX-512 and of
 * (2, 6), (3, 4) with AVX2 (Sapphire Rapids, M = 10 and 32, 1000x1000). */
#ifndef FM_DS_FROWS
#if FM_DS_REGS >= 32
#define FM_DS_FROWS 12
#define FM_DS_WCOLS 4
#define FM_DS_XK 4
#define FM_DS_XROWS 6
#else
#define FM_DS_FROWS 6
#define FM_DS_WCOLS 2
#define FM_DS_XK 3
#define FM_DS_XROWS 4
#endif
#endif

/* Weight rows ahead that the forward prefetches: a tile walks down a column strip, one
 * 4-KB page per row of a 1000-wide layer, where the hardware prefetchers (which stop
 * at page boundaries) do not follow. */
#define FM_DS_PREFETCH 8

/* The most rows the kernels take (_cpu.pyx's threshold is at most this). */
#define FASTMOM_DENSE_SMALL_MAX_ROWS 32

/* Like conv_direct.h: no -fwrapv for these loops, nothing here relies on it. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-wrapv")
#endif

#define FM_TEMPLATE "dense_small_impl.h"
#include "instantiate.h"
#undef FM_TEMPLATE

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#else
#define FASTMOM_DENSE_SMALL 0
#endif

#endif
