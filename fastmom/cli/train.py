"""``fastmom train``: train, save, checkpoint and resume; Ctrl-C keeps the work done.

Ctrl-C: with ``--checkpoint-dir``, or under ``mpirun`` on more than one rank, the
:class:`~fastmom.Trainer` defers it to the end of the mini-batch (on N ranks the ranks
agree on it, so every rank stops after the same step; ``mpirun`` turns a terminal's
Ctrl-C into SIGTERM for the ranks, which counts as Ctrl-C), writes a checkpoint if it
has a directory and raises :class:`~fastmom.train.TrainingInterrupted`; on one process
without a directory, :class:`StopOnSigint` does the same deferral for the command line.
Either way the command then writes ``--json`` and ``--save`` (rank 0), prints one line
naming what it wrote and exits 130. A second Ctrl-C stops at once and writes nothing.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

from .. import distributed
from .._io import write_json
from ..checkpoint import latest_checkpoint
from .checks import UsageError, check_output_dir, check_output_file
from .output import Console, EpochLine, plot_curves
from .prepare import check_outputs, load_data, network_factory, set_threads
from ..train import Checkpointer
from ..train import Trainer
from ..train import TrainingInterrupted

__all__ = ["run_train", "StopOnSigint", "INTERRUPTED"]

#: The exit status of a command stopped by Ctrl-C (128 + SIGINT), as a shell reports it.
INTERRUPTED = 130


class _StoppedAtBatch(KeyboardInterrupt):
    """Raised by :class:`StopOnSigint` between two mini-batches."""


class StopOnSigint:
    """A callback and a SIGINT handler: Ctrl-C is noted, and training stops before the
    next mini-batch (so no step is left half applied); a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False

    def on_batch_begin(self, trainer, iteration):
        if self.requested:
            raise _StoppedAtBatch

    def _handle(self, signum, frame):
        if self.requested:  # the second Ctrl-C: the user will not wait
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def installed(self):
        """Handle SIGINT while the block runs (only in the main thread, only where
        nobody else handles it), then restore the default."""
        if not (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            yield self
            return
        signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _check_train_args(args):
    """Refuse, before loading anything, what training would fail on at the end."""
    check_outputs(args)
    check_output_file("--save", args.save)
    check_output_dir("--checkpoint-dir", args.checkpoint_dir)
    if args.resume and args.checkpoint_dir is None:
        raise UsageError("--resume needs --checkpoint-dir DIR (the directory the checkpoints were written to)")
    has_dir = args.checkpoint_dir is not None and os.path.isdir(args.checkpoint_dir)
    newest = latest_checkpoint(args.checkpoint_dir) if has_dir else None
    if newest is not None and not args.resume:
        # new checkpoints beside old ones would be mixed up with them by a later --resume
        raise UsageError(f"--checkpoint-dir {args.checkpoint_dir} already holds checkpoints (the newest: "
                         f"{newest}): add --resume to continue from it, or give another directory")


def _checkpointer(args, console):
    """The Checkpointer of ``--checkpoint-dir`` (None without)."""
    if args.checkpoint_dir is None:
        return None
    ck = Checkpointer(args.checkpoint_dir)
    if args.resume and ck.last is None:
        console.note(f"fastmom: no checkpoint in {args.checkpoint_dir} yet: starting afresh")
    return ck


def _make_trainer(args, net, console, stopper):
    checkpointer = _checkpointer(args, console)
    callbacks = [cb for cb in (stopper, None if args.quiet else EpochLine(console)) if cb is not None]
    trainer = Trainer(net, eta=args.eta, momentum=args.momentum, nesterov=args.nesterov, lmbda=args.lmbda,
                      shuffle=args.shuffle, seed=args.seed, strict=args.strict, network3_output=True, log=console.say,
                      progress=not args.quiet and sys.stderr.isatty(), callbacks=callbacks,
                      checkpointer=checkpointer, resume=True if args.resume else None)
    resumed_from = checkpointer.last if args.resume else None
    if resumed_from is not None:
        console.note(f"fastmom: resuming from {resumed_from} (epoch {trainer.epoch}, step {trainer.step})")
    return trainer, resumed_from


def _write_outputs(args, trainer, resumed_from, checkpoint=None, interrupted=False):
    """Write ``--json``, ``--save`` and ``--plot`` on rank 0 and return the files written,
    on every rank: the others wait for it (a rank that exited first would make ``mpirun``
    end the job, rank 0's writes included), and an error writing is raised on all."""
    return distributed.run_on_main(_write_on_main, args, trainer, resumed_from, checkpoint, interrupted)


def _write_on_main(args, trainer, resumed_from, checkpoint, interrupted):
    written = [] if checkpoint is None else [f"checkpoint {checkpoint}"]
    hist = trainer.history
    if args.json:
        config = dict(vars(args), resumed_from=resumed_from, world_size=distributed.world_size())
        write_json(args.json, {"config": config, "history": list(hist), "summary": hist.summary(),
                               "epochs_trained": trainer.epoch, "steps": trainer.step,
                               "interrupted": interrupted})
        if args.json != "-":
            written.append(f"history {args.json}")
    if args.save:
        trainer.net.save(args.save)
        written.append(f"model {args.save}")
    if args.plot and len(hist):
        plot_curves(args.plot, {"momentum" if args.momentum else "SGD": hist}, f"fastmom train ({args.dataset})")
        written.append(f"plot {args.plot}")
    return written


def _header(args, net, data):
    tr, va, te = data
    expanded = " expanded" if args.expand else ""
    return (f"fastmom train: {args.net} net on {args.dataset}{expanded} ({len(tr[0])}/{len(va[0])}/{len(te[0])} "
            f"images), device={net.device}, eta={args.eta}, momentum={args.momentum}"
            f"{' (Nesterov)' if args.nesterov else ''}, lmbda={args.lmbda}, batch={args.batch_size}")


def run_train(args):
    """``fastmom train``; returns the exit status."""
    _check_train_args(args)
    console = Console(args.json, args.quiet or not distributed.is_main())  # rank 0 prints
    set_threads(args)
    data = load_data(args, expand=args.expand)
    net = network_factory(args)()
    console.say(_header(args, net, data))
    # the Trainer defers Ctrl-C itself when it has a checkpoint to write, and on N ranks
    # (where stopping is decided collectively: a local stop would leave the others waiting)
    stopper = StopOnSigint() if args.checkpoint_dir is None and distributed.world_size() == 1 else None
    trainer, resumed_from = _make_trainer(args, net, console, stopper)
    try:
        with stopper.installed() if stopper else contextlib.nullcontext():
            trainer.fit_to(data[0], args.epochs, data[1], data[2])  # --epochs: the total
    except KeyboardInterrupt as exc:
        if not isinstance(exc, (TrainingInterrupted, _StoppedAtBatch)):
            raise  # the second Ctrl-C: nothing is consistent enough to save
        checkpoint = getattr(exc, "checkpoint", None)
        written = _write_outputs(args, trainer, resumed_from, checkpoint, interrupted=True)
        if distributed.is_main():
            Console.always(f"fastmom: interrupted after {trainer.step} steps ({trainer.epoch} full epochs): "
                           + (f"wrote {', '.join(written)}" if written else
                              "nothing saved (--save, --json and --checkpoint-dir keep the work)"))
        return INTERRUPTED
    written = _write_outputs(args, trainer, resumed_from, trainer.last_checkpoint)
    if written and distributed.is_main():
        Console.always(f"fastmom: wrote {', '.join(written)}")
    return 0
