"""c-averages of the ReLU's univariate Gaussian quantities, and the rho = +-1 closed form of E[relu relu].

With a = c A (A = alpha gamma / (beta sigma)), Phi = Phi(a), phi = phi(a) and Eu = a Phi + phi = E relu(z)/sigma,
all c-sums of an evaluation are two matrix products: the pair channels E_c[f(c A_r) g(c A_s)] (``Channel``)
and the per-neuron moments E_c[f(c A) E_q(c)] against the columns E_q (``MomentColumn``, then the sign sets
of c that the rho = +-1 closed form needs when c is not positive on the whole support).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

import numpy as np


class Channel(IntEnum):
    """Pair channels (left factor at r, right factor at s) of the c-sums; the left factors against the
    ``MomentColumn``s give the per-neuron moments: EBAR -> E_c[Eu E_q], PBAR -> E_c[Phi E_q],
    Y -> E_c[c phi E_q]."""

    EBAR = 0  # E_c[Eu_r Eu_s]
    PBAR = 1  # E_c[Phi_r Phi_s]
    Z = 2  # E_c[c Phi_r Eu_s] = dEbar/dA_r
    Y = 3  # E_c[c phi_r Phi_s] = dPbar/dA_r


class MomentColumn(IntEnum):
    """Columns E_q(c) of the per-neuron moments (the sign-set columns follow, ``MomentChannels.sign_sets``)."""

    ONE = 0
    C = 1
    C2 = 2


class SignSet(Enum):
    """Sets of c over which the rho = +-1 closed form is averaged."""

    GE = "c >= 0"
    GT = "c > 0"
    LT = "c < 0"


class NeuronRow(IntEnum):
    """Rows of the per-neuron values gathered at both ends of every pair: n = ||w||, n 1[w != 0], A, then per
    sign set three rows from ``SETS`` + 3 k (E_c[Phi 1_X], E_c[c^2 Phi 1_X], E_c[c phi 1_X])."""

    N = 0
    N_POS = 1
    A = 2
    SETS = 3


@dataclass(frozen=True)
class MomentChannels:
    """Weights of the c-sums (numpy; ``ReluTables`` holds each backend's copy of the arrays)."""

    right_w: np.ndarray  # (4, 1, 2, nc, 1): quadrature weight of each channel (w, w, c w, c w)
    right_ext: np.ndarray  # (4, 1, 2, nc, q): right_w times the columns E_q(c)
    set_weights: dict  # SignSet -> (E_c[1_X], E_c[c^2 1_X]) per patch, (2, 1) each
    sign_sets: dict  # SignSet -> (column of 1_X, column of c^2 1_X)
    set_cols: list  # distinct (1_X, c^2 1_X) column pairs, in gather order
    set_rows: dict  # SignSet -> first NeuronRow of its three moments

    @classmethod
    def build(cls, c: np.ndarray, w: np.ndarray) -> MomentChannels:
        """From the c-quadrature of both rule patches, nodes ``c`` and weights ``w`` (2, nc)."""
        live = w > 0
        cols = [np.ones_like(c), c, c**2]
        if bool((live & (c <= 0)).any()):
            sign_sets = {}
            for name, mask in ((SignSet.GE, c >= 0), (SignSet.GT, c > 0), (SignSet.LT, c < 0)):
                if bool((live & mask).any()):
                    sign_sets[name] = (len(cols), len(cols) + 1)
                    cols += [mask.astype(np.float64), c**2 * mask]
        else:  # c > 0 on the support: every set is the whole quadrature
            sign_sets = {SignSet.GE: (MomentColumn.ONE, MomentColumn.C2), SignSet.GT: (MomentColumn.ONE,
                                                                                     MomentColumn.C2)}
        E = np.stack(cols, -1)  # (2, nc, q)
        chan_w = np.stack([w, w, c * w, c * w])[:, None, :, :, None]  # (4, 1, 2, nc, 1), by Channel
        # E_c[1_X], E_c[c^2 1_X] per patch: the constant terms of the rho -> -1 closed form
        set_weights = {name: ((w * E[..., i]).sum(-1)[:, None], (w * E[..., j]).sum(-1)[:, None])
                       for name, (i, j) in sign_sets.items()}
        sign_sets = {name: (int(i), int(j)) for name, (i, j) in sign_sets.items()}  # plain ints index faster
        set_cols = sorted(set(sign_sets.values()))
        set_rows = {name: int(NeuronRow.SETS) + 3 * set_cols.index(ij) for name, ij in sign_sets.items()}
        return cls(chan_w, chan_w * E, set_weights, sign_sets, set_cols, set_rows)


def near_base(ops, set_weights: dict, rho, sgn, Ar, As, Mr: dict, Ms: dict, partials: bool):
    """E_c of the rho = +-1 closed form of E[relu relu] per unit sigma_r sigma_s, per pair.

    rho -> +1: E[(X + a)_+ (X + b)_+] - gap Phi(min) = (1 + ab - gap) Phi(min) + max phi(min); for c > 0
    the minimum is c min(A_r, A_s), so the c-average combines the per-neuron moments E_c[Phi],
    E_c[c^2 Phi], E_c[c phi] of one neuron (``Mr``/``Ms``: SignSet -> (3, C, 2, pairs) at r / s).
    rho -> -1: (gap - 1 - ab)(Phi(a) - Phi(b)) + a phi(b) - b phi(a) where a > b (b = -c A_s), i.e. over
    c of the sign of A_r + A_s. ``set_weights``: this backend's ``MomentChannels.set_weights``. Returns the
    value and, with ``partials``, d/drho, d/dA_r, d/dA_s."""
    gap = 1 - abs(rho)
    r_low = Ar < As
    AA = Ar * As
    plus, minus = [0.0] * 4, [0.0] * 4  # value, d/dgap, d/dA_r, d/dA_s
    for name, r_sel in ((SignSet.GE, r_low), (SignSet.LT, ~r_low)):  # c >= 0: the smaller A; c < 0: the larger
        if name not in Mr:
            continue
        M0, M2, M1 = ops.where(r_sel, Mr[name], Ms[name])
        a_sel, a_oth = ops.where(r_sel, Ar, As), ops.where(r_sel, As, Ar)
        d_sel, d_oth = (1 - gap) * M1 + a_oth * M2, a_sel * M2 + M1
        terms = ((1 - gap) * M0 + AA * M2 + a_oth * M1, -M0,
                 ops.where(r_sel, d_sel, d_oth), ops.where(r_sel, d_oth, d_sel))
        plus = [p + v for p, v in zip(plus, terms)]
    for name, side in ((SignSet.GT, 1.0), (SignSet.LT, -1.0)):
        if name not in Mr:
            continue
        (M0r, M2r, M1r), (M0s, M2s, M1s) = Mr[name], Ms[name]
        W0, W2 = set_weights[name]
        P0, P2 = M0r + M0s - W0, M2r + M2s - W2
        active = (Ar + As) * side > 0
        terms = ((gap - 1) * P0 + AA * P2 + Ar * M1s + As * M1r, P0,
                 (gap - 1) * M1r + As * P2 + M1s, (gap - 1) * M1s + Ar * P2 + M1r)
        minus = [mi + ops.where(active, v, 0.0) for mi, v in zip(minus, terms)]
    neg = rho < 0
    out = [ops.where(neg, mi, pl) for pl, mi in zip(plus, minus)]
    return (out[0], -sgn * out[1], out[2], out[3]) if partials else out[0]
