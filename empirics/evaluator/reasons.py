"""Why an image is Invalid (Fig. 2 pipeline): ``Problem`` (message template, retryable or not) and ``Reason``."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Problem(enum.Enum):
    """Why an image is Invalid: the message template and whether the relaxed second pass may resolve it.

    Retryable problems are those a colour washed out by blur or compression can cause; the others
    (an element cut by the border, a sun below the pole top, a blank image) are measurements and stand.
    """

    BLANK = ("blank image (no elements)", False)
    NON_FINITE = ("non-finite pixel values", False)
    MISSING = ("missing {element}", True)
    TOO_MANY = ("{count} {element}", True)
    FIT_FAILED = ("{element} fit failed", True)
    CUT_BY_BORDER = ("{element} cut by the image border", False)
    UNEXPECTED_COLOUR = ("unexpected colour (unrecognised object)", True)
    POLE_NOT_ABOVE_SHADOW = ("pole not above the shadow", True)
    SHADOW_NOT_A_STRIP = ("shadow is not a strip on the ground", True)
    SHADOW_NOT_AT_FOOT = ("shadow not at the foot of the pole", True)
    DEGENERATE = ("degenerate measurement", True)
    SUN_NOT_ABOVE_POLE = ("sun not above the pole top", False)
    NOT_ONE_OBJECT = ("pole and shadow not one object", True)
    COLOUR_OUT_OF_RANGE = ("{element} colour outside the {family} range", True)
    TOO_THIN = ("{element} too thin to measure (its thickness is not in its pixels)", False)
    WRONG_SHAPE = ("{element}: {found} where a {expected} is expected", False)

    def __init__(self, template: str, retryable: bool):
        self.template = template
        self.retryable = retryable


@dataclass(frozen=True)
class Reason:
    """One Invalid reason of one image: a ``Problem`` and the element (and count) it is about; for
    ``Problem.WRONG_SHAPE`` also the shape ``found`` and the one ``expected`` (``Form`` values)."""

    problem: Problem
    element: str = ""
    count: int = 0
    family: str = ""
    found: str = ""
    expected: str = ""

    @property
    def message(self) -> str:
        return self.problem.template.format(element=self.element, count=self.count, family=self.family,
                                            found=self.found, expected=self.expected)

    @property
    def retryable(self) -> bool:
        return self.problem.retryable


LAST_RESORT = frozenset({Problem.MISSING, Problem.UNEXPECTED_COLOUR})   # reasons the adoption pass may undo
