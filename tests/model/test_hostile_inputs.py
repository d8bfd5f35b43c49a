"""Hostile inputs: every public entry point refuses bad shapes, dtypes, ranges, layouts
and files with a clear error before any ``nogil`` kernel runs.

``CASES`` is the single list behind both this test and the table in
``docs/bad-inputs.md`` (``python tests/test_hostile_inputs.py`` prints the table; a test
checks that the document lists every case). Cases marked ``GAP`` expose a missing check
outside the reliability work's files; they are ``xfail`` and, where the kernel would
corrupt memory, not run at all (see the report of issue 5 for the fix).
"""
import gzip
import os
import pickle
import sys

import numpy as np
import pytest

import fastmom
from fastmom import (ConvPoolLayer, FullyConnectedLayer, MomentumSGD, Network, ReLU, SoftmaxLayer, Trainer)
from fastmom.backends import reference as ref
from fastmom.checkpoint import CheckpointError
from fastmom.data import DataError, load_data_shared, read_idx

try:
    from fastmom.backends import cpu
    HAVE_CPU = cpu.is_available() is True
except ImportError:  # pragma: no cover
    cpu, HAVE_CPU = None, False

REPO = os.path.dirname(os.path.dirname(os.path.abspath(fastmom.__file__)))
DOC = os.path.join(REPO, "docs", "bad-inputs.md")
F32 = np.float32


class Case:
    """One bad input: ``call(tmp_path)`` must raise ``exc`` matching ``match``."""

    def __init__(self, entry, what, call, exc, match, gap=None, unsafe=False, needs_cpu=False):
        self.entry, self.what, self.call, self.exc, self.match = entry, what, call, exc, match
        self.gap, self.unsafe, self.needs_cpu = gap, unsafe, needs_cpu

    @property
    def id(self):
        return f"{self.entry}: {self.what}"


def _net(device="reference", mbs=4):
    return Network([FullyConnectedLayer(784, 5), SoftmaxLayer(5, 10)], mbs, device=device, seed=0)


def _conv_net(device="reference"):
    return Network([ConvPoolLayer((2, 1, 5, 5), (4, 1, 28, 28), activation_fn=ReLU), SoftmaxLayer(288, 10)], 4,
                   device=device, seed=0)


GOOD_X = np.random.default_rng(0).random((8, 784))
GOOD_Y = np.arange(8) % 10


# -- arguments of the kernel wrappers (both backends share _checks) ---------------------------

def conv_args(**kw):
    a = dict(x=np.ones((2, 1, 6, 6), F32), w=np.ones((3, 1, 3, 3), F32), b=np.zeros(3, F32), poolsize=(2, 2),
             act="relu", y=np.empty((2, 3, 2, 2), F32), argmax=np.zeros((2, 3, 2, 2), np.int32))
    a.update(kw)
    return a


def conv_fwd(be, **kw):
    a = conv_args(**kw)
    return lambda tmp: be.conv_pool_forward(a["x"], a["w"], a["b"], a["poolsize"], a["act"], a["y"], a["argmax"])


def conv_bwd(be, **kw):
    a = conv_args(**kw)
    dy = kw.get("dy", np.ones((2, 3, 2, 2), F32))
    return lambda tmp: be.conv_pool_backward(a["x"], a["w"], a["y"], a["argmax"], dy, a["poolsize"], a["act"],
                                             np.empty((3, 1, 3, 3), F32), np.empty(3, F32),
                                             kw.get("dx", np.empty((2, 1, 6, 6), F32)))


def dense_fwd(be, x=None, w=None, b=None, act="relu", y=None, scale=1.0):
    x = np.ones((4, 3), F32) if x is None else x
    w = np.ones((3, 2), F32) if w is None else w
    b = np.zeros(2, F32) if b is None else b
    y = np.empty((4, 2), F32) if y is None else y
    return lambda tmp: be.dense_forward(x, w, b, act, y, scale)


def dense_bwd(be, dy=None, dx=None):
    x, w, y = np.ones((4, 3), F32), np.ones((3, 2), F32), np.ones((4, 2), F32)
    dy = np.ones((4, 2), F32) if dy is None else dy
    return lambda tmp: be.dense_backward(x, w, y, dy, "relu", np.empty((3, 2), F32), np.empty(2, F32), dx)


def softmax_fwd(be, z=None, labels=None, probs=None):
    z = np.ones((3, 4), F32) if z is None else z
    labels = np.array([0, 1, 2]) if labels is None else labels
    probs = np.empty(z.shape, F32) if probs is None else probs
    return lambda tmp: be.softmax_nll_forward(z, labels, probs)


def softmax_bwd(be, labels):
    return lambda tmp: be.softmax_nll_backward(np.full((3, 4), 0.25, F32), labels, np.empty((3, 4), F32))


def momentum(be, p=None, g=None, v="default", eta=0.1, mu=0.9, nesterov=False, decay=0.0, n_decay=0):
    p = np.ones(6, F32) if p is None else p
    g = np.ones(6, F32) if g is None else g
    v = np.zeros(6, F32) if isinstance(v, str) else v
    return lambda tmp: be.momentum_step(p, g, v, eta, mu, nesterov, decay, n_decay)


def readonly(a):
    a.flags.writeable = False
    return a


def kernel_cases(be, tag):
    """The wrapper cases, for the ``reference`` and ``cpu`` modules (same checks)."""
    n = tag == "cpu"
    big = np.ones((4, 6), F32)
    K = []

    def add(entry, what, call, exc, match, **kw):
        K.append(Case(f"{tag}.{entry}", what, call, exc, match, needs_cpu=n, **kw))

    add("conv_pool_forward", "x non-contiguous (every other column)",
        conv_fwd(be, x=np.ones((2, 1, 6, 12), F32)[..., ::2]), ValueError, "x must be C-contiguous")
    add("conv_pool_forward", "x float16", conv_fwd(be, x=np.ones((2, 1, 6, 6), np.float16)), TypeError,
        "x must be float32 or float64")
    add("conv_pool_forward", "w float64 with x float32", conv_fwd(be, w=np.ones((3, 1, 3, 3))), TypeError,
        "w must have dtype float32")
    add("conv_pool_forward", "x a list", conv_fwd(be, x=np.ones((2, 1, 6, 6)).tolist()), TypeError,
        "x must be a numpy.ndarray")
    add("conv_pool_forward", "x 3-D", conv_fwd(be, x=np.ones((1, 6, 6), F32)), ValueError, "x must be 4-D")
    add("conv_pool_forward", "0 images", conv_fwd(be, x=np.ones((0, 1, 6, 6), F32), y=np.empty((0, 3, 2, 2), F32),
                                                 argmax=np.empty((0, 3, 2, 2), np.int32)),
        ValueError, "x must not be empty")
    add("conv_pool_forward", "channels of w and x differ", conv_fwd(be, w=np.ones((3, 2, 3, 3), F32)), ValueError,
        "w has 2 input channels but x has 1")
    add("conv_pool_forward", "filter larger than the image", conv_fwd(be, w=np.ones((3, 1, 7, 3), F32)),
        ValueError, "filter 7x3 is larger than the 6x6 image")
    add("conv_pool_forward", "poolsize larger than the map", conv_fwd(be, poolsize=(5, 1)), ValueError,
        "poolsize 5x1 is larger than the 4x4")
    add("conv_pool_forward", "poolsize 2**40 (would overflow a C int)", conv_fwd(be, poolsize=(2**40, 1)),
        ValueError, "is larger than the 4x4")
    add("conv_pool_forward", "poolsize negative", conv_fwd(be, poolsize=(-1, 2)), ValueError,
        "poolsize must be positive")
    add("conv_pool_forward", "poolsize None", conv_fwd(be, poolsize=None), ValueError,
        "poolsize must be a pair of positive ints")
    add("conv_pool_forward", "poolsize (2.5, 2): not integers", conv_fwd(be, poolsize=(2.5, 2)), ValueError,
        "poolsize must be a pair of positive ints")
    add("conv_pool_forward", "b of the wrong length", conv_fwd(be, b=np.zeros(4, F32)), ValueError,
        r"b must have shape \(3,\)")
    add("conv_pool_forward", "y of the wrong shape", conv_fwd(be, y=np.empty((2, 3, 3, 3), F32)), ValueError,
        r"y must have shape \(2, 3, 2, 2\)")
    add("conv_pool_forward", "argmax int64", conv_fwd(be, argmax=np.zeros((2, 3, 2, 2), np.int64)), TypeError,
        "argmax must have dtype int32")
    add("conv_pool_forward", "unknown activation", conv_fwd(be, act="softplus"), ValueError,
        "activation must be one of")
    if n:  # NumPy's own assignment refuses this in the reference
        add("conv_pool_forward", "read-only output y", conv_fwd(be, y=readonly(np.empty((2, 3, 2, 2), F32))),
            ValueError, "read-only")
    add("conv_pool_backward", "argmax outside the pooling window (99)",
        conv_bwd(be, argmax=np.full((2, 3, 2, 2), 99, np.int32)), ValueError, r"argmax must be in \[0, 4\)")
    add("conv_pool_backward", "argmax negative", conv_bwd(be, argmax=np.full((2, 3, 2, 2), -5, np.int32)),
        ValueError, r"argmax must be in \[0, 4\)")
    add("conv_pool_backward", "dy of the wrong shape", conv_bwd(be, dy=np.ones((2, 3, 2, 1), F32)), ValueError,
        r"dy must have shape \(2, 3, 2, 2\)")
    add("conv_pool_backward", "dx non-contiguous", conv_bwd(be, dx=np.empty((2, 1, 6, 12), F32)[..., ::2]),
        ValueError, "dx must be C-contiguous")
    add("dense_forward", "x transposed (Fortran order)", dense_fwd(be, x=np.ones((3, 4), F32).T), ValueError,
        "x must be C-contiguous")
    add("dense_forward", "x int32", dense_fwd(be, x=np.ones((4, 3), np.int32)), TypeError,
        "x must be float32 or float64")
    add("dense_forward", "w rows differ from x columns", dense_fwd(be, w=np.ones((5, 2), F32)), ValueError,
        "w has 5 rows but x has 3 columns")
    add("dense_forward", "0 rows", dense_fwd(be, x=np.ones((0, 3), F32), y=np.empty((0, 2), F32)), ValueError,
        "x must not be empty")
    add("dense_forward", "y of the wrong shape", dense_fwd(be, y=np.empty((4, 3), F32)), ValueError,
        r"y must have shape \(4, 2\)")
    add("dense_forward", "scale NaN", dense_fwd(be, scale=float("nan")), ValueError, "scale must be finite")
    add("dense_backward", "dy of the wrong shape", dense_bwd(be, dy=np.ones((4, 3), F32)), ValueError,
        r"dy must have shape \(4, 2\)")
    add("dense_backward", "dx float64 with float32 inputs", dense_bwd(be, dx=np.empty((4, 3))), TypeError,
        "dx must have dtype float32")
    add("softmax_nll_forward", "a label equal to the class count", softmax_fwd(be, labels=np.array([0, 4, 1])),
        ValueError, r"labels must be in \[0, 4\), got values in \[0, 4\]")
    add("softmax_nll_forward", "labels uint8", softmax_fwd(be, labels=np.array([0, 1, 2], np.uint8)), TypeError,
        "labels must be int32 or int64")
    add("softmax_nll_forward", "labels float", softmax_fwd(be, labels=np.array([0.0, 1, 2])), TypeError,
        "labels must be int32 or int64")
    add("softmax_nll_forward", "labels shorter than the batch", softmax_fwd(be, labels=np.array([0, 1])),
        ValueError, r"labels must have shape \(3,\)")
    add("softmax_nll_forward", "z non-contiguous", softmax_fwd(be, z=np.ones((3, 8), F32)[:, ::2]), ValueError,
        "z must be C-contiguous")
    add("softmax_nll_backward", "a negative label", softmax_bwd(be, np.array([0, -1, 2])), ValueError,
        r"labels must be in \[0, 4\)")
    add("momentum_step", "momentum 1", momentum(be, mu=1.0), ValueError, r"momentum must be in \[0, 1\)")
    add("momentum_step", "eta NaN", momentum(be, eta=float("nan")), ValueError, "eta must be > 0")
    add("momentum_step", "eta 0", momentum(be, eta=0.0), ValueError, "eta must be > 0")
    add("momentum_step", "eta infinite", momentum(be, eta=float("inf")), ValueError, "eta must be > 0 and finite")
    add("momentum_step", "decay NaN", momentum(be, decay=float("nan")), ValueError, "decay must be >= 0")
    add("momentum_step", "n_decay beyond the buffer", momentum(be, n_decay=7), ValueError,
        r"n_decay must be in \[0, 6\]")
    add("momentum_step", "no velocity with momentum > 0", momentum(be, v=None), ValueError,
        "v \\(velocity\\) is required")
    add("momentum_step", "g shorter than p", momentum(be, g=np.ones(5, F32)), ValueError,
        r"g must have shape \(6,\)")
    add("momentum_step", "p a strided view", momentum(be, p=np.ones(12, F32)[::2]), ValueError,
        "p must be C-contiguous")
    add("apply_mask", "mask of another shape", lambda tmp: be.apply_mask(big, np.ones((4, 5), F32), big.copy()),
        ValueError, r"mask must have shape \(4, 6\)")
    add("apply_mask", "a NumPy scalar", lambda tmp: be.apply_mask(F32(1), np.ones(1, F32), np.ones(1, F32)),
        TypeError, "x must be a numpy.ndarray")
    add("sum_squares", "an empty array", lambda tmp: be.sum_squares(np.ones(0, F32)),
        ValueError if n else None, "must not be empty" if n else None)
    add("dropout_mask", "keep probability 0", lambda tmp: be.dropout_mask(np.random.default_rng(0), 0.0,
                                                                         np.empty(3, F32)),
        ValueError, r"keep probability must be in \(0, 1\]")
    return [c for c in K if c.exc is not None]


def cpu_only_cases():
    if cpu is None:
        return []
    return [
        Case("cpu.sum_squares", "int32 array", lambda tmp: cpu.sum_squares(np.ones(3, np.int32)), TypeError,
             "a must be float32 or float64", needs_cpu=True),
        Case("cpu.sum_squares", "big-endian float32 array",
             lambda tmp: cpu.sum_squares(np.ones(3, ">f4")), TypeError,
             "non-native byte order", needs_cpu=True),
        Case("cpu.set_num_threads", "0", lambda tmp: cpu.set_num_threads(0), ValueError,
             "n must be a positive int", needs_cpu=True),
        Case("cpu.set_num_threads", "2.5", lambda tmp: cpu.set_num_threads(2.5), ValueError,
             "n must be a positive int", needs_cpu=True),
        Case("cpu.set_num_threads", "2**31 (then any kernel call)",
             lambda tmp: cpu.set_num_threads(2**31), ValueError, "n must be",
             needs_cpu=True),
    ]


# -- layers, Network, Trainer, MomentumSGD ---------------------------------------------------

def api_cases():
    K = []

    def add(entry, what, call, exc, match, **kw):
        K.append(Case(entry, what, call, exc, match, **kw))

    layers = lambda: [FullyConnectedLayer(784, 5), SoftmaxLayer(5, 10)]  # noqa: E731
    add("ConvPoolLayer", "filter larger than the image", lambda t: ConvPoolLayer((2, 1, 29, 5), (4, 1, 28, 28)),
        ValueError, "filter 29x5 is larger than the 28x28 image")
    add("ConvPoolLayer", "channels differ", lambda t: ConvPoolLayer((2, 3, 5, 5), (4, 1, 28, 28)), ValueError,
        "expects 3 input channels")
    add("ConvPoolLayer", "a zero filter count", lambda t: ConvPoolLayer((0, 1, 5, 5), (4, 1, 28, 28)), ValueError,
        "filter_shape must hold positive sizes")
    add("ConvPoolLayer", "poolsize larger than the map",
        lambda t: ConvPoolLayer((2, 1, 5, 5), (4, 1, 28, 28), poolsize=(25, 1)), ValueError,
        r"poolsize 25x1 is larger than the 24x24")
    add("ConvPoolLayer", "image_shape of 3 values", lambda t: ConvPoolLayer((2, 1, 5, 5), (1, 28, 28)), ValueError,
        "image_shape must be a tuple of 4 ints")
    add("FullyConnectedLayer", "p_dropout 1", lambda t: FullyConnectedLayer(3, 3, p_dropout=1.0), ValueError,
        r"p_dropout must be in \[0, 1\)")
    add("FullyConnectedLayer", "p_dropout -0.1", lambda t: FullyConnectedLayer(3, 3, p_dropout=-0.1), ValueError,
        r"p_dropout must be in \[0, 1\)")
    add("FullyConnectedLayer", "p_dropout NaN", lambda t: FullyConnectedLayer(3, 3, p_dropout=float("nan")),
        ValueError, r"p_dropout must be in \[0, 1\)")
    add("FullyConnectedLayer", "n_in 2.5", lambda t: FullyConnectedLayer(2.5, 3), ValueError,
        "n_in must be a positive int, got 2.5")
    add("FullyConnectedLayer", "n_in 0", lambda t: FullyConnectedLayer(0, 3), ValueError,
        "n_in must be a positive int, got 0")
    add("FullyConnectedLayer", "activation np.exp", lambda t: FullyConnectedLayer(3, 4, activation_fn=np.exp),
        ValueError, "unsupported activation_fn")
    add("Network", "mini_batch_size 0", lambda t: Network(layers(), 0), ValueError,
        "mini_batch_size must be a positive int")
    add("Network", "mini_batch_size True", lambda t: Network(layers(), True, device="reference"), ValueError,
        "mini_batch_size must be a positive int")
    add("Network", "dtype float16", lambda t: Network(layers(), 4, dtype=np.float16), TypeError,
        "dtype must be float32 or float64")
    add("Network", "layer sizes do not chain", lambda t: Network([FullyConnectedLayer(784, 5), SoftmaxLayer(6, 10)],
                                                                4, device="reference"),
        ValueError, r"layers\[1\] has n_in=6 but layers\[0\] outputs 5")
    add("Network", "conv image_shape[0] differs from mini_batch_size",
        lambda t: Network([ConvPoolLayer((2, 1, 5, 5), (8, 1, 28, 28)), SoftmaxLayer(288, 10)], 4,
                          device="reference"), ValueError, r"image_shape\[0\] is 8 but mini_batch_size is 4")
    add("Network", "no SoftmaxLayer last", lambda t: Network([FullyConnectedLayer(784, 10)], 4, device="reference"),
        ValueError, "the last layer must be a SoftmaxLayer")
    add("Network", "layers reused from another network",
        lambda t: (lambda L: (Network(L, 4, device="reference"), Network(L, 4, device="reference")))(layers()),
        ValueError, "already belongs to a Network")
    add("Network", "unknown device", lambda t: Network(layers(), 4, device="tpu"), ValueError,
        "unknown device 'tpu'")
    add("Network", "a layer too large to allocate",
        lambda t: Network([FullyConnectedLayer(784, 2**40), SoftmaxLayer(2**40, 10)], 4, device="reference"),
        MemoryError, "Unable to allocate")
    add("Network.forward", "bool images", lambda t: _net().forward(np.ones((2, 784), bool)), TypeError,
        "x must hold real numbers, got dtype bool")
    add("Network.forward", "complex images", lambda t: _net().forward(np.ones((2, 784), complex)), TypeError,
        "x must hold real numbers")
    add("Network.forward", "strings", lambda t: _net().forward(np.array([["a"] * 784])), TypeError,
        "x must hold real numbers")
    add("Network.forward", "a ragged list", lambda t: _net().forward([[0.5] * 784, [0.5] * 3]), TypeError,
        "x must be an array of real numbers, got list")
    add("Network.forward", "one image without the batch axis", lambda t: _net().forward(np.ones(784)), ValueError,
        r"x must have shape \(N, 784\) for the first layer, got \(784,\)")
    add("Network.forward", "images of the wrong size for the first layer",
        lambda t: _conv_net().forward(np.ones((2, 1, 27, 28))), ValueError, r"x must have shape \(N, 784\)")
    add("Network.forward", "0 images", lambda t: _net().forward(np.ones((0, 784))), ValueError, "x is empty")
    add("Network.forward", "NaN pixels", lambda t: _net().forward(np.full((2, 784), np.nan)), ValueError,
        "x contains NaN or infinite values")
    add("Network.forward", "float64 pixels overflowing float32",
        lambda t: _net().forward(np.full((2, 784), 1e300)), ValueError, "x contains NaN or infinite values")
    add("Network.accuracy", "a label equal to n_out", lambda t: _net().accuracy(GOOD_X[:4], np.array([0, 1, 10, 2])),
        ValueError, r"labels y must be in \[0, 10\)")
    add("Network.accuracy", "bool labels", lambda t: _net().accuracy(GOOD_X, np.ones(8, bool)), TypeError,
        "labels y must hold integer class labels")
    add("Network.accuracy", "labels of shape (N, 1)", lambda t: _net().accuracy(GOOD_X, np.ones((8, 1), int)),
        ValueError, r"labels y must have shape \(8,\)")
    add("Network.accuracy", "uint64 labels beyond int64",
        lambda t: _net().accuracy(GOOD_X, np.full(8, 2**63 + 5, np.uint64)), ValueError, r"must be in \[0, 10\)")
    add("Network.cost_and_gradients", "more images than mini_batch_size",
        lambda t: _net().cost_and_gradients(GOOD_X[:5], GOOD_Y[:5]), ValueError, "more than mini_batch_size")
    add("Network.cost_and_gradients", "lmbda NaN",
        lambda t: _net().cost_and_gradients(GOOD_X[:4], GOOD_Y[:4], float("nan")), ValueError,
        "lmbda must be a finite number >= 0")
    add("Network.SGD", "mini_batch_size differs from the network's",
        lambda t: _net().SGD((GOOD_X, GOOD_Y), 1, 5, 0.1, None, None), ValueError, "mini_batch_size=5 differs")
    add("Trainer", "eta 0", lambda t: Trainer(_net(), eta=0), ValueError, "eta must be a finite number > 0")
    add("Trainer", "eta NaN", lambda t: Trainer(_net(), eta=float("nan")), ValueError, "eta must be a finite")
    add("Trainer", "momentum 1", lambda t: Trainer(_net(), momentum=1.0), ValueError, r"momentum must be in \[0, 1\)")
    add("Trainer", "momentum -0.1", lambda t: Trainer(_net(), momentum=-0.1), ValueError,
        r"momentum must be in \[0, 1\)")
    add("Trainer", "lmbda infinite", lambda t: Trainer(_net(), lmbda=float("inf")), ValueError, "lmbda must be >= 0")
    add("Trainer", "nesterov without momentum", lambda t: Trainer(_net(), momentum=0, nesterov=True), ValueError,
        "nesterov=True needs momentum > 0")
    add("Trainer", "unknown optimizer name", lambda t: Trainer(_net(), "adam"), ValueError,
        "optimizer must be one of")
    add("Trainer", "checkpoint_unit 'minute'", lambda t: Trainer(_net(), checkpoint_unit="minute"), ValueError,
        "checkpoint_unit must be one of")
    add("Trainer", "keep_last 0", lambda t: Trainer(_net(), keep_last=0), ValueError, "keep_last must be a positive")
    add("Trainer.fit", "empty training data", lambda t: Trainer(_net()).fit((np.ones((0, 784)), np.ones(0, int)), 1),
        ValueError, "training_data images is empty")
    add("Trainer.fit", "fewer images than mini_batch_size",
        lambda t: Trainer(_net()).fit((GOOD_X[:3], GOOD_Y[:3]), 1), ValueError, "fewer than mini_batch_size=4")
    add("Trainer.fit", "labels shorter than the images", lambda t: Trainer(_net()).fit((GOOD_X, GOOD_Y[:7]), 1),
        ValueError, r"training_data labels must have shape \(8,\)")
    add("Trainer.fit", "data not an (x, y) pair", lambda t: Trainer(_net()).fit(GOOD_X, 1), TypeError,
        r"training_data must be a pair \(x, y\)")
    add("Trainer.fit", "epochs 1.5", lambda t: Trainer(_net(), progress=False).fit((GOOD_X, GOOD_Y), 1.5),
        ValueError, "epochs must be an int >= 0")
    add("Trainer.fit", "epochs 'two'", lambda t: Trainer(_net(), progress=False).fit((GOOD_X, GOOD_Y), "two"),
        TypeError, "epochs must be an int >= 0")
    add("Trainer.fit", "validation labels out of range",
        lambda t: Trainer(_net(), progress=False).fit((GOOD_X, GOOD_Y), 1, (GOOD_X, GOOD_Y + 5)), ValueError,
        r"validation_data labels must be in \[0, 10\)")
    add("MomentumSGD", "a list instead of a network", lambda t: MomentumSGD([1, 2], 0.1), TypeError,
        "params must be a fastmom Network")
    # issue 15: what would silently split the network from its flat buffer, or do nothing
    add("Network.params", "item assignment (net.params[0] = w)",
        lambda t: _net().params.__setitem__(0, np.zeros((784, 5))), TypeError,
        r"net\.params is read-only .* net\.params\[i\]\[\.\.\.\] = x")
    add("layer.w", "an array of another shape", lambda t: setattr(_net().layers[0], "w", np.zeros((5, 784))),
        ValueError, r"FullyConnectedLayer\.w must have shape \(784, 5\), got \(5, 784\)")
    add("layer.b", "complex values", lambda t: setattr(_net().layers[0], "b", np.zeros(5, complex)), TypeError,
        r"FullyConnectedLayer\.b must hold real numbers")
    add("Trainer.fit", "early_stopping without validation_data",
        lambda t: Trainer(_net(), progress=False, early_stopping=2).fit((GOOD_X, GOOD_Y), 3), ValueError,
        "early_stopping=2 needs validation_data")
    add("Trainer.fit_to", "total_epochs -1", lambda t: Trainer(_net(), progress=False).fit_to((GOOD_X, GOOD_Y), -1),
        ValueError, "total_epochs must be an int >= 0")
    return K


# -- files -----------------------------------------------------------------------------------

def _ckpt(tmp, damage):
    path = tmp / "c.npz"
    _net().save(path)
    data = path.read_bytes()
    path.write_bytes(damage(data))
    return path


def file_cases():
    K = []

    def add(entry, what, call, exc, match):
        K.append(Case(entry, what, call, exc, match))

    add("Network.load", "a truncated checkpoint", lambda t: Network.load(_ckpt(t, lambda d: d[: len(d) // 2])),
        CheckpointError, r"c\.npz: corrupt or truncated checkpoint")
    add("Network.load", "a checkpoint with a flipped byte",
        lambda t: Network.load(_ckpt(t, lambda d: d[:300] + bytes([d[300] ^ 0xFF]) + d[301:])),
        CheckpointError, r"c\.npz: (corrupt|not a fastmom)")
    add("Network.load", "an empty file", lambda t: Network.load(_ckpt(t, lambda d: b"")), CheckpointError,
        r"c\.npz: corrupt or truncated")
    add("Network.load", "a missing file", lambda t: Network.load(t / "none.npz"), CheckpointError,
        r"none\.npz: file not found")
    add("Trainer(resume=)", "a missing checkpoint", lambda t: Trainer(_net(), resume=t / "none.npz"),
        CheckpointError, r"none\.npz: file not found")
    add("Network.load", "a pickle file", lambda t: (t.joinpath("m.pkl").write_bytes(pickle.dumps(_net().spec())),
                                                    Network.load(t / "m.pkl")), CheckpointError,
        r"m\.pkl: not a fastmom file: fastmom saves pickle-free \.npz archives")
    add("Network.load", "an npz with an object (pickled) member",
        lambda t: (np.savez(t / "o.npz", meta=np.array([{}], dtype=object)), Network.load(t / "o.npz")),
        CheckpointError, r"o\.npz: member 'meta' holds Python objects; not a fastmom file")
    add("Network.load", "a single .npy array", lambda t: (np.save(t / "a.npy", np.ones(3)), Network.load(t / "a.npy")),
        CheckpointError, r"a\.npy: a single NumPy array \(\.npy\), not a fastmom file")
    add("Network.load", "mini_batch_size 0",
        lambda t: (_net().save(t / "m.npz"), Network.load(t / "m.npz", mini_batch_size=0)), ValueError, "mini_batch_size must be a positive int")
    add("Network.save", "over a read-only file",
        lambda t: (_net().save(t / "m.npz"), os.chmod(t / "m.npz", 0o444), _net().save(t / "m.npz")),
        PermissionError, r"Read-only file, not replaced \(pass overwrite=True to replace it\): '.*m\.npz'")
    add("Network.save", "into a missing directory", lambda t: _net().save(t / "no" / "m.npz"), FileNotFoundError,
        r"No such file or directory: '.*no/m\.npz'")
    add("read_idx", "a truncated IDX file",
        lambda t: (t.joinpath("i.idx").write_bytes(b"\0\0\x08\x01\0\0\0\x09abc"), read_idx(t / "i.idx")),
        DataError, r"i\.idx: truncated")
    add("read_idx", "corrupt gzip", lambda t: (t.joinpath("i.gz").write_bytes(gzip.compress(b"\0\0\x08\x01")[:-6]),
                                               read_idx(t / "i.gz")), DataError, r"i\.gz: corrupt gzip")
    add("load_data_shared", "a truncated pickle",
        lambda t: (t.joinpath("d.pkl.gz").write_bytes(gzip.compress(b"\x80\x02(")), load_data_shared(t / "d.pkl.gz")),
        DataError, r"d\.pkl\.gz")
    return K


CASES = (kernel_cases(ref, "reference") + (kernel_cases(cpu, "cpu") + cpu_only_cases() if HAVE_CPU else [])
         + api_cases() + file_cases())


def _params():
    out = []
    for c in CASES:
        marks = []
        if c.gap:
            marks.append(pytest.mark.xfail(strict=True, run=not c.unsafe, reason=f"GAP: {c.gap}"))
        out.append(pytest.param(c, id=c.id, marks=marks))
    return out


@pytest.fixture
def restore_threads():
    n = cpu.thread_setting() if HAVE_CPU else None
    yield
    if HAVE_CPU:
        cpu.set_num_threads(n)


@pytest.mark.parametrize("case", _params())
def test_bad_input_is_refused(case, tmp_path, restore_threads):
    with pytest.raises(case.exc, match=case.match):
        case.call(tmp_path)
        if case.entry == "cpu.set_num_threads":  # the value must be usable by the next kernel call
            cpu.sum_squares(np.ones(3, F32))


def test_doc_lists_every_case():
    with open(DOC, encoding="utf-8") as f:
        doc = f.read()
    missing = [c.id for c in CASES if _row(c) not in doc]
    assert not missing, f"docs/bad-inputs.md is out of date (python tests/test_hostile_inputs.py): {missing}"


def _exc_name(exc):
    return " or ".join(e.__name__ for e in exc) if isinstance(exc, tuple) else exc.__name__


def _row(c):
    match = c.match.replace("\\", "").replace("|", "/")
    status = f"**GAP**: {c.gap}" if c.gap else "ok"
    return f"| `{c.entry}` | {c.what} | `{_exc_name(c.exc)}` | `{match}` | {status} |"


def markdown():
    lines = ["| entry point | bad input | error | message (regex) | status |", "|---|---|---|---|---|"]
    lines += [_row(c) for c in CASES]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(markdown() + "\n")
