/* The type-generic source of conv_direct.h, instantiated per type by instantiate.h. */

typedef FM_T FM_NAME(fm_vec) __attribute__((vector_size(32), aligned(sizeof(FM_T)), may_alias));
/* lane masks and indices: integers as wide as FM_T */
typedef FM_INT FM_NAME(fm_ivec) __attribute__((vector_size(32)));
/* the forward's vectors and masks: FM_FWD_BYTES, 64 at the AVX-512 level (conv_direct.h) */
typedef FM_T FM_NAME(fm_fvec) __attribute__((vector_size(FM_FWD_BYTES), aligned(sizeof(FM_T)), may_alias));
typedef FM_INT FM_NAME(fm_fivec) __attribute__((vector_size(FM_FWD_BYTES)));

/* Filter vectors per tile of the nvec in all: blocks of at most FM_MAX_FV, as even as
 * possible (5 -> 3 + 2 with AVX-512VL, 2 + 2 + 1 with AVX2). */
static inline int FM_NAME(fm_block_width)(int remaining)
{
    int blocks = (remaining + FM_MAX_FV - 1) / FM_MAX_FV;
    return (remaining + blocks - 1) / blocks;
}

/* Pack w (f x K, K = c*kh*kw) for the tiles: filters in vectors of FM_FWD_LANES (the last
 * one zero-padded), vectors in blocks of fm_block_width, each block stored tap-major,
 * so a tile reads its weights as one aligned, contiguous stream, with L = FM_FWD_LANES:
 * wp[v0*L*K + (t*width + u)*L + lane] = w[((v0 + u)*L + lane)*K + t]
 * for the block of `width` vectors starting at vector v0. wp holds ceil(f / L) * L * K
 * scalars. */
static void FM_NAME(fastmom_pack_filters)(const FM_T *w, int f, int K, FM_T *wp)
{
    int nvec = (f + FM_FWD_LANES - 1) / FM_FWD_LANES;
    for (int v0 = 0; v0 < nvec;) {
        int width = FM_NAME(fm_block_width)(nvec - v0);
        FM_T *dst = wp + (long)v0 * FM_FWD_LANES * K;
        for (int t = 0; t < K; t++)
            for (int u = 0; u < width; u++)
                for (int lane = 0; lane < FM_FWD_LANES; lane++) {
                    int fi = (v0 + u) * FM_FWD_LANES + lane;
                    dst[((long)t * width + u) * FM_FWD_LANES + lane] = fi < f ? w[(long)fi * K + t] : 0;
                }
        v0 += width;
    }
}

/* One tile: FV filter vectors x P output positions (xoff: each position's offset in a
 * channel of x), summed over every tap (ci, k, l) into out[u*P + q]. Per tap, FV aligned
 * weight loads and P broadcast inputs feed FV*P fused multiply-adds. FV and P are literal
 * constants at every call: after inlining, the loops unroll and the accumulators live in
 * registers (only the final copy to `out` touches memory). */
static inline __attribute__((always_inline)) void FM_NAME(fm_conv_tile)(
    const FM_T *x, const FM_T *wp, int c, int h, int wd, int kh, int kw, const long *xoff,
    FM_NAME(fm_fvec) *out, const int fv, const int p)
{
    typedef FM_NAME(fm_fvec) vec;
    vec acc[3][FM_ACC];
    for (int u = 0; u < fv; u++)
        for (int q = 0; q < p; q++)
            acc[u][q] = (vec){0};
    for (int ci = 0; ci < c; ci++) {
        for (int k = 0; k < kh; k++) {
            const FM_T *xrow = x + ((long)ci * h + k) * wd;
            for (int l = 0; l < kw; l++) {
                /* 64-bit offsets from one pointer a tap: each input is one load with a
                 * base + index address (int sums cost 3 integer ops a load, the loop's
                 * front end, not its multiply-adds, was the limit) */
                const FM_T *xl = xrow + l;
                /* named, not an array: GCC stored a pinned array's elements to the stack
                 * every tap (dead stores, but a uop each) */
                vec w0 = *(const vec *)wp, w1 = w0, w2 = w0;
                FM_IN_REGISTER(w0);
                if (fv > 1) {
                    w1 = *(const vec *)(wp + FM_FWD_LANES);
                    FM_IN_REGISTER(w1);
                }
                if (fv > 2) {
                    w2 = *(const vec *)(wp + 2 * FM_FWD_LANES);
                    FM_IN_REGISTER(w2);
                }
                for (int q = 0; q < p; q++) {
                    FM_T xq = xl[xoff[q]];
                    acc[0][q] += w0 * xq;
                    if (fv > 1)
                        acc[1][q] += w1 * xq;
                    if (fv > 2)
                        acc[2][q] += w2 * xq;
                }
                wp += fv * FM_FWD_LANES;
            }
        }
    }
    for (int u = 0; u < fv; u++)
        for (int q = 0; q < p; q++)
            out[u * p + q] = acc[u][q];
}

/* The valid cross-correlation of one image x (c x h x wd) with the packed filters wp
 * (fastmom_pack_filters), max-pooled over ph x pw windows: y[fi, pi, pj] (f x PH x PW)
 * gets each window's largest pre-activation value (no bias: the caller adds it and
 * applies the activation, which commutes with the max for the monotonic activations)
 * and argmax[fi, pi, pj] the window position r*pw + s of the first maximum in row-major
 * order (strict >, the reference's rule), or with `ties` (pool_ties="all") the bitmask
 * of every position equal to the maximum, the first maximum's bit always set. argmax
 * NULL (inference: nothing will be back-propagated) computes and stores the maxima only.
 * Positions outside every window (a pool that does not divide the map) are never computed.
 *
 * Needs FM_WINDOW_MAX % (ph*pw) == 0 (fastmom_conv_pool_direct_applies): every tile then
 * holds whole windows. */
static void FM_NAME(fastmom_conv_pool_direct)(const FM_T *x, int c, int h, int wd,
                                              const FM_T *wp, int f, int kh, int kw,
                                              int ph, int pw, int PH, int PW, FM_T *y,
                                              int *argmax, int ties)
{
    typedef FM_NAME(fm_fvec) vec;
    typedef FM_NAME(fm_fivec) ivec;
    int ws = ph * pw, nwin = PH * PW, K = c * kh * kw;
    int nvec = (f + FM_FWD_LANES - 1) / FM_FWD_LANES;
    vec out[FM_ACC];
    long xoff[FM_ACC];
    for (int v0 = 0; v0 < nvec;) {
        int fv = FM_NAME(fm_block_width)(nvec - v0);
        int p = FM_TILE_P(fv), per_tile = p / ws;
        const FM_T *wblock = wp + (long)v0 * FM_FWD_LANES * K;
        /* the tile's first window, as a pooled row and column (advanced below, not
         * divided per tile: with few taps (conv1's 25) a division per position cost
         * about as much as the multiply-adds) */
        int wrow = 0, wcol = 0;
        for (int w0 = 0; w0 < nwin; w0 += per_tile) {
            int nw = nwin - w0 < per_tile ? nwin - w0 : per_tile;
            /* positions window by window, row-major inside a window; a last tile with
             * fewer windows repeats its last position (computed, never stored) */
            int q = 0;
            for (int wn = 0, r = wrow, cl = wcol; wn < nw; wn++) {
                long base = (long)r * ph * wd + (long)cl * pw;
                for (int a = 0; a < ph; a++)
                    for (int b = 0; b < pw; b++)
                        xoff[q++] = base + (long)a * wd + b;
                if (++cl == PW)
                    cl = 0, r++;
            }
            for (; q < p; q++)
                xoff[q] = xoff[q - 1];
            wcol += per_tile;
            while (wcol >= PW)
                wcol -= PW, wrow++;
            switch (fv) { /* only the widths this level uses are compiled */
            case 1: FM_NAME(fm_conv_tile)(x, wblock, c, h, wd, kh, kw, xoff, out, 1, FM_TILE_P(1)); break;
#if FM_MAX_FV > 2
            case 2: FM_NAME(fm_conv_tile)(x, wblock, c, h, wd, kh, kw, xoff, out, 2, FM_TILE_P(2)); break;
            default: FM_NAME(fm_conv_tile)(x, wblock, c, h, wd, kh, kw, xoff, out, 3, FM_TILE_P(3)); break;
#else
            default: FM_NAME(fm_conv_tile)(x, wblock, c, h, wd, kh, kw, xoff, out, 2, FM_TILE_P(2)); break;
#endif
            }
            for (int u = 0; u < fv; u++) {
                for (int wn = 0; wn < nw; wn++) {
                    const vec *win = out + u * p + wn * ws;
                    vec m = win[0];
                    ivec best = (ivec){0};
                    for (int s = 1; s < ws; s++) {
                        ivec gt = win[s] > m;
                        m = (vec)(((ivec)win[s] & gt) | ((ivec)m & ~gt));
                        best = (best & ~gt) | (((ivec){0} + s) & gt);
                    }
                    /* uniform branches per window, outside the multiply-adds: without
                     * argmax only the stores go (best is a few register operations) */
                    if (ties && argmax) {
                        best = ((ivec){0} + 1) << best;
                        for (int s = 0; s < ws; s++)
                            best |= (win[s] == m) & (1 << s);
                    }
                    long o = w0 + wn;
                    for (int lane = 0; lane < FM_FWD_LANES; lane++) {
                        int fi = (v0 + u) * FM_FWD_LANES + lane;
                        if (fi < f) {
                            y[(long)fi * nwin + o] = m[lane];
                            if (argmax)
                                argmax[(long)fi * nwin + o] = (int)best[lane];
                        }
                    }
                }
            }
        }
        v0 += fv;
    }
}

#if FM_POOL_VECTOR /* the row forward pools with pool.h's vector windows */

/* One tile of fastmom_conv_pool_forward_rows: F filters (w, f x K, from filter 0) x 2
 * output rows (from xr, a row of the padded image xs, wdp scalars a row, plane scalars
 * a channel) x TV vectors of columns, summed over every tap (ci, k, l) in order, into
 * buf[(2u + j) * bstride + column]. Per tap, F broadcast weights and 2*TV loads feed
 * 2*F*TV multiply-adds. F and TV are literals at every call (registers, as in
 * fm_conv_tile). */
static inline __attribute__((always_inline)) void FM_NAME(fm_rows_fwd_tile)(
    const FM_T *xr, long plane, int wdp, const FM_T *w, int K, int c, int kh, int kw,
    FM_T *buf, int bstride, const int F, const int TV)
{
    typedef FM_NAME(fm_fvec) vec;
    vec acc[FM_ROWSF_F][2][FM_ROWSF_TV];
    for (int u = 0; u < F; u++)
        for (int t = 0; t < TV; t++)
            acc[u][0][t] = acc[u][1][t] = (vec){0};
    for (int ci = 0; ci < c; ci++) {
        for (int k = 0; k < kh; k++) {
            const FM_T *x0 = xr + ci * plane + (long)k * wdp, *wk = w + (ci * kh + k) * kw;
            for (int l = 0; l < kw; l++) {
                /* scalars: a vector times a scalar is one broadcast (building the
                 * vector as {0} + w added a scalar addition first) */
                FM_T wv[FM_ROWSF_F];
                for (int u = 0; u < F; u++)
                    wv[u] = wk[(long)u * K + l];
                for (int t = 0; t < TV; t++)
                    for (int j = 0; j < 2; j++) {
                        /* loaded once for the F filters (folded into each multiply-add,
                         * the loads, half of them split across cache lines, were the
                         * limit), one at a time (2 x 3 x 2 sums, 2 weights and one
                         * input fill AVX2's 16 registers) */
                        vec a = *(const vec *)(x0 + j * wdp + l + t * FM_FWD_LANES);
                        FM_IN_REGISTER(a);
                        for (int u = 0; u < F; u++)
                            acc[u][j][t] += a * wv[u];
                    }
            }
        }
    }
    for (int u = 0; u < F; u++)
        for (int j = 0; j < 2; j++)
            for (int t = 0; t < TV; t++)
                *(vec *)(buf + (2 * u + j) * bstride + t * FM_FWD_LANES) = acc[u][j][t];
}

/* {0, 1, ..., FM_LANES - 1} */
static inline __attribute__((always_inline)) FM_NAME(fm_ivec) FM_NAME(fm_lane_index)(void)
{
#if FM_LANES == 8
    return (FM_NAME(fm_ivec)){0, 1, 2, 3, 4, 5, 6, 7};
#else
    return (FM_NAME(fm_ivec)){0, 1, 2, 3};
#endif
}

/* Rows r0, r1 of a tile's pre-pool sums (whole vectors of windows readable) max-pooled
 * in 2x2 windows: y[0:PW] gets each window's max and, unless NULL, argmax[0:PW] its
 * argmax (or with ties its tie mask), in whole vectors of windows (a call to the pool's
 * row function, its scalar tail and a copy cost half as much as the tile's
 * multiply-adds). With `spill`, the last vector is stored whole, past PW, into what
 * the caller writes later (the next pooled row); else masked (AMD's masked stores are
 * slow: only where the next row is not the caller's to overwrite). */
static inline __attribute__((always_inline)) void FM_NAME(fm_rows_fwd_pool)(
    const FM_T *r0, const FM_T *r1, int PW, FM_T *y, int *argmax, int ties, int spill)
{
    typedef FM_NAME(fm_pvec) vec;
    for (int j = 0; j < PW; j += FM_LANES) {
        vec m;
        FM_NAME(fm_pmask) bi;
        FM_NAME(fm_pool2x2_win)(r0 + 2 * j, r1 + 2 * j, &m, &bi, ties);
        if (spill || PW - j >= FM_LANES) {
            *(vec *)(y + j) = m;
            if (argmax)
                *(FM_NAME(fm_pidx) *)(argmax + j) = __builtin_convertvector(bi, FM_NAME(fm_pidx));
            continue;
        }
        /* masked stores (a loop over the lanes became two memcpy calls) */
        FM_NAME(fm_ivec) keep = (FM_NAME(fm_ivec)){0} + (PW - j) > FM_NAME(fm_lane_index)();
#if FM_LANES == 8
        _mm256_maskstore_ps(y + j, (__m256i)keep, (__m256)m);
        if (argmax)
            _mm256_maskstore_epi32(argmax + j, (__m256i)keep, (__m256i)bi);
#else
        _mm256_maskstore_pd(y + j, (__m256i)keep, (__m256d)m);
        if (argmax) {
            __m128i b4 = (__m128i)__builtin_convertvector(bi, FM_NAME(fm_pidx));
            __m128i k4 = (__m128i)__builtin_convertvector(keep, FM_NAME(fm_pidx));
            _mm_maskstore_epi32(argmax + j, k4, b4);
        }
#endif
    }
}

/* fastmom_conv_pool_direct's result (y: each 2x2 window's largest pre-activation value,
 * argmax: its position or, with ties, its tie mask; argmax NULL for inference), for
 * fastmom_conv_rows_forward_applies: lanes along the output rows (see conv_direct.h).
 * w is the filters as given (f x c x kh x kw), scratch holds
 * fastmom_conv_rows_forward_scratch scalars. Each output is summed over the taps in
 * the order fm_conv_tile sums them. */
static void FM_NAME(fastmom_conv_pool_forward_rows)(const FM_T *x, int c, int h, int wd,
                                                    const FM_T *w, int f, int kh, int kw,
                                                    int PH, int PW, FM_T *y, int *argmax,
                                                    int ties, FM_T *scratch)
{
    /* the tiles' columns: whole vectors, and the pool's rows whole vectors of windows */
    int nv = (2 * PW + FM_FWD_LANES - 1) / FM_FWD_LANES, wdp = nv * FM_FWD_LANES + kw - 1;
    int row = 2 * ((PW + FM_LANES - 1) / FM_LANES * FM_LANES), K = c * kh * kw;
    long nwin = (long)PH * PW;
    /* 64-byte aligned: the pool reloads what the tile just stored, and a store a load
     * straddles is not forwarded */
    FM_T *buf = (FM_T *)(((uintptr_t)(scratch + (long)c * h * wdp) + 63) & ~(uintptr_t)63);
    /* the image as it is where every tile's loads stay inside its rows (network3's
     * conv1: 24 columns + 4 = 28), else a copy with rows of wdp, zero-padded */
    const FM_T *xs = x;
    if (wdp > wd) {
        FM_T *xc = scratch;
        for (long r = 0; r < (long)c * h; r++) {
            for (int i = 0; i < wd; i++)
                xc[r * wdp + i] = x[r * wd + i];
            for (int i = wd; i < wdp; i++)
                xc[r * wdp + i] = 0;
        }
        xs = xc;
    } else {
        wdp = wd;
    }
    long plane = (long)h * wdp;
    /* columns past the tiles' stay zero */
    memset(buf, 0, FM_ROWSF_F * 2 * row * sizeof(FM_T));
    for (int u0 = 0; u0 < f; u0 += FM_ROWSF_F) {
        int nf = f - u0 < FM_ROWSF_F ? f - u0 : FM_ROWSF_F;
        const FM_T *wu = w + (long)u0 * K;
        for (int pr = 0; pr < PH; pr++) {
            const FM_T *xr = xs + 2L * pr * wdp;
            for (int t0 = 0; t0 < nv; t0 += FM_ROWSF_TV) {
                int nt = nv - t0 < FM_ROWSF_TV ? nv - t0 : FM_ROWSF_TV;
                const FM_T *xt = xr + t0 * FM_FWD_LANES;
                FM_T *bt = buf + t0 * FM_FWD_LANES;
                /* only the shapes this level's F uses are compiled */
#define FM_ROWSF_CASE(F_, TV_)                                                             \
                case (F_) * 4 + (TV_):                                                     \
                    FM_NAME(fm_rows_fwd_tile)(xt, plane, wdp, wu, K, c, kh, kw, bt, row,   \
                                              F_, TV_);                                    \
                    break;
#define FM_ROWSF_CASES(F_) FM_ROWSF_CASE(F_, 1) FM_ROWSF_CASE(F_, 2) FM_ROWSF_CASE(F_, 3)
                switch (nf * 4 + nt) {
                FM_ROWSF_CASES(1)
                FM_ROWSF_CASES(2)
#if FM_ROWSF_F > 2
                FM_ROWSF_CASES(3)
                FM_ROWSF_CASES(4)
#endif
                }
#undef FM_ROWSF_CASES
#undef FM_ROWSF_CASE
            }
            /* the rows after this one are written later: the last vector may spill
             * into them where they hold the rest of it */
            int spill = (long)(PH - 1 - pr) * PW >= row / 2 - PW;
            for (int u = 0; u < nf; u++) {
                long o = (u0 + u) * nwin + (long)pr * PW;
                const FM_T *r0 = buf + 2 * u * row;
                int *a = argmax ? argmax + o : NULL;
                if (ties)
                    FM_NAME(fm_rows_fwd_pool)(r0, r0 + row, PW, y + o, a, 1, spill);
                else
                    FM_NAME(fm_rows_fwd_pool)(r0, r0 + row, PW, y + o, a, 0, spill);
            }
        }
    }
}

#endif

/* Pack w (f x c x kh x kw) channel-last for the scattered backward:
 * wt[((fi*kh + k)*kw + l)*cp + ci] = w[fi, ci, k, l], lanes ci >= c zero. */
static void FM_NAME(fastmom_pack_filters_cl)(const FM_T *w, int f, int c, int kh, int kw, int cp,
                                            FM_T *wt)
{
    for (int fi = 0; fi < f; fi++)
        for (int k = 0; k < kh; k++)
            for (int l = 0; l < kw; l++)
                for (int ci = 0; ci < cp; ci++)
                    wt[(((long)fi * kh + k) * kw + l) * cp + ci] =
                        ci < c ? w[(((long)fi * c + ci) * kh + k) * kw + l] : 0;
}

/* dst[0:n] += sum over the list e < ne of g[e] * src[off[e] + 0:n], n = NB forward
 * vectors and, with TAIL, one 32-byte vector more (AVX-512 runs of an odd number of 32
 * bytes), summed in list order in registers: one load a multiply-add and dst read and
 * written once, where updating dst per entry took two loads and a store a
 * multiply-add (the stores were the limit). NB and TAIL are literals at every call. */
static inline __attribute__((always_inline)) void FM_NAME(fm_scatter_sum)(
    FM_T *dst, const FM_T *src, const int *off, const FM_T *g, int ne, const int NB,
    const int TAIL)
{
    typedef FM_NAME(fm_fvec) wvec;
    typedef FM_NAME(fm_vec) vec;
    wvec acc[FM_SCATTER_VB];
    vec tail = (vec){0};
    for (int v = 0; v < NB; v++)
        acc[v] = ((const wvec *)dst)[v];
    if (TAIL)
        tail = *(const vec *)(dst + NB * FM_FWD_LANES);
    for (int e = 0; e < ne; e++) {
        const FM_T *se = src + off[e];
        FM_T ge = g[e];
        for (int v = 0; v < NB; v++)
            acc[v] += ((const wvec *)se)[v] * ge;
        if (TAIL)
            tail += *(const vec *)(se + NB * FM_FWD_LANES) * ge;
    }
    for (int v = 0; v < NB; v++)
        ((wvec *)dst)[v] = acc[v];
    if (TAIL)
        *(vec *)(dst + NB * FM_FWD_LANES) = tail;
}

/* fm_scatter_sum over a run of n32 32-byte vectors, in blocks of at most FM_SCATTER_VB
 * forward vectors (the last one with the odd 32 bytes, if any). */
static inline __attribute__((always_inline)) void FM_NAME(fm_scatter_run)(
    FM_T *dst, const FM_T *src, const int *off, const FM_T *g, int ne, int n32)
{
    int nw = n32 / (FM_FWD_LANES / FM_LANES), tail = n32 % (FM_FWD_LANES / FM_LANES);
    int blocks = nw ? (nw + FM_SCATTER_VB - 1) / FM_SCATTER_VB : tail; /* a tail alone: 1 */
    for (int v0 = 0, b = 0; b < blocks; b++) {
        int nb = (nw - v0) / (blocks - b), t = b == blocks - 1 ? tail : 0; /* even blocks */
        FM_T *d = dst + v0 * FM_FWD_LANES;
        const FM_T *sr = src + v0 * FM_FWD_LANES;
        switch (nb * 2 + t) { /* only the block widths this level uses are compiled */
#if FM_WIDE
#define FM_SCATTER_TAIL(NB_) \
        case (NB_) * 2 + 1: FM_NAME(fm_scatter_sum)(d, sr, off, g, ne, NB_, 1); break;
#else
#define FM_SCATTER_TAIL(NB_) /* no odd 32 bytes */
#endif
#define FM_SCATTER_CASE(NB_) \
        case (NB_) * 2: FM_NAME(fm_scatter_sum)(d, sr, off, g, ne, NB_, 0); break; \
        FM_SCATTER_TAIL(NB_)
        FM_SCATTER_CASE(1) FM_SCATTER_CASE(2) FM_SCATTER_CASE(3) FM_SCATTER_CASE(4)
        FM_SCATTER_CASE(5) FM_SCATTER_CASE(6) FM_SCATTER_CASE(7) FM_SCATTER_CASE(8)
        FM_SCATTER_TAIL(0)
#undef FM_SCATTER_CASE
#undef FM_SCATTER_TAIL
        }
        v0 += nb;
    }
}

/* Where window w of a PW-wide pooled map starts in a channel-last image (wd positions
 * of cp scalars a row). */
static inline long FM_NAME(fm_window_corner)(long w, int PW, int ph, int pw, int wd, int cp)
{
    return (w / PW * ph * wd + w % PW * pw) * cp;
}

/* The backward pass of one image of conv_pool_forward, by scattering each pooling
 * window's gradient from its argmax instead of multiplying the mostly-zero un-pooled
 * map (3 zeros in 4 with 2x2 windows) in two GEMMs.
 *
 * Channels are the vector lanes: x is copied channel-last into xt (h x wd x cp, cp = c
 * rounded up to whole 32-byte vectors, padding zero), so that a window's receptive
 * field row (kw positions x cp channels) is one contiguous run, as are the filters (wt,
 * packed by fastmom_pack_filters_cl) and the weight-gradient partial dwt (same layout,
 * added to). With g = dy * act'(y) for each filter and window, at its argmax (r, s) or,
 * with `ties` (pool_ties="all"), at each position set in its tie mask:
 *     dwt[fi, k, l, :] += g * xt[r + k, s + l, :]     dxt[r + k, s + l, :] += g * wt[fi, k, l, :]
 * The first, per filter, over the list of its windows with g != 0 in window order; the
 * second, per window position, over the list of the filters that chose it, in filter
 * order: each run (fm_scatter_run) summed in registers. db[fi] gets every g (added, in
 * window order). dx (c x h x wd, overwritten) is the channel-first copy of dxt; NULL
 * skips the input gradient (a first layer). A zero g (ReLU's flat side) is skipped: it
 * adds exact zeros for finite inputs. `lists` holds fastmom_conv_scatter_lists scalars. */
static void FM_NAME(fastmom_conv_pool_backward_scatter)(
    const FM_T *x, int c, int h, int wd, const FM_T *wt, int f, int kh, int kw, int ph, int pw,
    int PH, int PW, const FM_T *dy, const FM_T *y, const int *argmax, int act, int ties,
    FM_T *xt, FM_T *dxt, FM_T *lists, FM_T *dwt, FM_T *db, FM_T *dx)
{
    int cp = (c + FM_LANES - 1) / FM_LANES * FM_LANES, run = kw * cp / FM_LANES, ws = ph * pw;
    long plane = (long)h * wd, nwin = (long)PH * PW, taps = (long)kh * kw * cp;
    /* the lists: a filter's windows (input offset, g); every filter's g per window; the
     * window positions' filter lists (wt offset, g), counted then filled */
    FM_T *lg = lists + nwin * ws, *gw = lg + nwin * ws, *eg = gw + f * nwin;
    int *lo = (int *)lists, *eo = (int *)(eg + (long)f * nwin * ws);
    int *cnt = (int *)(eg + 2L * f * nwin * ws); /* ints in scalars' room */
    int aoff[32]; /* a window position's input offset from the window's corner */
    for (int a = 0; a < ws; a++)
        aoff[a] = (a / pw * wd + a % pw) * cp;
    for (long p = 0; p < plane; p++)
        for (int ci = c; ci < cp; ci++)
            xt[p * cp + ci] = 0;
    for (int ci = 0; ci < c; ci++)
        for (long p = 0; p < plane; p++)
            xt[p * cp + ci] = x[ci * plane + p];
    if (dx)
        memset(cnt, 0, (nwin * ws + 1) * sizeof(int));
    for (int fi = 0; fi < f; fi++) {
        FM_T gsum = db[fi];
        int n = 0;
        for (long w = 0; w < nwin; w++) {
            long o = fi * nwin + w;
            FM_T g = dy[o] * FM_NAME(fastmom_dact)(y[o], act);
            gsum += g;
            gw[o] = g;
            if (g == 0)
                continue;
            int corner = (int)FM_NAME(fm_window_corner)(w, PW, ph, pw, wd, cp);
            unsigned pos = ties ? (unsigned)argmax[o] : 1u << argmax[o];
            for (; pos; pos &= pos - 1) {
                int a = __builtin_ctz(pos);
                lo[n] = corner + aoff[a];
                lg[n++] = g;
                if (dx)
                    cnt[w * ws + a + 1]++;
            }
        }
        db[fi] = gsum;
        for (int k = 0; k < kh; k++)
            FM_NAME(fm_scatter_run)(dwt + fi * taps + k * kw * cp, xt + (long)k * wd * cp, lo, lg,
                                    n, run);
    }
    if (!dx)
        return;
    /* the window positions' lists, each in filter order */
    for (long q = 0; q < nwin * ws; q++)
        cnt[q + 1] += cnt[q];
    for (int fi = 0; fi < f; fi++)
        for (long w = 0; w < nwin; w++) {
            long o = fi * nwin + w;
            FM_T g = gw[o];
            if (g == 0)
                continue;
            unsigned pos = ties ? (unsigned)argmax[o] : 1u << argmax[o];
            for (; pos; pos &= pos - 1) {
                int e = cnt[w * ws + __builtin_ctz(pos)]++;
                eo[e] = (int)(fi * taps);
                eg[e] = g;
            }
        }
    /* cnt[q] is now where list q ends (and q + 1 begins) */
    memset(dxt, 0, plane * cp * sizeof(FM_T));
    for (long w = 0, q = 0; w < nwin; w++)
        for (int a = 0; a < ws; a++, q++) {
            int e0 = q ? cnt[q - 1] : 0, ne = cnt[q] - e0;
            if (!ne)
                continue;
            long at = FM_NAME(fm_window_corner)(w, PW, ph, pw, wd, cp) + aoff[a];
            for (int k = 0; k < kh; k++)
                FM_NAME(fm_scatter_run)(dxt + at + (long)k * wd * cp, wt + k * kw * cp, eo + e0,
                                        eg + e0, ne, run);
        }
    for (int ci = 0; ci < c; ci++)
        for (long p = 0; p < plane; p++)
            dx[ci * plane + p] = dxt[p * cp + ci];
}

/* The lanes of p that `mask` selects (the rest zero, nothing else read): a filter row's
 * last, partial vector, which may end where the image buffer ends. */
static inline __attribute__((always_inline)) FM_NAME(fm_vec) FM_NAME(fm_row_load)(
    const FM_T *p, FM_NAME(fm_ivec) mask)
{
#if FM_LANES == 8
    return (FM_NAME(fm_vec))_mm256_maskload_ps(p, (__m256i)mask);
#else
    return (FM_NAME(fm_vec))_mm256_maskload_pd(p, (__m256i)mask);
#endif
}

/* NR filter-row vectors (at x + off[j], all with the same lanes: mask) times the n
 * entries of a list of (input offset ol[e], gradient gl[e]), summed in list order, even
 * and odd entries in two sets of sums (two independent chains per row: one would wait
 * on the multiply-add latency), added to dw[j * stride] at the end. NR is a literal at
 * every call: the sums stay in registers. */
static inline __attribute__((always_inline)) void FM_NAME(fm_rows_tile)(
    const FM_T *x, const long *off, FM_NAME(fm_ivec) mask, const int *ol, const FM_T *gl,
    int n, FM_NAME(fm_vec) *dw, int stride, const int NR)
{
    typedef FM_NAME(fm_vec) vec;
    vec a[FM_ROWS_MAX], b[FM_ROWS_MAX];
    for (int j = 0; j < NR; j++)
        a[j] = b[j] = (vec){0};
    int e = 0;
    for (; e + 1 < n; e += 2) {
        const FM_T *x0 = x + ol[e], *x1 = x + ol[e + 1];
        FM_T g0 = gl[e], g1 = gl[e + 1];
        for (int j = 0; j < NR; j++) {
            a[j] += FM_NAME(fm_row_load)(x0 + off[j], mask) * g0;
            b[j] += FM_NAME(fm_row_load)(x1 + off[j], mask) * g1;
        }
    }
    if (e < n)
        for (int j = 0; j < NR; j++)
            a[j] += FM_NAME(fm_row_load)(x + ol[e] + off[j], mask) * gl[e];
    for (int j = 0; j < NR; j++)
        dw[j * stride] += a[j] + b[j];
}

/* The weight gradient of one image of conv_pool_forward for a first layer (no input
 * gradient) with fewer input channels than a vector has lanes, where the scattered
 * backward above would fill c lanes in FM_LANES (network3's conv1: one channel) and the
 * GEMMs spend 3 multiply-adds in 4 on the un-pooled map's zeros (2x2 windows). Here the
 * lanes run along a filter row instead: for each filter, the windows with
 * g = dy * act'(y) != 0 are listed once (with their argmax, or with `ties` every
 * position in their tie mask, as input offsets), then
 *     dwr[fi, ci, k, l] += sum over the list of g * x[ci, r + k, s + l]
 * with the filter row (l < kw) padded to kwp = whole vectors (lanes past kw hold zeros
 * times g). db[fi] gets the sum of every g. `list` is scratch of 3 * PH*PW*ph*pw
 * scalars. */
static void FM_NAME(fastmom_conv_pool_backward_rows)(
    const FM_T *x, int c, int h, int wd, int f, int kh, int kw, int ph, int pw, int PH, int PW,
    const FM_T *dy, const FM_T *y, const int *argmax, int act, int ties, FM_T *list,
    FM_T *dwr, FM_T *db)
{
    typedef FM_NAME(fm_vec) vec;
    typedef FM_NAME(fm_ivec) ivec;
    int kwv = (kw + FM_LANES - 1) / FM_LANES, rows = c * kh * kwv, ws = ph * pw;
    long plane = (long)h * wd, nwin = (long)PH * PW;
    FM_T *gl = list;
    int *ol = (int *)(list + nwin * ws);
    /* a window position's input offset from the window's corner: no division per entry
     * (a 64-bit division per window cost more than the multiply-adds) */
    int aoff[32];
    for (int a = 0; a < ws; a++)
        aoff[a] = a / pw * wd + a % pw;
    FM_T *gw = list + 2 * nwin * ws; /* a filter's window gradients */
    for (int fi = 0; fi < f; fi++) {
        const FM_T *dyf = dy + fi * nwin, *yf = y + fi * nwin;
        const int *af = argmax + fi * nwin;
        /* g = dy * act'(y) per window, in vectors (GCC left the scalar loop with a
         * branch on ReLU's sign, mispredicted on random data), summed into db in
         * FM_LANES interleaved sums: one chain of additions would take its latency per
         * window */
        vec gs = (vec){0};
        long o = 0;
        for (; o + FM_LANES <= nwin; o += FM_LANES) {
            vec g = *(const vec *)(dyf + o) *
                    (vec)FM_NAME(fm_dact_vec)(*(const FM_NAME(fm_pvec) *)(yf + o), act);
            *(vec *)(gw + o) = g;
            gs += g;
        }
        FM_T gsum = 0;
        for (int l = 0; l < FM_LANES; l++)
            gsum += gs[l];
        for (; o < nwin; o++) {
            gw[o] = dyf[o] * FM_NAME(fastmom_dact)(yf[o], act);
            gsum += gw[o];
        }
        db[fi] += gsum;
        /* the list: each window's argmax (or tied positions) as input offsets, with g;
         * branch-free for the argmax (a ReLU's zeros are data-dependent: a branch on
         * them mispredicts), written always and kept unless g is zero */
        int n = 0;
        o = 0;
        for (int pi = 0; pi < PH; pi++) {
            for (int pj = 0; pj < PW; pj++, o++) {
                FM_T g = gw[o];
                int corner = pi * ph * wd + pj * pw;
                if (!ties) {
                    ol[n] = corner + aoff[af[o]];
                    gl[n] = g;
                    n += g != 0;
                    continue;
                }
                if (g == 0)
                    continue;
                for (unsigned pos = (unsigned)af[o]; pos; pos &= pos - 1) {
                    ol[n] = corner + aoff[__builtin_ctz(pos)];
                    gl[n++] = g;
                }
            }
        }
        vec *dwf = (vec *)(dwr + (long)fi * rows * FM_LANES);
        /* a tile's rows share their vector's place v in the filter row, so one mask
         * register serves them all */
        for (int v = 0; v < kwv; v++) {
            ivec mask;
            for (int l = 0; l < FM_LANES; l++)
                mask[l] = v * FM_LANES + l < kw ? -1 : 0;
            for (int r0 = 0; r0 < c * kh; r0 += FM_ROWS_MAX) { /* r = ci*kh + k */
                int nr = c * kh - r0 < FM_ROWS_MAX ? c * kh - r0 : FM_ROWS_MAX;
                long off[FM_ROWS_MAX];
                for (int j = 0; j < nr; j++)
                    off[j] = (r0 + j) / kh * plane + (long)((r0 + j) % kh) * wd + v * FM_LANES;
                vec *dw = dwf + (long)r0 * kwv + v;
                switch (nr) {
                case 1: FM_NAME(fm_rows_tile)(x, off, mask, ol, gl, n, dw, kwv, 1); break;
                case 2: FM_NAME(fm_rows_tile)(x, off, mask, ol, gl, n, dw, kwv, 2); break;
                case 3: FM_NAME(fm_rows_tile)(x, off, mask, ol, gl, n, dw, kwv, 3); break;
                case 4: FM_NAME(fm_rows_tile)(x, off, mask, ol, gl, n, dw, kwv, 4); break;
                default: FM_NAME(fm_rows_tile)(x, off, mask, ol, gl, n, dw, kwv, FM_ROWS_MAX); break;
                }
            }
        }
    }
}
