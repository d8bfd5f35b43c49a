"""fastmom: network3's CNN API with momentum SGD on compiled CPU and CUDA kernels.

>>> from fastmom import Network, ConvPoolLayer, FullyConnectedLayer, SoftmaxLayer, ReLU
"""
from ._version import __version__
from .activations import ReLU, linear, sigmoid, tanh
from .backends import DeviceError, available_devices, get_backend
from .data import load_data_shared
from .layers import ConvPoolLayer, FullyConnectedLayer, SoftmaxLayer
from .network import Network
from .optim import MomentumSGD
from .train import DivergenceError, DivideOnPlateau, History, Trainer
from . import checkpoint as _checkpoint

# the composition root: fastmom.checkpoint sits below the model and never imports it,
# so the class that load_network builds by default is named here
_checkpoint.default_network_type = Network


__all__ = [
    "Network", "ConvPoolLayer", "FullyConnectedLayer", "SoftmaxLayer",
    "sigmoid", "tanh", "ReLU", "linear", "load_data_shared",
    "MomentumSGD", "Trainer", "History", "DivideOnPlateau", "DivergenceError",
    "DeviceError", "available_devices", "get_backend", "__version__",
]
