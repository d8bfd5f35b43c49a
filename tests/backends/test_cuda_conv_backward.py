"""The cuda backend's conv backward from the argmax (``kernels/cuda/conv_backward.cu``)
under the CPU emulation: every launch-plan path against the reference, the guard
against a bad argmax on the device, and no un-pooled buffer.

``test_parity.py`` runs the shared shape table on the emulation (``emulated-cuda``); the
shapes here are chosen to steer the host code onto each of its paths (the compiled 5x5
instance and the general one, several blocks of filter rows per filter group, staged entries in
several chunks, several images per stage, one batch slice or one per image, several
pixel tiles, channel groups and filter stages in the input gradient), and each test
asserts that its path was taken, so that a change of the plans cannot make it vacuous.
Fresh random inputs with odd sizes; float64 to 1e-10 and float32 to 1e-4.
"""
import numpy as np
import pytest

from backend_cases import ACTS, assert_close, randn, rng_for
from fastmom.backends import _checks
from fastmom.backends import cuda_emulation as ce
from fastmom.backends import reference as ref

pytestmark = pytest.mark.skipif(ce.compiler() is None, reason="no C++ compiler for the CUDA emulation")

# (N, C, H, W, F, KH, KW, pool, what the plan must show)
PATHS = [
    ((2, 2, 12, 21, 5, 7, 17, (2, 2)), "row blocks"),      # general instance, 5 chunks a row: 3 row blocks
    ((3, 3, 10, 9, 6, 5, 3, (2, 2)), "general"),           # 5x3: not the 5x5 instance; one 4-tap chunk a row
    ((9, 3, 12, 12, 9, 5, 5, (2, 2)), "images per stage"),  # conv2-like: several images a stage
    ((2, 1, 60, 57, 9, 5, 5, (2, 2)), "entry chunks"),      # 28x26 windows: more entries than a chunk
    ((1, 9, 40, 37, 3, 3, 3, (3, 2)), "pixel tiles"),       # dx: 2x5 tiles, 2 channel groups, ragged pools
    ((3, 3, 9, 9, 21, 3, 3, (1, 1)), "filter stages"),      # dx: 21 filters in stages of 16; no pooling
    ((3, 1, 28, 28, 20, 5, 5, (2, 2)), "network3 conv1"),   # the two layers network3 trains (test_parity
    ((2, 20, 12, 12, 40, 5, 5, (2, 2)), "network3 conv2"),  # skips them on the emulation: too many FMAs)
]


def _problem(shape, dtype, ties, seed, act="tanh"):
    n, c, h, w, f, kh, kw, pool = shape
    rng = rng_for("conv-backward", shape, ties, np.dtype(dtype).name, seed)
    x, wt = randn(rng, (n, c, h, w), dtype), randn(rng, (f, c, kh, kw), dtype)
    if ties == "all":  # half of each image constant along rows or columns: windows of exact ties
        x[::2, :, :, : w // 2] = x[::2, :, :, :1]
        x[1::2, :, : h // 2, :] = x[1::2, :, :1, :]
    out = (n, f, (h - kh + 1) // pool[0], (w - kw + 1) // pool[1])
    y, am = np.empty(out, dtype), np.empty(out, np.int32)
    ref.conv_pool_forward(x, wt, randn(rng, (f,), dtype), pool, act, y, am, ties)
    return x, wt, y, am, randn(rng, out, dtype)


def _plans(emu, shape, dtype, ties):
    n, c, h, w, f, kh, kw, (ph, pw) = shape
    PH, PW = (h - kh + 1) // ph, (w - kw + 1) // pw
    e = ph * pw if ties == "all" else 1
    k = 5 if kh == kw == 5 else 0
    isz = np.dtype(dtype).itemsize
    return (emu.wgrad_plan(n, c, h, w, f, kh, kw, PH, PW, ph, pw, e, isz, k),
            emu.dgrad_plan(n, c, h, w, f, kh, kw, PH, PW, ph, pw, e, isz), PH * PW * e, k)


def _assert_path(what, shape, wg, dg, per_image, k, n_sm):
    n, c, h, w, f, kh, kw, _ = shape
    checks = {
        "row blocks": k == 0 and wg["upb"] == 15 and wg["grid"][0] == 3 * c * 2,
        "general": k == 0,
        "images per stage": k == 5 and (wg["nb_max"] > 1 or n_sm > 1),  # one image a slice with many SMs
        "entry chunks": wg["ec"] < wg["nb_max"] * per_image,
        "pixel tiles": dg["grid"][0] > 1 and dg["grid"][1] > 1,
        "filter stages": dg["fq"] < f,
        "network3 conv1": k == 5,
        "network3 conv2": k == 5 and dg["fq"] < f,
    }
    assert checks[what], (what, wg, dg)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ties", ["first", "all"])
@pytest.mark.parametrize("n_sm", [1, 64])
@pytest.mark.parametrize("shape, what", PATHS, ids=[p[1].replace(" ", "-") for p in PATHS])
def test_every_plan_path_matches_the_reference(shape, what, n_sm, ties, dtype):
    emu = ce.kernels(n_sm=n_sm)
    wg, dg, per_image, k = _plans(emu, shape, dtype, ties)
    _assert_path(what, shape, wg, dg, per_image, k, n_sm)
    # few batch slices with one SM; one per image with many
    assert wg["nsplit"] == shape[0] if n_sm == 64 else wg["nsplit"] <= 4
    # planes phased by the pool wherever they fit; the 60x57 double ones fall back to one plain plane
    assert wg["phased"] == (shape[7] != (1, 1) and not (what == "entry chunks" and dtype == np.float64))
    x, w, y, am, dy = _problem(shape, dtype, ties, 0)
    pool = shape[7]
    want = [np.empty_like(w), np.empty_like(w[:, 0, 0, 0]), np.empty_like(x)]
    ref.conv_pool_backward(x, w, y, am, dy, pool, "tanh", *want, ties)
    got = [np.full_like(a, np.nan) for a in want]
    emu.conv_pool_backward(x, w, y, am, dy, pool, "tanh", *got, ties)
    for g, e, name in zip(got, want, ("dw", "db", "dx")):
        assert_close(g, e, dtype, name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ties", ["first", "all"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("k", [5, 3])
def test_every_activation_on_both_instances(k, act, ties, dtype):
    """The compiled 5x5 instance and the general one, every activation's derivative."""
    shape = (3, 3, 11, 10, 5, k, k, (2, 2))
    x, w, y, am, dy = _problem(shape, dtype, ties, 3, act)
    want = [np.empty_like(w), np.empty_like(w[:, 0, 0, 0]), np.empty_like(x)]
    ref.conv_pool_backward(x, w, y, am, dy, shape[7], act, *want, ties)
    got = [np.full_like(a, np.nan) for a in want]
    ce.kernels(n_sm=2).conv_pool_backward(x, w, y, am, dy, shape[7], act, *got, ties)
    for g, e, name in zip(got, want, ("dw", "db", "dx")):
        assert_close(g, e, dtype, name)


def test_ties_fixture_has_ties():
    """The "all" problems above do exercise windows with several maxima."""
    _x, _w, _y, am, _dy = _problem(PATHS[2][0], np.float64, "all", 0)
    bits = np.vectorize(lambda v: bin(int(v)).count("1"))(am)
    assert (bits >= 2).mean() > 0.2 and (bits == 1).mean() > 0.2


@pytest.mark.parametrize("ties", ["first", "all"])
def test_bad_argmax_on_the_device_stays_in_bounds(monkeypatch, ties):
    """Device arrays are not range-checked on the host (that would sync): out-of-range
    argmax values and stray mask bits must give no gradient, never an access outside
    the staged arrays (the emulation checks every access)."""
    shape = (3, 2, 11, 10, 5, 3, 3, (2, 2))
    x, w, y, am, dy = _problem(shape, np.float64, ties, 1)
    bad = np.zeros(am.shape, bool)
    bad.flat[::3] = True
    am_bad = am.copy()
    if ties == "all":
        am_bad[bad] = 0  # an empty mask: nothing
        am_bad[~bad] |= np.int32(-16)  # bits past the 2x2 window: ignored
    else:
        am_bad[bad] = np.where(np.arange(bad.sum()) % 2, 1000, -7)
    monkeypatch.setattr(_checks, "_on_host", lambda a: False)  # as for device arrays
    emu = ce.kernels(n_sm=2)
    got = [np.full_like(a, np.nan) for a in (w, w[:, 0, 0, 0], x)]
    emu.conv_pool_backward(x, w, y, am_bad, dy, shape[7], "tanh", *got, ties)
    want = [np.empty_like(a) for a in got]
    ref.conv_pool_backward(x, w, y, am, np.where(bad, 0, dy), shape[7], "tanh", *want, ties)
    for g, e, name in zip(got, want, ("dw", "db", "dx")):
        assert_close(g, e, np.float64, name)


def test_no_unpooled_buffer():
    """The backward's workspaces are the weight-gradient partial sums only: nothing of
    the conv output's (N, F, OH, OW) size."""
    emu = ce.kernels(n_sm=2)
    shape = (4, 3, 13, 12, 7, 5, 5, (2, 2))
    x, w, y, am, dy = _problem(shape, np.float32, "first", 2)
    emu.conv_pool_backward(x, w, y, am, dy, shape[7], "relu", np.empty_like(w), np.empty(7, np.float32),
                           np.empty_like(x))
    sizes = {key[0]: np.prod(key[1]) for key in emu._ws}
    assert set(sizes) == {"conv_wpart", "conv_bpart"}
    assert sizes["conv_wpart"] == emu.wgrad_plan(4, 3, 13, 12, 7, 5, 5, 4, 4, 2, 2, 1, 4, 5)["nsplit"] * w.size
