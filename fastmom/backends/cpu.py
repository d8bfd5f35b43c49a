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

import math
import os
import threading
import time
import warnings

import numpy as np

from .. import activations as _activations
from . import _checks
from . import reference as _reference

name = "cpu"
xp = np

# Between two parallel regions libgomp's workers wait for the next one. Waiting
# passively (futex sleep) costs a wake-up per region: about 65 us on this project's
# 2-core VM, i.e. a 2-thread momentum step over 85,670 floats took 75 us instead of
# 8.5 us, and a batch-10 training step (about six regions) 1.61 ms instead of 1.30 ms.
# libgomp's default spin (about 300,000 iterations, ~8 ms of a core here) is the other
# extreme: with the load average at 5 it made that step 104 ms. So spin briefly:
# GOMP_SPINCOUNT=10000 is about 0.3 ms here, longer than the gaps inside a training
# step; and when other processes keep the cores busy, the automatic thread count (below)
# drops to what is free, because even a short spin then hurts (with one busy process
# on the 2 cores: 1.87 ms on one thread, 2.16 ms on two passive, 5.0 ms on two spinning).
# An explicit OMP_WAIT_POLICY or GOMP_SPINCOUNT wins. This must be set before libgomp
# initialises, i.e. before the extension's first import.
_SPIN_COUNT = "10000"
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = _SPIN_COUNT
#: Whether idle workers spin between regions, so that waking them is cheap.
SPINNING = (os.environ.get("OMP_WAIT_POLICY", "").strip().lower() != "passive"
            and os.environ.get("GOMP_SPINCOUNT", "1").strip() not in ("0", ""))

try:
    from .._kernels import _cpu as _k
except ImportError as exc:  # not built (e.g. a source checkout without build_ext)
    _k = None
    _import_error = f"the compiled kernels are not built ({exc}); run `pip install .`"
else:
    _import_error = None

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


# -- threads --------------------------------------------------------------------------

# the kernels take the count as a C int and size per-thread scratch by it; beyond this
# an OpenMP team is a mistake, not a configuration
MAX_THREADS = 1024
# the automatic count looks at the machine's load at most this often (seconds)
LOAD_INTERVAL = 0.25
# other processes' load (in cores) tolerated before the automatic count gives up a core:
# below it the load is noise (interrupts, a shell), above it a core is taken
LOAD_SLACK = 0.4


def _cpu_set():
    """The CPUs this process may run on (empty where the OS does not say)."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return frozenset()


_CPUS = _cpu_set()


def _cores():
    return len(_CPUS) or os.cpu_count() or 1


def _env_threads():
    """``$FASTMOM_NUM_THREADS`` as an int, or None for the automatic count (unset or
    ``auto``). A bad value warns and means automatic: raising here would make the whole
    backend fail to import."""
    env = os.environ.get("FASTMOM_NUM_THREADS", "").strip()
    if not env or env.lower() == "auto":
        return None
    try:
        n = int(env)
    except ValueError:
        n = 0
    if 1 <= n <= MAX_THREADS:
        return n
    warnings.warn(f"FASTMOM_NUM_THREADS must be an int in [1, {MAX_THREADS}] or 'auto', got "
                  f"{env!r}; using the automatic thread count", RuntimeWarning, stacklevel=2)
    return None


def threads_for_load(cores, other_load):
    """The automatic thread count: the cores not taken by other processes.

    ``other_load`` is the CPU time other processes (and the hypervisor's steal) used on
    this process's cores per second of wall time, in cores. A load up to
    :data:`LOAD_SLACK` is ignored; each further started core's worth costs a thread. At
    least one thread, at most ``cores``.
    """
    return max(1, min(cores, cores - math.ceil(other_load - LOAD_SLACK)))


def _busy_seconds(cpus):
    """CPU seconds spent busy (user, nice, system, irq, softirq, steal) on ``cpus`` since
    boot, from ``/proc/stat``; None where that file is missing (not Linux)."""
    try:
        with open("/proc/stat", "rb") as fh:
            text = fh.read()
        ticks = 0
        for line in text.split(b"\n")[1:]:
            if not line.startswith(b"cpu"):
                break
            fields = line.split()
            if int(fields[0][3:]) in cpus:
                user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields[1:9])
                ticks += user + nice + system + irq + softirq + steal
    except (OSError, ValueError):  # no /proc (not Linux), or a format we do not know
        return None
    return ticks / _CLK_TCK


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_fixed_threads = _env_threads()   # None: automatic
_auto_threads = _cores()
_other_load = 0.0


def _sample():
    """One look at the machine: ``(wall clock, busy CPU seconds of our cores or None,
    this process's CPU seconds)``."""
    return time.monotonic(), (_busy_seconds(_CPUS) if _CPUS else None), time.process_time()


_last_sample = _sample()


def _update_auto_threads():
    """Measure other processes' load since the last sample and set the automatic count."""
    global _last_sample, _auto_threads, _other_load
    (wall0, busy0, own0), (wall1, busy1, own1) = _last_sample, _sample()
    _last_sample = (wall1, busy1, own1)
    if busy0 is None or busy1 is None or wall1 <= wall0:
        return
    _other_load = max(0.0, ((busy1 - busy0) - (own1 - own0)) / (wall1 - wall0))
    _auto_threads = threads_for_load(len(_CPUS), _other_load)


def _threads():
    """The thread count for the next kernel call (what :func:`get_num_threads` says)."""
    if _fixed_threads is not None:
        return _fixed_threads
    if time.monotonic() - _last_sample[0] >= LOAD_INTERVAL:
        _update_auto_threads()
    return _auto_threads


def set_num_threads(n):
    """Fix the number of OpenMP threads the kernels use (an int in ``[1, MAX_THREADS]``),
    or go back to the automatic count with ``None``."""
    global _fixed_threads
    if n is None:
        _fixed_threads = None
        return
    try:
        v = int(n)
    except (TypeError, ValueError):
        raise TypeError(f"n must be a positive int or None, got {n!r}") from None
    if v != n or not 1 <= v <= MAX_THREADS:
        raise ValueError(f"n must be a positive int no larger than {MAX_THREADS}, got {n!r}")
    _fixed_threads = v


def get_num_threads():
    """The number of threads the next kernel call will use.

    Fixed by ``$FASTMOM_NUM_THREADS`` or :func:`set_num_threads`; otherwise automatic:
    the cores available to this process, less those other processes keep busy
    (re-measured from ``/proc/stat`` every :data:`LOAD_INTERVAL` seconds, see
    :func:`threads_for_load`). Results never depend on the count: the kernels cut the
    work into slices fixed by the shapes alone.
    """
    return _threads()


def thread_setting():
    """What :func:`set_num_threads` was given: an int, or None for the automatic count."""
    return _fixed_threads


def thread_policy():
    """A description of the threading, for benchmark and run records."""
    return {"setting": "auto" if _fixed_threads is None else _fixed_threads,
            "threads_now": _threads(), "cores": _cores(), "other_load": round(_other_load, 2),
            "spinning": SPINNING, "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}


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
rng_state = _reference.rng_state
set_rng_state = _reference.set_rng_state


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
    nt = min(_threads(), -(-n // ib))
    s_len, k_len = _k.conv_forward_sizes(c, h, wd, f, kh, kw, ph, pw, ib)
    scratch = _workspace(("conv_fwd", nt), (nt, s_len), x.dtype)
    packed = _workspace("conv_fwd_packed", (k_len,), x.dtype)
    _k.conv_pool_forward(x, w, b, ph, pw, _ACT[act], y, argmax, scratch, packed, ib, nt)


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
    nt = min(_threads(), ngroups)
    s_len, p_len, k_len = _k.conv_backward_sizes(c, h, wd, f, kh, kw, ph, pw, ib, x.itemsize)
    scratch = _workspace(("conv_bwd", nt), (nt, s_len), x.dtype)
    partial = _workspace("conv_bwd_partial", (ngroups, p_len), x.dtype)
    packed = _workspace("conv_bwd_packed", (k_len,), x.dtype)
    _k.conv_pool_backward(x, w, y, argmax, dy, ph, pw, _ACT[act], dw, db, dx, scratch, partial,
                          packed, ib, group, nt)


def _dense_slices(n, n_in, n_out):
    """Row slices of a dense layer's GEMMs, from the shapes alone (see the kernels' doc):
    one below ~4 MFLOP (~40 us on one core, less than waking a thread can save), else
    slices of at least 32 rows, at most 8."""
    if n * n_in * n_out < 2_000_000:
        return 1
    return max(1, min(8, n // 32))


def dense_forward(x, w, b, act, y, scale=1.0):
    """``y = act(scale * x @ w + b)``."""
    n, n_in, n_out = _checks.dense_forward(x, w, b, act, y, scale, xp=np)
    _k.dense_forward(x, w, b, _ACT[act], y, float(scale), _dense_slices(n, n_in, n_out), _threads())


def dense_backward(x, w, y, dy, act, dw, db, dx):
    """Gradients of :func:`dense_forward` with ``scale=1``."""
    n, n_in, n_out = _checks.dense_backward(x, w, y, dy, act, dw, db, dx, xp=np)
    scratch = _workspace("dense_dz", (n * n_out,), x.dtype)
    _k.dense_backward(x, w, y, dy, _ACT[act], dw, db, dx, scratch, _dense_slices(n, n_in, n_out),
                      _threads())


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
