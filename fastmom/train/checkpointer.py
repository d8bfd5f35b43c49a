"""Trainer checkpoints: the trainer's state in :mod:`fastmom.checkpoint`'s file format,
when and where a :class:`Checkpointer` writes them, and Ctrl-C deferred to a mini-batch
boundary.

The ``trainer`` section of a checkpoint's metadata (:meth:`TrainerState.to_meta`)::

    epoch, step                 epochs finished, optimizer steps applied
    batch, epoch_cost_sum,      the position inside a partly trained epoch (batch 0 and
    epoch_seconds, n_train,     nulls at an epoch boundary): see EpochPosition
    epoch_start_data_rng
    data_rng, shuffle           the data-order generator's state, whether it permutes
    optimizer                   MomentumSGD.hyper_parameters(); num_training_batches is
                                null before the first fit
    history, best               History records and summary
    callbacks                   each callback's state_dict() (or null), in order

Files written before the hyper-parameters had one owner also hold top-level ``eta``,
``momentum``, ``nesterov`` and ``lmbda`` (the only copy when ``optimizer`` is null: saved
before the first fit); :meth:`TrainerState.from_meta` reads both layouts.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading

import numpy as np

from .. import _validate
from .. import checkpoint as _ckpt
from .. import distributed as _dist
from .guard import DivergenceError
from .history import History

__all__ = ["Checkpointer", "EpochPosition", "TrainerState", "CHECKPOINT_UNITS", "read", "write",
           "resolve_resume", "deferred_sigint"]

CHECKPOINT_UNITS = ("epoch", "step")
_HYPER = ("eta", "momentum", "nesterov", "lmbda")


@dataclasses.dataclass(frozen=True)
class EpochPosition:
    """Where training stopped inside an epoch, to pick it up again bit-identically."""

    batch: int        # the next mini-batch to train (> 0)
    cost_sum: float   # the sum of the epoch's mini-batch costs so far
    seconds: float    # the epoch's training time so far
    n_train: int      # training images (the resumed fit must see as many)
    data_rng: dict    # the data-order generator's state when the epoch began

    def to_meta(self):
        return {"batch": self.batch, "epoch_cost_sum": self.cost_sum, "epoch_seconds": self.seconds,
                "n_train": self.n_train, "epoch_start_data_rng": self.data_rng}

    @classmethod
    def from_meta(cls, st):
        """The position stored in a trainer section, or None at an epoch boundary."""
        if not st["batch"]:
            return None
        return cls(int(st["batch"]), float(st["epoch_cost_sum"]), float(st["epoch_seconds"]),
                   int(st["n_train"]), st["epoch_start_data_rng"])


NO_POSITION = {"batch": 0, "epoch_cost_sum": 0.0, "epoch_seconds": 0.0, "n_train": None,
               "epoch_start_data_rng": None}


@dataclasses.dataclass
class TrainerState:
    """Everything of a trainer a checkpoint holds besides the arrays."""

    epoch: int
    step: int
    position: EpochPosition | None
    data_rng: dict
    shuffle: bool
    optimizer: dict
    history: History
    callbacks: list

    def to_meta(self):
        position = self.position.to_meta() if self.position is not None else NO_POSITION
        return {"epoch": self.epoch, "step": self.step, **position, "data_rng": self.data_rng,
                "shuffle": self.shuffle, "optimizer": self.optimizer, "history": list(self.history),
                "best": self.history.summary(), "callbacks": self.callbacks}

    @classmethod
    def from_meta(cls, st):
        """Parse a trainer section (either layout); KeyError/TypeError/ValueError if bad."""
        optimizer = st["optimizer"]
        if optimizer is None:  # an old file saved before the first fit
            optimizer = dict({k: st[k] for k in _HYPER}, num_training_batches=None)
        optimizer = {k: optimizer[k] for k in (*_HYPER, "num_training_batches")}
        return cls(int(st["epoch"]), int(st["step"]), EpochPosition.from_meta(st), st["data_rng"],
                   bool(st["shuffle"]), optimizer, History.restore(st["history"], st["best"]),
                   list(st["callbacks"]))


def write(path, net, state, velocity, last):
    """Write ``net`` and ``state`` (with the optimizer's ``velocity``) to ``path``
    atomically; DivergenceError, writing nothing, if they are not finite (``last``: the
    last good checkpoint, for the message)."""
    be = net.backend
    params = be.to_numpy(net.flat.data)
    vel = None if velocity is None else be.to_numpy(velocity)
    if not np.isfinite(params).all() or (vel is not None and not np.isfinite(vel).all()):
        raise DivergenceError(f"not writing checkpoint {path}: the parameters or velocity are not "
                              f"finite (last good checkpoint: {last})")
    meta = {"network": net.spec(), "trainer": state.to_meta()}
    # under a launcher rank 0 writes; every rank gets its outcome
    return _dist.run_on_main(_ckpt.write_checkpoint, path, meta, {"params": params, "velocity": vel})


def read(path, net):
    """Read the trainer checkpoint ``path`` for ``net``: ``(state, arrays, network_meta)``.

    CheckpointError naming ``path`` if it holds a network only, another architecture or
    an invalid trainer state.
    """
    meta, arrays = _dist.run_on_main(_ckpt.read_checkpoint, path)  # read on rank 0, broadcast
    if meta.get("trainer") is None:
        raise _ckpt.CheckpointError(f"{path}: holds a network only (Network.save), not trainer state")
    _ckpt.check_fits(net, meta["network"], path)
    try:
        state = TrainerState.from_meta(meta["trainer"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _ckpt.CheckpointError(f"{path}: invalid trainer state ({type(exc).__name__}: {exc})") from exc
    vel = arrays.get("velocity")
    if vel is not None and vel.shape != (net.flat.size,):
        raise _ckpt.CheckpointError(f"{path}: velocity missing or of the wrong shape")
    return state, arrays, meta["network"]


def check_policy(every, unit, keep_last, prefix=""):
    """Validated ``(every, unit, keep_last)``; ``prefix`` names the arguments as the
    caller spelled them (``checkpoint_`` for the Trainer's keywords)."""
    return (_validate.positive_int(f"{prefix}every", every),
            _validate.choice(f"{prefix}unit", unit, CHECKPOINT_UNITS),
            _validate.positive_int("keep_last", keep_last))


class Checkpointer:
    """Where and how often a :class:`~fastmom.Trainer` writes checkpoints.

    Parameters
    ----------
    directory : str or path-like
        Checkpoints ``ckpt-e<epoch>-s<step>.npz`` go here (created if missing).
    every : int, default 1
        Write every this many epochs (or steps, see ``unit``); a checkpoint is also
        written when :meth:`~fastmom.Trainer.fit` finishes and when Ctrl-C stops it.
    unit : {"epoch", "step"}, default "epoch"
    keep_last : int, default 3
        Keep the newest this many checkpoints in ``directory``; older ones are deleted
        after each successful write.

    Attributes
    ----------
    last : str or None
        The newest checkpoint in ``directory`` (found there at construction, then the
        last one written).
    """

    def __init__(self, directory, every=1, unit="epoch", keep_last=3):
        self.every, self.unit, self.keep_last = check_policy(every, unit, keep_last)
        self.directory = os.fspath(directory)
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise ValueError(f"checkpoint_dir {self.directory} exists and is not a directory")
        os.makedirs(self.directory, exist_ok=True)
        self.last = _ckpt.latest_checkpoint(self.directory)

    def __repr__(self):
        return (f"Checkpointer({self.directory!r}, every={self.every}, unit={self.unit!r}, "
                f"keep_last={self.keep_last})")

    def due(self, step, epoch=None):
        """Whether a periodic checkpoint is due after ``step`` steps (inside an epoch:
        ``epoch`` None) or at the end of an epoch (``epoch``: epochs finished)."""
        if self.unit == "step":
            return step % self.every == 0
        return epoch is not None and epoch % self.every == 0

    def path(self, epoch, step):
        return os.path.join(self.directory, _ckpt.checkpoint_name(epoch, step))

    def written(self, path):
        """Record a successful write (and keep the last ``keep_last``) if it went to
        ``directory``."""
        if os.path.dirname(os.path.abspath(path)) == os.path.abspath(self.directory):
            self.last = path
            _dist.run_on_main(_ckpt.prune, self.directory, self.keep_last)


def resolve_resume(resume, checkpointer):
    """The file ``Trainer(resume=...)`` names: a file, the newest checkpoint in a
    directory, or with ``True`` the newest in the checkpointer's (None if there is none
    yet: start afresh)."""
    if resume is True:
        if checkpointer is None:
            raise ValueError("resume=True needs checkpoint_dir")
        return checkpointer.last
    if resume is None or resume is False:
        return None
    if os.path.isdir(os.fspath(resume)):
        found = _ckpt.latest_checkpoint(os.fspath(resume))
        if found is None:
            raise _ckpt.CheckpointError(f"{os.fspath(resume)}: no checkpoint in this directory")
        return found
    return resume


class Sigint:
    """Set by a deferred Ctrl-C: training should checkpoint and stop.

    ``requested`` is this process's Ctrl-C, set by the signal handler whenever it runs;
    ``agreed`` is set on every rank by the same all-reduce when one rank's request has
    reached them all (data parallelism acts on it alone: see ``parallel.DataParallel``).
    """

    requested = False
    agreed = False


@contextlib.contextmanager
def deferred_sigint(enabled):
    """Defer SIGINT to the training loop's next check of the yielded :class:`Sigint`
    (a second Ctrl-C interrupts at once) where ``enabled`` and Python lets us: in the
    main thread, with nobody else's handler installed. Restores the default handler."""
    flag = Sigint()
    others = _dist.termination_signals()  # what an MPI launcher sends for Ctrl-C
    if not (enabled and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        yield flag
        return

    def on_sigint(signum, frame):
        if flag.requested:
            # a second Ctrl-C: the user does not want to wait for the checkpoint
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        flag.requested = True

    previous = {s: signal.signal(s, on_sigint) for s in (signal.SIGINT, *others)}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
