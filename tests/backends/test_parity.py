"""Every compiled backend against the NumPy reference, primitive by primitive.

Fresh random inputs (never zeros) on the shared shape tables of ``backend_cases``:
odd channel counts, non-square images, ragged pooling borders, poolsize (1, 1), batch
1 and every activation; float64 to 1e-10 and float32 to 1e-4 relative to the largest
reference value. The ``compiled`` fixture runs each test on the cpu backend, the CUDA
kernels under CPU emulation and, where there is one, a real GPU.
"""
import numpy as np
import pytest

from backend_cases import (ACTS, CONV_SHAPES, DENSE_SHAPES, DTYPES, MOMENTUM_CASES, MOMENTUM_SIZES,
                           RTOL, SOFTMAX_SHAPES, assert_close, conv_fmas, conv_shape_id, randn, rng_for)
from fastmom.backends import reference as ref


def conv_problem(rng, shape, dtype):
    n, c, h, w, f, kh, kw, pool = shape
    out = (n, f, (h - kh + 1) // pool[0], (w - kw + 1) // pool[1])
    return (randn(rng, (n, c, h, w), dtype), randn(rng, (f, c, kh, kw), dtype),
            randn(rng, (f,), dtype), out)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=conv_shape_id)
def test_conv_pool_forward_backward(compiled, shape, act, dtype):
    be = compiled
    be.skip_if_too_big(conv_fmas(shape))
    rng = rng_for("conv", shape, act, np.dtype(dtype).name)
    x, w, b, out = conv_problem(rng, shape, dtype)
    pool = shape[7]
    y_ref, am_ref = np.empty(out, dtype), np.empty(out, np.int32)
    ref.conv_pool_forward(x, w, b, pool, act, y_ref, am_ref)
    y, am = be.dev(np.full(out, np.nan, dtype)), be.dev(np.full(out, -1, np.int32))
    be.conv_pool_forward(be.dev(x), be.dev(w), be.dev(b), pool, act, y, am)
    y, am = be.host(y), be.host(am)
    assert_close(y, y_ref, dtype, "y")
    if dtype == np.float64:
        # random data: no near-ties at double precision, so the positions agree exactly
        np.testing.assert_array_equal(am, am_ref)
    else:
        # float32 rounding may flip a near-tie; the values (checked above) still agree
        assert np.mean(am != am_ref) < 0.01
    assert am.min() >= 0 and am.max() < pool[0] * pool[1]
    # inference (argmax=None) records nothing and computes the very same maxima
    y_inf = be.dev(np.full(out, np.nan, dtype))
    be.conv_pool_forward(be.dev(x), be.dev(w), be.dev(b), pool, act, y_inf, None)
    np.testing.assert_array_equal(be.host(y_inf), y)
    y_inf = np.full(out, np.nan, dtype)
    ref.conv_pool_forward(x, w, b, pool, act, y_inf, None)
    np.testing.assert_array_equal(y_inf, y_ref)

    # backward from the reference's forward state, so a flipped near-tie cannot matter
    dy = randn(rng, out, dtype)
    want = [np.empty_like(w), np.empty_like(b), np.empty_like(x)]
    ref.conv_pool_backward(x, w, y_ref, am_ref, dy, pool, act, *want)
    args = [be.dev(a) for a in (x, w, y_ref, am_ref, dy)]
    got = [be.dev(np.full_like(a, np.nan)) for a in (w, b, x)]
    be.conv_pool_backward(*args, pool, act, *got)
    for g, exp, what in zip(got, want, ("dw", "db", "dx")):
        assert_close(be.host(g), exp, dtype, what)
    # a first layer: no input gradient, the same dw and db
    got = [be.dev(np.full_like(a, np.nan)) for a in (w, b)]
    be.conv_pool_backward(*args, pool, act, *got, None)
    for g, exp, what in zip(got, want, ("dw", "db")):
        assert_close(be.host(g), exp, dtype, f"first layer {what}")


def test_conv_leading_slice_of_larger_workspace(compiled):
    """A layer passes ``buf[:n]`` views for a batch below mini_batch_size."""
    be = compiled
    x, w, b, out = conv_problem(rng_for("slice"), (10, 3, 10, 9, 4, 3, 3, (2, 2)), np.float64)
    ybuf, abuf = be.dev(np.empty(out)), be.dev(np.empty(out, np.int32))
    for n in (10, 3, 1):
        y_ref, am_ref = np.empty((n,) + out[1:]), np.empty((n,) + out[1:], np.int32)
        ref.conv_pool_forward(x[:n], w, b, (2, 2), "relu", y_ref, am_ref)
        be.conv_pool_forward(be.dev(x[:n]), be.dev(w), be.dev(b), (2, 2), "relu", ybuf[:n], abuf[:n])
        assert_close(be.host(ybuf[:n]), y_ref, np.float64)
        np.testing.assert_array_equal(be.host(abuf[:n]), am_ref)


# -- max-pool ties: the first position of a window wins, on every backend --------------------

def _forward_on(be, x, w, pool, dtype):
    f = w.shape[0]
    n, _, h, wd = x.shape
    out = (n, f, (h - w.shape[2] + 1) // pool[0], (wd - w.shape[3] + 1) // pool[1])
    y, am = be.dev(np.empty(out, dtype)), be.dev(np.empty(out, np.int32))
    be.conv_pool_forward(be.dev(x.astype(dtype)), be.dev(w.astype(dtype)), be.dev(np.zeros(f, dtype)),
                         pool, "linear", y, am)
    return be.host(y), be.host(am)


@pytest.mark.parametrize("dtype", DTYPES)
def test_first_max_wins_on_exact_ties(backend, dtype):
    # integer-valued input: every window ties, except the raised 2x2 block's own window
    x = np.ones((2, 1, 6, 6))
    x[0, 0, 2:4, 2:4] = 3.0
    y, am = _forward_on(backend, x, np.ones((1, 1, 1, 1)), (2, 2), dtype)
    assert (am == 0).all()
    want = np.ones((2, 1, 3, 3))
    want[0, 0, 1, 1] = 3.0
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, pool", [
    # 20 windows per pooled row: whole vectors of windows (8 floats, 4 doubles) and a tail
    # on the cpu's im2col + GEMM path (4 taps); sums of 0/1 pixels tie in most windows
    ((2, 1, 41, 41), (3, 1, 2, 2), (2, 2)),
    # 64 taps of ones (the cpu direct kernel's threshold) on small integers
    ((3, 4, 9, 11), (5, 4, 4, 4), (2, 2)),
], ids=["vector-rows", "direct-path"])
def test_ties_resolved_as_the_reference(compiled, dtype, x_shape, w_shape, pool):
    x = rng_for("ties", x_shape).integers(0, 2, x_shape).astype(np.float64)
    w = np.ones(w_shape)
    y, am = _forward_on(compiled, x, w, pool, dtype)
    y_ref, am_ref = _forward_on(_Ref, x, w, pool, dtype)
    np.testing.assert_array_equal(am, am_ref)
    np.testing.assert_array_equal(y, y_ref)


class _Ref:  # the reference seen through the same helper
    dev = host = staticmethod(lambda a: a)
    conv_pool_forward = staticmethod(ref.conv_pool_forward)


# -- dense ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_dense(compiled, shape, act, dtype, scale):
    be = compiled
    n, nin, nout = shape
    be.skip_if_too_big(n * nin * nout)
    rng = rng_for("dense", shape, act, np.dtype(dtype).name, scale)
    x, w, b = randn(rng, (n, nin), dtype), randn(rng, (nin, nout), dtype), randn(rng, (nout,), dtype)
    y_ref = np.empty((n, nout), dtype)
    ref.dense_forward(x, w, b, act, y_ref, scale)
    y = be.dev(np.full((n, nout), np.nan, dtype))
    be.dense_forward(be.dev(x), be.dev(w), be.dev(b), act, y, scale)
    assert_close(be.host(y), y_ref, dtype, "y")
    if scale != 1.0:
        return
    dy = randn(rng, (n, nout), dtype)
    want = [np.empty_like(w), np.empty_like(b), np.empty_like(x)]
    ref.dense_backward(x, w, y_ref, dy, act, *want)
    args = [be.dev(a) for a in (x, w, y_ref, dy)]
    got = [be.dev(np.full_like(a, np.nan)) for a in (w, b, x)]
    be.dense_backward(*args[:3], args[3], act, *got)
    for g, exp, what in zip(got, want, ("dw", "db", "dx")):
        assert_close(be.host(g), exp, dtype, what)
    got = [be.dev(np.full_like(a, np.nan)) for a in (w, b)]
    be.dense_backward(*args[:3], args[3], act, *got, None)
    assert_close(be.host(got[0]), want[0], dtype, "dw without dx")


# -- dropout ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_mask_and_apply(compiled, dtype):
    be = compiled
    out = be.dev(np.full((37, 11), np.nan, dtype))
    be.dropout_mask(be.make_rng(3) if be.name == "gpu" else np.random.default_rng(3), 0.7, out)
    mask = be.host(out)
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert 0.5 < mask.mean() < 0.9  # 407 draws of keep 0.7
    x = randn(rng_for("mask", np.dtype(dtype).name), (37, 11), dtype)
    got = be.dev(np.empty_like(x))
    be.apply_mask(be.dev(x), out, got)
    np.testing.assert_array_equal(be.host(got), x * mask)
    xd = be.dev(x.copy())
    be.apply_mask(xd, out, xd)  # in place, as the layers use it for dx
    np.testing.assert_array_equal(be.host(xd), x * mask)


@pytest.mark.parametrize("dtype", DTYPES)
def test_host_dropout_mask_is_the_reference_draw(compiled, dtype):
    """On host generators the compiled backends draw exactly the reference's mask."""
    be = compiled
    if be.name != "cpu":
        pytest.skip(f"{be.name} draws its masks its own way (device generator or kernel)")
    want, got = np.empty((7, 13), dtype), be.dev(np.empty((7, 13), dtype))
    ref.dropout_mask(np.random.default_rng(5), 0.6, want)
    be.dropout_mask(np.random.default_rng(5), 0.6, got)
    np.testing.assert_array_equal(be.host(got), want)


# -- softmax + NLL --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("label_dtype", [np.int64, np.int32])
def test_softmax_nll(compiled, shape, dtype, label_dtype):
    be = compiled
    n, k = shape
    rng = rng_for("softmax", shape, np.dtype(dtype).name)
    z = (3 * randn(rng, shape, dtype)).astype(dtype)
    z[0, 0] = 80  # a large logit: the stable form must not overflow
    labels = rng.integers(0, k, n).astype(label_dtype)
    p_ref = np.empty(shape, dtype)
    c_ref, k_ref = ref.softmax_nll_forward(z, labels, p_ref)
    zd, ld, p = be.dev(z), be.dev(labels), be.dev(np.full(shape, np.nan, dtype))
    cost, correct = be.softmax_nll_forward(zd, ld, p)
    assert_close(be.host(p), p_ref, dtype, "probs")
    assert float(cost) == pytest.approx(c_ref, rel=RTOL[dtype])
    assert int(correct) == k_ref
    assert be.softmax_nll_forward(zd, None, p) == (None, None)
    assert_close(be.host(p), p_ref, dtype, "probs without labels")
    dz_ref, dz = np.empty(shape, dtype), be.dev(np.full(shape, np.nan, dtype))
    ref.softmax_nll_backward(p_ref, labels, dz_ref)
    be.softmax_nll_backward(be.dev(p_ref), ld, dz)
    assert_close(be.host(dz), dz_ref, dtype, "dz")


# -- momentum step ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MOMENTUM_CASES, ids=lambda c: f"mu{c[0]}-nest{c[1]}-decay{c[2]}")
@pytest.mark.parametrize("size", MOMENTUM_SIZES)
@pytest.mark.parametrize("offset", [0, 1, 3])
def test_momentum_step(compiled, case, dtype, size, offset):
    """Two steps over flat buffers; ``offset`` starts the views off 16-byte alignment."""
    be = compiled
    be.skip_if_too_big(size * 50)
    mu, nesterov, decay = case
    n_decay = int(size * 0.7)
    rng = rng_for("momentum", case, size, offset, np.dtype(dtype).name)
    p0, g, v0 = (randn(rng, (size + offset,), dtype)[offset:] for _ in range(3))
    p_ref, v_ref = p0.copy(), v0.copy() if mu else None
    p, v = be.dev(p0.copy()), be.dev(v0.copy()) if mu else None
    gd = be.dev(g)
    for _ in range(2):
        ref.momentum_step(p_ref, g, v_ref, 0.05, mu, nesterov, decay, n_decay)
        be.momentum_step(p, gd, v, 0.05, mu, nesterov, decay, n_decay)
    assert_close(be.host(p), p_ref, dtype, "p")
    if mu:
        assert_close(be.host(v), v_ref, dtype, "v")


def test_momentum_zero_leaves_velocity_alone(compiled):
    be = compiled
    rng = rng_for("mu0")
    p, g, v = (be.dev(randn(rng, (100,), np.float64)) for _ in range(3))
    v0 = be.host(v).copy()
    be.momentum_step(p, g, v, 0.1, 0.0, False, 0.0, 50)
    np.testing.assert_array_equal(be.host(v), v0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_squares(compiled, dtype):
    a = randn(rng_for("ss", np.dtype(dtype).name), (10_001,), dtype)
    assert compiled.sum_squares(compiled.dev(a)) == pytest.approx(ref.sum_squares(a), rel=RTOL[dtype])
