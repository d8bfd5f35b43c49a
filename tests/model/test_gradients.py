"""Gradients of every layer type and activation against central finite differences
(float64, reference backend, odd sizes: 3 channels, 13x11 images, batch 3)."""
import numpy as np
import pytest

from fastmom import ConvPoolLayer, FullyConnectedLayer, Network, SoftmaxLayer
from fastmom.activations import ACTIVATIONS

ACTS = sorted(ACTIVATIONS)
BATCH = 3


def small_net(act, p_dropout, poolsize=(2, 2), seed=0):
    layers = [
        # 13x11 -> conv 4x3 -> 10x9 -> pool -> 5x4 (ragged column dropped)
        ConvPoolLayer((4, 3, 4, 3), (BATCH, 3, 13, 11), poolsize=poolsize, activation_fn=ACTIVATIONS[act]),
    ]
    c = layers[0].out_shape
    layers.append(ConvPoolLayer((5, 4, 2, 2), (BATCH,) + c, poolsize=(1, 1) if poolsize == (1, 1) else (2, 3),
                                activation_fn=ACTIVATIONS[act]))
    n = layers[1].n_out
    layers += [FullyConnectedLayer(n, 7, activation_fn=ACTIVATIONS[act], p_dropout=p_dropout),
               SoftmaxLayer(7, 4, p_dropout=p_dropout)]
    return Network(layers, BATCH, device="reference", dtype=np.float64, seed=seed)


def finite_difference_check(net, x, y, lmbda, ntb, h=1e-6):
    state = net.dropout_rng.bit_generator.state

    def cost():
        net.dropout_rng.bit_generator.state = state  # the same dropout masks every time
        return net.cost_and_gradients(x, y, lmbda, ntb)[0]

    c0, grads = cost(), None
    net.dropout_rng.bit_generator.state = state
    _, grads = net.cost_and_gradients(x, y, lmbda, ntb)
    for k, (p, g) in enumerate(zip(net.params, grads)):
        flat_p, fd = p.reshape(-1), np.empty(p.size)
        for i in range(p.size):
            old = flat_p[i]
            flat_p[i] = old + h
            cp = cost()
            flat_p[i] = old - h
            cm = cost()
            flat_p[i] = old
            fd[i] = (cp - cm) / (2 * h)
        g = g.reshape(-1)
        err = np.linalg.norm(g - fd) / max(np.linalg.norm(fd), np.linalg.norm(g), 1e-12)
        assert np.linalg.norm(fd) > 0, f"param {k}: zero gradient, test would be vacuous"
        assert err < 1e-6, f"param {k} (shape {p.shape}): relative error {err:.2e}"
    return c0


def randomize(net, rng):
    # softmax starts at zero in network3: randomise everything so every path is exercised
    for p in net.params:
        p[...] = rng.normal(0, 0.5, p.shape)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("p_dropout,lmbda", [(0.0, 0.0), (0.0, 0.7), (0.3, 0.0), (0.3, 0.7)])
def test_gradients_match_finite_differences(act, p_dropout, lmbda, rng):
    net = small_net(act, p_dropout)
    randomize(net, rng)
    x = rng.random((BATCH, 3 * 13 * 11))
    y = rng.integers(0, 4, BATCH)
    finite_difference_check(net, x, y, lmbda, ntb=5)


def test_gradients_without_pooling_and_batch_below_mini_batch(rng):
    net = small_net("tanh", 0.0, poolsize=(1, 1))
    randomize(net, rng)
    x = rng.random((2, 3 * 13 * 11))  # 2 < mini_batch_size
    finite_difference_check(net, x, np.array([3, 1]), 0.2, 1)


def test_cost_includes_weights_only_l2(rng):
    net = small_net("sigmoid", 0.0)
    randomize(net, rng)
    x, y = rng.random((BATCH, 3 * 13 * 11)), rng.integers(0, 4, BATCH)
    c0, g0 = net.cost_and_gradients(x, y)
    c1, g1 = net.cost_and_gradients(x, y, lmbda=0.6, num_training_batches=3)
    wsq = sum(float((w ** 2).sum()) for w in net.params[0::2])
    assert c1 - c0 == pytest.approx(0.5 * 0.6 * wsq / 3, rel=1e-12)
    for k in range(0, len(g0), 2):
        np.testing.assert_allclose(g1[k] - g0[k], 0.2 * net.params[k], rtol=1e-10, atol=1e-14)
        np.testing.assert_array_equal(g1[k + 1], g0[k + 1])  # biases are not decayed
