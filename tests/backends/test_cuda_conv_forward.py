"""The cuda backend's register-blocked conv + pool forward (``kernels/cuda/conv.cu``)
under the CPU emulation: every launch-plan path against the reference, both tie rules,
every activation, the lane use of network3's layers, the memory behaviour the
emulation counts, and shapes the plan must refuse before launching.

``test_parity.py`` runs the shared shape table on the emulation (``emulated-cuda``); the
shapes here are chosen to steer :meth:`~fastmom.backends.cuda.Kernels.fwd_plan` onto each
of its paths (the compiled 5x5/2x2 instance and the general one, one pass or several
over a window, several tiles with ragged ones, several channel stages, several filter
blocks with a partial filter group), and each test asserts that its path was taken, so
that a change of the plan cannot make it vacuous. Fresh random inputs with odd sizes;
float64 to 1e-10 and float32 to 1e-4; the argmax and tie masks exactly, on
integer-valued problems (exact sums: ties are ties in both precisions).
"""
import numpy as np
import pytest

from backend_cases import ACTS, assert_close, randn, rng_for
from fastmom.backends import cuda_emulation as ce
from fastmom.backends import reference as ref

pytestmark = pytest.mark.skipif(ce.compiler() is None, reason="no C++ compiler for the CUDA emulation")

# (N, C, H, W, F, KH, KW, pool, what the plan must show)
PATHS = [
    ((3, 3, 13, 12, 7, 5, 5, (2, 2)), "5x5 on 2x2"),         # the compiled instance; a partial filter group
    ((2, 2, 11, 13, 6, 3, 4, (3, 2)), "general"),            # 3x4 filter, 3x2 pool: 2 passes of 4 positions
    ((2, 3, 16, 15, 5, 2, 3, (3, 3)), "several passes"),     # 3x3 pool: 3 passes, the last with 1 position
    ((1, 2, 9, 9, 5, 3, 3, (1, 1)), "no pooling"),           # batch 1, 1x1 pool: one position of 4 used
    ((2, 2, 31, 79, 3, 5, 5, (2, 2)), "ragged tiles"),       # 13x37 windows: several tiles, ragged
    ((2, 61, 9, 10, 9, 3, 3, (2, 2)), "channel stages"),     # 61 channels: several stages
    ((2, 2, 20, 20, 150, 5, 5, (2, 2)), "filter blocks"),    # 38 filter groups: several blocks, a partial group
    ((3, 1, 28, 28, 20, 5, 5, (2, 2)), "network3 conv1"),    # the two layers network3 trains (test_parity
    ((2, 20, 12, 12, 40, 5, 5, (2, 2)), "network3 conv2"),   # skips them on the emulation: too many FMAs)
]


def _shape_plan(emu, shape, dtype):
    n, c, h, w, f, kh, kw, (ph, pw) = shape
    PH, PW = (h - kh + 1) // ph, (w - kw + 1) // pw
    return emu.fwd_plan(n, c, h, w, f, kh, kw, PH, PW, ph, pw, np.dtype(dtype).itemsize), PH, PW


def _lane_use(p, shape, PH, PW):
    """Share of the launched lanes' FMA slots that compute a wanted conv output."""
    n, c, _h, _w, f, kh, kw, (ph, pw) = shape
    return n * f * c * kh * kw * PH * PW * ph * pw / p["fma_slots"]


def _assert_path(what, shape, p, PH, PW):
    n, c, h, w, f, kh, kw, (ph, pw) = shape
    tiles_h, tiles_w = -(-PH // p["tph"]), -(-PW // p["tpw"])
    checks = {
        "5x5 on 2x2": p["k"] == (5, 2) and f % 4 != 0,
        "general": p["k"] == (0, 0) and ph * pw > 4,
        "several passes": p["k"] == (0, 0) and ph * pw > 8 and ph * pw % 4 != 0,
        "no pooling": p["k"] == (0, 0) and ph * pw == 1 and n == 1,
        "ragged tiles": p["grid"][0] > 1 and (PH % p["tph"] or PW % p["tpw"]) and tiles_h * tiles_w == p["grid"][0],
        "channel stages": p["cc"] < c,
        "filter blocks": p["grid"][1] > 1 and f % 4 != 0,
        "network3 conv1": p["k"] == (5, 2) and _lane_use(p, shape, PH, PW) >= 0.93,  # was 47% (16x16 tiles)
        "network3 conv2": p["k"] == (5, 2) and _lane_use(p, shape, PH, PW) == 1.0,
    }
    assert checks[what], (what, p)


def _problem(shape, dtype, seed, integer=False):
    n, c, h, w, f, kh, kw, _pool = shape
    rng = rng_for("conv-forward", shape, np.dtype(dtype).name, seed, integer)
    if integer:  # small integers: every sum exact, so ties are ties in both precisions and in any order
        return (rng.integers(0, 3, (n, c, h, w)).astype(dtype), rng.integers(-1, 2, (f, c, kh, kw)).astype(dtype),
                rng.integers(-2, 3, f).astype(dtype))
    return randn(rng, (n, c, h, w), dtype), randn(rng, (f, c, kh, kw), dtype), randn(rng, (f,), dtype)


def _forward(emu, shape, dtype, ties, act, x, w, b):
    n, c, h, wd, f, kh, kw, pool = shape
    out = (n, f, (h - kh + 1) // pool[0], (wd - kw + 1) // pool[1])
    want = np.empty(out, dtype), np.empty(out, np.int32)
    ref.conv_pool_forward(x, w, b, pool, act, *want, ties)
    got = np.full(out, np.nan, dtype), np.full(out, -7, np.int32)
    emu.conv_pool_forward(x, w, b, pool, act, *got, ties)
    return got, want


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ties", ["first", "all"])
@pytest.mark.parametrize("shape, what", PATHS, ids=[p[1].replace(" ", "-") for p in PATHS])
def test_every_plan_path_matches_the_reference(shape, what, ties, dtype):
    emu = ce.kernels(n_sm=2)
    p, PH, PW = _shape_plan(emu, shape, dtype)
    _assert_path(what, shape, p, PH, PW)
    (y, am), (y_ref, am_ref) = _forward(emu, shape, dtype, ties, "tanh", *_problem(shape, dtype, 0))
    assert_close(y, y_ref, dtype, "y")
    # random data: the positions agree except where float32 rounding flips a near-tie
    assert np.mean(am != am_ref) <= (0 if dtype == np.float64 else 0.01)
    # integer data: exact sums, many exact ties: the argmax and the tie masks agree exactly
    (y, am), (y_ref, am_ref) = _forward(emu, shape, dtype, ties, "relu", *_problem(shape, dtype, 1, True))
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(am, am_ref)
    if ties == "all" and shape[7] != (1, 1):
        assert (am & (am - 1)).any(), "no window with several maxima: the tie rule went untested"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ties", ["first", "all"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", [PATHS[0][0], PATHS[1][0]], ids=["5x5-on-2x2", "general"])
def test_every_activation_on_both_instances(shape, act, ties, dtype):
    emu = ce.kernels(n_sm=2)
    (y, am), (y_ref, am_ref) = _forward(emu, shape, dtype, ties, act, *_problem(shape, dtype, 2))
    assert_close(y, y_ref, dtype, act)
    assert np.mean(am != am_ref) <= (0 if dtype == np.float64 else 0.01)


def test_nan_window_keeps_the_reference_argmax():
    """A NaN first in its window stays the maximum (NumPy's argmax returns the first
    NaN); elsewhere a NaN never wins a comparison."""
    shape = (1, 1, 6, 6, 1, 1, 1, (2, 2))
    x = np.arange(36, dtype=np.float64).reshape(1, 1, 6, 6)
    x[0, 0, 0, 0] = np.nan
    w, b = np.ones((1, 1, 1, 1)), np.zeros(1)
    (y, am), (y_ref, am_ref) = _forward(ce.kernels(n_sm=2), shape, np.float64, "first", "linear", x, w, b)
    assert np.isnan(y[0, 0, 0, 0]) and am[0, 0, 0, 0] == am_ref[0, 0, 0, 0] == 0
    np.testing.assert_array_equal(am, am_ref)
    np.testing.assert_array_equal(y[0, 0].ravel()[1:], y_ref[0, 0].ravel()[1:])


def test_impossible_shapes_are_refused_before_launch():
    """A window whose staging cannot fit shared memory, and a batch over gridDim.z's
    limit: ValueError from the plan, nothing launched."""
    emu = ce.kernels(n_sm=2)
    x, w, b = np.zeros((1, 1, 120, 120)), np.zeros((1, 1, 100, 100)), np.zeros(1)
    y, am = np.empty((1, 1, 21, 21)), np.empty((1, 1, 21, 21), np.int32)
    before = emu.counts["launches"]
    with pytest.raises(ValueError, match="shared memory"):
        emu.conv_pool_forward(x, w, b, (1, 1), "linear", y, am)
    with pytest.raises(ValueError, match=r"gridDim\.z would be 70000"):
        emu.fwd_plan(70000, 1, 28, 28, 20, 5, 5, 12, 12, 2, 2, 4)
    assert emu.counts["launches"] == before


@pytest.mark.parametrize("n_sm, batch", [(2, 2), (132, 64)], ids=["large-batch-plan", "batch-64-on-132-SMs"])
@pytest.mark.parametrize("layer", ["network3 conv1", "network3 conv2"])
def test_memory_behaviour_of_network3_layers(layer, n_sm, batch):
    """Counted by the emulation at real launch shapes (a 132-SM device at batch 64; and
    the plan of every batch that fills the device, here 2 images on 2 SMs): the main
    global accesses (input patch, filters, outputs) at least 80% coalesced; the hot-loop
    shared loads (input rows, 16-byte filter broadcasts) at most 1.25 wavefronts per
    warp access (conv2: none over 1; conv1's block of 5 filter groups over 48 or 72
    windows has warps that span two groups, whose rows share banks); no shared access
    over 2-way conflicted, counting a 16-byte access of a warp as its 4 wavefronts
    (issue 13's acceptance)."""
    shape = (batch,) + next(s for s, what in PATHS if what == layer)[1:]
    x, w, b = _problem(shape, np.float32, 3)
    k = ce.kernels(n_sm=n_sm, memstats=True)
    emu = k.emulator
    emu.memory_log.clear()
    _forward(k, shape, np.float32, "first", "relu", x, w, b)
    (launch,) = emu.memory_log
    glob = [s for s in launch.sites if s.kind == "global"]
    sectors = sum(s.sectors for s in glob)
    main = [s for s in glob if s.sectors >= 0.1 * sectors]
    assert main and min(s.efficiency for s in main) >= 0.8, main
    shared = [s for s in launch.sites if s.kind == "shared"]
    hot = [s for s in shared if s.warp_accesses >= 0.1 * sum(t.warp_accesses for t in shared)]
    assert len(hot) == 2 and all(s.wavefronts <= 1.25 * s.warp_accesses for s in hot), hot
    if layer.endswith("conv2"):
        assert all(s.wavefronts == s.warp_accesses for s in hot), hot
    assert all(s.wavefronts <= 2 * max(s.warp_accesses, s.distinct_bytes / 128) for s in shared), shared
