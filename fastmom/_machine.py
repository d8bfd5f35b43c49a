"""What machine a result was measured on: the one place that reads it.

The convergence suite (:func:`machine_info`, stored in every result JSON) and the
benchmarks in ``bench/`` (``bench/common.py``'s ``machine_description``) both describe
the machine from these pieces, each in its own file format.
"""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
from ._version import __version__
from .backends import get_backend

__all__ = ["cpu_model", "available_cores", "load_average", "threadpools", "versions",
           "environment", "source_commit", "machine_info"]

#: The environment variables that change how the convergence suite's kernels run.
SUITE_ENVIRONMENT = ("FASTMOM_NUM_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "FASTMOM_DEVICE")


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cores():
    """The cores this process may run on (its affinity), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform
        return os.cpu_count()


def load_average():
    """The 1, 5 and 15-minute load averages, or None where the platform has none."""
    try:
        return os.getloadavg()
    except OSError:
        return None


def threadpools():
    """threadpoolctl's description of the loaded BLAS/OpenMP pools, or None without it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return threadpool_info()


def versions(modules):
    """``{module: its __version__ or None when not installed}``."""
    out = {}
    for mod in modules:
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    return out


def environment(keys):
    """The variables of ``keys`` that are set, with their values."""
    return {k: os.environ[k] for k in keys if k in os.environ}


def _git(*args):
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def source_commit():
    """The short commit of the checkout that fastmom runs from, or None.

    Only when the imported package is the source tree of a git checkout (an editable
    install or a checkout on the path): an installed copy inside some other
    repository (a virtual environment in a project) has no commit of its own.
    """
    package = Path(__file__).resolve().parent  # this module's package: fastmom
    top = _git("-C", str(package), "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() / package.name != package:
        return None
    return _git("-C", top, "rev-parse", "--short", "HEAD")


def _thread_count(backend):
    """The backend's thread count where it says, else OpenMP's setting, else the cores."""
    for attr in ("num_threads", "get_num_threads", "threads"):
        val = getattr(backend, attr, None)
        if val is None:
            continue
        try:
            val = val() if callable(val) else val
            return int(val)
        except Exception:  # a backend's query failing must not stop the benchmark
            continue
    env = os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit():
        return int(env)
    return os.cpu_count()


def machine_info(device=None):
    """Library version, backend, threads and a description of this machine (the
    ``meta`` of a convergence result file)."""

    backend = get_backend(device)
    info = {
        "fastmom_version": __version__,
        "backend": backend.name,
        "threads": _thread_count(backend),
        "environment": environment(SUITE_ENVIRONMENT),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    load = load_average()
    if load is not None:
        info["load_average_at_start"] = [round(x, 2) for x in load]
    pools = threadpools()
    if pools is not None:
        info["threadpools"] = [{"library": p.get("internal_api"), "threads": p.get("num_threads")}
                               for p in pools]
    return info
