"""The CUDA emulation itself (fastmom.backends.cuda_emulation) and what only it shows.

Runs in every CI run: needs g++ (C++20), not a GPU or CuPy. The planted-bug tests prove
the emulation fails a kernel with a race, an out-of-range index, a divergent barrier,
an uninitialised shared read or a misaligned vector access; the rest check the cuda
backend's host code where it differs from the other backends (its dropout draw, its
momentum plan over unaligned views, a bad label) and a short emulated training run.
Every kernel's parity with the reference runs in ``test_parity.py`` (``emulated-cuda``).
"""
import pathlib

import numpy as np
import pytest

from backend_cases import assert_close, rng_for
from fastmom.backends import cuda_emulation as ce
from fastmom.backends import reference as ref

pytestmark = pytest.mark.skipif(ce.compiler() is None, reason="no C++ compiler for the CUDA emulation")

PLANTED = pathlib.Path(__file__).resolve().parent / "data" / "planted_bugs.cu"
PLANTED_NAMES = [f"fm_test_{k}<{t}>" for k in ("reverse", "fill", "read", "divergent", "uninit", "pack")
                 for t in ("float", "double")]


@pytest.fixture(scope="module")
def planted():
    return ce.build(sources=[PLANTED], names=PLANTED_NAMES)


@pytest.fixture(scope="module")
def emu():
    return ce.kernels(n_sm=2)


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


# -- what the cuda backend's host code does its own way ------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_mask_is_the_kernels_draw(emu, dtype):
    out = np.full((37, 11), np.nan, dtype)
    emu.dropout_mask(np.random.default_rng(3), 0.7, out)
    assert set(np.unique(out)) <= {0.0, 1.0}
    assert abs(out.mean() - 0.7) < 0.1
    u = np.random.default_rng(3).random(out.shape, dtype=dtype)
    np.testing.assert_array_equal(out, (u < dtype(0.7)).astype(dtype))  # same draws, same mask


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
        r = rng_for("momentum", n, offset, momentum, np.dtype(dtype).name)
        base = [r.standard_normal(n + 8).astype(dtype) for _ in range(3)]
        p, g = base[0][offset:offset + n], base[1][offset + g_shift:offset + g_shift + n]
        v = base[2][offset:offset + n] if momentum else None
        pr, gr, vr = p.copy(), g.copy(), None if v is None else v.copy()
        if g_shift:  # g misaligned relative to p: no common pack boundary
            assert emu.momentum_plan(p, g, v, momentum)[1] == 0
        before = [a.copy() for a in base]
        emu.momentum_step(p, g, v, 0.05, momentum, nesterov, decay, n_decay)
        ref.momentum_step(pr, gr, vr, 0.05, momentum, nesterov, decay, n_decay)
        assert_close(p, pr, dtype, "p")
        if v is not None:
            assert_close(v, vr, dtype, "v")
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

    r = rng_for("train")
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
