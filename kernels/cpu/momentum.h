/* The fused momentum-SGD update over a range of the flat parameter buffer, for
 * momentum_step in _cpu.pyx (the math: fastmom.backends.reference.momentum_step).
 *
 * Why C and per level: the loop is a pure stream (read p, g and v, write p and v: 20
 * bytes a float parameter), so its speed is the vector width it is compiled for. In
 * _cpu.pyx it ran at the compiler's default target (SSE2) once the build stopped using
 * -march=native, and network3's 85,670-parameter step became 1.25-1.4x slower (issue
 * 14). Compiled here by isa_kernels.c once per level (isa.h), it gets AVX2 or AVX-512
 * vectors where the CPU has them.
 *
 * One loop body (momentum_impl.h), instantiated for float and double by instantiate.h;
 * its update rule (plain SGD, classical momentum, Nesterov) and whether the range gets
 * weight decay are compile-time constants of an always-inline helper, so each of the
 * six combinations is a branch-free loop the compiler vectorises. Outside the decayed
 * prefix the update uses g alone (no 0 * p term: an infinite parameter there stays
 * infinite rather than turning NaN, as in the reference). Element-wise: the result
 * does not depend on how the caller slices the buffer or on the thread count.
 */
#ifndef FASTMOM_MOMENTUM_H
#define FASTMOM_MOMENTUM_H

#include <stddef.h>

/* The update rules, the `mode` argument of fastmom_momentum_range. */
enum { FM_MOMENTUM_SGD = 0, FM_MOMENTUM_CLASSICAL = 1, FM_MOMENTUM_NESTEROV = 2 };

/* Like conv_direct.h: no -fwrapv (Python's default flags) for these loops. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-wrapv")
#endif

#define FM_TEMPLATE "momentum_impl.h"
#include "instantiate.h"
#undef FM_TEMPLATE

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#endif
