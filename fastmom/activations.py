"""Activation functions, named as in network3 (``sigmoid``, ``tanh``, ``ReLU``, ``linear``).

Each is an :class:`Activation`: callable on NumPy arrays like the Theano functions
network3 passed around, and carrying a ``name`` that the backends dispatch on. Every
backend computes the derivative from the activation's *output* ``y`` (``y*(1-y)`` for
the sigmoid, ``1-y**2`` for tanh, ``y > 0`` for ReLU, ``1`` for linear), so the
pre-activation never has to be stored.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Activation", "sigmoid", "tanh", "ReLU", "linear", "ACTIVATIONS", "CODES", "code",
           "resolve"]

#: The integer code of each activation in the compiled kernels: the one definition.
#: ``kernels/cpu/_cpu.pyx``, ``kernels/cpu/pool.h`` and ``kernels/cuda/common.cuh``
#: repeat it as C enums, and ``tests/backends/test_interface.py`` fails when they drift.
CODES = {"sigmoid": 0, "tanh": 1, "relu": 2, "linear": 3}


class Activation:
    """A named elementwise activation.

    Parameters
    ----------
    name : str
        One of ``"sigmoid"``, ``"tanh"``, ``"relu"``, ``"linear"``.
    """

    def __init__(self, name: str):
        self.name = name

    def __call__(self, z):
        return apply(self.name, np.asarray(z))

    def derivative_from_output(self, y):
        """d act / dz expressed through ``y = act(z)``."""
        return derivative_from_output(self.name, np.asarray(y))

    def __repr__(self):
        return f"fastmom.{_PUBLIC_NAMES[self.name]}"

    def __reduce__(self):  # pickle/copy keep identity
        return (resolve, (self.name,))


def apply(name: str, z):
    """Return ``act(z)`` for NumPy-like arrays (the reference definition)."""
    if name == "sigmoid":
        # exp of a negative argument only: stable for large |z|
        ez = np.exp(-np.abs(z))
        return np.where(z >= 0, 1.0 / (1.0 + ez), ez / (1.0 + ez)).astype(z.dtype, copy=False)
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0)
    if name == "linear":
        return z
    raise ValueError(f"unknown activation {name!r}")


def derivative_from_output(name: str, y):
    """Return ``act'(z)`` computed from ``y = act(z)``."""
    if name == "sigmoid":
        return y * (1 - y)
    if name == "tanh":
        return 1 - y * y
    if name == "relu":
        return (y > 0).astype(y.dtype)
    if name == "linear":
        return np.ones_like(y)
    raise ValueError(f"unknown activation {name!r}")


sigmoid = Activation("sigmoid")
tanh = Activation("tanh")
ReLU = Activation("relu")
linear = Activation("linear")

ACTIVATIONS = {a.name: a for a in (sigmoid, tanh, ReLU, linear)}
_PUBLIC_NAMES = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "ReLU", "linear": "linear"}


def code(name: str) -> int:
    """The kernels' integer code for the activation called ``name``."""
    try:
        return CODES[name]
    except KeyError:
        raise ValueError(f"activation must be one of {tuple(CODES)}, got {name!r}") from None


def resolve(fn) -> Activation:
    """Accept an :class:`Activation`, its name, or a network3-style callable name."""
    if isinstance(fn, Activation):
        return fn
    if isinstance(fn, str) and fn.lower() in ACTIVATIONS:
        return ACTIVATIONS[fn.lower()]
    name = getattr(fn, "__name__", None)
    if isinstance(name, str) and name.lower() in ACTIVATIONS:
        return ACTIVATIONS[name.lower()]
    raise ValueError(
        f"unsupported activation_fn {fn!r}: use fastmom.sigmoid, fastmom.tanh, "
        "fastmom.ReLU or fastmom.linear"
    )
