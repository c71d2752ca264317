"""The sympy derivation of Thm 4.5 is internally consistent, matches the house DSM loss by Monte Carlo,
and its stationary-point list is complete."""

import math

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st

from derivations import linear_stationary as LS
from theory import MultiPatchData, Uniform, ou_schedule
from theory.losses import DSMLoss
from theory.network import TwoLayerScore

TARGETS = LS.TARGETS


@pytest.mark.parametrize("target", TARGETS)
def test_loss_is_i1_plus_i2_minus_2_i3(target):
    der = LS.derive_loss(target)
    assert sp.expand(der.sample_loss - (der.I1_given_c + der.I2_given_c - 2 * der.I3_given_c)) == 0
    # averaging the per-sample loss over c gives the population loss (c^2 -> E[c^2])
    assert sp.expand(der.sample_loss.subs(LS.c**2, LS.c2) - der.loss) == 0


@pytest.mark.parametrize("target", TARGETS)
def test_vector_gradient_is_the_coordinate_gradient(target):
    """grad L = grad_f f + grad_w w: its components along f and e are dL/dgamma and dL/drho."""
    der = LS.derive_loss(target)
    sub = {LS.N: LS.gamma**2 + LS.rho**2}
    assert sp.expand((der.grad_f + der.grad_w * LS.gamma).subs(sub) - sp.diff(der.loss, LS.gamma)) == 0
    assert sp.expand((der.grad_w * LS.rho).subs(sub) - sp.diff(der.loss, LS.rho)) == 0


@pytest.mark.parametrize("target", TARGETS)
def test_factorisation_makes_the_stationary_list_complete(target):
    """dL/dgamma = gamma P, dL/drho = rho Q with P, Q of degree 1 in (G, N): four linear cases, all listed."""
    der = LS.derive_loss(target)
    sub = {LS.G: LS.gamma**2, LS.N: LS.gamma**2 + LS.rho**2}
    assert sp.expand(sp.diff(der.loss, LS.gamma) - LS.gamma * der.P.subs(sub)) == 0
    assert sp.expand(sp.diff(der.loss, LS.rho) - LS.rho * der.Q.subs(sub)) == 0
    for expr in (der.P, der.Q):
        assert sp.Poly(expr, LS.G, LS.N).total_degree() == 1
    fams = LS.stationary_families(target)
    assert {f.kind for f in fams} == {"origin", "orthogonal", "aligned", "mixed"}
    for fam in fams:  # each family solves the equations of its case
        if fam.kind in ("aligned", "mixed"):
            assert sp.simplify(der.P.subs({LS.G: fam.G, LS.N: fam.N})) == 0
        if fam.kind in ("orthogonal", "mixed"):
            assert sp.simplify(der.Q.subs({LS.G: fam.G, LS.N: fam.N})) == 0


@given(st.sampled_from([0.2, 0.5, 1.3]), st.floats(0.1, 2.5), st.floats(0.1, 2.5), st.sampled_from(TARGETS))
def test_numerical_roots_are_the_listed_families(c2, alpha, beta, target):
    """Independent completeness check: a grid of Newton starts in (gamma, rho) finds only listed points."""
    f = LS.lambdified(target)
    fams = f["families"]
    listed = []
    with np.errstate(invalid="ignore"):  # non-existent families may have complex Hessian entries
        for fns in fams.values():
            for fn in fns:
                G, N, *_rest = fn(alpha, beta, c2)
                conds = _rest[4:]
                if all(np.isreal(c) and float(np.real(c)) > 0 for c in conds):
                    listed.append((float(G), float(N)))
    found = set()
    der = LS.derive_loss(target)
    H = sp.lambdify((LS.alpha, LS.beta, LS.c2, LS.gamma, LS.rho), der.hessian, "numpy")
    span = 1.5 * math.sqrt(max(b for _, b in listed))
    for g0 in np.linspace(-span, span, 7):
        for r0 in np.linspace(0, span, 4):
            x = np.array([g0, r0])
            for _ in range(60):
                gr = np.array(f["grad"](alpha, beta, c2, *x), dtype=float)
                h = np.array(H(alpha, beta, c2, *x), dtype=float)
                try:
                    x = x - np.linalg.solve(h, gr)
                except np.linalg.LinAlgError:
                    break
            gr = np.array(f["grad"](alpha, beta, c2, *x), dtype=float)
            if np.all(np.isfinite(x)) and np.abs(gr).max() < 1e-10 * max(1.0, np.abs(x).max() ** 3):
                G, N = x[0] ** 2, x[0] ** 2 + x[1] ** 2
                hits = [i for i, (a, b) in enumerate(listed) if abs(G - a) < 1e-7 * max(1, a)
                        and abs(N - b) < 1e-7 * max(1, b)]
                assert hits, (G, N, listed)
                found.update(hits)
    assert len(found) >= 2  # Newton did find roots (at least the origin and the aligned point)


@pytest.mark.parametrize("target", TARGETS)
def test_loss_equals_monte_carlo_dsm_loss(target):
    """E over x0, eps of eq. (2) (house theory.losses.DSMLoss) at random weights: within 5 SE."""
    d = 6
    zeta = Uniform(0.2, 0.8)
    data = MultiPatchData(d, zeta)
    alpha, beta = ou_schedule(0.5)
    rng = np.random.default_rng(1)
    W = rng.normal(scale=0.6, size=(2, 1, d))
    net = TwoLayerScore.from_weights(W, "linear", device="cpu")
    n = 400_000
    x0 = data.sample_x0(n, rng)
    eps = rng.standard_normal(x0.shape)
    x_t = alpha * x0 + beta * eps
    s = net(torch.as_tensor(x_t), beta=beta).detach().numpy()
    tgt = eps if target == "paper" else -eps / beta
    per = ((s - tgt) ** 2).sum(axis=(1, 2))
    loss_fn = DSMLoss(target)
    house = float(loss_fn(net, x0[:1000], eps[:1000], alpha, beta).detach())
    assert house == pytest.approx(per[:1000].mean(), rel=1e-12)
    der = LS.derive_loss(target)
    exact = 0.0
    for p, c2 in enumerate((zeta.moment(2), zeta.mixed_moment(0, 2))):
        w, feat = W[p, 0], data.features[p]
        exact += float(der.loss_GN.subs({LS.alpha: alpha, LS.beta: beta, LS.c2: c2, LS.d: d,
                                         LS.G: (w @ feat) ** 2, LS.N: w @ w}))
    assert abs(per.mean() - exact) < 5 * per.std() / math.sqrt(n)


def test_reduced_path_of_the_printed_loss_passes_the_orthogonal_saddle():
    """At App. F's step size 0.03, t = 0.8: the orthogonal part saturates first and 5000 steps do not reach
    the aligned minimum (m = 1, linear; sigma0 = 0.1/sqrt(d), d = 100)."""
    zeta = Uniform(0.2, 0.8)
    alpha, beta = ou_schedule(0.8)
    c2 = zeta.moment(2)
    s0 = 0.1 / math.sqrt(100)
    ks, g, r = LS.gd_path(alpha, beta, c2, s0, s0 * math.sqrt(99), 0.03, 5000, "paper", record_every=50)
    S = (alpha**2 * c2 / beta**2 + 1 + beta) / (alpha**2 * c2 + beta**2)
    assert r[-1] ** 2 > 0.1 and g[-1] ** 2 < 0.9 * S  # not converged: still near the orthogonal saddle
    ks, g, r = LS.gd_path(alpha, beta, c2, s0, s0 * math.sqrt(99), 0.03, 40_000, "paper", record_every=40_000)
    assert g[-1] ** 2 == pytest.approx(S, rel=1e-8)  # it gets there eventually


def test_hessian_signs_are_evident_in_factored_form():
    """The curvatures that classify the points, in forms whose sign is evident for 0 < beta < 1."""
    A, b = LS.alpha**2 * LS.c2, LS.beta
    fams = {f.kind: f for f in LS.stationary_families("paper")}
    assert sp.simplify(fams["origin"].hessian_in_plane[0] + 4 * A / b**2 + 4 * (1 + b)) == 0
    assert sp.simplify(fams["orthogonal"].hessian_in_plane[0] - 2 * A * (b - 1) / b**2) == 0  # < 0
    aligned_perp = 2 * A * (A + b**2 * (1 - b)) / (b**2 * (A + b**2))  # > 0 for beta < 1
    assert sp.simplify(fams["aligned"].hessian_transverse - aligned_perp) == 0
    assert sp.simplify(fams["aligned"].hessian_in_plane[0] - 8 * (A / b**2 + 1 + b)) == 0
    score = {f.kind: f for f in LS.stationary_families("score")}
    assert sp.simplify(score["origin"].hessian_in_plane[0] + 4 * A / b**2) == 0
    score_perp = 2 * A * (A + 2 * b**2) / (b**2 * (A + b**2))
    assert sp.simplify(score["aligned"].hessian_transverse - score_perp) == 0


@pytest.mark.parametrize("kwargs, word", [({"lr": 0.0}, "lr"), ({"steps": 0}, "steps"),
                                          ({"target": "eps"}, "target"), ({"alpha_val": -1.0}, "alpha_val")])
def test_gd_path_validates(kwargs, word):
    args = {"alpha_val": 0.7, "beta_val": 0.7, "c2_val": 0.28, "gamma0": 0.01, "rho0": 0.1, "lr": 0.01,
            "steps": 10, **kwargs}
    with pytest.raises(ValueError, match=word):
        LS.gd_path(**args)
