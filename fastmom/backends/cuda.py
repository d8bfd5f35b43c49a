"""The ``cuda`` backend: CuPy arrays and the CUDA C++ kernels of ``kernels/cuda``.

The kernels are templates on the element type, compiled once per process by
``cupy.RawModule`` with :data:`NAME_EXPRESSIONS` (and cached on disk by CuPy). Dense
products go through ``cupy.matmul`` (cuBLAS) with fused epilogue kernels. Every
array, workspace and reported scalar stays on the device: ``softmax_nll_forward``
returns 0-d device arrays, read by the host only when ``float()``/``int()`` asks.

CuPy is optional: this module imports without it, and :func:`is_available` then
says why the backend cannot be used. The host-side logic (argument checks, launch
shapes, workspaces) lives in :class:`Kernels`, which is parameterised by the array
module and a launch function, so that :mod:`fastmom.backends.cuda_emulation` runs exactly
this code on NumPy arrays with the kernels compiled for the CPU.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import math
import pathlib

import numpy as np

from .. import activations as _activations
from . import _checks

name = "cuda"

#: kernel templates launched by :class:`Kernels`, each instantiated for float and double
KERNELS = (
    "fm_conv_pool_fwd", "fm_conv_unpool", "fm_conv_wgrad_partial", "fm_conv_wgrad_finalize", "fm_conv_dgrad",
    "fm_bias_act", "fm_dense_dz_db", "fm_apply_mask", "fm_bernoulli_mask",
    "fm_softmax_nll_fwd", "fm_softmax_nll_bwd", "fm_momentum_step",
)
#: the template instantiations compiled by RawModule (importable without CuPy)
NAME_EXPRESSIONS = tuple(f"{k}<{t}>" for k in KERNELS for t in ("float", "double"))
#: kernel sources, concatenated in this order into one module
SOURCES = ("conv.cu", "dense.cu", "optim.cu")
#: compiler options shared by NVRTC (at run time) and nvcc (the CI compile check)
COMPILE_OPTIONS = ("-std=c++17",)

CONV_FG = 8         # filters per block of the conv kernels (fm::CONV_FG in conv.cu)
_THREADS = 256      # block size of the 1-D kernels (a power of two: fm::block_sum)
SHARED_LIMIT = 48 * 1024


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


def _ceil_div(a, b):
    return -(-a // b)


class Kernels:
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
        self._dummy_labels = None

    # -- helpers ---------------------------------------------------------------------

    def launch(self, kernel, dtype, grid, block, args, shared_mem=0):
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        self._launch(f"{kernel}<{_ctype(dtype)}>", grid, block, tuple(args), int(shared_mem))

    def _grid_1d(self, n):
        # enough blocks to fill the device a few times over; the kernels grid-stride
        return (max(1, min(_ceil_div(n, _THREADS), 8 * self.n_sm)),)

    def workspace(self, tag, shape, dtype):
        """A cached scratch array (allocated once per shape: nothing per step)."""
        key = (tag, tuple(shape), np.dtype(dtype).str)
        a = self._ws.get(key)
        if a is None:
            a = self._ws[key] = self.xp.empty(shape, dtype=dtype)
        return a

    def _labels(self, labels):
        if labels is None:
            if self._dummy_labels is None:
                self._dummy_labels = self.xp.zeros((1,), dtype=np.int64)
            return self._dummy_labels
        return labels if labels.dtype == np.int64 else labels.astype(np.int64)

    # -- convolution + max-pool ------------------------------------------------------

    @staticmethod
    def conv_tiles(PH, PW, ph, pw):
        """Pooled outputs per block ``(tph, tpw)``: about 16x16 conv outputs, one per thread."""
        tph = max(1, min(PH, 16 // ph))
        tpw = max(1, min(PW, 16 // pw))
        if tph * ph * tpw * pw > 1024:
            raise ValueError(f"the cuda backend supports pool windows of at most 1024 elements, got {ph}x{pw}")
        return tph, tpw

    def conv_pool_forward(self, x, w, b, poolsize, act, y, argmax):
        n, c, h, wd, f, kh, kw, oh, ow, PH, PW = _checks.conv_pool_forward(
            x, w, b, poolsize, act, y, argmax, xp=self.xp)
        ph, pw = _checks.pool(poolsize)
        tph, tpw = self.conv_tiles(PH, PW, ph, pw)
        th, tw = tph * ph, tpw * pw
        shared = ((th + kh - 1) * (tw + kw - 1) + CONV_FG * kh * kw + CONV_FG * th * tw) * x.itemsize
        if shared > SHARED_LIMIT:
            raise ValueError(f"filter {kh}x{kw} with pool {ph}x{pw} needs {shared} bytes of shared memory "
                             f"per block, over the {SHARED_LIMIT} the cuda backend uses")
        grid = (_ceil_div(PH, tph) * _ceil_div(PW, tpw), _ceil_div(f, CONV_FG), n)
        i32 = np.int32
        self.launch("fm_conv_pool_fwd", x.dtype, grid, (th * tw,),
                    (x, w, b, y, argmax, i32(c), i32(h), i32(wd), i32(f), i32(kh), i32(kw), i32(PH), i32(PW),
                     i32(ph), i32(pw), i32(tph), i32(tpw), i32(_activations.code(act))), shared)

    def conv_pool_backward(self, x, w, y, argmax, dy, poolsize, act, dw, db, dx):
        n, c, h, wd, f, kh, kw, oh, ow, PH, PW = _checks.conv_pool_backward(
            x, w, y, argmax, dy, poolsize, act, dw, db, dx, xp=self.xp)
        ph, pw = _checks.pool(poolsize)
        dt, i32 = x.dtype, np.int32
        dz = self.workspace("conv_dz", (n, f, oh, ow), dt)
        self.launch("fm_conv_unpool", dt, self._grid_1d(dz.size), (_THREADS,),
                    (y, argmax, dy, dz, np.int64(n * f), i32(oh), i32(ow), i32(PH), i32(PW), i32(ph), i32(pw),
                     i32(_activations.code(act))))
        # split the batch so that about 4 blocks per SM share the weight-gradient sums
        nsplit = max(1, min(n, _ceil_div(4 * self.n_sm, f * c)))
        wpart = self.workspace("conv_wpart", (nsplit, f * c * kh * kw), dt)
        bpart = self.workspace("conv_bpart", (nsplit, f), dt)
        self.launch("fm_conv_wgrad_partial", dt, (f * c, nsplit), (_THREADS,),
                    (x, dz, wpart, bpart, i32(n), i32(c), i32(h), i32(wd), i32(f), i32(kh), i32(kw), i32(oh),
                     i32(ow), i32(nsplit)))
        nw = f * c * kh * kw
        self.launch("fm_conv_wgrad_finalize", dt, self._grid_1d(nw + f), (_THREADS,),
                    (wpart, bpart, dw, db, np.int64(nw), i32(f), i32(nsplit)))
        if dx is not None:
            self.launch("fm_conv_dgrad", dt, (_ceil_div(h * wd, _THREADS), c, n), (_THREADS,),
                        (dz, w, dx, i32(c), i32(h), i32(wd), i32(f), i32(kh), i32(kw), i32(oh), i32(ow)),
                        CONV_FG * kh * kw * x.itemsize)

    # -- dense -----------------------------------------------------------------------

    def dense_forward(self, x, w, b, act, y, scale=1.0):
        n, n_in, n_out = _checks.dense_forward(x, w, b, act, y, scale, xp=self.xp)
        self.xp.matmul(x, w, out=y)
        self.launch("fm_bias_act", x.dtype, self._grid_1d(n * n_out), (_THREADS,),
                    (y, b, np.int64(n), np.int32(n_out), x.dtype.type(scale),
                     np.int32(_activations.code(act))))

    def dense_backward(self, x, w, y, dy, act, dw, db, dx):
        n, n_in, n_out = _checks.dense_backward(x, w, y, dy, act, dw, db, dx, xp=self.xp)
        dz = self.workspace("dense_dz", (n, n_out), x.dtype)
        self.launch("fm_dense_dz_db", x.dtype, (_ceil_div(n_out, 32),), (32, 8),
                    (dy, y, dz, db, np.int32(n), np.int32(n_out), np.int32(_activations.code(act))))
        self.xp.matmul(x.T, dz, out=dw)
        if dx is not None:
            self.xp.matmul(dz, w.T, out=dx)

    # -- dropout ---------------------------------------------------------------------

    def dropout_mask(self, rng, keep, out):
        if not (0 < keep <= 1):
            raise ValueError(f"keep probability must be in (0, 1], got {keep!r}")
        _checks.float_array("out", out, out.ndim, xp=self.xp)
        u = rng.random(out.shape, dtype=out.dtype)
        self.launch("fm_bernoulli_mask", out.dtype, self._grid_1d(out.size), (_THREADS,),
                    (u, out, np.int64(out.size), out.dtype.type(keep)))

    def apply_mask(self, x, mask, out):
        _checks.apply_mask(x, mask, out, xp=self.xp)
        self.launch("fm_apply_mask", x.dtype, self._grid_1d(x.size), (_THREADS,),
                    (x, mask, out, np.int64(x.size)))

    # -- softmax + NLL -------------------------------------------------------------

    def softmax_nll_forward(self, z, labels, probs):
        n, k = _checks.softmax_nll_forward(z, labels, probs, xp=self.xp)
        cost = self.xp.empty((), dtype=np.float64)
        correct = self.xp.empty((), dtype=np.int32)
        # one block: the reductions to the two scalars stay in one launch, in a fixed order
        self.launch("fm_softmax_nll_fwd", z.dtype, (1,), (_THREADS,),
                    (z, self._labels(labels), probs, cost, correct, np.int32(n), np.int32(k),
                     np.int32(labels is not None)))
        if labels is None:
            return None, None
        return cost, correct

    def softmax_nll_backward(self, probs, labels, dz):
        n, k = _checks.softmax_nll_backward(probs, labels, dz, xp=self.xp)
        self.launch("fm_softmax_nll_bwd", probs.dtype, self._grid_1d(n * k), (_THREADS,),
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
        self.launch("fm_momentum_step", p.dtype, self._grid_1d(units), (_THREADS,),
                    (p, g, v if momentum != 0 else p, np.int64(n), np.int64(n_decay), np.int64(head),
                     np.int64(nvec), t(eta), t(momentum), t(decay), np.int32(bool(nesterov))))

    def sum_squares(self, a):
        r = a.ravel()
        return float(self.xp.dot(r, r))


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


def _module():
    cupy = _cupy()
    dev = cupy.cuda.Device().id
    cache = getattr(_module, "cache", None)
    if cache is None:
        cache = _module.cache = {}
    mod = cache.get(dev)
    if mod is None:
        opts = COMPILE_OPTIONS + (f"-I{source_dir()}",)
        mod = cache[dev] = cupy.RawModule(code=module_source(), options=opts, name_expressions=NAME_EXPRESSIONS)
    return mod


def _cupy_launch(expr, grid, block, args, shared_mem):
    _module().get_function(expr)(grid, block, args, shared_mem=shared_mem)


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


def conv_pool_forward(x, w, b, poolsize, act, y, argmax):
    """Fused conv + max-pool + bias + activation (see :mod:`fastmom.backends.reference`)."""
    kernels().conv_pool_forward(x, w, b, poolsize, act, y, argmax)


def conv_pool_backward(x, w, y, argmax, dy, poolsize, act, dw, db, dx):
    kernels().conv_pool_backward(x, w, y, argmax, dy, poolsize, act, dw, db, dx)


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
