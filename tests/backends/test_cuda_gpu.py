"""The cuda backend on a real GPU: a full short training run against the reference
(marked ``gpu``; skipped without CuPy or a CUDA device). Each kernel's parity with the
reference runs in ``test_parity.py`` (its ``gpu`` parameter)."""
import numpy as np
import pytest

from fastmom.backends import cuda

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(cuda.is_available() is not True, reason=f"cuda backend unavailable: {cuda.is_available()}"),
]


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


def test_captured_small_batch_step_replays_eager_steps():
    """A batch-10 training step (no cuBLAS: the small-batch dense kernels) captured once
    by ``cuda.capture_step`` and replayed on new batches copied into its input buffers
    gives the parameters of the same steps run eagerly (float64)."""
    import fastmom
    from fastmom import ConvPoolLayer, FullyConnectedLayer, Network, SoftmaxLayer

    def build():
        net = Network([ConvPoolLayer((20, 1, 5, 5), (10, 1, 28, 28), (2, 2), fastmom.ReLU),
                       FullyConnectedLayer(20 * 12 * 12, 100, fastmom.ReLU),
                       SoftmaxLayer(100, 10)], 10, device="cuda", dtype=np.float64, seed=3)
        return net, fastmom.optim.MomentumSGD(net, 0.03, 0.9, False, 0.1, 1000)

    (net0, opt0), (net1, opt1) = build(), build()
    rng = np.random.default_rng(0)
    batches = [net0.prepare_data((rng.random((10, 784)), rng.integers(0, 10, 10))) for _ in range(3)]
    xbuf, ybuf = cuda.xp.empty_like(batches[0][0]), cuda.xp.empty_like(batches[0][1])
    xbuf[...], ybuf[...] = batches[0]

    def step():
        net1.train_step(xbuf, ybuf)
        opt1.step()

    captured = cuda.capture_step(step)  # one eager step on batch 0, then the capture (not run)
    net0.train_step(*batches[0])
    opt0.step()
    for xb, yb in batches[1:]:
        with captured.stream:
            xbuf[...], ybuf[...] = xb, yb
        captured.replay()
        net0.train_step(xb, yb)
        opt0.step()
    captured.stream.synchronize()
    np.testing.assert_allclose(cuda.to_numpy(net1.flat.data), cuda.to_numpy(net0.flat.data), rtol=1e-10,
                               atol=1e-12)
