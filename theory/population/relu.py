"""Exact loss terms and psi_t moments for sigma = relu (eq. (1) network, eq. (2) loss, Def 4.3).

Per rule patch, with sigma_r = beta n_r (n_r = ||w_r||), A_r = (alpha/beta) gamma_r / n_r and a = c A_r, the
loss is sum_r beta^2 D_r^2 e2_r + 2 beta^2 sum_{r<s} G_rs n_r n_s U_rs - 2 sum_r D_r X_r + E||y||^2 with
e2 = E_c E[relu^2]/sigma^2, X = E_c[a Eu + kappa2 Phi] (Stein) and U_rs = E_c E[relu(z_r) relu(z_s)] /
(sigma_r sigma_s) (Price: ``relu_moments`` for the closed-form channels, ``relu_angular`` for the
integral). Patches p >= 3 (x_0 ~ N(0, I)) have no mean: E[relu relu] = s^2 n_r n_s J / (2 pi) with the
arc-cosine kernel J. Each patch loss is written once (``rule_patch_loss``, ``noise_patch_loss``) with its
hand-written gradient (Price's and Stein's identities) beside it; the rule patches run in numpy on the CPU
(``value_and_grad``) and in torch elsewhere and for ``value`` (autograd, the reference of the gradient).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .._checks import DTYPE
from ..data import MultiPatchData
from .ops import OPS, TORCH_OPS, ArrayOps, Backend
from .relu_angular import RHO_MAX, AngularRule, UniformCoefficient
from .relu_moments import Channel, MomentChannels, MomentColumn, NeuronRow, near_base
from .schedule import ConfigSchedule
from .zeta_quadrature import ZETA_ORDER, coefficient_quadrature

_SQRT_2PI = math.sqrt(2.0 * math.pi)
# The named rows and columns as plain ints for the indexing done at every evaluation (numpy indexes with an
# IntEnum member ~3x slower than with an int).
_EBAR, _PBAR, _Z, _Y = (int(c) for c in (Channel.EBAR, Channel.PBAR, Channel.Z, Channel.Y))
_ONE, _C2 = int(MomentColumn.ONE), int(MomentColumn.C2)
_N, _N_POS, _A = int(NeuronRow.N), int(NeuronRow.N_POS), int(NeuronRow.A)


def _npdf(x):
    return torch.exp(-0.5 * x * x) / _SQRT_2PI


@dataclass(frozen=True)
class PairIndex:
    """Upper-triangle neuron pairs (r < s) of m neurons and the flat indices the kernel gathers/scatters with."""

    r: object
    s: object
    rs: object  # cat(r, s): per-neuron values at both ends of every pair
    sr: object  # cat(s, r)
    lin_rs: object  # r m + s in an (m, m) matrix
    lin_both: object  # cat(r m + s, s m + r)
    lin_sym: object  # cat(r m + s, s m + r, diagonal): where S is written
    grad_index: object  # scatter_add index of the directed pair terms (2, C, 2, 2 pairs) -> (2, C, 2, m)


@dataclass(frozen=True)
class ReluTables:
    """One backend's constant arrays of the rule patches (C configurations)."""

    c_nodes: object  # (2, nc) c-quadrature nodes of both rule patches
    right_w: object  # MomentChannels arrays
    right_ext: object
    set_weights: dict
    ab: object  # alpha / beta, (C, 1, 1)
    beta2: object
    kappa_m1: object  # kappa2 - 1
    kappa_p1: object  # kappa2 + 1
    const_rule: object  # (C, 2) E||y||^2


@dataclass(frozen=True)
class RuleTerms:
    """Univariate (per neuron, (C, 2, m)) and pairwise (per pair r < s, (C, 2, pairs)) expectations of the two
    rule patches; the derivatives of U are set with ``partials`` (else None)."""

    D: object  # ||w_r||^2
    n: object  # ||w_r|| (1 where w_r = 0)
    A: object  # (alpha/beta) gamma_r / n_r
    pos: object  # w_r != 0
    phi0: object  # E_c[Phi(cA)]
    phi2: object  # E_c[c^2 Phi(cA)]
    dphi1: object  # E_c[c phi(cA)]
    relu_mean: object  # E_c[Eu] = E_c E[relu(z)] / sigma
    e2: object  # E_c E[relu(z)^2] / sigma^2
    de2_half: object  # A E_c[c^2 Phi] + E_c[c phi] = (d e2 / dA) / 2
    pairs: PairIndex
    Grs: object  # G_rs
    nn: object  # n_r n_s (0 where either neuron is 0)
    U: object  # E_c E[relu(z_r) relu(z_s)] / (sigma_r sigma_s)
    rho: object = None
    U_rho: object = None
    U_Ar: object = None
    U_As: object = None


class ReluEvaluator:
    """Exact loss terms for sigma = relu (see the module docstring and ``theory.population``'s)."""

    def __init__(self, data: MultiPatchData, sched: ConfigSchedule, device, zeta_order: int = ZETA_ORDER,
                 angle_scale: int = 1):
        self.sched, self.P, self.device = sched, data.n_patches, device
        quads = [coefficient_quadrature(data.zeta, p, zeta_order) for p in range(2)]
        n = max(q.nodes.size for q in quads)
        nodes, weights = np.zeros((2, n)), np.zeros((2, n))
        for p, q in enumerate(quads):  # zero-weight padding: both patches share one shape
            nodes[p], weights[p, : q.nodes.size] = q.nodes[0], q.weights
            nodes[p, : q.nodes.size] = q.nodes
        uniform = None
        if all(q.uniform is not None for q in quads):
            uniform = UniformCoefficient.build(np.array([q.uniform[0] for q in quads]),
                                               np.array([q.uniform[1] for q in quads]))
        self.angular = AngularRule(nodes, weights, np.array([[q.abs_min] for q in quads]), uniform, angle_scale,
                                   device)
        self.channels = MomentChannels.build(nodes, weights)
        alpha, beta = sched.alpha.cpu().numpy(), sched.beta.cpu().numpy()
        kappa = sched.kappa_rule.cpu().numpy()
        tables = ReluTables(nodes, self.channels.right_w, self.channels.right_ext, self.channels.set_weights,
                            (alpha / beta)[:, None, None], (beta**2)[:, None, None], (kappa - 1)[:, None, None],
                            (kappa + 1)[:, None, None], sched.const_rule.cpu().numpy())
        as_t = lambda v: torch.as_tensor(v, dtype=DTYPE, device=device)  # noqa: E731
        self.tables = {Backend.NUMPY: tables, Backend.TORCH: ReluTables(
            **{k: {name: tuple(as_t(a) for a in w) for name, w in v.items()} if isinstance(v, dict) else as_t(v)
               for k, v in vars(tables).items()})}
        zj, wj = data.zeta.quadrature(zeta_order)
        self.joint_nodes, self.joint_weights = as_t(np.stack([zj, 1 - zj])), as_t(wj)  # both patches, one zeta
        self._pair_cache: dict = {}

    def pairs(self, ops: ArrayOps, C: int, m: int) -> PairIndex:
        key = (ops.backend, C, m)
        if key not in self._pair_cache:
            r, s = np.triu_indices(m, 1)
            rs = np.concatenate([r, s])
            grad = rs if ops.backend is Backend.TORCH else (rs + m * np.arange(C * 4)[:, None]).ravel()
            lin = np.concatenate([r * m + s, s * m + r])
            idx = (r, s, rs, np.concatenate([s, r]), r * m + s, lin, np.concatenate([lin, np.arange(m) * (m + 1)]),
                   grad)
            self._pair_cache[key] = PairIndex(*(ops.asarray(v, self.device) for v in idx))
        return self._pair_cache[key]

    def rule_terms(self, G, gamma, partials: bool, ops: ArrayOps = TORCH_OPS) -> RuleTerms:
        """Univariate and pairwise expectations of the two rule patches (G (C, 2, m, m), gamma (C, 2, m)); with
        ``partials`` also the derivatives of U in (rho, A_r, A_s) needed by the hand-written gradient."""
        K = self.tables[ops.backend]
        C, _, m, _ = G.shape
        D = ops.diagonal(G)
        pos = D > 0
        n = ops.sqrt(ops.where(pos, D, 1.0))
        A = ops.where(pos, K.ab * gamma / n, 0.0)
        a = K.c_nodes[:, :, None] * A[:, :, None, :]  # (C, 2, nc, m)
        Phi, phi = ops.ndtr(a), ops.exp(a * a * -0.5) * (1 / _SQRT_2PI)
        Eu = a * Phi + phi  # E relu(z) / sigma
        # the c-sums: the Channels of every pair, and the per-neuron moments
        left = ops.swap(ops.stack([Eu, Phi, Phi, phi]))  # (4, C, 2, m, nc)
        M = left @ (ops.stack([Eu, Phi, Eu, Phi]) * K.right_w)  # (4, C, 2, m, m)
        mom = left @ K.right_ext  # (4, C, 2, m, q)
        phi0, phi2 = mom[_PBAR, ..., _ONE], mom[_PBAR, ..., _C2]
        dphi1 = mom[_Y, ..., _ONE]
        de2_half = A * phi2 + dphi1
        uni = dict(D=D, n=n, A=A, pos=pos, phi0=phi0, phi2=phi2, dphi1=dphi1, de2_half=de2_half,
                   relu_mean=mom[_EBAR, ..., _ONE], e2=phi0 + A * de2_half)
        pi = self.pairs(ops, C, m)
        n_pp = m * (m - 1) // 2
        if n_pp == 0:
            return RuleTerms(**uni, pairs=pi, Grs=D[..., :0], nn=D[..., :0], U=D[..., :0])
        per_neuron = [n, n * pos, A]  # NeuronRow order
        for i, j in self.channels.set_cols:
            per_neuron += [mom[_PBAR, ..., i], mom[_PBAR, ..., j], mom[_Y, ..., i]]
        at = ops.take(ops.stack(per_neuron), pi.rs)  # (rows, C, 2, 2 pairs): at r, then at s
        Grs = ops.take(G.reshape(C, 2, m * m), pi.lin_rs)
        pm = ops.take(M.reshape(4, C, 2, m * m), pi.lin_both)  # (4, C, 2, 2 pairs): (r, s), then (s, r)
        n_r, n_s = at[_N, ..., :n_pp], at[_N, ..., n_pp:]
        Ar, As = at[_A, ..., :n_pp], at[_A, ..., n_pp:]
        rho = ops.clip(Grs / (n_r * n_s), -1.0, 1.0)  # G_rs = 0 when w_r = 0 (n = 1 there)
        sgn = ops.sign(rho)  # (+1 at rho = 0: the angular integral is 0 there)
        ang = self.angular.integral(ops, ops.clip_max(abs(rho), RHO_MAX), Ar, sgn * As, partials)
        Pbar = pm[_PBAR, ..., :n_pp]
        U = pm[_EBAR, ..., :n_pp] + rho * Pbar
        U_rho = U_Ar = U_As = None
        if partials:
            U_rho = Pbar
            U_Ar = pm[_Z, ..., :n_pp] + rho * pm[_Y, ..., :n_pp]
            U_As = pm[_Z, ..., n_pp:] + rho * pm[_Y, ..., n_pp:]
        if ang.near is not None:  # omega < 1e-3: the closed form at rho = +-1 replaces Ebar + rho Pbar
            Mr = {name: at[j:j + 3, ..., :n_pp] for name, j in self.channels.set_rows.items()}
            Ms = {name: at[j:j + 3, ..., n_pp:] for name, j in self.channels.set_rows.items()}
            base = near_base(ops, K.set_weights, rho, sgn, Ar, As, Mr, Ms, partials)
            if partials:
                base, b_rho, b_Ar, b_As = base
                U_rho, U_Ar, U_As = (ops.where(ang.near, bv, v)
                                     for bv, v in ((b_rho, U_rho), (b_Ar, U_Ar), (b_As, U_As)))
            U = ops.where(ang.near, base, U)
        nn = at[_N_POS, ..., :n_pp] * at[_N_POS, ..., n_pp:]
        if partials:
            U_rho, U_Ar, U_As = U_rho + sgn * ang.I_r, U_Ar + ang.I_A, U_As + sgn * ang.I_B
        return RuleTerms(**uni, pairs=pi, Grs=Grs, nn=nn, U=U + ang.I, rho=rho, U_rho=U_rho, U_Ar=U_Ar, U_As=U_As)

    def pair_expectations(self, G, gamma) -> torch.Tensor:
        """E_c E[relu(z_r) relu(z_s)] / (sigma_r sigma_s) of every pair r < s (``PairIndex`` order), (C, 2,
        pairs), for the rule patches of G (C, 2, m, m), gamma (C, 2, m): a test-facing view of the kernel."""
        return self.rule_terms(G, gamma, partials=False).U

    def rule_patch_losses(self, G, gamma, ops: ArrayOps = TORCH_OPS):
        """(C, 2) losses, S (C, 2, m, m), dL/dgamma (C, 2, m) of the rule patches, in the arrays of ``ops``
        (``TORCH_OPS`` or ``NUMPY_OPS``: the same kernel on both backends)."""
        return rule_patch_loss(ops, self.tables[ops.backend], self.rule_terms(G, gamma, True, ops), True)

    def value(self, G, gamma) -> torch.Tensor:
        """(C, P) per-patch losses (differentiable torch code)."""
        out = rule_patch_loss(TORCH_OPS, self.tables[Backend.TORCH], self.rule_terms(G[:, :2], gamma, False), False)
        if self.P == 2:
            return out
        noise = noise_patch_loss(G[:, 2:], self.sched, self.pairs(TORCH_OPS, G.shape[0], G.shape[-1]), False)
        return torch.cat([out, noise], 1)

    def value_and_grad(self, G, gamma):
        """(C,) losses, S = dL/dG (C, P, m, m), dL/dgamma (C, 2, m) by Price's and Stein's identities
        (the rule patches in numpy on the CPU, in torch elsewhere)."""
        ops = OPS[Backend.NUMPY if G.device.type == "cpu" else Backend.TORCH]
        if ops.backend is Backend.NUMPY:
            G_rule, gamma = G[:, :2].detach().numpy(), gamma.detach().numpy()
        else:
            G_rule = G[:, :2]
        loss, S_rule, g_gamma = self.rule_patch_losses(G_rule, gamma, ops)
        if ops.backend is Backend.NUMPY:
            loss, S_rule, g_gamma = (torch.from_numpy(v) for v in (loss, S_rule, g_gamma))
        total = loss.sum(-1)
        if self.P == 2:
            return total, S_rule, g_gamma
        noise, S_noise = noise_patch_loss(G[:, 2:], self.sched, self.pairs(TORCH_OPS, G.shape[0], G.shape[-1]), True)
        return total + noise.sum(-1), torch.cat([S_rule, S_noise], 1), g_gamma

    def psi(self, G, gamma):
        """(E[psi_t], Var[psi_t]) per configuration (Def 4.3): the pair terms with gamma gamma^T for G, and the
        two patches at the same zeta."""
        t = self.rule_terms(G[:, :2], gamma, partials=False)
        beta = self.sched.beta[:, None, None]
        scale = gamma * beta * t.n * t.pos  # gamma_r sigma_r
        mean = (scale * t.relu_mean).sum((-1, -2))
        r, s = t.pairs.r, t.pairs.s
        second = (gamma**2 * beta**2 * t.D * t.e2).sum((-1, -2))
        second = second + 2 * (gamma[..., r] * gamma[..., s] * beta**2 * t.nn * t.U).sum((-1, -2))
        a = self.joint_nodes[None, :, :, None] * t.A[:, :, None, :]  # both patches at the same zeta
        m_p = ((a * torch.special.ndtr(a) + _npdf(a)) * scale[:, :, None, :]).sum(-1)  # (C, 2, nj)
        second = second + 2 * (m_p[:, 0] * m_p[:, 1] * self.joint_weights).sum(-1)
        return mean, second - mean**2


def rule_patch_loss(ops: ArrayOps, K: ReluTables, t: RuleTerms, with_grad: bool):
    """The two rule patches: (C, 2) losses (the module docstring's formula) and, ``with_grad``, S = dL/dG
    (C, 2, m, m) and dL/dgamma (C, 2, m), in the arrays of ``ops``."""
    beta2, ab = K.beta2, K.ab
    D, n, A, pos, e2 = t.D, t.n, t.A, t.pos, t.e2
    C, _, m = D.shape
    n_pp = m * (m - 1) // 2
    X = e2 + K.kappa_m1 * t.phi0  # E_c[a Eu + kappa2 Phi]
    b2DD = beta2 * D * D
    loss = (b2DD * e2 - 2 * D * X).sum(-1) + K.const_rule
    if n_pp:
        loss = loss + 2 * beta2[..., 0] * (t.Grs * t.nn * t.U).sum(-1)
    if not with_grad:
        return loss
    # per-neuron derivatives in n_r (holding gamma) and gamma_r; A_r = (alpha/beta) gamma_r / n_r
    dX = 2 * A * t.phi2 + K.kappa_p1 * t.dphi1  # dX/dA
    H = (2 * D * dX - b2DD * 2 * t.de2_half) / n  # de2/dA = 2 (A E[c^2 Phi] + E[c phi])
    g_n = 4 * n * (beta2 * D * e2 - X) + H * A
    g_gamma = -H * ab
    if n_pp:
        pi = t.pairs
        coef = 2 * beta2 * t.Grs  # d/dU of the pair term 2 beta^2 G_rs n_r n_s U
        S_half = beta2 * (t.nn * t.U + t.Grs * t.U_rho)  # d/dG_rs (rho depends on it), halved
        base = coef * (t.U - t.rho * t.U_rho)
        # directed pairs (self, other) = (r, s), (s, r): both gradients scattered to "self" in one sum
        split = (C, 2, 2, n_pp)
        n_other = ops.take(n, pi.sr).reshape(split)
        A_self = ops.take(A, pi.rs).reshape(split)
        U_A = ops.cat([t.U_Ar, t.U_As], -1).reshape(split)
        cn = coef[:, :, None] * n_other
        terms = ops.stack([base[:, :, None] * n_other - cn * A_self * U_A, cn * U_A])  # d/dn, d/dgamma / ab
        acc = ops.scatter_add(pi.grad_index, terms.reshape(2, C, 2, 2 * n_pp), m)
        g_n, g_gamma = g_n + acc[0], g_gamma + acc[1] * ab
    g_n, g_gamma = g_n * pos, g_gamma * pos
    diag = g_n / (2 * n)  # dD = 2 n dn
    if n_pp:
        S = ops.scatter(t.pairs.lin_sym, ops.cat([S_half, S_half, diag], -1), m * m).reshape(C, 2, m, m)
    else:
        S = ops.diag_embed(diag)
    return loss, S, g_gamma


def noise_patch_loss(G, sched: ConfigSchedule, pairs: PairIndex, with_grad: bool):
    """Patches p >= 3 (x_0 ~ N(0, I), G (C, P - 2, m, m)): z ~ N(0, s^2 G), E[relu relu] = s^2 n_r n_s J / (2 pi)
    with J = sin w + (pi - w) cos w (the arc-cosine kernel), E[relu^2] = s^2 D / 2. (C, P - 2) losses and,
    ``with_grad``, S = dL/dG (C, P - 2, m, m) (no feature: no gamma)."""
    C, Pn, m, _ = G.shape
    D = torch.diagonal(G, dim1=-2, dim2=-1)
    pos = D > 0
    n = torch.sqrt(torch.where(pos, D, torch.ones_like(D)))
    r, s = pairs.r, pairs.s
    nn = n[..., r] * n[..., s] * (pos[..., r] & pos[..., s])
    safe = torch.where(nn > 0, nn, torch.ones_like(nn))
    rho = torch.where(nn > 0, G[..., r, s] / safe, torch.zeros_like(nn)).clamp(-RHO_MAX, RHO_MAX)
    omega = torch.arccos(rho)
    J = torch.sin(omega) + (math.pi - omega) * torch.cos(omega)
    s2 = sched.s2[:, None, None]
    Grs = G[..., r, s]
    loss = (s2[..., 0] * (D * D).sum(-1) / 2 + s2[..., 0] * (Grs * nn * J).sum(-1) / math.pi
            - sched.kappa_noise[:, None] * D.sum(-1) + sched.const_noise[:, None])
    if not with_grad:
        return loss
    dJ = math.pi - omega  # dJ/drho
    S_pair = s2 * (nn * J + Grs * dJ) / math.pi
    base = s2 * Grs * (J - rho * dJ) / math.pi
    g_n = torch.zeros_like(D).index_add(-1, r, base * n[..., s]).index_add(-1, s, base * n[..., r])
    S = torch.zeros((C, Pn, m, m), dtype=DTYPE, device=G.device)
    S[..., r, s] = S_pair / 2
    S[..., s, r] = S_pair / 2
    S = S + torch.diag_embed((g_n / (2 * n)) * pos + s2 * D - sched.kappa_noise[:, None, None])
    return loss, S
