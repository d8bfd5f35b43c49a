// Kernels with planted memory-access patterns, for the tests of the emulation's memory
// statistics (cuda_emulation.build(memstats=True)): exact sector and bank-conflict
// counts are known for each. One block of 32 threads is one warp.
#include "common.cuh"

// y[t] = x[t * stride]: stride 1 is the coalesced control (one 128-byte request in 4
// sectors); stride 32 puts each lane's float in its own sector (32 sectors for 128
// bytes: 12.5% efficiency). The store y[t] is coalesced either way.
template <typename T>
__global__ void fm_test_strided(FM_PTR(const T) x, FM_PTR(T) y, int stride) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    y[t] = x[(long long)t * stride];
}

// A 32x32 tile in shared memory, written by rows (lane t writes column t: conflict
// free), then read by row (`by_column` = 0: conflict free) or by column (lane t reads
// row t: all 32 words in one bank, 31 replays), optionally through a padded row of 33
// (the classic fix: conflict free again). Each of the 32 threads loops over 32 rows.
template <typename T>
__global__ void fm_test_tile(FM_PTR(const T) x, FM_PTR(T) y, int by_column, int pad) {
    FM_SHARED(T, tile, 32 * 33);
    const int t = threadIdx.x, ld = 32 + pad;
    for (int r = 0; r < 32; ++r) tile[r * ld + t] = x[r * 32 + t];
    __syncthreads();
    T acc = T(0);
    for (int r = 0; r < 32; ++r) {
        const T v = by_column ? tile[t * ld + r] : tile[r * ld + t];
        acc += v;
    }
    y[t] = acc;
}

// Every lane reads the same shared word and the same global element: a broadcast,
// one wavefront and one sector.
template <typename T>
__global__ void fm_test_broadcast(FM_PTR(const T) x, FM_PTR(T) y) {
    FM_SHARED(T, one, 1);
    if (threadIdx.x == 0) one[0] = x[0];
    __syncthreads();
    const T v = one[0];
    y[threadIdx.x] = v + x[0];
}
