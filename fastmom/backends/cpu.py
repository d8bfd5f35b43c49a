"""The ``cpu`` backend: compiled Cython + OpenMP kernels (``fastmom._kernels._cpu``).

Same interface and semantics as :mod:`fastmom.backends.reference` (see its module
docstring), plus :func:`set_num_threads` / :func:`get_num_threads`.

Every wrapper runs the shared :mod:`~fastmom.backends._checks` first, so a wrong shape,
dtype or layout raises before any ``nogil`` code runs. Scratch space (im2col columns,
per-chunk partial gradients) is cached here keyed by shape, dtype and thread count:
it is allocated on the first call and reused by every later training step.

Threading: one OpenMP team does all parallel work; the BLAS that the kernels call
(``scipy.linalg.cython_blas``) is limited to one thread and called from inside the
OpenMP regions on per-thread slices. Two thread pools that both spin-wait after their
work (libgomp and OpenBLAS's pthreads) would otherwise fight over the cores.
"""
from __future__ import annotations

import os
import threading
import warnings

import numpy as np

from . import _checks
from . import reference as _reference

name = "cpu"
xp = np

# libgomp's idle workers spin (about 300,000 iterations) before sleeping. On 2 shared
# cores that spin steals the core the other runtime, the next serial code or another
# process needs: measured here with the load average at 5, a batch-10 training step took
# 104 ms with the default spin, 21 ms with GOMP_SPINCOUNT=20000, 5 ms with passive
# waiting and 2.8 ms on one thread. So wait passively unless the user chose a policy;
# this must be set before libgomp initialises, i.e. before the extension's first import.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "passive"

try:
    from .._kernels import _cpu as _k
except ImportError as exc:  # not built (e.g. a source checkout without build_ext)
    _k = None
    _import_error = f"the compiled kernels are not built ({exc}); run `pip install .`"
else:
    _import_error = None

_ACT = {n: i for i, n in enumerate(_checks.ACTIVATION_NAMES)}
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


# -- threads --------------------------------------------------------------------------

# the kernels take the count as a C int and size per-thread scratch by it; beyond this
# an OpenMP team is a mistake, not a configuration
MAX_THREADS = 1024


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _default_threads():
    """``$FASTMOM_NUM_THREADS``, else the cores available. A bad value warns and falls
    back to the cores: raising here would make the whole backend fail to import."""
    env = os.environ.get("FASTMOM_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if 1 <= n <= MAX_THREADS:
            return n
        warnings.warn(f"FASTMOM_NUM_THREADS must be an int in [1, {MAX_THREADS}], got {env!r}; "
                      f"using the {_cores()} available cores", RuntimeWarning, stacklevel=2)
    return _cores()


_num_threads = _default_threads()


def set_num_threads(n):
    """Set the number of OpenMP threads the kernels use (an int in ``[1, MAX_THREADS]``)."""
    global _num_threads
    try:
        v = int(n)
    except (TypeError, ValueError):
        raise TypeError(f"n must be a positive int, got {n!r}") from None
    if v != n or not 1 <= v <= MAX_THREADS:
        raise ValueError(f"n must be a positive int no larger than {MAX_THREADS}, got {n!r}")
    _num_threads = v


def get_num_threads():
    """The number of threads the kernels use: ``$FASTMOM_NUM_THREADS``, else the cores
    available to this process, unless :func:`set_num_threads` changed it."""
    return _num_threads


def _limit_blas_threads():
    """Run the BLAS behind ``scipy.linalg.cython_blas`` on one thread (see module doc)."""
    try:
        import scipy
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return
    scipy_root = os.path.dirname(os.path.dirname(os.path.abspath(scipy.__file__)))
    ours = [lib for lib in ThreadpoolController().select(user_api="blas").lib_controllers
            if os.path.abspath(lib.filepath).startswith(os.path.join(scipy_root, "scipy"))]
    if not ours:
        # scipy linked against a system BLAS: we cannot tell it apart, so limit them all
        ours = ThreadpoolController().select(user_api="blas").lib_controllers
    for lib in ours:
        lib.set_num_threads(1)


if _k is not None:
    _limit_blas_threads()


# -- array helpers (as the reference) ----------------------------------------------------

asarray = _reference.asarray
to_numpy = _reference.to_numpy
empty = _reference.empty
zeros = _reference.zeros
make_rng = _reference.make_rng


def synchronize():
    """Nothing to wait for: kernels return when their work is done."""


# -- scratch space ------------------------------------------------------------------------

_scratch = {}


def _workspace(key, shape, dtype):
    """A cached uninitialised array for ``key``; allocated once per key.

    Keyed by the calling Python thread too: the kernels release the GIL, so two threads
    training two networks at once must not share scratch space.
    """
    k = (key, shape, np.dtype(dtype).str, threading.get_ident())
    buf = _scratch.get(k)
    if buf is None:
        buf = _scratch[k] = np.empty(shape, dtype=dtype)
    return buf


def clear_workspaces():
    """Drop every cached scratch buffer (they are re-allocated on demand)."""
    _scratch.clear()


def _conv_chunk(n, ohow, cols=None):
    """Images per chunk: a function of the shapes only (not of the thread count), so
    that results are bit-identical for any number of threads."""
    return max(1, min(n, (cols or _COLS_PER_CHUNK) // ohow))


def conv_pool_forward(x, w, b, poolsize, act, y, argmax):
    """Fused valid cross-correlation + max-pool + bias + activation (see module doc)."""
    n, c, h, wd, f, kh, kw, oh, ow, PH, PW = _checks.conv_pool_forward(
        x, w, b, poolsize, act, y, argmax, xp=np)
    ph, pw = _checks.pool(poolsize)
    ib = _conv_chunk(n, oh * ow)
    nt = min(_num_threads, -(-n // ib))
    k = c * kh * kw
    scratch = _workspace(("conv_fwd", nt), (nt, (k + f) * ib * oh * ow), x.dtype)
    _k.conv_pool_forward(x, w, b, ph, pw, _ACT[act], y, argmax, scratch, ib, nt)


def conv_pool_backward(x, w, y, argmax, dy, poolsize, act, dw, db, dx):
    """Gradients of :func:`conv_pool_forward` (see module doc); ``dx=None`` skips the input
    gradient."""
    n, c, h, wd, f, kh, kw, oh, ow, PH, PW = _checks.conv_pool_backward(
        x, w, y, argmax, dy, poolsize, act, dw, db, dx, xp=np)
    ph, pw = _checks.pool(poolsize)
    ib = _conv_chunk(n, oh * ow, _COLS_PER_CHUNK_BWD)
    nchunks = -(-n // ib)
    group = max(1, nchunks // _BWD_GROUPS)
    ngroups = -(-nchunks // group)
    nt = min(_num_threads, ngroups)
    k = c * kh * kw
    scratch = _workspace(("conv_bwd", nt), (nt, (2 * k + f) * ib * oh * ow), x.dtype)
    partial = _workspace("conv_bwd_partial", (ngroups, f * k + f), x.dtype)
    _k.conv_pool_backward(x, w, y, argmax, dy, ph, pw, _ACT[act], dw, db, dx, scratch, partial,
                          ib, group, nt)


def _dense_threads(n, n_in, n_out):
    # below ~4 MFLOP (~40 us on one core) waking a second, passively waiting thread
    # costs about as much as its share of the GEMM saves
    return 1 if n * n_in * n_out < 2_000_000 else _num_threads


def dense_forward(x, w, b, act, y, scale=1.0):
    """``y = act(scale * x @ w + b)``."""
    n, n_in, n_out = _checks.dense_forward(x, w, b, act, y, scale, xp=np)
    _k.dense_forward(x, w, b, _ACT[act], y, float(scale), _dense_threads(n, n_in, n_out))


def dense_backward(x, w, y, dy, act, dw, db, dx):
    """Gradients of :func:`dense_forward` with ``scale=1``."""
    n, n_in, n_out = _checks.dense_backward(x, w, y, dy, act, dw, db, dx, xp=np)
    scratch = _workspace("dense_dz", (n * n_out,), x.dtype)
    _k.dense_backward(x, w, y, dy, _ACT[act], dw, db, dx, scratch, _dense_threads(n, n_in, n_out))


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
    _k.apply_mask(x.reshape(-1), mask.reshape(-1), out.reshape(-1), _num_threads)


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


def momentum_step(p, g, v, eta, momentum, nesterov, decay, n_decay):
    """One fused in-place momentum-SGD pass (see ``reference.momentum_step``)."""
    _checks.momentum_step(p, g, v, eta, momentum, nesterov, decay, n_decay, xp=np)
    if momentum == 0:
        v = g  # never touched by the kernel; a typed stand-in for the fused-type dispatch
    _k.momentum_step(p, g, v, float(eta), float(momentum), bool(nesterov), float(decay),
                     int(n_decay), _num_threads)


def sum_squares(a) -> float:
    """``sum(a**2)`` accumulated in double precision."""
    _checks.float_array("a", a, a.ndim if hasattr(a, "ndim") else 1, xp=np)
    return float(_k.sum_squares(a.reshape(-1), _num_threads))
