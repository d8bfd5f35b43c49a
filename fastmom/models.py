"""The network3 architectures the CLI, the convergence suite, tests and benchmarks share.

One name per architecture (:data:`ARCHITECTURES`): ``conv``, ``fc`` and
``conv-dropout``. ``best``, the CLI's earlier name of ``conv-dropout``, is still
accepted with a DeprecationWarning.
"""
from __future__ import annotations

import warnings

from .activations import ReLU, sigmoid
from .layers import ConvPoolLayer, FullyConnectedLayer, SoftmaxLayer

__all__ = ["ARCHITECTURES", "DEPRECATED_NAMES", "build_layers", "canonical_name"]


def _two_conv_pool(mbs, pool_ties="first", activation_fn=ReLU):
    """network3's chapter-6 feature extractor: 20 then 40 filters of 5x5 (ReLU unless
    told), each followed by 2x2 max-pooling (28x28 -> 12x12 -> 4x4); ``pool_ties`` as
    :class:`~fastmom.layers.ConvPoolLayer`'s (``"all"``: Theano's rule)."""
    return [
        ConvPoolLayer(image_shape=(mbs, 1, 28, 28), filter_shape=(20, 1, 5, 5), poolsize=(2, 2),
                      activation_fn=activation_fn, pool_ties=pool_ties),
        ConvPoolLayer(image_shape=(mbs, 20, 12, 12), filter_shape=(40, 20, 5, 5), poolsize=(2, 2),
                      activation_fn=activation_fn, pool_ties=pool_ties),
    ]


def conv_layers(mbs, p_dropout=0.0, pool_ties="first", activation_fn=ReLU):
    """network3's two conv-pool ReLU layers (20 then 40 filters of 5x5), FC 640-100
    ReLU and a softmax: the chapter-6 network this library is benchmarked on.
    ``activation_fn`` replaces the ReLU of the three hidden layers (network3's chapter 6
    trains this net with its default, the sigmoid, first)."""
    return _two_conv_pool(mbs, pool_ties, activation_fn) + [
        FullyConnectedLayer(n_in=40 * 4 * 4, n_out=100, activation_fn=activation_fn,
                            p_dropout=p_dropout),
        SoftmaxLayer(n_in=100, n_out=10, p_dropout=p_dropout),
    ]


def fc_layers(mbs, p_dropout=0.0):
    """network3's shallow baseline: FullyConnected 784-100 sigmoid + softmax."""
    return [
        FullyConnectedLayer(n_in=784, n_out=100, activation_fn=sigmoid, p_dropout=p_dropout),
        SoftmaxLayer(n_in=100, n_out=10, p_dropout=p_dropout),
    ]


def conv_dropout_layers(mbs, p_dropout=0.5, pool_ties="first"):
    """network3's best single chapter-6 net: two conv-pool ReLU layers, two
    1000-unit ReLU layers and a softmax, all three with dropout."""
    return _two_conv_pool(mbs, pool_ties) + [
        FullyConnectedLayer(n_in=40 * 4 * 4, n_out=1000, activation_fn=ReLU, p_dropout=p_dropout),
        FullyConnectedLayer(n_in=1000, n_out=1000, activation_fn=ReLU, p_dropout=p_dropout),
        SoftmaxLayer(n_in=1000, n_out=10, p_dropout=p_dropout),
    ]


ARCHITECTURES = {"conv": conv_layers, "fc": fc_layers, "conv-dropout": conv_dropout_layers}

#: Earlier names, still accepted (with a DeprecationWarning): ``{old: name}``.
DEPRECATED_NAMES = {"best": "conv-dropout"}


def canonical_name(name, stacklevel=2):
    """``name``, or the architecture an old name stands for (with a DeprecationWarning)."""
    new = DEPRECATED_NAMES.get(name)
    if new is None:
        return name
    warnings.warn(f"the architecture name {name!r} is deprecated: use {new!r}",
                  DeprecationWarning, stacklevel=stacklevel + 1)
    return new


def best_layers(mbs, p_dropout=0.5):
    """Deprecated name of :func:`conv_dropout_layers`."""
    warnings.warn("fastmom.models.best_layers is deprecated: use conv_dropout_layers",
                  DeprecationWarning, stacklevel=2)
    return conv_dropout_layers(mbs, p_dropout)


def build_layers(name, mini_batch_size, p_dropout=None, pool_ties="first"):
    """Layers of the named architecture (``conv``, ``fc`` or ``conv-dropout``), their
    max-pooling ties resolved by ``pool_ties`` (``"first"`` or ``"all"``, see
    :class:`~fastmom.layers.ConvPoolLayer`; ``fc`` has no pooling and takes only
    ``"first"``)."""
    name = canonical_name(name)
    try:
        fn = ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}: choose one of {', '.join(ARCHITECTURES)}") from None
    kwargs = {} if p_dropout is None else {"p_dropout": p_dropout}
    if pool_ties != "first":
        if fn is fc_layers:
            raise ValueError(f"pool_ties={pool_ties!r}: the {name!r} architecture has no max-pooling")
        kwargs["pool_ties"] = pool_ties
    return fn(mini_batch_size, **kwargs)
