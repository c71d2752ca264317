"""Task A's pole and shadow geometry (App. C): the pole's centre, width, top and foot (edge integrals), the
downscaling kernel, and the shadow strip's far end."""

from __future__ import annotations

import numpy as np

from empirics.evaluator.box_profile import fit_boxes, kernel_width
from empirics.evaluator.geometry import Element
from empirics.evaluator.morphology import edge_integral, plateau

POLE_RIM = 0.02             # Task A by shape: a column holds the pole's rim if its ink is >= this x the pole's peak
SHARP_KERNEL = 0.15         # px: a downscaling kernel this narrow (box(1) * box(a), ``box_profile``) is unblurred
MAX_SHADOW_THICKNESS = 0.2  # Task A: a "shadow" thicker than this fraction of the image is not a strip
KERNEL_PHASE = 0.2          # px: an edge this far from a pixel centre shows the kernel (``box_profile.kernel_width``)
SHORT_STRIP = 5             # columns: a strip whose >= half-max run is this short is measured by a box fit
TAIL_INK = 0.05             # a strip's columns are summed up to one past the first with less coverage than this
STRIP_WINDOW = 12           # px: window of the box fit of a short strip
FIT_CHUNK = 16              # short strips fitted at once (memory of the grid scan)
KERNEL_CHOICES = (0.0, 0.5, 1.0, 1.5)   # px: kernel widths tried on a short strip whose pole does not show a
NEAR_END_SLACK = 0.01       # rms / peak: a near end held at the pole explains a sharp strip if it fits this well


def foot_integral(far_rows: np.ndarray, yc: np.ndarray, top: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Task A: the pole's foot (px), the edge integral foot = y_c + sum_{y >= y_c} rows'(y) / width' down the
    (n, S) rows ``far_rows`` of the pole's half on the sun's side, and that half's width' (the plateau of its
    rows from ``top`` down to row ``yc``, the pole's own rows: a sun beside it may share those columns higher
    up). Used by ``pole_geometry`` and by Task A's shape pass (``empirics.evaluator.task_a_shape``)."""
    S = far_rows.shape[1]
    upper = np.arange(S)[None, :] < yc[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        along = upper & (np.arange(S)[None, :] >= np.ceil(np.nan_to_num(top, nan=0.0))[:, None])
        far_width = plateau(np.where(along, far_rows, 0.0))
        foot = yc + edge_integral(np.where(upper, 0.0, far_rows) / far_width[:, None], yc)
    return foot, far_width


def pole_geometry(pole: Element, shadow: Element, own: np.ndarray) -> dict[str, np.ndarray]:
    """Task A: the pole's centre, width, top and foot, each from the pole's own pixels.

    Centre x and width (row-sum plateau) come from the pole's rows above the shadow band, where it
    is alone, and its top from the edge integral top = y_c - sum_{y < y_c} rows(y) / width, exact for
    box-filtered edges and unchanged by symmetric blur. The foot (where the pole meets the ground)
    is the same edge integral downwards, foot = y_c + sum_{y >= y_c} rows'(y) / width', over the
    pole's half away from the shadow (columns beyond its axis on the sun's side): whichever way a
    shadow strip is drawn (beside the pole on the ground, under the ground line, straddling it, over
    or under the pole), it starts at the pole's axis at most, so that half shows the foot. There the
    rows are those of ``own`` (n, S, S): the pole's coverage where the pixels are exact colour mixes
    (it leaves out a strip's blurred ink), else the pixels' luma ink (nothing but the pole is in that
    half, and luma, unlike the split of a pixel between touching elements, survives JPEG's chroma
    subsampling).
    """
    n, S = pole.rows.shape
    band = shadow.rows >= 0.25 * shadow.rows.max(1, keepdims=True)
    b0 = np.where(band.any(1), np.argmax(band, 1), S)
    with np.errstate(invalid="ignore"):
        yc = np.minimum(b0 - 1, np.floor(np.nan_to_num(pole.cy, nan=0.0))).astype(int)
    yc = np.clip(yc, 1, S)
    upper = np.arange(S)[None, :] < yc[:, None]
    cols = np.einsum("ny,nyx->nx", upper.astype(np.float32), pole.cov, dtype=np.float64)
    pos = np.arange(S) + 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        x = cols @ pos / cols.sum(1)
        width = plateau(np.where(upper, pole.rows, 0.0))
        top = yc - np.where(upper, pole.rows, 0.0).sum(1) / width
        away = np.where(np.nan_to_num(shadow.cx) >= x, -1.0, 1.0)          # the sun's side of the pole
        offset = (pos[None, :] - x[:, None]) * away[:, None]
        far = (offset > 0) & (offset <= width[:, None] / 2 + 1.0)           # (n, S) columns
        far_rows = np.einsum("nyx,nx->ny", own, far.astype(np.float32), dtype=np.float64)
        foot, far_width = foot_integral(far_rows, yc, top)
    return {"pole_x": x, "pole_width": width, "pole_top": top, "ground_y": foot, "above": yc - top,
            "kernel": pole_kernel(far_rows, top, foot, far_width),
            "kernel_shown": np.maximum(edge_phase(top / bin_factor(S)), edge_phase(foot / bin_factor(S)))
            >= KERNEL_PHASE}


def bin_factor(S: int) -> int:
    """Columns summed into one by ``bin_columns``: an image larger than 32 px is read at 32 px scale for the
    kernel and short-strip fits (their grids are in px of a 32 px image; binning is area averaging, so a
    nearest-neighbour enlargement bins back to its source exactly)."""
    return max(1, S // 32)


def bin_columns(profile: np.ndarray, b: int) -> np.ndarray:
    """(n, S) profiles summed over runs of ``b`` pixels -> (n, S // b)."""
    n, S = profile.shape
    return profile[:, :S // b * b].reshape(n, S // b, b).sum(2) if b > 1 else profile


def edge_phase(edge: np.ndarray) -> np.ndarray:
    """Distance (px) of an edge from the nearest pixel centre: 0 (it reads 1/2 whatever the kernel) to 1/2."""
    with np.errstate(invalid="ignore"):
        return np.abs(np.mod(np.nan_to_num(edge, nan=0.5), 1.0) - 0.5)


def pole_kernel(far_rows: np.ndarray, top: np.ndarray, foot: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Task A: the image's downscaling kernel width a (px, ``empirics.evaluator.box_profile``; NaN if unknown) from
    the two ends of the pole's half on the sun's side, a box [top, foot] whose ends and level the edge
    integrals of ``pole_geometry`` give exactly for any symmetric kernel: only the shape of its blurred
    ends is left to a (``box_profile.kernel_width``). The shadow strip has the same kernel."""
    b = bin_factor(far_rows.shape[1])
    far_rows, top, foot, level = bin_columns(far_rows, b), top / b, foot / b, level * b
    n, S = far_rows.shape
    a = np.full(n, np.nan)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(top) & np.isfinite(foot) & np.isfinite(level) & (level > 0) & (foot - top >= 2)
    if ok.any():
        idx = np.arange(S)[None, :]
        near = (idx >= np.floor(top[ok])[:, None] - 2) & (idx <= np.ceil(foot[ok])[:, None] + 1)
        a[ok] = kernel_width(np.where(near, np.nan_to_num(far_rows[ok]), 0.0), top[ok], foot[ok] - top[ok],
                             level[ok])[0]
    return a


def shadow_far_end(shadow: Element, side: np.ndarray, kernel: np.ndarray, shown: np.ndarray, pole_x: np.ndarray,
                pole_width: np.ndarray) -> np.ndarray:
    """Task A: x (px) of the shadow strip's far end, from the strip's ink per column P(x) alone.

    Its near end needs no measuring (a strip starts at the pole's axis or is hidden up to its edge, by
    convention of the renderer), and must not be used: the centroid +- half the extent is biased for a
    strip with partial end pixels (a partial pixel's ink counts at its centre, not at its covered
    part's: by a (1 - a) / (2 L) px for an end pixel covered a, up to 1 / (8 L); with the near end on a
    pixel boundary, as in ``empirics.tasks``, always long: 0.05 px on a 2.5 px strip, 1.5 % of l2).

    * A strip whose run of columns at >= half its peak is longer than ``SHORT_STRIP``: the edge integral
      end = x_k + sum_{x >= x_k} P(x) / A from the near boundary x_k of the column two inside that run's far
      end (fully covered for any kernel up to 2 px wide), A the plateau; exact for any symmetric kernel.
    * A shorter strip has no plateau once a downscaler blurs it (a 1-2 px strip under PIL's bilinear:
      the peak column holds 60-90 % of A), so neither A nor the extent is read off a pixel: a blurred box
      (sum / L) * box_profile(x, e, L, a) is fitted to P (``box_profile.fit_boxes``) with the image's
      kernel width a (``pole_kernel``), and the end is e + L. Where both ends of the pole lie near pixel
      centres (``KERNEL_PHASE``: they read 1/2 whatever a), a is the one of ``KERNEL_CHOICES`` whose fit
      explains P best (the pole's estimate unless another fits better by ``NEAR_END_SLACK``).
      With a sharp kernel (a <= ``SHARP_KERNEL``)
      a strip over two partial columns is not in its pixels (``box_profile``: (A (1 - o), A (L - 1 + o))
      fits every offset o, and the end j + 1 + r (1 - o) moves by up to r px): there the near end is taken
      where a strip starts, at the pole's axis (visible from it) or its edge (hidden up to it), the one
      that explains P better, unless neither explains it as well as the free fit (``NEAR_END_SLACK``).
    Images without a kernel estimate keep the centroid estimate (NaN geometry is Invalid elsewhere).
    """
    b = bin_factor(shadow.rows.shape[1])
    cols = bin_columns(np.nan_to_num(shadow.cov.sum(1, dtype=np.float64)), b)
    n, S = cols.shape
    pole_x, pole_width = pole_x / b, pole_width / b
    flip = side < 0
    prof = np.where(flip[:, None], cols[:, ::-1], cols)          # far end to the right
    with np.errstate(invalid="ignore"):
        end = (shadow.cx + side * shadow.dx / 2) / b             # fallback (no kernel, no ink)
    end_m = np.where(flip, S - end, end)
    peak = prof.max(1)
    above = prof >= 0.5 * peak[:, None]
    i0 = np.argmax(above, 1)
    i1 = S - 1 - np.argmax(above[:, ::-1], 1)
    usable = (peak > 0) & np.isfinite(side) & (side != 0)
    long = usable & (i1 - i0 + 1 > SHORT_STRIP)
    if long.any():
        level = plateau(prof[long])
        k = i1[long] - 2
        with np.errstate(divide="ignore", invalid="ignore"):
            end_m[long] = k + edge_integral(prof[long] / level[:, None], k, TAIL_INK)
    short = np.flatnonzero(usable & ~long & np.isfinite(kernel))
    if short.size:
        ink = prof[short] > 1e-3 * peak[short, None]
        first = np.argmax(ink, 1)
        w0 = np.clip(first - 2, 0, max(S - STRIP_WINDOW, 0))
        width = min(STRIP_WINDOW, S)
        win = prof[short[:, None], w0[:, None] + np.arange(width)[None, :]]
        inked = win.sum(1) > 0                   # unmixing noise can leave a window without net ink
        short, w0, win = short[inked], w0[inked], win[inked]
        for s0 in range(0, short.size, FIT_CHUNK):
            part = slice(s0, s0 + FIT_CHUNK)
            idx = short[part]
            fit = fit_boxes(win[part], kernel[idx], max_length=min(8.0, width))
            a, best_end, best_rms = kernel[idx].copy(), fit.edge + fit.length, fit.rms
            unsure = np.flatnonzero(~shown[idx])
            for choice in KERNEL_CHOICES if unsure.size else ():
                other = fit_boxes(win[part][unsure], np.full(unsure.size, choice), max_length=min(8.0, width))
                better = other.rms < best_rms[unsure] - NEAR_END_SLACK
                pick = unsure[better]
                a[pick], best_end[pick], best_rms[pick] = choice, (other.edge + other.length)[better], other.rms[better]
            best_rms = best_rms + NEAR_END_SLACK
            sharp = a <= SHARP_KERNEL
            if sharp.any():
                axis = np.where(flip[idx], S - pole_x[idx], pole_x[idx]) - w0[part]
                for near in (axis, axis + np.nan_to_num(pole_width[idx]) / 2):
                    ok = sharp & np.isfinite(near)
                    held = fit_boxes(win[part][ok], a[ok], max_length=min(8.0, width), edge=near[ok])
                    better = held.rms < best_rms[ok]
                    pick = np.flatnonzero(ok)[better]
                    best_end[pick] = (held.edge + held.length)[better]
                    best_rms[pick] = held.rms[better]
            end_m[idx] = w0[part] + best_end
    return b * np.where(flip, S - end_m, end_m)
