"""The ``reference`` backend: every primitive in plain NumPy.

This is the oracle that the compiled backends are tested against, so it favours
obviously-correct formulations (im2col through ``sliding_window_view``, explicit
reshapes for the pooling windows) over speed. It allocates freely.

Backend interface
-----------------
Every backend module (``reference``, ``cpu``, ``cuda``) provides the names below with
the same signatures and semantics. Outputs are written into caller-owned arrays so
that compiled backends never allocate inside a training step; ``dw``/``db``/``dx`` are
overwritten, not accumulated. Shapes (``N`` batch, ``C`` channels, ``F`` filters):

- ``conv_pool_forward(x, w, b, poolsize, act, y, argmax, pool_ties="first")``:
  ``x (N,C,H,W)``, ``w (F,C,KH,KW)``, ``b (F,)``. Valid stride-1 cross-correlation
  ``z (N,F,OH,OW)`` with ``OH = H-KH+1``; non-overlapping ``ph x pw`` max-pool dropping
  the ragged border (``PH = OH // ph``); ``y = act(pool(z) + b)`` of shape
  ``(N,F,PH,PW)``. ``argmax (N,F,PH,PW) int32`` records each window's maximum for the
  backward pass, by the tie rule ``pool_ties``; ``argmax=None`` is inference (``y``
  only: nothing is recorded, so the backends skip the argmax work):

  - ``"first"``: the row-major position ``r*pw + s`` of the maximum; ties go to the
    first position (PyTorch's and cuDNN's rule, a subgradient).
  - ``"all"`` (Theano's rule, so network3's): the bitmask ``sum(1 << (r*pw + s))`` over
    every position whose ``z`` equals the window's maximum (exact equality of the
    computed values), always including the first maximum's bit (a NaN maximum equals
    nothing); windows of at most 31 positions.
- ``conv_pool_backward(x, w, y, argmax, dy, poolsize, act, dw, db, dx, pool_ties="first")``:
  with ``g = dy * act'(y)``, ``dz`` holds ``g`` at each position that ``argmax`` records
  (the one position for ``"first"``, every tied one for ``"all"``: the same ``pool_ties``
  as the forward pass that wrote it) and zero elsewhere; writes
  ``dw (F,C,KH,KW) = sum dz * x``, ``db (F,) = sum g`` (the bias is added after
  pooling: one ``g`` per window whatever its ties) and, unless ``dx`` is ``None`` (a
  first layer), ``dx (N,C,H,W)``.
- ``dense_forward(x, w, b, act, y, scale=1.0)``: ``y = act(scale * x @ w + b)``
  (``scale`` is network3's ``1 - p_dropout`` at inference).
- ``dense_backward(x, w, y, dy, act, dw, db, dx)``: ``dz = dy * act'(y)``,
  ``dw = x.T @ dz``, ``db = dz.sum(0)``, ``dx = dz @ w.T`` (skipped if ``None``).
- ``dropout_mask(rng, keep, out)``: fill ``out`` with Bernoulli(``keep``) 0/1 values.
- ``apply_mask(x, mask, out)``: ``out = x * mask``.
- ``softmax_nll_forward(z, labels, probs) -> (cost, correct)``: stable softmax of the
  logits into ``probs``; with labels, the mean negative log-likelihood and the number
  of rows whose argmax (first on ties) equals the label, as backend scalars (``float()``
  and ``int()`` read them; on a GPU that is when the host waits).
- ``softmax_nll_backward(probs, labels, dz)``: ``dz = (probs - onehot(labels)) / N``.
- ``momentum_step(p, g, v, eta, momentum, nesterov, decay, n_decay)``: in place over
  flat buffers; see :func:`momentum_step`.
- ``sum_squares(a) -> float``, ``make_rng(seed)``, ``rng_state(rng)`` (JSON-able) and
  ``set_rng_state(rng, state)``, ``synchronize()``, ``xp`` (the array module),
  ``asarray(a, dtype)``, ``to_numpy(a)``, ``empty(shape, dtype)``, ``zeros(shape, dtype)``,
  ``is_available()``, ``name``.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import activations
from . import _checks

name = "reference"
xp = np


def is_available() -> bool:
    return True


def asarray(a, dtype=None):
    return np.ascontiguousarray(a, dtype=dtype)


def to_numpy(a):
    return np.asarray(a)


def empty(shape, dtype):
    return np.empty(shape, dtype=dtype)


def zeros(shape, dtype):
    return np.zeros(shape, dtype=dtype)


def make_rng(seed):
    return np.random.default_rng(seed)


def rng_state(rng):
    """The JSON-able state of a generator from :func:`make_rng` (PCG64's 128-bit
    integers are plain JSON integers)."""
    return rng.bit_generator.state


def set_rng_state(rng, state):
    """Restore :func:`rng_state` output in place (the layers share the generator)."""
    rng.bit_generator.state = state


def synchronize():
    """Nothing to wait for on the host."""


# -- convolution + max-pool ---------------------------------------------------------

def _windows(x, kh, kw):
    # (N, C, OH, OW, KH, KW) view: im2col without a copy
    return sliding_window_view(x, (kh, kw), axis=(2, 3))


def _pool_view(z, ph, pw, PH, PW):
    n, f = z.shape[:2]
    zc = z[:, :, : PH * ph, : PW * pw].reshape(n, f, PH, ph, PW, pw)
    return zc.transpose(0, 1, 2, 4, 3, 5).reshape(n, f, PH, PW, ph * pw)


def conv_pool_forward(x, w, b, poolsize, act, y, argmax, pool_ties="first"):
    """Fused valid cross-correlation + max-pool + bias + activation (see module doc)."""
    n, c, h, wd, f, kh, kw, oh, ow, PH, PW = _checks.conv_pool_forward(
        x, w, b, poolsize, act, y, argmax, pool_ties, xp=np)
    ph, pw = _checks.pool(poolsize)
    z = np.tensordot(_windows(x, kh, kw), w, axes=([1, 4, 5], [1, 2, 3]))  # (N,OH,OW,F)
    z = z.transpose(0, 3, 1, 2)
    windows = _pool_view(z, ph, pw, PH, PW)
    am = windows.argmax(axis=-1)
    m = np.take_along_axis(windows, am[..., None], axis=-1)[..., 0]
    y[...] = activations.apply(act, m + b[None, :, None, None])
    if argmax is None:
        return
    if pool_ties == "all":
        bits = np.int32(1) << np.arange(ph * pw, dtype=np.int32)
        tied = windows == m[..., None]
        argmax[...] = (tied * bits).sum(axis=-1, dtype=np.int32) | (np.int32(1) << am.astype(np.int32))
    else:
        argmax[...] = am


def _pool_positions(argmax, ph, pw, pool_ties):
    """``(N,F,PH,PW,ph*pw)`` 0/1: the window positions that ``argmax`` records."""
    pos = np.arange(ph * pw, dtype=np.int32)
    if pool_ties == "all":
        return (argmax[..., None] >> pos) & 1
    return argmax[..., None] == pos


def conv_pool_backward(x, w, y, argmax, dy, poolsize, act, dw, db, dx, pool_ties="first"):
    """Gradients of :func:`conv_pool_forward` (see module doc)."""
    n, c, h, wd, f, kh, kw, oh, ow, PH, PW = _checks.conv_pool_backward(
        x, w, y, argmax, dy, poolsize, act, dw, db, dx, pool_ties, xp=np)
    ph, pw = _checks.pool(poolsize)
    dm = dy * activations.derivative_from_output(act, y)  # (N,F,PH,PW)
    db[...] = dm.sum(axis=(0, 2, 3))
    # un-pool: each window's gradient to the positions argmax records, zero elsewhere and
    # on the border
    dwin = np.where(_pool_positions(argmax, ph, pw, pool_ties), dm[..., None], x.dtype.type(0))
    dz = np.zeros((n, f, oh, ow), dtype=x.dtype)
    dz[:, :, : PH * ph, : PW * pw] = (
        dwin.reshape(n, f, PH, PW, ph, pw).transpose(0, 1, 2, 4, 3, 5).reshape(n, f, PH * ph, PW * pw))
    # dw[f,c,k,l] = sum_{n,i,j} dz[n,f,i,j] * x[n,c,i+k,j+l]
    dw[...] = np.tensordot(dz, _windows(x, kh, kw), axes=([0, 2, 3], [0, 2, 3]))
    if dx is not None:
        dx[...] = 0
        for k in range(kh):
            for l in range(kw):
                dx[:, :, k:k + oh, l:l + ow] += np.einsum("nfij,fc->ncij", dz, w[:, :, k, l])


# -- dense ----------------------------------------------------------------------------

def dense_forward(x, w, b, act, y, scale=1.0):
    """``y = act(scale * x @ w + b)``."""
    _checks.dense_forward(x, w, b, act, y, scale, xp=np)
    z = x @ w
    if scale != 1.0:
        z *= x.dtype.type(scale)
    y[...] = activations.apply(act, z + b)


def dense_backward(x, w, y, dy, act, dw, db, dx):
    """Gradients of :func:`dense_forward` with ``scale=1``."""
    _checks.dense_backward(x, w, y, dy, act, dw, db, dx, xp=np)
    dz = dy * activations.derivative_from_output(act, y)
    dw[...] = x.T @ dz
    db[...] = dz.sum(axis=0)
    if dx is not None:
        dx[...] = dz @ w.T


# -- dropout --------------------------------------------------------------------------

def dropout_mask(rng, keep, out):
    """Bernoulli(``keep``) keep-mask as 0/1 values of ``out``'s dtype."""
    _checks.keep_probability(keep)
    u = rng.random(out.shape)
    np.less(u, keep, out=out, casting="unsafe")


def apply_mask(x, mask, out):
    _checks.apply_mask(x, mask, out, xp=np)
    np.multiply(x, mask, out=out)


# -- softmax + negative log-likelihood --------------------------------------------------

def softmax_nll_forward(z, labels, probs):
    """Stable softmax into ``probs``; with labels, ``(mean NLL, correct count)``."""
    n, k = _checks.softmax_nll_forward(z, labels, probs, xp=np)
    zmax = z.max(axis=1, keepdims=True)
    e = np.exp(z - zmax)
    s = e.sum(axis=1, keepdims=True)
    probs[...] = e / s
    if labels is None:
        return None, None
    _checks.labels_range(labels, k)
    rows = np.arange(n)
    # log softmax from the shifted logits: no log(0) when a probability underflows
    logp = (z[rows, labels] - zmax[:, 0]) - np.log(s[:, 0])
    cost = float(-logp.mean(dtype=np.float64))
    correct = int((probs.argmax(axis=1) == labels).sum())
    return cost, correct


def softmax_nll_backward(probs, labels, dz):
    """``dz = (probs - onehot(labels)) / N``: gradient of the mean NLL w.r.t. the logits."""
    n, k = _checks.softmax_nll_backward(probs, labels, dz, xp=np)
    _checks.labels_range(labels, k)
    dz[...] = probs
    dz[np.arange(n), labels] -= 1
    dz /= n


# -- optimizer ----------------------------------------------------------------------------

def momentum_step(p, g, v, eta, momentum, nesterov, decay, n_decay):
    r"""One in-place momentum-SGD step over flat buffers.

    .. math::
        g_\text{eff} &= g + \text{decay}\cdot p \quad\text{on } p[:n_\text{decay}] \text{ (the weights)}\\
        v &\leftarrow \mu v - \eta\, g_\text{eff}\\
        p &\leftarrow p + v \quad\text{or, Nesterov,}\quad p + \mu v - \eta\, g_\text{eff}

    With ``momentum == 0`` this is plain SGD, ``p -= eta * g_eff``, and ``v`` is not
    touched (it may be ``None``).
    """
    _checks.momentum_step(p, g, v, eta, momentum, nesterov, decay, n_decay, xp=np)
    t = p.dtype.type
    geff = g.copy()
    if decay:
        geff[:n_decay] += t(decay) * p[:n_decay]
    if momentum == 0:
        p -= t(eta) * geff
        return
    v *= t(momentum)
    v -= t(eta) * geff
    if nesterov:
        p += t(momentum) * v - t(eta) * geff
    else:
        p += v


def sum_squares(a) -> float:
    a = a.ravel().astype(np.float64)  # float32 squares overflow near 1.8e19
    return float(np.dot(a, a))
