"""theory.exact_gd: exact full-batch GD (App. F, population loss) in span(W(0), f) coordinates."""

import pytest
import torch

from theory import MultiPatchData, ScaledBeta, Uniform, ou_schedule
from theory.exact_gd import TrainingDiverged, exact_gradient_descent, span_basis, stationarity
from theory.network import TwoLayerScore, default_init_std
from theory.population import population_loss

ACTS = ["relu", "linear", "quadratic", "cubic"]


def _init(C, P, m, d, std, seed=0):
    return torch.randn((C, P, m, d), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * std


def test_reduced_trajectory_equals_full_gd():
    """200 steps, every activation and both targets in one batch, a N(0, I) patch: the reduced-coordinate
    trajectory mapped back to d = 30 equals GD on the d-dimensional weights to 1e-10 (so do the losses)."""
    data = MultiPatchData(30, ScaledBeta(2, 3, 0.2, 0.8), n_patches=3)
    acts = ACTS * 2
    targets = ["paper"] * 4 + ["score"] * 4
    ts = [0.2, 0.4, 0.6, 0.8, 0.3, 0.5, 0.7, 0.9]
    alphas, betas = zip(*(ou_schedule(t) for t in ts))
    lr = [3e-2, 3e-2, 1e-2, 1e-2, 1e-1, 1e-1, 1e-1, 1e-1]
    W0 = _init(8, 3, 6, 30, 0.06)
    W0[0, 0, 1] = 1.01 * W0[0, 0, 0] + 3e-4 * W0[0, 0, 2]  # nearly parallel ReLU neurons: rho -> 1 branch
    W0[0, 1, 3] = -0.8 * W0[0, 1, 2] + 1e-3 * W0[0, 1, 4]  # nearly antiparallel
    kw = dict(epochs=200, log_every=20)
    red = exact_gradient_descent(W0, acts, data, alphas, betas, targets, lr, reduced=True, **kw)
    full = exact_gradient_descent(W0, acts, data, alphas, betas, targets, lr, reduced=False, **kw)
    assert red.history["epoch"] == full.history["epoch"] == list(range(0, 201, 20))
    assert (red.weights - W0).abs().max() > 1e-2  # the weights did move
    torch.testing.assert_close(red.weights, full.weights, rtol=0, atol=1e-10)
    torch.testing.assert_close(red.history["loss"], full.history["loss"], rtol=1e-12, atol=0)
    assert not red.diverged and not full.diverged


def test_span_basis_is_orthonormal_and_contains_the_initial_weights():
    data = MultiPatchData(12, Uniform(0.2, 0.8), n_patches=3)
    W0 = _init(2, 3, 5, 12, 0.3)
    span = span_basis(W0, data)
    B, A0 = span.basis, span.coords
    assert B.shape == (2, 3, 6, 12) and A0.shape == (2, 3, 5, 6)
    eye = torch.eye(6, dtype=torch.float64)
    gram = B[:, :2] @ B[:, :2].transpose(-1, -2)
    torch.testing.assert_close(gram, eye.expand(2, 2, 6, 6), rtol=0, atol=1e-14)
    feats = torch.eye(2, dtype=torch.float64).expand(2, 2, 2)
    torch.testing.assert_close(B[:, :2, 0, :2], feats, rtol=0, atol=0)  # row 0 is the feature
    torch.testing.assert_close(span.to_full(A0), W0, rtol=0, atol=1e-14)
    # the N(0, I) patch has no feature: 5 basis rows, one zero row
    assert float(B[:, 2, 5].abs().max()) == 0.0


def test_rank_deficient_span_still_reproduces_full_gd():
    """m + 1 > d and duplicated neurons: zero rows pad the basis, GD is unchanged."""
    data = MultiPatchData(4, Uniform(0.2, 0.8))
    W0 = _init(1, 2, 6, 4, 0.3)
    W0[0, 0, 3] = 2 * W0[0, 0, 1]
    span = span_basis(W0, data)
    torch.testing.assert_close(span.to_full(span.coords), W0, rtol=0, atol=1e-14)
    a, b = ou_schedule(0.5)
    kw = dict(alphas=[a], betas=[b], target="score", lr=5e-2, epochs=100)
    red = exact_gradient_descent(W0, "relu", data, reduced=True, **kw)
    full = exact_gradient_descent(W0, "relu", data, reduced=False, **kw)
    torch.testing.assert_close(red.weights, full.weights, rtol=0, atol=1e-10)


@pytest.mark.parametrize("target", ["paper", "score"])
def test_linear_single_neuron_reaches_a_stationary_point(target):
    """Thm 4.5's setting: sigma(z) = z, m = 1, small Gaussian init (sigma_0 = 0.1/sqrt(d)), GD on the exact
    loss: the d-dimensional gradient norm falls below 1e-8 and the neuron has found its feature."""
    d = 50
    data = MultiPatchData(d, Uniform(0.2, 0.8))
    a, b = ou_schedule(0.2)
    W0 = TwoLayerScore(d, 1, "linear", init_std=default_init_std(d), seed=2).weights.detach()
    res = exact_gradient_descent(W0, "linear", data, [a], [b], target, 3e-2 if target == "paper" else 1e-1,
                                 epochs=2500, log_every=500)
    W = res.weights[0]
    assert stationarity(W, "linear", data, a, b, target) < 1e-8
    assert abs(float(W[0, 0, 0])) > 0.1 and abs(float(W[1, 0, 1])) > 0.1  # <w^(1), u>, <w^(2), v> = Theta(1)
    assert res.history["loss"][0, -1] < res.history["loss"][0, 0]


def test_width_20_networks_reach_stationary_points():
    """m = 20 (App. F's width), d = 40, small init: ReLU and quadratic nets (consistent DSM loss, t = 0.3)
    reach exact stationarity, ||dL/dW|| < 1e-8 in d dimensions."""
    d = 40
    data = MultiPatchData(d, Uniform(0.2, 0.8))
    a, b = ou_schedule(0.3)
    W0 = torch.stack([TwoLayerScore(d, 20, act, init_std=default_init_std(d), seed=1).weights.detach()
                      for act in ("relu", "quadratic")])
    res = exact_gradient_descent(W0, ["relu", "quadratic"], data, [a, a], [b, b], "score", 1e-1, epochs=2200,
                                 log_every=1100)
    for c, act in enumerate(("relu", "quadratic")):
        assert stationarity(res.weights[c], act, data, a, b, "score") < 1e-8, act


def test_batched_run_equals_separate_runs():
    data = MultiPatchData(10, Uniform(0.2, 0.8))
    W0 = _init(3, 2, 4, 10, 0.1, seed=5)
    alphas, betas = zip(*(ou_schedule(t) for t in (0.3, 0.5, 0.7)))
    acts, targets, lrs = ["relu", "cubic", "relu"], ["paper", "score", "score"], [3e-2, 1e-1, 1e-1]
    batch = exact_gradient_descent(W0, acts, data, alphas, betas, targets, lrs, epochs=50, log_every=25)
    for c in range(3):
        one = exact_gradient_descent(W0[c], acts[c], data, [alphas[c]], [betas[c]], targets[c], lrs[c],
                                     epochs=50, log_every=25)
        torch.testing.assert_close(batch.weights[c], one.weights[0], rtol=0, atol=1e-13)
        torch.testing.assert_close(batch.history["loss"][c], one.history["loss"][0], rtol=1e-13, atol=0)
    # the logged loss is the exact loss of the weights
    final = population_loss(batch.weights, acts, data, alphas, betas, targets).detach()
    torch.testing.assert_close(batch.history["loss"][:, -1], final, rtol=1e-13, atol=0)
    assert batch.seconds > 0


def test_divergence_raises_with_the_last_finite_weights():
    data = MultiPatchData(6, Uniform(0.2, 0.8))
    W0 = _init(2, 2, 3, 6, 1.0)
    a, b = ou_schedule(0.2)
    with pytest.raises(TrainingDiverged, match=r"config 1 \(cubic.*at epoch") as info:
        exact_gradient_descent(W0, ["linear", "cubic"], data, [a, a], [b, b], "paper", [1e-3, 50.0],
                               epochs=50)
    err = info.value
    assert err.config == 1 and err.step >= 1
    assert err.weights.shape == (2, 2, 3, 6) and bool(torch.isfinite(err.weights).all())
    loss = population_loss(err.weights, ["linear", "cubic"], data, [a, a], [b, b], "paper").detach()
    assert bool(torch.isfinite(loss).all())


def test_divergence_can_freeze_one_config_and_continue():
    data = MultiPatchData(6, Uniform(0.2, 0.8))
    W0 = _init(2, 2, 3, 6, 1.0)
    a, b = ou_schedule(0.2)
    res = exact_gradient_descent(W0, ["linear", "cubic"], data, [a, a], [b, b], "paper", [1e-3, 50.0],
                                 epochs=50, log_every=10, on_divergence="freeze")
    assert list(res.diverged) == [1]
    step = res.diverged[1]
    assert bool(torch.isfinite(res.weights).all())
    assert torch.isnan(res.history["loss"][1, -1]) and torch.isfinite(res.history["loss"][0]).all()
    alone = exact_gradient_descent(W0[0], "linear", data, [a], [b], "paper", 1e-3, epochs=50, log_every=10)
    torch.testing.assert_close(res.weights[0], alone.weights[0], rtol=0, atol=1e-13)
    assert 1 <= step <= 50


def test_inputs_are_validated():
    data = MultiPatchData(5, Uniform(0.2, 0.8))
    W0 = _init(2, 2, 3, 5, 0.1)
    ok = dict(alphas=[0.8, 0.7], betas=[0.5, 0.6], target="paper", lr=1e-2, epochs=2)
    with pytest.raises(ValueError, match="data must be a MultiPatchData"):
        exact_gradient_descent(W0, "relu", None, **ok)
    with pytest.raises(ValueError, match=r"W0 must have shape \(C, 2, m, 5\)"):
        exact_gradient_descent(W0[..., :4], "relu", data, **ok)
    with pytest.raises(ValueError, match="W0 contains NaN"):
        exact_gradient_descent(W0 * float("nan"), "relu", data, **ok)
    with pytest.raises(ValueError, match="lr must be > 0"):
        exact_gradient_descent(W0, "relu", data, **{**ok, "lr": 0.0})
    with pytest.raises(ValueError, match="lr must be one value or a sequence of 2"):
        exact_gradient_descent(W0, "relu", data, **{**ok, "lr": [1e-2] * 3})
    with pytest.raises(ValueError, match="epochs must be an integer >= 0"):
        exact_gradient_descent(W0, "relu", data, **{**ok, "epochs": -1})
    with pytest.raises(ValueError, match="on_divergence must be one of"):
        exact_gradient_descent(W0, "relu", data, **ok, on_divergence="ignore")
    with pytest.raises(ValueError, match="activation must be one value or a sequence of 2"):
        exact_gradient_descent(W0, ["relu"] * 3, data, **ok)
    with pytest.raises(ValueError, match="betas must be a scalar or a sequence of 2"):
        exact_gradient_descent(W0, "relu", data, **{**ok, "betas": [0.5, 0.6, 0.7]})
    with pytest.raises(ValueError, match="target must be one of"):
        exact_gradient_descent(W0, "relu", data, **{**ok, "target": "eps"})
    with pytest.raises(ValueError, match="num_threads must be an integer >= 1"):
        exact_gradient_descent(W0, "relu", data, **ok, num_threads=0)
    with pytest.raises(ValueError, match=r"W must have shape \(P, m, d\)"):
        stationarity(W0, "relu", data, 0.8, 0.5)
    with pytest.raises(ValueError, match="W0 must be float64"):
        span_basis(W0.float(), data)
