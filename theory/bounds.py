"""Thm 4.5 in closed form (both loss targets), the Bayes-optimal rule errors, and the separable floor.

Linear activation, m = 1 (Thm 4.5). Per patch p with feature f (u, v) and coefficient c (zeta,
1 - zeta), eq. (2) regresses the residual g(x) = <w, x> w on y = alpha c f / beta^2 + kappa eps with
kappa = 1 + 1/beta for eq. (2) as printed (target "paper") and kappa = 0 for the consistent
score-matching loss (target "score"). With A = alpha^2 E[c^2], B = beta kappa, G = <w, f>^2 and
N = ||w||^2 the per-patch loss is (derived in ``derivations.linear_stationary``)

    L(w) = A G N + beta^2 N^2 - 2 A G / beta^2 - 2 B N + const,

and its stationary points are

    origin       G = N = 0
    orthogonal   G = 0, N = B / beta^2                     (a sphere in f-perp; exists iff B > 0)
    aligned      G = N = S := (A/beta^2 + B) / (A + beta^2)  (w = +-sqrt(S) f)
    mixed        G = 2 (B - 2) / A, N = 2 / beta^2         (exists iff 0 < G < N: paper target, beta > 1)

(the paper's App. E solves equations that miss a factor 2 in the gradient of -2 I3 and prints other
solutions; see ``derivations/ERRATA.md``). For beta < 1 (every variance-preserving schedule,
alpha^2 + beta^2 = 1) the aligned pair is the only local minimum for both targets, the origin is a
maximum (paper) or strict saddle (score) and the orthogonal sphere a strict saddle, so gradient
descent from a random small initialisation converges to the aligned point. There, with
psi_t of Def 4.3,

    E[psi_t] - alpha/beta^2 = alpha (B - 1) [E zeta / (A_1 + beta^2) + E(1 - zeta) / (A_2 + beta^2)],
    Var[psi_t] = alpha^2 Var(zeta) (S_1 - S_2)^2 + beta^2 (S_1^2 + S_2^2),

the paper's C0 = |bias| and C1 = Var (Thm 4.5); App. E's variance has the wrong sign on the
covariance term, giving (S_1 + S_2)^2 instead of (S_1 - S_2)^2.

Every formula here is written by hand in numpy; ``tests/derivations`` prove each equal to the sympy
derivation to 1e-12 relative.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ._checks import DTYPE, check_alpha_beta, check_real
from .losses import Target
from .rule import RuleError
from .zeta import Discrete, Uniform, ZetaDistribution, check_zeta

KINDS = ("origin", "orthogonal", "aligned", "mixed")


def _B(beta: float, target: Target) -> tuple[float, float, float]:
    """(B, B - 1, B - 2) with B = beta * kappa: 1 + beta for eq. (2) as printed, 0 for the score target.
    The differences are formed exactly (beta, beta - 1 / -1, -2) so that no cancellation enters."""
    if target is Target.PAPER:
        return 1.0 + beta, beta, beta - 1.0
    return 0.0, -1.0, -2.0


def _patch_second_moments(zeta: ZetaDistribution) -> tuple[float, float]:
    """(E[zeta^2], E[(1 - zeta)^2]): E[c^2] of patch 1 and patch 2."""
    return zeta.moment(2), zeta.mixed_moment(0, 2)


@dataclass(frozen=True)
class StationaryPoint:
    """A (family of) stationary point(s) of one patch's loss, in invariants of w.

    ``proj_sq`` = <w, f>^2, ``norm_sq`` = ||w||^2. ``hessian_in_plane`` are the eigenvalues of the
    Hessian of L in the plane span(f, e) (coordinates (<w, f>, <w, e>), e a unit vector orthogonal to f
    along the orthogonal part of w): for the origin, orthogonal and aligned points they are the
    curvatures along f and along e, in that order; for a mixed point (smaller, larger).
    ``hessian_transverse`` is the curvature along every direction orthogonal to both f and w
    (multiplicity d - 2, or d - 1 when w is parallel to f or zero). ``nature`` is "maximum",
    "saddle", "minimum" or "degenerate" (a zero curvature not explained by the rotational symmetry of
    the orthogonal and mixed families about f). ``loss_offset`` = L(w) - L(0).
    """

    patch: int
    kind: str
    proj_sq: float
    norm_sq: float
    hessian_in_plane: tuple[float, float]
    hessian_transverse: float
    nature: str
    loss_offset: float
    reached_by_gd: bool = False

    def weights(self, feature, orthogonal) -> np.ndarray:
        """A representative w = sqrt(proj_sq) f + sqrt(norm_sq - proj_sq) e (unit f, e orthogonal)."""
        f = np.asarray(feature, dtype=np.float64)
        e = np.asarray(orthogonal, dtype=np.float64)
        if f.shape != e.shape or f.ndim != 1:
            raise ValueError(f"feature and orthogonal must be vectors of one length, got {f.shape}, "
                             f"{e.shape}")
        if abs(np.linalg.norm(f) - 1) > 1e-10 or abs(np.linalg.norm(e) - 1) > 1e-10 or abs(f @ e) > 1e-10:
            raise ValueError("feature and orthogonal must be orthonormal")
        return math.sqrt(self.proj_sq) * f + math.sqrt(max(self.norm_sq - self.proj_sq, 0.0)) * e

    def as_dict(self) -> dict:
        return asdict(self)


def _nature(in_plane, transverse, manifold: bool) -> str:
    eigs = [*in_plane, transverse]
    if all(e < 0 for e in eigs):
        return "maximum"
    if any(e < 0 for e in eigs):
        return "saddle"
    zeros = [e for e in eigs if e == 0]
    if not zeros:
        return "minimum"
    # the orthogonal and mixed families are spheres about f: zero transverse curvature along them
    if manifold and transverse == 0 and all(e > 0 for e in in_plane):
        return "minimum"
    return "degenerate"


def _patch_points(patch: int, A: float, beta: float, target: Target) -> list[StationaryPoint]:
    """All real stationary points of one patch's loss with A = alpha^2 E[c^2] (see module docstring)."""
    B, B_minus_1, B_minus_2 = _B(beta, target)
    b2 = beta * beta
    pts = []
    # origin: Hessian -4 A/beta^2 - 4 B along f, -4 B elsewhere
    flat = 0.0 - 4 * B  # (0.0 - ...: no negative zero for the score target)
    inp = (-4 * A / b2 - 4 * B, flat)
    pts.append(StationaryPoint(patch, "origin", 0.0, 0.0, inp, flat, _nature(inp, flat, False), 0.0))
    # orthogonal sphere: N = B / beta^2; curvature 2 A (B - 2)/beta^2 along f, 8 B radially, 0 on the sphere
    if B > 0:
        n = B / b2
        inp = (2 * A * B_minus_2 / b2, 8 * B)
        nature = _nature(inp, 0.0, True)
        pts.append(StationaryPoint(patch, "orthogonal", 0.0, n, inp, 0.0, nature, -B * B / b2))
    # aligned: S = (A/beta^2 + B)/(A + beta^2); curvature 8 (A/beta^2 + B) along f and
    # 2 A (A/beta^2 + 2 - B)/(A + beta^2) orthogonally (bracket written without cancellation)
    s_num = A / b2 + B
    S = s_num / (A + b2)
    bracket = A / b2 + 1.0 - B_minus_1  # A/beta^2 + 2 - B
    trans = 2 * A * bracket / (A + b2)
    inp = (8 * s_num, trans)
    offset = -s_num * s_num / (A + b2)
    pts.append(StationaryPoint(patch, "aligned", S, S, inp, trans, _nature(inp, trans, False), offset))
    # mixed: G = 2 (B - 2)/A, N = 2/beta^2, exists iff 0 < G < N
    G = 2 * B_minus_2 / A
    n = 2 / b2
    if 0 < G < n:
        R = n - G
        tr = 8 * (A + b2) * G + 8 * b2 * R
        det = -16 * A * A * G * R  # < 0: always a saddle
        big = (tr + math.sqrt(tr * tr - 4 * det)) / 2
        inp = (det / big, big)
        nature = _nature(inp, 0.0, True)
        pts.append(StationaryPoint(patch, "mixed", G, n, inp, 0.0, nature, -4 * B_minus_1 / b2))
    return pts


def _mark_reached(points: list[StationaryPoint]) -> list[StationaryPoint]:
    """Mark the GD limit: the family of local minima, if it is unique and no point is degenerate."""
    minima = [p for p in points if p.nature == "minimum"]
    if len(minima) == 1 and not any(p.nature == "degenerate" for p in points):
        return [StationaryPoint(**{**p.as_dict(), "reached_by_gd": p is minima[0]}) for p in points]
    return points


def linear_stationary_points(zeta, alpha, beta, target="paper") -> list[list[StationaryPoint]]:
    """All real stationary points of eq. (2) for sigma(z) = z, m = 1, per patch (Thm 4.5, App. E).

    Returns ``[points of patch 1 (u, zeta), points of patch 2 (v, 1 - zeta)]``; each family is listed
    once (the aligned pair +-sqrt(S) f and the orthogonal / mixed spheres by their invariants).
    ``reached_by_gd`` marks the point GD reaches from a random small initialisation when that is
    determined by the landscape alone: the unique family of local minima (strict saddles and maxima
    attract a null set of initialisations; the loss is coercive). For eq. (2) as printed with
    beta >= 1 the orthogonal sphere is also a (possibly degenerate) minimum, the limit depends on d
    and the initial scale, and no point is marked. Where we differ from App. E: the paper's
    stationarity equations miss a factor 2 (``derivations/ERRATA.md``), so its solutions differ.
    """
    zeta = check_zeta(zeta)
    alpha, beta = check_alpha_beta(alpha, beta)
    target = Target.parse(target)
    a2 = alpha * alpha
    return [_mark_reached(_patch_points(p, a2 * c2, beta, target))
            for p, c2 in enumerate(_patch_second_moments(zeta))]


def linear_gd_point(zeta, alpha, beta, target="paper") -> tuple[StationaryPoint, StationaryPoint]:
    """The stationary point of each patch that GD reaches from a small random initialisation (Thm 4.5).

    Raises ValueError when the landscape does not determine it (eq. (2) as printed with beta >= 1).
    """
    per_patch = linear_stationary_points(zeta, alpha, beta, target)
    out = []
    for p, pts in enumerate(per_patch):
        reached = [q for q in pts if q.reached_by_gd]
        if len(reached) != 1:
            kinds = ", ".join(f"{q.kind} ({q.nature})" for q in pts)
            raise ValueError(f"beta={beta}: the GD limit of patch {p + 1} is not determined by the landscape "
                             f"(stationary points: {kinds}); it depends on d and the initial scale. "
                             "Thm 4.5 needs beta < 1, as for variance-preserving schedules.")
        out.append(reached[0])
    return out[0], out[1]


def linear_psi_moments(zeta, alpha, beta, point1, point2) -> tuple[float, float]:
    """(E[psi_t], Var[psi_t]) of Def 4.3 for linear m = 1 weights given by (proj_sq, norm_sq) per patch.

    With w_p = gamma_p f_p + (orthogonal part), psi_t = gamma_1 <w_1, x^(1)> + gamma_2 <w_2, x^(2)>, so
    E = alpha (E[zeta] G1 + E[1 - zeta] G2),
    Var = alpha^2 Var(zeta) (G1 - G2)^2 + beta^2 (G1 N1 + G2 N2) (the two patches share zeta, not eps).
    ``point1``/``point2`` are ``StationaryPoint``s or (proj_sq, norm_sq) pairs with 0 <= proj_sq <= norm_sq.
    """
    zeta = check_zeta(zeta)
    alpha, beta = check_alpha_beta(alpha, beta)
    (G1, N1), (G2, N2) = (_invariants(f"point{i + 1}", p) for i, p in enumerate((point1, point2)))
    mean = alpha * (zeta.mean * G1 + (1.0 - zeta.mean) * G2)
    var = alpha**2 * zeta.var * (G1 - G2) ** 2 + beta**2 * (G1 * N1 + G2 * N2)
    return mean, var


def _invariants(name, point) -> tuple[float, float]:
    if isinstance(point, StationaryPoint):
        return point.proj_sq, point.norm_sq
    try:
        g, n = point
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a StationaryPoint or a (proj_sq, norm_sq) pair, "
                         f"got {point!r}") from exc
    g = check_real(f"{name} proj_sq", g, nonneg=True)
    n = check_real(f"{name} norm_sq", n, nonneg=True)
    if g > n * (1 + 1e-12):
        raise ValueError(f"{name}: proj_sq={g} cannot exceed norm_sq={n} (<w, f>^2 <= ||w||^2)")
    return g, n


def linear_rule_error(zeta, alpha, beta, target="paper") -> RuleError:
    """Thm 4.5: E_bias (signed; the paper's C0 is its absolute value), E_variance (C1) and E = bias^2 + var
    of psi_t at the point GD reaches (linear activation, m = 1), for eq. (2) as printed or the score target.

    At the aligned minimum of both patches (beta < 1) the bias is written without cancellation,
    bias = alpha (B - 1) [E zeta/(A_1 + beta^2) + E(1 - zeta)/(A_2 + beta^2)] with B - 1 = beta (paper) or
    -1 (score): the printed loss over-shoots the rule, the score loss under-shoots it; neither is 0.
    """
    zeta = check_zeta(zeta)
    alpha, beta = check_alpha_beta(alpha, beta)
    target = Target.parse(target)
    p1, p2 = linear_gd_point(zeta, alpha, beta, target)
    if p1.kind == "aligned" and p2.kind == "aligned":
        A1, A2 = (alpha * alpha * c2 for c2 in _patch_second_moments(zeta))
        b2 = beta * beta
        B_minus_1 = _B(beta, target)[1]
        bias = alpha * B_minus_1 * (zeta.mean / (A1 + b2) + (1.0 - zeta.mean) / (A2 + b2))
        # S1 - S2 = (A1 - A2)(1 - B) / ((A1 + b2)(A2 + b2)), A1 - A2 = alpha^2 (2 E zeta - 1)
        diff = alpha * alpha * (2 * zeta.mean - 1.0) * (-B_minus_1) / ((A1 + b2) * (A2 + b2))
        var = alpha**2 * zeta.var * diff**2 + b2 * (p1.proj_sq**2 + p2.proj_sq**2)
        return RuleError(bias=bias, variance=var, total=bias**2 + var)
    mean, var = linear_psi_moments(zeta, alpha, beta, p1, p2)
    return RuleError.from_moments(mean, var, alpha / beta**2)


def bayes_optimal_rule_error(alpha, beta, target="paper") -> RuleError:
    """Rule error (Def 4.3) of the minimiser of the loss over *all* functions s.

    "score": the exact score (Thm 4.2), psi_t = alpha/beta^2 for every x_t by identity (*): E = 0.
    "paper": eq. (2) as printed is minimised by s* = E[eps | x_t] = -beta grad log p_t, whose
    psi_t = (1 + beta)(<x^(1), u> + <x^(2), v>)/beta^2 - alpha/beta: unbiased, variance 2 (1 + beta)^2/beta^2
    (``derivations.score.printed_loss_optimum``). Def 4.3 measures a score, so a network trained on the
    printed loss carries this error even when it is perfect.
    """
    alpha, beta = check_alpha_beta(alpha, beta)
    if Target.parse(target) is Target.SCORE:
        return RuleError(bias=0.0, variance=0.0, total=0.0)
    var = 2.0 * (1.0 + beta) ** 2 / beta**2
    return RuleError(bias=0.0, variance=var, total=var)


# ---- beyond the paper: the separable floor ---------------------------------------------------------
_GL16 = np.polynomial.legendre.leggauss(16)
_EPS_HALF_WIDTH = 9.0  # P(|eps| > 9) = 2.3e-19


def _eps_rule(panel: float) -> tuple[np.ndarray, np.ndarray]:
    """Composite 16-point Gauss-Legendre on [-9, 9] against the standard normal density."""
    n_panels = max(2, int(math.ceil(2 * _EPS_HALF_WIDTH / panel)))
    edges = np.linspace(-_EPS_HALF_WIDTH, _EPS_HALF_WIDTH, n_panels + 1)
    x, w = _GL16
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    nodes = (mid[:, None] + half[:, None] * x[None]).ravel()
    weights = (half[:, None] * w[None]).ravel() * np.exp(-nodes**2 / 2) / math.sqrt(2 * math.pi)
    return nodes, weights


class _Posterior:
    """m(mode) - c: the posterior mean E[zeta | mode, sd] under D_zeta for the Gaussian likelihood
    exp(-(zeta - mode)^2 / (2 sd^2)), measured from the centre c of the support.

    Uniform with sd <= width uses ``gaussian_tilt`` (exact truncated normal). Otherwise the prior's own
    rule is used: the atoms of a Discrete, Gauss-Legendre for Uniform (the Gaussian factor is smooth on
    the support when sd > width, where the truncated-normal form ``mode + sd * excess`` would lose
    ~|mode| * 1e-16 to cancellation), Gauss-Jacobi for ScaledBeta (the end-point behaviour of the density
    is in the weight, so the rule converges geometrically; ``ScaledBeta.gaussian_tilt``'s windowed
    Gauss-Legendre is only ~1e-7 accurate when a or b is not an integer). Deviations from c are summed
    directly, so a posterior mean that barely moves keeps its relative accuracy.
    """

    def __init__(self, zeta: ZetaDistribution, sd: float, order: int):
        self.zeta, self.sd = zeta, sd
        self.centre = 0.5 * (zeta.lo + zeta.hi)
        self.exact = isinstance(zeta, Uniform) and sd <= zeta.hi - zeta.lo
        if not self.exact:
            nodes, w = zeta.quadrature(order)
            self.nodes, self.logw = nodes, np.log(w)

    def __call__(self, mode: np.ndarray) -> np.ndarray:
        if self.exact:
            _, mean = self.zeta.gaussian_tilt(torch.as_tensor(mode, dtype=DTYPE), self.sd)
            return mean.numpy() - self.centre
        out = np.empty(mode.size)
        flat = mode.ravel()
        dev = self.nodes - self.centre
        step = max(1, 2_000_000 // self.nodes.size)
        for i in range(0, flat.size, step):
            m = flat[i:i + step, None]
            logk = self.logw[None] - (self.nodes[None] - m) ** 2 / (2 * self.sd**2)
            k = np.exp(logk - logk.max(axis=1, keepdims=True))
            out[i:i + step] = (k @ dev) / k.sum(axis=1)
        return out.reshape(mode.shape)


def _mean_conditional_variance(zeta: ZetaDistribution, sd: float, level: int) -> float:
    """E_zeta[Var_eps(m(zeta + sd eps) | zeta)] with m the posterior mean above, at a resolution level."""
    width = zeta.hi - zeta.lo
    scale = 2**level
    if isinstance(zeta, Discrete):
        z, wz = zeta.quadrature()
        panel = min(1.0, sd / width) / scale  # posterior odds change over sd/width in eps
        order = 1
    else:
        z, wz = zeta.quadrature(scale * (32 + int(math.ceil(4 * width / sd))))
        panel = 1.0 / scale
        order = scale * (64 + int(math.ceil(8 * width / sd)))
    post = _Posterior(zeta, sd, order)
    e, we = _eps_rule(panel)
    total = 0.0
    step = max(1, 200_000 // e.size)
    for i in range(0, z.size, step):
        m = post(z[i:i + step, None] + sd * e[None])
        cm = m @ we
        total += float(wz[i:i + step] @ (((m - cm[:, None]) ** 2) @ we))
    return total


def separable_floor(zeta, alpha, beta, rtol: float = 1e-10) -> RuleError:
    """Beyond the paper: rule error (Def 4.3) of the best *per-patch* score, each patch's marginal score.

    A per-patch network (eq. (1)) sees x^(1) and x^(2) separately and its loss separates over patches,
    so its loss minimiser over all functions is the marginal score of each patch:
    psi_t = (alpha/beta^2)(E[zeta | x^(1)] + E[1 - zeta | x^(2)]). Patch 1's likelihood in zeta is
    Gaussian with mode <x^(1), u>/alpha and sd beta/alpha; patch 2's, written in zeta, has mode
    1 - <x^(2), v>/alpha and the same sd. Given zeta the two posterior means are i.i.d. (mode
    zeta +- sd eps), hence psi_t - alpha/beta^2 = (alpha/beta^2)(m_1 - m_2) with

        bias = 0 exactly (tower property),   Var = 2 (alpha/beta^2)^2 E_zeta[Var(m_1 | zeta)].

    The inner variance is a Gauss-Legendre integral over eps, the outer one the distribution's own
    quadrature (or its atoms); both resolutions are doubled until two levels agree to ``rtol``
    (accuracy better than 1e-8 relative, checked against independent nested quadrature in the tests).
    Note: this is the rule error of the *loss-optimal* per-patch score, not a lower bound over all
    per-patch networks (a network with constant psi_t = alpha/beta^2 has zero rule error and a worse loss).
    """
    zeta = check_zeta(zeta)
    alpha, beta = check_alpha_beta(alpha, beta)
    rtol = check_real("rtol", rtol, positive=True)
    sd = beta / alpha
    prev = _mean_conditional_variance(zeta, sd, 0)
    for level in range(1, 5):
        cur = _mean_conditional_variance(zeta, sd, level)
        change = abs(cur - prev)
        if change <= rtol * abs(cur) + 1e-300:
            var = 2.0 * (alpha / beta**2) ** 2 * cur
            return RuleError(bias=0.0, variance=var, total=var)
        prev = cur
    raise RuntimeError(f"separable_floor did not converge to rtol={rtol} "
                       f"(last relative change {change / cur:.3g})")
