"""theory.sampling (reverse-time sampler, score sources) and theory.sample_metrics (Error eq. (4) on samples)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from theory import Discrete, MultiPatchData, Uniform
from theory.bounds import separable_floor
from theory.network import TwoLayerScore
from theory.sample_metrics import eq4_error, sample_metrics, trimmed_line_fit
from theory.sampling import (
    EmpiricalScore,
    MarginalScore,
    NetGridScore,
    SamplerConfig,
    TrueScore,
    predicted_rule_residual,
    reverse_sample,
    rule_coordinates,
    sample_rule_coordinates,
    source_rule_error,
    time_grid,
)
from theory.schedules import ou_schedule
from theory.train import TrainConfig, train_many
from theory.zeta import ZetaDistribution

ZETA = Uniform(0.2, 0.8)


class PointMass(ZetaDistribution):
    """zeta = c almost surely: outside Def 4.1 (c_lo < c_hi), a closed-form case for the sampler only."""

    def __init__(self, c: float):
        self.lo = self.hi = self.c = c

    def moment(self, k):
        return self.c**k

    def sample(self, n, rng):
        return np.full(n, self.c)

    def quadrature(self, n=32):
        return np.array([self.c]), np.array([1.0])

    def describe(self):
        return {"kind": "point", "c": self.c}

    def _tilt(self, mode, sd):
        return -((self.c - mode) ** 2) / (2 * sd**2), torch.full_like(mode, self.c)


@pytest.fixture(scope="module")
def small_nets():
    """Per-patch relu nets (d = 10, m = 4), exact GD on the consistent loss at each time of a 4-step grid."""
    config = SamplerConfig(process="sde", steps=4, t_min=0.1)
    cfgs = [TrainConfig(activation="relu", t=float(t), d=10, m=4, target="score", estimator="exact", epochs=300,
                        device="cpu") for t in config.grid]
    return config, [r.net for r in train_many(cfgs, progress=False)]


def test_exact_score_obeys_the_rule_at_the_defaults():
    """d = 100, 1e4 samples, the verb's sampler (SDE, 8 steps, t_min = 0.1): slope within 0.02 of 1, R^2 >= 0.99."""
    data = MultiPatchData(100, ZETA)
    x = reverse_sample(TrueScore(data, "cpu"), 10_000, SamplerConfig(process="sde", steps=8, t_min=0.1), seed=1)
    a, b = rule_coordinates(x, data)
    m = sample_metrics(a, b, ZETA, n_boot=0)
    assert abs(m.slope - 1) <= 0.02 and m.r2 >= 0.99
    assert m.conforming_share == 1.0 and abs(m.corr_se) < 1e-6


def test_exact_score_samples_have_the_law_of_denoised_data():
    """The rule line holds for any Tweedie output, so the test above cannot catch a wrong sampler. Here the law of
    a = <x0-hat, u> after reverse sampling (SDE, 32 steps, t_min = 0.1, n = 4000) is compared with Tweedie
    applied to forward-noised data at t_min (two-sample KS, n = 4000 each): p > 1e-3. The control: the exact
    score of Uniform(0.25, 0.75) instead of Uniform(0.2, 0.8) is rejected (measured p ~ 5e-18 < 1e-6)."""
    from scipy.stats import ks_2samp

    data, n, t_min = MultiPatchData(10, ZETA), 4000, 0.1
    alpha, beta = ou_schedule(t_min)
    xt = torch.as_tensor(np.asarray(data.sample_xt(n, alpha, beta, np.random.default_rng(5))).reshape(n, 2, 10))
    a_ref, _ = rule_coordinates(TrueScore(data, "cpu").denoise(xt, t_min), data)
    config = SamplerConfig(process="sde", steps=32, t_min=t_min)

    def a_of(zeta):
        source = TrueScore(MultiPatchData(10, zeta, u=data.u, v=data.v), "cpu")
        return rule_coordinates(reverse_sample(source, n, config, seed=1), data)[0]

    assert ks_2samp(a_of(ZETA), a_ref).pvalue > 1e-3
    assert ks_2samp(a_of(Uniform(0.25, 0.75)), a_ref).pvalue < 1e-6


@pytest.mark.parametrize("method, ratio_lo", [("exponential", 1.8), ("euler", 1.8)])
def test_error_shrinks_with_steps_first_order(method, ratio_lo):
    """Probability-flow ODE, same start: |a_N - a_1024| halves when N doubles (measured order 1.00-1.05 for both
    methods at N = 8 ... 64; the exponential integrator's constant is ~10x smaller than Euler's)."""
    data = MultiPatchData(10, ZETA)
    src = TrueScore(data, "cpu")
    ref = reverse_sample(src, 1000, SamplerConfig(process="ode", steps=1024, method=method))
    errs = [float((reverse_sample(src, 1000, SamplerConfig(process="ode", steps=n, method=method)) - ref)[:, 0]
                  .pow(2).sum(-1).mean().sqrt()) for n in (8, 16, 32)]
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    assert np.all(ratios >= ratio_lo) and np.all(ratios <= 2.3), (errs, ratios)


def _permuting_noise(perm, seed=3):
    gen = torch.Generator().manual_seed(seed)

    def noise(k, shape, permute):
        z = torch.randn(shape, generator=gen, dtype=torch.float64)
        if permute:
            z[:, 1] = z[perm, 1]
        return z
    return noise


def _sample_pair(source, config, n=400):
    """Samples with patch 2's noise (start and increments) in order and permuted across samples."""
    perm = np.random.default_rng(0).permutation(n)
    plain, permuted = _permuting_noise(perm), _permuting_noise(perm)
    x = reverse_sample(source, n, config, noise=lambda k, s: plain(k, s, False))
    y = reverse_sample(source, n, config, noise=lambda k, s: permuted(k, s, True))
    return x, y, perm


def test_per_patch_sources_move_patches_independently(small_nets):
    """Permuting patch 2's noise across samples leaves patch 1 unchanged and permutes patch 2: the sampler is a
    product of per-patch maps, so the joint law of (x1, x2) is the product of its marginals. The exact score
    couples the patches and fails the same check."""
    config, nets = small_nets
    data = MultiPatchData(10, ZETA)
    for source in (NetGridScore(data, nets, config.grid, "cpu"), MarginalScore(data, "cpu")):
        x, y, perm = _sample_pair(source, config)
        assert torch.equal(x[:, 0], y[:, 0])
        torch.testing.assert_close(x[perm, 1], y[:, 1], rtol=0, atol=1e-13)
    x, y, _ = _sample_pair(TrueScore(data, "cpu"), config)
    assert float((x[:, 0] - y[:, 0]).abs().max()) > 1e-3


def test_per_patch_and_marginal_corr_within_4_se(small_nets):
    config, nets = small_nets
    data = MultiPatchData(10, ZETA)
    for source in (NetGridScore(data, nets, config.grid, "cpu"), MarginalScore(data, "cpu")):
        a, b = rule_coordinates(reverse_sample(source, 4000, config, seed=5), data)
        m = sample_metrics(a, b, ZETA, n_boot=0)
        assert abs(m.corr) <= 4 * m.corr_se, (source.kind, m.corr, m.corr_se)
    # control: the exact score's samples are perfectly anti-correlated in (a, b), corr(a, 1 - b) = 1
    a, b = rule_coordinates(reverse_sample(TrueScore(data, "cpu"), 2000, config, seed=5), data)
    assert sample_metrics(a, b, ZETA, n_boot=0).corr > 0.999


def test_empirical_score_memorizes_at_small_t_min():
    """10 training points (zeta evenly spaced, 0.094 apart), t_min = 1e-5: every sample within 1e-3 of one."""
    data = MultiPatchData(10, ZETA)
    z = np.linspace(0.2, 0.8, 10)
    x0 = np.zeros((10, 2, 10))
    x0[:, 0, 0], x0[:, 1, 1] = z, 1 - z
    src = EmpiricalScore(data, x0, "cpu")
    for process in ("ode", "sde"):
        x = reverse_sample(src, 2000, SamplerConfig(process=process, steps=20, t_min=1e-5))
        a, b = rule_coordinates(x, data)
        m = sample_metrics(a, b, ZETA, n_boot=0, train_ab=(z, 1 - z), delta=1e-3)
        assert m.within_delta_share == 1.0
        dist = torch.cdist(x.reshape(2000, -1), torch.as_tensor(x0).reshape(10, -1)).min(1).values
        assert float(dist.max()) <= 1e-3


@pytest.mark.parametrize("process", ["ode", "sde"])
def test_point_mass_is_returned_exactly(process):
    data = MultiPatchData(10, Uniform(0.2, 0.8))
    data.zeta = PointMass(0.3)
    x = reverse_sample(TrueScore(data, "cpu"), 500, SamplerConfig(process=process, steps=5, t_min=0.05))
    expected = torch.zeros(10 * 2, dtype=torch.float64).reshape(2, 10)
    expected[0, 0], expected[1, 1] = 0.3, 0.7
    torch.testing.assert_close(x, expected.expand_as(x), rtol=0, atol=1e-12)


def test_discrete_two_atoms_samples_are_atoms_with_the_right_frequencies():
    data = MultiPatchData(10, Discrete([0.3, 0.7], [0.25, 0.75]))
    x = reverse_sample(TrueScore(data, "cpu"), 4000, SamplerConfig(process="sde", steps=20, t_min=1e-4), seed=2)
    a, _ = rule_coordinates(x, data)
    near = np.minimum(np.abs(a - 0.3), np.abs(a - 0.7))
    assert near.max() <= 1e-6
    share = np.mean(np.abs(a - 0.3) < 1e-6)
    assert abs(share - 0.25) <= 4 * math.sqrt(0.25 * 0.75 / 4000)


def test_marginal_source_rule_error_matches_separable_floor():
    data = MultiPatchData(10, ZETA)
    t = 0.4
    mc = source_rule_error(MarginalScore(data, "cpu"), t, n=40_000, seed=1)
    exact = separable_floor(ZETA, *ou_schedule(t))
    assert abs(mc.total - exact.total) <= 4 * mc.total_se
    assert source_rule_error(TrueScore(data, "cpu"), t, n=1000).total < 1e-20


def test_net_grid_score_is_the_net_residual_and_predicted_residual(small_nets):
    config, nets = small_nets
    data = MultiPatchData(10, ZETA)
    src = NetGridScore(data, nets, config.grid, "cpu")
    t = float(config.grid[2])
    x = torch.as_tensor(data.sample_xt(50, *ou_schedule(t), 0))
    alpha, beta = ou_schedule(t)
    torch.testing.assert_close(src.score(x, t), nets[2](x, beta=beta).detach(), rtol=1e-12, atol=1e-12)
    # on x_t ~ p_t the residual (a + b - 1)/sqrt(2) of the Tweedie output is (beta^2/alpha)(psi - alpha/beta^2)/sqrt(2)
    err = source_rule_error(src, t, n=20_000, seed=4)
    xs = torch.as_tensor(data.sample_xt(20_000, alpha, beta, 4))
    D = src.denoise(xs, t)
    r = ((D[:, 0, 0] + D[:, 1, 1] - 1) / math.sqrt(2)).numpy()
    mean, sd = predicted_rule_residual(err, t)
    assert abs(r.mean() - mean) < 1e-12 and abs(r.std(ddof=1) - sd) < 1e-12
    with pytest.raises(ValueError, match="no net trained at t="):
        src.denoise(x, t * 1.01)


def test_sample_rule_coordinates_ends_with_the_samples():
    data = MultiPatchData(10, ZETA)
    config = SamplerConfig(process="sde", steps=3)
    ab = sample_rule_coordinates(MarginalScore(data, "cpu"), 300, config, seed=4, batch=128)
    a, b = rule_coordinates(reverse_sample(MarginalScore(data, "cpu"), 300, config, seed=4, batch=128), data)
    assert ab.shape == (4, 2, 300)
    np.testing.assert_array_equal(ab[0, 0], a)
    np.testing.assert_array_equal(ab[0, 1], b)


def test_metrics_agree_with_section3_implementation():
    """theory.line_fit (behind theory.sample_metrics) and Table 1's copy in empirics.evaluator.metrics (kept so
    that empirics never imports theory, nor torch) give the same numbers under each one's names."""
    from empirics.evaluator.metrics import bootstrap_ci, error_eq4
    from empirics.evaluator.metrics import trimmed_fit as section3_fit

    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, 3000)
    y = 0.9 * x + 0.05 + 0.05 * rng.standard_normal(3000)
    ours, theirs = trimmed_line_fit(x, y), section3_fit(x, y)
    assert (ours.slope, ours.intercept, ours.r2, ours.n_fit) == (theirs.beta1, theirs.beta0, theirs.r2, theirs.n_fit)
    e = error_eq4(x, y, theirs, 1.0)
    assert eq4_error(x, y, ours, 1.0) == (e.bias_slope, e.bias_intercept, e.variance_term)
    m = sample_metrics(x, 1 - y, ZETA, n_boot=50, seed=3)  # y = 1 - (1 - y) differs from y by rounding only
    ci = bootstrap_ci(x, y, 1.0, n_boot=50, seed=3)
    for ours_key, their_key in (("slope", "beta1"), ("intercept", "beta0"), ("r2", "r2"), ("error", "error"),
                                ("error_variance", "error_variance"), ("conforming_share", "conforming_fraction")):
        assert m.ci[ours_key] == pytest.approx(ci[their_key], rel=1e-12, abs=1e-14), ours_key
    assert m.error == pytest.approx(e.total, rel=1e-12)


@pytest.mark.parametrize("call, match", [
    (lambda: time_grid(0.5, 10, 0.4), "t_min < t_max"),
    (lambda: time_grid(0.1, 10, 2.0), "alpha_T"),
    (lambda: time_grid(0.1, 0), "steps"),
    (lambda: SamplerConfig(process="langevin"), "process"),
    (lambda: SamplerConfig(method="rk4"), "method"),
    (lambda: SamplerConfig(t_min=-1.0), "t_min"),
    (lambda: reverse_sample("score", 10), "source"),
    (lambda: reverse_sample(TrueScore(MultiPatchData(4, ZETA), "cpu"), 0), "n"),
    (lambda: NetGridScore(MultiPatchData(4, ZETA), [TwoLayerScore(4, 2, device="cpu")], [0.1, 0.2]), "one net per"),
    (lambda: NetGridScore(MultiPatchData(4, ZETA), [TwoLayerScore(5, 2, device="cpu")], [0.1]), "does not fit"),
    (lambda: EmpiricalScore(MultiPatchData(4, ZETA), np.zeros((3, 2, 5))), "train_x0"),
    (lambda: sample_metrics(np.ones(5), np.ones(4), ZETA), "same length"),
    (lambda: sample_metrics(np.linspace(0.2, 0.8, 9), np.linspace(0.2, 0.8, 9), ZETA, trim=(50, 10)), "trim"),
    (lambda: sample_metrics(np.array([0.3, np.nan, 0.4, 0.5]), np.ones(4), ZETA), "finite"),
    (lambda: source_rule_error(TrueScore(MultiPatchData(4, ZETA), "cpu"), -0.1), "t"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
