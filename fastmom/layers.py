"""network3's three layer types, as architecture descriptions that a Network binds.

A layer is built with network3's arguments and holds no arrays until a
:class:`~fastmom.network.Network` binds it: then ``w`` and ``b`` are views into the
network's flat parameter buffer, and the layer allocates its workspaces once, sized
for ``mini_batch_size``; smaller batches use leading slices of them, so a training
step allocates nothing.
"""
from __future__ import annotations

from math import prod, sqrt

import numpy as np

from . import _validate, activations
from .activations import sigmoid
from .backends._checks import conv_pool_geometry, tie_rule

__all__ = ["Layer", "ConvPoolLayer", "FullyConnectedLayer", "SoftmaxLayer", "layer_from_spec"]


def _param_property(name):
    """``layer.w`` / ``layer.b``: the view of the network's flat parameter buffer;
    assigning copies the new values into it (training updates and ``save()`` writes
    the buffer, so rebinding the attribute would split the network in two)."""

    def set_param(self, value):
        view = getattr(self, "_" + name)
        if value is view:  # layer.w += x: the in-place operation already wrote the buffer
            return
        where = f"{type(self).__name__}.{name}"
        if view is None:
            raise AttributeError(f"{where}: the layer has no parameters until a Network binds it")
        if not (hasattr(value, "shape") and hasattr(value, "dtype")):
            value = np.asarray(value)
        if np.dtype(value.dtype).kind not in "fiu":
            raise TypeError(f"{where} must hold real numbers, got dtype {value.dtype}")
        if tuple(value.shape) != tuple(view.shape):
            raise ValueError(f"{where} must have shape {tuple(view.shape)}, got {tuple(value.shape)} (the "
                             f"values are copied into the network's flat parameter buffer, net.params)")
        view[...] = self.backend.asarray(value, view.dtype)

    return property(lambda self: getattr(self, "_" + name), set_param,
                    doc=f"The layer's {'weights' if name == 'w' else 'biases'}: a writable view of the "
                        f"network's flat parameter buffer; assigning copies into it (same shape).")


def layer_from_spec(spec, source="spec", mini_batch_size=None):
    """Rebuild a layer from its :meth:`Layer.spec` (the layer validates the values),
    for another ``mini_batch_size`` if given.

    Raises ValueError naming ``source`` for an unknown type or invalid arguments."""
    try:
        kind = spec["type"]
        cls = _LAYER_TYPES[kind]
    except (KeyError, TypeError):
        raise ValueError(f"{source}: unknown layer description {spec!r}") from None
    return cls.from_spec(spec, source, mini_batch_size)


class Layer:
    """What every layer shares: binding to a network and its parameter views.

    A layer describes itself with :meth:`spec` (a JSON-able dict of its constructor
    arguments plus ``"type"``) and is rebuilt by :meth:`from_spec`: how networks are
    saved, compared and summarised without anyone switching on layer types.
    """

    n_in: int
    n_out: int
    backend = None
    _w = _b = dw = db = None
    w = _param_property("w")
    b = _param_property("b")
    #: constructor arguments, in order, as stored by :meth:`spec`
    _spec_args = ()
    #: arguments added after files were written without them: ``{argument: default}``.
    #: :meth:`spec` leaves one out at its default, so that a default layer's description
    #: (and so an old checkpoint's architecture check) is unchanged, and :meth:`from_spec`
    #: reads a missing one as its default
    _spec_defaults = {}
    #: the argument whose first value is the mini-batch size (None: the layer has none)
    _batch_arg = None

    def spec(self):
        """A JSON-able description: ``{"type": class name, argument: value, ...}``."""
        out = {"type": type(self).__name__}
        for arg in self._spec_args:
            v = getattr(self, arg)
            if arg in self._spec_defaults and v == self._spec_defaults[arg]:
                continue
            out[arg] = v.name if isinstance(v, activations.Activation) else (
                list(v) if isinstance(v, tuple) else v)
        return out

    @classmethod
    def from_spec(cls, spec, source="spec", mini_batch_size=None):
        """Rebuild a layer from :meth:`spec` output (for ``mini_batch_size`` if given)."""
        try:
            if spec.get("type") != cls.__name__:
                raise ValueError(f"type {spec.get('type')!r} is not {cls.__name__}")
            kwargs = {arg: tuple(spec[arg]) if isinstance(spec[arg], list) else spec[arg]
                      for arg in cls._spec_args if arg in spec or arg not in cls._spec_defaults}
            if mini_batch_size is not None and cls._batch_arg is not None:
                kwargs[cls._batch_arg] = (mini_batch_size, *kwargs[cls._batch_arg][1:])
            return cls(**kwargs)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{source}: invalid layer description {spec!r} ({exc})") from exc

    def param_shapes(self):
        raise NotImplementedError

    def n_params(self):
        """The number of weights and biases."""
        return sum(prod(shape) for shape in self.param_shapes())

    def flops_per_image(self):
        """Floating-point operations of the forward pass for one image: 2 per
        multiply-add of the convolution or matrix product (pooling, bias and activation
        are not counted)."""
        raise NotImplementedError

    def init_params(self, rng, scheme):
        """Return host arrays ``(w, b)`` drawn from ``rng`` (network3's order)."""
        raise NotImplementedError

    def bind(self, backend, w, b, dw, db, mini_batch_size, dtype, needs_dx, rng):
        self.backend, self._w, self._b, self.dw, self.db = backend, w, b, dw, db
        self.mini_batch_size, self.dtype, self.needs_dx, self.rng = mini_batch_size, dtype, needs_dx, rng
        self._x = None
        self._allocate(backend, mini_batch_size, dtype)

    def _saved_input(self):
        """The input the last forward kept for the backward pass: only a training forward
        keeps one (an inference forward records no argmax or mask for it to use)."""
        if self._x is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a forward(x, train=True) "
                               "first: the last forward pass was inference (train=False)")
        return self._x

    def _allocate(self, backend, n, dtype):
        raise NotImplementedError


class ConvPoolLayer(Layer):
    """Convolution, max-pooling, bias and activation, as network3's ``ConvPoolLayer``.

    The convolution is *valid* (no padding), stride 1, computed as a cross-correlation
    ``z[n,f,i,j] = sum_{c,k,l} x[n,c,i+k,j+l] * w[f,c,k,l]``: the deep-learning
    convention. Theano's ``conv2d`` flipped the kernel (a true convolution), so
    weights copied from a trained network3 model need ``w[:, :, ::-1, ::-1]``.
    Max-pooling uses non-overlapping ``poolsize`` windows and drops a ragged border;
    the output is ``act(pool(z) + b)``. ``poolsize=(1, 1)`` means no pooling.

    Parameters
    ----------
    filter_shape : tuple of 4 ints
        ``(number of filters, input channels, filter height, filter width)``.
    image_shape : tuple of 4 ints
        ``(mini-batch size, input channels, image height, image width)``.
    poolsize : tuple of 2 ints, default (2, 2)
    activation_fn : Activation, default sigmoid
    pool_ties : {"first", "all"}, default "first"
        Which positions of a pooling window whose maximum is tied get the gradient:
        ``"first"``, the first in row-major order (PyTorch's and cuDNN's rule, a true
        subgradient); ``"all"``, every position equal to the maximum, each the full
        gradient (Theano's rule, so network3's; ties are common in MNIST, whose
        saturated rows make neighbouring patches identical). ``"all"`` needs windows of
        at most 31 positions.
    """

    _spec_args = ("filter_shape", "image_shape", "poolsize", "activation_fn", "pool_ties")
    _spec_defaults = {"pool_ties": "first"}
    _batch_arg = "image_shape"

    def __init__(self, filter_shape, image_shape, poolsize=(2, 2), activation_fn=sigmoid,
                 pool_ties="first"):
        self.filter_shape = _validate.int_tuple("filter_shape", filter_shape, 4)
        self.image_shape = _validate.int_tuple("image_shape", image_shape, 4)
        self.poolsize = _validate.int_tuple("poolsize", poolsize, 2)
        self.activation_fn = activations.resolve(activation_fn)
        tie_rule(pool_ties, self.poolsize)
        self.pool_ties = pool_ties
        if self.filter_shape[1] != self.image_shape[1]:
            raise ValueError(
                f"filter_shape {self.filter_shape} expects {self.filter_shape[1]} input channels but "
                f"image_shape {self.image_shape} has {self.image_shape[1]}")
        # the kernels' geometry rule, written once in backends/_checks.py
        _, ci, h, wd, f, _, _, _, _, ph, pw = conv_pool_geometry(self.image_shape, self.filter_shape,
                                                                  self.poolsize)
        self.in_shape = (ci, h, wd)
        self.out_shape = (f, ph, pw)
        self.n_in = prod(self.in_shape)
        self.n_out = prod(self.out_shape)
        self.p_dropout = 0.0

    def __repr__(self):
        return (f"ConvPoolLayer(filter_shape={self.filter_shape}, image_shape={self.image_shape}, "
                f"poolsize={self.poolsize}, activation_fn={self.activation_fn!r}"
                + (f", pool_ties={self.pool_ties!r})" if self.pool_ties != "first" else ")"))

    def param_shapes(self):
        return self.filter_shape, (self.filter_shape[0],)

    def flops_per_image(self):
        f, c, kh, kw = self.filter_shape
        _, h, w = self.in_shape
        return 2 * f * c * kh * kw * (h - kh + 1) * (w - kw + 1)  # before pooling

    def init_params(self, rng, scheme):
        f, c, kh, kw = self.filter_shape
        if scheme == "network3":
            # network3 scales by the fan-*out* of a pooled unit
            n = f * kh * kw / prod(self.poolsize)
        else:
            n = c * kh * kw
        w = rng.normal(0.0, sqrt(1.0 / n), self.filter_shape)
        b = rng.normal(0.0, 1.0, (f,))
        return w, b

    def _allocate(self, backend, n, dtype):
        self._y = backend.empty((n,) + self.out_shape, dtype)
        self._argmax = backend.empty((n,) + self.out_shape, np.int32)
        self._dx = backend.empty((n,) + self.in_shape, dtype) if self.needs_dx else None

    def forward(self, x, train):
        """``x`` of shape ``(n, C*H*W)`` or ``(n, C, H, W)``; returns ``(n, F, PH, PW)``."""
        n = x.shape[0]
        x = x.reshape((n,) + self.in_shape)
        y = self._y[:n]
        # with pool_ties="all" the argmax workspace holds each window's tie bitmask;
        # inference records none (argmax=None: the kernels skip that work)
        self.backend.conv_pool_forward(x, self.w, self.b, self.poolsize, self.activation_fn.name,
                                       y, self._argmax[:n] if train else None, self.pool_ties)
        self._x = x if train else None
        return y

    def backward(self, dy):
        x = self._saved_input()
        n = x.shape[0]
        dy = dy.reshape((n,) + self.out_shape)
        dx = self._dx[:n] if self._dx is not None else None
        self.backend.conv_pool_backward(x, self.w, self._y[:n], self._argmax[:n], dy,
                                        self.poolsize, self.activation_fn.name, self.dw, self.db, dx,
                                        self.pool_ties)
        return dx


class _DenseBase(Layer):
    """``act(x @ w + b)`` with network3's dropout on the layer's input."""

    _act_name = None

    def __init__(self, n_in, n_out, p_dropout):
        self.n_in = _validate.positive_int("n_in", n_in)
        self.n_out = _validate.positive_int("n_out", n_out)
        self.p_dropout = _validate.unit_interval("p_dropout", p_dropout)
        self.in_shape = (self.n_in,)
        self.out_shape = (self.n_out,)

    def param_shapes(self):
        return (self.n_in, self.n_out), (self.n_out,)

    def flops_per_image(self):
        return 2 * self.n_in * self.n_out

    def _allocate(self, backend, n, dtype):
        self._y = backend.empty((n, self.n_out), dtype)
        self._dx = backend.empty((n, self.n_in), dtype) if self.needs_dx else None
        if self.p_dropout > 0:
            self._mask = backend.empty((n, self.n_in), dtype)
            self._xd = backend.empty((n, self.n_in), dtype)

    def _input(self, x, train):
        """Apply the training-time dropout mask; return the input and the matmul scale."""
        n = x.shape[0]
        x = x.reshape(n, self.n_in)
        if self.p_dropout == 0:
            return x, 1.0
        if not train:
            return x, 1.0 - self.p_dropout  # network3 scales w at inference
        mask, xd = self._mask[:n], self._xd[:n]
        self.backend.dropout_mask(self.rng, 1.0 - self.p_dropout, mask)
        self.backend.apply_mask(x, mask, xd)
        return xd, 1.0

    def _input_grad(self, dx):
        if dx is not None and self.p_dropout > 0:
            n = dx.shape[0]
            self.backend.apply_mask(dx, self._mask[:n], dx)
        return dx


class FullyConnectedLayer(_DenseBase):
    """network3's fully connected layer: ``act(x @ w + b)``.

    Parameters
    ----------
    n_in, n_out : int
    activation_fn : Activation, default sigmoid
    p_dropout : float in [0, 1), default 0.0
        While training, the layer's input is multiplied by a Bernoulli keep-mask
        (keep probability ``1 - p_dropout``); at inference ``x @ w`` is scaled by
        ``1 - p_dropout`` instead (network3's scheme: no rescaling while training).
    """

    _spec_args = ("n_in", "n_out", "activation_fn", "p_dropout")

    def __init__(self, n_in, n_out, activation_fn=sigmoid, p_dropout=0.0):
        super().__init__(n_in, n_out, p_dropout)
        self.activation_fn = activations.resolve(activation_fn)

    def __repr__(self):
        return (f"FullyConnectedLayer(n_in={self.n_in}, n_out={self.n_out}, "
                f"activation_fn={self.activation_fn!r}, p_dropout={self.p_dropout})")

    def init_params(self, rng, scheme):
        n = self.n_out if scheme == "network3" else self.n_in
        w = rng.normal(0.0, sqrt(1.0 / n), (self.n_in, self.n_out))
        b = rng.normal(0.0, 1.0, (self.n_out,))
        return w, b

    def forward(self, x, train):
        xin, scale = self._input(x, train)
        y = self._y[: x.shape[0]]
        self.backend.dense_forward(xin, self.w, self.b, self.activation_fn.name, y, scale)
        self._x = xin if train else None
        return y

    def backward(self, dy):
        x = self._saved_input()
        n = x.shape[0]
        dx = self._dx[:n] if self._dx is not None else None
        self.backend.dense_backward(x, self.w, self._y[:n], dy.reshape(n, self.n_out),
                                    self.activation_fn.name, self.dw, self.db, dx)
        return self._input_grad(dx)


class SoftmaxLayer(_DenseBase):
    """network3's output layer: ``softmax(x @ w + b)`` with the mean negative
    log-likelihood cost. Weights and biases start at zero, as in network3.

    Parameters
    ----------
    n_in, n_out : int
    p_dropout : float in [0, 1), default 0.0
        As for :class:`FullyConnectedLayer`.
    """

    activation_fn = activations.linear
    _spec_args = ("n_in", "n_out", "p_dropout")

    def __init__(self, n_in, n_out, p_dropout=0.0):
        super().__init__(n_in, n_out, p_dropout)

    def __repr__(self):
        return f"SoftmaxLayer(n_in={self.n_in}, n_out={self.n_out}, p_dropout={self.p_dropout})"

    def init_params(self, rng, scheme):
        return np.zeros((self.n_in, self.n_out)), np.zeros((self.n_out,))

    def _allocate(self, backend, n, dtype):
        super()._allocate(backend, n, dtype)
        self._probs = backend.empty((n, self.n_out), dtype)
        self._dz = backend.empty((n, self.n_out), dtype)

    def forward(self, x, train, labels=None):
        """Return ``(probs, cost, correct)``; cost and correct are None without labels."""
        xin, scale = self._input(x, train)
        n = x.shape[0]
        z, probs = self._y[:n], self._probs[:n]
        self.backend.dense_forward(xin, self.w, self.b, "linear", z, scale)
        cost, correct = self.backend.softmax_nll_forward(z, labels, probs)
        self._x, self._labels = (xin if train else None), labels
        return probs, cost, correct

    def backward(self):
        x = self._saved_input()
        n = x.shape[0]
        dz = self._dz[:n]
        self.backend.softmax_nll_backward(self._probs[:n], self._labels, dz)
        dx = self._dx[:n] if self._dx is not None else None
        self.backend.dense_backward(x, self.w, self._y[:n], dz, "linear", self.dw, self.db, dx)
        return self._input_grad(dx)


_LAYER_TYPES = {cls.__name__: cls for cls in (ConvPoolLayer, FullyConnectedLayer, SoftmaxLayer)}
