/* Bias and activation, y = act(y + b), in place: the forward epilogue of the dense
 * layers (one bias per column) and of the conv + pool layers (one per filter plane),
 * for dense_forward and conv_pool_forward in _cpu.pyx.
 *
 * Why C and per level: network3's default activation is the sigmoid, and tanh its other
 * smooth one. Compiled in _cpu.pyx they were scalar libm calls, expf about 10 ns and
 * tanhf about 20 ns an element on the Zen 3 guest: a tanh two-conv net's inference at
 * batch 64 spent ~40% of its time there. Here they are vector code at the level's width
 * (isa.h), about 1 ns an element, from one exponential:
 *
 *   x <= 0, x = k ln2 + r with k = round(x / ln2), |r| <= ln2/2 (Cody and Waite's two-part
 *   ln2, so k ln2 is exact); q = expm1(r) by its Taylor series to r^7 (float) or r^13
 *   (double), whose remainder is below half an ulp of q on that interval;
 *   exp(x) = 2^k (1 + q) and expm1(x) = 2^k q + (2^k - 1), 2^k built from its exponent
 *   bits in two halves so that results down to the denormals are right.
 *
 *   sigmoid(z) = 1 / (1 + e) for z >= 0, e / (1 + e) below, e = exp(-|z|): the
 *   reference's formula (fastmom.activations), with no overflow for any z;
 *   tanh(z) = sign(z) * -m / (2 + m), m = expm1(-2|z|): full relative precision near 0,
 *   where 1 - exp(-2|z|) would cancel.
 *
 * Within 2-3 ulp of the libm functions (tests/backends/test_bias_act.py measures it
 * against NumPy in float64); NaN stays NaN (also for ReLU, as np.maximum), +-inf give
 * the limits. Every element is one computation of the same vector operations, the last
 * partial vector of a row through a padded copy: results do not depend on the slicing,
 * the thread count or the position in the row. Levels may differ in the last bit (FMA
 * contraction exists from AVX2 on).
 *
 * Written once in bias_act_impl.h, instantiated for float and double by instantiate.h.
 */
#ifndef FASTMOM_BIAS_ACT_H
#define FASTMOM_BIAS_ACT_H

#include <stddef.h>
#include <string.h>

#include "pool.h" /* the activation codes, FASTMOM_SIGMOID ... FASTMOM_LINEAR */

/* Vector bytes of the level (GCC/Clang vector extension; one lane elsewhere). */
#if defined(__AVX512F__)
#define FM_BA_BYTES 64
#elif defined(__AVX__)
#define FM_BA_BYTES 32
#else
#define FM_BA_BYTES 16
#endif

/* Like conv_direct.h: no -fwrapv (Python's default flags) for these loops. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-wrapv")
#endif

#define FM_TEMPLATE "bias_act_impl.h"
#include "instantiate.h"
#undef FM_TEMPLATE

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#endif
