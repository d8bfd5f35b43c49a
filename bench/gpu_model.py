"""A model of the cuda backend's time on an H100 SXM, built from what is known without
a GPU: FLOPs, the emulation's memory counts, launches, and the SASS lint.

Run ``python -m bench.gpu_model [--batches 10 64 256] [--n-sm 132] [--counts FILE]``:

1. ``emulated_step(batch)`` runs one training step of network3's conv net (conv1
   (N,1,28,28)x(20,1,5,5) pool 2x2, conv2 (N,20,12,12)x(40,20,5,5) pool 2x2, dense
   640->100 and 100->10, softmax, momentum over 85,670 parameters) through the cuda
   backend's own host code on the emulation build with memory statistics
   (``cuda_emulation.kernels(memstats=True)``), at the launch shapes of a 132-SM device.
   Per kernel: global bytes asked for against 32-byte sectors touched (coalescing),
   shared-memory wavefronts against warp accesses (bank conflicts), the distinct
   global sectors (the launch's footprint), FMAs and launches. The counts are stored in
   ``bench/gpu_model_counts.json`` (emulated batches 10, 64, 132, 148, 164: about 0.7 s
   per image on one core, ``--emulate 10 64 132 148 164`` refreshes them). Batches 256
   and 1024 are extrapolated linearly from the two largest (every count is an affine
   function of the batch where the grid shapes are, or grow linearly with it: the conv
   forward's tiling is chosen per batch until its grid fills the 132 SMs, and is the
   same from 132 images on (``fastmom/backends/cuda_plans.py``); conv2's weight-gradient
   split is 7 slices from batch 7 on, conv1's is one slice per image up to 264 images;
   extrapolated from 132 and 148, the emulated 164 comes out within the 3% that
   ``tests/backends/test_cuda_memory.py`` checks; warp-access counts of grid-stride
   kernels step with whole passes). At 1024, conv1's split stops at 264 slices, so the
   extrapolation overstates its weight-gradient epilogue and finalize (a few per cent
   of that kernel's counts).
   The dense layers take the cuda backend's regime for the batch
   (``fastmom/backends/cuda_dense.py``): at batch 10 (at most 32 rows) our small-batch
   kernels, emulated and counted like the conv kernels; from 64 on the cuBLAS products,
   not emulated and modeled by :func:`library_calls`.
2. ``model(...)`` turns the counts into a time per kernel and per step (a MODEL, not a
   measurement); printed as Markdown. ``bench/gpu_all.sh`` prints it beside the
   measured table on a GPU machine.

The hardware figures (NVIDIA H100 Tensor Core GPU datasheet, SXM5): 132 SMs, boost clock
1.755 GHz (the datasheet's 67 TFLOP/s FP32 = 132 SMs x 128 FP32 lanes x 2 x 1.98 GHz
max boost; we take the lower sustained 1.755 GHz: 59 TFLOP/s), HBM3 3.35 TB/s peak,
3.0 TB/s taken as achievable (issue 13). Per SM per clock: 4 warp schedulers issuing one
warp instruction each (the datasheet's SM); the L1/shared-memory unit delivering 128
bytes, i.e. one shared-memory wavefront (32 banks x 4 bytes) or 4 global sectors that
hit L1 (an assumption: the shared-memory bank width applied to L1 hits). DRAM traffic
is the launch's footprint (distinct sectors: every byte read or written once, the
rest hitting L1/L2, which the emulation does not model); every sector request is
charged to the L1/shared unit. Assumptions (not datasheet figures): 4 us per kernel
launch from Python through CuPy (host-bound: the launch rate of a Python loop, above
the GPU's ~2 us back-to-back gap), 8 us per cuBLAS call (Python + cuBLAS heuristics).
A kernel's time is the largest of issue, L1/shared, and DRAM time over the SMs its grid
fills, and at least the launch time; no latency or occupancy term, so small grids are
modeled optimistically.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

BATCHES = (10, 64, 256, 1024)
EMULATED = (10, 64, 256)

# -- hardware (see the module docstring for the sources) ---------------------------------
H100 = dict(sms=132, clock_hz=1.755e9, fp32_lanes=128, schedulers=4, hbm_bytes_s=3.0e12, l1_bytes_clock=128,
            launch_s=4e-6, library_call_s=8e-6)

CONV_NET = (  # (name, C, H, W, F, K, pool): network3's conv net on 28x28 images
    ("conv1", 1, 28, 28, 20, 5, 2),
    ("conv2", 20, 12, 12, 40, 5, 2),
)
DENSE = (("fc", 640, 100), ("softmax", 100, 10))
N_PARAMS = 85_670


def conv_shapes(n):
    return [(name, (n, c, h, w), (f, c, k, k), pool) for name, c, h, w, f, k, pool in CONV_NET]


def emulated_step(n, n_sm=132, seed=0):
    """One training step at batch ``n`` on the emulation with memory statistics.

    Returns ``[(primitive, LaunchMemory), ...]`` in launch order (above 32 rows the
    cuBLAS products are NumPy here and are not in the list, see :func:`library_calls`;
    at most 32 the dense layers are our kernels and are).
    """
    from fastmom.backends import cuda_emulation as ce

    k = ce.kernels(n_sm=n_sm, memstats=True)
    emu = k.emulator
    rng = np.random.default_rng(seed)
    f32 = np.float32
    log = []

    def tagged(label, fn, *args):
        start = len(emu.memory_log)
        fn(*args)
        log.extend((label, m) for m in emu.memory_log[start:])
        del emu.memory_log[:]

    params = rng.standard_normal(N_PARAMS).astype(f32) * f32(0.05)
    grads = np.zeros_like(params)
    vel = np.zeros_like(params)
    views, at = {}, 0
    for name, _x, wshape, _pool in conv_shapes(n):
        size = int(np.prod(wshape))
        views[name] = (params[at:at + size].reshape(wshape), params[at + size:at + size + wshape[0]],
                       grads[at:at + size].reshape(wshape), grads[at + size:at + size + wshape[0]])
        at += size + wshape[0]
    for name, i, o in DENSE:
        views[name] = (params[at:at + i * o].reshape(i, o), params[at + i * o:at + i * o + o],
                       grads[at:at + i * o].reshape(i, o), grads[at + i * o:at + i * o + o])
        at += i * o + o
    assert at == N_PARAMS

    x = rng.random((n, 1, 28, 28), dtype=f32)
    labels = rng.integers(0, 10, n)
    acts, argmaxes = [x], []
    for name, xs, ws, pool in conv_shapes(n):
        oh = xs[2] - ws[2] + 1
        y = np.empty((n, ws[0], oh // pool, oh // pool), f32)
        am = np.empty(y.shape, np.int32)
        w, b, _, _ = views[name]
        tagged(f"{name} forward", k.conv_pool_forward, acts[-1], w, b, (pool, pool), "relu", y, am)
        acts.append(y)
        argmaxes.append(am)
    h = acts[-1].reshape(n, -1)
    w, b, _, _ = views["fc"]
    a_fc = np.empty((n, 100), f32)
    tagged("fc forward", k.dense_forward, h, w, b, "relu", a_fc)
    w, b, _, _ = views["softmax"]
    z = np.empty((n, 10), f32)
    tagged("softmax forward", k.dense_forward, a_fc, w, b, "linear", z)
    probs = np.empty_like(z)
    tagged("softmax forward", k.softmax_nll_forward, z, labels, probs)

    dz = np.empty_like(z)
    tagged("softmax backward", k.softmax_nll_backward, probs, labels, dz)
    w, b, dw, db = views["softmax"]
    d_fc = np.empty_like(a_fc)
    tagged("softmax backward", k.dense_backward, a_fc, w, z, dz, "linear", dw, db, d_fc)
    w, b, dw, db = views["fc"]
    d_h = np.empty_like(h)
    tagged("fc backward", k.dense_backward, h, w, a_fc, d_fc, "relu", dw, db, d_h)
    dy = d_h.reshape(acts[2].shape)
    for li in (1, 0):
        name, xs, ws, pool = conv_shapes(n)[li]
        w, b, dw, db = views[name]
        dx = np.empty_like(acts[li]) if li > 0 else None
        tagged(f"{name} backward", k.conv_pool_backward, acts[li], w, acts[li + 1], argmaxes[li], dy, (pool, pool),
               "relu", dw, db, dx)
        dy = dx
    tagged("momentum", k.momentum_step, params, grads, vel, 0.03, 0.9, False, 0.0, N_PARAMS)
    return log


def step_counts(n, n_sm=132):
    """The memory counts of one emulated step at batch ``n``, JSON-able: one entry per
    launch with its sites (``where`` = source line)."""
    out = []
    for label, m in emulated_step(n, n_sm):
        out.append({"primitive": label, "kernel": m.expr.split("<")[0], "grid": list(m.grid),
                    "block": list(m.block), "footprint_sectors": m.footprint_sectors,
                    "sites": [{f: getattr(s, f) for f in ("where", "kind", "warp_accesses", "lane_accesses", "bytes",
                                                          "distinct_bytes", "sectors", "wavefronts")}
                              for s in m.sites]})
    return out


# -- from counts to a table and a model ---------------------------------------------------

#: the conv kernels' targets (issue 13): main global accesses at least 80% coalesced, hot
#: shared loads at most 2-way conflicted
COALESCED_TARGET, WAYS_TARGET = 0.80, 2.0
MAIN_SHARE = 0.10   # a site with this share of a kernel's sectors (shared accesses) is a main (hot) one
FMA_KERNELS = ("fm_conv_pool_fwd", "fm_conv_dgrad", "fm_conv_wgrad", "fm_dense_small", "fm_dense_wgrad_small")
INSTR_PER_MEMORY_OP = 8  # assumption for loops the lint has no FMA loop for: index math per access


def extrapolate(a, b, na, nb, n):
    """Counts at batch ``n`` from the counts at ``na`` and ``nb`` (same launches): every
    number linear in the batch. The sites are matched by position (same kernels, same
    launch order and source lines at any batch of the same regime)."""
    out = []
    for la, lb in zip(a, b):
        assert la["kernel"] == lb["kernel"] and len(la["sites"]) == len(lb["sites"]), (la["kernel"], lb["kernel"])

        def lin(u, v):
            return max(0, round(u + (v - u) * (n - na) / (nb - na)))

        e = dict(lb, grid=[lin(u, v) for u, v in zip(la["grid"], lb["grid"])],
                 footprint_sectors=lin(la["footprint_sectors"], lb["footprint_sectors"]), sites=[])
        for sa, sb in zip(la["sites"], lb["sites"]):
            assert (sa["where"], sa["kind"]) == (sb["where"], sb["kind"]), (la["kernel"], sa["where"], sb["where"])
            e["sites"].append({k: (lin(sa[k], sb[k]) if isinstance(sa[k], int) else sb[k]) for k in sa})
        out.append(e)
    return out


def memory_rows(counts):
    """One row per (primitive, kernel launch): coalescing and bank conflicts."""
    rows = []
    for c in counts:
        g = [s for s in c["sites"] if s["kind"] == "global"]
        sh = [s for s in c["sites"] if s["kind"] == "shared"]
        sectors = sum(s["sectors"] for s in g)
        eff = sum(s["distinct_bytes"] for s in g) / (32 * sectors) if sectors else 1.0
        main = [s for s in g if s["sectors"] >= MAIN_SHARE * sectors]
        worst = min(main, key=lambda s: s["distinct_bytes"] / (32 * s["sectors"]))
        worst_eff = worst["distinct_bytes"] / (32 * worst["sectors"])
        row = {"primitive": c["primitive"], "kernel": c["kernel"], "grid": c["grid"], "block": c["block"],
               "global_sectors": sectors, "global_efficiency": eff, "main_worst_efficiency": worst_eff,
               "main_worst_site": worst["where"], "footprint_sectors": c["footprint_sectors"],
               "shared_accesses": sum(s["warp_accesses"] for s in sh),
               "shared_wavefronts": sum(s["wavefronts"] for s in sh)}
        if sh:
            accesses = sum(s["warp_accesses"] for s in sh)
            hot = max((s for s in sh if s["warp_accesses"] >= MAIN_SHARE * accesses),
                      key=lambda s: s["wavefronts"] / s["warp_accesses"])
            row["hot_shared_site"] = hot["where"]
            row["hot_shared_ways"] = hot["wavefronts"] / hot["warp_accesses"]
            worst = max(sh, key=lambda s: s["wavefronts"] / s["warp_accesses"])
            row["worst_shared_site"] = worst["where"]
            row["worst_shared_ways"] = worst["wavefronts"] / worst["warp_accesses"]
        if c["kernel"].startswith("fm_conv"):
            ok = worst_eff >= COALESCED_TARGET and row.get("hot_shared_ways", 1.0) <= WAYS_TARGET
            row["verdict"] = "pass" if ok else "FAIL"
        rows.append(row)
    return rows


def _dgrad_candidates(h, w, k, pool, ph_count, pw_count):
    """Entries fm_conv_dgrad visits for one filter over an h x w input plane (pool_ties
    "first"): per pixel, the windows whose rows and columns can reach it."""
    def reach(size, n_pools):
        return [max(0, min(n_pools - 1, i // pool) - max(0, (i - k + 1) // pool) + 1) for i in range(size)]
    return sum(reach(h, ph_count)) * sum(reach(w, pw_count))


def _dense_fmas(kernel, n, layer, direction):
    """FMA slots of the small-batch dense kernels (``fastmom/backends/cuda_dense.py``):
    every lane of a block does R (the rows' instance) per reduction step of its whole
    32-step stages, padded rows and ragged tiles included."""
    from fastmom.backends import cuda_dense as cd

    _, i, o = next(d for d in DENSE if d[0] == layer)
    r = cd.DENSE_ROW_INSTANCES[[n <= v for v in cd.DENSE_ROW_INSTANCES].index(True)]
    if kernel == "fm_dense_wgrad_small":  # dw (i, o): 32 columns a block, 32 rows a stage
        return -(-o // 32) * 32 * -(-i // cd.DS_TILE) * cd.DS_TILE * r
    nred, nout = (i, o) if direction == "forward" else (o, i)  # backward: dx = dz @ w.T
    return -(-nout // cd.DS_TILE) * 32 * -(-nred // cd.DS_TILE) * cd.DS_TILE * r


def fmas(kernel, n, primitive):
    """FMA slots a conv compute kernel issues for network3's net at batch ``n`` (lanes
    that a bounds test or padding idles count: they take issue slots too)."""
    from fastmom.backends import cuda

    name = primitive.split()[0]
    if kernel.startswith("fm_dense"):
        return _dense_fmas(kernel, n, name, primitive.split()[1])
    _, c, h, w, f, k, pool = next(s for s in CONV_NET if s[0] == name)
    oh, ow = h - k + 1, w - k + 1
    ph, pw = oh // pool, ow // pool
    if kernel == "fm_conv_pool_fwd":  # every launched lane of the plan: idle lanes and filter slots too
        return cuda.Kernels(np, None, None, H100["sms"]).fwd_plan(n, c, h, w, f, k, k, ph, pw, pool, pool,
                                                                  4)["fma_slots"]
    if kernel == "fm_conv_wgrad":  # one entry per pooled output, for whole filter groups
        plan = cuda.Kernels(np, None, None, H100["sms"]).wgrad_plan(n, c, h, w, f, k, k, ph, pw, pool, pool, 1, 4, 5)
        slots = -(-f // (plan["groups"] * cuda.WG_FILTERS)) * plan["groups"] * cuda.WG_FILTERS
        return n * slots * c * k * k * ph * pw
    # fm_conv_dgrad: DG_CHANNELS FMAs per visited entry, channels padded to groups of 8
    cpad = -(-c // cuda.DG_CHANNELS) * cuda.DG_CHANNELS
    return n * cpad * f * _dgrad_candidates(h, w, k, pool, ph, pw)


def model(counts, n, sass=None, hw=H100):
    """Modeled seconds per launch (a MODEL): max(issue, L1/shared wavefronts and sectors,
    DRAM footprint) on the SMs the grid can fill, at least the host's launch time."""
    sass = SASS_SNAPSHOT if sass is None else sass
    out = []
    for c in counts:
        blocks = int(np.prod(c["grid"]))
        sms = min(hw["sms"], blocks)
        per_clock = sms * hw["clock_hz"]
        g = [s for s in c["sites"] if s["kind"] == "global"]
        sh = [s for s in c["sites"] if s["kind"] == "shared"]
        loop = sass.get(c["kernel"])
        if c["kernel"] in FMA_KERNELS and loop:
            instr = fmas(c["kernel"], n, c["primitive"]) / 32 * loop[0] / loop[1]
        elif loop:  # one hottest-loop iteration per element of its busiest access site
            instr = max(s["warp_accesses"] for s in c["sites"]) * loop[0]
        else:
            instr = INSTR_PER_MEMORY_OP * sum(s["warp_accesses"] for s in c["sites"])
        lsu = sum(s["wavefronts"] for s in sh) * 128 + 32 * sum(s["sectors"] for s in g)
        parts = {"issue": instr / (hw["schedulers"] * per_clock),
                 "L1/shared": lsu / hw["l1_bytes_clock"] / per_clock,
                 "DRAM": 32 * c["footprint_sectors"] / hw["hbm_bytes_s"]}
        bound = max(parts, key=parts.get)
        gpu = parts[bound]
        out.append({"primitive": c["primitive"], "kernel": c["kernel"], "gpu_s": gpu,
                    "bound": bound if gpu > hw["launch_s"] else "launch", "s": max(gpu, hw["launch_s"])})
    return out


def library_calls(n, hw=H100):
    """The cuBLAS products of a step (not emulated): (label, seconds) each, from their
    FLOPs at the FP32 peak, their bytes at HBM speed, or the per-call time. None in the
    small-batch regime (at most 32 rows: our own kernels, emulated and counted)."""
    from fastmom.backends import cuda_dense

    if cuda_dense.dense_regime(n) == "small":
        return []
    peak = hw["sms"] * hw["fp32_lanes"] * 2 * hw["clock_hz"]
    calls = []
    for name, i, o in DENSE:
        shapes = [("forward", n, i, o), ("backward dW", i, n, o), ("backward dX", n, o, i)]
        for what, a, b, cc in shapes:
            flops, nbytes = 2 * a * b * cc, 4 * (a * b + b * cc + a * cc)
            calls.append((f"{name} {what} (cuBLAS)", max(flops / peak, nbytes / hw["hbm_bytes_s"], hw["library_call_s"])))
    return calls


COUNTS_FILE = pathlib.Path(__file__).resolve().parent / "gpu_model_counts.json"


def kernel_hash():
    """SHA-256 of what the counts depend on: the kernel sources and common.cuh (not the
    emulation's own header, whose comments change more often than its counting)."""
    import hashlib

    from fastmom.backends import cuda

    h = hashlib.sha256()
    for name in (*cuda.SOURCES, "common.cuh"):
        h.update((cuda.source_dir() / name).read_bytes())
    return h.hexdigest()


def load_counts(path=COUNTS_FILE):
    """The stored emulated counts ``{batch: [launch, ...]}`` plus batch 256 and 1024
    extrapolated (from the two largest emulated batches, where every grid shape is in
    its regime: fixed, or one conv1 weight-gradient slice per image)."""
    data = json.loads(pathlib.Path(path).read_text())
    if data.get("sources_sha256") != kernel_hash():
        print(f"note: {path.name} was counted from other kernel sources; refresh with --emulate", file=sys.stderr)
    counts = {int(n): c for n, c in data["counts"].items()}
    big = sorted(counts)[-2:]
    extrapolated = []
    for n in BATCHES:
        if n not in counts:
            counts[n] = extrapolate(counts[big[0]], counts[big[1]], big[0], big[1], n)
            extrapolated.append(n)
    return counts, extrapolated


def _snapshot_key(kernel):
    """The model's name for a lint row: the float instance, 5x5 where there is a filter
    size and 2x2 where there is a pool size too (network3's layers), e.g.
    ``fm_conv_wgrad<float, 5>`` -> ``fm_conv_wgrad``; for the small-batch dense kernels
    the R = 16 instance (batch 10's rows, the only batch of the model in that regime);
    None for the other instances."""
    base, _, args = kernel.partition("<")
    if base in ("fm_dense_small", "fm_dense_wgrad_small"):
        return base if args == "float, 16>" else None
    return base if args in ("float>", "float, 5>", "float, 5, 2>") else None


def sass_table():
    """Hottest-loop (instructions, FMAs) per float kernel: the lint when its tools are
    here, else the stored snapshot."""
    try:
        from bench import sass_lint

        if all(sass_lint.tool(t) for t in ("nvcc", "cuobjdump", "nvdisasm")):
            return {_snapshot_key(r["kernel"]): r["hottest_loop"] for r in sass_lint.lint("sm_90")
                    if _snapshot_key(r["kernel"]) and r["hottest_loop"]}
    except Exception as exc:  # noqa: BLE001 - fall back to the snapshot, saying why
        print(f"note: SASS lint failed ({exc}); using the stored snapshot", file=sys.stderr)
    return dict(SASS_SNAPSHOT)


#: ``python -m bench.sass_lint`` (sm_90, nvcc 13.0, float instances, 5x5 where templated,
#: R = 16 for the small-batch dense kernels), 2026-12: hottest loop (instructions, FMAs);
#: used when the CUDA binary tools are not installed
SASS_SNAPSHOT = {
    "fm_bias_act": (234, 34), "fm_conv_dgrad": (238, 64), "fm_conv_pool_fwd": (510, 400),
    "fm_conv_wgrad": (216, 80), "fm_dense_dz_db": (24, 1), "fm_momentum_step": (132, 26),
    "fm_dense_small": (41, 16), "fm_dense_wgrad_small": (52, 16),
    "fm_softmax_nll_bwd": (247, 20), "fm_softmax_nll_fwd": (125, 36),
}

#: the same model of earlier kernels, for the README's before/after: modeled step
#: microseconds with the previous backward (unpool + dense weight and input gradients,
#: issue 13 before item 1), with the previous forward (one conv output per thread
#: for 8 filters, pooled through shared memory: 2.9 instr/FMA; before item 2), and with
#: cuBLAS for the dense layers at batch 10 too (before item 3's small-batch kernels)
PREVIOUS_MODELS_US = {
    "the previous backward (unpool + dense gradients)": {10: 132, 64: 303, 256: 952, 1024: 3556},
    "the previous forward (one conv output a thread, pooled in shared memory)": {10: 115, 64: 138, 256: 285,
                                                                                  1024: 878},
    "cuBLAS dense layers at every batch (before the small-batch kernels)": {10: 113, 64: 126, 256: 221,
                                                                             1024: 623},
}


def _pct(v):
    return f"{100 * v:.1f}%"


def memory_table(counts, extrapolated):
    """Markdown rows of :func:`memory_rows` for the emulated (not extrapolated) batches.

    "main" global sites carry at least MAIN_SHARE of the kernel's sectors, "hot" shared
    sites at least MAIN_SHARE of its shared warp accesses; ways = wavefronts per warp
    access (1 = conflict free, 32 = every lane in one bank)."""
    lines = ["| batch | primitive | kernel | grid | global sectors | coalesced, all sites | worst main site | "
             "shared warp accesses | replays / access | worst hot shared site: ways | worst shared site: ways | "
             "conv target |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in sorted(counts):
        if n in extrapolated or n not in BATCHES:
            continue
        for r in memory_rows(counts[n]):
            acc = r["shared_accesses"]
            rep = f"{(r['shared_wavefronts'] - acc) / acc:.2f}" if acc else "-"
            hot = f"{r['hot_shared_site']}: {r['hot_shared_ways']:.2f}" if acc else "-"
            worst = f"{r['worst_shared_site']}: {r['worst_shared_ways']:.2f}" if acc else "-"
            lines.append(f"| {n} | {r['primitive']} | {r['kernel']} | {'x'.join(map(str, r['grid']))} | "
                         f"{r['global_sectors']:,} | {_pct(r['global_efficiency'])} | "
                         f"{r['main_worst_site']}: {_pct(r['main_worst_efficiency'])} | {acc:,} | {rep} | {hot} | "
                         f"{worst} | {r.get('verdict', '')} |")
    return lines


def model_table(counts, extrapolated, sass, measured=None):
    lines = ["MODEL, not measurement: modeled microseconds on an H100 SXM (see bench/gpu_model.py for every "
             "figure and assumption)" + (f"; batches {', '.join(map(str, extrapolated))} from counts "
                                         "extrapolated linearly" if extrapolated else ""), ""]
    head = "| primitive / kernel | " + " | ".join(f"batch {n}" for n in sorted(counts)) + " |"
    lines += [head, "|---" * (len(counts) + 1) + "|"]
    per = {n: model(counts[n], n, sass) for n in sorted(counts)}
    libs = {n: library_calls(n) for n in sorted(counts)}
    # every batch's launches (the dense layers' kernels differ between the regimes)
    keys = list(dict.fromkeys(f"{m['primitive']} / {m['kernel']}" for n in sorted(per) for m in per[n]))
    for key in keys:
        cells = []
        for n in sorted(counts):
            ms = [m for m in per[n] if f"{m['primitive']} / {m['kernel']}" == key]
            cells.append(f"{sum(m['s'] for m in ms) * 1e6:.1f} ({ms[0]['bound']})" if ms else "-")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    cells = [f"{sum(t for _, t in libs[n]) * 1e6:.1f} ({len(libs[n])} calls)" for n in sorted(counts)]
    lines.append("| dense products (cuBLAS above 32 rows, not emulated) | " + " | ".join(cells) + " |")
    totals = {n: sum(m["s"] for m in per[n]) + sum(t for _, t in libs[n]) for n in sorted(counts)}
    gpu_only = {n: sum(m["gpu_s"] for m in per[n]) for n in sorted(counts)}
    lines.append("| **training step (modeled)** | " + " | ".join(f"**{totals[n] * 1e6:.0f}**" for n in sorted(counts))
                 + " |")
    for label, prev in PREVIOUS_MODELS_US.items():
        lines.append(f"| the same model with {label} | " + " | ".join(str(prev.get(n, "-")) for n in sorted(counts))
                     + " |")
    lines.append("| our kernels' GPU time alone (no launch floor) | "
                 + " | ".join(f"{gpu_only[n] * 1e6:.1f}" for n in sorted(counts)) + " |")
    lines.append("| launches + library calls | " + " | ".join(f"{len(per[n])} + {len(libs[n])}" for n in sorted(counts))
                 + " |")
    lines.append("| modeled images/s | " + " | ".join(f"{n / totals[n]:,.0f}" for n in sorted(counts)) + " |")
    if measured:
        got = measured.get("batches", {})
        cells = []
        for n in sorted(counts):
            ms = (got.get(str(n)) or got.get(n) or {}).get("fastmom", {}).get("training step")
            cells.append(f"{ms * 1e3:.0f}" if ms else "-")
        lines.append(f"| measured training step ({measured.get('gpu', '?')}) | " + " | ".join(cells) + " |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emulate", type=int, nargs="*", metavar="BATCH",
                    help="count these batches on the emulation now (slow: about 0.7 s per image on one core) "
                         "and store them in --counts")
    ap.add_argument("--counts", type=pathlib.Path, default=COUNTS_FILE)
    ap.add_argument("--measured", type=pathlib.Path, help="gpu_table.json of bench.gpu_table: a measured row")
    args = ap.parse_args(argv)
    if args.emulate:
        import datetime

        data = {"sources_sha256": kernel_hash(), "n_sm": 132,
                "counted": f"{datetime.date.today()}, cuda_emulation memstats build, float32, n_sm=132, ReLU layers",
                "counts": {str(n): step_counts(n) for n in args.emulate}}
        args.counts.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    counts, extrapolated = load_counts(args.counts)
    counts = {n: c for n, c in counts.items() if n in BATCHES}
    sass = sass_table()
    measured = json.loads(args.measured.read_text()) if args.measured and args.measured.exists() else None
    print("## Memory behaviour counted by the CUDA emulation (float32, 132-SM launch shapes)\n")
    print("\n".join(memory_table(counts, extrapolated)))
    print()
    print("## " + "\n".join(model_table(counts, extrapolated, sass, measured)))
    return counts


if __name__ == "__main__":
    main()
