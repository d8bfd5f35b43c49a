/* Rows of 2x2 max-pooling windows, forward (max and argmax) and backward (un-pooling
 * dy * act'(y) to the argmax), for _cpu.pyx's im2col + GEMM path, and the one definition
 * of the activations' derivatives.
 *
 * Cython wrote these loops scalar: the compiler had to assume that the outputs alias
 * the inputs, and the un-pooling branched on random argmax values (pooling took a third
 * of network3's conv1 forward, un-pooling plus its memset a fifth of conv2's backward
 * outside the GEMMs). Here a vector of windows (8 floats or 4 doubles) is deinterleaved
 * or interleaved with shuffles and selected with masks, and a row's last windows go one
 * at a time, also branch-free. Strict `>`: the first maximum in row-major window order
 * wins, as in the reference. With `ties` (pool_ties="all", Theano's rule) the forward
 * records the bitmask of every position equal to the maximum and the backward gives
 * each of them g; each row function is compiled twice, for a literal flag, so the
 * default rule runs the same instructions as before the option.
 *
 * Written once in pool_impl.h and instantiated for float and double. Needs the
 * GCC/Clang vector extension with __builtin_shufflevector (GCC 12, Clang); elsewhere
 * plain scalar loops do the same.
 */
#ifndef FASTMOM_POOL_H
#define FASTMOM_POOL_H

#include <string.h>

/* activation codes: fastmom.activations.CODES (tests/backends/test_interface.py checks) */
enum { FASTMOM_SIGMOID = 0, FASTMOM_TANH = 1, FASTMOM_RELU = 2, FASTMOM_LINEAR = 3 };

/* The row kernels run from the per-level objects (isa_kernels.c defines FM_ISA, see
 * isa.h); _cpu.pyx includes this header for fastmom_dact alone, and its target may have
 * no 32-byte vectors, so it gets the scalar rows (unused). */
#if defined(FM_ISA) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12))
#define FM_POOL_VECTOR 1
#else
#define FM_POOL_VECTOR 0
#endif

#define FM_TEMPLATE "pool_impl.h"
#include "instantiate.h"
#undef FM_TEMPLATE

#endif
