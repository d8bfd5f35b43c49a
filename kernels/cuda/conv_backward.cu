// Convolution + max-pool layer, backward: the gradients are read straight from the
// pooled gradient dy and the forward's argmax, as the cpu backend's scattered backward
// does. Only the positions a window's gradient reaches (one per window with
// pool_ties="first") take part, so a 2x2 pool does a quarter of the multiply-adds of
// the dense formulation, and no conv-sized (N,F,OH,OW) gradient buffer is written.
// Shapes as in conv.cu; K is the filter size when it is a compile-time K x K (5:
// network3's layers), or 0 for any KH x KW.
#include "common.cuh"

namespace fm {
constexpr int WG_FILTERS = 4;  // filters per thread of fm_conv_wgrad (register accumulators)
constexpr int WG_LANES = 32;   // the lanes of a weight-gradient unit: one warp
constexpr int WG_RED = 8;      // values reduced across a warp per barrier pair (epilogue)
constexpr int DG_CHANNELS = 8; // input channels per thread of fm_conv_dgrad (register accumulators)

// One gradient entry of a pooled output: its value g = dy*act'(y) and where it goes
// (`at`: a position each kernel encodes its own way).
template <typename T>
struct PoolEntry {
    T g;
    int at;
};

// Entry e of pooled output o: returns its gradient and sets pos to its window position
// (r*pw + s). pool_ties="first": one entry, at the argmax. "all": ph*pw entries, the
// tie mask's set bits in position order, then entries of zero gradient at position 0,
// so that every filter has the same number of entries and the loops over them stay
// uniform (this costs ph*pw times the multiply-adds of "first": "all" is network3's
// legacy rule, not the default). Entry 0 always carries the window's whole gradient
// (the first maximum's bit is always set): the bias gradient sums entries 0. A mask or
// argmax out of range (device arrays are not checked on the host) gives no gradient
// at position 0, so no access leaves its array.
template <typename T, typename PT, typename PI>
__device__ __forceinline__ T pool_entry(PT y, PI argmax, PT dy, long long o, int e, int window, int act, int ties,
                                        int& pos) {
    const int a = argmax[o];
    bool on;
    if (ties) {
        unsigned m = (unsigned)a & ((2u << (window - 1)) - 1u);  // window <= 31 with ties (_checks)
        for (int t = 0; t < e; ++t) m &= m - 1u;                   // drop the e lowest set bits
        on = m != 0u;
        pos = on ? __ffs((int)m) - 1 : 0;
    } else {
        on = (unsigned)a < (unsigned)window;
        pos = on ? a : 0;
    }
    return on ? T(dy[o]) * act_grad_from_output(act, T(y[o])) : T(0);
}

// floor(a / b) for b > 0 and any sign of a
__device__ __forceinline__ int floor_div(int a, int b) { return a >= 0 ? a / b : -((b - 1 - a) / b); }

// (i, j) packed in one int, each in (-2^14, 2^14): fm_conv_dgrad's entry positions
constexpr int PACK_BIAS = 1 << 14;
__device__ __forceinline__ int pack_ij(int i, int j) { return ((i + PACK_BIAS) << 16) | (j + PACK_BIAS); }

// Stage fm_conv_wgrad's gradient entries [e0, e0 + cnt) of nf filters from f0 into
// ents[q * cnt + i]. Entry index = (b * nwin + window) * E + e over images b from n0,
// windows row-major; its offset `at` is that of its conv position (i, j) of image b in
// fm_conv_wgrad's planes phased by lph x lpw: (i % lph * lpw + j % lpw) * ss + b * is +
// i / lph * xstride + j - j % lpw.
template <typename T, typename PT, typename PI, typename S>
__device__ __forceinline__ void stage_entries(S ents, PT y, PI argmax, PT dy, long long n0, int f0, int nf, int F,
                                              int e0, int cnt, int PH, int PW, int ph, int pw, int act, int ties,
                                              int lph, int lpw, int xstride, int is, int ss) {
    const int E = ties ? ph * pw : 1, nwin = PH * PW;
    for (int e = threadIdx.x; e < nf * cnt; e += blockDim.x) {
        const int q = e / cnt, i = e0 + e % cnt, b = i / (nwin * E), win = (i / E) % nwin;
        int pos = 0;
        T g = T(0);
        if (f0 + q < F)
            g = pool_entry<T>(y, argmax, dy, ((n0 + b) * F + f0 + q) * nwin + win, i % E, ph * pw, act, ties, pos);
        const int ci = win / PW * ph + pos / pw, cj = win % PW * pw + pos % pw;  // the conv position
        ents[e] = PoolEntry<T>{g, (ci % lph * lpw + cj % lpw) * ss + b * is + ci / lph * xstride + cj - cj % lpw};
    }
}
}  // namespace fm

// The epilogue of fm_conv_wgrad: each warp's V register sums (acc) added over its 32
// lanes in lane order (deterministic), fm::WG_RED values per barrier pair through
// `red` (a padded [warp][value][lane] array: the sequential lane sums hit different
// banks); value v goes to out(v, total). V is a compile-time constant, so acc is only
// indexed by constants and stays in registers.
template <int V, typename T, typename S, typename Out>
__device__ __forceinline__ void warp_sums(S red, const T (&acc)[V], Out out) {
    constexpr int R = fm::WG_RED, L = fm::WG_LANES;
    const int lane = threadIdx.x % L, warp = threadIdx.x / L;
#pragma unroll
    for (int v0 = 0; v0 < V; v0 += R) {
#pragma unroll
        for (int d = 0; d < R; ++d)
            if (v0 + d < V) red[(warp * R + d) * (L + 1) + lane] = acc[v0 + d];
        __syncthreads();
        if (lane < R && v0 + lane < V) {
            T total = T(0);
            for (int m = 0; m < L; ++m) total += T(red[(warp * R + lane) * (L + 1) + m]);
            out(v0 + lane, total);
        }
        __syncthreads();
    }
}

// One chunk of fm_conv_wgrad's hot loop: for every cnt-th entry from `lane`, each of the
// FG filters' entry (an 8-byte load: gradient and offset of its position in the staged
// planes) and TW (shared load, FMA) pairs into acc[q * TW + t]; no index math.
template <int FG, int TW, int V, typename T, typename S, typename SE>
__device__ __forceinline__ void wgrad_chunk(T (&acc)[V], S xk, SE ents, int cnt, int lane) {
    for (int i = lane; i < cnt; i += fm::WG_LANES)
#pragma unroll
        for (int q = 0; q < FG; ++q) {
            const fm::PoolEntry<T> en = ents[q * cnt + i];
#pragma unroll
            for (int t = 0; t < TW; ++t) {
                const T xv = xk[en.at + t];
                acc[q * TW + t] += en.g * xv;
            }
        }
}

// Partial weight and bias gradients over batch slice s = blockIdx.y of nsplit:
//   wpart[s, c, f, k, l] = sum over the slice's entries of g * x[n, c, i + k, j + l]
// ((i, j): the entry's conv position; channel-major, so that a block's filters are one
// run of wpart), and bpart[s, f] = the slice's sum of dy*act'(y), one term per pooled
// output (the bias is added after pooling), however many ties: the entries 0, summed by
// the units of the first tap of channel 0.
//
// A unit is one warp: WG_FILTERS filters x TW consecutive taps of a filter row (TW = K,
// a whole row, for a compile-time K x K filter; else chunks of 4, the taps past the
// row's end computed and dropped). Its 32 lanes take every 32nd entry and each keeps
// WG_FILTERS*TW sums in registers. Block: channel c, `groups` filter groups of
// WG_FILTERS, and the units of upb / chunks whole filter rows of each group
// (blockIdx.x = ((fb * C) + c) * nub + ub; blockDim.x = 32 * groups * upb).
//
// Phased planes: a lane reads at its entry's argmax, which is data-dependent, so in one
// plain plane a warp's 32 windows hit the same bank at random. Instead nb_max images'
// channel-c planes are staged as (2ph - 1) * pw sub-planes (lph x lpw = ph x pw; the
// plan falls back to 1 x 1, one plain plane, where they do not fit): sub-plane
// rho * lpw + s holds x[b, c, u * lph + rho, v + s] at (rho * lpw + s) * ss + b * is +
// u * xstride + v (zero where no pixel is). Window (P, Q)'s position (r, s) and tap
// (k, l) read pixel (P * ph + r + k, Q * pw + s + l), found in sub-plane
// (r + k % ph) * pw + s at u = P + k / ph, v = Q * pw + l: the entry's offset
// (stage_entries) plus the unit's tap offset (k % lph * lpw) * ss + k / lph * xstride + l,
// so the hot loop keeps its constant offsets. ss is a multiple of 32 elements: the
// argmax no longer moves a lane's bank, which follows from its window alone, and the
// plan picks xstride and is to spread a warp's windows over the banks
// (cuda_plans.wgrad_layout).
// Stages: the sub-planes of nb_max images, then their entries in chunks of ec
// (wgrad_chunk). At the end the lanes' sums are added in lane order (deterministic)
// into the block's totals, which the block stores as one run of wpart per filter group
// (whole filter rows); fm_conv_wgrad_finalize adds the slices.
// Dynamic shared memory: max((2lph - 1) * lpw * ss elements of T rounded to 16 bytes +
// groups * WG_FILTERS * ec entries, the epilogue's warps * WG_RED * 33 + groups *
// WG_FILTERS * (rows * KW + 1) elements of T).
template <typename T, int K>
__global__ void __launch_bounds__(512, sizeof(T) == 4 ? 2 : 1)
    fm_conv_wgrad(FM_PTR(const T) x, FM_PTR(const T) y, FM_PTR(const int) argmax, FM_PTR(const T) dy,
                  FM_PTR(T) wpart, FM_PTR(T) bpart, int N, int C, int H, int W, int F, int KH, int KW, int PH,
                  int PW, int ph, int pw, int act, int ties, int nsplit, int groups, int upb, int nb_max, int ec,
                  int phased, int xstride, int is, int ss) {
    constexpr int FG = fm::WG_FILTERS, TW = K > 0 ? K : 4, V = FG * TW + FG;
    if (K > 0) KH = KW = K;
    const int HW = H * W, nwin = PH * PW, E = ties ? ph * pw : 1, chunks = (KW + TW - 1) / TW;
    const int rows = upb / chunks, nub = (KH + rows - 1) / rows, row0 = blockIdx.x % nub * rows;
    const int unit = threadIdx.x / fm::WG_LANES, lane = threadIdx.x % fm::WG_LANES, grp = unit / upb;
    const int c = (blockIdx.x / nub) % C, fb0 = blockIdx.x / (nub * C) * groups * FG, s = blockIdx.y;
    const int k = row0 + unit % upb / chunks, l0 = unit % chunks * TW, f0 = fb0 + grp * FG;
    const bool active = k < KH && f0 < F, bias_unit = active && c == 0 && k == 0 && l0 == 0;
    const long long n0 = (long long)N * s / nsplit, n1 = (long long)N * (s + 1) / nsplit;
    const int lph = phased ? ph : 1, lpw = phased ? pw : 1, planes = (2 * lph - 1) * lpw * ss;
    FM_DYN_SHARED(T, smem);
    const int xs_len = (planes * (int)sizeof(T) + 15) / 16 * 16 / (int)sizeof(T);
    FM_SPTR(fm::PoolEntry<T>) ents = FM_SPTR_CAST(fm::PoolEntry<T>, smem + xs_len);
    T acc[V];
#pragma unroll
    for (int v = 0; v < V; ++v) acc[v] = T(0);

    // the cells no pixel fills (the sub-planes' last rows, the row padding that also
    // takes the chunks' overhang) stay zero
    for (int e = threadIdx.x; e < planes; e += blockDim.x) smem[e] = T(0);
    __syncthreads();
    for (long long nb0 = n0; nb0 < n1; nb0 += nb_max) {
        const int nb = (int)min((long long)nb_max, n1 - nb0), total = nb * nwin * E;
        // one coalesced read of each pixel, stored into the sub-planes holding it
        for (int e = threadIdx.x; e < nb * HW; e += blockDim.x) {
            const T xv = T(x[((nb0 + e / HW) * C + c) * HW + e % HW]);
            const int b = e / HW, i = e % HW / W, j = e % W;
            for (int rho = i % lph, u = i / lph; rho < 2 * lph - 1 && u >= 0; rho += lph, --u)
                for (int sh = 0; sh < lpw && sh <= j; ++sh)
                    smem[(rho * lpw + sh) * ss + b * is + u * xstride + j - sh] = xv;
        }
        for (int e0 = 0; e0 < total; e0 += ec) {
            const int cnt = min(ec, total - e0);
            fm::stage_entries<T>(ents, y, argmax, dy, nb0, fb0, groups * FG, F, e0, cnt, PH, PW, ph, pw, act, ties,
                                 lph, lpw, xstride, is, ss);
            __syncthreads();
            if (active)
                wgrad_chunk<FG, TW>(acc, smem + k % lph * lpw * ss + k / lph * xstride + l0, ents + grp * FG * cnt, cnt,
                                    lane);
            // the bias: every pooled output's entry 0 (the first entry at or after e0)
            for (int i = (e0 + E - 1) / E * E - e0 + lane * E; bias_unit && i < cnt; i += fm::WG_LANES * E)
#pragma unroll
                for (int q = 0; q < FG; ++q) {
                    const fm::PoolEntry<T> en = ents[(grp * FG + q) * cnt + i];
                    acc[FG * TW + q] += en.g;
                }
            __syncthreads();
        }
    }
    // the block's sums in shared memory ([filter][rows * KW + 1]), then stored in wpart's order
    const int ntaps = min(rows, KH - row0) * KW, tap0 = row0 * KW;
    FM_SPTR(T) tot = smem + blockDim.x / fm::WG_LANES * fm::WG_RED * (fm::WG_LANES + 1);
    warp_sums(smem, acc, [&](int v, T total) {
        const int q = grp * FG + (v < FG * TW ? v / TW : v - FG * TW), l = l0 + v % TW;
        if (v < FG * TW && active && l < KW)
            tot[q * (ntaps + 1) + k * KW + l - tap0] = total;
        else if (v >= FG * TW && bias_unit)
            tot[q * (ntaps + 1) + ntaps] = total;
    });
    for (int e = threadIdx.x; e < groups * FG * ntaps; e += blockDim.x)
        if (fb0 + e / ntaps < F)
            wpart[(((long long)s * C + c) * F + fb0 + e / ntaps) * KH * KW + tap0 + e % ntaps] =
                tot[e / ntaps * (ntaps + 1) + e % ntaps];
    for (int q = threadIdx.x; c == 0 && row0 == 0 && q < groups * FG; q += blockDim.x)
        if (fb0 + q < F) bpart[(long long)s * F + fb0 + q] = tot[q * (ntaps + 1) + ntaps];
}

// dw[f, c, tap] = the sum over the nsplit slices of wpart[s, c, f, tap], db likewise of
// bpart (in slice order). wpart is channel-major and dw filter-major, so a block takes
// a tile of ft filters x ct channels: it sums it in wpart's order (runs of ft * KK),
// keeps it in shared memory ([filter][ct * KK]) and stores it in dw's order (runs of
// ct * KK; the whole tile one run when ct = C). Dynamic shared memory: ft * ct * KK
// elements of T.
template <typename T>
__global__ void fm_conv_wgrad_finalize(FM_PTR(const T) wpart, FM_PTR(const T) bpart, FM_PTR(T) dw, FM_PTR(T) db,
                                       int F, int C, int KK, int nsplit, int ft, int ct) {
    FM_DYN_SHARED(T, tile);
    const int f0 = blockIdx.x * ft, c0 = blockIdx.y * ct, nf = min(ft, F - f0), nc = min(ct, C - c0);
    const long long nw = (long long)F * C * KK;
    for (int e = threadIdx.x; e < nc * nf * KK; e += blockDim.x) {
        const int cl = e / (nf * KK), fl = e / KK % nf, tap = e % KK;
        const long long at = ((long long)(c0 + cl) * F + f0 + fl) * KK + tap;
        T acc = T(0);
        for (int s = 0; s < nsplit; ++s) acc += wpart[s * nw + at];
        tile[(fl * nc + cl) * KK + tap] = acc;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < nf * nc * KK; e += blockDim.x)
        dw[((long long)(f0 + e / (nc * KK)) * C + c0) * KK + e % (nc * KK)] = tile[e];
    for (int fl = threadIdx.x; blockIdx.y == 0 && fl < nf; fl += blockDim.x) {
        T acc = T(0);
        for (int s = 0; s < nsplit; ++s) acc += bpart[(long long)s * F + f0 + fl];
        db[f0 + fl] = acc;
    }
}

// Input gradient: dx[n, c, h, w] = sum over the entries (f, window, e) whose conv
// position (i, j) has 0 <= h - i < KH and 0 <= w - j < KW of g * w[f, c, h - i, w - j].
// A gather: one thread per input pixel with DG_CHANNELS channels in registers, every
// sum in a fixed order (deterministic, no atomics). Block: image n = blockIdx.z,
// channels blockIdx.y * DG_CHANNELS.., a th x tw pixel tile blockIdx.x, one thread per
// pixel. Per stage of fq filters the block stages their weights for its channels
// tap-major ([f][tap][DG_CHANNELS + 1]: lanes at different taps fall in different banks,
// and a tap's channels are consecutive), and the entries of the windows that reach the
// tile (their positions packed, relative to the tile). A thread then visits only the
// windows whose rows and columns can reach its pixel (3 x 3 of them for a 5x5 filter on
// 2x2 pools): per entry, the tap index and a bounds test, then DG_CHANNELS (shared
// load, FMA) pairs.
// Dynamic shared memory: fq*KH*KW*(DG_CHANNELS+1) elements of T rounded to 16 bytes,
// then fq * (windows reaching the tile) * E entries.
template <typename T, int K>
__global__ void fm_conv_dgrad(FM_PTR(const T) y, FM_PTR(const int) argmax, FM_PTR(const T) dy, FM_PTR(const T) w,
                              FM_PTR(T) dx, int C, int H, int W, int F, int KH, int KW, int PH, int PW, int ph,
                              int pw, int act, int ties, int th, int tw, int fq) {
    constexpr int CB = fm::DG_CHANNELS, CS = CB + 1, B = fm::PACK_BIAS;
    if (K > 0) KH = KW = K;
    const int KK = KH * KW, E = ties ? ph * pw : 1, tiles_w = (W + tw - 1) / tw;
    const int h0 = blockIdx.x / tiles_w * th, w0 = blockIdx.x % tiles_w * tw, c0 = blockIdx.y * CB;
    const long long n = blockIdx.z;
    const int hl = threadIdx.x / tw, wl = threadIdx.x % tw, h = h0 + hl, wc = w0 + wl;
    const bool valid = hl < th && h < H && wc < W;
    // the windows that reach the tile, and those that reach this thread's pixel
    const int P0 = max(0, fm::floor_div(h0 - KH + 1, ph)), P1 = min(PH - 1, (h0 + th - 1) / ph);
    const int Q0 = max(0, fm::floor_div(w0 - KW + 1, pw)), Q1 = min(PW - 1, (w0 + tw - 1) / pw);
    const int nwc = max(0, Q1 - Q0 + 1), nent = max(0, P1 - P0 + 1) * nwc * E;
    const int plo = max(P0, fm::floor_div(h - KH + 1, ph)), phi = min(P1, h / ph);
    const int qlo = max(Q0, fm::floor_div(wc - KW + 1, pw)), qhi = min(Q1, wc / pw);
    FM_DYN_SHARED(T, ws);
    FM_SPTR(fm::PoolEntry<T>) ents =
        FM_SPTR_CAST(fm::PoolEntry<T>, ws + (fq * KK * CS * (int)sizeof(T) + 15) / 16 * 16 / (int)sizeof(T));
    T acc[CB];
#pragma unroll
    for (int cb = 0; cb < CB; ++cb) acc[cb] = T(0);

    for (int f0 = 0; f0 < F; f0 += fq) {
        const int nf = min(fq, F - f0);
        for (int e = threadIdx.x; e < nf * CB * KK; e += blockDim.x) {
            const int q = e / (CB * KK), cb = e / KK % CB, tap = e % KK;
            ws[(q * KK + tap) * CS + cb] = c0 + cb < C ? T(w[((long long)(f0 + q) * C + c0 + cb) * KK + tap]) : T(0);
        }
        for (int e = threadIdx.x; e < nf * nent; e += blockDim.x) {
            const int q = e / nent, r = e % nent, P = P0 + r / (nwc * E), Q = Q0 + r / E % nwc;
            int pos;
            const T g = fm::pool_entry<T>(y, argmax, dy, ((n * F + f0 + q) * PH + P) * PW + Q, r % E, ph * pw, act,
                                          ties, pos);
            ents[e] = fm::PoolEntry<T>{g, fm::pack_ij(P * ph + pos / pw - h0, Q * pw + pos % pw - w0)};
        }
        __syncthreads();
        for (int q = 0; valid && q < nf; ++q) {
            FM_SPTR(T) wq = ws + q * KK * CS;
            for (int P = plo; P <= phi; ++P) {
                const int e1 = q * nent + ((P - P0) * nwc + qhi - Q0) * E + E;
                for (int e = q * nent + ((P - P0) * nwc + qlo - Q0) * E; e < e1; ++e) {
                    const fm::PoolEntry<T> en = ents[e];
                    const int k = hl + B - (en.at >> 16), l = wl + B - (en.at & 0xffff);
                    if ((unsigned)k >= (unsigned)KH || (unsigned)l >= (unsigned)KW) continue;
                    FM_SPTR(T) wt = wq + (k * KW + l) * CS;
#pragma unroll
                    for (int cb = 0; cb < CB; ++cb) {
                        const T wv = wt[cb];
                        acc[cb] += en.g * wv;
                    }
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int cb = 0; cb < CB; ++cb)
        if (valid && c0 + cb < C) dx[((n * C + c0 + cb) * H + h) * W + wc] = acc[cb];
}
