"""Max-pool ties, ``pool_ties="first"`` and ``"all"``, on every backend (reference included).

``"first"`` gives a tied window's gradient to its first maximum (PyTorch, cuDNN);
``"all"`` gives the full gradient to every position equal to the maximum, Theano's rule
and so network3's. The function is not differentiable at a tie, so no finite difference
applies: the expected gradients here are written out by hand (one window of each kind)
or computed by explicit loops over the windows (:func:`hand_gradients`), independently
of the reference backend's vectorised formulation.
"""
import numpy as np
import pytest

from backend_cases import DTYPES, rng_for
from fastmom.backends import reference as ref

RULES = ("first", "all")

# One 2x8 image, four 2x2 windows: the maximum (on a 1x1 filter of 2: z = 2x) held by
# 2, 3, 4 and 1 positions. Row-major positions 0 1 / 2 3 inside a window.
HAND_X = np.array([[5, 5, 3, 1, 7, 7, 0, 4],
                   [1, 2, 3, 3, 7, 7, 1, 2]], dtype=np.float64)
HAND_DY = np.array([1.5, -2.0, 0.25, 3.0])  # one per window
HAND_W, HAND_B = 2.0, 0.5
#: the positions each rule records: "first" the first maximum, "all" the tie bitmask
HAND_ARGMAX = {"first": [0, 0, 0, 1], "all": [0b0011, 0b1101, 0b1111, 0b0010]}
#: the tied positions' x values per window, by rule (each gets the window's gradient)
HAND_PICKED = {"first": [[5], [3], [7], [4]], "all": [[5, 5], [3, 3, 3], [7, 7, 7, 7], [4]]}
#: positions (row, column) of the image that receive a gradient, by rule
HAND_CELLS = {"first": [[(0, 0)], [(0, 2)], [(0, 4)], [(0, 7)]],
              "all": [[(0, 0), (0, 1)], [(0, 2), (1, 2), (1, 3)],
                      [(0, 4), (0, 5), (1, 4), (1, 5)], [(0, 7)]]}


def _run(be, x, w, b, pool, act, dy, rule, dtype, want_dx=True):
    """Forward and backward on ``be``; returns host (y, argmax, dw, db, dx)."""
    out = dy.shape
    y, am = be.dev(np.full(out, np.nan, dtype)), be.dev(np.full(out, -1, np.int32))
    xd, wd = be.dev(x.astype(dtype)), be.dev(w.astype(dtype))
    be.conv_pool_forward(xd, wd, be.dev(b.astype(dtype)), pool, act, y, am, rule)
    # inference (no argmax record) computes the same maxima under either rule
    y_inf = be.dev(np.full(out, np.nan, dtype))
    be.conv_pool_forward(xd, wd, be.dev(b.astype(dtype)), pool, act, y_inf, None, rule)
    np.testing.assert_array_equal(be.host(y_inf), be.host(y))
    grads = [be.dev(np.full(w.shape, np.nan, dtype)), be.dev(np.full(b.shape, np.nan, dtype)),
             be.dev(np.full(x.shape, np.nan, dtype)) if want_dx else None]
    be.conv_pool_backward(xd, wd, y, am, be.dev(dy.astype(dtype)), pool, act, *grads, rule)
    return [be.host(a) if a is not None else None for a in (y, am, *grads)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule", RULES)
def test_hand_windows_with_2_3_4_tied_maxima(backend, rule, dtype):
    x = HAND_X[None, None]
    w, b = np.full((1, 1, 1, 1), HAND_W), np.array([HAND_B])
    dy = HAND_DY.reshape(1, 1, 1, 4)
    y, am, dw, db, dx = _run(backend, x, w, b, (2, 2), "relu", dy, rule, dtype)
    # y = relu(2 * max + 0.5) > 0: the ReLU passes every g = dy
    np.testing.assert_array_equal(y.ravel(), [10.5, 6.5, 14.5, 8.5])
    np.testing.assert_array_equal(am.ravel(), HAND_ARGMAX[rule])
    # db: one g per window whatever its ties (the bias is added after pooling)
    np.testing.assert_array_equal(db, [HAND_DY.sum()])
    # dw = sum over windows of g * (sum of x at its recorded positions)
    want_dw = sum(g * sum(xs) for g, xs in zip(HAND_DY, HAND_PICKED[rule]))
    np.testing.assert_array_equal(dw.ravel(), [want_dw])
    assert want_dw == {"first": 1.5 * 5 - 2 * 3 + 0.25 * 7 + 3 * 4,
                       "all": 1.5 * 10 - 2 * 9 + 0.25 * 28 + 3 * 4}[rule]
    want_dx = np.zeros_like(HAND_X)
    for g, cells in zip(HAND_DY, HAND_CELLS[rule]):
        for r, c in cells:
            want_dx[r, c] = g * HAND_W
    np.testing.assert_array_equal(dx[0, 0], want_dx)


def hand_gradients(x, w, b, pool, dy, rule):
    """Forward and backward by explicit loops (ReLU): every window, every position."""
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    ph, pw = pool
    oh, ow = h - kh + 1, wd - kw + 1
    PH, PW = oh // ph, ow // pw
    z = np.zeros((n, f, oh, ow))
    for i in range(oh):
        for j in range(ow):
            z[:, :, i, j] = np.einsum("nckl,fckl->nf", x[:, :, i:i + kh, j:j + kw], w)
    y, am = np.empty((n, f, PH, PW)), np.empty((n, f, PH, PW), np.int64)
    dz = np.zeros_like(z)
    db = np.zeros(f)
    for idx in np.ndindex(n, f, PH, PW):
        nn, ff, pi, pj = idx
        win = z[nn, ff, pi * ph:pi * ph + ph, pj * pw:pj * pw + pw].ravel()
        m = win.max()
        y[idx] = max(m + b[ff], 0.0)
        g = dy[idx] * (1.0 if y[idx] > 0 else 0.0)
        db[ff] += g
        tied = [s for s in range(ph * pw) if win[s] == m]
        picked = tied if rule == "all" else tied[:1]
        am[idx] = sum(1 << s for s in tied) if rule == "all" else tied[0]
        for s in picked:
            dz[nn, ff, pi * ph + s // pw, pj * pw + s % pw] += g
    dw = np.zeros_like(w)
    dx = np.zeros_like(x)
    for i in range(oh):
        for j in range(ow):
            dw += np.einsum("nf,nckl->fckl", dz[:, :, i, j], x[:, :, i:i + kh, j:j + kw])
            dx[:, :, i:i + kh, j:j + kw] += np.einsum("nf,fckl->nckl", dz[:, :, i, j], w)
    return y, am, dw, db, dx


# (N, C, H, W, F, KH, KW, pool): the scalar and the vector 2x2 rows (16 windows a row),
# a general window (3x2), the cpu's direct forward (>= 64 taps; the last shape's 32 taps
# take it with AVX2 too) and its scattered backward (>= 8 channels), or with fewer
# channels a first layer's row backward (the want_dx=False run below); integer data, so
# the convolution is exact and ties abound
TIE_SHAPES = [
    (2, 1, 6, 9, 2, 1, 2, (2, 2)),
    (2, 1, 5, 33, 3, 2, 2, (2, 2)),
    (2, 2, 8, 9, 3, 2, 2, (3, 2)),
    (2, 16, 7, 9, 5, 2, 2, (2, 2)),
    (2, 8, 6, 7, 9, 2, 2, (2, 2)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("shape", TIE_SHAPES, ids=lambda s: "x".join(map(str, s[:7])) + f"p{s[7][0]}{s[7][1]}")
def test_ties_on_every_path_against_hand_loops(backend, shape, rule, dtype):
    n, c, h, wd, f, kh, kw, pool = shape
    r = rng_for("pool-ties", shape)
    x = r.integers(0, 2, (n, c, h, wd)).astype(np.float64)  # binary images
    x[:, :, :4, :4] = 1  # and a saturated corner, as in MNIST: every window there ties
    w = r.integers(-1, 2, (f, c, kh, kw)).astype(np.float64)
    b = r.integers(1, 4, f).astype(np.float64)
    PH, PW = (h - kh + 1) // pool[0], (wd - kw + 1) // pool[1]
    dy = r.integers(-3, 4, (n, f, PH, PW)).astype(np.float64)
    want = hand_gradients(x, w, b, pool, dy, rule)
    got = _run(backend, x, w, b, pool, "relu", dy, rule, dtype)
    for g, e, what in zip(got, want, ("y", "argmax", "dw", "db", "dx")):
        np.testing.assert_array_equal(g, e, err_msg=what)  # small integers: exact
    if rule == "all":
        assert (np.bitwise_count(got[1].astype(np.uint32)) > 1).mean() > 0.1  # ties were there
    _, _, dw1, db1, _ = _run(backend, x, w, b, pool, "relu", dy, rule, dtype, want_dx=False)
    np.testing.assert_array_equal(dw1, want[2])  # a first layer: the same dw, db
    np.testing.assert_array_equal(db1, want[3])


def test_rules_are_checked(backend):
    x, w, b = np.ones((1, 1, 4, 4)), np.ones((1, 1, 1, 1)), np.zeros(1)
    y, am = backend.dev(np.empty((1, 1, 2, 2))), backend.dev(np.empty((1, 1, 2, 2), np.int32))
    with pytest.raises(ValueError, match="pool_ties must be one of"):
        backend.conv_pool_forward(backend.dev(x), backend.dev(w), backend.dev(b), (2, 2), "relu", y, am,
                                  "max")
    one = (1, 1, 1, 1)  # one window of 8x4 = 32 positions: beyond an int32 bitmask
    with pytest.raises(ValueError, match="at most 31 positions"):
        backend.conv_pool_forward(backend.dev(np.ones((1, 1, 8, 4))), backend.dev(w), backend.dev(b),
                                  (8, 4), "relu", backend.dev(np.empty(one)),
                                  backend.dev(np.empty(one, np.int32)), "all")


def test_a_mask_must_be_a_mask_on_the_host():
    """The kernels index with the record: a position where a mask is due (or the reverse)
    is refused before any compiled code runs."""
    x, w, y, dy = np.ones((1, 1, 2, 2)), np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1))
    grads = (np.empty_like(w), np.empty(1), np.empty_like(x))
    with pytest.raises(ValueError, match=r"bitmasks in \[1, 16\)"):
        ref.conv_pool_backward(x, w, y, np.zeros((1, 1, 1, 1), np.int32), dy, (2, 2), "relu", *grads, "all")
    with pytest.raises(ValueError, match=r"argmax must be in \[0, 4\)"):
        ref.conv_pool_backward(x, w, y, np.full((1, 1, 1, 1), 15, np.int32), dy, (2, 2), "relu", *grads)


# -- a training run with pool_ties="all", the same on every host backend ---------------------

def _tie_net(device, rule, backend=None):
    """Two conv-pool ReLU layers and a softmax on 12x12 images, batch 5, float64, with
    network3's plain SGD (eta 0.03, lmbda 0.1); ``backend`` replaces the reference's
    primitives (the emulated CUDA kernels are no registered device)."""
    import fastmom
    from fastmom import ConvPoolLayer, Network, SoftmaxLayer

    layers = [ConvPoolLayer((4, 1, 3, 3), (5, 1, 12, 12), (2, 2), fastmom.ReLU, pool_ties=rule),
              ConvPoolLayer((8, 4, 2, 2), (5, 4, 5, 5), (2, 2), fastmom.ReLU, pool_ties=rule),
              SoftmaxLayer(8 * 2 * 2, 10)]
    net = Network(layers, 5, device=device, dtype=np.float64, seed=3)
    if backend is not None:
        for layer in net.layers:
            layer.backend = backend
        net.backend = backend
    opt = fastmom.optim.MomentumSGD(net, 0.03, 0.0, False, 0.1, 2)
    if backend is not None:
        opt.backend = backend
    return net, opt


def _train(net, opt, steps=6):
    r = rng_for("tie-train")
    x = (r.random((10, 1, 12, 12)) < 0.3).astype(np.float64)
    x[:, :, 4:8, 8:] = 1.0  # a saturated block and a blank margin wide enough to reach
    x[:, :, :, :8] = 0.0    # the second layer's windows: MNIST's ties
    y = r.integers(0, 10, 10)
    xs, ys = net.prepare_data((x.reshape(10, -1), y))
    costs, masks = [], []
    for step in range(steps):
        sl = slice(5 * (step % 2), 5 * (step % 2) + 5)
        costs.append(float(net.train_step(xs[sl], ys[sl])))
        masks.append([np.array(layer._argmax) for layer in net.layers[:2]])
        opt.step()
    return np.array(costs), np.array(net.flat.data), masks


def _host_backends():
    from backend_cases import make_backend
    runs = {"reference": ("reference", None), "cpu": ("cpu", None)}
    for name in ("cpu", "emulated-cuda"):
        try:
            be = make_backend(name)
        except pytest.skip.Exception:
            runs.pop(name, None)
            continue
        if name == "emulated-cuda":
            runs[name] = ("reference", _with_primitives(be.impl))
    return runs


def _with_primitives(emu):
    """The reference module with the emulated CUDA kernels' compute primitives."""
    from fastmom.backends import PRIMITIVES

    class EmulatedCuda:
        name = "emulated-cuda"

    be = EmulatedCuda()
    for attr in dir(ref):
        if not attr.startswith("_"):
            setattr(be, attr, getattr(ref, attr))
    for attr in PRIMITIVES:
        if attr not in ("dropout_mask", "sum_squares"):  # host draws and the host sum
            setattr(be, attr, getattr(emu, attr))
    return be


def test_all_ties_training_run_is_the_same_on_every_host_backend():
    """float64, 6 steps of network3's SGD with pool_ties="all": the cpu and emulated CUDA
    runs follow the reference's to 1e-10. Not bit for bit: the reference (tensordot),
    the cpu (im2col + GEMM, the direct kernel) and the CUDA kernels sum a convolution's
    taps in different orders. The tie sets themselves agree exactly: the tied patches
    are identical (blank or saturated), so each backend computes the same value for
    each of them."""
    runs = {name: _train(*_tie_net(dev, "all", be)) for name, (dev, be) in _host_backends().items()}
    costs, params, masks = runs.pop("reference")
    tied = [np.bitwise_count(m.astype(np.uint32)) > 1 for step in masks for m in step]
    assert all(t.any() for t in tied)  # both layers tie on every step
    for name, (c, p, m) in runs.items():
        np.testing.assert_allclose(c, costs, rtol=1e-10, err_msg=name)
        np.testing.assert_allclose(p, params, rtol=1e-10, atol=1e-12, err_msg=name)
        for got, want in zip(m, masks):
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w, err_msg=f"{name} tie masks")
    # and the rule mattered: "first" trains to other parameters
    _, first, _ = _train(*_tie_net("reference", "first"))
    assert np.abs(first - params).max() > 1e-6


def test_pool_ties_is_part_of_the_layer_description():
    from fastmom import ConvPoolLayer
    from fastmom.layers import layer_from_spec

    layer = ConvPoolLayer((4, 1, 3, 3), (5, 1, 12, 12), pool_ties="all")
    assert layer.spec()["pool_ties"] == "all"
    assert layer_from_spec(layer.spec()).pool_ties == "all"
    # the default is left out: a default layer describes itself as before the option,
    # and a description from before it (no key) loads as "first"
    old = ConvPoolLayer((4, 1, 3, 3), (5, 1, 12, 12)).spec()
    assert "pool_ties" not in old
    assert layer_from_spec(old).pool_ties == "first"
    with pytest.raises(ValueError, match="pool_ties"):
        ConvPoolLayer((4, 1, 3, 3), (5, 1, 12, 12), pool_ties="every")
