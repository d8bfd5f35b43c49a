"""Property tests: every kernel wrapper of the ``cpu`` backend (and of the emulated CUDA
kernels) against the reference backend on random shapes, strides and values.

Shapes: batch 1, odd sizes, ragged pooling borders, filters as large as the image.
Values: magnitudes from 1e-12 to 1e12 per array, and integer-valued inputs whose
convolutions are exact, so max-pool windows hold exact ties: both backends must then
pick the first maximum (the contract), so argmax is compared exactly. For real-valued
inputs a near-tie may go either way within rounding, so there the value at the cpu's
argmax must be a maximum of the reference's window (within tolerance), and the
backward pass is compared on the same (y, argmax). Non-contiguous views must be refused
(ValueError) or, when the view happens to be contiguous, computed correctly.

Bounded in time: ``max_examples`` per test, no deadline; the whole file takes well
under a minute (and runs under ASan/UBSan in .ci/sanitize.sh).
"""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fastmom.backends import reference as ref  # noqa: E402

cpu = pytest.importorskip("fastmom.backends.cpu")
if cpu.is_available() is not True:
    pytest.skip(f"cpu backend not built: {cpu.is_available()}", allow_module_level=True)

from backend_cases import ACTS  # noqa: E402
from backend_cases import FUZZ_RTOL as RTOL  # noqa: E402

SCALES = (1e-12, 1e-3, 1.0, 1e3, 1e12)
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

dtypes = st.sampled_from([np.float32, np.float64])
acts = st.sampled_from(ACTS)
threads = st.integers(1, 3)


def close(got, want, dtype, what=""):
    """Relative to the largest reference magnitude (cancellation makes small entries)."""
    want = np.asarray(want, dtype=np.float64)
    scale = max(float(np.max(np.abs(want))) if want.size else 0.0, 1e-300)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=RTOL[dtype],
                               atol=RTOL[dtype] * scale, err_msg=what)


def values(rng, shape, dtype, kind, scale):
    """``kind`` "int": small integers (exact sums, exact max-pool ties); else normal * scale."""
    if kind == "int":
        return rng.integers(-2, 3, shape).astype(dtype)
    return (rng.standard_normal(shape) * scale).astype(dtype)


@st.composite
def conv_cases(draw, max_hw=12, max_n=4, max_c=3, max_f=5, min_c=1, kinds=("int", "real")):
    n, c, f = draw(st.integers(1, max_n)), draw(st.integers(min_c, max_c)), draw(st.integers(1, max_f))
    h, w = draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    kh, kw = draw(st.integers(1, h)), draw(st.integers(1, w))
    oh, ow = h - kh + 1, w - kw + 1
    ph, pw = draw(st.integers(1, min(oh, 4))), draw(st.integers(1, min(ow, 4)))
    return dict(n=n, c=c, h=h, w=w, f=f, kh=kh, kw=kw, ph=ph, pw=pw,
                dtype=draw(dtypes), act=draw(acts), kind=draw(st.sampled_from(kinds)),
                xs=draw(st.sampled_from(SCALES)), ws=draw(st.sampled_from(SCALES)),
                seed=draw(st.integers(0, 2**32 - 1)))


def conv_arrays(k):
    rng = np.random.default_rng(k["seed"])
    dt = k["dtype"]
    x = values(rng, (k["n"], k["c"], k["h"], k["w"]), dt, k["kind"], k["xs"])
    w = values(rng, (k["f"], k["c"], k["kh"], k["kw"]), dt, k["kind"], k["ws"])
    b = values(rng, (k["f"],), dt, k["kind"], k["xs"] * k["ws"])
    PH, PW = (k["h"] - k["kh"] + 1) // k["ph"], (k["w"] - k["kw"] + 1) // k["pw"]
    return rng, x, w, b, (k["ph"], k["pw"]), (k["n"], k["f"], PH, PW)


def check_conv(backend, k, pool_ties="first"):
    """Forward and backward of ``backend`` against the reference for one case.
    ``pool_ties="all"`` (tie bitmasks instead of positions) takes integer cases only."""
    rng, x, w, b, pool, yshape = conv_arrays(k)
    dt, act = k["dtype"], k["act"]
    y, am = np.full(yshape, np.nan, dt), np.full(yshape, -7, np.int32)
    yr, amr = np.empty(yshape, dt), np.empty(yshape, np.int32)
    backend.conv_pool_forward(x, w, b, pool, act, y, am, pool_ties)
    ref.conv_pool_forward(x, w, b, pool, act, yr, amr, pool_ties)
    close(y, yr, dt, "y")
    if pool_ties == "all":
        assert k["kind"] == "int"
        assert am.min() >= 1 and am.max() < 1 << (pool[0] * pool[1])
    else:
        assert am.min() >= 0 and am.max() < pool[0] * pool[1]
    if k["kind"] == "int":
        np.testing.assert_array_equal(am, amr)  # exact ties: the same positions in both
    else:
        # the value at our argmax is (within rounding) the reference window's maximum
        n, f, PH, PW = yshape
        z = np.empty((n, f, k["h"] - k["kh"] + 1, k["w"] - k["kw"] + 1), dt)
        ref.conv_pool_forward(x, w, np.zeros_like(b), (1, 1), "linear", z, np.empty(z.shape, np.int32))
        win = z[:, :, :PH * pool[0], :PW * pool[1]].reshape(n, f, PH, pool[0], PW, pool[1])
        win = win.transpose(0, 1, 2, 4, 3, 5).reshape(n, f, PH, PW, -1)
        picked = np.take_along_axis(win, am[..., None].astype(np.intp), -1)[..., 0]
        close(picked, win.max(-1), dt, "value at argmax")
    # backward on the same (y, argmax), with and without dx (a first layer)
    dy = values(rng, yshape, dt, k["kind"], 1.0)
    for want_dx in (True, False):
        got = [np.full(w.shape, np.nan, dt), np.full(b.shape, np.nan, dt),
               np.full(x.shape, np.nan, dt) if want_dx else None]
        exp = [np.empty_like(w), np.empty_like(b), np.empty_like(x) if want_dx else None]
        backend.conv_pool_backward(x, w, yr, amr, dy, pool, act, *got, pool_ties)
        ref.conv_pool_backward(x, w, yr, amr, dy, pool, act, *exp, pool_ties)
        for g, e, name in zip(got, exp, ("dw", "db", "dx")):
            if e is not None:
                close(g, e, dt, name)


@st.composite
def dense_cases(draw, max_n=9, max_io=40):
    return dict(n=draw(st.integers(1, max_n)), n_in=draw(st.integers(1, max_io)),
                n_out=draw(st.integers(1, max_io)), dtype=draw(dtypes), act=draw(acts),
                kind=draw(st.sampled_from(["int", "real"])), xs=draw(st.sampled_from(SCALES)),
                ws=draw(st.sampled_from(SCALES)), scale=draw(st.sampled_from([1.0, 0.5, 0.25])),
                seed=draw(st.integers(0, 2**32 - 1)))


def check_dense(backend, k):
    rng = np.random.default_rng(k["seed"])
    dt, act = k["dtype"], k["act"]
    x = values(rng, (k["n"], k["n_in"]), dt, k["kind"], k["xs"])
    w = values(rng, (k["n_in"], k["n_out"]), dt, k["kind"], k["ws"])
    b = values(rng, (k["n_out"],), dt, k["kind"], k["xs"] * k["ws"])
    y, yr = np.full((k["n"], k["n_out"]), np.nan, dt), np.empty((k["n"], k["n_out"]), dt)
    backend.dense_forward(x, w, b, act, y, k["scale"])
    ref.dense_forward(x, w, b, act, yr, k["scale"])
    close(y, yr, dt, "y")
    dy = values(rng, yr.shape, dt, k["kind"], 1.0)
    for want_dx in (True, False):
        got = [np.full_like(w, np.nan), np.full_like(b, np.nan), np.full_like(x, np.nan) if want_dx else None]
        exp = [np.empty_like(w), np.empty_like(b), np.empty_like(x) if want_dx else None]
        backend.dense_backward(x, w, yr, dy, act, *got)
        ref.dense_backward(x, w, yr, dy, act, *exp)
        for g, e, name in zip(got, exp, ("dw", "db", "dx")):
            if e is not None:
                close(g, e, dt, name)


@st.composite
def softmax_cases(draw, max_n=40, max_k=12):
    return dict(n=draw(st.integers(1, max_n)), k=draw(st.integers(1, max_k)), dtype=draw(dtypes),
                scale=draw(st.sampled_from((1e-12, 1.0, 30.0, 1e4, 1e12))),
                ties=draw(st.booleans()), label_dtype=draw(st.sampled_from([np.int32, np.int64])),
                seed=draw(st.integers(0, 2**32 - 1)))


def check_softmax(backend, k):
    rng = np.random.default_rng(k["seed"])
    dt = k["dtype"]
    shape = (k["n"], k["k"])
    z = (rng.integers(-1, 2, shape) if k["ties"] else rng.standard_normal(shape) * k["scale"]).astype(dt)
    labels = rng.integers(0, k["k"], k["n"]).astype(k["label_dtype"])
    p, pr = np.full(shape, np.nan, dt), np.empty(shape, dt)
    cost, correct = backend.softmax_nll_forward(z, labels, p)
    cr, kr = ref.softmax_nll_forward(z, labels, pr)
    close(p, pr, dt, "probs")
    assert np.isfinite(float(cost))
    assert float(cost) == pytest.approx(cr, rel=RTOL[dt], abs=RTOL[dt])
    if k["ties"] or k["scale"] >= 1.0:
        assert int(correct) == kr  # exact ties: first maximum; else a clear winner
    assert backend.softmax_nll_forward(z, None, p) == (None, None)
    dz, dzr = np.full(shape, np.nan, dt), np.empty(shape, dt)
    backend.softmax_nll_backward(pr, labels, dz)
    ref.softmax_nll_backward(pr, labels, dzr)
    close(dz, dzr, dt, "dz")


@st.composite
def momentum_cases(draw, big=(32_000, 70_000)):
    # big sizes take the multi-threaded path (the kernel goes parallel from 32768)
    size = draw(st.one_of(st.integers(1, 100), st.integers(*big)))
    mu = draw(st.sampled_from([0.0, 0.5, 0.9, 0.999]))
    return dict(size=size, dtype=draw(dtypes), eta=draw(st.sampled_from([1e-6, 0.01, 0.5, 10.0])),
                momentum=mu, nesterov=mu > 0 and draw(st.booleans()),
                decay=draw(st.sampled_from([0.0, 1e-4, 0.1])), n_decay=draw(st.integers(0, size)),
                ps=draw(st.sampled_from(SCALES)), gs=draw(st.sampled_from(SCALES)),
                seed=draw(st.integers(0, 2**32 - 1)))


def check_momentum(backend, k):
    rng = np.random.default_rng(k["seed"])
    dt, n = k["dtype"], k["size"]
    p = values(rng, n, dt, "real", k["ps"])
    g = values(rng, n, dt, "real", k["gs"])
    v = values(rng, n, dt, "real", k["gs"]) if k["momentum"] else None
    pr, vr = p.copy(), None if v is None else v.copy()
    g0 = g.copy()
    args = (k["eta"], k["momentum"], k["nesterov"], k["decay"], k["n_decay"])
    backend.momentum_step(p, g, v, *args)
    ref.momentum_step(pr, g.copy(), vr, *args)
    np.testing.assert_array_equal(g, g0)  # the gradient is read-only
    close(p, pr, dt, "p")
    if v is not None:
        close(v, vr, dt, "v")


# -- cpu backend ---------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def restore_threads():
    n = cpu.thread_setting()
    yield
    cpu.set_num_threads(n)


@FUZZ
@given(conv_cases(), threads)
def test_cpu_conv_pool(k, nt):
    cpu.set_num_threads(nt)
    check_conv(cpu, k)


@FUZZ
@given(conv_cases(max_hw=10, max_n=3, max_c=12, max_f=19, min_c=4), threads)
def test_cpu_conv_pool_many_channels(k, nt):
    # 4-12 channels: the direct forward (>= 64 taps) and the scattered backward (a
    # vector's worth of channels, 4+ positions per window) are taken where they apply
    cpu.set_num_threads(nt)
    check_conv(cpu, k)


# pool_ties="all" on exact ties (integer-valued inputs): the tie masks and gradients
@FUZZ
@given(conv_cases(kinds=("int",)), threads)
def test_cpu_conv_pool_all_ties(k, nt):
    cpu.set_num_threads(nt)
    check_conv(cpu, k, "all")


@FUZZ
@given(conv_cases(max_hw=10, max_n=3, max_c=12, max_f=19, min_c=4, kinds=("int",)), threads)
def test_cpu_conv_pool_all_ties_many_channels(k, nt):
    cpu.set_num_threads(nt)
    check_conv(cpu, k, "all")


@FUZZ
@given(dense_cases(), threads)
def test_cpu_dense(k, nt):
    cpu.set_num_threads(nt)
    check_dense(cpu, k)


@FUZZ
@given(softmax_cases())
def test_cpu_softmax_nll(k):
    check_softmax(cpu, k)


@settings(FUZZ, max_examples=60)
@given(momentum_cases(), threads)
def test_cpu_momentum_step(k, nt):
    cpu.set_num_threads(nt)
    check_momentum(cpu, k)


@FUZZ
@given(st.integers(1, 70_000), dtypes, st.sampled_from(SCALES), st.integers(0, 2**32 - 1), threads)
def test_cpu_sum_squares_and_apply_mask(n, dt, scale, seed, nt):
    cpu.set_num_threads(nt)
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal(n) * scale).astype(dt)
    want = float(np.dot(a.astype(np.float64), a.astype(np.float64)))
    assert cpu.sum_squares(a) == pytest.approx(want, rel=1e-12)
    mask = (rng.random(n) < 0.5).astype(dt)
    out = np.full_like(a, np.nan)
    cpu.apply_mask(a, mask, out)
    np.testing.assert_array_equal(out, a * mask)
    cpu.apply_mask(a, mask, a)  # in place
    np.testing.assert_array_equal(a, out)


# -- strides: non-contiguous views are refused before any kernel runs ------------------

@st.composite
def views(draw, shape):
    """A random slicing of an array of ``shape``: steps, offsets, a transpose."""
    index = []
    for d in shape:
        start = draw(st.integers(0, min(1, d - 1)))
        step = draw(st.sampled_from([1, 1, 2]))
        index.append(slice(start, None, step))
    return tuple(index), draw(st.booleans())


def _view(a, v):
    index, transpose = v
    out = a[index]
    return out.T if transpose and out.ndim == 2 else out


@settings(FUZZ, max_examples=200)
@given(st.data())
def test_cpu_views_refused_or_correct(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    which = data.draw(st.sampled_from(["dense_x", "dense_w", "momentum_p", "mask_x", "softmax_z", "conv_x"]))
    dt = data.draw(dtypes)
    if which.startswith("dense"):
        xs, ws = (6, 9), (9, 5)
        big = rng.standard_normal((12, 18) if which == "dense_x" else (18, 10)).astype(dt)
        v = _view(big, data.draw(views(big.shape)))
        x = v if which == "dense_x" else rng.standard_normal(xs).astype(dt)
        w = v if which == "dense_w" else rng.standard_normal(ws).astype(dt)
        if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
            return
        args = lambda: (x, w, np.zeros(w.shape[1], dt), "relu", np.empty((x.shape[0], w.shape[1]), dt))  # noqa: E731
        call, reff = cpu.dense_forward, ref.dense_forward
    elif which == "momentum_p":
        big = rng.standard_normal(200).astype(dt)
        p = _view(big, data.draw(views(big.shape)))
        g = rng.standard_normal(p.shape).astype(dt)
        args = lambda: (p.copy() if p.flags.c_contiguous else p, g, None, 0.1, 0.0, False, 0.0, 0)  # noqa: E731
        call, reff = cpu.momentum_step, ref.momentum_step
    elif which == "mask_x":
        big = rng.standard_normal((10, 14)).astype(dt)
        x = _view(big, data.draw(views(big.shape)))
        m = np.ones(x.shape, dt)
        args = lambda: (x, m, np.empty(x.shape, dt))  # noqa: E731
        call, reff = cpu.apply_mask, ref.apply_mask
    elif which == "softmax_z":
        big = rng.standard_normal((8, 10)).astype(dt)
        z = _view(big, data.draw(views(big.shape)))
        labels = np.zeros(z.shape[0], np.int64)
        args = lambda: (z, labels, np.empty(z.shape, dt))  # noqa: E731
        call, reff = cpu.softmax_nll_forward, ref.softmax_nll_forward
    else:
        big = rng.standard_normal((4, 2, 14, 14)).astype(dt)
        x = _view(big, data.draw(views(big.shape)))
        w = rng.standard_normal((3, x.shape[1], 3, 3)).astype(dt)
        PH, PW = (x.shape[2] - 2) // 2, (x.shape[3] - 2) // 2
        args = lambda: (x, w, np.zeros(3, dt), (2, 2), "tanh", np.empty((x.shape[0], 3, PH, PW), dt),  # noqa: E731
                        np.empty((x.shape[0], 3, PH, PW), np.int32))
        call, reff = cpu.conv_pool_forward, ref.conv_pool_forward
    a = args()
    if not all(getattr(t, "flags", None) is None or t.flags.c_contiguous for t in a):
        with pytest.raises(ValueError, match="C-contiguous"):
            call(*a)
        return
    b = args()
    call(*a)
    reff(*b)
    for got, want in zip(a, b):
        if isinstance(got, np.ndarray) and got.dtype.kind == "f":
            close(got, want, dt)


# -- the CUDA kernels on the CPU emulation ---------------------------------------------

def _emulated():
    try:
        from fastmom.backends import cuda_emulation as ce
    except ImportError as exc:
        pytest.skip(f"no CUDA emulation module: {exc}")
    if ce.compiler() is None:
        pytest.skip("no C++ compiler for the CUDA emulation")
    return ce.kernels(n_sm=2)


EMU = settings(FUZZ, max_examples=40)


@EMU
@given(conv_cases(max_hw=10, max_n=3, max_c=2, max_f=4))
def test_emulated_cuda_conv_pool(k):
    check_conv(_emulated(), k)


@EMU
@given(conv_cases(max_hw=10, max_n=3, max_c=2, max_f=4, kinds=("int",)))
def test_emulated_cuda_conv_pool_all_ties(k):
    check_conv(_emulated(), k, "all")


@EMU
@given(dense_cases(max_n=6, max_io=24))
def test_emulated_cuda_dense(k):
    check_dense(_emulated(), k)


@EMU
@given(softmax_cases(max_n=20, max_k=10))
def test_emulated_cuda_softmax_nll(k):
    check_softmax(_emulated(), k)


@EMU
@given(momentum_cases(big=(1000, 3000)))
def test_emulated_cuda_momentum_step(k):
    check_momentum(_emulated(), k)
