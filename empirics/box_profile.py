"""The thin extent of a bar from its blurred profile (Task B's 1-2 px bars on other renderers).

A rectangle's extent across its thin axis is read elsewhere (``empirics.evaluate``) as its ink per
row over its ink level, the level taken from a fully covered pixel. A bar under ~2 px thick has no
fully covered pixel once the downscaler blurs it, so that level, and the height with it, is wrong
by up to a factor 2. Here the height comes from the *shape* of the bar's profile instead.

Model. A downscaler's pixel value is the scene averaged with a kernel; we take the kernel as
box(1) * box(a) (pixel units): a = 0 is area averaging (OpenCV INTER_AREA, a supersampled box),
a = 1 is a triangle (PIL's antialiased bilinear). Its step response, at offset u of the pixel centre
past an edge, is

    E_a(u) = (R(u + a/2) - R(u - a/2)) / a,    R(t) = 0 (t < -1/2), (t + 1/2)^2 / 2 (|t| <= 1/2), t (t > 1/2),

(E_0(u) = clip(u + 1/2, 0, 1)), and a box [e, e + L] has the profile g(c) = E_a(c - e) - E_a(c - e - L)
at pixel centres c, whose sum over c is L. The kernel is separable and the same along both axes, so:

1. ``a`` is fitted, with the bar's length, position and amplitude, to the profile along its long
   axis (its two ends show the kernel);
2. along the thin axis, the profile is (sum / L) g(c) (blur keeps the sum): only the edge e and the
   extent L are free, fitted with ``a`` fixed.

Identifiability. With a sharp kernel (a ~ 0) a bar covering two pixel rows gives two numbers,
s (1 - o) and s (L - 1 + o), for three unknowns (colour strength s, offset o, extent L): its extent is
not in its pixels (two images with different heights are the same pixels). ``thin_extent`` scans the
extents that explain the profile and reports such a bar as not identifiable instead of returning a
number. With a sharp kernel and three rows (a fully covered middle row) or a wide kernel (a ~ 1) the
extent is identifiable and exact.

Limits (known, tested only where stated): a between ~0.2 and ~0.7 px leaves most pixels of a
3-4 px long bar on the linear part of its edges, where a does not show, so a is poorly pinned and
the extent of a 1-2 px bar may be off by up to ~0.2 px while reported identifiable; kernels outside
the family (bicubic or Lanczos lobes) are caught only when they misfit by > ``FIT_RESIDUAL``. Tests
cover a = 0 and a = 1 (OpenCV's INTER_AREA and PIL's bilinear) and the reference renderer's bars.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

__all__ = ["step_response", "box_profile", "ThinExtent", "thin_extent"]

KERNEL_WIDTH = (0.0, 2.0)      # bounds of a (pixels)
FIT_RESIDUAL = 0.01            # rms residual / peak of the profile up to which a fit explains it
SPAN_RESIDUAL = 0.01           # misfit (rms / peak) within which another extent explains a profile as well
                               # (set from the reference renders: 3-row sharp bars span <= 0.07 px, 2-row ones ~1.3 px)
SAME_EXTENT = 0.15             # px: half the spread of extents that explain a profile, up to which it is identifiable
EXTENT_GRID = np.arange(0.2, 4.0, 0.01)    # px: extents scanned
LONG_STARTS = (0.0, 0.5, 1.0, 1.5)          # px: kernel widths the long-axis fit starts from
SAME_FIT = 1e-3                # rms / peak: long-axis fits this close explain the profile equally well
EDGE_SHIFTS = np.arange(-0.6, 0.6001, 0.02)  # px: edge positions scanned about centroid - extent / 2


def _ramp_integral(t: np.ndarray) -> np.ndarray:
    """R(t) = integral of clip(s + 1/2, 0, 1) ds from -inf to t."""
    t = np.asarray(t, np.float64)
    return np.where(t < -0.5, 0.0, np.where(t <= 0.5, 0.5 * (t + 0.5) ** 2, t))


def step_response(u, a: float) -> np.ndarray:
    """E_a(u): a pixel's share of a step edge at offset u (pixel centre past the edge, px)."""
    if not (np.isfinite(a) and KERNEL_WIDTH[0] <= a <= KERNEL_WIDTH[1]):
        raise ValueError(f"kernel width a must be in {list(KERNEL_WIDTH)} px, got {a!r}")
    u = np.asarray(u, np.float64)
    if a < 1e-6:
        return np.clip(u + 0.5, 0.0, 1.0)
    return (_ramp_integral(u + a / 2) - _ramp_integral(u - a / 2)) / a


def box_profile(centres, edge, length, a: float) -> np.ndarray:
    """g(c) = E_a(c - edge) - E_a(c - edge - length): a box's profile at pixel centres ``centres``
    (``edge`` and ``length`` broadcast against ``centres``: many boxes at once)."""
    length = np.asarray(length, np.float64)
    if not np.all(np.isfinite(length) & (length >= 0)):
        raise ValueError(f"length must be finite and >= 0, got {length!r}")
    c = np.asarray(centres, np.float64)
    return step_response(c - edge, a) - step_response(c - edge - length, a)


@dataclass(frozen=True)
class ThinExtent:
    """A bar's thin extent (px) from its profile, the kernel width used, and whether it is identifiable."""

    extent: float
    kernel_width: float
    identifiable: bool
    fits: bool
    span: float          # px: spread of the extents that explain the profile


def _fit_long(profile: np.ndarray) -> tuple[float, float]:
    """Kernel width a of a least-squares box fit (amplitude, edge, length, a) to the long-axis profile,
    and its rms misfit over the peak (starts at several a: a narrow kernel is flat in a)."""
    c = np.arange(profile.size) + 0.5
    total, peak = profile.sum(), profile.max()
    length0 = total / peak
    edge0 = profile @ c / total - length0 / 2

    def resid(q):
        return (q[0] * box_profile(c, q[1], max(q[2], 0.0), q[3]) - profile) / peak

    lower, upper = [0, -np.inf, 0, KERNEL_WIDTH[0]], [np.inf, np.inf, np.inf, KERNEL_WIDTH[1]]
    fits = [least_squares(resid, (peak, edge0, length0, a0), bounds=(lower, upper)) for a0 in LONG_STARTS]
    rms = np.array([np.sqrt(2 * r.cost / c.size) for r in fits])
    # A narrow kernel does not show on pixels on the linear part of an edge: of the widths that fit as
    # well as the best, the narrowest.
    a = min(r.x[3] for r, m in zip(fits, rms) if m <= rms.min() + SAME_FIT)
    return float(a), float(rms.min())


def thin_extent(long_profile, thin_profile) -> ThinExtent:
    """The extent of a bar across its thin axis from its two profiles (ink summed over the other axis).

    ``long_profile``: the bar's ink per pixel along its long axis (its two ends inside the window);
    ``thin_profile``: its ink per pixel across, whole (zero at both ends). The kernel width a comes
    from the long profile (``_fit_long``); across, the amplitude is sum / extent (blur keeps the sum),
    and the extent L is scanned on ``EXTENT_GRID`` with the edge scanned about centroid - L/2 (an
    area-averaged profile gives its centre only to within a pixel), then refined. Identifiable: the
    extents whose misfit is within ``SPAN_RESIDUAL`` (or twice the best) of the peak span at most
    ``2 SAME_EXTENT``. ``fits``: both profiles are explained to ``FIT_RESIDUAL`` of their peak.
    """
    long_profile = np.asarray(long_profile, np.float64)
    thin_profile = np.asarray(thin_profile, np.float64)
    for name, p in (("long_profile", long_profile), ("thin_profile", thin_profile)):
        if p.ndim != 1 or p.size < 3 or not np.all(np.isfinite(p)) or p.max() <= 0:
            raise ValueError(f"{name} must be a finite 1-D profile of >= 3 pixels with some ink, got shape "
                             f"{p.shape}")
    a, long_rms = _fit_long(long_profile)
    c = np.arange(thin_profile.size) + 0.5
    total, peak = thin_profile.sum(), thin_profile.max()
    edge = thin_profile @ c / total - EXTENT_GRID[:, None] / 2 + EDGE_SHIFTS[None, :]     # (L, D)
    length = EXTENT_GRID[:, None, None]
    model = total / length * box_profile(c, edge[..., None], length, a)
    rms = np.sqrt(np.mean((model - thin_profile) ** 2, axis=2)) / peak                   # (L, D)
    k, d = np.unravel_index(int(np.argmin(rms)), rms.shape)

    def resid(q):
        return (total / q[1] * box_profile(c, q[0], q[1], a) - thin_profile) / peak

    fit = least_squares(resid, (edge[k, d], EXTENT_GRID[k]), bounds=([-np.inf, EXTENT_GRID[0] / 2],
                                                                      [np.inf, 2 * EXTENT_GRID[-1]]))
    best = float(np.sqrt(2 * fit.cost / c.size))
    ok = EXTENT_GRID[rms.min(1) <= max(SPAN_RESIDUAL, 2 * best)]
    span = float(ok.max() - ok.min()) if ok.size else 0.0
    return ThinExtent(float(fit.x[1]), a, span <= 2 * SAME_EXTENT,
                      bool(max(best, long_rms) <= FIT_RESIDUAL), span)
