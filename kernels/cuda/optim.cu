// The momentum-SGD step: one launch over the flat parameter, gradient and velocity
// buffers (see fastmom.backends.reference.momentum_step for the update).
#include "common.cuh"

namespace fm {

// one element's update; `decay` is already zero outside the weights segment
template <typename T>
__device__ __forceinline__ void momentum_update(T& p, T g, T& v, T eta, T mu, T decay, bool use_v,
                                                bool nesterov) {
    const T ge = g + decay * p;
    if (!use_v) {
        p -= eta * ge;
        return;
    }
    v = mu * v - eta * ge;
    p += nesterov ? mu * v - eta * ge : v;
}

}  // namespace fm

// Elements [head, head + nvec * W) move as 16-byte packs (W = 16 / sizeof(T)); the
// host picks `head` so that p, g (and v) are 16-byte aligned there, or sets nvec = 0
// when their misalignments differ. The scalar head and tail are grid-strided too.
// With momentum == 0, v is never read or written.
template <typename T>
__global__ void fm_momentum_step(FM_PTR(T) p, FM_PTR(const T) g, FM_PTR(T) v, long long n, long long n_decay,
                                 long long head, long long nvec, T eta, T momentum, T decay, int nesterov) {
    constexpr int W = 16 / sizeof(T);
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const bool use_v = momentum != T(0);
    const bool nest = nesterov != 0;
    for (long long k = tid; k < nvec; k += stride) {
        const long long i = head + k * W;
        fm::Pack<T> pp = fm::vload(p, i);
        const fm::Pack<T> gg = fm::vload(g, i);
        fm::Pack<T> vv{};
        if (use_v) vv = fm::vload(v, i);
#pragma unroll
        for (int j = 0; j < W; ++j)
            fm::momentum_update(pp.v[j], gg.v[j], vv.v[j], eta, momentum, i + j < n_decay ? decay : T(0), use_v,
                                nest);
        fm::vstore(p, i, pp);
        if (use_v) fm::vstore(v, i, vv);
    }
    const long long tail0 = head + nvec * W;
    const long long nscalar = head + (n - tail0);
    for (long long s = tid; s < nscalar; s += stride) {
        const long long i = s < head ? s : tail0 + (s - head);
        T pi = p[i];
        T vi = use_v ? T(v[i]) : T(0);
        fm::momentum_update(pi, T(g[i]), vi, eta, momentum, i < n_decay ? decay : T(0), use_v, nest);
        p[i] = pi;
        if (use_v) v[i] = vi;
    }
}

// out[blockIdx.x] = the sum over this block's grid-stride share of x of x^2 (square != 0)
// or of x (square == 0), accumulated in double whatever T is: the reference's float64
// semantics. The host launches it twice: over the array (squares, one partial per
// block), then one block over the partials (plain sum). Fixed order: reproducible.
template <typename T>
__global__ void fm_sum_squares(FM_PTR(const T) x, FM_PTR(double) out, long long n, int square) {
    FM_SHARED(double, red, 256);
    const long long stride = (long long)gridDim.x * blockDim.x;
    double acc = 0.0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const double v = double(T(x[i]));
        acc += square ? v * v : v;
    }
    const double total = fm::block_sum(red, acc);
    if (threadIdx.x == 0) out[blockIdx.x] = total;
}
