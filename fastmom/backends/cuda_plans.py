"""Launch plans of the cuda backend's conv kernels: grid, block, shared memory and
staging sizes, computed on the host before anything is launched.

Every plan rejects a shape CUDA cannot launch, or one whose staging does not fit the
shared memory the kernels use, with a ValueError (so a pass never fails half-way).
:class:`Plans` is a mixin of :class:`fastmom.backends.cuda.Kernels` (it needs only
``self.n_sm``); the plans are pure functions of the shapes, so tests and
``bench/gpu_model.py`` call them without a device.
"""
from __future__ import annotations

import functools

# conv.cu's fm:: constants: filters per thread of fm_conv_pool_fwd, window positions per
# pass of its general instance; the most threads a block of it has (__launch_bounds__)
FWD_FILTERS, FWD_POSITIONS, FWD_THREADS = 4, 4, 512
#: the compiled (filter size, pool size) instances of fm_conv_pool_fwd besides the
#: general (0, 0): network3's 5x5 filters on 2x2 pools
FWD_INSTANCES = ((5, 2),)
# conv_backward.cu's fm:: constants: filters per thread, lanes per unit and values per
# reduction round of fm_conv_wgrad; input channels per thread of fm_conv_dgrad
WG_FILTERS, WG_LANES, WG_RED, DG_CHANNELS = 4, 32, 8, 8
SHARED_LIMIT = 48 * 1024
#: CUDA's grid limits (every compute capability fastmom supports): gridDim.x, .y, .z
GRID_LIMITS = (2**31 - 1, 65535, 65535)


def _ceil_div(a, b):
    return -(-a // b)


def grid(kernel, x, y=1, z=1, what=("elements", "rows", "images")):
    """The launch grid ``(x, y, z)`` of ``kernel``, checked against :data:`GRID_LIMITS`.

    Every launch shape is built here, before the primitive launches anything, so an
    oversized problem (e.g. a ``mini_batch_size`` over 65535 on the conv kernels,
    whose gridDim.z is the batch) is a ValueError naming the limit instead of a
    launch failure half-way through a pass.

    Parameters
    ----------
    what : tuple of str
        What each grid dimension counts, for the message.
    """
    dims = tuple(int(v) for v in (x, y, z))
    for axis, (v, limit, name) in enumerate(zip(dims, GRID_LIMITS, what)):
        if not 1 <= v <= limit:
            raise ValueError(f"{kernel}: gridDim.{'xyz'[axis]} would be {v} ({name}), outside CUDA's "
                             f"limit of 1..{limit}; split the problem (e.g. a smaller mini_batch_size)")
    return dims



def _splits(n, most):
    """The distinct tile sizes ceil(n / m) of at most ``most`` (balanced splits of n)."""
    sizes, m = set(), _ceil_div(n, max(1, most))
    while m <= n:
        sizes.add(_ceil_div(n, m))
        m = max(m + 1, _ceil_div(n, _ceil_div(n, m) - 1)) if _ceil_div(n, m) > 1 else n + 1
    return sorted(sizes)


#: fwd_tiling's cost model, in instructions: per staged element (index arithmetic with
#: divisions, bounds test, global load, shared store) and per FMA of the hot loop (the
#: SASS lint's 1.3 for the 5x5/2x2 instance)
FWD_STAGE_INSTR, FWD_FMA_INSTR = 16, 1.3


def fwd_store_efficiency(PH, PW, tph, tpw, itemsize=4):
    """The share of the touched 32-byte sectors' bytes that fm_conv_pool_fwd's y and
    argmax stores use with tph x tpw tiles: a tile's outputs of one filter are one run
    per row, or one run for whole rows (a filter's plane taken as 32-byte aligned)."""
    used = sectors = 0
    for i0 in range(0, PH, tph):
        for j0 in range(0, PW, tpw):
            cells = [i * PW + j for i in range(i0, min(i0 + tph, PH)) for j in range(j0, min(j0 + tpw, PW))]
            used += len(cells) * itemsize
            sectors += len({e * itemsize // 32 for e in cells})
    return used / (32 * sectors)


def fwd_filter_load_efficiency(f, c, kk, gb, threads, itemsize=4):
    """The share of the touched sectors' bytes that fm_conv_pool_fwd's filter staging
    reads, every channel staged at once: load v of a pass reads, over lanes at
    consecutive (pack, tap), the run of the block's filters u + v * U (u < U packs)."""
    V = 16 // itemsize
    U = gb * FWD_FILTERS // V
    used = sectors = 0
    for fb0 in range(0, f, gb * FWD_FILTERS):
        for v in range(V):
            for w0 in (p + w for p in range(0, U * c * kk, threads) for w in range(0, threads, 32)):
                lanes = range(w0, min(w0 + 32, U * c * kk, (w0 // threads + 1) * threads))
                cells = [(fb0 + v * U + e // (c * kk)) * c * kk + e % (c * kk) for e in lanes
                         if fb0 + v * U + e // (c * kk) < f]
                used += len(cells) * itemsize
                sectors += len({e * itemsize // 32 for e in cells})
    return used / (32 * sectors) if sectors else 1.0


@functools.lru_cache(maxsize=512)
def fwd_tiling(n, PH, PW, groups, n_sm, ph, pw, kh, kw, f, c):
    """The candidate tilings of fm_conv_pool_fwd that rank first: ``(tph, tpw, gb)``, a
    tile of tph x tpw pooled outputs and gb filter groups a block (one thread each).
    Rank: the product of the share of launched lanes that do work (whole warps, ragged
    tiles and filter blocks counted as waste), the share of the n_sm SMs the grid fills
    (bench/gpu_model.py's time is the work over the SMs a grid fills: at small batches
    smaller blocks win) and the share of a block's instructions that are the hot loop's
    rather than staging (the input patch and the filters are staged per channel for the
    whole block: larger blocks stage less per FMA), and the share of the output stores'
    sectors used (:func:`fwd_store_efficiency`: one-row tiles of a narrow plane waste a
    quarter). Tilings whose output stores and filter loads
    (:func:`fwd_filter_load_efficiency`) reach issue 13's 80% coalescing rank above those
    that do not. :func:`fwd_plan` breaks ties."""
    best, tied = (False, -1.0), []
    positions = max(ph * pw, FWD_POSITIONS)
    # whole pooled rows when they fit a warp: each filter's outputs of a block are then
    # one contiguous run of y and argmax (coalesced stores)
    for tpw in [PW] if PW <= 32 else _splits(PW, 32):
        for tph in _splits(PH, FWD_THREADS // tpw):
            stores = fwd_store_efficiency(PH, PW, tph, tpw)
            for gb in _splits(groups, FWD_THREADS // (tph * tpw)):
                threads = tph * tpw * gb
                blocks = _ceil_div(PH, tph) * _ceil_div(PW, tpw) * _ceil_div(groups, gb)
                use = PH * PW * groups / (blocks * _ceil_div(threads, 32) * 32)
                staged = (tph * ph + kh - 1) * (tpw * pw + kw - 1) + gb * FWD_FILTERS * kh * kw  # a channel
                hot = threads * positions * FWD_FILTERS * kh * kw * FWD_FMA_INSTR
                coalesced = min(stores, fwd_filter_load_efficiency(f, c, kh * kw, gb, threads)) >= 0.8
                score = (coalesced, round(use * min(1.0, blocks * n / n_sm) * hot / (hot + staged * FWD_STAGE_INSTR)
                                          * stores, 9))
                if score > best:
                    best, tied = score, []
                if score == best:
                    tied.append((tph, tpw, gb))
    return tuple(tied)


def bank_ways(words_per_lane):
    """Shared-memory wavefronts of one warp access: the most distinct 4-byte words any
    of the 32 banks must deliver (a broadcast is free), as the emulation counts them."""
    per_bank = {}
    for w in set(words_per_lane):
        per_bank[w % 32] = per_bank.get(w % 32, 0) + 1
    return max(per_bank.values(), default=0)


@functools.lru_cache(maxsize=512)
def fwd_patch_stride(tph, tpw, gb, ph, pw, least, phased, itemsize):
    """``(stride, ways)``: the patch row stride (elements, at least ``least``) of
    fm_conv_pool_fwd giving the fewest wavefronts over the block's warps for one
    hot-loop input load (lane of window (wi, wj) at row wi*ph, column wj (phased layout)
    or wj*pw), and those wavefronts per warp."""
    nwin, threads = tph * tpw, tph * tpw * gb
    words = itemsize // 4 or 1

    def cost(stride):
        total = 0
        for w0 in range(0, threads, 32):
            lanes = []
            for t in range(w0, min(w0 + 32, threads)):
                wi, wj = t % nwin // tpw, t % tpw
                e = wi * ph * stride + (wj if phased else wj * pw)
                lanes += [e * words + u for u in range(words)]
            total += bank_ways(lanes)
        return total

    stride = min(range(least, least + 32), key=lambda s: (cost(s), s))
    return stride, cost(stride) / _ceil_div(threads, 32)


@functools.lru_cache(maxsize=256)
def wgrad_layout(h, PH, PW, ph, pw, least, nb_max, entries, itemsize):
    """``(xstride, istride, sstride)``: the row, image and sub-plane strides (elements) of
    fm_conv_wgrad's planes phased by the ph x pw pool (see its comment in
    ``conv_backward.cu``). A lane's bank follows from its entry's window (P, Q) of image
    b: b * istride + P * xstride + Q * pw, the sub-plane stride being a multiple of 32
    elements. Rows of at least ``least`` elements; of the next 32 row and image strides,
    those giving the fewest wavefronts over the warps of a stage of nb_max images, whose
    entries (``entries`` per window) the warps take 32 at a time."""
    rows = _ceil_div(h, ph)
    words = itemsize // 4 or 1
    lanes = [(i // (PH * PW * entries), i // entries % (PH * PW)) for i in range(nb_max * PH * PW * entries)]
    warps = [lanes[w0:w0 + 32] for w0 in range(0, len(lanes), 32)]

    def cost(xstride, istride):
        return sum(bank_ways([(b * istride + win // PW * xstride + win % PW * pw) * words + u
                              for b, win in warp for u in range(words)]) for warp in warps)

    best = None
    for xstride in range(least, least + 32):
        for istride in range(rows * xstride, rows * xstride + (32 if nb_max > 1 else 1)):
            key = (cost(xstride, istride), istride, xstride)
            best = key if best is None or key < best else best
    _, istride, xstride = best
    return xstride, istride, _ceil_div(nb_max * istride, 32) * 32


@functools.lru_cache(maxsize=256)
def fwd_plan(n_sm, n, c, h, wd, f, kh, kw, PH, PW, ph, pw, itemsize):
    """Launch shape of fm_conv_pool_fwd on ``n_sm`` SMs (see its comment in ``conv.cu``): the
    instance (k, p) (``(5, 2)`` for 5x5 filters on 2x2 pools, else the general
    ``(0, 0)``), the tile (:func:`fwd_tiling`), the channels staged at a time (cc:
    the patch and filters within half the shared memory, so two blocks fit an SM,
    or within all of it if one channel needs more), the patch row stride
    (:func:`fwd_patch_stride`) and the filter slot stride (an odd number of 16-byte
    units). FMA slots issued: ``fma_slots`` (idle lanes and a general pass's
    repeated positions included)."""
    inst = (kh, ph) if kh == kw and ph == pw and (kh, ph) in FWD_INSTANCES else (0, 0)
    groups, phased = _ceil_div(f, FWD_FILTERS), inst[1] > 0
    tilings = []
    for tph, tpw, gb in fwd_tiling(n, PH, PW, groups, n_sm, ph, pw, kh, kw, f, c):
        pcol = tpw * pw + kw - 1
        stride, ways = fwd_patch_stride(tph, tpw, gb, ph, pw, pw * _ceil_div(pcol, pw) if phased else pcol,
                                        phased, itemsize)
        # the fewest bank conflicts, then the largest block
        tilings.append(((ways, -tph * tpw * gb), (tph, tpw, gb, stride)))
    tph, tpw, gb, xstride = min(tilings)[1]
    prow = tph * ph + kh - 1
    units = gb * FWD_FILTERS * itemsize // 16
    wstride = (units + 1 - units % 2) * 16 // itemsize
    patch, filt = prow * xstride * itemsize, kh * kw * wstride * itemsize
    cc = min(c, (SHARED_LIMIT // 2 - 16) // (patch + filt)) or min(c, (SHARED_LIMIT - 16) // (patch + filt))
    if cc < 1:
        raise ValueError(f"filter {kh}x{kw} with pool {ph}x{pw}: one channel of the conv forward's staging needs "
                         f"{patch + filt} bytes of shared memory, over the {SHARED_LIMIT} the cuda backend uses")
    cc = _ceil_div(c, _ceil_div(c, cc))  # balanced stages
    shared = _ceil_div(cc * patch, 16) * 16 + cc * filt
    threads = tph * tpw * gb
    g = grid("fm_conv_pool_fwd", _ceil_div(PH, tph) * _ceil_div(PW, tpw), _ceil_div(groups, gb), n,
             ("output tiles", "filter blocks", "images"))
    positions = ph * pw if phased else _ceil_div(ph * pw, FWD_POSITIONS) * FWD_POSITIONS
    fma_slots = g[0] * g[1] * g[2] * _ceil_div(threads, 32) * 32 * positions * FWD_FILTERS * c * kh * kw
    return dict(grid=g, block=(threads,), shared=shared, k=inst, tph=tph, tpw=tpw, gb=gb, cc=cc,
                xstride=xstride, wstride=wstride, fma_slots=fma_slots)


class Plans:
    """The conv kernels' launch plans (a mixin: needs ``self.n_sm``)."""

    def fwd_plan(self, n, c, h, wd, f, kh, kw, PH, PW, ph, pw, itemsize):
        """:func:`fwd_plan` on this device (computed once per shape; a copy)."""
        return dict(fwd_plan(self.n_sm, n, c, h, wd, f, kh, kw, PH, PW, ph, pw, itemsize))

    def wgrad_plan(self, n, c, h, wd, f, kh, kw, PH, PW, ph, pw, entries, itemsize, k):
        """Launch shape and staging sizes of fm_conv_wgrad (see its comment in
        ``conv_backward.cu``), and of fm_conv_wgrad_finalize (``final_*``): units of
        WG_FILTERS filters x a row chunk of taps (the whole row of a compiled k x k
        filter, else chunks of 4), whole filter rows a block, at most 16 warps; the batch
        split so that about 4 blocks per SM share the sums; the phased planes of up to
        about 128 entries' images (:func:`wgrad_layout`), within half the shared memory;
        their entries in chunks of whole warps."""
        tw = k or 4
        chunks = _ceil_div(kw, tw)                # warps per filter row
        if chunks > 16:
            raise ValueError(f"the cuda backend's weight gradient takes filters up to {16 * tw} taps wide, got {kw}")
        rows = min(kh, 16 // chunks)              # filter rows a block
        upb = rows * chunks                       # warps a filter group in a block
        nfg = _ceil_div(f, WG_FILTERS)
        groups = _ceil_div(nfg, _ceil_div(nfg, max(1, 16 // upb)))  # filter groups a block, balanced
        blocks = _ceil_div(nfg, groups) * c * _ceil_div(kh, rows)
        nsplit = max(1, min(n, _ceil_div(4 * self.n_sm, blocks)))
        per_image = PH * PW * entries
        entry = 2 * itemsize                      # fm::PoolEntry<T>: the value and an int, padded
        # phased planes if a warp's worth of entries fits beside them, else one plain plane
        for phased in (True, False) if (ph, pw) != (1, 1) else (False,):
            lph, lpw = (ph, pw) if phased else (1, 1)
            least = max(wd, PW * pw - lpw + chunks * tw)  # row elements: the plane, and any overhang
            nb_max = max(1, min(_ceil_div(n, nsplit), _ceil_div(128, per_image)))
            while True:
                if phased:
                    xstride, istride, sstride = wgrad_layout(h, PH, PW, ph, pw, least, nb_max, entries, itemsize)
                else:
                    xstride, istride, sstride = least, h * least, _ceil_div(nb_max * h * least, 32) * 32
                planes = _ceil_div((2 * lph - 1) * lpw * sstride * itemsize, 16) * 16
                if nb_max == 1 or planes <= SHARED_LIMIT // 2:
                    break
                nb_max -= 1
            ec = min(nb_max * per_image, (SHARED_LIMIT - planes) // (groups * WG_FILTERS * entry))
            if ec >= min(32, nb_max * per_image):
                break
        if ec < 1:
            raise ValueError(f"the cuda backend's weight gradient stages whole {h}x{wd} input planes in shared "
                             f"memory; one needs {planes} bytes, over the {SHARED_LIMIT} it uses")
        if 32 <= ec < nb_max * per_image:
            ec -= ec % 32                         # chunks of whole warps: each warp's entries as the layout assumes
        warps = groups * upb
        epilogue = (warps * WG_RED * (WG_LANES + 1) + groups * WG_FILTERS * (rows * kw + 1)) * itemsize
        shared = max(planes + groups * WG_FILTERS * ec * entry, epilogue)
        g = grid("fm_conv_wgrad", blocks, nsplit, 1, ("filter-channel-row blocks", "batch slices", ""))
        # the finalize's tiles: every channel if a filter's fit in a quarter of the shared memory
        per_filter = kh * kw * itemsize
        ct = min(c, max(1, SHARED_LIMIT // 4 // per_filter))
        ft = min(f, 8, max(1, SHARED_LIMIT // 4 // (ct * per_filter)))
        if ft * ct * per_filter > SHARED_LIMIT:
            raise ValueError(f"filter {kh}x{kw}: one tap row of the weight gradient's finalize needs "
                             f"{per_filter} bytes of shared memory, over the {SHARED_LIMIT} the cuda backend uses")
        final = grid("fm_conv_wgrad_finalize", _ceil_div(f, ft), _ceil_div(c, ct), 1,
                     ("filter tiles", "channel tiles", ""))
        return dict(grid=g, block=(WG_LANES * warps,), shared=shared, nsplit=nsplit, groups=groups, upb=upb,
                    nb_max=nb_max, ec=ec, phased=int(phased), xstride=xstride, istride=istride, sstride=sstride,
                    final_grid=final, final_block=(256,), final_shared=ft * ct * per_filter, ft=ft, ct=ct)

    def dgrad_plan(self, n, c, h, wd, f, kh, kw, PH, PW, ph, pw, entries, itemsize):
        """Launch shape of fm_conv_dgrad: tiles of up to 256 pixels (rows of up to 32),
        DG_CHANNELS channels a block, up to 16 filters staged at a time."""
        tw = min(wd, 32)
        th = min(h, max(1, 256 // tw))
        # the most windows that can reach a tile, and their entries
        nent = min(PH, (th + kh - 2) // ph + 2) * min(PW, (tw + kw - 2) // pw + 2) * entries
        weights = kh * kw * (DG_CHANNELS + 1) * itemsize
        fq = min(f, 16, (SHARED_LIMIT - 16) // (weights + nent * 2 * itemsize))
        if fq < 1:
            raise ValueError(f"filter {kh}x{kw} with pool {ph}x{pw}: one filter's input-gradient stage is over "
                             f"the {SHARED_LIMIT} bytes of shared memory the cuda backend uses")
        shared = _ceil_div(fq * weights, 16) * 16 + fq * nent * 2 * itemsize
        g = grid("fm_conv_dgrad", _ceil_div(h, th) * _ceil_div(wd, tw), _ceil_div(c, DG_CHANNELS), n,
                 ("pixel tiles", "channel groups", "images"))
        return dict(grid=g, block=(th * tw,), shared=shared, th=th, tw=tw, fq=fq)
