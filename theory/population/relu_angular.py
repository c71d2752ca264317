"""The angular integral of the ReLU pair term, c-averaged: node rules by angle, their layout, the Gauss average.

Price's theorem in the correlation rho of (z_r, z_s) gives (module docstring of ``theory.population``)

    E[relu(z_r) relu(z_s) | c] = E_r E_s + rho sigma_r sigma_s Phi(a_r) Phi(a_s) + sigma_r sigma_s I,
    I = 1/(2 pi) int_0^{asin rho} (rho - sin t) exp(-Q(t)/2) dt,   Q = c^2 Q_1(t),

with the average over c moved inside: E_c exp(-c^2 Q_1/2) is an erf for uniform zeta, a finite sum
otherwise (``gauss_average``). The t-integral uses Gauss-Legendre in tan(t/2) with 6-16 nodes by
omega = arccos|rho| ("far"); for 1e-3 <= omega < 0.3 in y = -log(1 - tan(t/2)) (32 nodes, "log"), which
resolves the layer at t -> pi/2 whatever a_r - a_s; for omega < 1e-3 it is expanded from rho = +-1 with the
remainder over [0, omega] on four graded panels ("near"). Derivatives are Price's theorem again, so the
hand-written gradient reuses the nodes and values of the forward pass.

The (pair, node) entries of all pairs of all configurations form one flat array (``AngularLayout``: a
node-major block per bucket, cached until a pair changes bucket), so the integral costs a fixed number of
array operations whatever the mix of rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum, IntEnum

import numpy as np
import torch

from .._checks import DTYPE
from .ops import ArrayOps, Backend

RHO_MAX = 1.0 - 2.0**-50  # |rho| is clamped here (omega >= 4e-8): derivatives stay finite


class Segment(Enum):
    """How the angular integral of a pair is done (by omega = arccos|rho|)."""

    NEAR = "near"  # omega < OMEGA_NEAR: expanded from rho = +-1, graded panels
    LOG = "log"  # Gauss-Legendre in y = -log(1 - t), t = tan(theta/2)
    FAR = "far"  # Gauss-Legendre in t


# Buckets by omega: (omega >=, segment, Gauss-Legendre nodes); below OMEGA_NEAR the NEAR expansion.
BUCKETS = ((1.2, Segment.FAR, 6), (0.8, Segment.FAR, 8), (0.45, Segment.FAR, 12), (0.3, Segment.FAR, 16),
           (1e-3, Segment.LOG, 32))
OMEGA_NEAR = 1e-3
NEAR_PANELS, NEAR_NODES = 4, 6
SMALL_X2 = 4e-4  # uniform zeta: x^2 max c^2 below this uses the series of E exp(-c^2 x^2) (7 terms: 1e-25)


class NodeRow(IntEnum):
    """Rows of the node table: Gauss-Legendre node x as (1 + x)/2 and (1 - x)/2, half weight, and the
    panel exponent k of a NEAR node (panel [T g^-(k+1), T g^-k])."""

    XP = 0
    XM = 1
    HALF_WEIGHT = 2
    NEAR_EXPONENT = 3


class NearColumn(IntEnum):
    """Columns of the per-pair table of NEAR panels: the edges T g^-k at EDGE + k (k = 0..3; EDGE + 4 is 0),
    T (1 - g^-k) at T_MINUS_EDGE + k, then T = tan(omega/2) and Q/2 = (q2 + q1 (1 - tau)) / (1 - tau^2)."""

    EDGE = 0
    T_MINUS_EDGE = 5
    T = 9
    Q2 = 10
    Q1 = 11


@dataclass(frozen=True)
class UniformCoefficient:
    """c ~ U[lo, hi] on both rule patches (per patch (2,)): E_c exp(-c^2 x^2) in closed form (erf), with the
    Taylor series in y = -x^2 (``series`` (2, 7, 2): E[c^(2j)]/j!, E[c^(2j+2)]/j!) where it cancels."""

    lo: np.ndarray
    hi: np.ndarray
    cmax2: np.ndarray  # max c^2
    same: bool  # c = zeta and 1 - zeta on the same interval (to rounding): scalar constants
    series: np.ndarray

    @classmethod
    def build(cls, lo: np.ndarray, hi: np.ndarray) -> UniformCoefficient:
        mom = lambda k: (hi ** (k + 1) - lo ** (k + 1)) / ((k + 1) * (hi - lo))  # noqa: E731
        series = np.array([[[mom(2 * j)[p] / math.factorial(j), mom(2 * j + 2)[p] / math.factorial(j)]
                            for j in range(7)] for p in range(2)])
        rows = np.stack([lo, hi, np.maximum(lo**2, hi**2)], 1)
        return cls(lo, hi, rows[:, 2], bool(np.allclose(rows[0], rows[1], rtol=4e-16, atol=0)), series)


@dataclass(frozen=True)
class QuadratureGauss:
    """Per-entry c^2 and weights of the c-quadrature (non-uniform zeta)."""

    c2: object
    weights: object


@dataclass(frozen=True)
class UniformGauss:
    """Per-entry (or, ``same``, scalar) constants of the closed form E_c exp(-c^2 x^2) =
    sqrt(pi)/2 (erf(hi x) - erf(lo x)) / (x span), and of its c^2 moment (by parts)."""

    small_x2: object  # series below this x^2
    lo: object
    hi: object
    minus_lo2: object
    minus_hi2: object
    span: object
    k_h: object  # sqrt(pi) / (2 span)
    k_hp: object  # -1 / (4 span)
    patch: object  # rule patch of each entry (None when ``same``)


@dataclass(frozen=True)
class AngularLayout:
    """The (pair, node) entries of the angular integral, one flat array for all pairs of all configs.

    Pairs are grouped by bucket, each bucket a node-major block (nodes, pairs of the bucket), so the sum over
    nodes is one reduction per bucket; the blocks are grouped by segment (near | log | far, the far buckets
    with 6-16 nodes side by side). ``segments``: (segment, pair of each entry (NEAR: a flat index into the
    per-pair ``NearColumn`` table), node rows XP, XM, HALF_WEIGHT). Rebuilt only when a pair changes bucket.
    """

    buckets: object  # bucket of every pair (the cache key)
    blocks: tuple  # (first entry, nodes, pairs) of each non-empty bucket
    unsort: object  # pair order of the block sums -> original order (None: identity)
    segments: tuple
    has_near: bool
    gauss: QuadratureGauss | UniformGauss


@dataclass(frozen=True)
class AngularNodes:
    """Concatenated Gauss-Legendre tables of the buckets; bucket 0 = NEAR, then by increasing omega."""

    table: np.ndarray  # (len(NodeRow), total nodes)
    counts: np.ndarray  # nodes of each bucket
    offsets: np.ndarray  # first column of each bucket
    omega_edges: np.ndarray  # lower omega of buckets 1, 2, ...

    @classmethod
    def build(cls, angle_scale: int) -> AngularNodes:
        rows, counts = [], []
        x, w = np.polynomial.legendre.leggauss(NEAR_NODES * angle_scale)
        for k in range(NEAR_PANELS):  # panel k = [T g^-(4-k), T g^-(3-k)] (panel 0 starts at 0)
            rows.append(np.stack([(1 + x) / 2, (1 - x) / 2, w / 2, np.full_like(x, NEAR_PANELS - 1 - k)]))
        counts.append(NEAR_PANELS * x.size)
        for _, _, k in reversed(BUCKETS):
            x, w = np.polynomial.legendre.leggauss(k * angle_scale)
            rows.append(np.stack([(1 + x) / 2, (1 - x) / 2, w / 2, np.zeros_like(x)]))
            counts.append(x.size)
        counts = np.array(counts)
        return cls(np.concatenate(rows, 1), counts, np.concatenate([[0], np.cumsum(counts)[:-1]]),
                   np.array([om for om, _, _ in reversed(BUCKETS)]))


@dataclass(frozen=True)
class AngularIntegral:
    """I per pair (C, 2, pairs), the NEAR mask (None without NEAR pairs) and, with partials, dI/dr, dI/dA,
    dI/dB (else None)."""

    I: object
    near: object
    I_r: object = None
    I_A: object = None
    I_B: object = None


@dataclass(frozen=True)
class AngularConstants:
    """One backend's arrays of the angular rule."""

    omega_edges: object
    c_abs_min: object  # (2, 1): min |c| per rule patch (0 if the support straddles 0)
    u_series: object  # UniformCoefficient.series, or None


class AngularRule:
    """The c-averaged angular integral I of every neuron pair, with its Price derivatives (see the module
    docstring). ``c_nodes``/``c_weights`` (2, nc): the c-quadrature of both rule patches (zero-padded)."""

    def __init__(self, c_nodes: np.ndarray, c_weights: np.ndarray, c_abs_min: np.ndarray,
                 uniform: UniformCoefficient | None, angle_scale: int, device):
        assert OMEGA_NEAR == BUCKETS[-1][0] and BUCKETS[-1][1] is Segment.LOG
        self.nodes = AngularNodes.build(angle_scale)
        self.c_nodes, self.c_weights, self.uniform, self.device = c_nodes, c_weights, uniform, device
        consts = AngularConstants(self.nodes.omega_edges, c_abs_min, None if uniform is None else uniform.series)
        as_t = lambda v: None if v is None else torch.as_tensor(v, dtype=DTYPE, device=device)  # noqa: E731
        self.constants = {Backend.NUMPY: consts, Backend.TORCH: AngularConstants(
            as_t(consts.omega_edges), as_t(consts.c_abs_min), as_t(consts.u_series))}
        self._layouts: dict = {}

    def layout(self, ops: ArrayOps, buckets, n_pp: int) -> AngularLayout:
        """The flat (pair, node) layout for these buckets (cached per backend while they do not change)."""
        lay = self._layouts.get(ops.backend)
        if lay is not None and lay.buckets.shape == buckets.shape and not ops.differ(lay.buckets, buckets):
            return lay
        b = buckets if ops.backend is Backend.NUMPY else buckets.cpu().numpy()
        perm = np.argsort(b, kind="stable")
        nodes = self.nodes
        counts = np.bincount(b, minlength=nodes.counts.size)
        pair_blocks, node_blocks, blocks, first = [], [], [], 0
        for j in np.flatnonzero(counts):  # node-major: entry (k, i) of bucket j is node k of its i-th pair
            pairs = perm[counts[:j].sum():counts[: j + 1].sum()]
            k = int(nodes.counts[j])
            pair_blocks.append(np.tile(pairs, k))
            node_blocks.append(np.repeat(nodes.table[:, nodes.offsets[j]:nodes.offsets[j] + k], pairs.size, 1))
            blocks.append((first, k, pairs.size))
            first += k * pairs.size
        entry_pair, table = np.concatenate(pair_blocks), np.concatenate(node_blocks, 1)
        sizes = counts * nodes.counts
        ends = np.cumsum([sizes[0], sizes[1], sizes[2:].sum()])
        segments = []
        as_array = lambda x: ops.asarray(x, self.device)  # noqa: E731
        for segment, a, e in zip(Segment, (0, *ends[:2]), ends):
            if e > a:
                pair = entry_pair[a:e]
                if segment is Segment.NEAR:  # flat index into the NearColumn table of each pair
                    expo = table[NodeRow.NEAR_EXPONENT, a:e].astype(np.int64)
                    cols = [NearColumn.EDGE + expo, NearColumn.EDGE + expo + 1, NearColumn.T_MINUS_EDGE + expo,
                            *np.full((3, e - a), [[NearColumn.T], [NearColumn.Q2], [NearColumn.Q1]])]
                    pair = (np.stack(cols) * b.size + pair).ravel()
                rows = table[[NodeRow.XP, NodeRow.XM, NodeRow.HALF_WEIGHT], a:e]
                segments.append((segment, as_array(pair), tuple(as_array(v.copy()) for v in rows)))
        unsort = None if np.array_equal(perm, np.arange(perm.size)) else as_array(np.argsort(perm))
        lay = AngularLayout(buckets, tuple(blocks), unsort, tuple(segments), bool(sizes[0]),
                            self._gauss_constants(ops, (entry_pair // n_pp) % 2))
        self._layouts[ops.backend] = lay
        return lay

    def _gauss_constants(self, ops: ArrayOps, patch: np.ndarray) -> QuadratureGauss | UniformGauss:
        """Per-entry constants of ``gauss_average`` (``patch``: rule patch of each entry)."""
        as_array = lambda x: ops.asarray(x, self.device)  # noqa: E731
        u = self.uniform
        if u is None:
            return QuadratureGauss(as_array(self.c_nodes[patch] ** 2), as_array(self.c_weights[patch]))
        if u.same:
            lo, hi, cmax2 = float(u.lo[0]), float(u.hi[0]), float(u.cmax2[0])
        else:
            lo, hi, cmax2 = (as_array(v[patch].copy()) for v in (u.lo, u.hi, u.cmax2))
        span = hi - lo
        return UniformGauss(SMALL_X2 / cmax2, lo, hi, -lo * lo, -hi * hi, span, math.sqrt(math.pi) / (2 * span),
                            -0.25 / span, None if u.same else as_array(patch))

    def gauss_average(self, ops: ArrayOps, lay: AngularLayout, x2, partials: bool):
        """h = E_c exp(-c^2 Q/2) and (with ``partials``) h' = dh/dQ = -E_c[c^2 exp(-c^2 Q/2)]/2, x2 = Q/2."""
        g = lay.gauss
        if isinstance(g, QuadratureGauss):
            e = ops.exp(-x2[:, None] * g.c2) * g.weights
            return e.sum(-1), (-0.5 * (e * g.c2).sum(-1) if partials else None)
        small = x2 < g.small_x2
        any_small = bool(small.any())
        x2s = ops.where(small, 1.0, x2) if any_small else x2
        xs = ops.sqrt(x2s)
        h = (ops.erf(g.hi * xs) - ops.erf(g.lo * xs)) * (g.k_h / xs)
        hp = None
        if partials:  # -E[c^2 exp(-c^2 x^2)] / 2, by parts
            hp = (g.lo * ops.exp(g.minus_lo2 * x2s) - g.hi * ops.exp(g.minus_hi2 * x2s) + h * g.span) * (g.k_hp / x2s)
        if any_small:  # the closed forms cancel for x |c| << 1: Taylor series in y = -x^2 there (7 terms)
            series_table = self.constants[ops.backend].u_series
            idx = ops.nonzero(small)
            y = -x2[idx]
            y2 = y * y
            y3 = y2 * y
            powers = ops.swap(ops.stack([y, y2, y3, y2 * y2, y3 * y2, y3 * y3]))  # y, ..., y^6
            if self.uniform.same:
                series = series_table[0, 0] + powers @ series_table[0, 1:]
            else:
                coef = series_table[g.patch[idx]]  # (n, 7, 2)
                series = coef[:, 0] + (powers[:, :, None] * coef[:, 1:]).sum(1)
            h = ops.put(h, idx, series[:, 0])
            if partials:
                hp = ops.put(hp, idx, -0.5 * series[:, 1])
        return h, hp

    def integral(self, ops: ArrayOps, r, A, B, partials: bool) -> AngularIntegral:
        """The angular integral I per pair and dI/dr, dI/dA, dI/dB; inputs (C, 2, pairs), r = |rho|.

        far/log: I = int_0^r (r - tau) E_c phi_2(cA, cB; tau) dtau, tau = sin theta, t = tan(theta/2)
        (log: in y = -log(1 - t)); near: I = int_r^1 (tau - r) E_c phi_2 dtau, tau = cos theta,
        t = tan(theta/2) on four graded panels towards the layer at t ~ c |A - B| / 2. dI/dr is Price's
        identity (the same integral without (r - tau)); dI/dA, dI/dB follow from
        dQ/dA = 2 (A - B tau) / (1 - tau^2). All pairs of all segments are evaluated in one flat array.
        """
        K = self.constants[ops.backend]
        shape = r.shape
        buckets = ops.bucketize(ops.arccos(ops.detach(r)), K.omega_edges).reshape(-1)
        lay = self.layout(ops, buckets, shape[-1])
        rp = 1 + r
        sq = ops.sqrt((1 - r) * rp)
        dA = A - B
        T_far, q2, q1 = r / (1 + sq), 0.5 * dA * dA, A * B  # T_far = tan(asin(r) / 2); Q/2 from q2, q1
        near_table = None
        if lay.has_near:  # panels [T g^-(k+1), T g^-k], k = 3..0 (the last from 0): a NearColumn table per pair
            T_near = sq / rp  # tan(omega / 2)
            t_min = ops.maximum(K.c_abs_min * abs(dA) * 0.25, T_near * 1e-6)
            log_g = ops.clip(ops.log(T_near / t_min) * (1 / 3), math.log(2.0), math.log(100.0))  # panel ratio g
            ig = ops.exp(-log_g)
            edges = [T_near, T_near * ig, T_near * (ig * ig), T_near * (ig * ig * ig), 0 * T_near]
            near_table = ops.stack(edges + [0 * T_near] + [-T_near * ops.expm1(-k * log_g) for k in (1, 2, 3)]
                                   + [T_near, q2, q1]).reshape(-1)
        parts = [self._segment_entries(ops, segment, pair, nodes, (T_far, q2, q1), near_table, math.prod(shape))
                 for segment, pair, nodes in lay.segments]
        wq, gap, tau, x2, v2 = (ops.cat(v, 0) if len(parts) > 1 else v[0] for v in zip(*parts))
        h, hp = self.gauss_average(ops, lay, x2, partials)
        g1 = wq * h
        if partials:
            g2 = wq * gap * hp * v2
            rows = [g1 * gap, g1, g2, g2 * tau]
        else:
            rows = [g1 * gap]
        if len(lay.blocks) == 1:  # sums over the nodes of each pair
            _, k, n = lay.blocks[0]
            sums = ops.stack([v.reshape(k, n).sum(0) for v in rows])
        else:
            rows = ops.stack(rows)
            sums = ops.cat([rows[:, a:a + k * n].reshape(len(rows), k, n).sum(1) for a, k, n in lay.blocks], -1)
        if lay.unsort is not None:
            sums = ops.take(sums, lay.unsort)
        sums = sums.reshape(len(rows), *shape)
        near = (lay.buckets == 0).reshape(shape) if lay.has_near else None
        T = ops.where(near, T_near, T_far) if lay.has_near else T_far
        f2 = (2 / math.pi) / (1 + T * T)  # 1 / (2 pi) of phi_2, 2 / (1 + T^2) of the gap, 2 of d theta
        I = f2 * sums[0]
        if not partials:
            return AngularIntegral(I, near)
        I_r = sums[1] * (1 / math.pi)
        if lay.has_near:
            I_r = ops.where(near, -I_r, I_r)
        f4 = 2 * f2
        s0, s1 = f4 * sums[2], f4 * sums[3]
        return AngularIntegral(I, near, I_r, A * s0 - B * s1, B * s0 - A * s1)

    @staticmethod
    def _segment_entries(ops: ArrayOps, segment: Segment, pair, nodes, far_columns, near_table, n_pairs: int):
        """Per (pair, node) entry of one segment: (d theta weight / (1 + t^2), gap, tau, x2 = Q/2, v^2).
        ``far_columns``: (T_far, q2, q1) per pair; ``near_table``: the flat ``NearColumn`` table."""
        xp_, xm_, wh_ = nodes
        if segment is Segment.NEAR:
            hi, lo, T_m_hi, T, a2, a1 = ops.take(near_table, pair).reshape(6, -1)
            span = hi - lo
            span_xm = span * xm_
            t = hi - span_xm
            wt = span * wh_
            T_m_t = T_m_hi + span_xm
            tt = t * t
            u = 1 + tt
            iu = 1 / u
            tau, omt, v = (1 - tt) * iu, 2 * tt * iu, 0.5 * u / t  # v = 1 / (1 - tau^2)^(1/2)
            gap = T_m_t * (T + t) * iu  # (tau - r) (1 + T^2) / 2
        else:
            def gather(*cols):
                return ops.take(ops.stack(cols).reshape(len(cols), n_pairs), pair)

            T_far, q2, q1 = far_columns
            if segment is Segment.LOG:
                S, T, a2, a1 = gather(-ops.log1p(-T_far), T_far, q2, q1)
                one_m_t = ops.exp(-(S * xp_))  # 1 - t, exact
                t = 1 - one_m_t
                wt = S * wh_ * one_m_t  # dt = (1 - t) dy
                T_m_t = one_m_t - (1 - T)
                p = one_m_t * (1 + t)
            else:
                T, a2, a1 = gather(T_far, q2, q1)
                t = T * xp_
                one_m_t, wt, T_m_t = 1 - t, T * wh_, T * xm_
            tt = t * t
            u = 1 + tt
            iu = 1 / u
            tau, omt = 2 * t * iu, one_m_t * one_m_t * iu
            v = u / (p if segment is Segment.LOG else 1 - tt)
            gap = T_m_t * (1 - T * t) * iu  # (r - tau) (1 + T^2) / 2
        v2 = v * v
        x2 = ops.clip_min((a2 + a1 * omt) * v2, 0.0)
        return wt * iu, gap, tau, x2, v2  # d theta = 2 dt / (1 + t^2)
