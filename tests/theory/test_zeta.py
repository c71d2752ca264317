import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import zetas
from theory import Discrete, ScaledBeta, Uniform, parse_zeta
from theory.zeta import _windowed_tilt


@given(zetas(), st.integers(0, 6))
def test_quadrature_reproduces_moments(zeta, k):
    nodes, weights = zeta.quadrature(8)
    assert weights.sum() == pytest.approx(1.0, abs=1e-13)
    assert np.sum(weights * nodes**k) == pytest.approx(zeta.moment(k), rel=1e-11, abs=1e-14)


@given(zetas())
def test_support_and_mixed_moments(zeta):
    nodes, weights = zeta.quadrature(8)
    assert np.all(nodes >= zeta.lo - 1e-12) and np.all(nodes <= zeta.hi + 1e-12)
    direct = np.sum(weights * nodes**2 * (1 - nodes) ** 3)
    assert zeta.mixed_moment(2, 3) == pytest.approx(direct, rel=1e-10, abs=1e-13)


@pytest.mark.parametrize("zeta", [Uniform(0.2, 0.8), ScaledBeta(2, 5, 0.1, 0.9),
                                  Discrete([0.3, 0.5, 0.9], [0.2, 0.5, 0.3])])
def test_sample_mean_and_variance_within_standard_error(zeta):
    n = 200_000
    x = zeta.sample(n, np.random.default_rng(1))
    assert x.min() >= zeta.lo and x.max() <= zeta.hi
    se_mean = math.sqrt(zeta.var / n)
    assert abs(x.mean() - zeta.mean) < 4 * se_mean
    m4 = zeta.moment(4) - 4 * zeta.moment(3) * zeta.mean + 6 * zeta.moment(2) * zeta.mean**2 - 3 * zeta.mean**4
    se_var = math.sqrt((m4 - zeta.var**2) / n)
    assert abs(x.var() - zeta.var) < 4 * se_var


# modes: far away, and at k sd from either end of the support (the boundary-layer regime)
_modes = st.one_of(st.floats(-1e4, 1e4),
                   st.tuples(st.sampled_from([0.2, 0.8]), st.sampled_from([-1, 1]),
                             st.sampled_from([0.0, 1.0, 5.0, 11.9, 12.0, 12.5, 30.0, 1e3])))


@given(_modes, st.sampled_from([1e-4, 1e-2, 0.0316, 0.3, 5.0, 300.0]))
def test_uniform_closed_form_tilt_matches_windowed_quadrature(mode, sd):
    """Values and d/dmode (by autograd) of both routes agree: the quadrature is accurate to 1e-10."""
    if isinstance(mode, tuple):
        end, sign, k = mode
        mode = end + sign * k * sd
    u = Uniform(0.2, 0.8)
    m = torch.tensor([mode], dtype=torch.float64, requires_grad=True)
    s = torch.tensor([sd], dtype=torch.float64)
    lz_exact, mean_exact = u.gaussian_tilt(m, s)
    lz_quad, mean_quad = _windowed_tilt(u, m, s, order=96)
    assert torch.isfinite(lz_exact).all() and torch.isfinite(mean_exact).all()
    assert lz_exact.item() == pytest.approx(lz_quad.item(), rel=1e-10, abs=1e-10)
    # distances to the nearest end are what the score uses: compare them relatively
    for end in (0.2, 0.8):
        assert mean_exact.item() - end == pytest.approx(mean_quad.item() - end, rel=1e-9, abs=1e-12)
    # d log Z / d mode = (E[zeta] - mode) / sd^2 for both routes
    (g_exact,) = torch.autograd.grad(lz_exact.sum(), m)
    (g_quad,) = torch.autograd.grad(lz_quad.sum(), m)
    scale = (abs(mode) + 1) / sd**2
    assert float(g_quad) == pytest.approx(float(g_exact), rel=1e-9, abs=1e-12 * scale)


def test_discrete_tilt_is_a_softmax():
    z = Discrete([0.25, 0.75], [0.4, 0.6])
    log_z, mean = z.gaussian_tilt(torch.tensor([0.5]), 0.5)
    w = np.array([0.4, 0.6]) * np.exp(-((np.array([0.25, 0.75]) - 0.5) ** 2) / 0.5)
    assert float(log_z) == pytest.approx(math.log(w.sum()), rel=1e-14)
    assert float(mean) == pytest.approx((w * [0.25, 0.75]).sum() / w.sum(), rel=1e-14)


def test_parse_zeta_round_trip():
    assert parse_zeta("uniform:0.2:0.8").describe() == Uniform(0.2, 0.8).describe()
    assert parse_zeta("beta:2:3:0.1:0.9").describe() == ScaledBeta(2, 3, 0.1, 0.9).describe()
    assert parse_zeta("discrete:0.3,0.7:0.5,0.5").describe() == Discrete([0.3, 0.7]).describe()
    with pytest.raises(ValueError, match="zeta spec"):
        parse_zeta("gauss:0:1")
