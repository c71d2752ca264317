"""Input validation shared by the ``empirics`` modules (``empirics`` never imports ``theory``).

A bad value raises ``ValueError`` naming the parameter, what it was and what is allowed.
"""

from __future__ import annotations

import enum
import math
import numbers

import numpy as np


def check_int(name: str, value, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer (not bool) in ``[minimum, maximum]``."""
    allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral | np.integer):
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an integer {allowed}, got {value}")
    return int(value)


def check_real(name: str, value, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A finite real scalar in ``[lo, hi]``."""
    if isinstance(value, bool) or isinstance(value, str | bytes):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a finite real number, got {value!r}") from exc
    if not math.isfinite(x) or not lo <= x <= hi:
        raise ValueError(f"{name} must be a finite number in [{lo}, {hi}], got {value!r}")
    return x


def check_choice(name: str, value, choices: type[enum.Enum]):
    """A member of the string enum ``choices``, given as itself or as its value (case and spaces ignored)."""
    if isinstance(value, choices):
        return value
    if isinstance(value, str):
        for member in choices:
            if value.strip().lower() == str(member.value).lower():
                return member
    allowed = ", ".join(repr(m.value) for m in choices)
    raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def check_trim(trim) -> tuple[float, float]:
    """Percentile bounds ``(lo, hi)`` with ``0 <= lo < hi <= 100``."""
    try:
        lo, hi = (float(t) for t in trim)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"trim must be two percentiles (lo, hi) with 0 <= lo < hi <= 100, "
                         f"got {trim!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi <= 100):
        raise ValueError(f"trim must be two percentiles (lo, hi) with 0 <= lo < hi <= 100, got {trim!r}")
    return lo, hi
