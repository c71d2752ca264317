"""eq. (2) and its App. F Monte Carlo estimator."""

import math

import pytest
import torch

from theory import MultiPatchData, Uniform, ou_schedule
from theory.losses import DSMLoss, MonteCarloLoss
from theory.network import ACTIVATIONS, TwoLayerScore

DATA = MultiPatchData(6, Uniform(0.2, 0.8))


@pytest.mark.parametrize("target", ["paper", "score"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_hand_written_gradient_equals_autograd(activation, target):
    alpha, beta = ou_schedule(0.4)
    net = TwoLayerScore(6, 3, activation, init_std=0.4, seed=1)
    mc = MonteCarloLoss(DATA, alpha, beta, n=9, n_eps=4, target=target, seed=3, chunk_rows=10)
    loss, grad = mc.value_and_grad(net.weights.detach(), activation)
    x0 = mc.x0[:, None].expand(-1, 4, -1, -1).reshape(-1, 2, 6)
    ref = DSMLoss(target)(net, x0, mc.eps.reshape(-1, 2, 6), alpha, beta)
    ref.backward()
    assert float(loss) == pytest.approx(ref.item(), rel=1e-13)
    torch.testing.assert_close(grad, net.weights.grad, rtol=1e-11, atol=1e-12)


def test_float32_estimator_agrees_with_float64():
    alpha, beta = ou_schedule(0.3)
    net = TwoLayerScore(6, 4, "relu", init_std=0.4, seed=1)
    l64, g64 = MonteCarloLoss(DATA, alpha, beta, 50, 20, seed=1).value_and_grad(net.weights.detach(), "relu")
    l32, g32 = MonteCarloLoss(DATA, alpha, beta, 50, 20, seed=1, dtype=torch.float32).value_and_grad(
        net.weights.detach(), "relu")
    assert float(l32) == pytest.approx(float(l64), rel=1e-5)
    torch.testing.assert_close(g32, g64, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("target", ["paper", "score"])
@pytest.mark.parametrize("activation", ["relu", "cubic"])
def test_monte_carlo_loss_agrees_with_larger_independent_sample(activation, target):
    """n = 200 x n_eps = 20 vs n = 4000 x n_eps = 20 drawn from another seed: |diff| < 4 SE."""
    alpha, beta = ou_schedule(0.5)
    net = TwoLayerScore(6, 4, activation, init_std=0.5, seed=7)
    small = MonteCarloLoss(DATA, alpha, beta, n=200, n_eps=20, target=target, seed=11)
    large = MonteCarloLoss(DATA, alpha, beta, n=4000, n_eps=20, target=target, seed=12)
    se = math.hypot(small.standard_error(net), large.standard_error(net))
    assert abs(small.value(net) - large.value(net)) < 4 * se


def test_resample_changes_the_sample_set_reproducibly():
    alpha, beta = ou_schedule(0.5)
    mc = MonteCarloLoss(DATA, alpha, beta, n=5, n_eps=3, seed=1)
    e1 = mc.eps.clone()
    mc.resample(2)
    assert not torch.equal(e1, mc.eps)
    mc.resample(1)
    assert torch.equal(e1, mc.eps)


@pytest.mark.parametrize("target", ["paper", "score"])
def test_joint_network_gradient_equals_autograd(target):
    from theory.network import JointTwoLayerScore

    alpha, beta = ou_schedule(0.4)
    net = JointTwoLayerScore(6, 3, "relu", init_std=0.4, seed=1)
    mc = MonteCarloLoss(DATA, alpha, beta, n=9, n_eps=4, target=target, seed=3, chunk_rows=10)
    loss, grad = mc.value_and_grad(net.weights.detach(), "relu", joint=True)
    x0 = mc.x0[:, None].expand(-1, 4, -1, -1).reshape(-1, 2, 6)
    ref = DSMLoss(target)(net, x0, mc.eps.reshape(-1, 2, 6), alpha, beta)
    ref.backward()
    assert float(loss) == pytest.approx(ref.item(), rel=1e-13)
    torch.testing.assert_close(grad, net.weights.grad, rtol=1e-11, atol=1e-12)
    with pytest.raises(ValueError, match="weights must have shape"):
        mc.value_and_grad(net.weights.detach(), "relu")
