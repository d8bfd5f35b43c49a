"""The ``cpu`` backend's momentum step (kernels/cpu/momentum.h) at every instruction-set
level this CPU runs, against the reference, on fresh random inputs.

The loop is compiled once per level (isa.h), so each level's code is a different
program: each is run here (``set_isa``), not only the one dispatch picks. Sizes are odd
and straddle the kernel's 2,048-element slices and the vector widths (4 to 16 lanes),
and the weight-decay boundary ``n_decay`` falls anywhere, so every head, tail and
boundary case of the vector loops is exercised. The inputs are new on every run; a
failure prints the seed that reproduces it.
"""
import numpy as np
import pytest

from backend_cases import DTYPES, assert_close
from test_isa import level  # noqa: F401 (the fixture that restores the dispatched level)
from fastmom.backends import reference as ref

cpu = pytest.importorskip("fastmom.backends.cpu")
if cpu.is_available() is not True:
    pytest.skip(f"cpu backend not built: {cpu.is_available()}", allow_module_level=True)

#: (momentum, nesterov, decay): plain SGD, classical and Nesterov, with and without decay
RULES = [(0.0, False, 0.0), (0.0, False, 3e-3), (0.9, False, 0.0), (0.9, False, 1e-3),
         (0.8, True, 0.0), (0.5, True, 2e-2)]
#: odd sizes around the vector widths, the 2,048-element slices and network3's list
SIZES = [1, 3, 15, 17, 31, 33, 2047, 2049, 4097 + 6, 85_670 + 1]


def _problem(seed, n, dtype):
    rng = np.random.default_rng(seed)
    offset = int(rng.integers(0, 4))  # views off 16-byte alignment too
    p, g, v = (rng.standard_normal(n + offset).astype(dtype)[offset:] for _ in range(3))
    n_decay = int(rng.integers(0, n + 1))
    return p, g, v, n_decay


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"mu{r[0]}-nest{r[1]}-decay{r[2]}")
def test_every_level_matches_the_reference(level, rule, dtype):
    mu, nesterov, decay = rule
    seed = np.random.SeedSequence().entropy
    for name in cpu.supported_isas():
        cpu.set_isa(name)
        for n in SIZES:
            p, g, v, n_decay = _problem(seed, n, dtype)
            pr, vr = p.copy(), v.copy() if mu else None
            v_before = v.copy()
            for _ in range(2):  # the second step reads a velocity the first wrote
                ref.momentum_step(pr, g, vr, 0.05, mu, nesterov, decay, n_decay)
                cpu.momentum_step(p, g, v if mu else None, 0.05, mu, nesterov, decay, n_decay)
            what = f"level {name}, n {n}, n_decay {n_decay}, seed {seed}"
            assert_close(p, pr, dtype, "p: " + what)
            if mu:
                assert_close(v, vr, dtype, "v: " + what)
            else:
                np.testing.assert_array_equal(v, v_before, err_msg="v touched: " + what)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bits_do_not_depend_on_threads(level, dtype):
    """Element-wise, so any slicing gives the same bits; checked at each level for the
    thread counts the kernel may be called with."""
    seed = np.random.SeedSequence().entropy
    for name in cpu.supported_isas():
        cpu.set_isa(name)
        p0, g, v0, _ = _problem(seed, 85_670 + 1, dtype)
        outs = []
        for nt in (1, 2, 3):
            p, v = p0.copy(), v0.copy()
            cpu._k.momentum_step(p, g, v, 0.05, 0.9, True, 1e-3, 40_001, nt)
            outs.append((p, v))
        for p, v in outs[1:]:
            np.testing.assert_array_equal(p, outs[0][0], err_msg=f"level {name}, seed {seed}")
            np.testing.assert_array_equal(v, outs[0][1], err_msg=f"level {name}, seed {seed}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_decay_term_past_n_decay(level, dtype):
    """Past ``n_decay`` the gradient is g alone, as in the reference: an infinite
    parameter there stays infinite (a 0 * p term would make it NaN); before it, the
    decay term makes it NaN in both."""
    for name in cpu.supported_isas():
        cpu.set_isa(name)
        n = 301
        p, g, v = np.ones(n, dtype), np.full(n, 0.5, dtype), np.zeros(n, dtype)
        p[[7, 250]] = np.inf
        pr, vr = p.copy(), v.copy()
        cpu.momentum_step(p, g, v, 0.1, 0.9, False, 1e-3, 200)
        ref.momentum_step(pr, g, vr, 0.1, 0.9, False, 1e-3, 200)
        np.testing.assert_array_equal(p, pr, err_msg=name)  # NaN where NaN
        assert np.isposinf(p[250]) and np.isnan(p[7]), name
