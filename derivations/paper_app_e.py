"""App. E (proof of Thm 4.5) transcribed as printed, in sympy, so that each line can be compared with
the derivation in ``derivations.linear_stationary``. Nothing here is corrected.

Notation of the transcription (one patch, feature f = u, coefficient c = zeta for patch 1):
``N`` = ||w||^2, ``gamma`` = <w, u>, ``c`` the patch coefficient of the sample (x_0 = c u),
``c2`` = E[c^2] (the paper's E[zeta^2]), and for the two-patch lines ``m1`` = E[zeta],
``m2`` = E[zeta^2], ``G1``, ``G2`` = <w^(1), u>^2, <w^(2), v>^2, ``N1``, ``N2`` the squared norms.
The paper's undefined symbol mu in <grad L, u> is kept as the symbol ``mu``.
Vectors are given by their coefficients on (u, w) (gradient) as a pair.
"""

from __future__ import annotations

import sympy as sp

from ._expectation import zeta_moment

alpha, beta = sp.symbols("alpha beta", positive=True)
d = sp.Symbol("d", positive=True, integer=True)
eta = sp.Symbol("eta", positive=True)
gamma = sp.Symbol("gamma", real=True)
N = sp.Symbol("N", nonnegative=True)
c = sp.Symbol("c", positive=True)
c2 = sp.Symbol("c_2", positive=True)
mu = sp.Symbol("mu")
G1, G2, N1, N2 = sp.symbols("G1 G2 N1 N2", nonnegative=True)
m1, m2 = zeta_moment(1), zeta_moment(2)

# ---- I1, I2, I3 and the per-sample loss (conditional on x_0 = c u) ---------------------------------
I1 = (alpha**2 * (c * gamma) ** 2 + beta**2 * N) * N
I2 = alpha**2 / beta**4 * c**2 + (1 + 1 / beta) ** 2 * d
I3 = alpha**2 / beta**2 * (c * gamma) ** 2 + (1 + beta) * N
SAMPLE_LOSS = (alpha**2 * (c * gamma) ** 2 + beta**2 * N) * N - 2 * alpha**2 / beta**2 * (c * gamma) ** 2 \
    - 2 * (1 + beta) * N + I2

# ---- L^(1): the loss after E over zeta (printed with "+ I2", I2 the patch's own constant) ------------
LOSS_W_PART = (alpha**2 * c2 * gamma**2 + beta**2 * N) * N - 2 * alpha**2 / beta**2 * c2 * gamma**2 \
    - 2 * (1 + beta) * N

# ---- gradient, as coefficients on (u, w) -----------------------------------------------------------
GRAD_U = N * 2 * alpha**2 * c2 * gamma - 2 * alpha**2 / beta**2 * c2 * gamma
GRAD_W = N * 2 * beta**2 + 2 * (alpha**2 * c2 * gamma**2 + beta**2 * N) - 2 * (1 + beta)

# ---- GD updates: <w^{k+1}, u> = FACTOR_U <w^k, u>, orthogonal part = FACTOR_PERP * (orthogonal part) ---
FACTOR_U = 1 + eta * (2 * alpha**2 / beta**2 * c2 + 2 * (1 + beta) - 2 * alpha**2 * c2 * N - 4 * beta**2 * N
                      - 2 * alpha**2 * c2 * gamma**2)
FACTOR_PERP = 1 + eta * (2 * (1 + beta) - 4 * beta**2 * N - 2 * alpha**2 * c2 * gamma**2)

# ---- the two stationarity equations --------------------------------------------------------------
STAT_W = N * (2 * alpha**2 * c2 * gamma**2 + 2 * beta**2 * N) \
    + 2 * (alpha**2 * c2 * gamma**2 + beta**2 * N) * N \
    - 2 * alpha**2 / beta**2 * c2 * gamma**2 - 2 * (1 + beta) * N
STAT_U = N * (2 * alpha**2 * c2 * mu**2 * gamma + 2 * beta**2 * gamma) \
    + 2 * (alpha**2 * c2 * gamma**2 + beta**2 * N) * gamma \
    - 2 * alpha**2 / beta**2 * c2 * mu**2 * gamma - 2 * (1 + beta) * gamma

# ---- the printed solutions -----------------------------------------------------------------------
_DISC = 4 * alpha**4 / beta**4 * c2**2 + (56 + 16 * beta) * alpha**2 / beta**2 * c2 \
    + 28 + 16 * beta + 4 * beta**2
_NUM = 6 * alpha**2 / beta**2 * c2 + 6 + 2 * beta
_DEN = 8 * alpha**2 * c2 + 8 * beta**2
NORM_SQ_PLUS = (_NUM + sp.sqrt(_DISC)) / _DEN
NORM_SQ_MINUS = (_NUM - sp.sqrt(_DISC)) / _DEN
PROJ_SQ = N * (1 + beta - 2 * beta**2 * N) / (alpha**2 * c2 - 2 * N - 1 / beta**2)

# ---- bias (two patches; patch 2 has E[(1 - zeta)^2] = 1 - 2 m1 + m2) ---------------------------------
BIAS_LINE2 = alpha * m1 * G1 + alpha * (1 - m1) * G2 - alpha / beta**2


def _c0_term(mean, second, norm):
    return mean * norm / (alpha * second) * (1 + beta - 2 * beta**2 * norm) / (2 * norm - 1 / beta**2)


C0_LINE3 = _c0_term(m1, m2, N1) + _c0_term(1 - m1, 1 - 2 * m1 + m2, N2) - alpha / beta**2  # inside |.|

# ---- variance lines ------------------------------------------------------------------------------
_VAR = m2 - m1**2  # Var(zeta) = Var(1 - zeta); Cov(zeta, 1 - zeta) = -Var(zeta)
_E_Z1MZ = m1 - m2  # E[zeta (1 - zeta)]
VARIANCE_LINE1 = (alpha**2 * m2 * G1 + beta**2 * N1) * G1 \
    + (alpha**2 * (1 - 2 * m1 + m2) * G2 + beta**2 * N2) * G2 \
    + 2 * alpha**2 * _E_Z1MZ * G1 * G2 - (alpha * m1 * G1 + alpha * (1 - m1) * G2) ** 2
VARIANCE_LINE2 = alpha**2 * _VAR * G1**2 + alpha**2 * _VAR * G2**2 - 2 * alpha**2 * (-_VAR) * G1 * G2 \
    + beta**2 * N1 * G1 + beta**2 * N2 * G2
# line 3: alpha^2 Var(zeta G1 - (1 - zeta) G2) + ...; the Var of this linear function of zeta is
# evaluated in ``derivations.linear_stationary.paper_variance_line3`` (it is not a printed formula).
