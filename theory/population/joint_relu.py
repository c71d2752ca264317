"""Beyond the paper: zeta-averaged Gaussian moments of relu for joint networks (the ReLU half of ``joint``).

Given zeta, the pre-activations of a joint net are z ~ N(p + q zeta, K) (``joint``'s docstring: Def 4.1's data,
App. F's x_t = alpha x_0 + beta eps). Its exact loss (eq. (2)) and psi_t moments (Def 4.3) need

    P2 (C, m, m) = E_zeta E[relu(z_r) relu(z_s) | zeta],   P1 (C, 2, m) = E_zeta[zeta^k E[relu(z_r) | zeta]],
    D1 (C, m)    = E_zeta Phi(a_r),      a_r = (p_r + q_r zeta) / sigma_r,  sigma_r = sqrt(K_rr),

which ``relu_gaussian_moments`` returns for any ``theory.zeta.ZetaDistribution``. The per-patch evaluator
(``relu``, ``relu_angular``) is the special case p = 0 or p = -q of one patch; its ideas are reused (Price's
theorem, the c-average moved inside the angular integral, a fixed flat layout of (pair, node) entries, a
hand-written gradient), its rho = +-1 expansion is not needed here.

**Univariate and product terms.** With Eu(a) = a Phi(a) + phi(a) = E relu(z)/sigma and
E2(a) = (a^2 + 1) Phi(a) + a phi(a) = E relu(z)^2/sigma^2, P1, D1 and the diagonal of P2 are zeta-averages of
entire functions of a = a0 + a1 zeta; so are E_zeta[Eu_r Eu_s] and E_zeta[Phi_r Phi_s] (two matrix products over
the zeta nodes). Uniform zeta: Gauss-Legendre, ``zeta_order`` nodes per panel, one panel per 10 / max|a1| of
support (so Phi(a) moves by at most Phi(+-5) across half a panel: 32 nodes integrate that to ~1e-13); discrete
zeta: its atoms (exact); other laws: their Gauss rule (``ZetaDistribution.quadrature``).

**Pair terms.** Price's theorem (d^2/drho^2 E[relu(z_r) relu(z_s)] = sigma_r sigma_s phi_2(a_r, a_s; rho);
checked: the Monte Carlo and reference tests) gives, with r = |rho| = cos omega and tau = cos s,

    E[relu(z_r) relu(z_s) | zeta] = sigma_r sigma_s (Eu_r Eu_s + rho Phi_r Phi_s + I),
    I = int_0^rho (rho - tau) phi_2(a_r, a_s; tau) dtau = 1/(2 pi) int_omega^{pi/2} (r - cos s) exp(-Q/2) ds,
    Q/2 = D^2 / (8 sin^2(s/2)) + S^2 / (8 cos^2(s/2)),   D = a_r - sgn(rho) a_s,  S = a_r + sgn(rho) a_s

(the brief's t-form with s = pi/2 - t; rho < 0 by I(a, b, rho) = I(a, -b, |rho|)). The zeta-average moves
inside: D, S are affine in zeta, so Q/2 = E(zeta) = E_min + e2 (zeta - zeta_c)^2, E_min = alpha beta
(D0 S1 - S0 D1)^2 / e2 (alpha, beta the two coefficients; Lagrange's identity: no cancellation).

* Uniform zeta: h = E_zeta exp(-E) in closed form. With v = E'(zeta) / (2 sqrt e2) at the ends,
  G(v) = e^{-E_min} erf(v) = sign(v) (e^{-E_min} - e^{-E} erfcx(|v|)) and h = sqrt(pi) (G(v_hi) - G(v_lo)) /
  (2 sqrt(e2) (hi - lo)), with e^{-E_min} taken out of the difference first (it cancels exactly when zeta_c
  is outside the support, where it may dwarf h): no underflow, and no cancellation unless E is nearly flat
  over the support. Where it varies by < ``FLAT`` = 0.01, 5-point Gauss-Legendre in zeta instead (error
  ~1e-16 there; the closed form loses ~1e-16 / FLAT beyond). e^{-E} erfcx(|v|) is taken as
  e^{-E_min} erfc(|v|) up to |v| = 5 (the same number; erfc is 3x cheaper than erfcx). On 2e5 random
  (D, S, alpha, beta) with bumps wider than 0.007 in zeta, against 1600-point composite Gauss-Legendre (its
  worst cases confirmed by mpmath): absolute error of h <= 2e-14.
* Discrete zeta: the sum over the atoms (exact). Other laws: ``ZetaDistribution.gaussian_tilt`` where E varies,
  their Gauss rule where it is flat (gradient by autograd; slower, not the App. F default).

The s-integral runs in y = log s on unit panels below S_TOP = pi/2 (Gauss-Legendre, 12, 10, 10, 8, 6, 6, 4, 4,
4, 4 nodes: the region s < s_1 carries <= s_1^3 / (12 pi) of I, so deep panels need fewer) and one 4-node panel
below pi/2 e^-10 = 7e-5; a pair uses the panels above omega, the one holding omega cut at it (with 4-10 nodes
when it is short: a nearly orthogonal pair costs 4 entries). In y the layer exp(-D^2 / (2 s^2)) at s ~ |D| has
the same shape for every D, so rho -> +-1 needs no expansion (rho = +-1 exactly: the integral stops at
s = 1e-12). The nodes follow omega but are constants for the derivative (the integrand vanishes at s = omega).

**Gradient.** Written by hand (``_Moments``): the closed form is differentiated along its own operations,
the pair integrals' partials in (r, D0, D1, S0, S1) are summed in the forward pass, and the matrix products
backpropagate as such. Tests: central differences in every branch (flat, one-sided, inside, erfc / erfcx),
and the torch backend against the numpy one. No double backward.

**Backends.** numpy on the CPU (per-operation dispatch ~4x cheaper than torch's on these small arrays; entries
in blocks of ``CHUNK`` so temporaries stay below the allocator's mmap threshold, ~3x faster), torch on other
devices (``backend_for``); float64 throughout.

**Accuracy** (``tests/theory/test_joint_relu.py``). Pair values against an independent scipy reference
(quadrature over z_r of the closed-form E[relu(z_s) | z_r], then over zeta, split at every kink), 19 cases
(rho from 0 to +-0.999999 and +-1, |a| up to 9, p = 0 or q = 0, layers crossing the support) x sigma
(1, 1), (0.01, 100) x uniform, wide uniform, Beta(2, 3), discrete: absolute error <= 2e-14 sigma_r sigma_s
(asserted: 1e-12). Parallel / anti-parallel neurons (K singular): E[relu(z) relu(c z)] = c E[relu(z)^2] or 0
to 1e-13. Against 4x the s-nodes and 2x the zeta nodes on random nets with nearly (anti)parallel neurons
(omega down to 1e-7, |a| up to ~20): <= 2e-13 sigma_r sigma_s. Univariate terms: relative 1e-12 (absolute
1e-14 per unit sigma deep in the lower tail, where Eu and E2 cancel). Monte Carlo (2e5 draws): within 4
standard errors; block-diagonal nets equal the per-patch evaluator to 1e-12; gradients equal central
differences to 1e-6 (1e-8 at random nets).

**Speed** (forward + backward of this function, one thread, numpy backend, uniform zeta, K from d = 100
weights; best of repeated runs on a shared, loaded 2-core machine): m = 20, C = 1: 0.9 ms (random init) to
1.0 ms (neurons aligned with the features); C = 8: 3.4 - 5.3 ms; m = 200, C = 1: 25 ms (random) to 48 ms
(aligned). Discrete zeta ~40 % cheaper; other laws (``gaussian_tilt``, autograd) ~10x dearer.

Nothing here is in the paper (Def 4.1, eq. (2), Def 4.3, App. F concern per-patch nets); it is the limit App.
F's Monte Carlo loss estimates for ``JointTwoLayerScore``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .._checks import DTYPE, check_int, check_zeta_order
from ..zeta import Discrete, Uniform, ZetaDistribution, check_zeta
from .zeta_quadrature import ZETA_ORDER

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_SQRT_PI = math.sqrt(math.pi)
RHO_TOL = 1e-9  # |rho| may exceed 1 by this much (rounding of K); it is clipped to 1
SYM_TOL = 1e-9  # |K_rs - K_sr| <= SYM_TOL sqrt(K_rr K_ss)
PANEL_SLOPE = 10.0  # uniform zeta: one Gauss-Legendre panel per PANEL_SLOPE / max|a1| of support
S_MIN = 1e-12  # the s-integral stops here when omega = 0 (rho = +-1)
# s-integral panels in y = log s: panel k covers s in [S_TOP e^-(k+1), S_TOP e^-k] with PANEL_NODES[k] Gauss
# nodes (fewer where s is small: the region s < s_1 carries <= s_1^3 / (12 pi) of I); below S_TOP e^-10 one
# panel of TAIL_NODES (<= 3e-14 of I). A pair uses the panels above omega, the one holding omega cut at it.
S_TOP = math.pi / 2
PANEL_NODES = (12, 10, 10, 8, 6, 6, 4, 4, 4, 4)
TAIL_NODES = 4
CUT_NODES = ((0.05, 4), (0.15, 6), (0.35, 8), (0.6, 10))  # (y-length <=, nodes) of a cut panel
FLAT = 0.01  # E varies by less than this over the support: Gauss-Legendre in zeta instead of the closed form
FLAT_NODES = 5
CHUNK = 4096  # entries per block of the numpy kernel
ERFC_MAX = 5.0  # exp(-E_min) erfc(|v|) up to here, exp(-E) erfcx(|v|) beyond (erfc(5) = 1.5e-12: no underflow)


def _check_inputs(K, p, q):
    for name, x in (("K", K), ("p", p), ("q", q)):
        if not isinstance(x, torch.Tensor) or x.dtype != DTYPE:
            got = type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype
            raise ValueError(f"{name} must be a float64 torch tensor, got {got}")
    if K.ndim != 3 or K.shape[1] != K.shape[2] or K.shape[1] < 1:
        raise ValueError(f"K must have shape (C, m, m) with m >= 1, got {tuple(K.shape)}")
    C, m = K.shape[0], K.shape[1]
    for name, x in (("p", p), ("q", q)):
        if tuple(x.shape) != (C, m):
            raise ValueError(f"{name} must have shape (C, m) = ({C}, {m}) to match K, got {tuple(x.shape)}")
        if x.device != K.device:
            raise ValueError(f"{name} is on {x.device} but K is on {K.device}; put all three on one device")
    if C < 1:
        raise ValueError("K must hold at least one configuration (C >= 1)")
    Kn, pn, qn = (x.detach().cpu().numpy() for x in (K, p, q))  # checks in numpy: cheaper than torch
    for name, x in (("K", Kn), ("p", pn), ("q", qn)):
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    diag = Kn.diagonal(0, 1, 2)
    if not (diag > 0).all():
        raise ValueError("K must have a positive diagonal (every neuron a non-zero variance), got min "
                         f"{diag.min():.3g}")
    scale = np.sqrt(diag[:, :, None] * diag[:, None, :])
    asym = float((np.abs(Kn - Kn.swapaxes(1, 2)) / scale).max())
    if asym > SYM_TOL:
        raise ValueError(f"K must be symmetric (|K_rs - K_sr| <= {SYM_TOL:g} sqrt(K_rr K_ss)), got {asym:.3g}")
    over = float((np.abs(Kn) / scale).max()) - 1
    if over > RHO_TOL:
        raise ValueError(f"K must be a covariance: |K_rs| <= sqrt(K_rr K_ss) (|rho| <= 1 up to {RHO_TOL:g}), "
                         f"got |rho| = 1 + {over:.3g}")


@functools.lru_cache(maxsize=64)
def gauss_legendre_unit(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n-point Gauss-Legendre rule on [0, 1] (cached: leggauss costs ~0.1 ms)."""
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1) / 2, w / 2


@functools.lru_cache(maxsize=64)
def _uniform_nodes(lo: float, hi: float, order: int, panels: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = gauss_legendre_unit(order)
    nodes = (lo + (hi - lo) / panels * (np.arange(panels)[:, None] + x)).ravel()
    return nodes, np.tile(w / panels, panels)


def zeta_nodes(zeta: ZetaDistribution, zeta_order: int, max_slope: float) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature (nodes, weights) in zeta for the univariate and product terms (module docstring)."""
    if isinstance(zeta, Discrete):
        return zeta.values.astype(np.float64), zeta.probs.astype(np.float64)
    if isinstance(zeta, Uniform):
        return _uniform_nodes(zeta.lo, zeta.hi, zeta_order,
                              max(1, math.ceil(max_slope * (zeta.hi - zeta.lo) / PANEL_SLOPE)))
    z, w = zeta.quadrature(zeta_order * max(1, math.ceil(max_slope * (zeta.hi - zeta.lo) / PANEL_SLOPE)))
    return np.asarray(z, np.float64), np.asarray(w, np.float64)


@functools.lru_cache(maxsize=8)
def _node_tables(angle_scale: int):
    """Master table of the full panels (y offsets below log S_TOP and weights, panel 0 first, ``full_ends``[k]:
    entries of panels < k) and the cut-panel rules of every node count (``cut_offset``[n]: first of n)."""
    ys, ws = [], []
    for k, nodes in enumerate(PANEL_NODES):
        x, w = gauss_legendre_unit(nodes * angle_scale)
        ys.append(-k - 1 + x)
        ws.append(w)
    full_ends = np.concatenate([[0], np.cumsum([y.size for y in ys])])
    counts = sorted({n for _, n in CUT_NODES} | set(PANEL_NODES) | {TAIL_NODES})
    cut_x, cut_w, offset = [], [], np.zeros(max(counts) + 1, np.int64)
    for n in counts:
        x, w = gauss_legendre_unit(n * angle_scale)
        offset[n] = sum(v.size for v in cut_x)
        cut_x.append(x)
        cut_w.append(w)
    return (np.concatenate(ys), np.concatenate(ws), full_ends, np.concatenate(cut_x), np.concatenate(cut_w),
            offset)


def s_layout(omega: np.ndarray, angle_scale: int):
    """The (pair, node) entries of the s-integral for pairs at angles ``omega`` (flat numpy array), pair by pair:
    entry pair index, the first entry of each pair, s and its weight ds (module docstring: panels in
    y = log s above omega, the one holding omega cut there, with fewer nodes when short, ``CUT_NODES``)."""
    y_top = math.log(S_TOP)
    y_om = np.log(np.maximum(omega, S_MIN))
    panel = np.minimum(np.floor(y_top - y_om), len(PANEL_NODES)).astype(np.int64)  # the one holding omega
    cut_len = y_top - panel - y_om  # its length in y
    full_y, full_w, full_ends, cut_x, cut_w, offset = _node_tables(angle_scale)
    n_cut = np.array((*PANEL_NODES, TAIL_NODES))[panel]
    for length, n in reversed(CUT_NODES):
        n_cut = np.where((cut_len <= length) & (panel < len(PANEL_NODES)), np.minimum(n_cut, n), n_cut)
    n_full = full_ends[panel]
    count = n_full + n_cut * angle_scale
    starts = np.concatenate([[0], np.cumsum(count)[:-1]])
    pair = np.repeat(np.arange(omega.size), count)
    j = np.arange(pair.size) - starts[pair]  # position within the pair
    is_full = j < n_full[pair]
    jc = j - n_full[pair]
    cut_index = np.where(is_full, 0, offset[n_cut][pair] + jc)
    span = cut_len[pair]
    y = np.where(is_full, y_top + full_y[np.where(is_full, j, 0)], y_om[pair] + span * cut_x[cut_index])
    wy = np.where(is_full, full_w[np.where(is_full, j, 0)], span * cut_w[cut_index])
    s = np.exp(y)
    return pair, starts, s, wy * s  # ds = s dy


def _gauss_average_tilt(zeta: ZetaDistribution, z, w, D0, D1, S0, S1, al, be):
    """Any other law: ``gaussian_tilt`` where E varies over the support, the law's Gauss rule where not."""
    lo, hi = zeta.lo, zeta.hi
    E_lo = al * (D0 + D1 * lo) ** 2 + be * (S0 + S1 * lo) ** 2
    E_hi = al * (D0 + D1 * hi) ** 2 + be * (S0 + S1 * hi) ** 2
    e2 = al * D1 * D1 + be * S1 * S1
    e2s = torch.where(e2 > 0, e2, 1.0)
    cross = D0 * S1 - S0 * D1
    E_min = al * be * cross * cross / e2s
    zc = -(al * D1 * D0 + be * S1 * S0) / e2s
    with torch.no_grad():
        inside = (zc > lo) & (zc < hi)
        var = torch.where(inside, torch.maximum(E_lo, E_hi) - E_min, (E_hi - E_lo).abs())
        flat = (var < FLAT) | (e2 <= 0)
    Dg, Sg = D0 + D1 * z[:, None], S0 + S1 * z[:, None]
    quad = w @ torch.exp(-(al * Dg * Dg + be * Sg * Sg))
    mode = torch.where(flat, (lo + hi) / 2, zc)
    sd = torch.where(flat, 1.0, torch.rsqrt(2 * e2s))
    log_z, _ = zeta.gaussian_tilt(mode, sd)
    return torch.where(flat, quad, torch.exp(log_z - E_min))


@dataclass(frozen=True)
class Xp:
    """The array operations of the hand-differentiated kernel: numpy on the CPU (cheap dispatch), torch on
    other devices; ndtr and erfcx are torch's vectorised kernels in both (numpy arrays share their memory)."""

    exp: Callable
    sqrt: Callable
    erfc: Callable
    erfcx: Callable
    ndtr: Callable
    where: Callable
    sign: Callable
    stack: Callable
    zeros: Callable  # shape -> zeros
    diag_embed: Callable
    pair_sum: Callable  # (rows (k, N), entry pair index (N,), first entry of each pair) -> (k, n pairs)
    nonzero: Callable  # indices of the True entries of a 1-d mask
    asarray: Callable  # numpy array -> this backend's array
    from_tensor: Callable
    to_tensor: Callable


def _through_torch(f):
    return lambda x: f(torch.from_numpy(x)).numpy()


def torch_xp(device) -> Xp:
    return Xp(torch.exp, torch.sqrt, torch.erfc, torch.special.erfcx, torch.special.ndtr, torch.where, torch.sign,
              torch.stack, lambda shape: torch.zeros(shape, dtype=DTYPE, device=device), torch.diag_embed,
              lambda rows, idx, starts: rows.new_zeros((rows.shape[0], starts.shape[0])).index_add(1, idx, rows),
              lambda mask: mask.nonzero().flatten(), lambda x: torch.as_tensor(x, device=device),
              lambda t: t.detach(), lambda x: x)


NUMPY_XP = Xp(np.exp, np.sqrt, _through_torch(torch.erfc), _through_torch(torch.special.erfcx),
              _through_torch(torch.special.ndtr), np.where, np.sign, np.stack, np.zeros,
              lambda x: x[..., None] * np.eye(x.shape[-1]),
              lambda rows, idx, starts: np.add.reduceat(rows, starts, axis=1), np.flatnonzero, lambda x: x,
              lambda t: t.detach().numpy(), torch.from_numpy)


def _uniform_h_and_partials(xp: Xp, zeta: Uniform, D0, D1, S0, S1, al, be, zg, wg):
    """h = E_zeta exp(-E) and dh/d(D0, D1, S0, S1) (4 arrays (N,)), zeta ~ U[lo, hi]: the closed form of the
    module docstring where E varies by >= FLAT over the support, Gauss-Legendre in zeta (nodes ``zg`` (n, 1),
    weights ``wg`` (n,)) where it is flatter. Support ends stacked: row 0 lo, row 1 hi."""
    ends = xp.asarray(np.array([[zeta.lo], [zeta.hi]]))
    D, S = D0 + D1 * ends, S0 + S1 * ends
    aD1, bS1 = al * D1, be * S1
    E = al * D * D + be * S * S  # the exponent at lo, hi
    k = 2 * (aD1 * D + bS1 * S)  # its slope there
    e2 = aD1 * D1 + bS1 * S1
    cross = D0 * S1 - S0 * D1
    E_min = al * be * cross * cross / xp.where(e2 > 0, e2, 1.0)
    inside = (k[0] < 0) & (k[1] > 0)
    var = xp.where(inside, xp.where(E[0] > E[1], E[0], E[1]) - E_min, abs(E[1] - E[0]))
    flat = var < FLAT  # includes D1 = S1 = 0
    idx = xp.nonzero(flat)
    n_flat = idx.shape[0]
    if n_flat == flat.shape[0]:
        return _atoms_h_and_partials(xp, D0, D1, S0, S1, al, be, zg, wg)
    if 2 * n_flat < flat.shape[0]:  # mostly curved: closed form everywhere, flat entries overwritten
        h, parts = _closed_form(xp, zeta, ends, (D0, D1, S0, S1, al, be, xp.where(flat, 1.0, e2),
                                                 cross, xp.where(flat, 0.0, E_min)), (D, S, E, k))
        sel_flat = [idx]
    else:  # mostly flat: each entry through its own branch
        rest = xp.nonzero(~flat)
        h, parts = xp.zeros(flat.shape), [xp.zeros(flat.shape) for _ in range(4)]
        sel_flat = [idx, rest]
    results = [_atoms_h_and_partials(xp, *(v[idx] for v in (D0, D1, S0, S1, al, be)), zg, wg)]
    if len(sel_flat) == 2:
        results.append(_closed_form(xp, zeta, ends, [v[rest] for v in (D0, D1, S0, S1, al, be, e2, cross, E_min)],
                                    [v[:, rest] for v in (D, S, E, k)]))
    for sel, (hv, pv) in zip(sel_flat, results):
        h[sel] = hv
        for part, value in zip(parts, pv):
            part[sel] = value
    return h, parts


def _closed_form(xp: Xp, zeta: Uniform, ends, per_entry, per_end):
    """The closed form of h (module docstring) and its partials, differentiated by hand along its own
    operations; ``per_entry`` = (D0, D1, S0, S1, alpha, beta, e2, cross, E_min) (N,), ``per_end`` = (D, S, E,
    E') at lo, hi (2, N); E varies over the support (e2 > 0)."""
    D0, D1, S0, S1, al, be, e2, cross, E_min = per_entry
    D, S, E, k = per_end
    aD1, bS1, aD, bS = al * D1, be * S1, al * D, be * S
    abc = al * be * cross
    ir = 1 / xp.sqrt(e2)
    v = k * (0.5 * ir)  # E = E_min + v^2 at the ends
    em = xp.exp(-E_min)
    av, sv = abs(v), xp.sign(v)
    ex = xp.exp(-E)
    exX = em * xp.erfc(av)  # = exp(-E) erfcx(|v|); erfcx (3x dearer) only where erfc would underflow
    tail = xp.nonzero((av > ERFC_MAX).reshape(-1))
    if tail.shape[0]:
        exX = exX.reshape(-1)
        exX[tail] = ex.reshape(-1)[tail] * xp.erfcx(av.reshape(-1)[tail])
        exX = exX.reshape(ex.shape)
    c0ir = (_SQRT_PI / (2 * (zeta.hi - zeta.lo))) * ir
    # G(v) = sign(v) (em - exX) = em erf(v) at both ends; h = (G_hi - G_lo) c0ir with em taken out first: it
    # cancels exactly when zeta_c is outside the support (em may dwarf the terms there)
    h = ((sv[1] - sv[0]) * em - sv[1] * exX[1] + sv[0] * exX[0]) * c0ir
    # backward through the lines above, in reverse order
    gG = c0ir * xp.asarray(np.array([[-1.0], [1.0]]))
    g_v = gG * (ex * (2 / _SQRT_PI) - exX * (2 * av))
    g_E = gG * sv * exX
    g_k = g_v * (0.5 * ir)
    g_root = -(h + (g_v * v).sum(0)) * ir
    g_Emin = -em * (gG * sv).sum(0)
    g_cross = g_Emin * 2 * abc / e2
    g_e2 = -g_Emin * E_min / e2 + g_root * (0.5 * ir)
    g_D = g_k * (2 * aD1) + g_E * (2 * aD)
    g_S = g_k * (2 * bS1) + g_E * (2 * bS)
    return h, [g_cross * S1 + g_D.sum(0),
               g_e2 * 2 * aD1 - g_cross * S0 + 2 * (g_k * aD).sum(0) + (g_D * ends).sum(0),
               g_S.sum(0) - g_cross * D1,
               g_e2 * 2 * bS1 + g_cross * D0 + 2 * (g_k * bS).sum(0) + (g_S * ends).sum(0)]


def _atoms_h_and_partials(xp: Xp, D0, D1, S0, S1, al, be, zg, wg):
    """h = sum_j w_j exp(-E(z_j)) and its partials (a discrete zeta: exact)."""
    Dg, Sg = D0 + D1 * zg, S0 + S1 * zg
    eg = xp.exp(-(al * Dg * Dg + be * Sg * Sg)) * wg[:, None]
    qD, qS = -2 * al * (eg * Dg), -2 * be * (eg * Sg)
    return eg.sum(0), [qD.sum(0), (qD * zg).sum(0), qS.sum(0), (qS * zg).sum(0)]


def _entry_constants(s, ds):
    sin2 = np.sin(s / 2) ** 2
    return np.stack([1 - 2 * sin2, ds, 0.125 / sin2, 0.125 / (1 - sin2)])  # cos s, ds, alpha, beta


def _pair_blocks(starts: np.ndarray, n_entries: int, chunk: int):
    """(first pair, end pair, first entry, end entry) of blocks of whole pairs with about ``chunk`` entries."""
    bounds = np.append(starts, n_entries)
    p0 = 0
    while p0 < starts.size:
        p1 = max(int(np.searchsorted(bounds, bounds[p0] + chunk, side="right")) - 1, p0 + 1)
        p1 = min(p1, starts.size)
        yield p0, p1, int(bounds[p0]), int(bounds[p1])
        p0 = p1


def pair_integral(xp: Xp, pp, zeta: ZetaDistribution, angle_scale: int):
    """I (n,) and its partials J (5, n) in the pair parameters pp = (r, D0, D1, S0, S1) (5, n) (module
    docstring); uniform and discrete zeta by the hand-differentiated kernels, other laws by autograd through
    ``gaussian_tilt``. numpy runs blocks of whole pairs of ~``CHUNK`` entries (temporaries stay small)."""
    pp_np = pp if xp is NUMPY_XP else pp.cpu().numpy()
    pair, starts, s, ds = s_layout(np.arccos(np.minimum(pp_np[0], 1.0)), angle_scale)
    if not isinstance(zeta, Uniform | Discrete):
        return _pair_integral_autograd(xp, pp, zeta, pair, _entry_constants(s, ds))
    if isinstance(zeta, Uniform):
        x, wg = gauss_legendre_unit(FLAT_NODES)
        zg = zeta.lo + (zeta.hi - zeta.lo) * x[:, None]
    else:
        zg, wg = zeta.values.astype(np.float64)[:, None], zeta.probs.astype(np.float64)
    zg, wg = xp.asarray(zg), xp.asarray(wg)
    n = pp.shape[1]
    out = xp.zeros((6, n))  # I, dI/dr, dI/dD0, dI/dD1, dI/dS0, dI/dS1
    chunk = CHUNK if xp is NUMPY_XP else pair.size
    for p0, p1, e0, e1 in _pair_blocks(starts, pair.size, chunk):
        idx = xp.asarray(pair[e0:e1])
        cos_s, w, al, be = xp.asarray(_entry_constants(s[e0:e1], ds[e0:e1]))
        r, D0, D1, S0, S1 = pp[:, idx]
        if isinstance(zeta, Uniform):
            h, parts = _uniform_h_and_partials(xp, zeta, D0, D1, S0, S1, al, be, zg, wg)
        else:
            h, parts = _atoms_h_and_partials(xp, D0, D1, S0, S1, al, be, zg, wg)
        g = (r - cos_s) * w
        rows = xp.stack([g * h, h * w] + [g * v for v in parts])
        out[:, p0:p1] = xp.pair_sum(rows, idx - p0, xp.asarray(starts[p0:p1] - e0))
    out = out * (1 / (2 * math.pi))
    return out[0], out[1:]


def _pair_integral_autograd(xp: Xp, pp, zeta, pair, consts):
    with torch.enable_grad():
        pt = xp.to_tensor(pp).clone().requires_grad_(True)
        dev = pt.device
        cos_s, ds, al, be = torch.as_tensor(consts, dtype=DTYPE, device=dev)
        pair_t = torch.as_tensor(pair, device=dev)
        r, D0, D1, S0, S1 = pt.index_select(1, pair_t)
        z, w = zeta_nodes(zeta, ZETA_ORDER, 0.0)
        z, w = (torch.as_tensor(v, dtype=DTYPE, device=dev) for v in (z, w))
        h = _gauss_average_tilt(zeta, z, w, D0, D1, S0, S1, al, be)
        I = pt.new_zeros(pt.shape[1]).index_add(0, pair_t, (r - cos_s) * h * ds) * (1 / (2 * math.pi))
        (J,) = torch.autograd.grad(I.sum(), pt)  # I_k depends on column k only
    return xp.from_tensor(I), xp.from_tensor(J)


def _pair_matrices(xp: Xp, rho, A0, A1, zeta, angle_scale: int):
    """I of every pair r < s and its partials from ``pair_integral`` as (C, m, m) matrices: Ifull, Irho =
    dI/drho, T0[r, s] = dI_rs/dA0_r, T1[r, s] = dI_rs/dA1_r (row = the neuron the derivative is taken at)."""
    C, m = A0.shape
    r_idx, s_idx = (xp.asarray(v) for v in _upper_pairs(m))
    mats = [xp.zeros((C, m, m)) for _ in range(4)]
    rp = rho[:, r_idx, s_idx]
    sgn = xp.where(rp < 0, -1.0, 1.0)
    A0r, A1r, B0, B1 = A0[:, r_idx], A1[:, r_idx], sgn * A0[:, s_idx], sgn * A1[:, s_idx]
    pp = xp.stack([rp * sgn, A0r - B0, A1r - B1, A0r + B0, A1r + B1]).reshape(5, -1)
    I, J = pair_integral(xp, pp, zeta, angle_scale)
    I, J = I.reshape(C, -1), J.reshape(5, C, -1)
    for M, vr, vs in zip(mats, (I, sgn * J[0], J[1] + J[3], J[2] + J[4]),
                         (I, sgn * J[0], sgn * (J[3] - J[1]), sgn * (J[4] - J[2]))):
        M[:, r_idx, s_idx] = vr
        M[:, s_idx, r_idx] = vs
    return mats


@functools.lru_cache(maxsize=16)
def _upper_pairs(m: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(m, 1)


def backend_for(device) -> Xp:
    """numpy on the CPU, torch on other devices (tests swap in ``torch_xp`` to check the two agree)."""
    return NUMPY_XP if device.type == "cpu" else torch_xp(device)


class _Moments(torch.autograd.Function):
    """(P2, P1, D1) from (K, p, q) with the backward pass written by hand (module docstring)."""

    @staticmethod
    def forward(ctx, K, p, q, zeta, zeta_order, angle_scale):
        xp = backend_for(K.device)
        K, p, q = (xp.from_tensor(v) for v in (K, p, q))
        C, m = p.shape
        Ks = (K + K.swapaxes(1, 2)) / 2
        var = Ks.diagonal(0, 1, 2) * 1.0
        sig = xp.sqrt(var)
        A0, A1 = p / sig, q / sig  # a = A0 + A1 zeta
        zn, zw = zeta_nodes(zeta, zeta_order, float(abs(A1).max()))
        z, w = xp.asarray(zn), xp.asarray(zw)
        a = A0[..., None] + A1[..., None] * z  # (C, m, nz)
        Phi = xp.ndtr(a)
        phi = xp.exp(-0.5 * a * a) * (1 / _SQRT_2PI)
        Eu = a * Phi + phi
        Ew, Pw = Eu * w, Phi * w
        P1 = (Eu @ xp.stack([w, w * z], 1)).swapaxes(1, 2) * sig[:, None, :]
        D1 = Pw.sum(-1)
        e2 = (((a * a + 1) * Phi + a * phi) * w).sum(-1)  # E_zeta E[relu^2] / sigma^2
        ss = sig[:, :, None] * sig[:, None, :]
        rho = Ks / ss
        rho = rho.clip(-1.0, 1.0)
        F = Ew @ Eu.swapaxes(1, 2) + rho * (Pw @ Phi.swapaxes(1, 2))  # Ebar + rho Pbar
        r_idx, s_idx = (xp.asarray(v) for v in _upper_pairs(m))
        Ifull = Irho = T0 = T1 = None
        if m > 1:
            Ifull, Irho, T0, T1 = _pair_matrices(xp, rho, A0, A1, zeta, angle_scale)
            F = F + Ifull
            F[:, s_idx, r_idx] = F[:, r_idx, s_idx]  # exactly symmetric (the matrix products are not)
        P2 = F * ss
        diag = e2 * var
        ar = np.arange(m)
        P2[:, ar, ar] = diag
        ctx.xp = xp
        ctx.saved = (Ks, sig, A0, A1, z, w, Phi, phi, Eu, e2, F, rho, Ifull, Irho, T0, T1, P1)
        return tuple(xp.to_tensor(v) for v in (P2, P1, D1))

    @staticmethod
    def backward(ctx, gP2, gP1, gD1):
        xp = ctx.xp
        Ks, sig, A0, A1, z, w, Phi, phi, Eu, e2, F, rho, Ifull, Irho, T0, T1, P1 = ctx.saved
        C, m = sig.shape
        gP2, gP1, gD1 = (xp.from_tensor(v) for v in (gP2, gP1, gD1))
        ar = np.arange(m)
        g_diag = gP2[:, ar, ar] * 1.0
        Gs = gP2 + gP2.swapaxes(1, 2)
        Gs[:, ar, ar] = 0.0  # each pair once (both orders of P2 hold it)
        var = sig * sig
        ss = sig[:, :, None] * sig[:, None, :]
        gE = Gs * ss  # weight of Ebar + I (per unit sigma_r sigma_s)
        gPb = Gs * Ks  # weight of Pbar
        Pbar = (Phi * w) @ Phi.swapaxes(1, 2)
        # neuron-wise partials in A0 (times z^0) and A1 (times z^1), row r
        u_phi = (gE @ Eu) * Phi + (gPb @ Phi) * phi  # d/da of the pair terms at (r, node)
        u_phi = u_phi + g_diag[..., None] * var[..., None] * 2 * Eu + gD1[..., None] * phi
        u_phi = u_phi + (gP1[:, 0, :, None] + gP1[:, 1, :, None] * z) * sig[..., None] * Phi
        gA0, gA1 = (u_phi * w).sum(-1), (u_phi * w * z).sum(-1)
        Ebar_I = F - rho * Pbar  # Ebar + I off the diagonal
        g_sig = (Gs * Ebar_I) @ sig[..., None]
        g_sig = g_sig[..., 0] + (gP1 * P1).sum(1) / sig
        gK = Gs * Pbar
        if Ifull is not None:
            gA0 = gA0 + (gE * T0).sum(-1)
            gA1 = gA1 + (gE * T1).sum(-1)
            g_sig = g_sig - ((Gs * rho * Irho) @ sig[..., None])[..., 0]
            gK = gK + Gs * Irho
        gp, gq = gA0 / sig, gA1 / sig
        g_sig = g_sig - (gA0 * A0 + gA1 * A1) / sig
        g_var = g_diag * e2 + g_sig / (2 * sig)
        gK = gK / 2 + xp.diag_embed(g_var)
        return xp.to_tensor(gK), xp.to_tensor(gp), xp.to_tensor(gq), None, None, None


def relu_gaussian_moments(K: torch.Tensor, p: torch.Tensor, q: torch.Tensor, zeta: ZetaDistribution, *,
                          zeta_order: int = ZETA_ORDER, angle_scale: int = 1):
    """(P2 (C, m, m), P1 (C, 2, m), D1 (C, m)) of relu for z | zeta ~ N(p + q zeta, K) (module docstring).

    K (C, m, m) symmetric PSD with positive diagonal, p, q (C, m): float64 torch tensors on one device;
    ``zeta`` any ``ZetaDistribution``. Differentiable in K, p, q (first derivatives, written by hand; no double
    backward). ``zeta_order``: Gauss nodes per zeta panel; ``angle_scale``: multiplies the nodes of the
    s-integral (accuracy knobs; the defaults meet the documented accuracy).
    """
    _check_inputs(K, p, q)
    zeta = check_zeta(zeta)
    return _Moments.apply(K, p, q, zeta, check_zeta_order(zeta_order), check_int("angle_scale", angle_scale))
