"""The network3-compatible API: construction, parameters, inference, bad input,
network3's printed lines and the momentum acceptance run on the bundled sample."""
import re

import numpy as np
import pytest

import fastmom
from fastmom import (ConvPoolLayer, DeviceError, FullyConnectedLayer, Network, ReLU, SoftmaxLayer, linear,
                     sigmoid, tanh)
from fastmom.models import conv_layers, fc_layers


def tiny_layers(mbs=4, act=ReLU):
    return [ConvPoolLayer((3, 1, 5, 5), (mbs, 1, 28, 28), activation_fn=act),
            FullyConnectedLayer(3 * 12 * 12, 11, activation_fn=act),
            SoftmaxLayer(11, 10)]


def test_public_names():
    for name in ["Network", "ConvPoolLayer", "FullyConnectedLayer", "SoftmaxLayer", "sigmoid", "tanh",
                 "ReLU", "linear", "load_data_shared"]:
        assert hasattr(fastmom, name)
    assert ReLU(np.array([-1.0, 2.0])).tolist() == [0.0, 2.0]
    assert linear(np.array([-1.5])).tolist() == [-1.5]
    np.testing.assert_allclose(sigmoid(np.array([0.0, 800.0, -800.0])), [0.5, 1.0, 0.0])
    np.testing.assert_allclose(tanh(np.array([0.3])), np.tanh(0.3))


def test_params_are_writable_views_in_network3_order():
    net = Network(conv_layers(10), 10, device="reference", seed=1)
    shapes = [p.shape for p in net.params]
    assert shapes == [(20, 1, 5, 5), (20,), (40, 20, 5, 5), (40,), (640, 100), (100,), (100, 10), (10,)]
    assert sum(p.size for p in net.params) == 85670  # the issue's figure for network3's net
    for layer, (w, b) in zip(net.layers, zip(net.params[0::2], net.params[1::2])):
        assert layer.w is w and layer.b is b
        assert np.shares_memory(w, net.flat.data)
    x = np.random.default_rng(0).random((3, 784))
    before = net.forward(x)
    net.params[6][...] = np.random.default_rng(1).normal(size=(100, 10))
    assert not np.allclose(net.forward(x), before)  # writing a view changes the network
    assert net.flat.data[: net.flat.n_weights].size == 20 * 25 + 40 * 500 + 64000 + 1000


def test_network3_initialisation():
    net = Network(conv_layers(10), 10, device="reference", seed=3)
    w0, b0, w1, b1, w2, b2, w3, b3 = net.params
    # conv: N(0, 1/n_out), n_out = filters*kh*kw/prod(poolsize); biases N(0, 1)
    assert np.std(w1) == pytest.approx(np.sqrt(1 / (40 * 25 / 4)), rel=0.05)
    assert np.std(w2) == pytest.approx(np.sqrt(1 / 100), rel=0.05)
    assert np.std(b1) == pytest.approx(1.0, rel=0.35)
    assert not w3.any() and not b3.any()  # softmax starts at zero
    fan_in = Network(conv_layers(10), 10, device="reference", seed=3, weight_init="fan_in")
    assert np.std(fan_in.params[2]) == pytest.approx(np.sqrt(1 / (20 * 25)), rel=0.05)
    assert np.std(fan_in.params[4]) == pytest.approx(np.sqrt(1 / 640), rel=0.05)


def test_seed_reproducible_and_distinct():
    a = Network(tiny_layers(), 4, device="reference", seed=5)
    b = Network(tiny_layers(), 4, device="reference", seed=5)
    c = Network(tiny_layers(), 4, device="reference", seed=6)
    np.testing.assert_array_equal(a.flat.data, b.flat.data)
    assert not np.array_equal(a.flat.data, c.flat.data)


@pytest.mark.parametrize("n", [1, 3, 4, 9])
def test_inference_any_batch_size(n):
    net = Network(tiny_layers(), 4, device="reference", seed=0)
    for p in net.params:
        p[...] = np.random.default_rng(2).normal(0, 0.1, p.shape)
    x = np.random.default_rng(n).random((n, 784)).astype(np.float32)
    probs = net.forward(x)
    assert probs.shape == (n, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    # row i does not depend on which batch it was in
    np.testing.assert_allclose(net.forward(x[-1:])[0], probs[-1], rtol=1e-5)
    assert net.predict(x).tolist() == probs.argmax(1).tolist()
    y = probs.argmax(1)
    assert net.accuracy(x, y) == 1.0
    assert net.accuracy(x, (y + 1) % 10) == 0.0
    if n <= 4:
        cost, grads = net.cost_and_gradients(x, y)
        assert np.isfinite(cost) and [g.shape for g in grads] == [p.shape for p in net.params]


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_inference_keeps_nothing_for_a_backward_pass(device):
    # an inference forward records no argmax (the kernels skip it), so a backward pass
    # after it would read the previous training step's record against new activations
    if device not in fastmom.available_devices():
        pytest.skip(f"{device} not built")
    net = Network(tiny_layers(), 4, device=device, seed=0)
    x = np.random.default_rng(3).random((4, 784)).astype(np.float32)
    y = np.arange(4) % 10
    cost, grads = net.cost_and_gradients(x, y)  # a training forward and backward
    net.forward(x)
    conv, fc, soft = net.layers
    for call in (soft.backward, lambda: fc.backward(np.ones((4, 11), np.float32)),
                 lambda: conv.backward(np.ones((4, 3, 12, 12), np.float32))):
        with pytest.raises(RuntimeError, match=r"train=True.*inference"):
            call()
    # and training afterwards is unchanged
    cost2, grads2 = net.cost_and_gradients(x, y)
    assert cost2 == cost
    for g, g2 in zip(grads, grads2):
        np.testing.assert_array_equal(g, g2)


def test_dropout_scales_at_inference():
    layers = [FullyConnectedLayer(784, 30, activation_fn=linear, p_dropout=0.25), SoftmaxLayer(30, 10)]
    net = Network(layers, 5, device="reference", dtype=np.float64, seed=0)
    x = np.random.default_rng(1).random((2, 784))
    w, b = net.params[0], net.params[1]
    h = 0.75 * x @ w + b
    w3, b3 = net.params[2], net.params[3]
    w3[...] = np.random.default_rng(2).normal(size=w3.shape)
    z = h @ w3 + b3
    expected = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(net.forward(x), expected / expected.sum(1, keepdims=True), rtol=1e-10)


# -- bad input -------------------------------------------------------------------------

def test_bad_construction():
    with pytest.raises(ValueError, match="input channels"):
        ConvPoolLayer((20, 3, 5, 5), (10, 1, 28, 28))
    with pytest.raises(ValueError, match="larger than"):
        ConvPoolLayer((20, 1, 29, 5), (10, 1, 28, 28))
    with pytest.raises(ValueError, match="p_dropout"):
        FullyConnectedLayer(10, 10, p_dropout=1.0)
    with pytest.raises(ValueError, match="n_in=100 but layers\\[0\\] outputs 2880"):
        Network([ConvPoolLayer((20, 1, 5, 5), (10, 1, 28, 28)), FullyConnectedLayer(100, 10),
                 SoftmaxLayer(10, 10)], 10, device="reference")
    with pytest.raises(ValueError, match="image_shape\\[0\\]"):
        Network(tiny_layers(mbs=8), 4, device="reference")
    with pytest.raises(ValueError, match="SoftmaxLayer"):
        Network([FullyConnectedLayer(784, 10)], 4, device="reference")
    with pytest.raises(ValueError, match="activation_fn"):
        FullyConnectedLayer(3, 4, activation_fn=np.exp)


def test_unknown_and_unavailable_devices():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        Network(fc_layers(4), 4, device="tpu")
    try:
        import cupy  # noqa: F401
        has_gpu = cupy.cuda.is_available()
    except Exception:
        has_gpu = False
    if not has_gpu:
        with pytest.raises(DeviceError, match="cuda"):
            Network(fc_layers(4), 4, device="cuda")


def test_environment_selects_device(monkeypatch):
    monkeypatch.setenv("FASTMOM_DEVICE", "reference")
    assert Network(fc_layers(4), 4).device == "reference"
    monkeypatch.setenv("FASTMOM_DEVICE", "nonsense")
    with pytest.raises(ValueError, match="nonsense"):
        Network(fc_layers(4), 4)


def test_bad_call_inputs():
    net = Network(tiny_layers(), 4, device="reference", seed=0)
    good = np.random.default_rng(0).random((4, 784))
    with pytest.raises(ValueError, match=r"shape \(N, 784\)"):
        net.forward(np.zeros((4, 28, 27)))
    with pytest.raises(ValueError, match="NaN"):
        net.forward(np.full((2, 784), np.nan))
    with pytest.raises(ValueError, match=r"labels y must be in \[0, 10\)"):
        net.accuracy(good, np.array([0, 1, 10, 2]))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        net.cost_and_gradients(good, np.array([0, -1, 2, 3]))
    with pytest.raises(ValueError, match="more than mini_batch_size"):
        net.cost_and_gradients(np.random.default_rng(0).random((5, 784)), np.zeros(5, int))
    with pytest.raises(TypeError, match="integer"):
        net.accuracy(good, np.array([0.0, 1, 2, 3]))
    with pytest.raises(ValueError, match="mini_batch_size=5 differs"):
        net.SGD((good, np.zeros(4, int)), 1, 5, 0.1, (good, np.zeros(4, int)), None)
    with pytest.raises(ValueError, match="eta"):
        net.SGD((good, np.zeros(4, int)), 1, 4, -0.1, (good, np.zeros(4, int)), None)
    with pytest.raises(ValueError, match="momentum"):
        net.SGD((good, np.zeros(4, int)), 1, 4, 0.1, (good, np.zeros(4, int)), None, momentum=1.5)


# -- network3's printed lines and the acceptance run ------------------------------------

NETWORK3_LINE = re.compile(
    r"^(Training mini-batch number \d+"
    r"|Epoch \d+: validation accuracy \d+\.\d\d%"
    r"|This is the best validation accuracy to date\."
    r"|The corresponding test accuracy is \d+\.\d\d%"
    r"|Finished training network\."
    r"|Best validation accuracy of \d+\.\d\d% obtained at iteration \d+"
    r"|Corresponding test accuracy of \d+\.\d\d%)$")


def test_sgd_output_matches_network3_format(sample, capsys):
    (xtr, ytr), va, te = sample
    net = Network(tiny_layers(10), 10, seed=0)
    # 2010 images at batch 10: 201 mini-batches (the partial one never exists here)
    hist = net.SGD((xtr[:2010], ytr[:2010]), 2, 10, 0.05, va, te, lmbda=0.1, momentum=0.5)
    lines = capsys.readouterr().out.splitlines()
    assert all(NETWORK3_LINE.match(line) for line in lines), lines
    assert lines[0] == "Training mini-batch number 0"
    assert lines[1] == f"Epoch 0: validation accuracy {hist[0]['validation_accuracy']:.2%}"
    assert lines[2] == "This is the best validation accuracy to date."
    assert lines[3] == f"The corresponding test accuracy is {hist[0]['test_accuracy']:.2%}"
    assert lines[-3] == "Finished training network."
    assert lines[-2] == (f"Best validation accuracy of {hist.best_validation_accuracy:.2%} obtained at "
                         f"iteration {hist.best_iteration}")
    assert hist.best_iteration in (200, 401)
    assert [r["epoch"] for r in hist] == [0, 1]
    for r in hist:
        assert r["cost"] > 0 and r["seconds"] > 0 and r["images_per_second"] > 0


def test_sgd_drops_partial_batches_and_prints_every_1000(sample, capsys):
    (xtr, ytr), (xva, yva), te = sample
    net = Network(fc_layers(3), 3, seed=0)
    # 3005 images at batch 3 -> 1001 mini-batches per epoch, the last 2 images dropped
    net.SGD((xtr[:3005], ytr[:3005]), 1, 3, 0.1, (xva[:100], yva[:100]), None)
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["Training mini-batch number 0", "Training mini-batch number 1000"]
    assert "Best validation accuracy of" in out[-1] and "iteration 1000" in out[-1]
    # accuracy is the mean over the 33 full batches of 3: a multiple of 1/99
    acc = float(out[2].split()[-1].rstrip("%")) / 100
    assert min(abs(acc - k / 99) for k in range(100)) < 5e-5


def test_momentum_acceptance_on_bundled_sample(sample):
    """network3's two-conv ReLU net, lmbda 0.1, batch 10, eta 0.01, momentum 0.9:
    >= 93% validation within 3 epochs and >= 94% within 5 (issue 2)."""
    tr, va, te = sample
    net = Network(conv_layers(10), 10, seed=0)
    hist = net.SGD(tr, 5, 10, 0.01, va, te, lmbda=0.1, momentum=0.9)
    val = hist.column("validation_accuracy")
    assert max(val[:3]) >= 0.93, val
    assert max(val) >= 0.94, val
