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


def _emulated_backend(emu):
    """The reference module with the cuda backend's kernels (``emu``) swapped in."""

    class EmuBackend:
        pass

    be = EmuBackend()
    for attr in dir(ref):
        if not attr.startswith("_"):
            setattr(be, attr, getattr(ref, attr))
    for attr in ("conv_pool_forward", "conv_pool_backward", "dense_forward", "dense_backward",
                 "apply_mask", "softmax_nll_forward", "softmax_nll_backward", "momentum_step"):
        setattr(be, attr, getattr(emu, attr))
    be.name = "cuda-emulated"
    return be


def _tiny_net(backend, dtype=np.float64, batch=5):
    """A conv + FC + softmax net (network3's layer kinds) of ``batch`` on 11x11 images,
    with its optimizer."""
    import fastmom
    from fastmom import ConvPoolLayer, FullyConnectedLayer, Network, SoftmaxLayer

    layers = [ConvPoolLayer((4, 1, 3, 3), (batch, 1, 11, 11), (2, 2), fastmom.ReLU),
              FullyConnectedLayer(4 * 4 * 4, 9, fastmom.sigmoid),
              SoftmaxLayer(9, 10)]
    net = Network(layers, batch, device="reference", dtype=dtype, seed=1)
    for layer in net.layers:
        layer.backend = backend
    net.backend = backend
    opt = fastmom.optim.MomentumSGD(net, 0.1, 0.9, False, 0.1, 2)
    opt.backend = backend
    return net, opt


def test_emulated_training_steps_match_reference():
    """A tiny conv net: a few SGD steps through the Network with the emulated kernels."""
    from fastmom.backends import cuda

    be = _emulated_backend(ce.kernels(n_sm=2))
    r = rng_for("train")
    x = r.random((10, 121))
    y = r.integers(0, 10, 10)
    (net0, opt0), (net1, opt1) = _tiny_net(ref), _tiny_net(be)
    xs, ys = net0.prepare_data((x, y))
    costs = [[], []]
    for step in range(4):
        sl = slice(5 * (step % 2), 5 * (step % 2) + 5)
        for i, (net, o) in enumerate(((net0, opt0), (net1, opt1))):
            costs[i].append(float(net.train_step(xs[sl], ys[sl])))
            o.step()
    np.testing.assert_allclose(costs[1], costs[0], rtol=1e-10)
    np.testing.assert_allclose(net1.flat.data, net0.flat.data, rtol=1e-10, atol=1e-12)
    assert cuda.name == "cuda"


# one training step of _tiny_net, per dense regime. Both: conv forward 1, the softmax
# itself 1, softmax backward 1, conv backward 2 (partial and final weight gradient, read
# from the argmax; no input gradient for the first layer), the momentum step 1.
# Small batch (our dense kernels, on 2 SMs): FC forward 2 (fm_dense_small over 64 inputs
# in 2 slices + fm_bias_act adding them), softmax forward 1 (9 inputs: one slice, the
# epilogue fused), each dense backward 2 (fm_dense_wgrad_small, then fm_dense_small for
# the input gradient: one slice each); no cuBLAS. Above DENSE_SMALL_ROWS: FC and softmax
# forward 1 each (fm_bias_act after the cuBLAS product), dense backward 1 each
# (fm_dense_dz_db) + cuBLAS: 2 forward products, 2 weight and 2 input gradients.
STEP_COUNTS = {10: dict(launches=1 + 2 + 1 + 1 + 1 + 2 + 2 + 2 + 1, cublas=0),
               40: dict(launches=1 + 2 + 1 + 1 + 2 + 2 + 1, cublas=2 + 2 + 2)}


@pytest.mark.parametrize("batch", sorted(STEP_COUNTS))
def test_training_step_after_the_first_allocates_nothing(batch):
    """The host code's counters over whole steps: a fixed launch count, no allocation,
    no host sync once the first step has built the workspaces; and no cuBLAS call at a
    small batch (10, like network3's), which makes the step capturable into a CUDA graph
    (CuPy refuses cuBLAS under stream capture), while a batch over 32 keeps cuBLAS."""
    from fastmom.backends import cuda_dense

    assert cuda_dense.dense_regime(batch) == ("small" if batch <= 32 else "cublas")
    emu = ce.kernels(n_sm=2)
    net, opt = _tiny_net(_emulated_backend(emu), np.float32, batch)
    r = rng_for("alloc", batch)
    xs, ys = net.prepare_data((r.random((batch, 121)), r.integers(0, 10, batch)))
    cost = net.train_step(xs, ys)  # warm-up: workspaces are allocated here
    opt.step()
    assert emu.counts["allocations"] > 0
    first = float(cost)
    before = dict(emu.counts)
    cost = net.train_step(xs, ys)
    opt.step()
    after = dict(emu.counts)
    assert after["allocations"] == before["allocations"], "a training step after the first allocated"
    assert after["launches"] - before["launches"] == STEP_COUNTS[batch]["launches"]
    assert after["cublas"] - before["cublas"] == STEP_COUNTS[batch]["cublas"]
    # the only library calls of this step are the cuBLAS products (dropout is off)
    assert after["library_calls"] - before["library_calls"] == STEP_COUNTS[batch]["cublas"]
    assert after["syncs"] == before["syncs"]  # the cost stays on the device until read
    assert float(cost) != first  # the step moved the parameters


def test_softmax_scalars_are_workspaces(emu):
    z = np.zeros((4, 3), np.float32)
    labels = np.array([0, 1, 2, 0])
    c1, k1 = emu.softmax_nll_forward(z, labels, np.empty_like(z))
    n = emu.counts["allocations"]
    c2, k2 = emu.softmax_nll_forward(z + 1, labels, np.empty_like(z))
    assert c1 is c2 and k1 is k2 and emu.counts["allocations"] == n
    assert float(c2) == pytest.approx(np.log(3)) and int(k2) == 2  # ties go to class 0


# -- launch limits -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32])
def test_batch_over_the_grid_limit_is_a_value_error_before_any_launch(emu, dtype):
    """gridDim.z is the batch on the conv kernels: 65536 images cannot launch."""
    n = 65536
    x = np.zeros((n, 1, 4, 4), dtype)
    w, b = np.zeros((2, 1, 3, 3), dtype), np.zeros(2, dtype)
    y, argmax = np.zeros((n, 2, 1, 1), dtype), np.zeros((n, 2, 1, 1), np.int32)
    launches = emu.counts["launches"]
    with pytest.raises(ValueError, match=r"fm_conv_pool_fwd: gridDim\.z would be 65536 \(images\).*65535"):
        emu.conv_pool_forward(x, w, b, (2, 2), "relu", y, argmax)
    dw, db, dx = np.zeros_like(w), np.zeros_like(b), np.zeros_like(x)
    with pytest.raises(ValueError, match=r"gridDim\.z would be 65536 \(images\)"):
        emu.conv_pool_backward(x, w, y, argmax, np.zeros_like(y), (2, 2), "relu", dw, db, dx)
    assert emu.counts["launches"] == launches  # refused before the first kernel of the pass


def test_grid_checks_every_dimension():
    from fastmom.backends import cuda

    assert cuda.grid("k", 2**31 - 1, 65535, 65535) == (2**31 - 1, 65535, 65535)
    for dims, axis in (((2**31, 1, 1), "x"), ((1, 65536, 1), "y"), ((1, 1, 0), "z")):
        with pytest.raises(ValueError, match=f"k: gridDim\\.{axis}"):
            cuda.grid("k", *dims)


# -- sum of squares ------------------------------------------------------------------------

def test_sum_squares_accumulates_in_float64(emu):
    """float32 input whose float32 sum would drop every one of the small squares."""
    x = np.ones(300_001, np.float32)
    x[0] = 4096  # 4096^2 = 2^24: from there float32 cannot add 1
    want = 2.0**24 + 300_000
    assert ref.sum_squares(x) == want
    assert np.float32(2.0**24) + np.float32(1) == np.float32(2.0**24)
    assert emu.sum_squares(x) == want
    big = np.full(1000, 1e20, np.float32)  # float32 squares overflow, float64 ones do not
    assert emu.sum_squares(big) == pytest.approx(ref.sum_squares(big), rel=1e-12)
    assert emu.sum_squares(np.zeros(0, np.float64)) == 0.0
    x[7] = np.nan
    assert np.isnan(emu.sum_squares(x))


# -- the CuPy launcher ---------------------------------------------------------------------

def test_cupy_launcher_looks_each_function_up_once(monkeypatch):
    """Per (device, name expression), RawModule.get_function runs once; later launches
    call the kept RawKernel (checked with a stand-in for CuPy: no GPU needed)."""
    from types import SimpleNamespace

    from fastmom.backends import cuda

    calls, device = [], [0]

    class Module:
        def get_function(self, expr):
            calls.append(expr)
            return lambda grid, block, args, shared_mem=0: launched.append((expr, grid, shared_mem))

    launched = []
    fake = SimpleNamespace(cuda=SimpleNamespace(runtime=SimpleNamespace(getDevice=lambda: device[0])),
                           RawModule=lambda **kw: Module())
    monkeypatch.setattr(cuda, "_cupy", lambda: fake)
    monkeypatch.setattr(cuda, "_modules", {})
    monkeypatch.setattr(cuda, "_functions", {})
    for _ in range(3):
        cuda._cupy_launch("fm_apply_mask<float>", (1, 1, 1), (256, 1, 1), (), 0)
    assert calls == ["fm_apply_mask<float>"] and len(launched) == 3
    device[0] = 1  # another device: its own module and function
    cuda._cupy_launch("fm_apply_mask<float>", (1, 1, 1), (256, 1, 1), (), 0)
    assert calls == ["fm_apply_mask<float>"] * 2 and set(cuda._modules) == {0, 1}
