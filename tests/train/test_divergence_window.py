"""The windowed divergence guard (``Trainer(check_finite=N)``, the GPU default): one
check every N mini-batches, and on failure the parameters and velocity come back to
their state before the window. Tested on the host backends, where it runs the same code."""
import numpy as np
import pytest

from fastmom import DivergenceError, FullyConnectedLayer, Network, ReLU, SoftmaxLayer, Trainer

BS = 5


def make_net(device):
    return Network([FullyConnectedLayer(784, 13, activation_fn=ReLU), SoftmaxLayer(13, 10)], BS,
                   device=device, seed=4)


@pytest.fixture
def data(sample):
    (x, y), _, _ = sample
    return x[:20 * BS].copy(), y[:20 * BS].copy()


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_window_restores_state_before_the_bad_window(data, device):
    x, y = data
    if device == "cpu":
        pytest.importorskip("fastmom._kernels._cpu")
    # mini-batch 7 holds a huge (finite) image: its cost and update overflow
    x_bad = x.copy()
    x_bad[7 * BS + 2] = 3e38
    good = make_net(device)
    tg = Trainer(good, eta=0.05, momentum=0.9, shuffle=False, check_finite=False, progress=False)
    tg.fit((x[:5 * BS], y[:5 * BS]), 1)  # mini-batches 0..4: the state before window 5..9
    bad = make_net(device)
    tb = Trainer(bad, eta=0.05, momentum=0.9, shuffle=False, check_finite=5, progress=False)
    with pytest.raises(DivergenceError, match=r"epoch 0, mini-batch 5 .*within mini-batches 5 to 9.*"
                                              r"restored to their state before mini-batch 5"):
        tb.fit((x_bad, y), 1)
    np.testing.assert_array_equal(bad.flat.data, good.flat.data)
    np.testing.assert_array_equal(tb.optimizer.velocity, tg.optimizer.velocity)
    assert np.isfinite(bad.flat.data).all()


def test_windowed_run_matches_per_step_run(data):
    x, y = data
    a, b = make_net("reference"), make_net("reference")
    Trainer(a, eta=0.05, momentum=0.9, seed=1, check_finite=True, progress=False).fit((x, y), 2)
    Trainer(b, eta=0.05, momentum=0.9, seed=1, check_finite=3, progress=False).fit((x, y), 2)
    np.testing.assert_array_equal(a.flat.data, b.flat.data)  # the check never changes a good run


@pytest.mark.parametrize("bad", [0, -2, 2.5, "often"])
def test_bad_interval(bad):
    with pytest.raises((ValueError, TypeError), match="check_finite"):
        Trainer(make_net("reference"), eta=0.1, check_finite=bad)
