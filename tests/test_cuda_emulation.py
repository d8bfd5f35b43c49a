"""The CUDA kernels on the CPU emulation (fastmom.cuda_emulation), against the reference.

Runs in every CI run: needs g++ (C++20), not a GPU or CuPy. The planted-bug tests prove
the emulation fails a kernel with a race, an out-of-range index, a divergent barrier,
an uninitialised shared read or a misaligned vector access; the kernel tests run the
cuda backend's own host code (fastmom.backends.cuda.Kernels) on NumPy arrays and
compare every kernel with fastmom.backends.reference on odd sizes and ragged pool
borders, float32 to 1e-4 and float64 to 1e-10 relative.
"""
import pathlib
import zlib

import numpy as np
import pytest

from fastmom import cuda_emulation as ce
from fastmom.backends import reference as ref

pytestmark = pytest.mark.skipif(ce.compiler() is None, reason="no C++ compiler for the CUDA emulation")

PLANTED = pathlib.Path(__file__).resolve().parents[1] / "kernels" / "cuda" / "emu" / "testdata" / "planted_bugs.cu"
PLANTED_NAMES = [f"fm_test_{k}<{t}>" for k in ("reverse", "fill", "read", "divergent", "uninit", "pack")
                 for t in ("float", "double")]
RTOL = {np.float32: 1e-4, np.float64: 1e-10}
ACTS = ("sigmoid", "tanh", "relu", "linear")


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


@pytest.fixture(scope="module")
def planted():
    return ce.build(sources=[PLANTED], names=PLANTED_NAMES)


@pytest.fixture(scope="module")
def emu():
    return ce.kernels(n_sm=2)


def close(got, want, dtype, what=""):
    # relative to the array's scale: outputs near zero (ReLU, gradients) need an absolute floor
    rtol = RTOL[dtype]
    scale = max(1.0, float(np.max(np.abs(want))))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=what)


# -- the emulator catches planted bugs -------------------------------------------------------

def test_planted_race_is_caught(planted):
    x = np.arange(64, dtype=np.float32)
    y = np.zeros_like(x)
    with pytest.raises(ce.EmulationError, match="shared-memory race.*no __syncthreads"):
        planted.launch("fm_test_reverse<float>", (1,), (64,), (x, y, np.int32(0)))


def test_planted_race_fixed_runs_clean(planted):
    x = np.arange(64, dtype=np.float64)
    y = np.zeros_like(x)
    planted.launch("fm_test_reverse<double>", (1,), (64,), (x, y, np.int32(1)))
    np.testing.assert_array_equal(y, x[::-1])


def test_planted_out_of_bounds_write_is_caught(planted):
    y = np.zeros(100, dtype=np.float32)
    with pytest.raises(ce.EmulationError, match=r"out-of-bounds global memory access: element 100 of kernel "
                                                r"argument 0 \(an array of 100 elements\).*block \(3,0,0\)"):
        planted.launch("fm_test_fill<float>", (4,), (32,), (y, np.int32(100), np.int32(1)))
    planted.launch("fm_test_fill<float>", (4,), (32,), (y, np.int32(100), np.int32(0)))
    np.testing.assert_array_equal(y, np.arange(100))


def test_planted_out_of_bounds_read_is_caught(planted):
    x, y = np.ones(50), np.zeros(50)
    with pytest.raises(ce.EmulationError, match="out-of-bounds global memory access: element 50 of kernel argument 0"):
        planted.launch("fm_test_read<double>", (2,), (32,), (x, y, np.int32(50), np.int32(1)))


def test_planted_divergent_barrier_is_caught(planted):
    y = np.zeros(32, dtype=np.float32)
    with pytest.raises(ce.EmulationError, match="divergent __syncthreads"):
        planted.launch("fm_test_divergent<float>", (1,), (32,), (y, np.int32(5)))
    planted.launch("fm_test_divergent<float>", (1,), (32,), (y, np.int32(0)))
    np.testing.assert_array_equal(y, np.arange(32))


def test_planted_uninitialised_shared_read_is_caught(planted):
    y = np.zeros(32, dtype=np.float32)
    with pytest.raises(ce.EmulationError, match="read of uninitialized shared array 'buf' byte 0"):
        planted.launch("fm_test_uninit<float>", (1,), (32,), (y, np.int32(1)))


def test_planted_misaligned_vector_access_is_caught(planted):
    y = np.zeros(16, dtype=np.float32)
    with pytest.raises(ce.EmulationError, match="misaligned 16-byte global access"):
        planted.launch("fm_test_pack<float>", (1,), (32,), (y, np.int64(1)))
    with pytest.raises(ce.EmulationError, match="out-of-bounds"):
        planted.launch("fm_test_pack<float>", (1,), (32,), (y, np.int64(14)))
    planted.launch("fm_test_pack<float>", (1,), (32,), (y, np.int64(4)))
    assert y[4] == 1 and y.sum() == 1


def test_bad_launches_are_refused(planted):
    y = np.zeros(2048, dtype=np.float32)
    with pytest.raises(ce.EmulationError, match="more than 1024 threads"):
        planted.launch("fm_test_fill<float>", (1,), (2048,), (y, np.int32(10), np.int32(0)))
    with pytest.raises(ce.EmulationError, match=r"arguments \(p4,i8,i4\) do not match.*\(p4,i4,i4\)"):
        planted.launch("fm_test_fill<float>", (1,), (32,), (y, np.int64(10), np.int32(0)))
    with pytest.raises(TypeError, match="NumPy scalars of the exact C type"):
        planted.launch("fm_test_fill<float>", (1,), (32,), (y, 10, np.int32(0)))


def test_every_launched_kernel_is_in_the_emulated_build(emu):
    from fastmom.backends import cuda

    lib = ce.build()
    for expr in cuda.NAME_EXPRESSIONS:
        assert lib.signature(expr)


# -- every kernel against the reference --------------------------------------------------

CONV_CASES = [
    # (n, c, h, w, f, kh, kw, ph, pw): odd sizes, ragged pool borders, f not a multiple of 8
    (2, 1, 9, 11, 3, 3, 4, 2, 2),
    (3, 2, 10, 7, 9, 3, 3, 3, 2),
    (1, 3, 8, 8, 5, 5, 5, 1, 1),
    (2, 2, 13, 12, 4, 2, 3, 4, 3),
    (1, 2, 22, 21, 9, 3, 3, 2, 2),  # full 16x16-thread tiles, 2x2 of them, ragged right and bottom
]


def _conv_problem(case, dtype, act, key):
    n, c, h, wd, f, kh, kw, ph, pw = case
    r = _rng("conv", case, np.dtype(dtype).name, act, key)
    x = r.standard_normal((n, c, h, wd)).astype(dtype)
    w = r.standard_normal((f, c, kh, kw)).astype(dtype) * 0.5
    b = r.standard_normal(f).astype(dtype)
    PH, PW = (h - kh + 1) // ph, (wd - kw + 1) // pw
    return x, w, b, (ph, pw), (n, f, PH, PW)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_pool_forward(emu, case, dtype):
    for act in ACTS:
        x, w, b, pool, yshape = _conv_problem(case, dtype, act, "fwd")
        y, am = np.full(yshape, np.nan, dtype), np.full(yshape, -7, np.int32)
        yr, amr = np.empty(yshape, dtype), np.empty(yshape, np.int32)
        emu.conv_pool_forward(x, w, b, pool, act, y, am)
        ref.conv_pool_forward(x, w, b, pool, act, yr, amr)
        close(y, yr, dtype, act)
        np.testing.assert_array_equal(am, amr)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_pool_backward(emu, case, dtype):
    for act, first_layer in (("relu", False), ("sigmoid", True), ("tanh", False), ("linear", False)):
        x, w, b, pool, yshape = _conv_problem(case, dtype, act, "bwd")
        y, am = np.empty(yshape, dtype), np.empty(yshape, np.int32)
        ref.conv_pool_forward(x, w, b, pool, act, y, am)
        dy = _rng("dy", case, act).standard_normal(yshape).astype(dtype)
        outs = [np.full(w.shape, np.nan, dtype), np.full(b.shape, np.nan, dtype),
                None if first_layer else np.full(x.shape, np.nan, dtype)]
        want = [np.empty_like(w), np.empty_like(b), None if first_layer else np.empty_like(x)]
        emu.conv_pool_backward(x, w, y, am, dy, pool, act, *outs)
        ref.conv_pool_backward(x, w, y, am, dy, pool, act, *want)
        for got, exp, nm in zip(outs, want, ("dw", "db", "dx")):
            if exp is not None:
                close(got, exp, dtype, f"{act} {nm}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_forward_backward(emu, dtype):
    for (n, n_in, n_out), act, scale in (((7, 13, 5), "sigmoid", 1.0), ((5, 33, 37), "relu", 0.75),
                                         ((9, 4, 3), "tanh", 1.0), ((3, 10, 70), "linear", 0.5)):
        r = _rng("dense", n, act, np.dtype(dtype).name)
        x = r.standard_normal((n, n_in)).astype(dtype)
        w = r.standard_normal((n_in, n_out)).astype(dtype)
        b = r.standard_normal(n_out).astype(dtype)
        y, yr = np.full((n, n_out), np.nan, dtype), np.empty((n, n_out), dtype)
        emu.dense_forward(x, w, b, act, y, scale)
        ref.dense_forward(x, w, b, act, yr, scale)
        close(y, yr, dtype, f"forward {act}")
        dy = r.standard_normal((n, n_out)).astype(dtype)
        got = [np.full_like(w, np.nan), np.full_like(b, np.nan), np.full_like(x, np.nan)]
        want = [np.empty_like(w), np.empty_like(b), np.empty_like(x)]
        emu.dense_backward(x, w, yr, dy, act, *got)
        ref.dense_backward(x, w, yr, dy, act, *want)
        for g_, w_, nm in zip(got, want, ("dw", "db", "dx")):
            close(g_, w_, dtype, f"{act} {nm}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_mask_and_apply(emu, dtype):
    out = np.full((37, 11), np.nan, dtype)
    emu.dropout_mask(np.random.default_rng(3), 0.7, out)
    assert set(np.unique(out)) <= {0.0, 1.0}
    assert abs(out.mean() - 0.7) < 0.1
    u = np.random.default_rng(3).random(out.shape, dtype=dtype)
    np.testing.assert_array_equal(out, (u < dtype(0.7)).astype(dtype))  # same draws, same mask
    x = _rng("mask", np.dtype(dtype).name).standard_normal(out.shape).astype(dtype)
    got, want = np.empty_like(x), np.empty_like(x)
    emu.apply_mask(x, out, got)
    ref.apply_mask(x, out, want)
    np.testing.assert_array_equal(got, want)
    emu.apply_mask(x, out, x)  # in place, as the backward pass does
    np.testing.assert_array_equal(x, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,k", [(1, 2), (13, 10), (300, 7)])
def test_softmax_nll(emu, dtype, n, k):
    r = _rng("softmax", n, k, np.dtype(dtype).name)
    z = (r.standard_normal((n, k)) * 4).astype(dtype)
    labels = r.integers(0, k, n)
    probs, pr = np.full((n, k), np.nan, dtype), np.empty((n, k), dtype)
    cost, correct = emu.softmax_nll_forward(z, labels, probs)
    cr, kr = ref.softmax_nll_forward(z, labels, pr)
    close(probs, pr, dtype, "probs")
    assert float(cost) == pytest.approx(cr, rel=RTOL[dtype])
    assert int(correct) == kr
    assert emu.softmax_nll_forward(z, None, probs) == (None, None)
    close(probs, pr, dtype, "probs without labels")
    dz, dzr = np.full_like(z, np.nan), np.empty_like(z)
    emu.softmax_nll_backward(probs, labels.astype(np.int32), dz)
    ref.softmax_nll_backward(pr, labels, dzr)
    close(dz, dzr, dtype, "dz")


def test_softmax_bad_label_gives_nan_not_a_wild_read(emu):
    z = np.zeros((4, 3), np.float32)
    cost, _ = emu.softmax_nll_forward(z, np.array([0, 1, 5, 2]), np.empty_like(z))
    assert np.isnan(float(cost))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0, 1, 3])
def test_momentum_step(emu, dtype, offset):
    # offsets shift the buffers off 16-byte alignment: scalar head, packs, scalar tail
    n = 1037
    for momentum, nesterov, decay, n_decay, g_shift in ((0.9, False, 0.01, 700, 0), (0.8, True, 0.0, 0, 0),
                                                        (0.0, False, 0.02, 1037, 0), (0.9, True, 0.05, 3, 1)):
        r = _rng("momentum", n, offset, momentum, np.dtype(dtype).name)
        base = [r.standard_normal(n + 8).astype(dtype) for _ in range(3)]
        p, g = base[0][offset:offset + n], base[1][offset + g_shift:offset + g_shift + n]
        v = base[2][offset:offset + n] if momentum else None
        pr, gr, vr = p.copy(), g.copy(), None if v is None else v.copy()
        if g_shift:  # g misaligned relative to p: no common pack boundary
            assert emu.momentum_plan(p, g, v, momentum)[1] == 0
        before = [a.copy() for a in base]
        emu.momentum_step(p, g, v, 0.05, momentum, nesterov, decay, n_decay)
        ref.momentum_step(pr, gr, vr, 0.05, momentum, nesterov, decay, n_decay)
        close(p, pr, dtype, "p")
        if v is not None:
            close(v, vr, dtype, "v")
        else:
            np.testing.assert_array_equal(base[2], before[2])  # v untouched
        # nothing outside the views changed
        np.testing.assert_array_equal(base[0][:offset], before[0][:offset])
        np.testing.assert_array_equal(base[0][offset + n:], before[0][offset + n:])


def test_momentum_plan_uses_packs_when_aligned(emu):
    a = np.zeros(100, np.float32)
    assert emu.momentum_plan(a, a, a, 0.9) == (0, 25)
    assert emu.momentum_plan(a[1:], a[1:], a[1:], 0.9) == (3, 24)
    assert emu.momentum_plan(a[1:], a[:-1], a[1:], 0.9) == (99, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_squares(emu, dtype):
    a = _rng("ss").standard_normal((7, 9)).astype(dtype)
    assert emu.sum_squares(a) == pytest.approx(ref.sum_squares(a), rel=RTOL[dtype])


def test_emulated_training_steps_match_reference():
    """A tiny conv net: a few SGD steps through the Network with the emulated kernels."""
    import fastmom
    from fastmom import ConvPoolLayer, FullyConnectedLayer, Network, SoftmaxLayer
    from fastmom.backends import cuda

    emu = ce.kernels(n_sm=2)

    class EmuBackend:  # the reference module with the cuda backend's kernels swapped in
        pass

    be = EmuBackend()
    for attr in dir(ref):
        if not attr.startswith("_"):
            setattr(be, attr, getattr(ref, attr))
    for attr in ("conv_pool_forward", "conv_pool_backward", "dense_forward", "dense_backward",
                 "apply_mask", "softmax_nll_forward", "softmax_nll_backward", "momentum_step"):
        setattr(be, attr, getattr(emu, attr))
    be.name = "cuda-emulated"

    def make(backend):
        layers = [ConvPoolLayer((4, 1, 3, 3), (5, 1, 11, 11), (2, 2), fastmom.ReLU),
                  FullyConnectedLayer(4 * 4 * 4, 9, fastmom.sigmoid),
                  SoftmaxLayer(9, 10)]
        net = Network(layers, 5, device="reference", dtype=np.float64, seed=1)
        for layer in net.layers:
            layer.backend = backend
        net.backend = backend
        return net

    r = _rng("train")
    x = r.random((10, 121))
    y = r.integers(0, 10, 10)
    nets = [make(ref), make(be)]
    opts = [fastmom.optim.MomentumSGD(net, 0.1, 0.9, False, 0.1, 2) for net in nets]
    for o, net in zip(opts, nets):
        o.backend = net.backend
    xs, ys = nets[0].prepare_data((x, y))
    costs = [[], []]
    for step in range(4):
        sl = slice(5 * (step % 2), 5 * (step % 2) + 5)
        for i, (net, o) in enumerate(zip(nets, opts)):
            costs[i].append(float(net.train_step(xs[sl], ys[sl])))
            o.step()
    np.testing.assert_allclose(costs[1], costs[0], rtol=1e-10)
    np.testing.assert_allclose(nets[1].flat.data, nets[0].flat.data, rtol=1e-10, atol=1e-12)
    assert cuda.name == "cuda"
