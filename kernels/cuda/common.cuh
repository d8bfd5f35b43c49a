// Shared definitions of the fastmom CUDA kernels.
//
// Every kernel source includes this header. Under nvcc/NVRTC the FM_* macros are the
// plain CUDA constructs; with FASTMOM_EMULATION defined (the host build of
// fastmom.cuda_emulation) they become the checked types of emulation.cuh: global
// pointers that bounds-check every access and shared arrays that detect races.
// Kernels therefore:
//   * take global arrays as FM_PTR(T) / FM_PTR(const T) parameters,
//   * declare shared memory only through FM_SHARED / FM_DYN_SHARED,
//   * read shared elements into a local (`T a = s[i];`) before arithmetic that
//     deduces template arguments (the emulated element is a proxy object),
//   * use no warp shuffles or atomics (nothing to emulate, and reductions stay
//     deterministic).
#pragma once

#ifdef FASTMOM_EMULATION
#include "emulation.cuh"
#define FM_PTR_ALIAS(T) FM_PTR(T)
#else
// a global-memory array parameter
#define FM_PTR(T) T* __restrict__
// a global array that may alias another argument (in-place kernels): no __restrict__
#define FM_PTR_ALIAS(T) T*
// a statically sized shared array: FM_SHARED(float, tile, 256);
#define FM_SHARED(T, name, n) __shared__ T name[n]
// the launch's dynamic shared memory viewed as T (always 16-byte aligned)
#define FM_DYN_SHARED(T, name)                                   \
    extern __shared__ __align__(16) unsigned char fm_dyn_smem[]; \
    T* name = reinterpret_cast<T*>(fm_dyn_smem)
// a pointer into shared memory (to carve several arrays out of FM_DYN_SHARED)
#define FM_SPTR(T) T*
// the shared pointer p viewed as an array of U (p must be aligned for U)
#define FM_SPTR_CAST(U, p) reinterpret_cast<U*>(p)
#endif

namespace fm {

// 16 bytes of T (float4 / double2 worth): the unit of vectorised global access
template <typename T>
struct alignas(16) Pack {
    T v[16 / sizeof(T)];
};

#ifdef FASTMOM_EMULATION
// the hardware faults on a misaligned 16-byte access: check it, and the bounds
template <typename T>
inline void check_pack(const ::fm_emu::gptr<T>& p, long long i) {
    p.at(i, 16 / sizeof(T));
    if (reinterpret_cast<uintptr_t>(p.base + p.off + i) % 16 != 0)
        ::fm_emu::fail("misaligned 16-byte global access at element " + std::to_string(p.off + i) +
                       " of kernel argument " + std::to_string(p.arg));
}
template <typename P>
inline Pack<std::remove_const_t<P>> vload(const ::fm_emu::gptr<P>& p, long long i) {
    check_pack(p, i);
    Pack<std::remove_const_t<P>> r;
    memcpy(&r, p.base + p.off + i, 16);
    return r;
}
template <typename T>
inline void vstore(const ::fm_emu::gptr<T>& p, long long i, const Pack<T>& r) {
    check_pack(p, i);
    memcpy(p.base + p.off + i, &r, 16);
}
#else
template <typename T>
__device__ __forceinline__ Pack<T> vload(const T* p, long long i) {
    return *reinterpret_cast<const Pack<T>*>(p + i);
}
template <typename T>
__device__ __forceinline__ void vstore(T* p, long long i, const Pack<T>& r) {
    *reinterpret_cast<Pack<T>*>(p + i) = r;
}
#endif

// activation codes: fastmom.activations.CODES (tests/backends/test_interface.py checks)
enum Act { SIGMOID = 0, TANH = 1, RELU = 2, LINEAR = 3 };

__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
__device__ __forceinline__ float log_(float x) { return logf(x); }
__device__ __forceinline__ double log_(double x) { return log(x); }
__device__ __forceinline__ float tanh_(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_(double x) { return tanh(x); }

template <typename T>
__device__ __forceinline__ T activate(int act, T z) {
    switch (act) {
        case SIGMOID: {
            // exp of a non-positive argument only, as the reference: no overflow
            T e = exp_(z >= T(0) ? -z : z);
            return z >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
        }
        case TANH: return tanh_(z);
        case RELU: return z > T(0) ? z : T(0);
        default: return z;
    }
}

// act'(z) written through y = act(z), so the pre-activation is never stored
template <typename T>
__device__ __forceinline__ T act_grad_from_output(int act, T y) {
    switch (act) {
        case SIGMOID: return y * (T(1) - y);
        case TANH: return T(1) - y * y;
        case RELU: return y > T(0) ? T(1) : T(0);
        default: return T(1);
    }
}

// Tree reduction of one value per thread over a block whose size is a power of two.
// `buf` holds blockDim-many elements; the total is returned to every thread. Ends
// with a barrier so `buf` may be reused at once.
template <typename T, typename S>
__device__ __forceinline__ T block_sum(S buf, T value) {
    const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned nt = blockDim.x * blockDim.y * blockDim.z;
    buf[t] = value;
    __syncthreads();
    for (unsigned half = nt / 2; half > 0; half /= 2) {
        if (t < half) {
            T a = buf[t];
            T b = buf[t + half];
            buf[t] = a + b;
        }
        __syncthreads();
    }
    T total = buf[0];
    __syncthreads();
    return total;
}

}  // namespace fm
