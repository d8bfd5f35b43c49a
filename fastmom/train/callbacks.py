"""What plugs into :class:`~fastmom.Trainer`'s loop: schedules, early stopping, network3's
printed lines and the progress bar.

A callback is a plain callable ``f(trainer, record)`` (run at the end of each epoch) or an
object with any of these methods, each optional:

``on_epoch_begin(trainer, epoch)``
    Before the first mini-batch of an epoch (not when :meth:`~fastmom.Trainer.fit`
    resumes a checkpoint taken inside the epoch: the epoch had begun).
``on_batch_begin(trainer, iteration)``
    Before each mini-batch; ``iteration`` counts mini-batches over all epochs.
``on_epoch_end(trainer, record)``
    After the epoch's record (see :class:`~fastmom.History`) was added to
    ``trainer.history``; setting ``trainer.stop_training = True`` stops training.
``on_fit_end(trainer)``
    When :meth:`~fastmom.Trainer.fit` returns normally.
``state_dict()`` / ``load_state_dict(state)``
    JSON-able progress saved in, and restored from, trainer checkpoints.

A callback that acts on validation accuracy sets the class attribute
``needs_validation_data = True``: :meth:`~fastmom.Trainer.fit` then refuses to start
without ``validation_data`` (it would otherwise never act, silently).
"""
from __future__ import annotations

import math

from tqdm.auto import tqdm

from .. import _validate

__all__ = ["DivideOnPlateau", "EarlyStopping", "Network3Log", "ProgressBar", "EtaSchedule",
           "check_callback", "dispatch", "epoch_end", "has_hooks", "hooks"]

HOOKS = ("on_epoch_begin", "on_batch_begin", "on_epoch_end", "on_fit_end")


def has_hooks(obj):
    """Whether ``obj`` has any of the :data:`HOOKS`."""
    return any(hasattr(obj, hook) for hook in HOOKS)


def check_callback(cb):
    """``cb`` if it is callable or has one of :data:`HOOKS`; TypeError otherwise."""
    if not (callable(cb) or has_hooks(cb)):
        raise TypeError(f"callback {cb!r} is neither callable nor has on_epoch_end")
    return cb


def epoch_end(cb):
    """The function that runs ``cb`` at the end of an epoch (None if it has no such hook)."""
    if hasattr(cb, "on_epoch_end"):
        return cb.on_epoch_end
    return cb if callable(cb) else None


def hooks(callbacks, name):
    """The bound ``name`` hooks of ``callbacks``, in order."""
    if name == "on_epoch_end":
        found = (epoch_end(cb) for cb in callbacks)
    else:
        found = (getattr(cb, name, None) for cb in callbacks)
    return [hook for hook in found if hook is not None]


def dispatch(callbacks, name, *args):
    """Call the ``name`` hook of each of ``callbacks`` that has one, in order."""
    for hook in hooks(callbacks, name):
        hook(*args)


class DivideOnPlateau:
    """network3 chapter 3's schedule: divide eta by ``factor`` whenever validation
    accuracy has not improved for ``patience`` epochs; stop once eta has fallen to
    ``min_ratio`` of its first value (Nielsen suggests 1/128).

    Its progress (``state_dict``) is part of a trainer checkpoint."""

    needs_validation_data = True

    def state_dict(self):
        return {"initial_eta": self.initial_eta, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state):
        self.initial_eta, self.best, self.bad_epochs = state["initial_eta"], state["best"], state["bad_epochs"]

    def __init__(self, factor=2.0, patience=1, min_ratio=1 / 128):
        if not factor > 1:
            raise ValueError(f"factor must be > 1, got {factor!r}")
        self.factor, self.patience, self.min_ratio = float(factor), int(patience), float(min_ratio)
        self.initial_eta = None
        self.best = -math.inf
        self.bad_epochs = 0

    def on_epoch_end(self, trainer, record):
        if self.initial_eta is None:
            self.initial_eta = record["eta"]
        acc = record["validation_accuracy"]
        if acc is None:
            return
        if acc > self.best:
            self.best, self.bad_epochs = acc, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.bad_epochs = 0
            new_eta = trainer.eta / self.factor
            if new_eta < self.initial_eta * self.min_ratio * (1 - 1e-9):
                trainer.stop_training = True
            else:
                trainer.eta = new_eta


class EtaSchedule:
    """``eta = fn(epoch)`` at the start of each epoch (``Trainer(schedule=fn)``)."""

    def __init__(self, fn):
        if not callable(fn):
            raise TypeError("schedule must be callable or have on_epoch_end(trainer, record)")
        self.fn = fn

    def on_epoch_begin(self, trainer, epoch):
        trainer.eta = self.fn(epoch)


class EarlyStopping:
    """Stop after ``patience`` epochs without a new best validation accuracy (network3's
    ``>=`` rule, as kept by :class:`~fastmom.History`)."""

    needs_validation_data = True

    def __init__(self, patience):
        self.patience = _validate.positive_int("patience", patience)

    def on_epoch_end(self, trainer, record):
        best = trainer.history.best_epoch
        if best is not None and record["epoch"] - best >= self.patience:
            trainer.stop_training = True


class Network3Log:
    """network3's printed lines: ``Training mini-batch number N`` every 1000 mini-batches,
    the validation (and test) accuracy of each epoch, and the best one at the end.

    ``Trainer(network3_output=True)`` adds one (with its ``log``) and measures accuracy
    network3's way (``drop_last=True``)."""

    def __init__(self, log=print):
        self.log = log

    def on_batch_begin(self, trainer, iteration):
        if iteration % 1000 == 0:
            self.log(f"Training mini-batch number {iteration}")

    def on_epoch_end(self, trainer, record):
        acc, h = record["validation_accuracy"], trainer.history
        if acc is None:
            return
        self.log("Epoch {0}: validation accuracy {1:.2%}".format(record["epoch"], acc))
        if h.is_best(record):
            self.log("This is the best validation accuracy to date.")
            if record["test_accuracy"] is not None:
                self.log("The corresponding test accuracy is {0:.2%}".format(record["test_accuracy"]))

    def on_fit_end(self, trainer):
        h = trainer.history
        self.log("Finished training network.")
        if h.best_validation_accuracy is not None:
            self.log("Best validation accuracy of {0:.2%} obtained at iteration {1}".format(
                h.best_validation_accuracy, h.best_iteration))
            if h.test_accuracy_at_best is not None:
                self.log("Corresponding test accuracy of {0:.2%}".format(h.test_accuracy_at_best))


class ProgressBar:
    """A tqdm bar over each epoch's mini-batches (cleared when the epoch ends), showing
    images per second when it knows the ``batch_size`` and the running mean of the
    mini-batch costs as they are reported to :meth:`add_cost`.

    Parameters
    ----------
    batch_size : int, optional
        Images per mini-batch: the bar then counts images, so its rate is images/s
        (without it, mini-batches/s).
    """

    def __init__(self, batch_size=None):
        self.batch_size = None if batch_size is None else _validate.positive_int("batch_size", batch_size)
        self._bar = None
        self._cost_sum, self._costs = 0.0, 0

    def batches(self, epoch, first, total):
        """Iterate mini-batch indices ``first..total-1`` with the bar."""
        self._cost_sum, self._costs = 0.0, 0
        if self.batch_size is None:
            self._bar = tqdm(range(first, total), desc=f"epoch {epoch}", unit="batch", leave=False,
                             initial=first, total=total)
            return self._bar
        # count images, so that tqdm's rate is images per second
        self._bar = tqdm(range(first, total), desc=f"epoch {epoch}", unit="img", unit_scale=self.batch_size,
                         leave=False, initial=first, total=total)
        return self._bar

    def add_cost(self, cost):
        """Report one mini-batch's cost: the bar shows the epoch's running mean, read
        every 32 mini-batches (on a GPU, reading it is a host sync)."""
        self._cost_sum = self._cost_sum + cost
        self._costs += 1
        if self._bar is not None and self._costs % 32 == 1:
            self._bar.set_postfix(cost=f"{float(self._cost_sum) / self._costs:.4f}", refresh=False)
