"""``Trainer``: the training loop that ``Network.SGD`` is built on.

One epoch: (optionally) permute the training set on the device, then for each
mini-batch ``net.train_step`` (forward + backward into the flat gradient buffer) and one
optimizer step through the divergence guard (:mod:`.guard`); then measure validation
and test accuracy, add a record to the :class:`~.history.History` and run the callbacks
(:mod:`.callbacks`). Checkpoints and Ctrl-C: :mod:`.checkpointer`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
import warnings

import numpy as np

from .. import _validate
from .. import checkpoint as _ckpt
from .. import distributed as _dist
from ..optim import MomentumSGD
from . import callbacks as _cb
from . import parallel as _parallel
from .callbacks import EarlyStopping, EtaSchedule, Network3Log, ProgressBar
from .checkpointer import (Checkpointer, EpochPosition, Sigint, TrainerState, check_policy, deferred_sigint,
                           read, resolve_resume, write)
from .guard import CollapseGuard, check_interval, make_guard
from .history import History

__all__ = ["Trainer", "TrainingInterrupted", "OPTIMIZERS"]

OPTIMIZERS = ("sgd", "momentum", "nesterov")
# Trainer keywords that moved into Checkpointer (deprecated): keyword -> default
_CHECKPOINT_KEYWORDS = {"checkpoint_every": 1, "checkpoint_unit": "epoch", "keep_last": 3}


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped :meth:`Trainer.fit` at a mini-batch boundary.

    A ``KeyboardInterrupt``, so code that does not care still stops as usual.

    Attributes
    ----------
    checkpoint : str or None
        The checkpoint written on the way out (None when checkpointing is off).
    """

    def __init__(self, checkpoint):
        super().__init__(f"training interrupted; checkpoint: {checkpoint}" if checkpoint
                         else "training interrupted (checkpointing is off: nothing saved)")
        self.checkpoint = checkpoint


@dataclasses.dataclass
class _Run:
    """What one :meth:`Trainer.fit` call trains on."""

    x: object           # training images and labels on the device
    y: object
    xs: object          # the epoch's permuted copies (x, y themselves without shuffling)
    ys: object
    validation: tuple | None
    test: tuple | None
    n: int              # training images
    batches: int        # full mini-batches per epoch
    bar: ProgressBar | None


def _optimizer_property(name):
    """``trainer.<name>``: reads and sets ``trainer.optimizer.<name>``."""
    return property(lambda self: getattr(self.optimizer, name),
                    lambda self, value: setattr(self.optimizer, name, value),
                    doc=f"The optimizer's {name} (:class:`~fastmom.optim.MomentumSGD`).")


class Trainer:
    """Train a :class:`~fastmom.Network` with plain, momentum or Nesterov SGD.

    Parameters
    ----------
    net : Network
    optimizer : {"sgd", "momentum", "nesterov"} or MomentumSGD, optional
        A name selects the update (``"sgd"`` forces ``momentum=0``); by default the
        update follows ``momentum`` and ``nesterov``. An instance is used as given
        (its own hyper-parameters; ``eta``... are then ignored).
    eta, momentum, nesterov, lmbda
        As for :class:`~fastmom.optim.MomentumSGD` (``lmbda`` is divided by the
        number of training mini-batches, as in network3). The optimizer owns them:
        ``trainer.eta`` and the others read and set ``trainer.optimizer``'s.
    shuffle : bool, default True
        Permute the training set every epoch (network3 did not: ``Network.SGD``
        passes False).
    seed : int, optional
        Seed of the data order; default derived from the network's seed.
    schedule : callable or callback, optional
        Either ``f(epoch) -> eta`` applied at the start of each epoch, or a callback
        such as :class:`DivideOnPlateau`.
    early_stopping : int, optional
        Stop after this many epochs without a new best validation accuracy
        (:class:`~fastmom.train.EarlyStopping`).
    callbacks : iterable
        Plain callables ``f(trainer, record)`` run at the end of each epoch, or objects
        with the hooks of :mod:`fastmom.train.callbacks`; setting
        ``trainer.stop_training = True`` stops.
    progress : bool, optional
        A tqdm bar over the mini-batches; default: when stderr is a terminal and
        network3's lines are not printed.
    network3_output : bool, default False
        Both of network3's ways: print its lines (a
        :class:`~fastmom.train.Network3Log` with ``log``) and ``drop_last=True``.
    drop_last : bool, default False
        Measure accuracy network3's way, the mean over full mini-batches, instead of
        over every image.
    check_finite : bool or int, default True
        Stop with :class:`DivergenceError` when a mini-batch's cost or gradient is NaN
        or infinite, or when its update would make the parameters or velocity
        non-finite, before the update is applied (one ``dot(g, g)`` pass per step). An
        int ``N > 1`` checks once every ``N`` mini-batches instead, the default for GPU
        backends: on a non-finite window the parameters and velocity are restored to
        their state before the window. See :mod:`fastmom.train.guard`.
    strict : bool, default False
        What the collapse guard (:class:`~fastmom.train.guard.CollapseGuard`, always on)
        does when the epoch's mean cost exceeds 10x the first epoch's or validation
        accuracy stays at chance for two epochs: warn once (a
        :class:`~fastmom.train.guard.CollapseWarning`), or with ``strict=True`` stop
        with :class:`~fastmom.train.guard.CollapseError` (a ``DivergenceError``): the
        CLI's ``--strict``. Runs that do not collapse are unaffected.
    log : callable, default print
        Where ``network3_output`` prints.
    checkpoint_dir : str or path-like, optional
        Shorthand for ``checkpointer=Checkpointer(checkpoint_dir)``: a checkpoint every
        epoch, the newest 3 kept.
    checkpointer : Checkpointer, optional
        Where and how often to write checkpoints. Each holds the architecture,
        parameters, velocity, optimizer hyper-parameters, epoch/step counters, the
        position inside the epoch, data-order and dropout RNG states, callback state and
        the history; see :mod:`fastmom.checkpoint`. A checkpoint is also written when
        :meth:`fit` finishes, and when Ctrl-C stops it; never from non-finite
        parameters. (``checkpoint_every``, ``checkpoint_unit`` and ``keep_last``, with
        ``checkpoint_dir``, still work but are deprecated: they are the
        Checkpointer's ``every``, ``unit`` and ``keep_last``.)
    resume : str, path-like or True, optional
        Restore the state stored in this checkpoint file (or the newest one in this
        directory; ``True``: in the checkpointer's directory, starting afresh if there
        is none). The network must have the stored architecture (build it with
        ``Network.load(path)``). The stored optimizer hyper-parameters (eta,
        momentum, nesterov, lmbda, as training left them) replace the constructor's;
        set ``trainer.eta`` afterwards to change eta. Training continues
        bit-identically to an uninterrupted run on the same backend and thread
        count, from the exact mini-batch where the checkpoint was taken: call
        :meth:`fit_to` with the run's total number of epochs to stop where it would
        have stopped (:meth:`fit` counts epochs *more*).

    Notes
    -----
    Epochs: ``fit(data, n)`` trains ``n`` more epochs and appends to the history
    (a second ``fit`` continues); ``fit_to(data, total)`` trains until ``total``
    epochs are finished in all, counting those in a resumed checkpoint: the resume
    path (``fastmom train --resume`` and any script that reruns itself after a
    crash call it with the same total every time).

    Ctrl-C: while :meth:`fit` runs in the main thread with checkpointing on, or on
    more than one rank (:mod:`fastmom.distributed`, where the launcher's SIGTERM counts
    as Ctrl-C), SIGINT is deferred to the end of the current mini-batch (or the current
    checkpoint write); the ranks agree on it, the trainer then writes a checkpoint (if
    it has a checkpointer) and raises :class:`TrainingInterrupted` (a
    ``KeyboardInterrupt``) carrying its path, on every rank after the same step. A
    second Ctrl-C while that is pending interrupts at once.
    """

    def __init__(self, net, optimizer=None, *, eta=0.01, momentum=0.9, nesterov=False, lmbda=0.0,
                 shuffle=True, seed=None, schedule=None, early_stopping=None, callbacks=(),
                 progress=None, network3_output=False, drop_last=False, check_finite=True, strict=False, log=print,
                 checkpoint_dir=None, checkpointer=None, resume=None, **deprecated):
        self.net = net
        self.optimizer, self._batches_known = _optimizer(net, optimizer, eta, momentum, nesterov, lmbda)
        self.shuffle = bool(shuffle)
        seq = net.data_seed_sequence if seed is None else np.random.SeedSequence(seed)
        self.data_rng = np.random.default_rng(seq)
        # the callbacks run in this order: _before (eta function, network3's lines), the
        # schedule and user callbacks (whose state_dicts a checkpoint holds), early stopping
        self._before, self.callbacks = [], []
        if _cb.has_hooks(schedule):
            self.callbacks.append(schedule)
        elif schedule is not None:
            self._before.append(EtaSchedule(schedule))  # f(epoch) -> eta
        self.callbacks.extend(_cb.check_callback(cb) for cb in callbacks)
        self.early_stopping = early_stopping
        if network3_output:
            self._before.append(Network3Log(log))
        self.drop_last = bool(network3_output or drop_last)
        self.progress = progress
        self.check_finite, self.check_every = check_interval(check_finite, net.backend)
        self.collapse_guard = CollapseGuard(strict)
        self.checkpointer = _checkpointer(checkpoint_dir, checkpointer, deprecated)
        self.history = History()
        self.epoch = 0
        self.step = 0  # optimizer steps applied, over all epochs
        self.stop_training = False
        self._position = None  # inside an epoch: set by a checkpoint, consumed by fit
        self._saved_step = None
        self._resumed_from = None
        self._sigint = Sigint()
        self._dp = _parallel.attach(self)  # this process alone, or its share of N ranks (fastmom.distributed)
        resume = _dist.run_on_main(resolve_resume, resume, self.checkpointer)
        if resume:
            self.load_checkpoint(resume)

    # -- hyper-parameters: the optimizer's ----------------------------------------------

    eta = _optimizer_property("eta")
    momentum = _optimizer_property("momentum")
    nesterov = _optimizer_property("nesterov")
    lmbda = _optimizer_property("lmbda")

    @property
    def early_stopping(self):
        """The early-stopping patience in epochs, or None."""
        return None if self._early_stopping is None else self._early_stopping.patience

    @early_stopping.setter
    def early_stopping(self, value):
        self._early_stopping = (None if value is None else
                                EarlyStopping(_validate.positive_int("early_stopping", value)))

    @property
    def network3_output(self):
        """Whether this trainer prints network3's lines and measures accuracy its way."""
        return self.drop_last and any(isinstance(cb, Network3Log) for cb in self._before)

    @property
    def checkpoint_dir(self):
        return None if self.checkpointer is None else self.checkpointer.directory

    @property
    def last_checkpoint(self):
        """The newest checkpoint in the checkpoint directory (None without one)."""
        return None if self.checkpointer is None else self.checkpointer.last

    @property
    def resumed_from(self):
        """Deprecated: the checkpoint this trainer was last restored from."""
        warnings.warn("Trainer.resumed_from is deprecated and will be removed", DeprecationWarning, stacklevel=2)
        return self._resumed_from

    def _hooks(self):
        return [*self._before, *self.callbacks, *([self._early_stopping] if self._early_stopping else []),
                self.collapse_guard]

    # -- checkpoints ---------------------------------------------------------------------

    def _state(self):
        hyper = self.optimizer.hyper_parameters()
        if not self._batches_known:
            hyper["num_training_batches"] = None
        return TrainerState(self.epoch, self.step, self._position, _ckpt.rng_state(self.data_rng), self.shuffle,
                            hyper, self.history,
                            [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in self.callbacks])

    def state_meta(self):
        """The trainer's JSON-able state (everything but the arrays)."""
        return self._state().to_meta()

    def save_checkpoint(self, path=None):
        """Write the network and trainer state to ``path`` (default: a new file in the
        checkpoint directory, then prune to its ``keep_last``) atomically; return the path.

        Raises DivergenceError, writing nothing, if the parameters or velocity hold
        NaN or Inf.
        """
        if path is None:
            if self.checkpointer is None:
                raise ValueError("save_checkpoint() needs a path when checkpoint_dir is not set")
            path = self.checkpointer.path(self.epoch, self.step)
        path = os.fspath(path)
        write(path, self.net, self._state(), self.optimizer.velocity, self.last_checkpoint)
        if self.checkpointer is not None:
            self.checkpointer.written(path)
        self._saved_step = self.step
        return path

    def load_checkpoint(self, path):
        """Restore a :meth:`save_checkpoint` file (of any fastmom version that wrote format
        1) into this trainer and its network."""
        path = os.fspath(path)
        state, arrays, network_meta = read(path, self.net)
        try:
            self._restore(state, arrays.get("velocity"), path)
        except _ckpt.CheckpointError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise _ckpt.CheckpointError(f"{path}: invalid trainer state ({type(exc).__name__}: {exc})") from exc
        _ckpt.load_state_into(self.net, network_meta, arrays["params"], path)
        self._saved_step = self.step
        self._resumed_from = path
        return self

    def _restore(self, state, velocity, path):
        hyper = dict(state.optimizer)
        started = hyper["num_training_batches"] is not None  # saved after a fit began
        if not started:
            del hyper["num_training_batches"]
        if velocity is None and started and hyper["momentum"]:
            raise _ckpt.CheckpointError(f"{path}: velocity missing or of the wrong shape")
        _ckpt.set_rng_state(self.data_rng, state.data_rng)
        opt = self.optimizer
        opt.configure(**hyper)
        self._batches_known = self._batches_known or started
        if opt.velocity is not None:
            opt.velocity[...] = 0 if velocity is None else self.net.backend.asarray(velocity, self.net.dtype)
        self.epoch, self.step = state.epoch, state.step
        self.history, self._position = state.history, state.position
        for cb, cb_state in zip(self.callbacks, state.callbacks):
            if cb_state is not None and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(cb_state)

    @classmethod
    def from_checkpoint(cls, path, device=None, dtype=None, **kwargs):
        """Rebuild the network stored in ``path`` and a trainer resumed from it.

        ``kwargs`` go to the constructor (``checkpoint_dir``, ``callbacks``, ...);
        the stored hyper-parameters win over ``eta``/``momentum``/``lmbda``.
        """
        net = _ckpt.load_network(path, device=device, dtype=dtype)
        return cls(net, resume=path, **kwargs)

    def _interrupt(self):
        path = self.save_checkpoint() if self.checkpointer is not None else None
        raise TrainingInterrupted(path)

    def _checkpoint_note(self):
        return "." if self.checkpointer is None else f"; the last checkpoint is {self.checkpointer.last}."

    # -- the loop -------------------------------------------------------------------------

    def fit(self, training_data, epochs, validation_data=None, test_data=None):
        """Train ``epochs`` more epochs, append their records to :attr:`history` and
        return it (Keras's meaning: a second ``fit(data, 3)`` trains 3 more).

        ``fit(data, n)`` is ``fit_to(data, trainer.epoch + n)``: an epoch left partly
        trained (by a checkpoint taken inside it, or Ctrl-C) counts as the first of
        the ``n``. To finish a resumed run where the uninterrupted one would have
        stopped, use :meth:`fit_to` with the run's total.

        Raises
        ------
        ValueError
            For bad data, or ``early_stopping`` (or a callback that acts on validation
            accuracy, such as :class:`DivideOnPlateau`) without ``validation_data``.
        DivergenceError
            When a mini-batch's cost or gradient is not finite (the step is not applied).
        TrainingInterrupted
            On Ctrl-C with checkpointing on, after writing a checkpoint.
        """
        epochs = _validate.non_negative_int("epochs", epochs)
        return self.fit_to(training_data, self.epoch + epochs, validation_data, test_data)

    def fit_to(self, training_data, total_epochs, validation_data=None, test_data=None):
        """Train until :attr:`epoch` (epochs finished, over every fit and the resumed
        checkpoint) reaches ``total_epochs``; return the history.

        The resume path: ``Trainer.from_checkpoint(path).fit_to(data, N)`` (or
        ``Trainer(net, resume=...)``) ends exactly where an uninterrupted
        ``fit(data, N)`` from scratch ends, bit-identically on the same backend and
        thread count, whether the checkpoint was taken at an epoch's end or inside an
        epoch. Nothing is trained when ``epoch >= total_epochs``. Raises as
        :meth:`fit`.
        """
        total_epochs = _validate.non_negative_int("total_epochs", total_epochs)
        # on N ranks Ctrl-C is always deferred and agreed on (DataParallel.reduce/agree), even
        # with nothing to checkpoint: a rank that stopped alone would leave the others waiting
        with deferred_sigint(self.checkpointer is not None or self._dp.world_size > 1) as self._sigint:
            return self._fit(training_data, total_epochs, validation_data, test_data)

    def _fit(self, training_data, epochs, validation_data, test_data):
        run = self._prepare(training_data, validation_data, test_data)
        self._dp.begin_fit(self, run, epochs)
        guard = make_guard(self.check_finite, self.check_every, self.net, self.optimizer, self._checkpoint_note)
        self.stop_training = False
        while self.epoch < epochs and not self.stop_training:
            self._run_epoch(run, guard)
        if self.checkpointer is not None and self._saved_step != self.step:
            self.save_checkpoint()  # the final state, whatever the period
        _cb.dispatch(self._hooks(), "on_fit_end", self)
        return self.history

    def _prepare(self, training_data, validation_data, test_data):
        net, be = self.net, self.net.backend
        x, y = net.prepare_data(training_data, "training_data")
        val = net.prepare_data(validation_data, "validation_data") if validation_data is not None else None
        test = net.prepare_data(test_data, "test_data") if test_data is not None else None
        if self._early_stopping is not None and val is None:
            raise ValueError(f"early_stopping={self.early_stopping} needs validation_data: it stops when "
                             f"validation accuracy stops improving")
        if val is None:
            for cb in self.callbacks:
                if getattr(cb, "needs_validation_data", False):
                    raise ValueError(f"{type(cb).__name__} needs validation_data: it acts on validation "
                                     f"accuracy and would never act without it")
        n, bs = x.shape[0], net.mini_batch_size
        if n // bs == 0:
            raise ValueError(f"training_data has {n} images, fewer than mini_batch_size={bs}")
        if self._position is not None and self._position.n_train != n:
            raise ValueError(f"the checkpoint stopped inside an epoch of {self._position.n_train} training "
                             f"images; resume it with the same training data (got {n} images)")
        if not self._batches_known:  # fixed by the first fit (or a checkpoint), as network3's
            self.optimizer.num_training_batches = n // bs
            self._batches_known = True
        xs, ys = (be.empty(x.shape, x.dtype), be.empty(y.shape, y.dtype)) if self.shuffle else (x, y)
        printing = any(isinstance(cb, Network3Log) for cb in self._hooks())
        bar = self.progress if self.progress is not None else (not printing and sys.stderr.isatty())
        return _Run(x, y, xs, ys, val, test, n, n // bs, ProgressBar(batch_size=bs) if bar else None)

    def _run_epoch(self, run, guard):
        epoch, position = self.epoch, self._position
        self._position = None
        if position is not None:
            # resume inside the epoch: replay its permutation from the data RNG state it
            # started with; the dropout RNG is already where the checkpoint left it
            _ckpt.set_rng_state(self.data_rng, position.data_rng)
        else:
            _cb.dispatch(self._hooks(), "on_epoch_begin", self, epoch)
        start_rng = _ckpt.rng_state(self.data_rng) if self.checkpointer is not None else None
        if self.shuffle:
            be = self.net.backend
            perm = be.asarray(self.data_rng.permutation(run.n))
            be.xp.take(run.x, perm, axis=0, out=run.xs)
            be.xp.take(run.y, perm, axis=0, out=run.ys)
        first = position.batch if position else 0
        guard.begin_epoch(epoch, first, run.batches)
        seconds_before, t0 = (position.seconds if position else 0.0), time.perf_counter()
        cost_sum = self._train_batches(run, guard, first, position.cost_sum if position else 0.0,
                                       lambda: seconds_before + time.perf_counter() - t0, start_rng)
        self.net.backend.synchronize()
        record = self._record(run, epoch, cost_sum, seconds_before + time.perf_counter() - t0)
        self.history.add(record)
        self.epoch += 1
        for hook in _cb.hooks(self._hooks(), "on_epoch_end"):
            hook(self, record)
        self.stop_training = self._dp.agree(self.stop_training, self._sigint)
        if self._dp.interrupted(self._sigint):
            self._interrupt()
        if self.checkpointer is not None and self.checkpointer.due(self.step, self.epoch):
            self.save_checkpoint()

    def _train_batches(self, run, guard, first, cost_sum, seconds, start_rng):
        """Train mini-batches ``first..`` of the epoch; return the sum of their costs."""
        net, epoch, ck = self.net, self.epoch, self.checkpointer
        batch_hooks = _cb.hooks(self._hooks(), "on_batch_begin")
        batches = range(first, run.batches) if run.bar is None else run.bar.batches(epoch, first, run.batches)
        for j in batches:
            for hook in batch_hooks:
                hook(self, run.batches * epoch + j)
            rows = self._dp.begin_step(j, self.step)  # the mini-batch, or this rank's share of it
            cost = self._dp.reduce(net.train_step(run.xs[rows], run.ys[rows]), self._sigint)
            guard.step(cost, j)
            if run.bar is not None:
                run.bar.add_cost(cost)
            cost_sum = cost_sum + cost
            self.step += 1
            stop = self._dp.interrupted(self._sigint)
            if j + 1 < run.batches and (stop or (ck is not None and ck.due(self.step))):
                # a mid-epoch checkpoint: where to pick the epoch up again
                self._position = EpochPosition(j + 1, float(cost_sum), seconds(), run.n, start_rng)
                if stop:
                    self._interrupt()  # _position stays set: calling fit again continues this epoch
                self.save_checkpoint()
                self._position = None
        return cost_sum

    def _record(self, run, epoch, cost_sum, seconds):
        net, opt = self.net, self.optimizer
        record = {
            "epoch": epoch,
            "iteration": run.batches * (epoch + 1) - 1,
            "cost": float(cost_sum) / run.batches + net.l2_cost(opt.lmbda, opt.num_training_batches),
            "validation_accuracy": None,
            "test_accuracy": None,
            "eta": opt.eta,
            "seconds": seconds,
            "elapsed": (self.history[-1]["elapsed"] if self.history else 0.0) + seconds,
            "images_per_second": run.batches * net.mini_batch_size / seconds if seconds > 0 else math.inf,
        }
        if run.validation is not None:
            record["validation_accuracy"] = self._dp.evaluate(net, *run.validation, self.drop_last)
        if run.test is not None:
            record["test_accuracy"] = self._dp.evaluate(net, *run.test, self.drop_last)
        return record


def _optimizer(net, optimizer, eta, momentum, nesterov, lmbda):
    """``(MomentumSGD, whether its num_training_batches is already set)``."""
    if isinstance(optimizer, MomentumSGD):
        return optimizer, True  # the caller's: used as given
    if isinstance(optimizer, str):
        _validate.choice("optimizer", optimizer, OPTIMIZERS)
        nesterov = optimizer == "nesterov"
        if optimizer == "sgd":
            momentum = 0.0
        elif momentum == 0:
            raise ValueError(f"optimizer={optimizer!r} needs momentum > 0")
    elif optimizer is not None:
        raise TypeError(f"optimizer must be a name or a MomentumSGD, got {type(optimizer).__name__}")
    return MomentumSGD(net, eta, momentum, nesterov, lmbda), False


def _checkpointer(checkpoint_dir, checkpointer, deprecated):
    """The Trainer's Checkpointer (or None) from its keywords."""
    unknown = sorted(set(deprecated) - set(_CHECKPOINT_KEYWORDS))
    if unknown:
        raise TypeError(f"Trainer() got an unexpected keyword argument {unknown[0]!r}")
    if deprecated:
        warnings.warn(f"Trainer({', '.join(f'{k}=' for k in sorted(deprecated))}) is deprecated: pass "
                      f"checkpointer=Checkpointer(checkpoint_dir, every=..., unit=..., keep_last=...)",
                      DeprecationWarning, stacklevel=3)
    policy = check_policy(*(deprecated.get(k, v) for k, v in _CHECKPOINT_KEYWORDS.items()), prefix="checkpoint_")
    if checkpointer is None:
        return None if checkpoint_dir is None else Checkpointer(checkpoint_dir, *policy)
    if not isinstance(checkpointer, Checkpointer):
        raise TypeError(f"checkpointer must be a Checkpointer, got {type(checkpointer).__name__}")
    if checkpoint_dir is not None or deprecated:
        raise TypeError("pass checkpointer= or checkpoint_dir= (with its options), not both")
    return checkpointer
