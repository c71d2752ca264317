"""Gaussian moments of polynomial activations for joint networks, averaged over zeta (Isserlis; exact).

Beyond the paper (App. F trains eq. (1) only). Given zeta the pre-activations of a ``JointTwoLayerScore``
are z ~ N(p + q zeta, K) (``theory.population.joint``). For sigma(z) = sum_j s_j z^j, Isserlis' theorem
(``isserlis.pair_terms``) makes E[sigma(z_r) sigma(z_s) | zeta] a polynomial in (mu_r, mu_s, K_rr, K_ss, K_rs),
mu = p + q zeta, of degree 2 deg in zeta; E[zeta^k sigma(z_r) | zeta] and E[sigma'(z_r) | zeta] have degree
<= deg + 1. A Gauss rule in zeta with deg + 2 nodes (``ZetaDistribution.quadrature``, exact to degree
2 deg + 3; a ``Discrete`` law's own atoms) therefore averages them exactly: the moments are exact up to
rounding and differentiable by autograd in K, p, q. Per node, as in ``polynomial``,

    E[sigma(z_r) sigma(z_s) | zeta] = sum_i K_rs^i (V Lam_i V^T)_rs,   V[r, e] = mu_r^a_e K_rr^b_e,

and the zeta average sum_n w_n V_n Lam_i V_n^T is one product over all nodes. First derivatives are written by
hand (``PolynomialMoments.backward``; tests compare them with autograd through ``reference``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._checks import DTYPE
from .isserlis import degree, derivative, pair_terms, univariate_terms


class PolynomialMoments:
    """(P2, P1, D1) of the joint-net interface for one polynomial per configuration (any mix of degrees)."""

    def __init__(self, polys, zeta, device):
        polys = [tuple(float(s) for s in p) for p in polys]
        self.deg = max(max(degree(p) for p in polys), 1)
        self.monos = [(a, b) for b in range(self.deg // 2 + 1) for a in range(self.deg + 1)]
        index = {mono: e for e, mono in enumerate(self.monos)}
        C, nm, n_i = len(polys), len(self.monos), self.deg + 1
        lam, uni, uni_d = np.zeros((C, n_i, nm, nm)), np.zeros((C, nm)), np.zeros((C, nm))
        for c, poly in enumerate(polys):
            for (i, ar, br, a_s, bs), coef in pair_terms(poly).items():
                lam[c, i, index[(ar, br)], index[(a_s, bs)]] += coef
            for (a, b), coef in univariate_terms(poly).items():
                uni[c, index[(a, b)]] += coef
            for (a, b), coef in univariate_terms(derivative(poly)).items():
                uni_d[c, index[(a, b)]] += coef
        nodes, weights = zeta.quadrature(self.deg + 2)
        as_t = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=DTYPE, device=device)  # noqa: E731
        self.lam, self.uni, self.uni_d = as_t(lam), as_t(uni), as_t(uni_d)
        self.nodes, self.weights = as_t(nodes), as_t(weights)
        self.a_idx = torch.tensor([a for a, _ in self.monos], device=device)
        self.b_idx = torch.tensor([b for _, b in self.monos], device=device)
        self.a_down, self.b_down = (self.a_idx - 1).clamp(min=0), (self.b_idx - 1).clamp(min=0)
        self.a_val, self.b_val = self.a_idx.to(DTYPE), self.b_idx.to(DTYPE)  # d/dx x^a = a x^(a-1)
        self.i_val = torch.arange(1, self.deg + 1, dtype=DTYPE, device=device)[:, None, None]  # d/dK K^i
        n = self.nodes.numel()  # all nodes in one product: diag(w) (x) Lam_i, (C, n_i, n nm, n nm)
        self.lam_nodes = torch.einsum("nk,cief->cinekf", torch.diag(self.weights), self.lam).reshape(
            C, n_i, n * nm, n * nm)

    @staticmethod
    def _powers(x: torch.Tensor, n: int) -> torch.Tensor:
        """x^0..x^n stacked on a new last axis, by products (autograd-safe at x = 0)."""
        out = [torch.ones_like(x)]
        for _ in range(n):
            out.append(out[-1] * x)
        return torch.stack(out, -1)

    def terms(self, K, p, q) -> PolynomialTerms:
        """The shared intermediates of the moments and their derivatives (``PolynomialTerms``)."""
        C, m = p.shape
        mu = p[:, None, :] + q[:, None, :] * self.nodes[None, :, None]  # (C, n, m)
        mp = self._powers(mu, self.deg)
        vp = self._powers(torch.diagonal(K, dim1=-2, dim2=-1), self.deg // 2)[:, None]
        V = mp[..., self.a_idx] * vp[..., self.b_idx]  # (C, n, m, nm)
        Vt = V.transpose(1, 2).reshape(C, 1, m, -1)  # (C, 1, m, n nm): nodes side by side
        VL = Vt @ self.lam_nodes  # (C, n_i, m, n nm)
        return PolynomialTerms(mp, vp, V, self._powers(K, self.deg).movedim(-1, 1), VL, VL @ Vt.transpose(-1, -2))

    def moments(self, T: PolynomialTerms):
        """(P2, P1, D1) from the intermediates: P2 = sum_i K^i o Msum_i, P1 and D1 node sums."""
        w = self.weights
        P2 = (T.Kp * T.Msum).sum(1)
        zk = torch.stack([w, w * self.nodes])  # (2, n): E[zeta^k .] weights
        P1 = torch.einsum("kn,cnr->ckr", zk, (T.V @ self.uni[:, None, :, None])[..., 0])
        D1 = torch.einsum("n,cnr->cr", w, (T.V @ self.uni_d[:, None, :, None])[..., 0])
        return P2, P1, D1

    def reference(self, K: torch.Tensor, p: torch.Tensor, q: torch.Tensor):
        """(P2, P1, D1) by differentiable torch code: the autograd reference of ``__call__``'s backward."""
        return self.moments(self.terms(K, p, q))

    def __call__(self, K: torch.Tensor, p: torch.Tensor, q: torch.Tensor):
        """K (C, m, m), p, q (C, m) -> P2 (C, m, m), P1 (C, 2, m), D1 (C, m) (the interface in ``joint``);
        first derivatives written by hand (``backward``), no double backward."""
        return _Moments.apply(K, p, q, self)

    def backward(self, T: PolynomialTerms, gP2, gP1, gD1):
        """d/d(K, p, q) of <gP2, P2> + <gP1, P1> + <gD1, D1>: V[n, r, e] = mu_nr^a_e K_rr^b_e enters the pairs
        through w_n V_n Lam_i V_n^T (Lam_i symmetric) and P1, D1 linearly; K off the diagonal through K^i."""
        w = self.weights
        C, n, m, nm = T.V.shape
        H = gP2[:, None] * T.Kp  # (C, n_i, m, m)
        dV = ((H + H.transpose(-1, -2)) @ T.VL).sum(1).reshape(C, m, n, nm).transpose(1, 2)  # (C, n, m, nm)
        lin = (gP1[:, 0, None] + gP1[:, 1, None] * self.nodes[None, :, None]) * w[None, :, None]  # (C, n, m)
        dV = dV + lin[..., None] * self.uni[:, None, None] + (w[None, :, None] * gD1[:, None])[..., None] * \
            self.uni_d[:, None, None]
        dmu = (dV * self.a_val * T.mp[..., self.a_down] * T.vp[..., self.b_idx]).sum(-1)  # (C, n, m)
        dvar = (dV * self.b_val * T.mp[..., self.a_idx] * T.vp[..., self.b_down]).sum((1, -1))  # (C, m)
        dK = (self.i_val * T.Kp[:, :-1] * T.Msum[:, 1:] * gP2[:, None]).sum(1) + torch.diag_embed(dvar)
        return dK, dmu.sum(1), (dmu * self.nodes[None, :, None]).sum(1)


@dataclass(frozen=True)
class PolynomialTerms:
    """Intermediates of ``PolynomialMoments`` at (K, p, q): powers ``mp`` of mu (C, n, m, deg + 1) and ``vp`` of
    diag K (C, 1, m, deg/2 + 1), monomials ``V`` (C, n, m, nm), ``Kp`` = K^i (C, n_i, m, m), ``VL`` (C, n_i, m,
    n nm) = [V_1 ... V_n] (diag(w) (x) Lam_i) and ``Msum`` (C, n_i, m, m) = sum_n w_n V_n Lam_i V_n^T."""

    mp: torch.Tensor
    vp: torch.Tensor
    V: torch.Tensor
    Kp: torch.Tensor
    VL: torch.Tensor
    Msum: torch.Tensor


class _Moments(torch.autograd.Function):
    """``PolynomialMoments`` with its hand-written first derivatives."""

    @staticmethod
    def forward(ctx, K, p, q, moments):
        ctx.save_for_backward(K, p, q)
        ctx.moments = moments
        return moments.reference(K, p, q)

    @staticmethod
    def backward(ctx, gP2, gP1, gD1):
        K, p, q = ctx.saved_tensors
        return (*ctx.moments.backward(ctx.moments.terms(K, p, q), gP2, gP1, gD1), None)
