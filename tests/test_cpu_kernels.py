"""The ``cpu`` backend's compiled kernels against the NumPy reference backend.

Fresh random inputs every time (never zeros), a grid of shapes with odd channel
counts, non-square images, ragged pooling borders, poolsize (1, 1), batch 1 and
every activation; float64 to 1e-10 and float32 to 1e-4 relative to the largest
reference value. Plus argument checks, thread-count (in)dependence and a short
training run on the bundled MNIST sample.
"""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from fastmom.activations import ACTIVATIONS
from fastmom.backends import reference as ref

cpu = pytest.importorskip("fastmom.backends.cpu")
if cpu.is_available() is not True:
    pytest.skip(f"cpu backend not built: {cpu.is_available()}", allow_module_level=True)

ACTS = sorted(ACTIVATIONS)
DTYPES = [np.float64, np.float32]
RTOL = {np.float64: 1e-10, np.float32: 1e-4}

# (N, C, H, W, F, KH, KW, poolsize)
CONV_SHAPES = [
    (1, 1, 8, 8, 3, 3, 3, (2, 2)),          # batch 1, 6x6 map
    (3, 3, 13, 11, 5, 4, 3, (2, 3)),        # odd channels, non-square, ragged border both ways
    (2, 5, 9, 12, 7, 2, 5, (3, 2)),         # pool 3 rows on an 8-row map (ragged)
    (4, 2, 7, 6, 3, 3, 2, (1, 1)),          # no pooling
    (5, 1, 28, 28, 20, 5, 5, (2, 2)),       # network3 conv1, batch below 10
    (7, 20, 12, 12, 40, 5, 5, (2, 2)),      # network3 conv2, batch below 10
    (3, 7, 11, 10, 6, 3, 4, (2, 3)),        # 84 taps per output, ragged border both ways
    (2, 9, 8, 9, 5, 3, 3, (3, 2)),          # 81 taps, 3-row windows, ragged columns
    (3, 8, 9, 9, 4, 3, 3, (1, 1)),          # 72 taps, no pooling
    # the direct path (conv_direct.h: >= 64 taps, windows of 1, 2 or 4 positions) with
    # filter counts that leave partial vectors and blocks (8 floats / 4 doubles a vector)
    (3, 5, 13, 12, 9, 4, 4, (2, 2)),        # 80 taps, 9 filters, ragged columns
    (2, 4, 11, 9, 17, 5, 4, (1, 2)),        # 80 taps, 17 filters, 1x2 windows
    (2, 13, 7, 8, 3, 3, 2, (2, 1)),         # 78 taps, 3 filters, 2x1 windows, ragged rows
    (2, 8, 9, 10, 41, 3, 3, (2, 2)),        # 72 taps, 41 filters, ragged rows
    # batch 1 on the direct forward and the scattered backward (9 channels: one vector
    # and a partial one), ragged columns
    (1, 9, 10, 11, 10, 3, 3, (2, 2)),
]


def assert_close(actual, desired, dtype):
    """Relative to the largest reference magnitude: cancellation makes entries near zero."""
    desired = np.asarray(desired)
    scale = max(float(np.max(np.abs(desired))), 1e-30)
    np.testing.assert_allclose(actual, desired, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)


def randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


@pytest.fixture
def threads():
    """Restore the thread count after a test that changes it."""
    n = cpu.thread_setting()
    yield
    cpu.set_num_threads(n)


# -- conv + pool ------------------------------------------------------------------------

def conv_problem(rng, shape, dtype):
    n, c, h, w, f, kh, kw, pool = shape
    oh, ow = h - kh + 1, w - kw + 1
    out = (n, f, oh // pool[0], ow // pool[1])
    return (randn(rng, (n, c, h, w), dtype), randn(rng, (f, c, kh, kw), dtype),
            randn(rng, (f,), dtype), out)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s[:7])) + f"p{s[7][0]}{s[7][1]}")
def test_conv_pool_forward_backward(rng, shape, act, dtype):
    x, w, b, out = conv_problem(rng, shape, dtype)
    pool = shape[7]
    y_ref, am_ref = np.empty(out, dtype), np.empty(out, np.int32)
    ref.conv_pool_forward(x, w, b, pool, act, y_ref, am_ref)
    y, am = np.full(out, np.nan, dtype), np.full(out, -1, np.int32)
    cpu.conv_pool_forward(x, w, b, pool, act, y, am)
    assert_close(y, y_ref, dtype)
    if dtype == np.float64:
        # random data: no near-ties at double precision, so the positions agree exactly
        np.testing.assert_array_equal(am, am_ref)
    else:
        # float32 rounding may flip a near-tie; the values (checked above) still agree
        assert np.mean(am != am_ref) < 0.01
    assert am.min() >= 0 and am.max() < pool[0] * pool[1]

    # backward from the reference's forward state, so a flipped near-tie cannot matter
    dy = randn(rng, out, dtype)
    grads = {}
    for be in (ref, cpu):
        dw, db, dx = (np.full_like(a, np.nan) for a in (w, b, x))
        be.conv_pool_backward(x, w, y_ref, am_ref, dy, pool, act, dw, db, dx)
        grads[be.name] = (dw, db, dx)
    for got, want in zip(grads["cpu"], grads["reference"]):
        assert_close(got, want, dtype)

    # first layer: no input gradient, the same dw/db
    dw, db = np.full_like(w, np.nan), np.full_like(b, np.nan)
    cpu.conv_pool_backward(x, w, y_ref, am_ref, dy, pool, act, dw, db, None)
    assert_close(dw, grads["reference"][0], dtype)
    assert_close(db, grads["reference"][1], dtype)


def test_conv_first_max_wins_on_exact_ties():
    # integer-valued input: exact ties inside the windows, resolved to the first position
    x = np.ones((2, 1, 6, 6))
    x[0, 0, 2:4, 2:4] = 3.0
    w = np.ones((1, 1, 1, 1))
    b = np.zeros(1)
    y, am = np.empty((2, 1, 3, 3)), np.empty((2, 1, 3, 3), np.int32)
    y_ref, am_ref = np.empty_like(y), np.empty_like(am)
    cpu.conv_pool_forward(x, w, b, (2, 2), "linear", y, am)
    ref.conv_pool_forward(x, w, b, (2, 2), "linear", y_ref, am_ref)
    np.testing.assert_array_equal(am, am_ref)
    np.testing.assert_array_equal(y, y_ref)
    assert (am == 0).all()


def assert_ties_resolved_as_reference(x, w, pool, out):
    """Forward on both backends in both dtypes: identical argmax and values."""
    for dtype in DTYPES:
        y, am = np.empty(out, dtype), np.empty(out, np.int32)
        y_ref, am_ref = np.empty_like(y), np.empty_like(am)
        args = (x.astype(dtype), w.astype(dtype), np.zeros(len(w), dtype), pool, "linear")
        cpu.conv_pool_forward(*args, y, am)
        ref.conv_pool_forward(*args, y_ref, am_ref)
        np.testing.assert_array_equal(am, am_ref)
        np.testing.assert_array_equal(y, y_ref)


def test_conv_first_max_wins_on_exact_ties_in_vector_rows(rng):
    # 20 windows per pooled row: whole vectors of windows (8 floats, 4 doubles) and a
    # tail, on the im2col + GEMM path (4 taps); sums of 0/1 pixels tie in most windows
    assert not cpu._k.direct_conv_applies(4, 2, 2)
    x = rng.integers(0, 2, (2, 1, 41, 41)).astype(np.float64)
    assert_ties_resolved_as_reference(x, np.ones((3, 1, 2, 2)), (2, 2), (2, 3, 20, 20))


def test_conv_direct_path_first_max_wins_on_exact_ties(rng):
    # 64 taps (the direct kernel's threshold) of ones on small integers: exact ties in
    # most windows; the first position must win as in the reference
    assert cpu._k.direct_conv_applies(64, 2, 2) == cpu._k.direct_conv_applies(500, 2, 2)
    x = rng.integers(0, 2, (3, 4, 9, 11)).astype(np.float64)
    assert_ties_resolved_as_reference(x, np.ones((5, 4, 4, 4)), (2, 2), (3, 5, 3, 4))


def test_direct_path_dispatch_rules():
    # never for few taps (conv1's 25: im2col + GEMM measured faster) or windows of 3, 6, 9
    # positions (a tile holds whole windows of up to 4)
    for k, ph, pw in [(25, 2, 2), (63, 2, 2), (500, 3, 3), (500, 2, 3), (500, 1, 3)]:
        assert not cpu._k.direct_conv_applies(k, ph, pw)


def test_conv_leading_slice_of_larger_workspace(rng):
    """A layer passes ``buf[:n]`` views for a batch below mini_batch_size."""
    x, w, b, out = conv_problem(rng, (10, 3, 10, 9, 4, 3, 3, (2, 2)), np.float64)
    ybuf, abuf = np.empty(out), np.empty(out, np.int32)
    for n in (10, 3, 1):
        y_ref, am_ref = np.empty((n,) + out[1:]), np.empty((n,) + out[1:], np.int32)
        ref.conv_pool_forward(x[:n], w, b, (2, 2), "relu", y_ref, am_ref)
        cpu.conv_pool_forward(x[:n], w, b, (2, 2), "relu", ybuf[:n], abuf[:n])
        assert_close(ybuf[:n], y_ref, np.float64)
        np.testing.assert_array_equal(abuf[:n], am_ref)


# -- dense ----------------------------------------------------------------------------

DENSE_SHAPES = [(1, 7, 3), (3, 13, 5), (10, 640, 100), (33, 100, 10), (64, 640, 100)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_dense(rng, shape, act, dtype, scale):
    n, nin, nout = shape
    x, w, b = randn(rng, (n, nin), dtype), randn(rng, (nin, nout), dtype), randn(rng, (nout,), dtype)
    y_ref, y = np.empty((n, nout), dtype), np.full((n, nout), np.nan, dtype)
    ref.dense_forward(x, w, b, act, y_ref, scale)
    cpu.dense_forward(x, w, b, act, y, scale)
    assert_close(y, y_ref, dtype)
    if scale != 1.0:
        return
    dy = randn(rng, (n, nout), dtype)
    grads = {}
    for be in (ref, cpu):
        dw, db, dx = (np.full_like(a, np.nan) for a in (w, b, x))
        be.dense_backward(x, w, y_ref, dy, act, dw, db, dx)
        grads[be.name] = (dw, db, dx)
    for got, want in zip(grads["cpu"], grads["reference"]):
        assert_close(got, want, dtype)
    dw, db = np.full_like(w, np.nan), np.full_like(b, np.nan)
    cpu.dense_backward(x, w, y_ref, dy, act, dw, db, None)
    assert_close(dw, grads["reference"][0], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_mask_and_apply(rng, dtype):
    out_ref, out = np.empty((7, 13), dtype), np.empty((7, 13), dtype)
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    ref.dropout_mask(r1, 0.6, out_ref)
    cpu.dropout_mask(r2, 0.6, out)
    np.testing.assert_array_equal(out, out_ref)  # the same draw from the same state
    x = randn(rng, (7, 13), dtype)
    got, want = np.empty_like(x), np.empty_like(x)
    ref.apply_mask(x, out, want)
    cpu.apply_mask(x, out, got)
    np.testing.assert_array_equal(got, want)
    cpu.apply_mask(x, out, x)  # in place, as the layers use it for dx
    np.testing.assert_array_equal(x, want)


# -- softmax + NLL ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 10), (3, 4), (10, 10), (37, 7)])
@pytest.mark.parametrize("label_dtype", [np.int64, np.int32])
def test_softmax_nll(rng, shape, dtype, label_dtype):
    n, k = shape
    z = (3 * randn(rng, shape, dtype)).astype(dtype)
    z[0, 0] = 80  # a large logit: the stable form must not overflow
    labels = rng.integers(0, k, n).astype(label_dtype)
    p_ref, p = np.empty(shape, dtype), np.full(shape, np.nan, dtype)
    c_ref, k_ref = ref.softmax_nll_forward(z, labels, p_ref)
    cost, correct = cpu.softmax_nll_forward(z, labels, p)
    assert isinstance(cost, float) and isinstance(correct, int)
    assert_close(p, p_ref, dtype)
    assert cost == pytest.approx(c_ref, rel=RTOL[dtype])
    assert correct == k_ref
    assert cpu.softmax_nll_forward(z, None, p) == (None, None)
    assert_close(p, p_ref, dtype)
    dz_ref, dz = np.empty(shape, dtype), np.full(shape, np.nan, dtype)
    ref.softmax_nll_backward(p_ref, labels, dz_ref)
    cpu.softmax_nll_backward(p_ref, labels, dz)
    assert_close(dz, dz_ref, dtype)


# -- momentum step --------------------------------------------------------------------

MOMENTUM_CASES = [  # (momentum, nesterov, decay)
    (0.9, False, 0.0), (0.9, True, 0.0), (0.9, False, 1e-3), (0.5, True, 2e-2),
    (0.0, False, 0.0), (0.0, False, 1e-3),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MOMENTUM_CASES, ids=lambda c: f"mu{c[0]}-nest{c[1]}-decay{c[2]}")
@pytest.mark.parametrize("size", [1, 37, 85_670, 200_003])
def test_momentum_step(rng, case, dtype, size):
    mu, nesterov, decay = case
    n_decay = int(size * 0.7)
    p0, g, v0 = (randn(rng, (size,), dtype) for _ in range(3))
    p_ref, p = p0.copy(), p0.copy()
    v_ref, v = (v0.copy(), v0.copy()) if mu else (None, None)
    for _ in range(2):
        ref.momentum_step(p_ref, g, v_ref, 0.05, mu, nesterov, decay, n_decay)
        cpu.momentum_step(p, g, v, 0.05, mu, nesterov, decay, n_decay)
    assert_close(p, p_ref, dtype)
    if mu:
        assert_close(v, v_ref, dtype)


def test_momentum_zero_leaves_velocity_alone(rng):
    p, g = randn(rng, (100,), np.float64), randn(rng, (100,), np.float64)
    v = randn(rng, (100,), np.float64)
    v0 = v.copy()
    cpu.momentum_step(p, g, v, 0.1, 0.0, False, 0.0, 50)
    np.testing.assert_array_equal(v, v0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_squares(rng, dtype):
    a = randn(rng, (10_001,), dtype)
    assert cpu.sum_squares(a) == pytest.approx(ref.sum_squares(a), rel=RTOL[dtype])


# -- argument checks: raise before any kernel runs ----------------------------------------

def _conv_args(rng, dtype=np.float64):
    x, w, b, out = conv_problem(rng, (2, 3, 9, 8, 4, 3, 3, (2, 2)), dtype)
    return x, w, b, np.zeros(out, dtype) + 7, np.zeros(out, np.int32)


def test_conv_forward_rejects_bad_arguments(rng):
    x, w, b, y, am = _conv_args(rng)
    cases = [
        (TypeError, (x.astype(np.float32), w, b, (2, 2), "relu", y, am)),      # dtype mix
        (TypeError, (x.astype(np.int64), w, b, (2, 2), "relu", y, am)),        # not float
        (TypeError, (x.tolist(), w, b, (2, 2), "relu", y, am)),                # not an array
        (TypeError, (x, w, b, (2, 2), "relu", y, am.astype(np.int64))),        # argmax dtype
        (ValueError, (x[:, :, :, ::2], w[:, :, :, :1], b, (2, 2), "relu", y, am)),  # strided
        (ValueError, (np.asfortranarray(x), w, b, (2, 2), "relu", y, am)),     # not C order
        (ValueError, (x, w, b, (2, 2), "relu", y[:1], am)),                    # y shape
        (ValueError, (x, w[:, :2], b, (2, 2), "relu", y, am)),                 # channel mismatch
        (ValueError, (x, w, b[:2], (2, 2), "relu", y, am)),                    # bias shape
        (ValueError, (x, w, b, (0, 2), "relu", y, am)),                        # pool size
        (ValueError, (x, w, b, (2, 2), "softplus", y, am)),                    # activation
        (ValueError, (x[:, :, :2, :2].copy(), w, b, (2, 2), "relu", y, am)),   # filter > image
    ]
    for exc, args in cases:
        with pytest.raises(exc):
            cpu.conv_pool_forward(*args)
    assert (y == 7).all()  # nothing ran


def test_conv_backward_rejects_bad_arguments(rng):
    x, w, b, y, am = _conv_args(rng)
    dy, dw, db, dx = np.ones_like(y), np.zeros_like(w), np.zeros_like(b), np.zeros_like(x)
    with pytest.raises(ValueError):
        cpu.conv_pool_backward(x, w, y, am, dy[:1], (2, 2), "relu", dw, db, dx)
    with pytest.raises(ValueError):
        cpu.conv_pool_backward(x, w, y, am, dy, (2, 2), "relu", dw, db, dx[:, :, 1:])
    with pytest.raises(TypeError):
        cpu.conv_pool_backward(x, w, y, am, dy, (2, 2), "relu", dw.astype(np.float32), db, dx)
    with pytest.raises(ValueError):
        cpu.conv_pool_backward(x, w, y, am, dy, (2, 2), "relu", dw, db, np.zeros(x.shape, order="F"))
    assert not dw.any() and not dx.any()


@pytest.mark.parametrize("shape", [(3, 20, 12, 12, 40, 5, 5, (2, 2)), (3, 1, 12, 12, 4, 5, 5, (2, 2))],
                         ids=["direct-and-scattered", "im2col-gemm"])
def test_conv_kernels_refuse_short_workspaces(rng, shape):
    # the compiled kernels index the workspaces the backend hands them by raw pointer:
    # a row one element short must raise, not write past the end
    x, w, b, out = conv_problem(rng, shape, np.float32)
    n, c, h, wd, f, kh, kw, pool = shape
    y, am = np.empty(out, np.float32), np.empty(out, np.int32)

    def buffers(lengths, rows, short):
        """Workspaces of the given lengths (rows x length), entry ``short`` one shorter."""
        return [np.empty((r, ln - (i == short)) if r else ln - (i == short), np.float32)
                for i, (ln, r) in enumerate(zip(lengths, rows))]

    fwd = cpu._k.conv_forward_sizes(c, h, wd, f, kh, kw, *pool, 1)
    for i, name in enumerate(("scratch", "packed")):
        if fwd[i] > 1:
            with pytest.raises(ValueError, match=f"conv_pool_forward: {name} holds"):
                cpu._k.conv_pool_forward(x, w, b, *pool, 2, y, am, *buffers(fwd, (1, 0), i), 1, 1)
    cpu._k.conv_pool_forward(x, w, b, *pool, 2, y, am, *buffers(fwd, (1, 0), -1), 1, 1)
    bwd = cpu._k.conv_backward_sizes(c, h, wd, f, kh, kw, *pool, 1, 4)
    dy = randn(rng, out, np.float32)
    dw, db, dx = np.empty_like(w), np.empty_like(b), np.empty_like(x)
    for i, name in enumerate(("scratch", "partial", "packed")):
        if bwd[i] > 1:
            with pytest.raises(ValueError, match=f"conv_pool_backward: {name} holds"):
                cpu._k.conv_pool_backward(x, w, y, am, dy, *pool, 2, dw, db, dx,
                                          *buffers(bwd, (1, n, 0), i), 1, 1, 1)
    cpu._k.conv_pool_backward(x, w, y, am, dy, *pool, 2, dw, db, dx,
                              *buffers(bwd, (1, n, 0), -1), 1, 1, 1)


def test_dense_softmax_momentum_reject_bad_arguments(rng):
    x, w, b = randn(rng, (4, 6), np.float64), randn(rng, (6, 3), np.float64), randn(rng, (3,), np.float64)
    y = np.zeros((4, 3))
    with pytest.raises(ValueError):
        cpu.dense_forward(x, w[:5], b, "relu", y)
    with pytest.raises(TypeError):
        cpu.dense_forward(x, w.astype(np.float32), b, "relu", y)
    with pytest.raises(ValueError):
        cpu.dense_forward(x.T, w, b, "relu", y)
    with pytest.raises(ValueError):
        cpu.dense_backward(x, w, y, y[:2], "relu", np.zeros_like(w), np.zeros_like(b), None)
    probs, dz = np.zeros((4, 3)), np.zeros((4, 3))
    for bad in ([0, 1, 2, 3], [0, 1, -1, 2]):  # labels index memory: out of range must raise
        with pytest.raises(ValueError):
            cpu.softmax_nll_forward(y, np.array(bad), probs)
        with pytest.raises(ValueError):
            cpu.softmax_nll_backward(probs, np.array(bad), dz)
    with pytest.raises(TypeError):
        cpu.softmax_nll_forward(y, np.array([0.0, 1, 2, 0]), probs)
    with pytest.raises(ValueError):
        cpu.softmax_nll_forward(y, np.array([0, 1, 2]), probs)
    assert not probs.any() and not dz.any()
    p, g = np.ones(10), np.ones(10)
    with pytest.raises(ValueError):
        cpu.momentum_step(p, g, None, 0.1, 0.9, False, 0.0, 5)        # velocity missing
    with pytest.raises(ValueError):
        cpu.momentum_step(p, g[:5], np.zeros(10), 0.1, 0.9, False, 0.0, 5)
    with pytest.raises(TypeError):
        cpu.momentum_step(p, g.astype(np.float32), np.zeros(10), 0.1, 0.9, False, 0.0, 5)
    with pytest.raises(ValueError):
        cpu.momentum_step(p, g, np.zeros(10), 0.1, 0.9, False, 0.0, 11)  # n_decay too big
    with pytest.raises(ValueError):
        cpu.momentum_step(np.ones(20)[::2], g, np.zeros(10), 0.1, 0.9, False, 0.0, 5)
    assert (p == 1).all()


def test_thread_setting_validation(threads):
    with pytest.raises(ValueError):
        cpu.set_num_threads(0)
    with pytest.raises(TypeError):
        cpu.set_num_threads("two")
    with pytest.raises(ValueError):
        cpu.set_num_threads(2**31)  # would overflow the kernels' C int
    cpu.set_num_threads(3)
    assert cpu.get_num_threads() == 3


# -- threads ------------------------------------------------------------------------------

def _run_all(rng_seed, dtype):
    """One pass through every parallel kernel on fixed inputs; returns the outputs."""
    rng = np.random.default_rng(rng_seed)
    x, w, b, out = conv_problem(rng, (17, 20, 12, 12, 40, 5, 5, (2, 2)), dtype)
    y, am = np.empty(out, dtype), np.empty(out, np.int32)
    cpu.conv_pool_forward(x, w, b, (2, 2), "relu", y, am)
    dy = randn(rng, out, dtype)
    dw, db, dx = np.empty_like(w), np.empty_like(b), np.empty_like(x)
    cpu.conv_pool_backward(x, w, y, am, dy, (2, 2), "relu", dw, db, dx)
    xd, wd_, bd = randn(rng, (256, 640), dtype), randn(rng, (640, 100), dtype), randn(rng, (100,), dtype)
    yd = np.empty((256, 100), dtype)
    cpu.dense_forward(xd, wd_, bd, "relu", yd)
    dwd, dbd, dxd = np.empty_like(wd_), np.empty_like(bd), np.empty_like(xd)
    cpu.dense_backward(xd, wd_, yd, randn(rng, yd.shape, dtype), "relu", dwd, dbd, dxd)
    p, g, v = (randn(rng, (300_001,), dtype) for _ in range(3))
    cpu.momentum_step(p, g, v, 0.01, 0.9, True, 1e-3, 200_000)
    return [y, am, dw, db, dx, yd, dwd, dbd, dxd, p, v, np.array(cpu.sum_squares(p))]


@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_count_independence(threads, dtype):
    """Every kernel cuts its work into slices fixed by the shapes, so the automatic thread
    count may change between two calls without changing a single bit."""
    cpu.set_num_threads(2)
    two = _run_all(1, dtype)
    for threads_ in (2, 1, 3):  # the same count again; one; more threads than cores
        cpu.set_num_threads(threads_)
        other = _run_all(1, dtype)
        for a, b in zip(other, two):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cores, other, expected", [
    (2, 0.0, 2), (2, 0.39, 2), (2, 0.41, 1), (2, 1.0, 1), (2, 1.5, 1), (2, 7.0, 1),
    (1, 0.0, 1), (1, 3.0, 1), (16, 3.2, 13), (16, 0.3, 16), (16, 2.4, 14)])
def test_threads_for_load(cores, other, expected):
    assert cpu.threads_for_load(cores, other) == expected


def test_automatic_threads_follow_the_measured_load(threads, monkeypatch):
    """The automatic count: busy CPU time of our cores minus our own CPU time, per second."""
    cpu.set_num_threads(None)
    assert cpu.thread_setting() is None
    cores = len(cpu._CPUS)
    samples = iter([(100.0, 50.0, 10.0), (101.0, 50.0 + 1.2 + 0.8, 10.0 + 0.8),  # others: 1.2
                    (102.0, 52.0 + 0.8, 10.8 + 0.8)])                            # others: 0.0
    monkeypatch.setattr(cpu, "_sample", lambda: next(samples))
    monkeypatch.setattr(cpu, "_last_sample", (0.0, None, 0.0))
    cpu._update_auto_threads()  # no previous /proc/stat reading: nothing to measure yet
    assert cpu._last_sample == (100.0, 50.0, 10.0)
    cpu._update_auto_threads()
    assert cpu._other_load == pytest.approx(1.2)
    assert cpu._auto_threads == cpu.threads_for_load(cores, 1.2)
    cpu._update_auto_threads()
    assert cpu._other_load == pytest.approx(0.0)
    assert cpu._auto_threads == cores
    cpu.set_num_threads(3)  # a fixed count ignores the load
    assert cpu.get_num_threads() == 3


@pytest.mark.skipif(len(cpu._CPUS) < 2 or not os.path.exists("/proc/stat"),
                    reason="needs Linux and at least 2 cores")
def test_automatic_threads_give_up_a_core_to_a_busy_process(threads):
    """Real measurement: another process spinning on one core costs us a thread."""
    cpu.set_num_threads(None)
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\n"
                             "while time.time() - t < 3: pass"])
    try:
        time.sleep(0.3)
        cpu.get_num_threads()  # starts a fresh measurement window
        time.sleep(cpu.LOAD_INTERVAL + 0.5)
        assert cpu.get_num_threads() <= len(cpu._CPUS) - 1, cpu.thread_policy()
    finally:
        busy.kill()
        busy.wait()


def test_thread_count_from_environment():
    """FASTMOM_NUM_THREADS fixes the count; 'auto' or unset is automatic; junk warns."""
    code = "from fastmom.backends import cpu; print(cpu.thread_setting())"
    for value, expected in (("3", "3"), ("auto", "None"), ("", "None"), ("zero", "None")):
        env = dict(os.environ, FASTMOM_NUM_THREADS=value,
                   PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(
                       os.path.abspath(cpu.__file__)))))
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
        assert res.stdout.strip() == expected
        assert ("must be an int" in res.stderr) == (value == "zero")


# -- training -------------------------------------------------------------------------

@pytest.mark.slow  # about a minute on 2 idle cores, mostly the NumPy reference
def test_training_matches_reference(sample):
    """network3's two-conv ReLU net, momentum 0.9, eta 0.01, lmbda 0.1, batch 10, 3 epochs.

    float64: a ReLU net's trajectory is chaotic, and float32 rounding differences between
    two correct backends grow to a few points of validation accuracy within 3 epochs,
    while in float64 both backends should follow the same path.
    """
    from fastmom import Network
    from fastmom.models import conv_layers
    training, validation, _ = sample
    acc = {}
    for device in ("reference", "cpu"):
        net = Network(conv_layers(10), 10, device=device, seed=1234, dtype=np.float64)
        hist = net.SGD(training, 3, 10, 0.01, validation, None, lmbda=0.1, momentum=0.9)
        acc[device] = hist[-1]["validation_accuracy"]
    assert acc["cpu"] > 0.8  # it learned
    assert abs(acc["cpu"] - acc["reference"]) <= 0.01, acc


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_mask_is_the_reference_draw(dtype):
    # the cpu backend draws into a cached buffer: same stream, same masks, same RNG state
    a, b = np.empty((7, 13), dtype), np.empty((7, 13), dtype)
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(3):
        cpu.dropout_mask(r1, 0.6, a)
        ref.dropout_mask(r2, 0.6, b)
        np.testing.assert_array_equal(a, b)
        assert 0 < a.sum() < a.size
    assert r1.bit_generator.state == r2.bit_generator.state
