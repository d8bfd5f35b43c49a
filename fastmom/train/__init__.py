"""Training: the :class:`Trainer` loop and what plugs into it.

``trainer`` (the loop), ``callbacks`` (schedules, early stopping, network3's printed
lines, the progress bar), ``guard`` (the divergence guard), ``checkpointer`` (trainer
state in checkpoint files, checkpoint directories, Ctrl-C) and ``history``.

This package sits above the model: it drives a :class:`~fastmom.Network` through its
public methods and never imports :mod:`fastmom.network` (``Network.SGD`` imports this
package, not the other way round).
"""
from .callbacks import DivideOnPlateau, EarlyStopping, Network3Log
from .checkpointer import Checkpointer
from .guard import CollapseError, CollapseGuard, CollapseWarning, DivergenceError
from .history import History
from .trainer import OPTIMIZERS, Trainer, TrainingInterrupted

__all__ = ["Trainer", "History", "DivideOnPlateau", "DivergenceError", "TrainingInterrupted",
           "OPTIMIZERS", "Checkpointer", "EarlyStopping", "Network3Log",
           "CollapseGuard", "CollapseWarning", "CollapseError"]
