/* Short-row copy and add for the im2col / col2im loops of _cpu.pyx.
 *
 * network3's conv2 moves rows of 8 floats, millions of them per batch. A plain loop of
 * run-time length compiled to a libc memmove call (GCC recognises the copy) or to
 * overlap checks, vector and scalar tails around a single vector's worth of work; that
 * cost more than the data movement. Whole 32-byte vectors (GCC/Clang vector extension,
 * unaligned, may_alias) make a row of 8 floats one load and one store, with a scalar
 * tail only for widths that are not a multiple of the vector.
 */
#ifndef FASTMOM_ROWS_H
#define FASTMOM_ROWS_H

#if defined(__GNUC__) || defined(__clang__)
#define FASTMOM_ROW_OPS(T, S, LANES)                                                      \
    typedef T fastmom_vec_##S __attribute__((vector_size(32), aligned(sizeof(T)), may_alias)); \
    static inline void fastmom_copy_row_##S(T *dst, const T *src, int n)                  \
    {                                                                                     \
        int i = 0;                                                                        \
        for (; i + LANES <= n; i += LANES)                                                \
            *(fastmom_vec_##S *)(dst + i) = *(const fastmom_vec_##S *)(src + i);          \
        for (; i < n; i++)                                                                \
            dst[i] = src[i];                                                              \
    }                                                                                     \
    static inline void fastmom_add_row_##S(T *dst, const T *src, int n)                   \
    {                                                                                     \
        int i = 0;                                                                        \
        for (; i + LANES <= n; i += LANES)                                                \
            *(fastmom_vec_##S *)(dst + i) += *(const fastmom_vec_##S *)(src + i);         \
        for (; i < n; i++)                                                                \
            dst[i] += src[i];                                                             \
    }
#else /* other compilers: plain loops, correct and slower */
#define FASTMOM_ROW_OPS(T, S, LANES)                                                      \
    static inline void fastmom_copy_row_##S(T *dst, const T *src, int n)                  \
    {                                                                                     \
        for (int i = 0; i < n; i++)                                                       \
            dst[i] = src[i];                                                              \
    }                                                                                     \
    static inline void fastmom_add_row_##S(T *dst, const T *src, int n)                   \
    {                                                                                     \
        for (int i = 0; i < n; i++)                                                       \
            dst[i] += src[i];                                                             \
    }
#endif

FASTMOM_ROW_OPS(float, f, 8)
FASTMOM_ROW_OPS(double, d, 4)

#endif
