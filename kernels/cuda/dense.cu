// Elementwise epilogues around the cuBLAS products of the dense layers, dropout, and
// the fused softmax + negative log-likelihood.
#include "common.cuh"

// y = act(scale * y + b[col]) in place over an (n, m) matrix: the epilogue of y = x @ w
template <typename T>
__global__ void fm_bias_act(FM_PTR(T) y, FM_PTR(const T) b, long long n, int m, T scale, int act) {
    const long long total = n * m;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        T z = y[i];
        if (scale != T(1)) z *= scale;
        y[i] = fm::activate(act, z + b[i % m]);
    }
}

// dz = dy * act'(y) and db = dz.sum(0) for an (n, m) matrix, in one pass.
// Block (32, 8): 32 columns per block, 8 row strides; the 8 partial column sums are
// added in a fixed order (deterministic, no atomics).
template <typename T>
__global__ void fm_dense_dz_db(FM_PTR(const T) dy, FM_PTR(const T) y, FM_PTR(T) dz, FM_PTR(T) db, int n, int m,
                               int act) {
    FM_SHARED(T, part, 32 * 8);
    const int c = blockIdx.x * 32 + threadIdx.x;
    T acc = T(0);
    if (c < m) {
        for (int r = threadIdx.y; r < n; r += 8) {
            const long long i = (long long)r * m + c;
            const T d = dy[i] * fm::act_grad_from_output(act, T(y[i]));
            dz[i] = d;
            acc += d;
        }
    }
    part[threadIdx.y * 32 + threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < m) {
        T s = T(0);
        for (int k = 0; k < 8; ++k) s += T(part[k * 32 + threadIdx.x]);
        db[c] = s;
    }
}

// out = x * mask (out may be x: the backward pass masks dx in place)
template <typename T>
__global__ void fm_apply_mask(FM_PTR_ALIAS(const T) x, FM_PTR(const T) mask, FM_PTR_ALIAS(T) out, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        out[i] = x[i] * mask[i];
}

// out = (u < keep) as 0/1: a Bernoulli(keep) keep-mask from uniform draws (out may be u)
template <typename T>
__global__ void fm_bernoulli_mask(FM_PTR_ALIAS(const T) u, FM_PTR_ALIAS(T) out, long long n, T keep) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        out[i] = u[i] < keep ? T(1) : T(0);
}

// Stable softmax of each row of z (n, k) into probs. With labels, also the mean NLL
// into cost[0] and the number of rows whose (first) argmax is the label into
// correct[0]: written on the device so the host reads them only when it reports.
// One block of 256 threads (a power of two, for fm::block_sum) strides over the rows;
// an out-of-range label makes the cost NaN instead of reading outside the row.
template <typename T>
__global__ void fm_softmax_nll_fwd(FM_PTR(const T) z, FM_PTR(const long long) labels, FM_PTR(T) probs,
                                   FM_PTR(double) cost, FM_PTR(int) correct, int n, int k, int has_labels) {
    FM_SHARED(double, red, 256);
    double nll = 0.0, hits = 0.0;
    for (int r = threadIdx.x; r < n; r += blockDim.x) {
        const long long row = (long long)r * k;
        T zmax = z[row];
        for (int j = 1; j < k; ++j) {
            const T zj = z[row + j];
            zmax = zj > zmax ? zj : zmax;
        }
        T s = T(0);
        for (int j = 0; j < k; ++j) s += fm::exp_(T(z[row + j]) - zmax);
        int best = 0;
        T pbest = T(-1);
        for (int j = 0; j < k; ++j) {
            const T pj = fm::exp_(T(z[row + j]) - zmax) / s;
            probs[row + j] = pj;
            if (pj > pbest) {
                pbest = pj;
                best = j;
            }
        }
        if (has_labels) {
            const long long lab = labels[r];
            if (lab < 0 || lab >= k) {
                nll = nan("");
            } else {
                // log-softmax from the shifted logits: no log(0) on underflow
                nll -= double((T(z[row + lab]) - zmax) - fm::log_(s));
                hits += best == lab ? 1.0 : 0.0;
            }
        }
    }
    if (!has_labels) return;  // uniform across the block: no barrier is skipped by some threads only
    const double total = fm::block_sum(red, nll);
    const double total_hits = fm::block_sum(red, hits);
    if (threadIdx.x == 0) {
        cost[0] = total / n;
        correct[0] = int(total_hits);
    }
}

// dz = (probs - onehot(labels)) / n
template <typename T>
__global__ void fm_softmax_nll_bwd(FM_PTR(const T) probs, FM_PTR(const long long) labels, FM_PTR(T) dz, int n,
                                   int k) {
    const long long total = (long long)n * k;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long r = i / k;
        const int j = int(i - r * k);
        T d = probs[i];
        if (labels[r] == j) d -= T(1);
        dz[i] = d / T(n);
    }
}
