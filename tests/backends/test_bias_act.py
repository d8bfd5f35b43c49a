"""The ``cpu`` backend's activations (kernels/cpu/bias_act.h) at every instruction-set
level this CPU runs, against the exact functions.

The sigmoid and tanh there are the kernel's own vector exponential, not libm's, so
they are measured here in ulps against the functions computed in extended precision
(``np.longdouble``), on fresh random arguments at every scale from 1e-8 to 300 and on the
edges: signed zeros, +-inf, NaN, the arguments where exp underflows to the denormals
and to zero. The parity tests compare whole layers with the reference to their
tolerance; this bound is much tighter, so a wrong coefficient or reduction step fails
here first. The same values go through both bias layouts (a dense layer's columns and
a conv layer's filter planes), which must give the same bits: the last partial vector
of a row is computed like the others. A failure prints the seed that reproduces it.
"""
import numpy as np
import pytest

from backend_cases import DTYPES
from test_isa import level  # noqa: F401 (the fixture that restores the dispatched level)
from fastmom import activations

cpu = pytest.importorskip("fastmom.backends.cpu")
if cpu.is_available() is not True:
    pytest.skip(f"cpu backend not built: {cpu.is_available()}", allow_module_level=True)

#: the largest error allowed, in units in the last place of the exact result (the
#: kernel measured 2.5 at most; libm's are within 1)
MAX_ULP = 3.0
SCALES = (1e-8, 1e-3, 0.3, 1.0, 3.0, 10.0, 40.0, 300.0)


def _edges(dtype):
    fi = np.finfo(dtype)
    lowest_exp = -104.0 if dtype == np.float32 else -746.0  # bias_act_impl.h's FM_BA_LO
    v = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, lowest_exp, lowest_exp + 0.5,
         lowest_exp - 1, -np.log(fi.max), np.log(fi.max), -np.log(fi.tiny), np.log(fi.tiny),
         float(fi.smallest_subnormal), -float(fi.smallest_subnormal), float(fi.max), -float(fi.max)]
    return np.array(v, dtype=dtype)


def _arguments(seed, dtype, n=4001):
    """Random arguments at every scale (an odd count: partial vectors at every width),
    then the edges."""
    rng = np.random.default_rng(seed)
    z = np.concatenate([rng.standard_normal(n) * s for s in SCALES]).astype(dtype)
    return np.concatenate([z, _edges(dtype)])


def _exact(name, z):
    z = z.astype(np.longdouble)
    if name == "tanh":
        return np.tanh(z)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _through_dense(z, act):
    """``act(z)`` as a dense layer's epilogue: zero inputs and weights, bias ``z``."""
    dt = z.dtype
    x, w, y = np.zeros((1, 1), dt), np.zeros((1, z.size), dt), np.empty((1, z.size), dt)
    cpu.dense_forward(x, w, z, act, y)
    return y[0]


def _through_conv(z, act):
    """``act(z)`` as a conv layer's epilogue: zero filters, filter ``i``'s bias ``z[i]``,
    each on a 3x3 plane (a partial vector at every width)."""
    dt = z.dtype
    f = z.size
    x = np.random.default_rng(0).standard_normal((1, 1, 5, 5)).astype(dt)
    w = np.zeros((f, 1, 3, 3), dt)
    y = np.empty((1, f, 3, 3), dt)
    argmax = np.empty((1, f, 3, 3), np.int32)
    cpu.conv_pool_forward(x, w, z, (1, 1), act, y, argmax)
    return y[0]


def _ulps(got, exact, dtype):
    """|got - exact| in units in the last place of ``exact`` rounded to ``dtype``."""
    ulp = np.spacing(np.abs(exact.astype(dtype))).astype(np.longdouble)
    ulp = np.maximum(ulp, np.longdouble(np.finfo(dtype).smallest_subnormal))
    return np.abs(got.astype(np.longdouble) - exact) / ulp


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
def test_within_ulps_of_the_exact_function(level, act, dtype):
    seed = np.random.SeedSequence().entropy
    z = _arguments(seed, dtype)
    exact = _exact(act, z)
    for name in cpu.supported_isas():
        cpu.set_isa(name)
        got = _through_dense(z, act)
        what = f"{act}, level {name}, seed {seed}"
        np.testing.assert_array_equal(np.isnan(got), np.isnan(z), err_msg="NaN: " + what)
        ok = ~np.isnan(z)
        err = _ulps(got[ok], exact[ok], dtype)
        worst = int(np.argmax(err))
        assert err[worst] <= MAX_ULP, (f"{what}: {float(err[worst]):.2f} ulp at z = "
                                       f"{z[ok][worst]!r}: {got[ok][worst]!r}, exact "
                                       f"{float(exact[ok][worst])!r}")
        # the limits exactly, and the sign of tanh
        lim = {np.inf: 1.0, -np.inf: 0.0 if act == "sigmoid" else -1.0}
        for v, want in lim.items():
            assert got[z == v][0] == want, f"{what}: act({v}) = {got[z == v][0]}"
        if act == "tanh":  # of the argument the kernel sees: 0 + (-0) is +0
            assert np.array_equal(np.signbit(got[ok]), np.signbit(z[ok] + dtype(0))), what


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", sorted(activations.CODES))
def test_both_bias_layouts_give_the_same_bits(level, act, dtype):
    """A dense layer's per-column bias and a conv layer's per-plane bias: the same
    values through the same vector code, whatever their lane or row position."""
    seed = np.random.SeedSequence().entropy
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal(203) * rng.choice([0.01, 1.0, 20.0], 203)).astype(dtype)
    for name in cpu.supported_isas():
        cpu.set_isa(name)
        dense = _through_dense(z, act)
        planes = _through_conv(z, act)
        for i in range(planes.shape[1]):
            for j in range(planes.shape[2]):
                np.testing.assert_array_equal(planes[:, i, j], dense,
                                              err_msg=f"{act}, level {name}, seed {seed}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_and_linear_keep_nan_like_the_reference(level, dtype):
    """np.maximum(NaN, 0) is NaN: a diverged pre-activation must not turn into zeros."""
    z = np.array([np.nan, -np.inf, np.inf, -2.0, 3.0, -0.5], dtype)
    for name in cpu.supported_isas():
        cpu.set_isa(name)
        for act in ("relu", "linear"):
            got = _through_dense(z, act)
            np.testing.assert_array_equal(got, activations.apply(act, z), err_msg=f"{act} {name}")
