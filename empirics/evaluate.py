"""Rule evaluator (Fig. 2 pipeline, Section 3.2): the public face of ``empirics.evaluator``.

``from empirics.evaluate import evaluate`` (the API contract) keeps working. The pipeline and its
documentation are in ``empirics.evaluator.pipeline``; each stage has its own module there (colour
families, masks, coverage, geometry, the features table, the shape checks, Task A by shape).
"""

from empirics.data.images import as_float_rgb
from empirics.evaluator.colour import FAMILY_TOLERANCE, RELAXED_TOLERANCE
from empirics.evaluator.pipeline import Evaluation, evaluate, shape_statistics
from empirics.evaluator.reasons import Problem, Reason
from empirics.evaluator.shape_checks import EXPECTED_FORM, Form, ShapeStats

__all__ = ["Evaluation", "evaluate", "FAMILY_TOLERANCE", "RELAXED_TOLERANCE", "as_float_rgb", "Problem", "Reason",
           "Form", "EXPECTED_FORM", "ShapeStats", "shape_statistics"]
