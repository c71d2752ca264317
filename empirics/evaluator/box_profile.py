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

__all__ = ["step_response", "box_profile", "ThinExtent", "thin_extent", "kernel_width", "BoxFit", "fit_boxes"]

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


# ---- Vectorised fits (many profiles at once, one kernel width each): Task A's short shadow strips. ----

KERNEL_GRID = np.arange(0.0, KERNEL_WIDTH[1] + 1e-9, 0.05)    # px: kernel widths scanned by ``kernel_width``
FIT_COARSE = 0.1               # px: grid step of ``fit_boxes`` over (edge, length), then refined
FIT_FINE = (0.01, 0.001)       # px: steps of the refinement grids (each +- one step of the grid before)
SHIFT_RANGE = 0.8              # px: edges scanned about centroid - length / 2


def _step_many(u: np.ndarray, a: np.ndarray) -> np.ndarray:
    """E_a(u) with a per-profile kernel width ``a`` broadcast against ``u`` (``step_response``)."""
    sharp = np.clip(u + 0.5, 0.0, 1.0)
    wide = np.maximum(a, 1e-6)
    smooth = (_ramp_integral(u + wide / 2) - _ramp_integral(u - wide / 2)) / wide
    return np.where(a < 1e-6, sharp, smooth)


def _check_profiles(profiles) -> np.ndarray:
    p = np.asarray(profiles, np.float64)
    if p.ndim != 2 or p.shape[1] < 3 or not np.all(np.isfinite(p)):
        raise ValueError(f"profiles must be a finite (n, W) array with W >= 3 pixels, got shape {p.shape}")
    return p


def _check_widths(a, n: int) -> np.ndarray:
    a = np.broadcast_to(np.asarray(a, np.float64), (n,))
    if not np.all(np.isfinite(a) & (a >= KERNEL_WIDTH[0]) & (a <= KERNEL_WIDTH[1])):
        raise ValueError(f"kernel widths a must be finite and in {list(KERNEL_WIDTH)} px, got {a!r}")
    return a


def kernel_width(profiles, edge, length, amplitude) -> tuple[np.ndarray, np.ndarray]:
    """Kernel width a (px, on ``KERNEL_GRID``, (n,)) of boxes whose position and size are known, and the
    rms misfit over the amplitude: the a whose amplitude * box_profile(c, edge, length, a) fits each profile
    (n, W) at pixel centres c = 0.5, 1.5, ... best. Edges measured by edge integrals (exact for any
    symmetric kernel) leave only the shape of the blurred edge to a: a box with an edge at a pixel
    boundary shows it best (a = 0: one full and one empty pixel, a = 1: 7/8 and 1/8); an edge at a pixel
    centre shows it least (1/2 for every a), so boxes with two edges at random phases are the inputs."""
    p = _check_profiles(profiles)
    n, w = p.shape
    edge, length, amplitude = (np.broadcast_to(np.asarray(v, np.float64), (n,)) for v in (edge, length, amplitude))
    if not (np.all(np.isfinite(edge)) and np.all(np.isfinite(length) & (length >= 0))
            and np.all(np.isfinite(amplitude) & (amplitude > 0))):
        raise ValueError("edge, length and amplitude must be finite, length >= 0 and amplitude > 0")
    c = np.arange(w) + 0.5
    a = KERNEL_GRID[None, :, None]
    u = c[None, None, :] - edge[:, None, None]
    model = amplitude[:, None, None] * (_step_many(u, a) - _step_many(u - length[:, None, None], a))
    rms = np.sqrt(np.mean((model - p[:, None, :]) ** 2, axis=2)) / amplitude[:, None]     # (n, grid)
    best = np.argmin(rms, axis=1)
    return KERNEL_GRID[best], rms[np.arange(n), best]


@dataclass(frozen=True)
class BoxFit:
    """Boxes fitted to blurred profiles (``fit_boxes``), per profile: near edge, length (px), rms misfit
    over the peak, and whether the fitted box has a fully covered pixel (then its amplitude is in the
    pixels and an edge integral from that pixel gives the far edge whatever the kernel)."""

    edge: np.ndarray
    length: np.ndarray
    rms: np.ndarray
    has_full_pixel: np.ndarray


def fit_boxes(profiles, a, max_length: float = 8.0, edge=None) -> BoxFit:
    """Least-squares box profiles (sum / L) * box_profile(c, e, L, a) for many profiles (n, W) at once,
    each with its own kernel width a (from ``kernel_width``): a grid over (e, L) (step ``FIT_COARSE``,
    e within ``SHIFT_RANGE`` of centroid - L / 2, L up to ``max_length``), then a finer grid
    (``FIT_FINE``) about the best, twice. The model's amplitude is sum / L (blur keeps the sum), so the level
    of the ink need not be known; where it is not in the pixels (a sharp kernel and no fully covered
    pixel: ``thin_extent``'s non-identifiable bars) the fit returns one of the boxes that explain the
    profile equally well. ``edge`` (n,): the near edges, when known, are held fixed and only L is fitted
    (a sharp kernel's two partial pixels then give L: their ratio is (L - 1 + o) / (1 - o) at offset o)."""
    p = _check_profiles(profiles)
    n, w = p.shape
    a = _check_widths(a, n)
    if not (np.isfinite(max_length) and 0.5 <= max_length <= w):
        raise ValueError(f"max_length must be in [0.5, {w}] px (the profile's width), got {max_length!r}")
    c = np.arange(w) + 0.5
    total = p.sum(1)
    if np.any(total <= 0):
        raise ValueError("every profile must hold some ink (a positive sum)")
    peak = p.max(1)
    centroid = p @ c / total

    def scan(e, length):                       # e, length: (n, G) candidates -> rms (n, G)
        model = (total[:, None, None] / length[..., None]) * (
            _step_many(c[None, None, :] - e[..., None], a[:, None, None])
            - _step_many(c[None, None, :] - e[..., None] - length[..., None], a[:, None, None]))
        return np.sqrt(np.mean((model - p[:, None, :]) ** 2, axis=2)) / peak[:, None]

    lengths = np.arange(0.2, max_length + 1e-9, FIT_COARSE)
    held = edge is not None
    if not held:
        shifts = np.arange(-SHIFT_RANGE, SHIFT_RANGE + 1e-9, FIT_COARSE)
        L = np.broadcast_to(np.repeat(lengths, shifts.size)[None, :], (n, lengths.size * shifts.size))
        e = centroid[:, None] - L / 2 + np.tile(shifts, lengths.size)[None, :]
    else:
        edge = np.broadcast_to(np.asarray(edge, np.float64), (n,))
        if not np.all(np.isfinite(edge)):
            raise ValueError("edge must be finite where given")
        L = np.broadcast_to(lengths[None, :], (n, lengths.size))
        e = np.broadcast_to(edge[:, None], L.shape)
    rms = scan(e, L)
    k = np.argmin(rms, axis=1)
    edge, length, best = e[np.arange(n), k], L[np.arange(n), k], rms[np.arange(n), k]
    prev = FIT_COARSE
    for step in FIT_FINE:
        fine = np.arange(-prev, prev + step / 2, step)
        if held:
            de, dl = np.zeros_like(fine), fine
        else:
            de, dl = (g.ravel() for g in np.meshgrid(fine, fine, indexing="ij"))
        e2 = edge[:, None] + de[None, :]
        l2 = np.maximum(length[:, None] + dl[None, :], step)
        rms2 = scan(e2, l2)
        k2 = np.argmin(rms2, axis=1)
        edge, length, best = e2[np.arange(n), k2], l2[np.arange(n), k2], rms2[np.arange(n), k2]
        prev = step
    full = np.any(_step_many(c[None, :] - edge[:, None], a[:, None])
                  - _step_many(c[None, :] - edge[:, None] - length[:, None], a[:, None]) >= 1 - 1e-6, axis=1)
    return BoxFit(edge, length, best, full)
