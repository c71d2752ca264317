"""eq. (1): shapes, the residual connection and gradients vs finite differences."""

import numpy as np
import pytest
import torch

from theory.network import ACTIVATIONS, TwoLayerScore


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_output_shape_and_residual_connection(activation):
    net = TwoLayerScore(5, 3, activation, n_patches=3, init_std=0.5, seed=2)
    x = torch.randn(7, 3, 5, dtype=torch.float64)
    s = net(x, beta=0.7)
    assert s.shape == (7, 3, 5) and s.dtype == torch.float64
    torch.testing.assert_close(s + x / 0.7**2, net.residual(x), rtol=1e-13, atol=1e-13)
    assert net(x.reshape(7, 15), beta=0.7).shape == (7, 15)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_residual_is_sum_of_neurons(activation):
    net = TwoLayerScore(4, 2, activation, init_std=0.8, seed=5)
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    W = net.weights.detach()
    sigma = ACTIVATIONS[activation].fn
    manual = torch.stack([sum(sigma(x[:, p] @ W[p, r])[:, None] * W[p, r] for r in range(2)) for p in range(2)], 1)
    torch.testing.assert_close(net.residual(x), manual, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("activation", ["linear", "quadratic", "cubic", "relu"])
def test_gradients_match_finite_differences(activation):
    torch.manual_seed(0)
    net = TwoLayerScore(4, 3, activation, init_std=0.7, seed=1)
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    if activation == "relu":  # keep finite differences away from the kink
        z = net.preactivations(x).detach().abs()
        assert z.min().item() > 1e-4

    def f(W):
        return torch.func.functional_call(net, {"weights": W}, (x,), {"beta": 0.6}).pow(2).sum()

    assert torch.autograd.gradcheck(f, (net.weights.detach().clone().requires_grad_(True),), eps=1e-6, atol=1e-6)


def test_from_weights_copies():
    W = torch.randn(2, 3, 4, dtype=torch.float64)
    net = TwoLayerScore.from_weights(W, "cubic", beta=0.5)
    W.zero_()
    assert net.weights.abs().sum() > 0 and net.m == 3 and net.d == 4 and net.activation.name == "cubic"


def test_seeded_initialisation_is_reproducible_and_small():
    a = TwoLayerScore(100, 20, "relu", seed=3).weights.detach()
    b = TwoLayerScore(100, 20, "relu", seed=3).weights.detach()
    assert torch.equal(a, b)
    # default sigma_0 = 0.1/sqrt(d): ||w_r|| concentrates at 0.1
    assert np.allclose(a.norm(dim=-1).numpy(), 0.1, rtol=0.35)


def test_beta_is_required_somewhere():
    net = TwoLayerScore(3, 1, "linear")
    with pytest.raises(ValueError, match="beta"):
        net(torch.zeros(1, 2, 3, dtype=torch.float64))


def test_joint_network_couples_the_patches():
    from theory.network import JointTwoLayerScore

    net = JointTwoLayerScore(3, 4, "cubic", init_std=0.5, seed=1)
    assert net.weights.shape == (1, 4, 6) and net.joint
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    W = net.weights.detach()[0]
    flat = x.reshape(5, 6)
    torch.testing.assert_close(net.residual(x).reshape(5, 6), (flat @ W.T) ** 3 @ W, rtol=1e-13, atol=1e-13)
    # changing patch 2 changes the output on patch 1 (a per-patch network never does)
    x2 = x.clone()
    x2[:, 1] += 1.0
    assert not torch.allclose(net.residual(x)[:, 0], net.residual(x2)[:, 0])
    copy = JointTwoLayerScore.from_weights(net.weights.detach(), "cubic")
    torch.testing.assert_close(copy.residual(x), net.residual(x))


def test_nets_and_divergence_errors_pickle_across_processes():
    """A TrainingDiverged carries its net (activation with lambdas) through train_many's worker pool."""
    import pickle

    from theory.divergence import TrainingDiverged
    from theory.network import JointTwoLayerScore
    from theory.train import TrainConfig, TrainResult

    for name in ACTIVATIONS:
        assert pickle.loads(pickle.dumps(ACTIVATIONS[name])) is ACTIVATIONS[name]
    net = JointTwoLayerScore(4, 3, "cubic", device="cpu")
    err = TrainingDiverged("boom", 7, 1, net.weights.detach(), {"loss": [1.0]},
                           TrainResult(net, {"loss": [1.0]}, TrainConfig(d=4, m=3, architecture="joint")))
    back = pickle.loads(pickle.dumps(err))
    assert back.step == 7 and back.result.net.activation is ACTIVATIONS["cubic"]
    assert torch.equal(back.result.net.weights, net.weights)
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    assert torch.equal(back.result.net(x, beta=0.5), net(x, beta=0.5))
    assert pickle.loads(pickle.dumps(TwoLayerScore(4, 2, "relu", device="cpu"))).activation is ACTIVATIONS["relu"]
