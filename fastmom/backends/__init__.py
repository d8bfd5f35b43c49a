"""Backend registry: ``get_backend(name)`` returns the module implementing the primitives.

Backends: ``reference`` (NumPy, the oracle), ``cpu`` (Cython + OpenMP kernels, the
default wherever they were built) and ``cuda`` (CuPy RawKernels). The interface is
documented in :mod:`fastmom.backends.reference`.
"""
from __future__ import annotations

import importlib
import os

__all__ = ["BACKENDS", "DeviceError", "get_backend", "default_device", "available_devices"]

BACKENDS = ("reference", "cpu", "cuda")


class DeviceError(RuntimeError):
    """A device was asked for that does not exist or cannot be used here."""


def _load(name):
    return importlib.import_module(f"fastmom.backends.{name}")


def get_backend(name=None):
    """Return the backend module for ``name`` (``None``: :func:`default_device`)."""
    if name is None:
        name = default_device()
    if not isinstance(name, str):
        name = getattr(name, "name", None)
        if name not in BACKENDS:
            raise ValueError(f"device must be one of {BACKENDS}, got {name!r}")
    key = name.lower()
    if key not in BACKENDS:
        raise ValueError(f"unknown device {name!r}: choose one of {', '.join(BACKENDS)}")
    try:
        mod = _load(key)
    except ImportError as exc:
        raise DeviceError(f"device {key!r} is not available: {exc}") from exc
    why = mod.is_available()
    if why is not True:
        raise DeviceError(f"device {key!r} is not available: {why or 'unknown reason'}")
    return mod


def available_devices():
    """Names of the backends usable in this process."""
    out = []
    for name in BACKENDS:
        try:
            get_backend(name)
        except (DeviceError, ValueError):
            continue
        out.append(name)
    return out


def default_device():
    """``$FASTMOM_DEVICE`` if set, else ``cpu`` where its kernels are built, else ``reference``."""
    env = os.environ.get("FASTMOM_DEVICE")
    if env:
        return env
    try:
        if _load("cpu").is_available() is True:
            return "cpu"
    except ImportError:
        pass
    return "reference"
