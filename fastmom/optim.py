r"""Optimizers over a network's flat parameter buffer.

:class:`MomentumSGD` is the only optimizer: plain SGD is its ``momentum=0`` case.
"""
from __future__ import annotations

import math

from .params import ParamBuffer

__all__ = ["MomentumSGD", "check_eta"]


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

    Attributes
    ----------
    velocity : 1-D array or None
        Persistent state, zero at the start, the same layout as the parameters.
    """

    def __init__(self, params, eta, momentum=0.9, nesterov=False, lmbda=0.0, num_training_batches=1):
        flat = getattr(params, "flat", params)
        if not isinstance(flat, ParamBuffer):
            raise TypeError("params must be a fastmom Network or its ParamBuffer (net.flat)")
        self.flat = flat
        self.backend = flat.backend
        self.eta = eta
        self.momentum = _check_range("momentum", momentum, 0.0, 1.0)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.lmbda = _check_range("lmbda", lmbda, 0.0, math.inf)
        ntb = int(num_training_batches)
        if ntb < 1 or ntb != num_training_batches:
            raise ValueError(f"num_training_batches must be a positive int, got {num_training_batches!r}")
        self.num_training_batches = ntb
        self.velocity = self.backend.zeros((flat.size,), flat.dtype) if self.momentum else None

    @property
    def eta(self):
        return self._eta

    @eta.setter
    def eta(self, value):
        self._eta = check_eta(value)

    @property
    def decay(self):
        """The per-step weight-decay coefficient ``lmbda / num_training_batches``."""
        return self.lmbda / self.num_training_batches

    def step(self):
        """Apply one update from ``flat.grad`` to ``flat.data`` (and the velocity)."""
        self.backend.momentum_step(self.flat.data, self.flat.grad, self.velocity, self._eta,
                                   self.momentum, self.nesterov, self.decay, self.flat.n_weights)

    def reset(self):
        """Zero the velocity (a fresh start from the current parameters)."""
        if self.velocity is not None:
            self.velocity[...] = 0


def _check_range(name, value, lo, hi):
    v = float(value)
    if not (lo <= v < hi):
        raise ValueError(f"{name} must be in [{lo}, {hi}), got {value!r}")
    return v



def check_eta(value):
    """Return ``value`` as a float, or raise ValueError unless it is finite and > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"eta must be a finite number > 0, got {value!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"eta must be a finite number > 0, got {value!r}")
    return v
