"""One contiguous buffer for all parameters, one for their gradients.

The optimizer's step is then a single fused pass over memory (one kernel call) instead
of a loop over tensors. Storage order puts every weight first and every bias after
them, so network3's weights-only L2 term applies to one leading segment
``data[:n_weights]``; ``params`` still lists the views in network3's order
``[w0, b0, w1, b1, ...]``.
"""
from __future__ import annotations

from math import prod

__all__ = ["ParamBuffer", "ParamViews"]


class ParamViews(tuple):
    """A read-only sequence of writable views (``net.params``, ``net.flat.grads``).

    Replacing an item would only rebind a slot of this sequence, never the flat
    buffer that training updates and ``save()`` writes, so it is refused; write into
    a view (``net.params[0][...] = x``) or assign ``layer.w``/``layer.b`` (copied
    into the buffer) instead.
    """

    _READ_ONLY = ("net.params is read-only (its items are views of the flat parameter buffer): "
                  "write into a view, net.params[i][...] = x, or assign layer.w / layer.b")

    def __setitem__(self, index, value):
        raise TypeError(self._READ_ONLY)

    def __delitem__(self, index):
        raise TypeError(self._READ_ONLY)


class ParamBuffer:
    """Flat parameter and gradient storage for a list of ``(w_shape, b_shape)`` pairs.

    Parameters
    ----------
    shapes : list of (tuple, tuple)
        The weight and bias shape of each layer, in layer order.
    dtype : numpy dtype
    backend : module
        Provides ``zeros``.

    Attributes
    ----------
    data, grad : 1-D arrays
        The flat buffers (weights segment first).
    n_weights : int
        Length of the weights segment: ``data[:n_weights]`` holds every weight.
    params, grads : ParamViews
        Read-only sequences of writable views ``[w0, b0, w1, b1, ...]`` into ``data`` and ``grad``.
    """

    def __init__(self, shapes, dtype, backend):
        self.shapes = [(tuple(ws), tuple(bs)) for ws, bs in shapes]
        self.dtype = dtype
        self.backend = backend
        self.n_weights = sum(prod(ws) for ws, _ in self.shapes)
        self.size = self.n_weights + sum(prod(bs) for _, bs in self.shapes)
        self.data = backend.zeros((self.size,), dtype)
        self.grad = backend.zeros((self.size,), dtype)
        self.params = self._views(self.data)
        self.grads = self._views(self.grad)

    def _views(self, flat):
        out, wo, bo = [], 0, self.n_weights
        for ws, bs in self.shapes:
            nw, nb = prod(ws), prod(bs)
            out.append(flat[wo:wo + nw].reshape(ws))
            out.append(flat[bo:bo + nb].reshape(bs))
            wo += nw
            bo += nb
        return ParamViews(out)

    def weights(self):
        """The weights segment (a view): what network3's L2 term decays."""
        return self.data[: self.n_weights]
