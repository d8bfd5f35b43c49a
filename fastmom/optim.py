r"""Optimizers over a network's flat parameter buffer.

:class:`MomentumSGD` is the only optimizer: plain SGD is its ``momentum=0`` case.
"""
from __future__ import annotations

import math

from . import _validate
from .params import ParamBuffer

__all__ = ["MomentumSGD", "check_eta", "check_lmbda"]


def _hyper_parameter(name, doc):
    """A property over ``_<name>`` whose setter checks through :meth:`MomentumSGD.configure`."""
    return property(lambda self: getattr(self, "_" + name), lambda self, value: self.configure(**{name: value}),
                    doc=doc)


class MomentumSGD:
    r"""Mini-batch SGD with classical or Nesterov momentum and network3's L2 term.

    With :math:`g` the gradient of the mean negative log-likelihood, :math:`\eta`
    the learning rate, :math:`\mu` the momentum, :math:`\lambda` ``lmbda`` and
    :math:`n` ``num_training_batches``, one :meth:`step` computes, over every
    parameter at once (one fused pass over the flat buffers):

    .. math::
        g_\text{eff} &= g + \tfrac{\lambda}{n} w \quad\text{(weights only; biases get } g\text{)}\\
        v &\leftarrow \mu v - \eta\, g_\text{eff} \qquad (v_0 = 0)\\
        p &\leftarrow p + v \qquad\qquad\text{classical}\\
        p &\leftarrow p + \mu v - \eta\, g_\text{eff} \quad\text{Nesterov}

    ``momentum=0`` is plain SGD, :math:`p \leftarrow p - \eta g_\text{eff}`, and
    allocates no velocity.

    Relation to PyTorch: ``torch.optim.SGD`` keeps :math:`b \leftarrow \mu b + g`
    and steps :math:`p \leftarrow p - \eta b`. With a constant :math:`\eta` the two
    produce identical iterates (:math:`v = -\eta b`). They differ once :math:`\eta`
    changes: here the velocity keeps the steps already taken at the old rate, while
    PyTorch rescales its whole buffer by the new rate at the next step.

    Parameters
    ----------
    params : Network or ParamBuffer
        What to optimize: the flat buffers of a network (``net`` or ``net.flat``).
    eta : float > 0
    momentum : float in [0, 1), default 0.9
    nesterov : bool, default False
    lmbda : float >= 0, default 0.0
        network3's L2 coefficient; its cost term is
        ``0.5*lmbda*sum(||w||^2)/num_training_batches``.
    num_training_batches : int, default 1

    The hyper-parameters are properties checked on assignment; :meth:`configure` sets
    several at once and :meth:`hyper_parameters` returns them (a
    :class:`~fastmom.Trainer` forwards its ``eta``, ``momentum``, ... here and stores this
    dict in its checkpoints).

    Attributes
    ----------
    velocity : 1-D array or None
        Persistent state, zero at the start, the same layout as the parameters; None
        while ``momentum`` is 0.
    """

    def __init__(self, params, eta, momentum=0.9, nesterov=False, lmbda=0.0, num_training_batches=1):
        flat = getattr(params, "flat", params)
        if not isinstance(flat, ParamBuffer):
            raise TypeError("params must be a fastmom Network or its ParamBuffer (net.flat)")
        self.flat = flat
        self.backend = flat.backend
        self.velocity = None
        self._apply(eta, momentum, nesterov, lmbda, num_training_batches)

    # -- hyper-parameters: this object is their one owner ----------------------------------

    HYPER_PARAMETERS = ("eta", "momentum", "nesterov", "lmbda", "num_training_batches")

    def configure(self, **values):
        """Set any of :attr:`HYPER_PARAMETERS` at once, all checked before any is set
        (so ``momentum=0, nesterov=False`` works from a Nesterov state)."""
        unknown = set(values) - set(self.HYPER_PARAMETERS)
        if unknown:
            raise TypeError(f"unknown hyper-parameter(s) {sorted(unknown)}; expected {self.HYPER_PARAMETERS}")
        self._apply(**dict(self.hyper_parameters(), **values))

    def _apply(self, eta, momentum, nesterov, lmbda, num_training_batches):
        eta = check_eta(eta)
        momentum = _validate.unit_interval("momentum", momentum)
        nesterov = bool(nesterov)
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        lmbda = check_lmbda(lmbda)
        ntb = _validate.positive_int("num_training_batches", num_training_batches)
        self._eta, self._momentum, self._nesterov, self._lmbda = eta, momentum, nesterov, lmbda
        self._num_training_batches = ntb
        if momentum == 0:
            self.velocity = None
        elif self.velocity is None:
            self.velocity = self.backend.zeros((self.flat.size,), self.flat.dtype)

    def hyper_parameters(self):
        """``{eta, momentum, nesterov, lmbda, num_training_batches}`` (JSON-able)."""
        return {"eta": self._eta, "momentum": self._momentum, "nesterov": self._nesterov,
                "lmbda": self._lmbda, "num_training_batches": self._num_training_batches}

    eta = _hyper_parameter("eta", "The learning rate (finite, > 0).")
    momentum = _hyper_parameter("momentum", "In [0, 1); setting it > 0 allocates a zero velocity if there is "
                                            "none, 0 drops the velocity.")
    nesterov = _hyper_parameter("nesterov", "Nesterov's update (needs momentum > 0).")
    lmbda = _hyper_parameter("lmbda", "network3's L2 coefficient (finite, >= 0).")
    num_training_batches = _hyper_parameter("num_training_batches", "What ``lmbda`` is divided by.")

    @property
    def decay(self):
        """The per-step weight-decay coefficient ``lmbda / num_training_batches``."""
        return self._lmbda / self._num_training_batches

    def step(self):
        """Apply one update from ``flat.grad`` to ``flat.data`` (and the velocity)."""
        self.backend.momentum_step(self.flat.data, self.flat.grad, self.velocity, self._eta,
                                   self._momentum, self._nesterov, self.decay, self.flat.n_weights)

    def reset(self):
        """Zero the velocity (a fresh start from the current parameters)."""
        if self.velocity is not None:
            self.velocity[...] = 0


def check_eta(value):
    """Return ``value`` as a float, or raise ValueError unless it is finite and > 0."""
    return _finite("eta", value, "a finite number > 0", lambda v: v > 0)


def check_lmbda(value):
    """Return ``value`` as a float, or raise ValueError unless it is finite and >= 0."""
    return _finite("lmbda", value, ">= 0 and finite", lambda v: v >= 0)


def _finite(name, value, what, in_range):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {what}, got {value!r}") from None
    if not (in_range(v) and math.isfinite(v)):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return v
