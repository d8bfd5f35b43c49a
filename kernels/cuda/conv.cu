// Convolution + max-pool layer: the fused forward pass (the backward is conv_backward.cu).
// Shapes as in fastmom.backends.reference: x (N,C,H,W), w (F,C,KH,KW), conv output
// (N,F,OH,OW), pooled (N,F,PH,PW) with ph x pw windows and the ragged border dropped.
#include "common.cuh"

namespace fm {
constexpr int CONV_FG = 8;  // filters per block: register accumulators per thread
}

// Fused valid cross-correlation + max-pool + bias + activation, saving the argmax.
//
// Block: one image (blockIdx.z), CONV_FG filters (blockIdx.y) and a tile of tph x tpw
// pooled outputs (blockIdx.x), i.e. (tph*ph) x (tpw*pw) conv outputs, one per thread.
// For each input channel the block stages the input patch of the tile and the
// CONV_FG filter slices in shared memory; each thread accumulates its conv output for
// the CONV_FG filters in registers. The conv tile then goes to shared memory and each
// (filter, pooled output) is reduced over its window, first maximum winning (the
// reference's row-major r*pw+s order). With ties (pool_ties="all") argmax gets the
// bitmask of every window position equal to the maximum instead (the first maximum's
// bit always set).
// Dynamic shared memory: patch (tile_h+KH-1)*(tile_w+KW-1), filters CONV_FG*KH*KW,
// conv tile CONV_FG*tile_h*tile_w elements of T.
template <typename T>
__global__ void fm_conv_pool_fwd(FM_PTR(const T) x, FM_PTR(const T) w, FM_PTR(const T) b, FM_PTR(T) y,
                                 FM_PTR(int) argmax, int C, int H, int W, int F, int KH, int KW, int PH, int PW,
                                 int ph, int pw, int tph, int tpw, int act, int ties) {
    constexpr int FG = fm::CONV_FG;
    const int tile_h = tph * ph, tile_w = tpw * pw, nt = tile_h * tile_w;
    const int patch_h = tile_h + KH - 1, patch_w = tile_w + KW - 1, kk = KH * KW;
    FM_DYN_SHARED(T, smem);
    FM_SPTR(T) patch = smem;
    FM_SPTR(T) filt = smem + patch_h * patch_w;
    FM_SPTR(T) zs = filt + FG * kk;

    const int t = threadIdx.x;
    const int tiles_w = (PW + tpw - 1) / tpw;
    const int pi0 = (blockIdx.x / tiles_w) * tph, pj0 = (blockIdx.x % tiles_w) * tpw;  // pooled origin
    const int oi0 = pi0 * ph, oj0 = pj0 * pw;                                           // conv origin
    const int li = t / tile_w, lj = t % tile_w;
    const bool valid = oi0 + li < PH * ph && oj0 + lj < PW * pw;  // inside the pooled region
    const int f0 = blockIdx.y * FG;
    const long long n = blockIdx.z;

    T acc[FG];
#pragma unroll
    for (int q = 0; q < FG; ++q) acc[q] = T(0);

    for (int c = 0; c < C; ++c) {
        const long long xbase = (n * C + c) * H * W;
        for (int e = t; e < patch_h * patch_w; e += nt) {
            const int r = oi0 + e / patch_w, s = oj0 + e % patch_w;
            patch[e] = (r < H && s < W) ? T(x[xbase + (long long)r * W + s]) : T(0);
        }
        for (int e = t; e < FG * kk; e += nt) {
            const int f = f0 + e / kk;
            filt[e] = f < F ? T(w[((long long)f * C + c) * kk + e % kk]) : T(0);
        }
        __syncthreads();
        if (valid) {
            for (int k = 0; k < KH; ++k)
                for (int l = 0; l < KW; ++l) {
                    const T xv = patch[(li + k) * patch_w + lj + l];
#pragma unroll
                    for (int q = 0; q < FG; ++q) acc[q] += xv * T(filt[q * kk + k * KW + l]);
                }
        }
        __syncthreads();
    }
    if (valid) {
#pragma unroll
        for (int q = 0; q < FG; ++q) zs[q * nt + t] = acc[q];
    }
    __syncthreads();

    for (int e = t; e < FG * tph * tpw; e += nt) {
        const int q = e / (tph * tpw), pi = (e / tpw) % tph, pj = e % tpw;
        const int f = f0 + q, PI = pi0 + pi, PJ = pj0 + pj;
        if (f >= F || PI >= PH || PJ >= PW) continue;
        FM_SPTR(T) win = zs + q * nt + (pi * ph) * tile_w + pj * pw;
        T best = win[0];
        int arg = 0;
        for (int r = 0; r < ph; ++r)
            for (int s = 0; s < pw; ++s) {
                const T v = win[r * tile_w + s];
                if (v > best) {
                    best = v;
                    arg = r * pw + s;
                }
            }
        if (ties) {
            int mask = 1 << arg;
            for (int r = 0; r < ph; ++r)
                for (int s = 0; s < pw; ++s) mask |= int(win[r * tile_w + s] == best) << (r * pw + s);
            arg = mask;
        }
        const long long o = ((n * F + f) * PH + PI) * PW + PJ;
        y[o] = fm::activate(act, best + T(b[f]));
        argmax[o] = arg;
    }
}
