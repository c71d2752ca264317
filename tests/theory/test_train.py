"""Full-batch GD (App. F): descent, divergence detection, checkpoint/resume."""

import pytest
import torch

from theory.train import TrainConfig, TrainingDiverged, train, train_many

SMALL = dict(d=6, m=3, n=20, n_eps=5, epochs=60, device="cpu", log_every=10)
EXACT = dict(d=12, m=4, epochs=300, estimator="exact", device="cpu", log_every=50)


@pytest.mark.parametrize("activation", ["relu", "linear", "quadratic", "cubic"])
def test_gradient_descent_decreases_the_loss(activation):
    res = train(TrainConfig(activation=activation, t=0.5, init_std=0.3, **SMALL), progress=False)
    loss = res.history["loss"]
    assert res.history["epoch"][0] == 0 and res.history["epoch"][-1] == 60
    assert loss[-1] < loss[0]
    assert res.net.weights.shape == (2, 3, 6)


def test_training_is_reproducible():
    cfg = TrainConfig(activation="relu", t=0.3, init_std=0.3, **SMALL)
    a, b = train(cfg, progress=False), train(cfg, progress=False)
    assert torch.equal(a.net.weights, b.net.weights)


@pytest.mark.parametrize("estimator", ["mc", "exact"])
def test_divergence_is_reported_with_last_finite_weights(estimator):
    sizes = SMALL if estimator == "mc" else EXACT
    cfg = TrainConfig(activation="cubic", t=0.2, lr=50.0, init_std=1.0, **{**sizes, "estimator": estimator})
    with pytest.raises(TrainingDiverged, match=r"cubic, t=0.2.*epoch") as info:
        train(cfg, progress=False)
    assert torch.isfinite(info.value.result.net.weights).all()
    assert info.value.step >= 1


def test_checkpoint_resume_equals_uninterrupted_run(tmp_path):
    full = TrainConfig(activation="quadratic", t=0.4, init_std=0.3, **{**SMALL, "epochs": 1200})
    reference = train(full, progress=False)
    # interrupt the run at its 700th loss evaluation; the last checkpoint is epoch 500
    import theory.losses as losses
    from theory.train import checkpoint_path

    calls = {"n": 0}
    original = losses.MonteCarloLoss.value_and_grad_many

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 700:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    losses.MonteCarloLoss.value_and_grad_many = flaky
    try:
        with pytest.raises(KeyboardInterrupt):
            train_many([full], progress=False, checkpoint_dir=tmp_path / "b")
    finally:
        losses.MonteCarloLoss.value_and_grad_many = original
    assert torch.load(checkpoint_path(tmp_path / "b", full), weights_only=False)["epoch"] == 500
    resumed = train_many([full], progress=False, checkpoint_dir=tmp_path / "b")[0]
    assert torch.equal(resumed.net.weights, reference.net.weights)
    assert resumed.history["loss"] == reference.history["loss"]


def test_checkpoint_of_another_config_is_refused(tmp_path):
    a = TrainConfig(activation="linear", t=0.4, init_std=0.3, **SMALL)
    train_many([a], progress=False, checkpoint_dir=tmp_path)
    from theory.train import checkpoint_path

    b = TrainConfig(activation="linear", t=0.4, init_std=0.3, lr=0.001, **SMALL)
    assert checkpoint_path(tmp_path, a) == checkpoint_path(tmp_path, b)
    with pytest.raises(ValueError, match="another config"):
        train_many([b], progress=False, checkpoint_dir=tmp_path)


def test_joint_architecture_trains_and_refuses_thm44():
    from theory.network import JointTwoLayerScore
    from theory.rule import thm44_lower_bound

    cfg = TrainConfig(activation="relu", t=0.5, init_std=0.3, architecture="joint", **SMALL)
    res = train(cfg, progress=False)
    assert isinstance(res.net, JointTwoLayerScore) and res.net.weights.shape == (1, 3, 12)
    assert res.history["loss"][-1] < res.history["loss"][0]
    alpha, beta = cfg.alpha_beta
    with pytest.raises(ValueError, match="per-patch"):
        thm44_lower_bound(res.net, cfg.data(), alpha, beta, n=10)


def test_lock_step_group_equals_separate_runs():
    """Configs sharing a sample set train together; each equals its own separate run exactly."""
    configs = [TrainConfig(activation=a, t=0.4, init_std=0.3, architecture=arch, **SMALL)
               for a, arch in [("relu", "per_patch"), ("cubic", "per_patch"), ("linear", "joint")]]
    together = train_many(configs, progress=False)
    for cfg, res in zip(configs, together):
        alone = train(cfg, progress=False)
        assert torch.equal(alone.net.weights, res.net.weights)
        assert alone.history == res.history



def test_exact_estimator_trains_every_activation_and_target_in_one_call():
    from theory.population import expected_loss

    cfgs = [TrainConfig(activation=a, t=0.4, target=tg, **EXACT)
            for a in ("relu", "linear", "quadratic", "cubic") for tg in ("paper", "score")]
    for cfg, res in zip(cfgs, train_many(cfgs, progress=False)):
        assert res.config is cfg and res.net.weights.shape == (2, 4, 12)
        assert res.history["epoch"] == list(range(0, 301, 50))
        assert res.history["loss"][-1] < res.history["loss"][0]
        # the logged loss is the exact population loss of the returned weights
        alpha, beta = cfg.alpha_beta
        exact = expected_loss(res.net, cfg.data(), alpha, beta, target=cfg.target).item()
        assert exact == pytest.approx(res.history["loss"][-1], rel=1e-12)


def test_exact_estimator_in_two_processes_equals_one():
    cfgs = [TrainConfig(activation=a, t=t, **EXACT) for a in ("relu", "cubic") for t in (0.3, 0.7)]
    one = train_many(cfgs, progress=False, workers=1)
    two = train_many(cfgs, progress=False, workers=2)
    for a, b in zip(one, two):
        torch.testing.assert_close(a.net.weights, b.net.weights, rtol=1e-12, atol=1e-14)
        assert a.history["epoch"] == b.history["epoch"]
        assert a.history["loss"] == pytest.approx(b.history["loss"], rel=1e-12)


def test_exact_chunks_balance_relu_over_workers():
    from theory.train import _exact_chunks

    cfgs = [TrainConfig(activation=a, t=t, **EXACT) for a in ("relu", "linear", "quadratic", "cubic")
            for t in (0.2, 0.4, 0.6, 0.8)]
    chunks = _exact_chunks(cfgs, 2)
    assert sorted(i for c in chunks for i in c) == list(range(16))
    assert [sum(cfgs[i].activation == "relu" for i in c) for c in chunks] == [2, 2]
    assert _exact_chunks(cfgs, 1) == [list(range(16))]


def test_workers_is_validated():
    with pytest.raises(ValueError, match="workers"):
        train_many([TrainConfig(**EXACT)], progress=False, workers=0)


def test_one_divergence_rule_for_floats_and_tensors():
    """theory.divergence.diverged: the same verdict on floats (Monte Carlo GD) and per config on tensors
    (exact GD); the exception keeps its fields through pickling (train_many's worker processes)."""
    import pickle

    from theory.divergence import TrainingDiverged as Shared
    from theory.divergence import diverged

    cases = [(1.0, 2.0, 1.0, False), (2e6 + 3, 0.0, 1.0, True), (1.9e6, 0.0, 1.0, False),
             (float("nan"), 1.0, 1.0, True), (1.0, float("inf"), 1.0, True), (-3e6, 0.0, 1.0, True)]
    flags = diverged(*(torch.tensor([c[k] for c in cases], dtype=torch.float64) for k in range(3)))
    assert flags.tolist() == [diverged(loss, g, first) for loss, g, first, _ in cases] == [c[3] for c in cases]
    assert TrainingDiverged is Shared
    err = pickle.loads(pickle.dumps(Shared("boom", 7, 2, torch.ones(2), {"epoch": [0]})))
    assert (str(err), err.step, err.config, err.history, err.result) == ("boom", 7, 2, {"epoch": [0]}, None)
    assert torch.equal(err.weights, torch.ones(2))
