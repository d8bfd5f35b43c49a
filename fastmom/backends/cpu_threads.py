"""The ``cpu`` backend's threads: libgomp's spin policy and the team size of each call.

One OpenMP team does all parallel work; the BLAS that the kernels call
(``scipy.linalg.cython_blas``) is limited to one thread (:func:`limit_blas_threads`)
and called from inside the OpenMP regions on per-thread slices, because two thread
pools that both spin-wait after their work (libgomp's and OpenBLAS's) would fight over
the cores. The team size is fixed (``FASTMOM_NUM_THREADS``, :func:`set_num_threads`)
or automatic: the cores that other processes leave free, re-measured from
``/proc/stat`` every :data:`LOAD_INTERVAL` seconds. The kernels cut their work into
slices fixed by the shapes, so results are bit-identical whatever the count.

This module must be imported before the compiled extension: libgomp reads its spin
setting once, when it initialises.
"""
from __future__ import annotations

import math
import os
import time
import warnings

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


def limit_blas_threads():
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


