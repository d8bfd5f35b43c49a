"""Training: the :class:`Trainer` loop and what plugs into it.

This package sits above the model: it drives a :class:`~fastmom.Network` through its
public methods and never imports :mod:`fastmom.network` (``Network.SGD`` imports this
package, not the other way round).
"""
from .trainer import (OPTIMIZERS, DivergenceError, DivideOnPlateau, History, Trainer,
                      TrainingInterrupted)

__all__ = ["Trainer", "History", "DivideOnPlateau", "DivergenceError", "TrainingInterrupted",
           "OPTIMIZERS"]
