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


def check_rgb_images(images, size: int | None = None) -> np.ndarray:
    """uint8 RGB images [N, S, S, 3] with N >= 1 and S >= 8 (and S == ``size`` when given: a classifier's)."""
    imgs = np.asarray(images)
    if imgs.ndim != 4 or imgs.shape[3] != 3 or imgs.shape[1] != imgs.shape[2] or imgs.dtype != np.uint8:
        raise ValueError(f"images must be uint8 RGB [N, S, S, 3], got {imgs.dtype} {imgs.shape}")
    if len(imgs) == 0:
        raise ValueError("images must hold at least one image")
    if imgs.shape[1] < 8:
        raise ValueError(f"images must be at least 8 x 8 px, got {imgs.shape[1]} x {imgs.shape[2]}")
    if size is not None and imgs.shape[1] != size:
        raise ValueError(f"this classifier was trained on {size} x {size} px images, got {imgs.shape[1]} x "
                         f"{imgs.shape[2]}")
    return imgs


def check_class_labels(labels, n: int, n_classes: int = 3) -> np.ndarray:
    """One integer class label in {0, ..., n_classes - 1} per image, as int64 (n,)."""
    lab = np.asarray(labels)
    allowed = "{" + ", ".join(str(c) for c in range(n_classes)) + "}"
    if lab.ndim != 1 or lab.shape[0] != n or lab.dtype == bool or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be {n} integers in {allowed} (a 1-D array, one label per image); "
                         f"got {lab.dtype} of shape {lab.shape}")
    bad = np.setdiff1d(np.unique(lab), np.arange(n_classes))
    if bad.size:
        raise ValueError(f"labels must be in {allowed} (App. G.1's classes), got {bad.tolist()}")
    return lab.astype(np.int64)
