"""hidden-rules theory: Section 4 of the paper (Def 4.1-4.3, Thm 4.2, 4.4, 4.5, eq. (1)-(2))."""

from .data import MultiPatchData
from .schedules import DDPMSchedule, ou_schedule
from .zeta import Discrete, ScaledBeta, Uniform, ZetaDistribution, parse_zeta

__all__ = ["MultiPatchData", "DDPMSchedule", "ou_schedule", "Discrete", "ScaledBeta", "Uniform",
           "ZetaDistribution", "parse_zeta"]
