"""``Trainer``: the training loop that ``Network.SGD`` is built on.

One epoch: (optionally) permute the training set on the device, then for each
mini-batch ``net.train_step`` (forward + backward into the flat gradient buffer) and
``optimizer.step()`` (one fused update of the flat parameter buffer); then measure
validation and test accuracy, append a record to the history and run the callbacks.
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np

from .optim import MomentumSGD, check_eta

__all__ = ["Trainer", "History", "DivideOnPlateau", "DivergenceError", "OPTIMIZERS"]

OPTIMIZERS = ("sgd", "momentum", "nesterov")


class DivergenceError(FloatingPointError):
    """The training cost became NaN or infinite; the offending step was not applied."""


class History(list):
    """Per-epoch records (dicts) plus the best-validation summary.

    Each record holds ``epoch``, ``iteration`` (the last mini-batch's index),
    ``cost`` (mean training NLL over the epoch plus network3's L2 term at its end),
    ``validation_accuracy``, ``test_accuracy`` (None without data), ``eta``,
    ``seconds`` (training time of the epoch), ``elapsed`` (cumulative training
    seconds) and ``images_per_second``.
    """

    best_validation_accuracy = None
    best_epoch = None
    best_iteration = None
    test_accuracy_at_best = None

    def column(self, key):
        return [r[key] for r in self]

    def summary(self):
        return {"best_validation_accuracy": self.best_validation_accuracy, "best_epoch": self.best_epoch,
                "best_iteration": self.best_iteration, "test_accuracy_at_best": self.test_accuracy_at_best}


class DivideOnPlateau:
    """network3 chapter 3's schedule: divide eta by ``factor`` whenever validation
    accuracy has not improved for ``patience`` epochs; stop once eta has fallen to
    ``min_ratio`` of its first value (Nielsen suggests 1/128)."""

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


class Trainer:
    """Train a :class:`~fastmom.Network` with plain, momentum or Nesterov SGD.

    Parameters
    ----------
    net : Network
    optimizer : {"sgd", "momentum", "nesterov"} or MomentumSGD, optional
        A name selects the update (``"sgd"`` forces ``momentum=0``); by default the
        update follows ``momentum`` and ``nesterov``. An instance is used as given.
    eta, momentum, nesterov, lmbda
        As for :class:`~fastmom.optim.MomentumSGD` (``lmbda`` is divided by the
        number of training mini-batches, as in network3).
    shuffle : bool, default True
        Permute the training set every epoch (network3 did not: ``Network.SGD``
        passes False).
    seed : int, optional
        Seed of the data order; default derived from the network's seed.
    schedule : callable or callback, optional
        Either ``f(epoch) -> eta`` applied at the start of each epoch, or an object
        with ``on_epoch_end(trainer, record)`` such as :class:`DivideOnPlateau`.
    early_stopping : int, optional
        Stop after this many epochs without a new best validation accuracy.
    callbacks : iterable
        Objects with ``on_epoch_end(trainer, record)`` or plain callables
        ``f(trainer, record)``; setting ``trainer.stop_training = True`` stops.
    progress : bool, optional
        A tqdm bar over the mini-batches; default: when stderr is a terminal.
    network3_output : bool, default False
        Print network3's lines and measure accuracy its way (mean over full
        mini-batches) instead of over every image.
    check_finite : bool, default True
        Stop with :class:`DivergenceError` when a mini-batch's cost is NaN or
        infinite, before its update is applied.
    log : callable, default print
    """

    def __init__(self, net, optimizer=None, *, eta=0.01, momentum=0.9, nesterov=False, lmbda=0.0,
                 shuffle=True, seed=None, schedule=None, early_stopping=None, callbacks=(),
                 progress=None, network3_output=False, check_finite=True, log=print):
        self.net = net
        if isinstance(optimizer, str):
            if optimizer not in OPTIMIZERS:
                raise ValueError(f"optimizer must be one of {OPTIMIZERS} or a MomentumSGD, got {optimizer!r}")
            nesterov = optimizer == "nesterov"
            if optimizer == "sgd":
                momentum = 0.0
            elif momentum == 0:
                raise ValueError(f"optimizer={optimizer!r} needs momentum > 0")
            optimizer = None
        if optimizer is not None and not isinstance(optimizer, MomentumSGD):
            raise TypeError(f"optimizer must be a name or a MomentumSGD, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        # validate the hyper-parameters now rather than at the first step
        self._eta0 = check_eta(eta)
        self.momentum, self.nesterov, self.lmbda = float(momentum), bool(nesterov), float(lmbda)
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if self.lmbda < 0 or not math.isfinite(self.lmbda):
            raise ValueError(f"lmbda must be >= 0, got {lmbda!r}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.shuffle = bool(shuffle)
        seq = net._data_seed_seq if seed is None else np.random.SeedSequence(seed)
        self.data_rng = np.random.default_rng(seq)
        self.callbacks = []
        self._eta_fn = None
        if schedule is not None:
            if hasattr(schedule, "on_epoch_end"):
                self.callbacks.append(schedule)
            elif callable(schedule):
                self._eta_fn = schedule
            else:
                raise TypeError("schedule must be callable or have on_epoch_end(trainer, record)")
        if early_stopping is not None:
            early_stopping = int(early_stopping)
            if early_stopping < 1:
                raise ValueError("early_stopping must be a positive number of epochs")
        self.early_stopping = early_stopping
        for cb in callbacks:
            if not (hasattr(cb, "on_epoch_end") or callable(cb)):
                raise TypeError(f"callback {cb!r} is neither callable nor has on_epoch_end")
            self.callbacks.append(cb)
        self.progress = progress
        self.network3_output = bool(network3_output)
        self.check_finite = bool(check_finite)
        self.log = log
        self.history = History()
        self.epoch = 0
        self.stop_training = False

    # eta forwards to the optimizer once it exists
    @property
    def eta(self):
        return self.optimizer.eta if self.optimizer is not None else self._eta0

    @eta.setter
    def eta(self, value):
        if self.optimizer is not None:
            self.optimizer.eta = value
        else:
            self._eta0 = check_eta(value)

    def _make_optimizer(self, num_training_batches):
        if self.optimizer is None:
            self.optimizer = MomentumSGD(self.net, self._eta0, self.momentum, self.nesterov,
                                         self.lmbda, num_training_batches)
        return self.optimizer

    def fit(self, training_data, epochs, validation_data=None, test_data=None):
        """Train for ``epochs`` epochs (counting from ``self.epoch``) and return the history."""
        net, be = self.net, self.net.backend
        epochs = int(epochs)
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        xtr, ytr = net.prepare_data(training_data, "training_data")
        val = net.prepare_data(validation_data, "validation_data") if validation_data is not None else None
        test = net.prepare_data(test_data, "test_data") if test_data is not None else None
        bs = net.mini_batch_size
        n = xtr.shape[0]
        ntb = n // bs
        if ntb == 0:
            raise ValueError(f"training_data has {n} images, fewer than mini_batch_size={bs}")
        opt = self._make_optimizer(ntb)
        if self.shuffle:
            xs, ys = be.empty(xtr.shape, xtr.dtype), be.empty(ytr.shape, ytr.dtype)
        else:
            xs, ys = xtr, ytr
        show_bar = self.progress if self.progress is not None else (
            not self.network3_output and sys.stderr.isatty())
        h = self.history
        elapsed = h[-1]["elapsed"] if h else 0.0
        self.stop_training = False
        while self.epoch < epochs and not self.stop_training:
            epoch = self.epoch
            if self._eta_fn is not None:
                self.eta = self._eta_fn(epoch)
            if self.shuffle:
                perm = be.asarray(self.data_rng.permutation(n))
                be.xp.take(xtr, perm, axis=0, out=xs)
                be.xp.take(ytr, perm, axis=0, out=ys)
            batches = range(ntb)
            if show_bar:
                from tqdm.auto import tqdm
                batches = tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False)
            t0 = time.perf_counter()
            cost_sum = 0.0
            for j in batches:
                iteration = ntb * epoch + j
                if self.network3_output and iteration % 1000 == 0:
                    self.log(f"Training mini-batch number {iteration}")
                cost = net.train_step(xs[j * bs:(j + 1) * bs], ys[j * bs:(j + 1) * bs])
                if self.check_finite and not math.isfinite(float(cost)):
                    raise DivergenceError(
                        f"training diverged at epoch {epoch}, mini-batch {j} (iteration {iteration}): "
                        f"the cost is {float(cost)}; the step was not applied. Likely cause: eta="
                        f"{opt.eta} is too large for momentum={opt.momentum}; try a smaller eta")
                opt.step()
                cost_sum = cost_sum + cost
            be.synchronize()
            seconds = time.perf_counter() - t0
            elapsed += seconds
            record = {
                "epoch": epoch,
                "iteration": ntb * (epoch + 1) - 1,
                "cost": float(cost_sum) / ntb + net.l2_cost(opt.lmbda, opt.num_training_batches),
                "validation_accuracy": None,
                "test_accuracy": None,
                "eta": opt.eta,
                "seconds": seconds,
                "elapsed": elapsed,
                "images_per_second": ntb * bs / seconds if seconds > 0 else math.inf,
            }
            drop = self.network3_output
            if val is not None:
                record["validation_accuracy"] = net._accuracy(*val, drop_last=drop)
            if test is not None:
                record["test_accuracy"] = net._accuracy(*test, drop_last=drop)
            self._update_best(record)
            h.append(record)
            self.epoch += 1
            for cb in self.callbacks:
                (cb.on_epoch_end if hasattr(cb, "on_epoch_end") else cb)(self, record)
            if self.early_stopping and h.best_epoch is not None and epoch - h.best_epoch >= self.early_stopping:
                self.stop_training = True
        if self.network3_output:
            self.log("Finished training network.")
            if h.best_validation_accuracy is not None:
                self.log("Best validation accuracy of {0:.2%} obtained at iteration {1}".format(
                    h.best_validation_accuracy, h.best_iteration))
                if h.test_accuracy_at_best is not None:
                    self.log("Corresponding test accuracy of {0:.2%}".format(h.test_accuracy_at_best))
        return h

    def _update_best(self, record):
        h, acc = self.history, record["validation_accuracy"]
        if acc is None:
            return
        if self.network3_output:
            self.log("Epoch {0}: validation accuracy {1:.2%}".format(record["epoch"], acc))
        if h.best_validation_accuracy is None or acc >= h.best_validation_accuracy:  # network3's >=
            h.best_validation_accuracy, h.best_epoch = acc, record["epoch"]
            h.best_iteration, h.test_accuracy_at_best = record["iteration"], record["test_accuracy"]
            if self.network3_output:
                self.log("This is the best validation accuracy to date.")
                if record["test_accuracy"] is not None:
                    self.log("The corresponding test accuracy is {0:.2%}".format(record["test_accuracy"]))
