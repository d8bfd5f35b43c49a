"""The cuda backend on a real GPU against the reference (marked ``gpu``; skipped
without CuPy or a CUDA device). Same problems as the emulated tests, plus a full
short training run."""
import zlib

import numpy as np
import pytest

from fastmom.backends import cuda
from fastmom.backends import reference as ref

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(cuda.is_available() is not True, reason=f"cuda backend unavailable: {cuda.is_available()}"),
]
RTOL = {np.float32: 1e-4, np.float64: 1e-10}
ACTS = ("sigmoid", "tanh", "relu", "linear")


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def close(got, want, dtype, what=""):
    want = np.asarray(want)
    rtol = RTOL[dtype]
    scale = max(1.0, float(np.max(np.abs(want))))
    np.testing.assert_allclose(cuda.to_numpy(got), want, rtol=rtol, atol=rtol * scale, err_msg=what)


def dev(a):
    return cuda.asarray(a)


CONV_CASES = [
    (2, 1, 9, 11, 3, 3, 4, 2, 2),
    (3, 2, 10, 7, 9, 3, 3, 3, 2),
    (1, 3, 8, 8, 5, 5, 5, 1, 1),
    (2, 2, 13, 12, 4, 2, 3, 4, 3),
    (16, 20, 12, 12, 40, 5, 5, 2, 2),   # network3's second conv layer
    (10, 1, 28, 28, 20, 5, 5, 2, 2),    # and its first
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_pool(case, dtype):
    n, c, h, wd, f, kh, kw, ph, pw = case
    for act in ACTS:
        r = _rng("conv", case, act)
        x = r.standard_normal((n, c, h, wd)).astype(dtype)
        w = (r.standard_normal((f, c, kh, kw)) * 0.5).astype(dtype)
        b = r.standard_normal(f).astype(dtype)
        shape = (n, f, (h - kh + 1) // ph, (wd - kw + 1) // pw)
        yr, amr = np.empty(shape, dtype), np.empty(shape, np.int32)
        ref.conv_pool_forward(x, w, b, (ph, pw), act, yr, amr)
        y, am = cuda.empty(shape, dtype), cuda.empty(shape, np.int32)
        cuda.conv_pool_forward(dev(x), dev(w), dev(b), (ph, pw), act, y, am)
        close(y, yr, dtype, act)
        np.testing.assert_array_equal(cuda.to_numpy(am), amr)
        dy = r.standard_normal(shape).astype(dtype)
        want = [np.empty_like(w), np.empty_like(b), np.empty_like(x)]
        ref.conv_pool_backward(x, w, yr, amr, dy, (ph, pw), act, *want)
        got = [cuda.empty(a.shape, dtype) for a in want]
        cuda.conv_pool_backward(dev(x), dev(w), dev(yr), dev(amr), dev(dy), (ph, pw), act, *got)
        for g_, w_, nm in zip(got, want, ("dw", "db", "dx")):
            close(g_, w_, dtype, f"{act} {nm}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense(dtype):
    for (n, n_in, n_out), act, scale in (((7, 13, 5), "sigmoid", 1.0), ((64, 640, 100), "relu", 0.75),
                                         ((9, 4, 3), "tanh", 1.0), ((3, 100, 10), "linear", 0.5)):
        r = _rng("dense", n, act)
        x, w = r.standard_normal((n, n_in)).astype(dtype), r.standard_normal((n_in, n_out)).astype(dtype)
        b, dy = r.standard_normal(n_out).astype(dtype), r.standard_normal((n, n_out)).astype(dtype)
        yr = np.empty((n, n_out), dtype)
        ref.dense_forward(x, w, b, act, yr, scale)
        y = cuda.empty((n, n_out), dtype)
        cuda.dense_forward(dev(x), dev(w), dev(b), act, y, scale)
        # cuBLAS may use other summation orders (and TF32 only if enabled: CuPy's default is off)
        close(y, yr, dtype, act)
        want = [np.empty_like(w), np.empty_like(b), np.empty_like(x)]
        ref.dense_backward(x, w, yr, dy, act, *want)
        got = [cuda.empty(a.shape, dtype) for a in want]
        cuda.dense_backward(dev(x), dev(w), dev(yr), dev(dy), act, *got)
        for g_, w_, nm in zip(got, want, ("dw", "db", "dx")):
            close(g_, w_, dtype, f"{act} {nm}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_and_mask(dtype):
    out = cuda.empty((300, 70), dtype)
    cuda.dropout_mask(cuda.make_rng(np.random.SeedSequence(1)), 0.6, out)
    m = cuda.to_numpy(out)
    assert set(np.unique(m)) <= {0.0, 1.0} and abs(m.mean() - 0.6) < 0.02
    x = _rng("mask").standard_normal(m.shape).astype(dtype)
    got = cuda.empty(m.shape, dtype)
    cuda.apply_mask(dev(x), out, got)
    np.testing.assert_array_equal(cuda.to_numpy(got), x * m)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,k", [(1, 2), (13, 10), (1024, 10), (3000, 7)])
def test_softmax_nll(dtype, n, k):
    r = _rng("softmax", n, k)
    z = (r.standard_normal((n, k)) * 4).astype(dtype)
    labels = r.integers(0, k, n)
    pr = np.empty((n, k), dtype)
    cr, kr = ref.softmax_nll_forward(z, labels, pr)
    probs = cuda.empty((n, k), dtype)
    cost, correct = cuda.softmax_nll_forward(dev(z), dev(labels), probs)
    assert cost.shape == () and correct.shape == ()  # device scalars, no host sync
    close(probs, pr, dtype)
    assert float(cost) == pytest.approx(cr, rel=RTOL[dtype])
    assert int(correct) == kr
    dzr = np.empty_like(z)
    ref.softmax_nll_backward(pr, labels, dzr)
    dz = cuda.empty(z.shape, dtype)
    cuda.softmax_nll_backward(probs, dev(labels), dz)
    close(dz, dzr, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0, 1, 3])
@pytest.mark.parametrize("n", [1, 1037, 1_000_003])
def test_momentum_step(dtype, offset, n):
    for momentum, nesterov, decay, n_decay in ((0.9, False, 0.01, n // 2), (0.8, True, 0.0, 0), (0.0, False, 0.02, n)):
        r = _rng("momentum", n, offset, momentum)
        p0, g0, v0 = (r.standard_normal(n + 4).astype(dtype)[offset:offset + n] for _ in range(3))
        pr, vr = p0.copy(), v0.copy()
        ref.momentum_step(pr, g0, vr if momentum else None, 0.05, momentum, nesterov, decay, n_decay)
        bufs = [cuda.asarray(np.concatenate([np.zeros(offset, dtype), a])) for a in (p0, g0, v0)]
        p, g, v = (b[offset:] for b in bufs)
        cuda.momentum_step(p, g, v if momentum else None, 0.05, momentum, nesterov, decay, n_decay)
        close(p, pr, dtype, "p")
        close(v, vr if momentum else v0, dtype, "v")


def test_training_run_matches_reference(sample):
    """network3's two-conv ReLU net for two epochs on 1000 sample images."""
    import fastmom
    from fastmom import ConvPoolLayer, FullyConnectedLayer, Network, SoftmaxLayer

    (xtr, ytr), (xva, yva) = _split(sample)
    hist = {}
    for device in ("reference", "cuda"):
        net = Network([
            ConvPoolLayer((20, 1, 5, 5), (10, 1, 28, 28), (2, 2), fastmom.ReLU),
            ConvPoolLayer((40, 20, 5, 5), (10, 20, 12, 12), (2, 2), fastmom.ReLU),
            FullyConnectedLayer(40 * 4 * 4, 100, fastmom.ReLU),
            SoftmaxLayer(100, 10)], 10, device=device, dtype=np.float64, seed=3)
        tr = fastmom.Trainer(net, eta=0.03, momentum=0.9, lmbda=0.1, shuffle=False, progress=False, log=lambda *a: None)
        hist[device] = (tr.fit((xtr, ytr), 2, (xva, yva)), cuda.to_numpy(net.flat.data) if device == "cuda"
                        else np.asarray(net.flat.data))
    (h_ref, p_ref), (h_gpu, p_gpu) = hist["reference"], hist["cuda"]
    np.testing.assert_allclose(h_gpu.column("cost"), h_ref.column("cost"), rtol=1e-8)
    assert h_gpu.column("validation_accuracy") == h_ref.column("validation_accuracy")
    np.testing.assert_allclose(p_gpu, p_ref, rtol=1e-7, atol=1e-9)


def _split(sample):
    (xtr, ytr), (xva, yva), _ = sample  # load_sample(): (training, validation, test) pairs
    return (np.asarray(xtr[:1000]), np.asarray(ytr[:1000])), (np.asarray(xva[:500]), np.asarray(yva[:500]))
