// Convolution + max-pool layer: the fused forward pass and the backward kernels.
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

// Un-pooling with the activation derivative: dz (N,F,OH,OW) holds dy*act'(y) at each
// window's argmax (ties: at each position set in its tie mask) and zero elsewhere (the
// other window positions and the ragged border).
template <typename T>
__global__ void fm_conv_unpool(FM_PTR(const T) y, FM_PTR(const int) argmax, FM_PTR(const T) dy, FM_PTR(T) dz,
                               long long NF, int OH, int OW, int PH, int PW, int ph, int pw, int act,
                               int ties) {
    const long long total = NF * OH * OW;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long nf = e / ((long long)OH * OW);
        const int ij = int(e - nf * OH * OW), i = ij / OW, j = ij % OW;
        const int pi = i / ph, pj = j / pw;
        T d = T(0);
        if (pi < PH && pj < PW) {
            const long long q = (nf * PH + pi) * PW + pj;
            const int pos = (i - pi * ph) * pw + (j - pj * pw);  // < 31 with ties (_checks)
            if (ties ? (argmax[q] >> pos) & 1 : argmax[q] == pos)
                d = dy[q] * fm::act_grad_from_output(act, T(y[q]));
        }
        dz[e] = d;
    }
}

// Partial weight and bias gradients over a slice of the batch.
// Block (f, c) = blockIdx.x, batch slice blockIdx.y of nsplit: for each tap (k, l),
//   wpart[s, f, c, k, l] = sum_{n in slice, i, j} dz[n,f,i,j] * x[n,c,i+k,j+l],
// and blocks with c == 0 also write bpart[s, f] = sum dy[n,f,:,:] * act'(y[n,f,:,:]):
// one term per pooled output (the bias is added after pooling), not per position of dz,
// which repeats a window's gradient at each of its ties with pool_ties="all". Every sum
// is a fixed-order tree over the block (deterministic; fm_conv_wgrad_finalize adds the
// slices in order). blockDim.x must be a power of two (fm::block_sum).
template <typename T>
__global__ void fm_conv_wgrad_partial(FM_PTR(const T) x, FM_PTR(const T) dz, FM_PTR(const T) y, FM_PTR(const T) dy,
                                      FM_PTR(T) wpart, FM_PTR(T) bpart, int N, int C, int H, int W, int F,
                                      int KH, int KW, int OH, int OW, int PH, int PW, int act, int nsplit) {
    FM_SHARED(T, red, 256);
    const int f = blockIdx.x / C, c = blockIdx.x % C, s = blockIdx.y;
    const int n0 = (int)((long long)N * s / nsplit), n1 = (int)((long long)N * (s + 1) / nsplit);
    const long long plane = (long long)OH * OW, count = (n1 - n0) * plane;
    for (int tap = 0; tap < KH * KW; ++tap) {
        const int k = tap / KW, l = tap % KW;
        T acc = T(0);
        for (long long q = threadIdx.x; q < count; q += blockDim.x) {
            const long long n = n0 + q / plane;
            const int ij = int(q % plane), i = ij / OW, j = ij % OW;
            acc += dz[(n * F + f) * plane + ij] * x[((n * C + c) * H + i + k) * W + j + l];
        }
        const T total = fm::block_sum(red, acc);
        if (threadIdx.x == 0) wpart[(((long long)s * F + f) * C + c) * KH * KW + tap] = total;
    }
    if (c == 0) {
        const long long pooled = (long long)PH * PW, pcount = (n1 - n0) * pooled;
        T acc = T(0);
        for (long long q = threadIdx.x; q < pcount; q += blockDim.x) {
            const long long o = ((n0 + q / pooled) * F + f) * pooled + q % pooled;
            acc += dy[o] * fm::act_grad_from_output(act, T(y[o]));
        }
        const T total = fm::block_sum(red, acc);
        if (threadIdx.x == 0) bpart[(long long)s * F + f] = total;
    }
}

// dw = sum over the nsplit slices of wpart, db likewise of bpart (in slice order)
template <typename T>
__global__ void fm_conv_wgrad_finalize(FM_PTR(const T) wpart, FM_PTR(const T) bpart, FM_PTR(T) dw, FM_PTR(T) db,
                                       long long nw, int F, int nsplit) {
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < nw + F;
         e += (long long)gridDim.x * blockDim.x) {
        T acc = T(0);
        if (e < nw) {
            for (int s = 0; s < nsplit; ++s) acc += wpart[s * nw + e];
            dw[e] = acc;
        } else {
            for (int s = 0; s < nsplit; ++s) acc += bpart[(long long)s * F + (e - nw)];
            db[e - nw] = acc;
        }
    }
}

// Input gradient dx[n,c,h,w] = sum_{f,k,l} dz[n,f,h-k,w-l] * w[f,c,k,l]: a gather, one
// thread per element of dx (no atomics). Block: 256 pixels of one (n = blockIdx.z,
// c = blockIdx.y) plane; the filter slices w[f0:f0+CONV_FG, c] are staged in dynamic
// shared memory (CONV_FG*KH*KW elements).
template <typename T>
__global__ void fm_conv_dgrad(FM_PTR(const T) dz, FM_PTR(const T) w, FM_PTR(T) dx, int C, int H, int W, int F,
                              int KH, int KW, int OH, int OW) {
    constexpr int FG = fm::CONV_FG;
    FM_DYN_SHARED(T, ws);
    const int kk = KH * KW;
    const long long n = blockIdx.z;
    const int c = blockIdx.y;
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    const bool valid = p < H * W;
    const int h = p / W, wc = p % W;
    T acc = T(0);
    for (int f0 = 0; f0 < F; f0 += FG) {
        for (int e = threadIdx.x; e < FG * kk; e += blockDim.x) {
            const int f = f0 + e / kk;
            ws[e] = f < F ? T(w[((long long)f * C + c) * kk + e % kk]) : T(0);
        }
        __syncthreads();
        if (valid) {
            for (int q = 0; q < FG && f0 + q < F; ++q) {
                const long long zbase = (n * F + f0 + q) * OH * OW;
                for (int k = 0; k < KH; ++k) {
                    const int i = h - k;
                    if (i < 0 || i >= OH) continue;
                    for (int l = 0; l < KW; ++l) {
                        const int j = wc - l;
                        if (j < 0 || j >= OW) continue;
                        acc += dz[zbase + (long long)i * OW + j] * T(ws[q * kk + k * KW + l]);
                    }
                }
            }
        }
        __syncthreads();
    }
    if (valid) dx[(n * C + c) * H * W + p] = acc;
}
