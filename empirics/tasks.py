"""Tasks A-D of Section 3.1.2 and App. C: the public face of ``empirics.data``.

``from empirics.tasks import generate`` (the API contract) keeps working: the specs, colour families,
samplers and rules live in ``empirics.data.tasks``, the renderer, ``generate`` and ``degrade`` in
``empirics.data.render``.
"""

from empirics.data.render import TaskBatch, degrade, generate, render
from empirics.data.tasks import (
    BLUE_GREEN,
    COARSE_C_RTOL,
    DARK,
    ELEMENTS,
    FINE_FACTOR_LIMITS,
    FINE_FACTOR_RANGE,
    RULE_FEATURES,
    SPECS,
    TARGET_SLOPE,
    TRAIN_SIZES,
    YELLOWISH,
    Element,
    FactorLimits,
    HSVRange,
    Shape,
    Task,
    TaskSpec,
    coarse_rule,
    feature_values,
    fine_xy,
    sample_params,
)

__all__ = [
    "Task", "HSVRange", "FactorLimits", "FINE_FACTOR_RANGE", "FINE_FACTOR_LIMITS",
    "YELLOWISH", "BLUE_GREEN", "DARK", "TARGET_SLOPE", "TRAIN_SIZES", "TaskBatch",
    "ELEMENTS", "RULE_FEATURES", "SPECS", "TaskSpec", "Element", "Shape", "COARSE_C_RTOL",
    "fine_xy", "coarse_rule", "feature_values", "generate", "sample_params", "render", "degrade",
]
