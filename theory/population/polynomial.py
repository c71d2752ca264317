"""Exact loss terms and psi_t moments for polynomial activations (linear, quadratic, cubic, any
``Activation.poly``).

Given c, z = W x_t is Gaussian, so by Isserlis' theorem (``isserlis``) E[sigma(z_r) sigma(z_s) | c] is a
polynomial in (alpha c gamma, beta^2 D, beta^2 G_rs); the average over c uses exact zeta moments. Per patch
the loss of eq. (2) is then

    L_p = sum_i <G^(i+1), V Lam_i V^T> - 2 <sum_r V_r, cross> + E||y||^2,   V[r, e] = gamma_r^p_e D_r^q_e,

with Lam_i (symmetric) and cross tables of coefficients per configuration and patch kind. Exact up to
rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch

from .._checks import DTYPE
from ..data import MultiPatchData
from .isserlis import degree, derivative, pair_terms, univariate_terms
from .schedule import ConfigSchedule
from .zeta_quadrature import moment_table


class PatchKind(IntEnum):
    """The three kinds of patch: the rule patches (c = zeta along u, c = 1 - zeta along v), N(0, I)."""

    U = 0
    V = 1
    NOISE = 2


@dataclass(frozen=True)
class PolynomialTables:
    """Coefficient tables of C polynomial activations on one ``data``: monomial e = (p, q) means
    gamma^p D^q; ``lam`` (C, P, n_i, nm, nm) the pair terms by power i of G, ``cross`` (C, P, nm) the
    Stein cross terms, ``mean`` (C, 2, nm) E[psi^(p)] and ``joint`` (C, nm, nm) E[m_1 m_2] (psi_t)."""

    lam: torch.Tensor
    cross: torch.Tensor
    mean: torch.Tensor
    joint: torch.Tensor
    p_pow: torch.Tensor  # p of each monomial
    q_pow: torch.Tensor  # q of each monomial
    p_down: torch.Tensor  # max(p - 1, 0): the power of gamma in dV/dgamma
    q_down: torch.Tensor
    i1: torch.Tensor  # 1..n_i: d/dG of G^(i+1) is (i + 1) G^i
    const: torch.Tensor  # (C, P) E||y||^2

    @property
    def n_i(self) -> int:
        return self.i1.shape[0]


def polynomial_tables(polys, data: MultiPatchData, sched: ConfigSchedule, device) -> PolynomialTables:
    """The tables of ``PolynomialTables`` for one polynomial per configuration (any mix of degrees)."""
    polys = [tuple(float(s) for s in p) for p in polys]
    deg = max(max(degree(p) for p in polys), 1)
    monos = [(p, q) for q in range(deg // 2 + 2) for p in range(deg + 2 - 2 * q)]
    index = {mono: e for e, mono in enumerate(monos)}
    nm, n_i, C = len(monos), deg + 1, sched.C
    mom = moment_table(data.zeta, 2 * deg + 2)
    alpha, beta2 = sched.alpha.cpu().numpy(), (sched.beta**2).cpu().numpy()
    s2, kr, kn = sched.s2.cpu().numpy(), sched.kappa_rule.cpu().numpy(), sched.kappa_noise.cpu().numpy()
    moment = {PatchKind.U: lambda k: mom[k, 0], PatchKind.V: lambda k: mom[0, k],  # E[c^k]
              PatchKind.NOISE: lambda k: 1.0 if k == 0 else 0.0}  # the N(0, I) patch: no mean
    lam = np.zeros((C, len(PatchKind), n_i, nm, nm))
    cross = np.zeros((C, len(PatchKind), nm))
    mean = np.zeros((C, 2, nm))
    joint = np.zeros((C, nm, nm))
    for c, poly in enumerate(polys):
        pair, uni = pair_terms(poly), univariate_terms(poly)
        uni_d = univariate_terms(derivative(poly))
        for kind in PatchKind:
            rule = kind is not PatchKind.NOISE
            var, ek = (beta2[c] if rule else s2[c]), moment[kind]
            for (i, pr, qr, ps, qs), coef in pair.items():
                e = pr + ps
                lam[c, kind, i, index[(pr, qr)], index[(ps, qs)]] += (
                    coef * alpha[c] ** e * var ** (qr + qs + i) * ek(e))
            for (p, q), coef in uni.items():
                if rule:  # (mu / beta^2) E[sigma | c] -> gamma^(p+1) D^q
                    cross[c, kind, index[(p + 1, q)]] += coef * alpha[c] ** (p + 1) * var**q * ek(p + 1) / var
                    mean[c, kind, index[(p + 1, q)]] += coef * alpha[c] ** p * var**q * ek(p)
            for (p, q), coef in uni_d.items():  # kappa2 D E[sigma' | c] -> gamma^p D^(q+1)
                kap = kr[c] if rule else kn[c]
                cross[c, kind, index[(p, q + 1)]] += kap * coef * alpha[c] ** p * var**q * ek(p)
        for (p, q), coef in uni.items():  # E[m_1 m_2] with m_p = sum_r gamma_r E[sigma(z_r) | zeta]
            for (p2, q2), coef2 in uni.items():
                joint[c, index[(p + 1, q)], index[(p2 + 1, q2)]] += (
                    coef * coef2 * alpha[c] ** (p + p2) * beta2[c] ** (q + q2) * mom[p, p2])
    kinds = [PatchKind.U, PatchKind.V] + [PatchKind.NOISE] * (data.n_patches - 2)
    as_t = lambda x: torch.as_tensor(x, dtype=DTYPE, device=device)  # noqa: E731
    p_pow, q_pow = as_t([p for p, _ in monos]), as_t([q for _, q in monos])
    return PolynomialTables(lam=as_t(lam[:, kinds]), cross=as_t(cross[:, kinds]), mean=as_t(mean),
                            joint=as_t(joint), p_pow=p_pow, q_pow=q_pow, p_down=(p_pow - 1).clamp(min=0),
                            q_down=(q_pow - 1).clamp(min=0),
                            i1=torch.arange(1, n_i + 1, dtype=DTYPE, device=device)[:, None, None],
                            const=sched.constants(data.n_patches))


class PolyEvaluator:
    """Exact loss terms for polynomial activations (one polynomial per config, any mix of degrees)."""

    def __init__(self, polys, data: MultiPatchData, sched: ConfigSchedule, device):
        self.sched, self.P = sched, data.n_patches
        self.tables = polynomial_tables(polys, data, sched, device)

    def _monomials(self, gamma, D):
        """V[..., r, e] = gamma_r^p D_r^q for the monomials e = (p, q); also gamma^p and D^q."""
        gp = gamma[..., None] ** self.tables.p_pow
        dq = D[..., None] ** self.tables.q_pow
        return gp * dq, gp, dq

    def _gram_powers(self, G):
        """(C, P, n_i, m, m): G^i (elementwise), i = 0..n_i-1."""
        out, Gi = [], torch.ones_like(G)
        for _ in range(self.tables.n_i):
            out.append(Gi)
            Gi = Gi * G
        return torch.stack(out, 2)

    def patch_losses(self, G, gamma, with_grad: bool):
        """(C, P) per-patch losses (the module docstring's L_p; differentiable torch code) and, ``with_grad``,
        S = dL/dG (C, P, m, m; symmetric, entries of G independent) and dL/dgamma (C, 2, m)."""
        T = self.tables
        D = torch.diagonal(G, dim1=-2, dim2=-1)
        gam = torch.cat([gamma, torch.zeros_like(D[:, 2:])], 1) if G.shape[1] > 2 else gamma
        V, gp, dq = self._monomials(gam, D)
        Gp = self._gram_powers(G)  # G^i
        Gq = Gp * G[:, :, None]  # G^(i+1)
        VL = V[:, :, None] @ T.lam  # (C, P, n_i, m, nm): V Lam_i
        K = VL @ V[:, :, None].transpose(-1, -2)  # V Lam_i V^T
        loss = (Gq * K).sum((-1, -2, -3)) - 2 * (V.sum(-2) * T.cross).sum(-1) + T.const
        if not with_grad:
            return loss
        S = (T.i1 * Gp * K).sum(2)  # explicit d/dG_rs of sum_i <G^(i+1), V Lam_i V^T> (Lam_i symmetric)
        dV = 2 * (Gq @ VL).sum(2) - 2 * T.cross[:, :, None, :]
        Vg = T.p_pow * gam[..., None] ** T.p_down * dq  # d V / d gamma
        Vd = T.q_pow * gp * D[..., None] ** T.q_down  # d V / d D
        S = S + torch.diag_embed((dV * Vd).sum(-1))
        return loss, S, (dV * Vg).sum(-1)[:, :2]

    def value(self, G, gamma) -> torch.Tensor:
        """(C, P) per-patch losses (differentiable torch code)."""
        return self.patch_losses(G, gamma, with_grad=False)

    def value_and_grad(self, G, gamma):
        """(C,) losses, S = dL/dG (C, P, m, m), dL/dgamma (C, 2, m)."""
        loss, S, g_gamma = self.patch_losses(G, gamma, with_grad=True)
        return loss.sum(-1), S, g_gamma

    def psi(self, G, gamma):
        """(E[psi_t], Var[psi_t]) per configuration (Def 4.3): the pair tables with gamma gamma^T for G."""
        T = self.tables
        G2, D = G[:, :2], torch.diagonal(G[:, :2], dim1=-2, dim2=-1)
        V = self._monomials(gamma, D)[0]
        Sv = V.sum(-2)  # (C, 2, nm)
        mean = (Sv * T.mean).sum((-1, -2))
        Vt = V * gamma[..., None]
        H = torch.einsum("cpre,cpirs,cpsf->cpief", Vt, self._gram_powers(G2), Vt)
        second = (H * T.lam[:, :2]).sum((-1, -2, -3, -4))
        second = second + 2 * torch.einsum("ce,cef,cf->c", Sv[:, 0], T.joint, Sv[:, 1])
        return mean, second - mean**2
