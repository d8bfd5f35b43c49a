"""The cuda backend's dense layers in their two regimes (``fastmom/backends/cuda_dense.py``,
``kernels/cuda/dense.cu``) under the CPU emulation.

At most ``DENSE_SMALL_ROWS`` rows the products are our kernels (fm_dense_small,
fm_dense_wgrad_small), above it cuBLAS (NumPy under emulation). The shapes steer the
host code onto each path (each row instance R = 8, 16, 32; one reduction slice with the
epilogue fused, several slices added by fm_bias_act; the transposed weights of the
input gradient), and each test asserts the regime and path it took from the counters
and the plans, so that a change of the rule or the plans cannot make it vacuous.
Fresh random inputs with odd sizes; float64 to 1e-10 and float32 to 1e-4.
"""
import numpy as np
import pytest

from backend_cases import ACTS, assert_close, randn, rng_for
from fastmom.backends import cuda_dense as cd
from fastmom.backends import cuda_emulation as ce
from fastmom.backends import reference as ref

pytestmark = pytest.mark.skipif(ce.compiler() is None, reason="no C++ compiler for the CUDA emulation")

N_SM = 2  # few SMs: the plans split even these small reductions into several slices

# (rows, inputs, outputs): rows 1, 7 (R = 8), 13 (R = 16) and 32 (R = 32, the threshold)
SMALL = [(1, 37, 9), (7, 67, 33), (13, 29, 45), (32, 45, 70)]


@pytest.fixture(scope="module")
def emu():
    return ce.kernels(n_sm=N_SM)


def _problem(shape, act, dtype):
    n, nin, nout = shape
    rng = rng_for("cuda-dense", shape, act, np.dtype(dtype).name)
    x, w, b = randn(rng, (n, nin), dtype), randn(rng, (nin, nout), dtype), randn(rng, (nout,), dtype)
    return x, w, b, randn(rng, (n, nout), dtype)


def _launches(emu, fn, *args):
    """``(launches, cuBLAS calls)`` that ``fn(*args)`` made."""
    before = dict(emu.counts)
    fn(*args)
    return emu.counts["launches"] - before["launches"], emu.counts["cublas"] - before["cublas"]


def _product_launches(rows, nred, nout, itemsize):
    p = cd.small_product_plan(N_SM, rows, nred, nout, itemsize)
    assert p["r"] == min(r for r in cd.DENSE_ROW_INSTANCES if rows <= r)
    return 1 + (p["nsplit"] > 1)  # fm_dense_small, + fm_bias_act over its slices


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", SMALL, ids=lambda s: "x".join(map(str, s)))
def test_small_batch_dense_matches_reference_without_cublas(emu, shape, act, dtype):
    n, nin, nout = shape
    assert cd.dense_regime(n) == "small"
    x, w, b, dy = _problem(shape, act, dtype)
    isz = np.dtype(dtype).itemsize
    for scale in (0.5, 1.0):
        want = np.empty((n, nout), dtype)
        ref.dense_forward(x, w, b, act, want, scale)
        y = np.full((n, nout), np.nan, dtype)
        assert _launches(emu, emu.dense_forward, x, w, b, act, y, scale) == (
            _product_launches(n, nin, nout, isz), 0)
        assert_close(y, want, dtype, f"y, scale {scale}")
    want = [np.empty_like(w), np.empty_like(b), np.empty_like(x)]
    ref.dense_backward(x, w, y, dy, act, *want)
    got = [np.full_like(a, np.nan) for a in want]
    # fm_dense_wgrad_small (dz, db, dw), then dx = dz @ w.T by fm_dense_small
    assert _launches(emu, emu.dense_backward, x, w, y, dy, act, *got) == (
        1 + _product_launches(n, nout, nin, isz), 0)
    for g, e, what in zip(got, want, ("dw", "db", "dx")):
        assert_close(g, e, dtype, what)
    got = [np.full_like(a, np.nan) for a in want[:2]]
    assert _launches(emu, emu.dense_backward, x, w, y, dy, act, *got, None) == (1, 0)
    for g, e, what in zip(got, want, ("dw without dx", "db without dx")):
        assert_close(g, e, dtype, what)


def test_small_shapes_cover_every_path():
    """The table above reaches every instance, and both the fused epilogue (one slice)
    and the slices added by fm_bias_act, in the forward and in the input gradient."""
    plans = [cd.small_product_plan(N_SM, n, a, b, 4) for n, nin, nout in SMALL for a, b in ((nin, nout), (nout, nin))]
    assert {p["r"] for p in plans} == set(cd.DENSE_ROW_INSTANCES)
    assert {p["nsplit"] > 1 for p in plans} == {True, False}
    assert max(cd.small_wgrad_plan(N_SM, n, nin, nout, 4)["grid"][1] for n, nin, nout in SMALL) > 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", ["sigmoid", "relu"])
def test_above_the_threshold_dense_uses_cublas(emu, act, dtype):
    """One row over DENSE_SMALL_ROWS: cuBLAS (NumPy here) and the epilogue kernels, as before."""
    shape = (cd.DENSE_SMALL_ROWS + 1, 19, 11)
    n, nin, nout = shape
    assert cd.dense_regime(n) == "cublas"
    x, w, b, dy = _problem(shape, act, dtype)
    want = np.empty((n, nout), dtype)
    ref.dense_forward(x, w, b, act, want)
    y = np.full((n, nout), np.nan, dtype)
    assert _launches(emu, emu.dense_forward, x, w, b, act, y) == (1, 1)  # product + fm_bias_act
    assert_close(y, want, dtype, "y")
    want = [np.empty_like(w), np.empty_like(b), np.empty_like(x)]
    ref.dense_backward(x, w, y, dy, act, *want)
    got = [np.full_like(a, np.nan) for a in want]
    assert _launches(emu, emu.dense_backward, x, w, y, dy, act, *got) == (1, 2)  # fm_dense_dz_db, dW, dX
    for g, e, what in zip(got, want, ("dw", "db", "dx")):
        assert_close(g, e, dtype, what)
