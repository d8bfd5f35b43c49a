"""The ``cuda`` backend: CuPy arrays and the CUDA C++ kernels of ``kernels/cuda``.

The kernels are templates on the element type, compiled once per process by
``cupy.RawModule`` with :data:`NAME_EXPRESSIONS` (and cached on disk by CuPy). The dense
layers (:mod:`fastmom.backends.cuda_dense`) use our own kernels up to 32 rows and
``cupy.matmul`` (cuBLAS) with fused epilogue kernels above. Every
array, workspace and reported scalar stays on the device: ``softmax_nll_forward``
returns 0-d device arrays, read by the host only when ``float()``/``int()`` asks.

CuPy is optional: this module imports without it, and :func:`is_available` then
says why the backend cannot be used. The host-side logic (argument checks, launch
shapes, workspaces) lives in :class:`Kernels`, which is parameterised by the array
module and a launch function, so that :mod:`fastmom.backends.cuda_emulation` runs exactly
this code on NumPy arrays with the kernels compiled for the CPU; the conv kernels'
launch plans are in :mod:`fastmom.backends.cuda_plans`.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import pathlib

import numpy as np

from .. import activations as _activations
from . import _checks
from .cuda_plans import (DG_CHANNELS, FWD_FILTERS, FWD_INSTANCES, GRID_LIMITS, SHARED_LIMIT,  # noqa: F401
                         WG_FILTERS, WG_LANES, WG_RED, Plans, _ceil_div, grid)
from .cuda_dense import DENSE_ROW_INSTANCES, DENSE_SMALL_ROWS, Dense, dense_regime  # noqa: F401

name = "cuda"

#: kernel templates launched by :class:`Kernels`, each instantiated for float and double
KERNELS = (
    "fm_conv_pool_fwd", "fm_conv_wgrad", "fm_conv_wgrad_finalize", "fm_conv_dgrad",
    "fm_dense_small", "fm_dense_wgrad_small", "fm_bias_act", "fm_dense_dz_db", "fm_apply_mask", "fm_bernoulli_mask",
    "fm_softmax_nll_fwd", "fm_softmax_nll_bwd", "fm_momentum_step", "fm_sum_squares",
)
#: kernels with more template arguments, and the values instantiated: the filter size K
#: of a compile-time K x K filter (0: any size); for the forward, (K, P) with a
#: compile-time P x P pool too ((0, 0): any filter and pool); for the small-batch dense
#: kernels, the rows R their sums keep in registers
FILTER_SIZES = {"fm_conv_wgrad": (5, 0), "fm_conv_dgrad": (5, 0),
                "fm_conv_pool_fwd": (*FWD_INSTANCES, (0, 0)),
                "fm_dense_small": DENSE_ROW_INSTANCES, "fm_dense_wgrad_small": DENSE_ROW_INSTANCES}


def name_expression(kernel, ctype, k=None):
    """``fm_x<float>``, or ``fm_x<float, 5>`` with a filter size ``k`` (``fm_x<float, 5,
    2>`` with a tuple ``k``)."""
    if k is None:
        return f"{kernel}<{ctype}>"
    return f"{kernel}<{ctype}, {', '.join(map(str, k)) if isinstance(k, tuple) else k}>"


#: the template instantiations compiled by RawModule (importable without CuPy)
NAME_EXPRESSIONS = tuple(name_expression(k, t, v) for k in KERNELS for t in ("float", "double")
                         for v in FILTER_SIZES.get(k, (None,)))
#: kernel sources, concatenated in this order into one module
SOURCES = ("conv.cu", "conv_backward.cu", "dense.cu", "optim.cu")
#: compiler options shared by NVRTC (at run time) and nvcc (the CI compile check)
COMPILE_OPTIONS = ("-std=c++17",)

_THREADS = 256      # block size of the 1-D kernels (a power of two: fm::block_sum)


def source_dir() -> pathlib.Path:
    """Directory of the CUDA sources: the data package ``fastmom._cuda`` when installed,
    else ``kernels/cuda`` of the source tree this module sits in."""
    try:
        return pathlib.Path(str(importlib.resources.files("fastmom._cuda")))
    except ModuleNotFoundError:
        return pathlib.Path(__file__).resolve().parents[2] / "kernels" / "cuda"


def source_hash() -> str:
    """SHA-256 over every kernel source and header: a cache key for compiled forms."""
    h = hashlib.sha256()
    d = source_dir()
    for p in sorted(list(d.glob("*.cu")) + list(d.glob("*.cuh"))):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def module_source() -> str:
    """The code given to RawModule: the kernel sources, one after the other.

    The leading hash comment makes CuPy's disk cache (keyed by this text) see changes
    to the headers, which are only ``#include``-d.
    """
    d = source_dir()
    parts = [f"// fastmom CUDA kernels, sources sha256 {source_hash()}\n"]
    parts += [f"// ---- {s}\n" + (d / s).read_text() for s in SOURCES]
    return "\n".join(parts)


def _ctype(dtype):
    dt = np.dtype(dtype)
    if dt == np.float32:
        return "float"
    if dt == np.float64:
        return "double"
    raise TypeError(f"no CUDA kernels for dtype {dt}")


class Kernels(Plans, Dense):
    """Host side of the CUDA kernels: checks, launch shapes, workspaces.

    Parameters
    ----------
    xp : module
        The array module (``cupy``; ``numpy`` under emulation).
    launch : callable
        ``launch(name_expression, grid, block, args, shared_mem)``; ``args`` holds
        arrays and NumPy scalars of the kernel's exact parameter types.
    address : callable
        Device address of an array's first element (alignment of vector accesses).
    n_sm : int
        Multiprocessor count: sizes grid-stride grids and batch splits.
    """

    def __init__(self, xp, launch, address, n_sm):
        self.xp, self._launch, self._address, self.n_sm = xp, launch, address, int(n_sm)
        self._ws = {}
        #: what the host side did, for tests and benchmarks: ``launches`` (kernels of
        #: this module), ``library_calls`` (cuBLAS products, random draws), ``cublas``
        #: (the cuBLAS products alone: none at small batch), ``allocations`` (arrays
        #: this object allocated) and ``syncs`` (device scalars read by the host, each a
        #: wait for the stream)
        self.counts = dict.fromkeys(("launches", "library_calls", "cublas", "allocations", "syncs"), 0)

    # -- helpers ---------------------------------------------------------------------

    def launch(self, kernel, dtype, grid, block, args, shared_mem=0, k=None):
        """Launch ``kernel<dtype>`` (``kernel<dtype, k>`` with a filter size ``k``);
        ``grid`` comes from :func:`grid` (already checked)."""
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        self.counts["launches"] += 1
        self._launch(name_expression(kernel, _ctype(dtype), k), grid, block, tuple(args), int(shared_mem))

    def _grid_1d(self, kernel, n):
        # enough blocks to fill the device a few times over; the kernels grid-stride
        return grid(kernel, max(1, min(_ceil_div(n, _THREADS), 8 * self.n_sm)))

    def _alloc(self, shape, dtype):
        # the one place this object allocates device memory: counted, so a test can
        # prove that a training step after the first allocates nothing
        self.counts["allocations"] += 1
        return self.xp.empty(shape, dtype=dtype)

    def workspace(self, tag, shape, dtype):
        """A cached scratch array (allocated once per shape: nothing per step)."""
        key = (tag, tuple(shape), np.dtype(dtype).str)
        a = self._ws.get(key)
        if a is None:
            a = self._ws[key] = self._alloc(shape, dtype)
        return a

    def _labels(self, labels):
        if labels is None:
            return self.workspace("no_labels", (1,), np.int64)  # never read: has_labels = 0
        if labels.dtype == np.int64:
            return labels
        out = self.workspace("labels", labels.shape, np.int64)
        out[...] = labels
        return out

    # -- convolution + max-pool ------------------------------------------------------

    def conv_pool_forward(self, x, w, b, poolsize, act, y, argmax, pool_ties="first"):
        """Fused conv + max-pool + bias + activation (``conv.cu``): one launch of
        fm_conv_pool_fwd, shaped by :meth:`fwd_plan`."""
        n, c, h, wd, f, kh, kw, oh, ow, PH, PW = _checks.conv_pool_forward(
            x, w, b, poolsize, act, y, argmax, pool_ties, xp=self.xp)
        ph, pw = _checks.pool(poolsize)
        p = self.fwd_plan(n, c, h, wd, f, kh, kw, PH, PW, ph, pw, x.itemsize)
        if argmax is None:  # inference: the kernel still records, into scratch nobody reads
            argmax = self.workspace("inference_argmax", y.shape, np.int32)
        i32 = np.int32
        self.launch("fm_conv_pool_fwd", x.dtype, p["grid"], p["block"],
                    (x, w, b, y, argmax, *(i32(v) for v in (c, h, wd, f, kh, kw, PH, PW, ph, pw)),
                     *(i32(p[a]) for a in ("tph", "tpw", "gb", "cc", "xstride", "wstride")),
                     i32(_activations.code(act)), i32(pool_ties == "all")), p["shared"], p["k"])

    def conv_pool_backward(self, x, w, y, argmax, dy, poolsize, act, dw, db, dx, pool_ties="first"):
        """Weight, bias and input gradients from the pooled gradient and the argmax
        (``conv_backward.cu``): fm_conv_wgrad (partial sums per batch slice), then
        fm_conv_wgrad_finalize (the slices in order), then fm_conv_dgrad."""
        n, c, h, wd, f, kh, kw, oh, ow, PH, PW = _checks.conv_pool_backward(
            x, w, y, argmax, dy, poolsize, act, dw, db, dx, pool_ties, xp=self.xp)
        ph, pw = _checks.pool(poolsize)
        dt, i32, ties = x.dtype, np.int32, pool_ties == "all"
        k = 5 if kh == kw == 5 else 0  # the compiled 5x5 instance, else the general one
        entries = ph * pw if ties else 1  # gradient entries per pooled output (conv_backward.cu)
        pool_args = (i32(PH), i32(PW), i32(ph), i32(pw), i32(_activations.code(act)), i32(ties))
        # every launch shape first: a shape CUDA cannot launch fails before the first kernel runs
        wg = self.wgrad_plan(n, c, h, wd, f, kh, kw, PH, PW, ph, pw, entries, x.itemsize, k)
        nw = f * c * kh * kw
        dg = None if dx is None else self.dgrad_plan(n, c, h, wd, f, kh, kw, PH, PW, ph, pw, entries, x.itemsize)
        wpart = self.workspace("conv_wpart", (wg["nsplit"], nw), dt)
        bpart = self.workspace("conv_bpart", (wg["nsplit"], f), dt)
        self.launch("fm_conv_wgrad", dt, wg["grid"], wg["block"],
                    (x, y, argmax, dy, wpart, bpart, i32(n), i32(c), i32(h), i32(wd), i32(f), i32(kh), i32(kw),
                     *pool_args, *(i32(wg[a]) for a in ("nsplit", "groups", "upb", "nb_max", "ec", "phased",
                                                         "xstride", "istride", "sstride"))),
                    wg["shared"], k)
        self.launch("fm_conv_wgrad_finalize", dt, wg["final_grid"], wg["final_block"],
                    (wpart, bpart, dw, db, *(i32(v) for v in (f, c, kh * kw, wg["nsplit"], wg["ft"], wg["ct"]))),
                    wg["final_shared"])
        if dx is not None:
            self.launch("fm_conv_dgrad", dt, dg["grid"], dg["block"],
                        (y, argmax, dy, w, dx, i32(c), i32(h), i32(wd), i32(f), i32(kh), i32(kw), *pool_args,
                         *(i32(dg[a]) for a in ("th", "tw", "fq"))), dg["shared"], k)

    # -- dropout ---------------------------------------------------------------------

    def dropout_mask(self, rng, keep, out):
        if not (0 < keep <= 1):
            raise ValueError(f"keep probability must be in (0, 1], got {keep!r}")
        _checks.float_array("out", out, out.ndim, xp=self.xp)
        g = self._grid_1d("fm_bernoulli_mask", out.size)
        # the uniform draws land in a workspace: the same stream as rng.random(shape)
        u = self.workspace("dropout_u", out.shape, out.dtype)
        self.counts["library_calls"] += 1
        rng.random(dtype=out.dtype, out=u)
        self.launch("fm_bernoulli_mask", out.dtype, g, (_THREADS,),
                    (u, out, np.int64(out.size), out.dtype.type(keep)))

    def apply_mask(self, x, mask, out):
        _checks.apply_mask(x, mask, out, xp=self.xp)
        self.launch("fm_apply_mask", x.dtype, self._grid_1d("fm_apply_mask", x.size), (_THREADS,),
                    (x, mask, out, np.int64(x.size)))

    # -- softmax + NLL -------------------------------------------------------------

    def softmax_nll_forward(self, z, labels, probs):
        """``(cost, correct)`` as 0-d device arrays, or ``(None, None)`` without labels.

        The two scalars are workspaces of this object, one pair per ``(shape, dtype)``
        of ``z``: they hold this call's values until the next call on the same
        shape, which overwrites them. Read them (``float()``, or ``total + cost``,
        which copies) before that.
        """
        n, k = _checks.softmax_nll_forward(z, labels, probs, xp=self.xp)
        key = (z.shape, z.dtype.str)
        cost = self.workspace(("softmax_cost", key), (), np.float64)
        correct = self.workspace(("softmax_correct", key), (), np.int32)
        # one block: the reductions to the two scalars stay in one launch, in a fixed order
        self.launch("fm_softmax_nll_fwd", z.dtype, grid("fm_softmax_nll_fwd", 1), (_THREADS,),
                    (z, self._labels(labels), probs, cost, correct, np.int32(n), np.int32(k),
                     np.int32(labels is not None)))
        if labels is None:
            return None, None
        return cost, correct

    def softmax_nll_backward(self, probs, labels, dz):
        n, k = _checks.softmax_nll_backward(probs, labels, dz, xp=self.xp)
        self.launch("fm_softmax_nll_bwd", probs.dtype, self._grid_1d("fm_softmax_nll_bwd", n * k), (_THREADS,),
                    (probs, self._labels(labels), dz, np.int32(n), np.int32(k)))

    # -- optimizer ---------------------------------------------------------------------

    def momentum_plan(self, p, g, v, momentum):
        """``(head, nvec)``: elements before the first 16-byte pack, and the pack count."""
        n, isz = p.shape[0], p.itemsize
        arrays = (p, g, v) if momentum != 0 else (p, g)
        mis = {self._address(a) % 16 for a in arrays}
        if len(mis) != 1:
            return n, 0  # the arrays cannot all be aligned at once: scalar path
        m = mis.pop()
        if m % isz:
            return n, 0
        head = min(n, ((16 - m) % 16) // isz)
        return head, (n - head) // (16 // isz)

    def momentum_step(self, p, g, v, eta, momentum, nesterov, decay, n_decay):
        _checks.momentum_step(p, g, v, eta, momentum, nesterov, decay, n_decay, xp=self.xp)
        head, nvec = self.momentum_plan(p, g, v, momentum)
        n = p.shape[0]
        units = max(nvec, head + n - head - nvec * (16 // p.itemsize))
        t = p.dtype.type
        self.launch("fm_momentum_step", p.dtype, self._grid_1d("fm_momentum_step", units), (_THREADS,),
                    (p, g, v if momentum != 0 else p, np.int64(n), np.int64(n_decay), np.int64(head),
                     np.int64(nvec), t(eta), t(momentum), t(decay), np.int32(bool(nesterov))))

    def sum_squares(self, a):
        """``sum(a**2)`` as a Python float, accumulated in float64 (the reference's
        semantics: float32 squares summed in float32 lose digits and overflow).

        Two launches of one kernel: per-block partial sums of squares, then one block
        summing the partials; a fixed order, so the result is reproducible.
        """
        r = a.ravel()
        if r.dtype not in (np.float32, np.float64):
            raise TypeError(f"sum_squares needs a float32 or float64 array, got {r.dtype}")
        g = self._grid_1d("fm_sum_squares", r.size)
        partial = self.workspace("sum_squares_partial", g[:1], np.float64)
        total = self.workspace("sum_squares_total", (1,), np.float64)
        self.launch("fm_sum_squares", r.dtype, g, (_THREADS,), (r, partial, np.int64(r.size), np.int32(1)))
        self.launch("fm_sum_squares", np.float64, grid("fm_sum_squares", 1), (_THREADS,),
                    (partial, total, np.int64(g[0]), np.int32(0)))
        self.counts["syncs"] += 1
        return float(total[0])


# -- the CuPy-backed module interface ------------------------------------------------

_kernels = None


def _cupy():
    import cupy  # deferred: CuPy is an optional extra

    return cupy


def __getattr__(attr):
    # ``xp`` resolves to cupy on first use, so importing this module never needs CuPy
    if attr == "xp":
        return _cupy()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def is_available():
    """True, or a string saying why the cuda backend cannot run here."""
    try:
        cupy = _cupy()
    except ImportError as exc:
        return (f"CuPy is not installed ({exc}); install fastmom[cuda12] or fastmom[cuda13] "
                "for the cupy-cuda12x / cupy-cuda13x wheel matching your CUDA driver")
    try:
        if not cupy.cuda.is_available():
            return "CuPy found no usable CUDA device"
    except Exception as exc:  # driver/runtime errors surface here
        return f"CuPy could not query the CUDA devices: {exc}"
    return True


def rawmodule_options():
    """The options fastmom gives ``cupy.RawModule`` (CuPy adds its own to them)."""
    return COMPILE_OPTIONS + (f"-I{source_dir()}",)


_modules = {}     # device id -> RawModule
_functions = {}   # (device id, name expression) -> RawKernel


def _module(dev):
    mod = _modules.get(dev)
    if mod is None:
        mod = _modules[dev] = _cupy().RawModule(code=module_source(), options=rawmodule_options(),
                                                name_expressions=NAME_EXPRESSIONS)
    return mod


def _function(expr):
    """The compiled kernel ``expr`` on the current device, looked up once.

    ``RawModule.get_function`` builds a new ``RawKernel`` on every call and resolves
    it at once (``cuModuleGetFunction`` and device queries); the RawKernel it returns
    keeps its function per device, so it is kept here and reused for every launch.
    """
    key = (_cupy().cuda.runtime.getDevice(), expr)
    fn = _functions.get(key)
    if fn is None:
        fn = _functions[key] = _module(key[0]).get_function(expr)
    return fn


def _cupy_launch(expr, grid, block, args, shared_mem):
    _function(expr)(grid, block, args, shared_mem=shared_mem)


def kernels():
    """The process's :class:`Kernels` on the current CuPy device (built on first use)."""
    global _kernels
    if _kernels is None:
        cupy = _cupy()
        n_sm = cupy.cuda.Device().attributes["MultiProcessorCount"]
        _kernels = Kernels(cupy, _cupy_launch, lambda a: a.data.ptr, n_sm)
    return _kernels


def asarray(a, dtype=None):
    return _cupy().ascontiguousarray(_cupy().asarray(a, dtype=dtype))


def to_numpy(a):
    return _cupy().asnumpy(a)


def empty(shape, dtype):
    return _cupy().empty(shape, dtype=dtype)


def zeros(shape, dtype):
    return _cupy().zeros(shape, dtype=dtype)


def make_rng(seed):
    """A CuPy generator; a NumPy ``SeedSequence`` is reduced to an integer seed."""
    if isinstance(seed, np.random.SeedSequence):
        seed = int(seed.generate_state(1, np.uint64)[0])
    return _cupy().random.default_rng(seed)


def rng_state(rng):
    """The JSON-able state of a :func:`make_rng` generator, where CuPy exposes one;
    TypeError otherwise (a checkpoint then names the cause)."""
    bg = getattr(rng, "bit_generator", None)
    state = getattr(bg, "state", None)
    if state is None:
        raise TypeError(f"CuPy's {type(rng).__name__} does not expose its state")
    return state


def set_rng_state(rng, state):
    bg = getattr(rng, "bit_generator", None)
    if bg is None or not hasattr(bg, "state"):
        raise TypeError(f"CuPy's {type(rng).__name__} does not accept a state")
    bg.state = state


def synchronize():
    """Wait for the current device's work (the trainer calls this before timing)."""
    _cupy().cuda.get_current_stream().synchronize()


class CapturedStep:
    """One training step captured into a CUDA graph by :func:`capture_step`.

    :meth:`replay` launches the graph on :attr:`stream`: every kernel of the step with
    the arguments of the capture (the same device arrays: copy each new batch into the
    input buffers the capture read, with ``buffer[...] = batch`` on :attr:`stream`, or
    inside the step before its first kernel). Nothing is allocated or read back by the
    host in a replay; read the cost (a device scalar) only when reporting.
    """

    def __init__(self, graph, stream):
        self.graph, self.stream = graph, stream

    def replay(self):
        self.graph.launch(self.stream)


def capture_step(step, stream=None):
    """Run ``step()`` once eagerly, then capture a second call into a CUDA graph.

    ``step`` makes one training step's launches (forward, backward, momentum) on the
    current stream, reading fixed device buffers. The eager call builds the workspaces
    and compiles the kernels; the captured call must then allocate nothing, make no
    cuBLAS call (at most :data:`DENSE_SMALL_ROWS` rows: the small-batch dense kernels)
    and read nothing back on the host (each would be baked into the graph, refused by
    CuPy, or a sync), which :attr:`Kernels.counts` checks.

    Returns
    -------
    CapturedStep

    Raises
    ------
    ValueError
        When the capture allocated, called cuBLAS or synced; ``RuntimeError`` from CuPy
        when it refused a call. The capture is always ended first (a stream left
        capturing breaks every later launch on it).
    """
    cupy = _cupy()
    s = stream if stream is not None else cupy.cuda.Stream(non_blocking=True)
    k = kernels()
    with s:
        step()
        s.synchronize()
        before = dict(k.counts)
        s.begin_capture()
        try:
            step()
        except BaseException:
            try:
                s.end_capture()
            except Exception:  # noqa: BLE001 - the failure invalidated the capture: report the failure
                pass
            raise
        graph = s.end_capture()
    grew = {c: k.counts[c] - before[c] for c in ("allocations", "cublas", "syncs") if k.counts[c] != before[c]}
    if grew:
        raise ValueError(f"the captured step made {grew}: not replayable as a CUDA graph (at most "
                         f"{DENSE_SMALL_ROWS} rows per step avoid cuBLAS; workspaces come from the eager call)")
    return CapturedStep(graph, s)


def conv_pool_forward(x, w, b, poolsize, act, y, argmax, pool_ties="first"):
    """Fused conv + max-pool + bias + activation (see :mod:`fastmom.backends.reference`)."""
    kernels().conv_pool_forward(x, w, b, poolsize, act, y, argmax, pool_ties)


def conv_pool_backward(x, w, y, argmax, dy, poolsize, act, dw, db, dx, pool_ties="first"):
    kernels().conv_pool_backward(x, w, y, argmax, dy, poolsize, act, dw, db, dx, pool_ties)


def dense_forward(x, w, b, act, y, scale=1.0):
    kernels().dense_forward(x, w, b, act, y, scale)


def dense_backward(x, w, y, dy, act, dw, db, dx):
    kernels().dense_backward(x, w, y, dy, act, dw, db, dx)


def dropout_mask(rng, keep, out):
    kernels().dropout_mask(rng, keep, out)


def apply_mask(x, mask, out):
    kernels().apply_mask(x, mask, out)


def softmax_nll_forward(z, labels, probs):
    """Returns ``(cost, correct)`` as 0-d device arrays (``None, None`` without labels)."""
    return kernels().softmax_nll_forward(z, labels, probs)


def softmax_nll_backward(probs, labels, dz):
    kernels().softmax_nll_backward(probs, labels, dz)


def momentum_step(p, g, v, eta, momentum, nesterov, decay, n_decay):
    kernels().momentum_step(p, g, v, eta, momentum, nesterov, decay, n_decay)


def sum_squares(a) -> float:
    return kernels().sum_squares(a)
