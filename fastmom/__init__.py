"""fastmom: network3's CNN API with momentum SGD on compiled CPU and CUDA kernels.

>>> from fastmom import Network, ConvPoolLayer, FullyConnectedLayer, SoftmaxLayer, ReLU
"""
import warnings as _warnings
from importlib.util import find_spec as _find_spec

from ._version import __version__
from .activations import ReLU, linear, sigmoid, tanh
from .backends import DeviceError, available_devices, get_backend
from .data import load_data_shared
from .layers import ConvPoolLayer, FullyConnectedLayer, SoftmaxLayer
from .network import Network
from .optim import MomentumSGD
from .train import (OPTIMIZERS, Checkpointer, CollapseError, CollapseWarning, DivergenceError,
                    DivideOnPlateau, EarlyStopping, History, Network3Log, Trainer, TrainingInterrupted)
from . import checkpoint as _checkpoint

if _find_spec("fastmom._kernels._cpu") is None:  # cheap: the extension is not loaded here
    _warnings.warn("fastmom's compiled CPU kernels are not built (no working C compiler at install "
                   "time?): the slow 'reference' backend will be used. Install a C compiler and "
                   "reinstall: pip install --force-reinstall --no-deps fastmom", RuntimeWarning,
                   stacklevel=2)

# the composition root: fastmom.checkpoint sits below the model and never imports it,
# so the class that load_network builds by default is named here
_checkpoint.default_network_type = Network


__all__ = [
    "Network", "ConvPoolLayer", "FullyConnectedLayer", "SoftmaxLayer",
    "sigmoid", "tanh", "ReLU", "linear", "load_data_shared",
    "MomentumSGD", "Trainer", "History", "DivideOnPlateau", "EarlyStopping", "Network3Log",
    "Checkpointer", "DivergenceError", "CollapseWarning", "CollapseError", "TrainingInterrupted",
    "OPTIMIZERS",
    "DeviceError", "available_devices", "get_backend", "__version__",
]
