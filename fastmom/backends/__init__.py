"""Backend registry: ``get_backend(name)`` returns the module implementing the primitives.

Backends: ``reference`` (NumPy, the oracle), ``cpu`` (Cython + OpenMP kernels, the
default wherever they were built) and ``cuda`` (CuPy RawKernels). Each is a module that
provides every member of :class:`Backend` with the same signature (a test checks it);
the semantics are written down in :mod:`fastmom.backends.reference`.
"""
from __future__ import annotations

import importlib
import os
from typing import Any, Protocol

__all__ = ["BACKENDS", "Backend", "PRIMITIVES", "DeviceError", "get_backend", "default_device",
           "available_devices"]


class Backend(Protocol):
    """The primitives a network needs from a backend (see :mod:`fastmom.backends.reference`
    for their semantics). Outputs go into caller-owned arrays; ``dw``/``db``/``dx`` are
    overwritten, not accumulated; every call checks its arguments first
    (:mod:`fastmom.backends._checks`)."""

    name: str
    xp: Any  # the array module: numpy or cupy

    # -- compute ------------------------------------------------------------------
    def conv_pool_forward(self, x, w, b, poolsize, act, y, argmax, pool_ties="first") -> None: ...
    def conv_pool_backward(self, x, w, y, argmax, dy, poolsize, act, dw, db, dx,
                           pool_ties="first") -> None: ...
    def dense_forward(self, x, w, b, act, y, scale=1.0) -> None: ...
    def dense_backward(self, x, w, y, dy, act, dw, db, dx) -> None: ...
    def dropout_mask(self, rng, keep, out) -> None: ...
    def apply_mask(self, x, mask, out) -> None: ...
    def softmax_nll_forward(self, z, labels, probs): ...
    def softmax_nll_backward(self, probs, labels, dz) -> None: ...
    def momentum_step(self, p, g, v, eta, momentum, nesterov, decay, n_decay) -> None: ...
    def sum_squares(self, a) -> float: ...

    # -- arrays, generators, device -----------------------------------------------
    def is_available(self): ...
    def asarray(self, a, dtype=None): ...
    def to_numpy(self, a): ...
    def empty(self, shape, dtype): ...
    def zeros(self, shape, dtype): ...
    def make_rng(self, seed): ...
    def rng_state(self, rng): ...
    def set_rng_state(self, rng, state) -> None: ...
    def synchronize(self) -> None: ...


#: The compute primitives (the part of :class:`Backend` that kernels implement).
PRIMITIVES = ("conv_pool_forward", "conv_pool_backward", "dense_forward", "dense_backward",
              "dropout_mask", "apply_mask", "softmax_nll_forward", "softmax_nll_backward",
              "momentum_step", "sum_squares")

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
