"""The divergence guard: stop training with :class:`DivergenceError` before a NaN or
infinite cost, gradient or update is applied (or, windowed, undo it).

Per step (the host backends' default): the cost is read anyway; one ``dot(g, g)`` pass
over the flat gradient catches a NaN/Inf gradient (the array module's SIMD dot: ~7 us
for network3's 85,670 parameters where the cpu backend's double-accumulating
``sum_squares`` takes ~130 us single-threaded). A finite gradient can still overflow the
update (eta far too large), so the guard keeps upper bounds on the L2 norms of the
parameters and velocity, advanced by the triangle inequality from the gradient norm (no
extra pass), and re-measured once per epoch. Only while a bound says the update could
overflow does a step run the careful way: copy the parameters and velocity, step, check,
and restore them if anything became non-finite.

Windowed (every ``N`` mini-batches, the GPU default, where a per-step check would stall
the device): one host round trip per window; on a non-finite window the parameters and
velocity are restored to a device-side copy taken at the last good check.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .. import _validate

__all__ = ["DivergenceError", "CollapseError", "CollapseWarning", "CollapseGuard", "check_interval", "make_guard"]

GPU_INTERVAL = 32
NOT_APPLIED = "the step was not applied. The parameters are those after the last good step"


class DivergenceError(FloatingPointError):
    """The training cost or gradient became NaN or infinite; the offending step was not
    applied, so the parameters and velocity are those after the last good step."""


class CollapseWarning(RuntimeWarning):
    """Training runs (every number finite) but has collapsed: see :class:`CollapseGuard`."""


class CollapseError(DivergenceError):
    """A collapse (see :class:`CollapseGuard`) under ``Trainer(strict=True)``; unlike a
    non-finite step, the epoch's updates were applied."""


class CollapseGuard:
    """The guard beside the NaN guard: training whose numbers stay finite but that has
    stopped learning.

    At the end of each epoch: the epoch's mean cost more than ``cost_factor`` times
    the first epoch's, or validation accuracy within ``chance_margin`` of chance
    (``1/n_classes``) for ``chance_epochs`` epochs in a row. Either way the likely
    cause is an ``eta`` too large (units that died or saturated: network3's
    chapter-6 net at eta 0.03 sits at exactly 10.00% on the 5k sample). Warns once
    (:class:`CollapseWarning`, one line) or, with ``strict``, raises
    :class:`CollapseError`. It reads only the history: a run that does not collapse
    trains and prints exactly as without it. ``Trainer`` adds one
    (``Trainer(strict=...)``).
    """

    def __init__(self, strict=False, cost_factor=10.0, chance_margin=0.02, chance_epochs=2):
        self.strict = bool(strict)
        self.cost_factor, self.chance_margin = float(cost_factor), float(chance_margin)
        self.chance_epochs = _validate.positive_int("chance_epochs", chance_epochs)
        self.warned = False

    def symptom(self, history, n_classes):
        """What is wrong with ``history`` (a sentence), or None."""
        first, last = history[0]["cost"], history[-1]["cost"]
        if len(history) > 1 and last > self.cost_factor * first:
            return (f"the epoch's mean cost {last:.4g} is more than {self.cost_factor:g}x the first "
                    f"epoch's ({first:.4g})")
        recent = [r["validation_accuracy"] for r in history[-self.chance_epochs:]]
        chance = 1.0 / n_classes
        if len(recent) == self.chance_epochs and all(
                a is not None and abs(a - chance) <= self.chance_margin for a in recent):
            return (f"validation accuracy has stayed at chance (1/{n_classes} = {chance:.2%}) for "
                    f"{self.chance_epochs} epochs ({', '.join(f'{a:.2%}' for a in recent)})")
        return None

    def on_epoch_end(self, trainer, record):
        if self.warned:
            return
        symptom = self.symptom(trainer.history, trainer.net.n_out)
        if symptom is None:
            return
        message = (f"training collapsed at epoch {record['epoch']}: {symptom}. Likely cause: eta={record['eta']} "
                   f"is too large (momentum={trainer.momentum}): units died or saturated; try a smaller eta")
        if self.strict:
            raise CollapseError(message)
        self.warned = True
        warnings.warn(message, CollapseWarning, stacklevel=2)


def check_interval(check_finite, backend):
    """``(enabled, every)`` for ``Trainer(check_finite=...)``: a bool checks every step on
    host backends and every :data:`GPU_INTERVAL` on a GPU; an int ``N`` every ``N``."""
    if isinstance(check_finite, (bool, np.bool_)):
        return bool(check_finite), (1 if backend.xp is np else GPU_INTERVAL)
    return True, _validate.positive_int("check_finite", check_finite)


def make_guard(enabled, every, net, opt, note):
    """The guard that applies ``opt``'s steps to ``net``: unchecked, per step or windowed.
    ``note()`` ends the divergence message (where the last checkpoint is)."""
    if not enabled:
        return Unguarded(net, opt, note)
    return StepGuard(net, opt, note) if every == 1 else WindowGuard(net, opt, note, every)


class Unguarded:
    """Steps without any check (``check_finite=False``)."""

    def __init__(self, net, opt, note):
        self.net, self.opt, self.note = net, opt, note
        self.epoch = self.first = self.total = 0

    def begin_epoch(self, epoch, first, total):
        """Training is about to run mini-batches ``first..total-1`` of ``epoch``."""
        self.epoch, self.first, self.total = epoch, first, total

    def step(self, cost, j):
        """Apply the optimizer step of mini-batch ``j`` (whose cost is ``cost``)."""
        self.opt.step()

    def diverged(self, what, j, outcome=NOT_APPLIED):
        where = (f"training diverged at epoch {self.epoch}, mini-batch {j} "
                 f"(iteration {self.total * self.epoch + j})")
        hint = (f" Likely cause: eta={self.opt.eta} is too large for momentum={self.opt.momentum}; try a "
                f"smaller eta (or momentum).")
        return DivergenceError(f"{where}: {what}; {outcome}{self.note()}{hint}")


class StepGuard(Unguarded):
    """Checks every step before applying it (see the module's notes)."""

    def begin_epoch(self, epoch, first, total):
        super().begin_epoch(epoch, first, total)
        self._sync_norm_bounds()

    def _sync_norm_bounds(self):
        opt, flat = self.opt, self.net.flat
        self._pnorm = math.sqrt(_sum_squares(self.net.backend, flat.data))
        self._vnorm = math.sqrt(_sum_squares(self.net.backend, opt.velocity)) if opt.velocity is not None else 0.0
        self._limit = float(np.finfo(self.net.dtype).max) / 16  # margin for rounding

    def step(self, cost, j):
        """Apply ``opt.step()`` unless the cost, the gradient or the update is not finite;
        then raise DivergenceError with the parameters and velocity unchanged."""
        cost = float(cost)
        if not math.isfinite(cost):
            raise self.diverged(f"the cost is {cost}", j)
        be, flat, opt = self.net.backend, self.net.flat, self.opt
        g2 = _sum_squares(be, flat.grad)  # NaN/Inf anywhere makes the sum non-finite
        # a non-finite sum from finite values (squares overflowing) only disables the
        # bound below: confirm exactly before calling it divergence (a rare path)
        if not math.isfinite(g2) and not _all_finite(be, flat.grad):
            raise self.diverged(f"the gradient is not finite (sum of squares {g2}) although the cost "
                                f"is {cost}", j)
        eta, mu, d = opt.eta, opt.momentum, opt.decay
        step = eta * (math.sqrt(g2) + d * self._pnorm)  # bounds ||eta * g_eff||
        vnorm = mu * self._vnorm + step
        pnorm = self._pnorm + (mu * vnorm + step if opt.nesterov else vnorm)
        if pnorm < self._limit:  # (False for inf and NaN too)
            opt.step()
            self._pnorm, self._vnorm = pnorm, vnorm if mu else 0.0
            return
        p0 = flat.data.copy()
        v0 = opt.velocity.copy() if opt.velocity is not None else None
        opt.step()
        if not (_all_finite(be, flat.data) and (v0 is None or _all_finite(be, opt.velocity))):
            flat.data[...] = p0
            if v0 is not None:
                opt.velocity[...] = v0
            raise self.diverged(f"the update overflows (finite cost {cost} and gradient, but the new "
                                f"parameters or velocity are not finite)", j)
        self._sync_norm_bounds()


class WindowGuard(Unguarded):
    """Checks once every ``every`` mini-batches (and at the end of the epoch)."""

    def __init__(self, net, opt, note, every):
        super().__init__(net, opt, note)
        self.every = every
        self._snap = None

    def begin_epoch(self, epoch, first, total):
        super().begin_epoch(epoch, first, total)
        self._snapshot()
        self._cost, self._start = 0.0, first

    def _snapshot(self):
        """Copy the parameters and velocity into buffers allocated once (on the device)."""
        be, flat, vel = self.net.backend, self.net.flat, self.opt.velocity
        if self._snap is None or (vel is not None and self._snap[1] is None):
            self._snap = (be.empty(flat.data.shape, flat.dtype),
                          be.empty(flat.data.shape, flat.dtype) if vel is not None else None)
        self._snap[0][...] = flat.data
        if vel is not None:
            self._snap[1][...] = vel

    def step(self, cost, j):
        self.opt.step()
        self._cost = self._cost + cost
        if (j + 1 - self.first) % self.every == 0 or j + 1 == self.total:
            self._check(j)
            self._cost, self._start = 0.0, j + 1

    def _check(self, last):
        """One host round trip for the window ending at ``last``: keep a snapshot if the
        cost, parameters and velocity are finite, else restore the last one and raise."""
        flat, vel, xp = self.net.flat, self.opt.velocity, self.net.backend.xp
        ok = xp.isfinite(xp.asarray(self._cost)) & xp.isfinite(flat.data).all()
        if vel is not None:
            ok = ok & xp.isfinite(vel).all()
        if bool(ok):
            self._snapshot()
            return
        first = self._start
        flat.data[...] = self._snap[0]
        if vel is not None:
            vel[...] = self._snap[1]
        raise self.diverged(
            f"the cost, gradient or update became NaN or infinite within mini-batches {first} to {last} "
            f"(checked every {self.every})", first,
            outcome=f"the parameters and velocity are restored to their state before mini-batch {first}")


def _sum_squares(backend, a):
    """``sum(a*a)`` in ``a``'s precision: NaN/Inf anywhere (or an overflowing square)
    makes it non-finite."""
    return float(backend.xp.dot(a, a))


def _all_finite(backend, a):
    return bool(backend.xp.isfinite(a).all())
