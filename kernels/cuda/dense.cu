// The dense layers' kernels: the small-batch products (fm_dense_small, fm_dense_wgrad_small:
// at most fastmom.backends.cuda_dense.DENSE_SMALL_ROWS rows, no cuBLAS), the epilogue
// around them and around the cuBLAS products of larger batches, dropout, and the fused
// softmax + negative log-likelihood.
#include "common.cuh"

namespace fm {
// warps a block of the small-batch kernels (each a slice of the reduction or of the
// weight rows), and the tile: outputs a block (one a lane) and reduction steps a stage
constexpr int DS_WARPS = 4, DS_TILE = 32;

// Stage columns [c0, c0 + DS_TILE) of an (M, ld) row-major matrix into sh[c * (R + 1) + m]
// (rows m < R): a column's R values are then read by a whole warp as broadcasts. Rows
// past M and columns past `end` are zeros, so the products they enter are zero.
// Lanes read consecutive columns (coalesced); the odd stride R + 1 puts the 32 lanes'
// stores in 32 banks.
template <typename T, int R, typename S, typename P>
__device__ __forceinline__ void stage_rows(S sh, P a, int M, long long ld, int c0, int end) {
    const int t = threadIdx.x + 32 * threadIdx.y;
    for (int e = t; e < R * DS_TILE; e += 32 * DS_WARPS) {
        const int m = e / DS_TILE, c = e % DS_TILE;
        sh[c * (R + 1) + m] = m < M && c0 + c < end ? T(a[m * ld + c0 + c]) : T(0);
    }
}
}  // namespace fm

// The small-batch product: out[m][o] = epilogue(sum_r a[m][r] * W(r, o)) for M <= R rows,
// with W(r, o) = w[r * ldw + o] (wt = 0: the forward, w is (nred, nout)) or
// w[o * ldw + r] (wt = 1: the input gradient dz @ w.T, w is (nout, nred)).
// The batch is the small matrix: block (32, DS_WARPS) owns DS_TILE outputs (one a lane)
// and keeps all R rows' sums of its output in registers, so each weight is read once
// per launch. blockIdx.y is a slice of `chunk` reduction steps; the slice's weights are
// staged DS_TILE x DS_TILE at a time (coalesced in either layout; stride 33: conflict
// free for both the transposed stores and the lanes' loads), the warps taking every
// DS_WARPS-th step. The warps' sums are added in warp order, then either the epilogue
// act(scale * sum + b) is applied (one slice: `part` unused) or the slice's sums go to
// part[slice][m][o] for fm_bias_act to add in slice order: fixed orders, no atomics.
template <typename T, int R>
__global__ void __launch_bounds__(32 * fm::DS_WARPS)
    fm_dense_small(FM_PTR(const T) a, FM_PTR(const T) w, FM_PTR(const T) b, FM_PTR(T) out, FM_PTR(T) part, int M,
                   int nred, int nout, int wt, int chunk, T scale, int act, int has_bias) {
    constexpr int TS = fm::DS_TILE + 1;
    FM_DYN_SHARED(T, smem);
    FM_SPTR(T) as = smem;                              // [DS_TILE][R + 1]
    FM_SPTR(T) ws = smem + fm::DS_TILE * (R + 1);      // [DS_TILE][TS]
    const int lane = threadIdx.x, warp = threadIdx.y, t = lane + 32 * warp;
    const int o0 = blockIdx.x * fm::DS_TILE, r_begin = blockIdx.y * chunk;
    const int r_end = min(nred, r_begin + chunk);
    const long long ldw = wt ? nred : nout;
    T acc[R];
#pragma unroll
    for (int m = 0; m < R; ++m) acc[m] = T(0);
    for (int r0 = r_begin; r0 < r_end; r0 += fm::DS_TILE) {
        fm::stage_rows<T, R>(as, a, M, nred, r0, r_end);
        for (int e = t; e < fm::DS_TILE * fm::DS_TILE; e += 32 * fm::DS_WARPS) {
            // the fast index runs along w's rows in memory: coalesced in both layouts
            const int hi = e / fm::DS_TILE, lo = e % fm::DS_TILE;
            const int r = wt ? lo : hi, o = wt ? hi : lo;
            ws[r * TS + o] = r0 + r < r_end && o0 + o < nout
                                 ? T(w[wt ? (long long)(o0 + o) * ldw + r0 + r : (long long)(r0 + r) * ldw + o0 + o])
                                 : T(0);
        }
        __syncthreads();
        // kept a loop (R FMAs an iteration) rather than unrolled into the stage loop: the
        // code stays small, and the SASS lint finds it as the hot loop
#pragma unroll 1
        for (int i = 0; i < fm::DS_TILE / fm::DS_WARPS; ++i) {
            const int r = warp + i * fm::DS_WARPS;
            const T wv = ws[r * TS + lane];
#pragma unroll
            for (int m = 0; m < R; ++m) {
                const T av = as[r * (R + 1) + m];
                acc[m] += av * wv;
            }
        }
        __syncthreads();
    }
    // the warps' sums, in warp order (the staging area is free after the last barrier)
    FM_SPTR(T) red = smem;  // [DS_WARPS][R][32]
#pragma unroll
    for (int m = 0; m < R; ++m) red[(warp * R + m) * 32 + lane] = acc[m];
    __syncthreads();
    // unrolled (R / 4 outputs a thread), so that no loop but the hot one holds FMAs (the
    // activation's exp is FMAs, which the SASS lint would count as the hottest loop)
#pragma unroll
    for (int q = 0; q < R * 32 / (32 * fm::DS_WARPS); ++q) {
        const int e = t + q * 32 * fm::DS_WARPS;
        const int m = e / 32, o = o0 + e % 32;
        if (m >= M || o >= nout) continue;
        T s = red[m * 32 + e % 32];
        for (int k = 1; k < fm::DS_WARPS; ++k) s += T(red[(k * R + m) * 32 + e % 32]);
        if (gridDim.y > 1) {
            part[((long long)blockIdx.y * M + m) * nout + o] = s;
        } else {
            if (scale != T(1)) s *= scale;
            out[(long long)m * nout + o] = fm::activate(act, has_bias ? s + T(b[o]) : s);
        }
    }
}

// The small-batch weight gradient, with dz and the bias gradient fused:
// dz = dy * act'(y), db = dz.sum(0), dw = x.T @ dz for M <= R rows (x (M, K), dy and y
// (M, N)). Block (32, DS_WARPS) owns 32 columns j (one a lane) and the weight rows
// [blockIdx.y * kb, + kb): each thread keeps its column's R values of dz in registers
// and writes each dw[k][j] once, a sum over m in row order (the reduction is the
// batch: no partial sums, no atomics). The blocks of the first row slice also write dz
// (for the input gradient) and db. (4 blocks an SM: without that hint, ptxas 13 for
// sm_80 spills 8 bytes of the R = 16 float instance at 48 registers.)
template <typename T, int R>
__global__ void __launch_bounds__(32 * fm::DS_WARPS, 4)
    fm_dense_wgrad_small(FM_PTR(const T) x, FM_PTR(const T) dy, FM_PTR(const T) y, FM_PTR(T) dz, FM_PTR(T) dw,
                         FM_PTR(T) db, int M, int K, int N, int kb, int act) {
    FM_DYN_SHARED(T, xs);  // [DS_TILE][R + 1]
    const int lane = threadIdx.x, warp = threadIdx.y;
    const int j = blockIdx.x * 32 + lane, k_begin = blockIdx.y * kb, k_end = min(K, k_begin + kb);
    T d[R];
#pragma unroll
    for (int m = 0; m < R; ++m) {
        const long long i = (long long)m * N + j;
        d[m] = m < M && j < N ? T(dy[i]) * fm::act_grad_from_output(act, T(y[i])) : T(0);
    }
    if (blockIdx.y == 0 && warp == 0 && j < N) {
        T s = T(0);
#pragma unroll
        for (int m = 0; m < R; ++m) {
            if (m < M) dz[(long long)m * N + j] = d[m];
            s += d[m];
        }
        db[j] = s;
    }
    for (int k0 = k_begin; k0 < k_end; k0 += fm::DS_TILE) {
        fm::stage_rows<T, R>(xs, x, M, K, k0, k_end);
        __syncthreads();
#pragma unroll 1  // as fm_dense_small's step loop
        for (int i = 0; i < fm::DS_TILE / fm::DS_WARPS; ++i) {
            const int k = warp + i * fm::DS_WARPS;
            T s = T(0);
#pragma unroll
            for (int m = 0; m < R; ++m) {
                const T xv = xs[k * (R + 1) + m];
                s += xv * d[m];
            }
            if (k0 + k < k_end && j < N) dw[(long long)(k0 + k) * N + j] = s;
        }
        __syncthreads();
    }
}

// y = act(scale * sum_s part[s] + b[col]) over an (n, m) matrix, the slices s < nsplit
// added in order: the epilogue of a cuBLAS product (part = y, one slice: in place) and
// of fm_dense_small's reduction slices; without bias (has_bias = 0) b is not read.
template <typename T>
__global__ void fm_bias_act(FM_PTR_ALIAS(const T) part, int nsplit, FM_PTR_ALIAS(T) y, FM_PTR(const T) b,
                            long long n, int m, T scale, int act, int has_bias) {
    const long long total = n * m;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        T z = part[i];
        for (int s = 1; s < nsplit; ++s) z += part[s * total + i];
        if (scale != T(1)) z *= scale;
        y[i] = fm::activate(act, has_bias ? z + b[i % m] : z);
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
