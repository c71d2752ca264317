"""Every invalid input of the foundation issue raises ValueError naming the parameter."""

import math

import numpy as np
import pytest
import torch

from theory import Discrete, MultiPatchData, ScaledBeta, Uniform, ou_schedule
from theory.losses import MonteCarloLoss
from theory.network import TwoLayerScore
from theory.rule import rule_error
from theory.score import log_density, true_score
from theory.train import TrainConfig

DATA = MultiPatchData(3, Uniform(0.2, 0.8))


@pytest.mark.parametrize("lo, hi", [(0.0, 0.5), (-0.1, 0.5), (0.5, 0.5), (0.6, 0.4), (0.2, math.inf), (math.nan, 1)])
@pytest.mark.parametrize("make", [Uniform, lambda lo, hi: ScaledBeta(2, 2, lo, hi)])
def test_zeta_bounds(make, lo, hi):
    with pytest.raises(ValueError, match="lo|hi|bounds"):
        make(lo, hi)


@pytest.mark.parametrize("values, probs, word", [
    ([0.2, 0.8], [0.5, 0.6], "sum to 1"),
    ([0.2, 0.8], [1.2, -0.2], "non-negative"),
    ([0.2, 0.8], [0.5], "one entry per value"),
    ([0.5], None, "two values"),
    ([0.5, 0.5], None, "distinct"),
    ([0.0, 0.5], None, "0 < lo"),
])
def test_discrete(values, probs, word):
    with pytest.raises(ValueError, match=word):
        Discrete(values, probs)


@pytest.mark.parametrize("t", [0.0, -1.0, math.inf, math.nan, "a"])
def test_time(t):
    with pytest.raises(ValueError, match="t"):
        ou_schedule(t)


@pytest.mark.parametrize("d", [1, 0, 2.5, True])
def test_dimension(d):
    with pytest.raises(ValueError, match="d must"):
        MultiPatchData(d, Uniform(0.2, 0.8))


@pytest.mark.parametrize("u, v, word", [
    (np.array([1.0, 0, 0]), np.array([1.0, 0, 0]), "orthogonal"),
    (np.array([2.0, 0, 0]), np.array([0, 1.0, 0]), "unit norm"),
    (np.array([1.0, 0]), np.array([0, 1.0, 0]), "length"),
])
def test_features(u, v, word):
    with pytest.raises(ValueError, match=word):
        MultiPatchData(3, Uniform(0.2, 0.8), u=u, v=v)


def test_rotated_orthonormal_features_are_accepted():
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((5, 5)))
    data = MultiPatchData(5, Uniform(0.2, 0.8), u=q[:, 0], v=q[:, 1])
    assert np.allclose(data.features @ data.features.T, np.eye(2))


@pytest.mark.parametrize("m", [0, -3, 1.5])
def test_width(m):
    with pytest.raises(ValueError, match="m must"):
        TwoLayerScore(3, m, "relu")


def test_unknown_activation_lists_known_ones():
    with pytest.raises(ValueError, match="relu, linear, quadratic, cubic"):
        TwoLayerScore(3, 2, "tanh")


@pytest.mark.parametrize("shape", [(4, 3), (4, 2, 4), (4, 3, 3), (12,)])
def test_x_t_shape(shape):
    alpha, beta = ou_schedule(0.4)
    x = np.zeros(shape)
    with pytest.raises(ValueError, match="x_t must have shape"):
        true_score(x, DATA, alpha, beta)
    with pytest.raises(ValueError, match="x_t must have shape"):
        log_density(x, DATA, alpha, beta)
    with pytest.raises(ValueError, match="x_t must have shape"):
        TwoLayerScore(3, 2, "relu")(torch.zeros(shape, dtype=torch.float64), beta=beta)


def test_x_t_not_finite():
    alpha, beta = ou_schedule(0.4)
    x = np.zeros((2, 2, 3))
    x[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="x_t contains NaN"):
        true_score(x, DATA, alpha, beta)


@pytest.mark.parametrize("n, n_eps, word", [(0, 5, "n must"), (5, 0, "n_eps must"), (-1, 5, "n must")])
def test_sample_sizes(n, n_eps, word):
    alpha, beta = ou_schedule(0.4)
    with pytest.raises(ValueError, match=word):
        MonteCarloLoss(DATA, alpha, beta, n=n, n_eps=n_eps)


def test_sample_counts_elsewhere():
    with pytest.raises(ValueError, match="n must"):
        DATA.sample_x0(0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="n must"):
        rule_error(TwoLayerScore(3, 2, "relu"), DATA, 0.5, 0.5, n=1)


@pytest.mark.parametrize("kwargs, word", [
    ({"t": 0.0}, "t must"), ({"d": 1}, "d must"), ({"m": 0}, "m must"), ({"n": 0}, "n must"),
    ({"n_eps": 0}, "n_eps must"), ({"activation": "tanh"}, "known activations"), ({"target": "eps"}, "target"),
    ({"estimator": "sgd"}, "estimator"), ({"lr": -1.0}, "lr must"), ({"epochs": -1}, "epochs must"),
])
def test_train_config(kwargs, word):
    with pytest.raises(ValueError, match=word):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("alpha, beta", [(0.0, 0.5), (0.5, 0.0), (math.nan, 0.5), (0.5, -1.0)])
def test_alpha_beta(alpha, beta):
    with pytest.raises(ValueError, match="alpha|beta"):
        true_score(np.zeros((1, 2, 3)), DATA, alpha, beta)
