"""The ``cpu`` backend's own behaviour: its path-dispatch rules, argument checks before
any ``nogil`` code, workspace sizes, threads (bit-identical for any count, the automatic
count from the measured load) and a short training run against the reference.
Its numerical parity with the reference is in ``test_parity.py``.
"""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from backend_cases import DTYPES, randn
from fastmom.backends import reference as ref

cpu = pytest.importorskip("fastmom.backends.cpu")
if cpu.is_available() is not True:
    pytest.skip(f"cpu backend not built: {cpu.is_available()}", allow_module_level=True)
from fastmom.backends import cpu_threads  # noqa: E402


@pytest.fixture
def threads():
    """Restore the thread count after a test that changes it."""
    n = cpu.thread_setting()
    yield
    cpu.set_num_threads(n)


def conv_problem(rng, shape, dtype):
    n, c, h, w, f, kh, kw, pool = shape
    out = (n, f, (h - kh + 1) // pool[0], (w - kw + 1) // pool[1])
    return (randn(rng, (n, c, h, w), dtype), randn(rng, (f, c, kh, kw), dtype),
            randn(rng, (f,), dtype), out)


def test_direct_path_dispatch_rules():
    # the fewest taps the direct path takes, per forward vector (conv_direct.h,
    # FM_MIN_TAPS): 25 with AVX2's 32-byte tiles (network3's conv1 measured faster
    # direct), 64 with AVX-512's (conv1 measured faster through im2col + GEMM), also where
    # a test build emulates them at the avx2 level; the baseline has no direct path
    fewest = {32: 25, 64: 64}.get(cpu._k.forward_vector_bytes())
    if fewest is None:
        assert not cpu._k.direct_conv_applies(500, 2, 2)
    else:
        assert cpu._k.direct_conv_applies(fewest, 2, 2) and cpu._k.direct_conv_applies(500, 2, 2)
        assert not cpu._k.direct_conv_applies(fewest - 1, 2, 2)
    # never for windows of 3, 6, 9 positions (a tile holds whole windows of up to 4)
    for k, ph, pw in [(500, 3, 3), (500, 2, 3), (500, 1, 3)]:
        assert not cpu._k.direct_conv_applies(k, ph, pw)


def test_workspaces_are_aligned():
    # the kernels' scratch rows start on 64-byte boundaries (NumPy's own start 16 bytes
    # past one, where half the 32-byte loads straddled two cache lines)
    for shape, rows in [((3, 37), True), ((5,), False), ((2, 3), False)]:
        for dt in (np.float32, np.float64):
            a = cpu._workspace(("test-align", shape, rows), shape, dt, rows=rows)
            assert a.ctypes.data % 64 == 0 and a.flags.c_contiguous and a.dtype == dt
            if rows:  # rows padded to whole cache lines, never shorter than asked
                assert a.shape[0] == shape[0] and a.shape[1] >= shape[1]
                assert a.strides[0] % 64 == 0
            else:  # a shape the caller reads is kept
                assert a.shape == shape


def test_forward_path_choice():
    # the row forward (lanes along output rows) for fewer input channels than a 32-byte
    # vector has lanes (8 floats, 4 doubles) with 2x2 windows, at the vector levels;
    # filters as lanes where the direct path applies; im2col + GEMM elsewhere
    vector = cpu._k.forward_vector_bytes() > 0
    path = cpu._k.conv_forward_path
    assert path(1, 5, 5, 2, 2, 4) == ("rows" if vector else "im2col")  # network3's conv1
    assert path(7, 3, 3, 2, 2, 4) == ("rows" if vector else "im2col")
    assert path(3, 5, 5, 2, 2, 8) == ("rows" if vector else "im2col")
    assert path(4, 5, 5, 2, 2, 8) == ("direct" if vector else "im2col")  # 4 doubles a vector
    assert path(20, 5, 5, 2, 2, 4) == ("direct" if vector else "im2col")  # network3's conv2
    assert path(3, 5, 5, 1, 2, 4) == ("direct" if vector else "im2col")  # not 2x2: filter lanes
    assert path(1, 3, 3, 3, 3, 4) == "im2col"


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


@pytest.mark.parametrize("shape", [(3, 20, 12, 12, 40, 5, 5, (2, 2)), (3, 1, 12, 12, 4, 4, 4, (2, 2)),
                                   (3, 1, 13, 13, 4, 4, 4, (3, 3))],
                         ids=["direct-and-scattered", "rows", "im2col-gemm"])
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

    fwd = cpu._k.conv_forward_sizes(c, h, wd, f, kh, kw, *pool, 1, 4)
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
    # the forward takes argmax=None (inference); the backward reads it, so refuses None
    cpu._k.conv_pool_forward(x, w, b, *pool, 2, y, None, *buffers(fwd, (1, 0), -1), 1, 1)
    with pytest.raises(TypeError, match="argmax"):
        cpu._k.conv_pool_backward(x, w, y, None, dy, *pool, 2, dw, db, dx,
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
    convs = []
    # network3's conv2 at batch 17, and at 10, where the chunks depend on the thread
    # count (forward) or were balanced for two threads (backward): still the same bits
    for n in (17, 10):
        x, w, b, out = conv_problem(rng, (n, 20, 12, 12, 40, 5, 5, (2, 2)), dtype)
        y, am = np.empty(out, dtype), np.empty(out, np.int32)
        cpu.conv_pool_forward(x, w, b, (2, 2), "relu", y, am)
        dy = randn(rng, out, dtype)
        dw, db, dx = np.empty_like(w), np.empty_like(b), np.empty_like(x)
        cpu.conv_pool_backward(x, w, y, am, dy, (2, 2), "relu", dw, db, dx)
        convs += [y, am, dw, db, dx]
    xd, wd_, bd = randn(rng, (256, 640), dtype), randn(rng, (640, 100), dtype), randn(rng, (100,), dtype)
    yd = np.empty((256, 100), dtype)
    cpu.dense_forward(xd, wd_, bd, "relu", yd)
    dwd, dbd, dxd = np.empty_like(wd_), np.empty_like(bd), np.empty_like(xd)
    cpu.dense_backward(xd, wd_, yd, randn(rng, yd.shape, dtype), "relu", dwd, dbd, dxd)
    p, g, v = (randn(rng, (300_001,), dtype) for _ in range(3))
    cpu.momentum_step(p, g, v, 0.01, 0.9, True, 1e-3, 200_000)
    return convs + [yd, dwd, dbd, dxd, p, v, np.array(cpu.sum_squares(p))]


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
    assert cpu_threads.threads_for_load(cores, other) == expected


def test_automatic_threads_follow_the_measured_load(threads, monkeypatch):
    """The automatic count: busy CPU time of our cores minus our own CPU time, per second."""
    cpu.set_num_threads(None)
    assert cpu.thread_setting() is None
    cores = len(cpu_threads._CPUS)
    samples = iter([(100.0, 50.0, 10.0), (101.0, 50.0 + 1.2 + 0.8, 10.0 + 0.8),  # others: 1.2
                    (102.0, 52.0 + 0.8, 10.8 + 0.8)])                            # others: 0.0
    monkeypatch.setattr(cpu_threads, "_sample", lambda: next(samples))
    monkeypatch.setattr(cpu_threads, "_last_sample", (0.0, None, 0.0))
    cpu_threads._update_auto_threads()  # no previous /proc/stat reading: nothing to measure yet
    assert cpu_threads._last_sample == (100.0, 50.0, 10.0)
    cpu_threads._update_auto_threads()
    assert cpu_threads._other_load == pytest.approx(1.2)
    assert cpu_threads._auto_threads == cpu_threads.threads_for_load(cores, 1.2)
    cpu_threads._update_auto_threads()
    assert cpu_threads._other_load == pytest.approx(0.0)
    assert cpu_threads._auto_threads == cores
    cpu.set_num_threads(3)  # a fixed count ignores the load
    assert cpu.get_num_threads() == 3


@pytest.mark.skipif(len(cpu_threads._CPUS) < 2 or not os.path.exists("/proc/stat"),
                    reason="needs Linux and at least 2 cores")
def test_automatic_threads_give_up_a_core_to_a_busy_process(threads):
    """Real measurement: another process spinning on one core costs us a thread."""
    cpu.set_num_threads(None)
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\n"
                             "while time.time() - t < 3: pass"])
    try:
        time.sleep(0.3)
        cpu.get_num_threads()  # starts a fresh measurement window
        time.sleep(cpu_threads.LOAD_INTERVAL + 0.5)
        assert cpu.get_num_threads() <= len(cpu_threads._CPUS) - 1, cpu.thread_policy()
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


# -- the small-batch dense kernels (kernels/cpu/dense_small.h) ---------------------------

SMALL_DENSE = [(1, 1000, 1000), (10, 1000, 1000), (10, 640, 1000), (10, 1000, 10), (32, 999, 1001),
               (7, 13, 37)]


def test_small_dense_path_dispatch():
    """Batches up to DENSE_SMALL_ROWS rows take the small-batch kernels, at every level
    of a GCC/Clang build; larger ones the BLAS."""
    assert cpu.DENSE_SMALL_ROWS == 32
    assert cpu._k.dense_small_applies()
    assert cpu._dense_small_slices(10, 1000, 1000) == 7  # 64-column units, 16 of them
    assert cpu._dense_small_slices(10, 13, 37) == 1      # below ~4 MFLOP: one slice


def _small_dense(x, w, b, dy, act, nslices, nthreads, want_dx=True):
    y = np.full((x.shape[0], w.shape[1]), np.nan, x.dtype)
    cpu._k.dense_forward(x, w, b, cpu._ACT[act], y, 0.5, nslices, nthreads, True)
    dw, db, dx = np.full_like(w, np.nan), np.full_like(b, np.nan), np.full_like(x, np.nan)
    scratch = np.empty(dy.size, x.dtype)
    cpu._k.dense_backward(x, w, y, dy, cpu._ACT[act], dw, db, dx if want_dx else None, scratch,
                          nslices, nthreads, True)
    return (y, dw, db, dx) if want_dx else (y, dw, db)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SMALL_DENSE, ids=lambda s: "x".join(map(str, s)))
def test_small_dense_bits_do_not_depend_on_slices_or_threads(shape, dtype):
    """Every output of the small-batch kernels is one sum in a fixed order whatever slice
    or tile it falls in: any slicing and thread count gives the same bits (the backend
    fixes the slicing by the shapes; this checks the stronger property), and the BLAS
    path agrees to rounding."""
    n, nin, nout = shape
    rng = np.random.default_rng(n * nin + nout)
    x, w, b, dy = (randn(rng, s, dtype) for s in ((n, nin), (nin, nout), (nout,), (n, nout)))
    one = _small_dense(x, w, b, dy, "tanh", 1, 1)
    for nslices, nthreads in ((3, 2), (8, 3), (16, 2)):
        for a, c in zip(_small_dense(x, w, b, dy, "tanh", nslices, nthreads), one):
            np.testing.assert_array_equal(a, c)
    for a, c in zip(_small_dense(x, w, b, dy, "tanh", 8, 2, want_dx=False), one):
        np.testing.assert_array_equal(a, c)
    # the public wrapper (small path) against the BLAS path it replaces
    y, dw, db, dx = (np.empty_like(a) for a in one)
    cpu.dense_forward(x, w, b, "tanh", y, 0.5)
    np.testing.assert_array_equal(y, one[0])
    old = cpu.DENSE_SMALL_ROWS
    try:
        cpu.DENSE_SMALL_ROWS = 0
        yb = np.empty_like(y)
        cpu.dense_forward(x, w, b, "tanh", yb, 0.5)
        cpu.dense_backward(x, w, y, dy, "tanh", dw, db, dx)
    finally:
        cpu.DENSE_SMALL_ROWS = old
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for got, want in zip((yb, dw, db, dx), one):
        assert np.abs(got - want).max() <= tol * max(1.0, np.abs(want).max())
