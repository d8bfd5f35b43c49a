// Convolution + max-pool layer: the fused forward pass (the backward is conv_backward.cu).
// Shapes as in fastmom.backends.reference: x (N,C,H,W), w (F,C,KH,KW), conv output
// (N,F,OH,OW), pooled (N,F,PH,PW) with ph x pw windows and the ragged border dropped.
#include "common.cuh"

namespace fm {
constexpr int FWD_FILTERS = 4;    // filters per thread of fm_conv_pool_fwd (one 16-byte float load)
constexpr int FWD_POSITIONS = 4;  // window positions per pass of its general instance (P = 0)

// Column `col` of a staged patch row: with a compile-time P x P pool the columns are
// stored by phase (col % P, then col / P), so that the lanes of a warp, whose windows
// start P columns apart, read consecutive words (no bank conflicts); plain otherwise.
template <int P>
__device__ __forceinline__ int patch_col(int col, int half) {
    return P > 0 ? col % P * half + col / P : col;
}

// The filter (from the block's first) in staged slot s: slot s is element s % V of the
// 16-byte pack s / V of a tap, and pack u holds filters u, u + U, u + 2U, ... (U packs a
// tap). So a staging thread's V loads for one pack (one channel and tap of V filters)
// are V instructions in each of which the lanes read consecutive elements of w (one
// contiguous run when every channel is staged at once: coalesced even for conv1's
// 25-tap filters), while a thread's FWD_FILTERS filters stay one or two 16-byte loads.
__device__ __forceinline__ int fwd_slot_filter(int s, int V, int U) { return s / V + s % V * U; }

// The running max-pool of one filter over a window's positions visited in row-major
// order: the first maximum wins (the reference's r*pw+s order), and with ties
// (pool_ties="all") `arg` collects the bitmask of every position equal to the maximum.
// A NaN first position stays the maximum, as in a scan that only replaces on `>`.
template <typename T>
__device__ __forceinline__ void pool_step(T v, int pos, int ties, T& best, int& arg) {
    if (pos == 0 || v > best) {
        best = v;
        arg = ties ? 1 << pos : pos;
    } else if (ties && v == best) {
        arg |= 1 << pos;
    }
}
}  // namespace fm

// acc[p][q] += the patch under window position p times filter q, over `ncc` staged
// channels and every tap. Per tap: FWD_FILTERS / (16 / sizeof(T)) 16-byte filter loads
// (the filters are staged tap-major: one tap's filters of a group are contiguous), then
// R * FWD_FILTERS FMAs.
// With a compile-time K x K filter and P x P pool (position p at row p / P, column
// p % P of the window), the P patch rows under filter row k are loaded once into
// registers (P * (K + P - 1) loads for K * P * P * FWD_FILTERS FMAs) and every offset
// is a constant. The general instance loads each position's input per tap (position p
// at patch offset po[p]).
template <int K, int P, int R, typename T, typename SX, typename SW>
__device__ __forceinline__ void fwd_taps(T (&acc)[R][fm::FWD_FILTERS], SX xs, SW wp, int ncc, int KH, int KW,
                                         int xstride, int half, int cstride, int wstride, const int (&po)[R]) {
    static_assert(P == 0 || (K > 0 && R == P * P), "a compile-time pool needs a compile-time filter");
    constexpr int FB = fm::FWD_FILTERS, V = 16 / sizeof(T), XW = K + (P > 0 ? P : 1) - 1;
    for (int cl = 0; cl < ncc; ++cl) {
#pragma unroll
        for (int k = 0; k < KH; ++k) {
            const int xk = cl * cstride + k * xstride, wk = (cl * KH + k) * KW * wstride;
            T xr[P > 0 ? P : 1][XW > 0 ? XW : 1];  // compile-time instance: the window's rows under filter row k
            if constexpr (P > 0) {
#pragma unroll
                for (int r = 0; r < P; ++r)
#pragma unroll
                    for (int c = 0; c < XW; ++c) xr[r][c] = xs[xk + r * xstride + fm::patch_col<P>(c, half)];
            }
#pragma unroll
            for (int l = 0; l < KW; ++l) {
                fm::Pack<T> wv[FB / V];
#pragma unroll
                for (int h = 0; h < FB / V; ++h) wv[h] = wp[wk + l * wstride + h];
#pragma unroll
                for (int p = 0; p < R; ++p) {
                    T xv;
                    if constexpr (P > 0)
                        xv = xr[p / P][p % P + l];
                    else
                        xv = xs[xk + po[p] + l];
#pragma unroll
                    for (int q = 0; q < FB; ++q) acc[p][q] += xv * wv[q / V].v[q % V];
                }
            }
        }
    }
}

// Fused valid cross-correlation + max-pool + bias + activation, saving the argmax (or,
// with ties = pool_ties "all", the tie bitmask) that fm_conv_wgrad / fm_conv_dgrad read.
//
// Register-blocked: a thread computes whole pooling windows for FWD_FILTERS filters,
// their conv sums in registers, and pools them there; no conv-sized tile is ever
// written. Instances: K x K filters and P x P pools known at compile time (<T, 5, 2>:
// network3's layers; a pass computes the P*P positions of a window at once), and the
// general one (<T, 0, 0>: any filter and pool; passes of FWD_POSITIONS positions in
// row-major order, the patch and filters staged again per pass, the running max kept
// in registers across passes; the last pass repeats the window's last position in its
// unused slots, so that no read leaves the patch).
//
// Block: image blockIdx.z, filters blockIdx.y * gb * FWD_FILTERS.., a tile of tph x tpw
// pooled outputs blockIdx.x; thread t = g * (tph * tpw) + window (g: the thread's
// filter group, slots g * FWD_FILTERS.., so a warp's filter loads are one or two
// broadcasts). Per stage of cc input channels the block stages the tile's input patch
// (row stride xstride, columns by phase: fm::patch_col) and the filters tap-major,
// [channel][tap][slot] with slot stride wstride (an odd number of 16-byte units: the
// 16-byte staging stores of consecutive taps fall in different banks), slots holding
// filters in fm::fwd_slot_filter's order. Slots past F hold zeros; a window past the
// pooled plane computes nothing; neither is stored.
// Dynamic shared memory: cc * (tph*ph + KH - 1) * xstride elements of T rounded to 16
// bytes, then cc * KH * KW * wstride elements of T.
template <typename T, int K, int P>
__global__ void __launch_bounds__(512, 1)
    fm_conv_pool_fwd(FM_PTR(const T) x, FM_PTR(const T) w, FM_PTR(const T) b, FM_PTR(T) y, FM_PTR(int) argmax,
                     int C, int H, int W, int F, int KH, int KW, int PH, int PW, int ph, int pw, int tph, int tpw,
                     int gb, int cc, int xstride, int wstride, int act, int ties) {
    constexpr int FB = fm::FWD_FILTERS, V = 16 / sizeof(T), R = P > 0 ? P * P : fm::FWD_POSITIONS;
    if (K > 0) KH = KW = K;
    if (P > 0) ph = pw = P;
    const int nwin = tph * tpw, KK = KH * KW, window = ph * pw;
    const int prow = tph * ph + KH - 1, pcol = tpw * pw + KW - 1, half = (pcol + pw - 1) / pw;
    const int tiles_w = (PW + tpw - 1) / tpw;
    const int PI0 = blockIdx.x / tiles_w * tph, PJ0 = blockIdx.x % tiles_w * tpw;  // pooled origin
    const int g = threadIdx.x / nwin, wi = threadIdx.x % nwin / tpw, wj = threadIdx.x % tpw;
    // the block's first filter, and the packs of filters staged per tap (fm::fwd_slot_filter)
    const int fb0 = blockIdx.y * gb * FB, U = gb * FB / V, PI = PI0 + wi, PJ = PJ0 + wj;
    const bool active = PI < PH && PJ < PW && fb0 + fm::fwd_slot_filter(g * FB, V, U) < F;
    const long long n = blockIdx.z;
    FM_DYN_SHARED(T, xs);
    const int cstride = prow * xstride, xs_len = (cc * cstride * (int)sizeof(T) + 15) / 16 * 16 / (int)sizeof(T);
    FM_SPTR(fm::Pack<T>) wsh = FM_SPTR_CAST(fm::Pack<T>, xs + xs_len);
    // the thread's window origin in the patch: row wi*ph, phase-0 column wj
    const int xbase = wi * ph * xstride + (P > 0 ? wj : wj * pw), wbase = g * FB / V;

    T best[FB] = {};
    int arg[FB] = {};
    for (int p0 = 0; p0 < window; p0 += R) {
        int po[R];  // the pass's positions (general instance)
#pragma unroll
        for (int p = 0; p < R; ++p) {
            const int pos = min(p0 + p, window - 1);
            po[p] = pos / pw * xstride + pos % pw;
        }
        T acc[R][FB];
#pragma unroll
        for (int p = 0; p < R; ++p)
#pragma unroll
            for (int q = 0; q < FB; ++q) acc[p][q] = T(0);
        for (int c0 = 0; c0 < C; c0 += cc) {
            const int ncc = min(cc, C - c0);
            for (int e = threadIdx.x; e < ncc * prow * pcol; e += blockDim.x) {
                const int cl = e / (prow * pcol), r = e / pcol % prow, s = e % pcol;
                const int i = PI0 * ph + r, j = PJ0 * pw + s;
                xs[cl * cstride + r * xstride + fm::patch_col<P>(s, half)] =
                    i < H && j < W ? T(x[((n * C + c0 + cl) * H + i) * W + j]) : T(0);
            }
            // one 16-byte pack (V filters at one channel and tap) a thread, the lanes at
            // consecutive (pack, channel, tap): each of the V loads reads a run of w
            for (int e = threadIdx.x; e < U * ncc * KK; e += blockDim.x) {
                const int ct = e % (ncc * KK), u = e / (ncc * KK);
                fm::Pack<T> pk;
#pragma unroll
                for (int v = 0; v < V; ++v) {
                    const int f = fb0 + fm::fwd_slot_filter(u * V + v, V, U);
                    pk.v[v] = f < F ? T(w[((long long)f * C + c0) * KK + ct]) : T(0);
                }
                wsh[ct * (wstride / V) + u] = pk;
            }
            __syncthreads();
            if (active)
                fwd_taps<K, P, R>(acc, xs + xbase, wsh + wbase, ncc, KH, KW, xstride, half, cstride, wstride / V, po);
            __syncthreads();
        }
#pragma unroll
        for (int p = 0; p < R; ++p)
#pragma unroll
            for (int q = 0; q < FB; ++q)
                if (p0 + p < window) fm::pool_step(acc[p][q], p0 + p, ties, best[q], arg[q]);
    }
#pragma unroll
    for (int q = 0; q < FB; ++q) {
        const int f = fb0 + fm::fwd_slot_filter(g * FB + q, V, U);
        if (active && f < F) {
            const long long o = ((n * F + f) * PH + PI) * PW + PJ;
            y[o] = fm::activate(act, best[q] + T(b[f]));
            argmax[o] = arg[q];
        }
    }
}
