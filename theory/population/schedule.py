"""Per-configuration constants of the exact loss: alpha, beta, the Stein coefficient kappa2 and E||y||^2.

With y the residual target of ``theory.losses`` (x/beta^2 + eps for "paper", alpha x_0/beta^2 for "score"),
E[sigma(z_r) <w_r, y> | c] = (mu_r/beta^2) E[sigma(z_r) | c] + kappa2 D_r E[sigma'(z_r) | c] (Stein's
lemma), kappa2 = 1 + beta ("paper", rule patch), 0 ("score", rule patch), s^2/beta^2 + beta ("paper",
N(0, I) patch), alpha^2/beta^2 ("score", N(0, I) patch), s^2 = alpha^2 + beta^2; the constant E||y||^2 is
alpha^2 E[c^2]/beta^4 + d (1 + 1/beta)^2 ("paper") or alpha^2 E[c^2]/beta^4 ("score") on a rule patch and
d (alpha^2/beta^4 + (1 + 1/beta)^2) or d alpha^2/beta^4 on an N(0, I) patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._checks import DTYPE
from ..data import MultiPatchData
from ..losses import Target
from .zeta_quadrature import moment_table


@dataclass(frozen=True)
class ConfigSchedule:
    """alpha, beta, kappa2 and E||y||^2 per configuration (C,) and patch kind (rule patch / N(0, I) patch)."""

    alpha: torch.Tensor
    beta: torch.Tensor
    s2: torch.Tensor  # alpha^2 + beta^2
    kappa_rule: torch.Tensor  # (C,)
    const_rule: torch.Tensor  # (C, 2): patch 1 (c = zeta), patch 2 (c = 1 - zeta)
    kappa_noise: torch.Tensor
    const_noise: torch.Tensor

    @classmethod
    def build(cls, data: MultiPatchData, alphas, betas, targets, device) -> ConfigSchedule:
        a = torch.as_tensor(np.asarray(alphas, dtype=np.float64), device=device)
        b = torch.as_tensor(np.asarray(betas, dtype=np.float64), device=device)
        d = float(data.d)
        paper = torch.tensor([Target.parse(t) is Target.PAPER for t in targets], dtype=DTYPE, device=device)
        mom = moment_table(data.zeta, 2)
        ec2 = torch.tensor([mom[2, 0], mom[0, 2]], dtype=DTYPE, device=device)
        s2 = a**2 + b**2
        return cls(alpha=a, beta=b, s2=s2, kappa_rule=paper * (1 + b),
                   const_rule=(a**2 / b**4)[:, None] * ec2 + (paper * d * (1 + 1 / b) ** 2)[:, None],
                   kappa_noise=paper * (s2 / b**2 + b) + (1 - paper) * a**2 / b**2,
                   const_noise=d * a**2 / b**4 + paper * d * (1 + 1 / b) ** 2)

    @property
    def C(self) -> int:
        return self.alpha.numel()

    def constants(self, P: int) -> torch.Tensor:
        """(C, P) E||y||^2 per patch: the loss of g = 0."""
        return torch.cat([self.const_rule, self.const_noise[:, None].expand(-1, P - 2)], 1)
