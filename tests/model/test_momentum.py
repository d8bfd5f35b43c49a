"""MomentumSGD: a hand-computed three-step sequence, zero initial velocity, Nesterov,
the weights-only L2 term, and the relation to torch.optim.SGD."""
import numpy as np
import pytest

from fastmom.backends import get_backend
from fastmom.optim import MomentumSGD
from fastmom.params import ParamBuffer

# one "layer": weights (2,), bias (1,) -> flat storage [w0, w1, b0]
SHAPES = [((2,), (1,))]
GRADS = [np.array([0.5, -1.0, 2.0]), np.array([1.5, 0.25, -1.0]), np.array([-2.0, 0.5, 0.75])]
P0 = np.array([1.0, -2.0, 0.5])


def make(backend="reference", **kw):
    flat = ParamBuffer(SHAPES, np.float64, get_backend(backend))
    flat.data[...] = P0
    return flat, MomentumSGD(flat, **kw)


def run(flat, opt, grads=GRADS):
    out = []
    for g in grads:
        flat.grad[...] = g
        opt.step()
        out.append(flat.data.copy())
    return out


def test_velocity_starts_at_zero():
    flat, opt = make(eta=0.1, momentum=0.9)
    np.testing.assert_array_equal(opt.velocity, 0)
    assert opt.velocity.shape == (3,)


def test_three_steps_by_hand():
    flat, opt = make(eta=0.1, momentum=0.9)
    got = run(flat, opt)
    # v1 = -0.1*g1 = [-0.05, 0.1, -0.2];            p1 = [0.95, -1.9, 0.3]
    # v2 = 0.9*v1 - 0.1*g2 = [-0.195, 0.065, -0.08]; p2 = [0.755, -1.835, 0.22]
    # v3 = 0.9*v2 - 0.1*g3 = [0.0245, 0.0085, -0.147]; p3 = [0.7795, -1.8265, 0.073]
    expected = [[0.95, -1.9, 0.3], [0.755, -1.835, 0.22], [0.7795, -1.8265, 0.073]]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-12)
    np.testing.assert_allclose(opt.velocity, [0.0245, 0.0085, -0.147], atol=1e-12)


def test_nesterov_by_hand():
    flat, opt = make(eta=0.1, momentum=0.9, nesterov=True)
    got = run(flat, opt, GRADS[:2])
    # step 1: v1 = [-0.05, 0.1, -0.2]; p += 0.9*v1 - 0.1*g1 = [-0.095, 0.19, -0.38]
    # step 2: v2 = [-0.195, 0.065, -0.08]; p += 0.9*v2 - 0.1*g2 = [-0.3255, 0.0335, 0.028]
    np.testing.assert_allclose(got[0], [0.905, -1.81, 0.12], atol=1e-12)
    np.testing.assert_allclose(got[1], [0.5795, -1.7765, 0.148], atol=1e-12)


def test_weights_only_l2():
    flat, opt = make(eta=0.1, momentum=0.9, lmbda=2.0, num_training_batches=4)
    run(flat, opt, GRADS[:1])
    # decay = 2/4 = 0.5 on the weights only: g_eff = [0.5+0.5, -1-1, 2] -> v = [-0.1, 0.2, -0.2]
    np.testing.assert_allclose(opt.velocity, [-0.1, 0.2, -0.2], atol=1e-12)
    np.testing.assert_allclose(flat.data, [0.9, -1.8, 0.3], atol=1e-12)


def test_momentum_zero_is_plain_sgd_without_velocity():
    flat, opt = make(eta=0.1, momentum=0.0, lmbda=1.0)
    assert opt.velocity is None
    got = run(flat, opt, GRADS[:2])
    p1 = P0 - 0.1 * (GRADS[0] + np.array([1, 1, 0]) * P0)
    p2 = p1 - 0.1 * (GRADS[1] + np.array([1, 1, 0]) * p1)
    np.testing.assert_allclose(got[1], p2, atol=1e-12)


@pytest.mark.parametrize("kw", [dict(eta=0), dict(eta=-1), dict(eta=float("nan")), dict(eta=0.1, momentum=1.0),
                                dict(eta=0.1, momentum=-0.1), dict(eta=0.1, lmbda=-1),
                                dict(eta=0.1, momentum=0, nesterov=True)])
def test_bad_hyperparameters(kw):
    with pytest.raises(ValueError):
        make(**kw)


torch = pytest.importorskip("torch", reason="PyTorch is the comparison peer for the update rule")


def torch_run(etas, grads, nesterov=False):
    p = torch.nn.Parameter(torch.tensor(P0))
    opt = torch.optim.SGD([p], lr=etas[0], momentum=0.9, nesterov=nesterov)
    out = []
    for eta, g in zip(etas, grads):
        for group in opt.param_groups:
            group["lr"] = eta
        p.grad = torch.tensor(g)
        opt.step()
        out.append(p.detach().numpy().copy())
    return out


def ours(etas, grads, nesterov=False):
    flat, opt = make(eta=etas[0], momentum=0.9, nesterov=nesterov)
    out = []
    for eta, g in zip(etas, grads):
        opt.eta = eta
        out.extend(run(flat, opt, [g]))
    return out


@pytest.mark.parametrize("nesterov", [False, True])
def test_same_iterates_as_pytorch_for_constant_eta(nesterov):
    for a, b in zip(ours([0.1] * 3, GRADS, nesterov), torch_run([0.1] * 3, GRADS, nesterov)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_differs_from_pytorch_after_eta_changes():
    etas = [0.1, 0.1, 0.01]
    a, b = ours(etas, GRADS), torch_run(etas, GRADS)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-12)  # identical before the change
    assert np.abs(a[2] - b[2]).max() > 1e-3  # PyTorch rescales the old velocity by the new rate
    # ours: v3 = 0.9*v2 - 0.01*g3 keeps v2 as taken at eta=0.1
    v2 = np.array([-0.195, 0.065, -0.08])
    np.testing.assert_allclose(a[2], a[1] + 0.9 * v2 - 0.01 * GRADS[2], atol=1e-12)
