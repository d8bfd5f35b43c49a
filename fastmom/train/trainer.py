"""``Trainer``: the training loop that ``Network.SGD`` is built on.

One epoch: (optionally) permute the training set on the device, then for each
mini-batch ``net.train_step`` (forward + backward into the flat gradient buffer) and
``optimizer.step()`` (one fused update of the flat parameter buffer); then measure
validation and test accuracy, append a record to the history and run the callbacks.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time

import numpy as np

from .. import checkpoint as _ckpt
from ..optim import MomentumSGD, check_eta

__all__ = ["Trainer", "History", "DivideOnPlateau", "DivergenceError", "TrainingInterrupted",
           "OPTIMIZERS"]

OPTIMIZERS = ("sgd", "momentum", "nesterov")
CHECKPOINT_UNITS = ("epoch", "step")


class DivergenceError(FloatingPointError):
    """The training cost or gradient became NaN or infinite; the offending step was not
    applied, so the parameters and velocity are those after the last good step."""


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
    ``min_ratio`` of its first value (Nielsen suggests 1/128).

    Its progress (``state_dict``) is part of a trainer checkpoint."""

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
    check_finite : bool or int, default True
        Stop with :class:`DivergenceError` when a mini-batch's cost or gradient is NaN
        or infinite, or when its update would make the parameters or velocity
        non-finite, before the update is applied. The cost is one ``dot(g, g)`` pass
        over the flat gradient per step; see ``_guarded_step``. An int ``N > 1``
        checks once every ``N`` mini-batches instead (one host round trip per window,
        the default for GPU backends, where a per-step check would stall the device):
        on a non-finite window the parameters and velocity are restored to their
        state before the window, a device-side copy taken at each good check.
    log : callable, default print
    checkpoint_dir : str or path-like, optional
        Write checkpoints ``ckpt-e<epoch>-s<step>.npz`` here (created if missing).
        Each holds the architecture, parameters, velocity, optimizer
        hyper-parameters, epoch/step counters, the position inside the epoch,
        data-order and dropout RNG states, callback state and the history; see
        :mod:`fastmom.checkpoint`. A checkpoint is also written when :meth:`fit`
        finishes, and when Ctrl-C stops it. A checkpoint is never written from
        non-finite parameters.
    checkpoint_every : int, default 1
        Write every this many epochs (or steps, see ``checkpoint_unit``).
    checkpoint_unit : {"epoch", "step"}, default "epoch"
    keep_last : int, default 3
        Keep the newest this many checkpoints in ``checkpoint_dir``; older ones are
        deleted after each successful write.
    resume : str, path-like or True, optional
        Restore the state stored in this checkpoint file (or the newest one in this
        directory; ``True``: in ``checkpoint_dir``, starting afresh if there is
        none). The network must have the stored architecture (build it with
        ``Network.load(path)``). The stored optimizer hyper-parameters (eta,
        momentum, nesterov, lmbda, as training left them) replace the constructor's;
        set ``trainer.eta`` afterwards to change eta. Training continues
        bit-identically to an uninterrupted run on the same backend and thread
        count, from the exact mini-batch where the checkpoint was taken.

    Notes
    -----
    Ctrl-C: while :meth:`fit` runs in the main thread with checkpointing on, SIGINT
    is deferred to the end of the current mini-batch (or the current checkpoint
    write); the trainer then writes a checkpoint and raises
    :class:`TrainingInterrupted` (a ``KeyboardInterrupt``) carrying its path. A
    second Ctrl-C while that is pending interrupts at once.
    """

    def __init__(self, net, optimizer=None, *, eta=0.01, momentum=0.9, nesterov=False, lmbda=0.0,
                 shuffle=True, seed=None, schedule=None, early_stopping=None, callbacks=(),
                 progress=None, network3_output=False, check_finite=True, log=print,
                 checkpoint_dir=None, checkpoint_every=1, checkpoint_unit="epoch", keep_last=3,
                 resume=None):
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
        seq = net.data_seed_sequence if seed is None else np.random.SeedSequence(seed)
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
        self.check_finite, self.check_every = _check_interval(check_finite, net.backend)
        self.log = log
        self.history = History()
        self.epoch = 0
        self.step = 0  # optimizer steps applied, over all epochs
        self.stop_training = False
        # mid-epoch position: set by a resumed checkpoint, consumed by fit
        self._pending = None
        self._saved_step = None
        self.last_checkpoint = None
        self._sigint = False

        self.checkpoint_dir = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
        self.checkpoint_every = _positive("checkpoint_every", checkpoint_every)
        if checkpoint_unit not in CHECKPOINT_UNITS:
            raise ValueError(f"checkpoint_unit must be one of {CHECKPOINT_UNITS}, got {checkpoint_unit!r}")
        self.checkpoint_unit = checkpoint_unit
        self.keep_last = _positive("keep_last", keep_last)
        if self.checkpoint_dir is not None:
            if os.path.exists(self.checkpoint_dir) and not os.path.isdir(self.checkpoint_dir):
                raise ValueError(f"checkpoint_dir {self.checkpoint_dir} exists and is not a directory")
            os.makedirs(self.checkpoint_dir, exist_ok=True)
            self.last_checkpoint = _ckpt.latest_checkpoint(self.checkpoint_dir)
        if resume is True:
            if self.checkpoint_dir is None:
                raise ValueError("resume=True needs checkpoint_dir")
            resume = self.last_checkpoint
        elif resume is not None and os.path.isdir(os.fspath(resume)):
            found = _ckpt.latest_checkpoint(os.fspath(resume))
            if found is None:
                raise _ckpt.CheckpointError(f"{os.fspath(resume)}: no checkpoint in this directory")
            resume = found
        if resume:
            self.load_checkpoint(resume)

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

    # -- checkpoints ---------------------------------------------------------------------

    def state_meta(self):
        """The trainer's JSON-able state (everything but the arrays)."""
        opt = self.optimizer
        pending = self._pending
        h = self.history
        cbs = [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in self.callbacks]
        return {
            "epoch": self.epoch,
            "step": self.step,
            "batch": pending["batch"] if pending else 0,
            "epoch_cost_sum": pending["cost_sum"] if pending else 0.0,
            "epoch_seconds": pending["seconds"] if pending else 0.0,
            "n_train": pending["n_train"] if pending else None,
            "epoch_start_data_rng": pending["data_rng"] if pending else None,
            "data_rng": _ckpt.rng_state(self.data_rng),
            "shuffle": self.shuffle,
            "optimizer": None if opt is None else {
                "eta": opt.eta, "momentum": opt.momentum, "nesterov": opt.nesterov,
                "lmbda": opt.lmbda, "num_training_batches": opt.num_training_batches},
            "eta": self.eta, "momentum": self.momentum, "nesterov": self.nesterov, "lmbda": self.lmbda,
            "history": list(h),
            "best": h.summary(),
            "callbacks": cbs,
        }

    def save_checkpoint(self, path=None):
        """Write the network and trainer state to ``path`` (default: a new file in
        ``checkpoint_dir``, then prune to ``keep_last``) atomically; return the path.

        Raises DivergenceError, writing nothing, if the parameters or velocity hold
        NaN or Inf.
        """
        be = self.net.backend
        if path is None:
            if self.checkpoint_dir is None:
                raise ValueError("save_checkpoint() needs a path when checkpoint_dir is not set")
            path = os.path.join(self.checkpoint_dir, _ckpt.checkpoint_name(self.epoch, self.step))
        path = os.fspath(path)
        params = be.to_numpy(self.net.flat.data)
        vel = self.optimizer.velocity if self.optimizer is not None else None
        vel = None if vel is None else be.to_numpy(vel)
        if not np.isfinite(params).all() or (vel is not None and not np.isfinite(vel).all()):
            raise DivergenceError(f"not writing checkpoint {path}: the parameters or velocity are not "
                                  f"finite (last good checkpoint: {self.last_checkpoint})")
        meta = {"network": self.net.spec(), "trainer": self.state_meta()}
        _ckpt.write_checkpoint(path, meta, {"params": params, "velocity": vel})
        if self.checkpoint_dir is not None and os.path.dirname(os.path.abspath(path)) == \
                os.path.abspath(self.checkpoint_dir):
            self.last_checkpoint = path
            _ckpt.prune(self.checkpoint_dir, self.keep_last)
        self._saved_step = self.step
        return path

    def load_checkpoint(self, path):
        """Restore a :meth:`save_checkpoint` file into this trainer and its network."""
        path = os.fspath(path)
        meta, arrays = _ckpt.read_checkpoint(path)
        st = meta.get("trainer")
        if st is None:
            raise _ckpt.CheckpointError(f"{path}: holds a network only (Network.save), not trainer state")
        net = self.net
        _ckpt.check_fits(net, meta["network"], path)
        try:
            opt_meta = st["optimizer"]
            vel = arrays.get("velocity")
            if opt_meta is not None:
                if self.optimizer is None:
                    self.optimizer = MomentumSGD(net, opt_meta["eta"], opt_meta["momentum"],
                                                 opt_meta["nesterov"], opt_meta["lmbda"],
                                                 opt_meta["num_training_batches"])
                else:
                    opt = self.optimizer
                    opt.eta, opt.nesterov, opt.lmbda = opt_meta["eta"], opt_meta["nesterov"], opt_meta["lmbda"]
                    opt.momentum = opt_meta["momentum"]
                    opt.num_training_batches = opt_meta["num_training_batches"]
                    if opt.momentum and opt.velocity is None:
                        opt.velocity = net.backend.zeros((net.flat.size,), net.dtype)
                if self.optimizer.velocity is not None:
                    if vel is None or vel.shape != (net.flat.size,):
                        raise _ckpt.CheckpointError(f"{path}: velocity missing or of the wrong shape")
                    self.optimizer.velocity[...] = net.backend.asarray(vel, net.dtype)
            self._eta0 = check_eta(st["eta"])
            self.momentum, self.nesterov, self.lmbda = st["momentum"], st["nesterov"], st["lmbda"]
            self.epoch, self.step = int(st["epoch"]), int(st["step"])
            _ckpt.set_rng_state(self.data_rng, st["data_rng"])
            h = History(st["history"])
            for k, v in st["best"].items():
                setattr(h, k, v)
            self.history = h
            if st["batch"]:
                self._pending = {"batch": int(st["batch"]), "cost_sum": float(st["epoch_cost_sum"]),
                                 "seconds": float(st["epoch_seconds"]), "n_train": int(st["n_train"]),
                                 "data_rng": st["epoch_start_data_rng"]}
            else:
                self._pending = None
            for cb, state in zip(self.callbacks, st["callbacks"]):
                if state is not None and hasattr(cb, "load_state_dict"):
                    cb.load_state_dict(state)
        except _ckpt.CheckpointError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise _ckpt.CheckpointError(f"{path}: invalid trainer state ({type(exc).__name__}: {exc})") from exc
        _ckpt.load_state_into(net, meta["network"], arrays["params"], path)
        self._saved_step = self.step
        self.resumed_from = path
        return self

    @classmethod
    def from_checkpoint(cls, path, device=None, dtype=None, **kwargs):
        """Rebuild the network stored in ``path`` and a trainer resumed from it.

        ``kwargs`` go to the constructor (``checkpoint_dir``, ``callbacks``, ...);
        the stored hyper-parameters win over ``eta``/``momentum``/``lmbda``.
        """
        net = _ckpt.load_network(path, device=device, dtype=dtype)
        return cls(net, resume=path, **kwargs)

    def _on_sigint(self, signum, frame):
        if self._sigint:
            # a second Ctrl-C: the user does not want to wait for the checkpoint
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self._sigint = True

    def _interrupt(self):
        path = self.save_checkpoint() if self.checkpoint_dir is not None else None
        raise TrainingInterrupted(path)

    def fit(self, training_data, epochs, validation_data=None, test_data=None):
        """Train for ``epochs`` epochs (counting from ``self.epoch``) and return the history.

        Raises
        ------
        DivergenceError
            When a mini-batch's cost or gradient is not finite (the step is not applied).
        TrainingInterrupted
            On Ctrl-C with checkpointing on, after writing a checkpoint.
        """
        # defer SIGINT to a mini-batch boundary only where Python lets us install a
        # handler (the main thread) and nobody else installed one
        deferred = (self.checkpoint_dir is not None and threading.current_thread() is threading.main_thread()
                    and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        if not deferred:
            return self._fit(training_data, epochs, validation_data, test_data)
        self._sigint = False
        signal.signal(signal.SIGINT, self._on_sigint)
        try:
            return self._fit(training_data, epochs, validation_data, test_data)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self._sigint = False

    def _fit(self, training_data, epochs, validation_data, test_data):
        net, be = self.net, self.net.backend
        try:
            n_epochs = int(epochs)
        except (TypeError, ValueError):
            raise TypeError(f"epochs must be an int >= 0, got {epochs!r}") from None
        if n_epochs != epochs or n_epochs < 0 or isinstance(epochs, bool):
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        epochs = n_epochs
        xtr, ytr = net.prepare_data(training_data, "training_data")
        val = net.prepare_data(validation_data, "validation_data") if validation_data is not None else None
        test = net.prepare_data(test_data, "test_data") if test_data is not None else None
        bs = net.mini_batch_size
        n = xtr.shape[0]
        ntb = n // bs
        if ntb == 0:
            raise ValueError(f"training_data has {n} images, fewer than mini_batch_size={bs}")
        if self._pending is not None and self._pending["n_train"] != n:
            raise ValueError(f"the checkpoint stopped inside an epoch of {self._pending['n_train']} training "
                             f"images; resume it with the same training data (got {n} images)")
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
        by_step = self.checkpoint_dir is not None and self.checkpoint_unit == "step"
        by_epoch = self.checkpoint_dir is not None and self.checkpoint_unit == "epoch"
        while self.epoch < epochs and not self.stop_training:
            epoch = self.epoch
            pending, self._pending = self._pending, None
            if pending is not None:
                # resume inside the epoch: replay its permutation from the data RNG state
                # it started with; the dropout RNG is already where the checkpoint left it
                _ckpt.set_rng_state(self.data_rng, pending["data_rng"])
            epoch_rng = _ckpt.rng_state(self.data_rng) if self.checkpoint_dir is not None else None
            if self._eta_fn is not None and pending is None:
                self.eta = self._eta_fn(epoch)
            if self.shuffle:
                perm = be.asarray(self.data_rng.permutation(n))
                be.xp.take(xtr, perm, axis=0, out=xs)
                be.xp.take(ytr, perm, axis=0, out=ys)
            j0 = pending["batch"] if pending else 0
            windowed = self.check_finite and self.check_every > 1
            if windowed:
                self._snapshot(opt)
                window_cost, window_start = 0.0, j0
            elif self.check_finite:
                self._sync_norm_bounds(opt)
            batches = range(j0, ntb)
            if show_bar:
                from tqdm.auto import tqdm
                batches = tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False, initial=j0, total=ntb)
            t0 = time.perf_counter()
            cost_sum = pending["cost_sum"] if pending else 0.0
            seconds_before = pending["seconds"] if pending else 0.0
            for j in batches:
                iteration = ntb * epoch + j
                if self.network3_output and iteration % 1000 == 0:
                    self.log(f"Training mini-batch number {iteration}")
                cost = net.train_step(xs[j * bs:(j + 1) * bs], ys[j * bs:(j + 1) * bs])
                if windowed:
                    opt.step()
                    window_cost = window_cost + cost
                    if (j + 1 - j0) % self.check_every == 0 or j + 1 == ntb:
                        self._check_window(window_cost, epoch, window_start, j, ntb, opt)
                        window_cost, window_start = 0.0, j + 1
                elif self.check_finite:
                    self._guarded_step(cost, epoch, j, iteration, opt)
                else:
                    opt.step()
                cost_sum = cost_sum + cost
                self.step += 1
                if j + 1 < ntb and (self._sigint or (by_step and self.step % self.checkpoint_every == 0)):
                    # a mid-epoch checkpoint: where to pick the epoch up again
                    self._pending = {"batch": j + 1, "cost_sum": float(cost_sum), "n_train": n,
                                     "seconds": seconds_before + time.perf_counter() - t0,
                                     "data_rng": epoch_rng}
                    if self._sigint:
                        # _pending stays set: calling fit again continues this epoch
                        self._interrupt()
                    self.save_checkpoint()
                    self._pending = None
            be.synchronize()
            seconds = seconds_before + time.perf_counter() - t0
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
                record["validation_accuracy"] = net.evaluate(*val, drop_last=drop)
            if test is not None:
                record["test_accuracy"] = net.evaluate(*test, drop_last=drop)
            self._update_best(record)
            h.append(record)
            self.epoch += 1
            for cb in self.callbacks:
                (cb.on_epoch_end if hasattr(cb, "on_epoch_end") else cb)(self, record)
            if self.early_stopping and h.best_epoch is not None and epoch - h.best_epoch >= self.early_stopping:
                self.stop_training = True
            if self._sigint:
                self._interrupt()
            if (by_epoch and self.epoch % self.checkpoint_every == 0) or (
                    by_step and self.step % self.checkpoint_every == 0):
                self.save_checkpoint()
        if self.checkpoint_dir is not None and self._saved_step != self.step:
            self.save_checkpoint()  # the final state, whatever the period
        if self.network3_output:
            self.log("Finished training network.")
            if h.best_validation_accuracy is not None:
                self.log("Best validation accuracy of {0:.2%} obtained at iteration {1}".format(
                    h.best_validation_accuracy, h.best_iteration))
                if h.test_accuracy_at_best is not None:
                    self.log("Corresponding test accuracy of {0:.2%}".format(h.test_accuracy_at_best))
        return h

    # -- divergence guard -------------------------------------------------------------------
    #
    # Per step: the cost is read anyway; one dot(g, g) pass over the flat gradient
    # catches a NaN/Inf gradient (the array module's SIMD dot: ~7 us for network3's
    # 85,670 parameters where the cpu backend's double-accumulating sum_squares takes
    # ~130 us single-threaded). A finite gradient can still overflow the update
    # (eta far too large), so the trainer keeps upper bounds on the L2 norms of the
    # parameters and velocity, advanced by the triangle inequality from the gradient
    # norm (no extra pass), and re-measured once per epoch. Only while a bound says
    # the update could overflow does a step run the careful way: copy the parameters
    # and velocity, step, check, and restore them if anything became non-finite.

    def _sync_norm_bounds(self, opt):
        be, flat = self.net.backend, self.net.flat
        self._pnorm = math.sqrt(_sum_squares(be, flat.data))
        self._vnorm = math.sqrt(_sum_squares(be, opt.velocity)) if opt.velocity is not None else 0.0
        self._limit = float(np.finfo(self.net.dtype).max) / 16  # margin for rounding

    def _diverged(self, what, epoch, j, iteration, opt,
                  outcome="the step was not applied. The parameters are those after the last good step"):
        where = f"training diverged at epoch {epoch}, mini-batch {j} (iteration {iteration})"
        ckpt = (f"; the last checkpoint is {self.last_checkpoint}." if self.checkpoint_dir is not None
                else ".")
        hint = (f" Likely cause: eta={opt.eta} is too large for momentum={opt.momentum}; try a "
                f"smaller eta (or momentum).")
        return DivergenceError(f"{where}: {what}; {outcome}{ckpt}{hint}")

    def _snapshot(self, opt):
        """Copy the parameters and velocity into buffers allocated once (on the device)."""
        be, flat = self.net.backend, self.net.flat
        if getattr(self, "_snap", None) is None or self._snap[0].shape != flat.data.shape:
            self._snap = (be.empty(flat.data.shape, flat.dtype),
                          be.empty(flat.data.shape, flat.dtype) if opt.velocity is not None else None)
        self._snap[0][...] = flat.data
        if opt.velocity is not None:
            self._snap[1][...] = opt.velocity

    def _check_window(self, window_cost, epoch, first, last, ntb, opt):
        """One host round trip for mini-batches ``first..last``: keep a snapshot if the
        cost, parameters and velocity are finite, else restore the last one and raise."""
        be, flat, xp = self.net.backend, self.net.flat, self.net.backend.xp
        ok = xp.isfinite(xp.asarray(window_cost)) & xp.isfinite(flat.data).all()
        if opt.velocity is not None:
            ok = ok & xp.isfinite(opt.velocity).all()
        if bool(ok):
            self._snapshot(opt)
            return
        flat.data[...] = self._snap[0]
        if opt.velocity is not None:
            opt.velocity[...] = self._snap[1]
        raise self._diverged(
            f"the cost, gradient or update became NaN or infinite within mini-batches {first} to {last} "
            f"(checked every {self.check_every})", epoch, first, ntb * epoch + first, opt,
            outcome=f"the parameters and velocity are restored to their state before mini-batch {first}")

    def _guarded_step(self, cost, epoch, j, iteration, opt):
        """Apply ``opt.step()`` unless the cost, the gradient or the update is not finite;
        then raise DivergenceError with the parameters and velocity unchanged."""
        cost = float(cost)
        if not math.isfinite(cost):
            raise self._diverged(f"the cost is {cost}", epoch, j, iteration, opt)
        be, flat = self.net.backend, self.net.flat
        g2 = _sum_squares(be, flat.grad)  # NaN/Inf anywhere makes the sum non-finite
        # a non-finite sum from finite values (squares overflowing) only disables the
        # bound below: confirm exactly before calling it divergence (a rare path)
        if not math.isfinite(g2) and not _all_finite(be, flat.grad):
            raise self._diverged(f"the gradient is not finite (sum of squares {g2}) although the cost "
                                 f"is {cost}", epoch, j, iteration, opt)
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
            raise self._diverged(f"the update overflows (finite cost {cost} and gradient, but the new "
                                 f"parameters or velocity are not finite)", epoch, j, iteration, opt)
        self._sync_norm_bounds(opt)

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


def _check_interval(check_finite, backend):
    """``(enabled, every)``: every step on host backends, every 32 on a GPU by default."""
    if isinstance(check_finite, bool):
        return check_finite, (1 if backend.xp is np else 32)
    try:
        every = int(check_finite)
    except (TypeError, ValueError):
        raise TypeError(f"check_finite must be a bool or a positive int, got {check_finite!r}") from None
    if every != check_finite or every < 1:
        raise ValueError(f"check_finite must be a bool or a positive int, got {check_finite!r}")
    return True, every


def _sum_squares(backend, a):
    """``sum(a*a)`` in ``a``'s precision: NaN/Inf anywhere (or an overflowing square)
    makes it non-finite."""
    return float(backend.xp.dot(a, a))


def _all_finite(backend, a):
    return bool(backend.xp.isfinite(a).all())


def _positive(name, value):
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive int, got {value!r}") from None
    if v != value or v < 1 or isinstance(value, bool):
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return v
