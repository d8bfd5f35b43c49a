"""The ``cpu`` backend: compiled Cython + OpenMP kernels (``fastmom._kernels._cpu``).

Same interface and semantics as :mod:`fastmom.backends.reference` (see its module
docstring), plus :func:`set_num_threads` / :func:`get_num_threads`.

Every wrapper runs the shared :mod:`~fastmom.backends._checks` first, so a wrong shape,
dtype or layout raises before any ``nogil`` code runs. Scratch space (im2col columns
or channel-last images, packed filters, per-group partial gradients; the kernel module
says how much for which path) is cached here keyed by shape, dtype and thread count:
it is allocated on the first call and reused by every later training step.

Threading: one OpenMP team does all parallel work; the BLAS that the kernels call
(``scipy.linalg.cython_blas``) is limited to one thread and called from inside the
OpenMP regions on per-thread slices. Two thread pools that both spin-wait after their
work (libgomp and OpenBLAS's pthreads) would otherwise fight over the cores. Idle
workers spin briefly (``GOMP_SPINCOUNT``, see below) so that the next region starts
without a wake-up, and the thread count is automatic unless fixed: the cores that
other processes leave free, re-measured four times a second, because on a busy machine
one thread beats two that wait on each other. The kernels cut work into slices fixed
by the shapes, so results are bit-identical whatever the count.
"""
from __future__ import annotations

import functools
import os
import threading

import numpy as np

from .. import activations as _activations
from . import _checks, cpu_threads
from . import reference as _reference
# the kernels' team size for each call (cpu_threads sets libgomp's spin before the
# extension below is first imported, as it must)
from .cpu_threads import (SPINNING, _threads, get_num_threads, set_num_threads,  # noqa: F401
                          thread_setting)

name = "cpu"
xp = np

#: The instruction-set levels of the C kernels, lowest first (see kernels/cpu/isa.h).
ISA_LEVELS = ("baseline", "avx2", "avx512")

try:
    from .._kernels import _cpu as _k
except ImportError as exc:  # not built (no C compiler at install), or no usable level
    _k = None
    _import_error = (f"the compiled kernels are not available ({exc}); with a C compiler "
                     "(e.g. `apt install gcc`), `pip install --force-reinstall --no-deps .` "
                     "builds them")
    # `import fastmom` has already warned once (fastmom/__init__.py); is_available() says why
else:
    _import_error = None


def set_isa(level):
    """Run the C kernels at instruction-set ``level`` (one of :data:`ISA_LEVELS`) from now
    on, e.g. a lower one than this CPU's best to compare them; not while a kernel runs.
    Raises ValueError for a level this build lacks or this CPU cannot run (its code
    would die of an illegal instruction). Results are bit-identical for any thread count
    within a level and agree to rounding across levels."""
    if _k is None:
        raise RuntimeError(f"cpu backend unavailable: {_import_error}")
    if level not in ISA_LEVELS:
        raise ValueError(f"level must be one of {ISA_LEVELS}, got {level!r}")
    _k.select_isa(level)


def isa():
    """The instruction-set level the kernels run at: the highest this CPU runs, unless
    ``FASTMOM_ISA`` or :func:`set_isa` chose a lower one (None when not built)."""
    return _k.isa() if _k is not None else None


def supported_isas():
    """The levels built into the kernels that this CPU runs, lowest first."""
    return tuple(k for k, ok in _k.isa_levels().items() if ok) if _k is not None else ()


def thread_policy():
    """:func:`cpu_threads.thread_policy` plus the kernels' instruction-set level, for
    benchmark and run records."""
    return dict(cpu_threads.thread_policy(), isa=isa())


if _k is not None and os.environ.get("FASTMOM_ISA", "").strip():
    # a level the CPU lacks makes the backend unavailable with this message (get_backend
    # raises DeviceError with it): never a crash, never a silent fallback
    try:
        set_isa(os.environ["FASTMOM_ISA"].strip().lower())
    except ValueError as exc:
        _k = None
        _import_error = f"FASTMOM_ISA={os.environ['FASTMOM_ISA']!r}: {exc}"

_ACT = _activations.CODES
# Chunks of images are the units of work of the conv kernels; their widths matter on
# the im2col + GEMM paths (on the direct and scattered ones a chunk is just ib images).
# GEMM columns per im2col chunk (images * OH*OW): measured flat from 128 to 512 for
# network3's conv2, slower above; small chunks balance a batch of 10 over 2 threads
_COLS_PER_CHUNK = 128
# the backward pass's two GEMMs per chunk gain from wider chunks (measured 8-10% faster
# for conv2 at 256 than 128 columns, at batch 10, 64 and 256; slower at 512 for batch 10)
_COLS_PER_CHUNK_BWD = 256
# backward chunks are summed in groups of consecutive chunks (see the kernel): aim for
# this many groups, enough to balance the threads, few enough that the serial sum of
# the groups' dw partials stays small
_BWD_GROUPS = 16


def is_available():
    """True when the compiled kernels import; otherwise a string saying why not."""
    return True if _k is not None else _import_error


if _k is not None:
    cpu_threads.limit_blas_threads()


# -- array helpers (as the reference) ----------------------------------------------------

asarray = _reference.asarray
to_numpy = _reference.to_numpy
empty = _reference.empty
zeros = _reference.zeros
make_rng = _reference.make_rng
rng_state = _reference.rng_state
set_rng_state = _reference.set_rng_state


def synchronize():
    """Nothing to wait for: kernels return when their work is done."""


# -- scratch space ------------------------------------------------------------------------

_scratch = {}


_ALIGN = 64  # bytes: a cache line, and an AVX-512 vector


def _workspace(key, shape, dtype, rows=False):
    """A cached uninitialised array for ``key``; allocated once per key.

    Keyed by the calling Python thread too: the kernels release the GIL, so two threads
    training two networks at once must not share scratch space. It starts at a multiple
    of 64 bytes and, with ``rows`` (a kernel's per-thread or per-group rows, which may be
    longer than asked), so does each row of a 2-D shape, its last axis padded: NumPy's
    buffers start 16 bytes past one, and there half the kernels' 32-byte vector loads
    from their scratch rows straddled two cache lines (network3's conv2 backward 1.1-1.2x
    slower).
    """
    k = (key, shape, np.dtype(dtype).str, threading.get_ident())
    buf = _scratch.get(k)
    if buf is None:
        dt = np.dtype(dtype)
        per = _ALIGN // dt.itemsize
        padded = (*shape[:-1], -(-shape[-1] // per) * per) if rows and len(shape) > 1 else tuple(shape)
        nbytes = int(np.prod(padded)) * dt.itemsize
        raw = np.empty(nbytes + _ALIGN, np.uint8)
        start = -raw.ctypes.data % _ALIGN
        buf = _scratch[k] = raw[start:start + nbytes].view(dt).reshape(padded)
    return buf


def _conv_chunk(n, ohow, cols=None):
    """Images per chunk: a function of the shapes only (not of the thread count), so
    that results are bit-identical for any number of threads."""
    return max(1, min(n, (cols or _COLS_PER_CHUNK) // ohow))


def conv_pool_forward(x, w, b, poolsize, act, y, argmax, pool_ties="first"):
    """Fused valid cross-correlation + max-pool + bias + activation (see module doc)."""
    n, c, h, wd, f, kh, kw, oh, ow, PH, PW = _checks.conv_pool_forward(
        x, w, b, poolsize, act, y, argmax, pool_ties, xp=np)
    ph, pw = _checks.pool(poolsize)
    ib = _conv_chunk(n, oh * ow)
    threads, nchunks = _threads(), -(-n // ib)
    if nchunks % min(threads, nchunks) and \
            _k.conv_forward_path(c, kh, kw, ph, pw, x.itemsize) != "im2col":
        # the direct paths convolve image by image, so their result does not depend on
        # ib: where the chunks do not split evenly over the threads, one image a chunk
        # (network3's conv2 at batch 10 on two threads: 5 chunks of 2 images ran 3:2,
        # 10 of 1 run 5:5, 15% faster; at 64, 2-image chunks stay 7% faster than 1)
        ib = 1
    nt = min(threads, -(-n // ib))
    s_len, k_len = _k.conv_forward_sizes(c, h, wd, f, kh, kw, ph, pw, ib, x.itemsize)
    scratch = _workspace(("conv_fwd", nt), (nt, s_len), x.dtype, rows=True)
    packed = _workspace("conv_fwd_packed", (k_len,), x.dtype)
    _k.conv_pool_forward(x, w, b, ph, pw, _ACT[act], y, argmax, scratch, packed, ib, nt,
                         pool_ties == "all")


@functools.lru_cache(maxsize=256)
def _balanced_chunk(n, ib):
    """Images per backward chunk, from ``ib`` to half as many more (fewer would narrow the
    GEMM path's products), whose groups of chunks two threads finish soonest (the
    project's machines have two cores), handed out in order to the first free thread as
    the kernel's dynamic schedule does; the smallest on a tie. From the shapes only: the
    groups fix the order of the weight gradient's sum, so the result stays the same for
    any thread count. network3's conv2 at batch 10 takes 2 chunks of 5 images instead of
    4 + 4 + 2 (6:4 images a thread): 427-480 against 505-539 us (two threads, Zen 3)."""
    def finish(b):
        per = max(1, -(-n // b) // _BWD_GROUPS) * b  # images per group
        loads = [0, 0]
        for start in range(0, n, per):
            loads[loads.index(min(loads))] += min(per, n - start)
        return max(loads)
    return min(range(ib, ib + ib // 2 + 1), key=lambda b: (finish(b), b))


def conv_pool_backward(x, w, y, argmax, dy, poolsize, act, dw, db, dx, pool_ties="first"):
    """Gradients of :func:`conv_pool_forward` (see module doc); ``dx=None`` skips the input
    gradient."""
    n, c, h, wd, f, kh, kw, oh, ow, PH, PW = _checks.conv_pool_backward(
        x, w, y, argmax, dy, poolsize, act, dw, db, dx, pool_ties, xp=np)
    ph, pw = _checks.pool(poolsize)
    ib = _balanced_chunk(n, _conv_chunk(n, oh * ow, _COLS_PER_CHUNK_BWD))
    nchunks = -(-n // ib)
    group = max(1, nchunks // _BWD_GROUPS)
    ngroups = -(-nchunks // group)
    nt = min(_threads(), ngroups)
    s_len, p_len, k_len = _k.conv_backward_sizes(c, h, wd, f, kh, kw, ph, pw, ib, x.itemsize,
                                                 dx is not None)
    scratch = _workspace(("conv_bwd", nt), (nt, s_len), x.dtype, rows=True)
    partial = _workspace("conv_bwd_partial", (ngroups, p_len), x.dtype, rows=True)
    packed = _workspace("conv_bwd_packed", (k_len,), x.dtype)
    _k.conv_pool_backward(x, w, y, argmax, dy, ph, pw, _ACT[act], dw, db, dx, scratch, partial,
                          packed, ib, group, nt, pool_ties == "all")


def _dense_slices(n, n_in, n_out):
    """Row slices of a dense layer's GEMMs, from the shapes alone (see the kernels' doc):
    one below ~4 MFLOP (~40 us on one core, less than waking a thread can save), else
    slices of at least 32 rows, at most 8."""
    if n * n_in * n_out < 2_000_000:
        return 1
    return max(1, min(8, n // 32))


#: Batches of at most this many rows take the small-batch dense kernels
#: (kernels/cpu/dense_small.h: one pass over the weights, no packing), larger ones the
#: BLAS (issue 14: at 10 rows sgemm packs the whole weight matrix for 10 multiply-adds
#: per weight). Set it to 0 to force the BLAS (bench). 32 is the issue's bound: at 32 the
#: new path still measured 1.1-1.7x faster; above it nothing was measured.
DENSE_SMALL_ROWS = 32
#: ... and, backward, at least this many outputs: dx's dot products run along the
#: outputs and end in a lane reduction each; at 10 outputs (the softmax layer) that
#: reduction dominates and the BLAS was 2x faster (docs/performance.md).
DENSE_SMALL_BWD_MIN_OUT = 64


def _dense_small_slices(n, n_split, n_other):
    """Slices of the small-batch kernels: of the output columns (forward) or the weight
    rows (backward), ``n_split`` of them, in units of 64; from the shapes alone, one below
    ~4 MFLOP as for the GEMMs, else one per 128 columns or rows, at most 8."""
    if n * n_split * n_other < 2_000_000:
        return 1
    return max(1, min(8, n_split // 128))


def dense_forward(x, w, b, act, y, scale=1.0):
    """``y = act(scale * x @ w + b)``."""
    n, n_in, n_out = _checks.dense_forward(x, w, b, act, y, scale, xp=np)
    if n <= DENSE_SMALL_ROWS:
        _k.dense_forward(x, w, b, _ACT[act], y, float(scale),
                         _dense_small_slices(n, n_out, n_in), _threads(), True)
    else:
        _k.dense_forward(x, w, b, _ACT[act], y, float(scale), _dense_slices(n, n_in, n_out),
                         _threads())


def dense_backward(x, w, y, dy, act, dw, db, dx):
    """Gradients of :func:`dense_forward` with ``scale=1``."""
    n, n_in, n_out = _checks.dense_backward(x, w, y, dy, act, dw, db, dx, xp=np)
    scratch = _workspace("dense_dz", (n * n_out,), x.dtype)
    if n <= DENSE_SMALL_ROWS and n_out >= DENSE_SMALL_BWD_MIN_OUT:
        _k.dense_backward(x, w, y, dy, _ACT[act], dw, db, dx, scratch,
                          _dense_small_slices(n, n_in, n_out), _threads(), True)
    else:
        _k.dense_backward(x, w, y, dy, _ACT[act], dw, db, dx, scratch,
                          _dense_slices(n, n_in, n_out), _threads())


def dropout_mask(rng, keep, out):
    """Bernoulli(``keep``) 0/1 mask into ``out``: the reference's draw (float64 uniforms
    from the same Generator stream, so both backends train identically from a seed),
    into a cached buffer so that a training step allocates nothing."""
    _checks.keep_probability(keep)
    u = _workspace("dropout", out.shape, np.float64)
    rng.random(out=u)
    np.less(u, keep, out=out, casting="unsafe")


def apply_mask(x, mask, out):
    """``out = x * mask`` (``out`` may be ``x``)."""
    _checks.apply_mask(x, mask, out, xp=np)
    _k.apply_mask(x.reshape(-1), mask.reshape(-1), out.reshape(-1), _threads())


_NO_LABELS = np.zeros(1, dtype=np.int64)


def softmax_nll_forward(z, labels, probs):
    """Stable softmax into ``probs``; with labels, ``(mean NLL, correct count)``."""
    n, k = _checks.softmax_nll_forward(z, labels, probs, xp=np)
    if labels is None:
        _k.softmax_nll_forward(z, _NO_LABELS, probs, False)
        return None, None
    _checks.labels_range(labels, k)
    nll, correct = _k.softmax_nll_forward(z, labels, probs, True)
    return nll / n, int(correct)


def softmax_nll_backward(probs, labels, dz):
    """``dz = (probs - onehot(labels)) / N``."""
    n, k = _checks.softmax_nll_backward(probs, labels, dz, xp=np)
    _checks.labels_range(labels, k)
    _k.softmax_nll_backward(probs, labels, dz)


# below this many parameters the momentum step runs on one thread: waking a spinning
# worker costs about 1 us, a sleeping one about 65 us (see SPINNING above); 32,768 floats
# take about 6 us on one core, 262,144 about 45 us
_MOMENTUM_PARALLEL_MIN = 32768 if SPINNING else 262144


def momentum_step(p, g, v, eta, momentum, nesterov, decay, n_decay):
    """One fused in-place momentum-SGD pass (see ``reference.momentum_step``)."""
    _checks.momentum_step(p, g, v, eta, momentum, nesterov, decay, n_decay, xp=np)
    if momentum == 0:
        v = g  # never touched by the kernel; a typed stand-in for the fused-type dispatch
    nt = 1 if p.shape[0] < _MOMENTUM_PARALLEL_MIN else _threads()
    _k.momentum_step(p, g, v, float(eta), float(momentum), bool(nesterov), float(decay),
                     int(n_decay), nt)


def sum_squares(a) -> float:
    """``sum(a**2)`` accumulated in double precision."""
    _checks.float_array("a", a, a.ndim if hasattr(a, "ndim") else 1, xp=np)
    return float(_k.sum_squares(a.reshape(-1), _threads()))
