"""Deprecated alias of :mod:`fastmom.train` (the training loop moved there)."""
import warnings

from .train import *  # noqa: F401,F403
from .train import __all__  # noqa: F401

warnings.warn("fastmom.trainer is deprecated: import from fastmom (or fastmom.train) instead",
              DeprecationWarning, stacklevel=2)
