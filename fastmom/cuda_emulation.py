"""Deprecated alias of :mod:`fastmom.backends.cuda_emulation` (moved beside the backend it runs)."""
import warnings

from .backends.cuda_emulation import *  # noqa: F401,F403
from .backends.cuda_emulation import __all__  # noqa: F401

warnings.warn("fastmom.cuda_emulation is deprecated: import fastmom.backends.cuda_emulation",
              DeprecationWarning, stacklevel=2)
