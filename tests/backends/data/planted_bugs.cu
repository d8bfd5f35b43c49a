// Kernels with planted bugs, for the tests that prove the CUDA emulation catches them.
// Each takes a flag that switches the bug off, so the same kernel also runs clean.
#include "common.cuh"

// Reverse x through shared memory. Without the barrier a thread reads the element
// another thread writes in the same phase: a race.
template <typename T>
__global__ void fm_test_reverse(FM_PTR(const T) x, FM_PTR(T) y, int with_barrier) {
    FM_SHARED(T, buf, 256);
    const int t = threadIdx.x, n = blockDim.x;
    buf[t] = x[t];
    if (with_barrier) __syncthreads();
    y[t] = buf[n - 1 - t];
}

// y[i + shift] = i for i < n: with shift = 1 the last thread writes one past the end.
template <typename T>
__global__ void fm_test_fill(FM_PTR(T) y, int n, int shift) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i + shift] = T(i);
}

// y[i] = x[i + shift]: an out-of-bounds read when shift > 0.
template <typename T>
__global__ void fm_test_read(FM_PTR(const T) x, FM_PTR(T) y, int n, int shift) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i + shift];
}

// Some threads return before a barrier that the others wait at.
template <typename T>
__global__ void fm_test_divergent(FM_PTR(T) y, int early) {
    FM_SHARED(T, buf, 256);
    const int t = threadIdx.x;
    if (t < early) return;
    buf[t] = T(t);
    __syncthreads();
    y[t] = buf[t];
}

// Reads a shared element that no thread wrote (when skip > 0).
template <typename T>
__global__ void fm_test_uninit(FM_PTR(T) y, int skip) {
    FM_SHARED(T, buf, 256);
    const int t = threadIdx.x;
    if (t >= skip) buf[t] = T(t);
    __syncthreads();
    y[t] = buf[t];
}

// One 16-byte pack load/store at element `at`: misaligned unless at % (16/sizeof T) == 0.
template <typename T>
__global__ void fm_test_pack(FM_PTR(T) y, long long at) {
    if (threadIdx.x == 0) {
        fm::Pack<T> p = fm::vload(y, at);
        p.v[0] += T(1);
        fm::vstore(y, at, p);
    }
}
