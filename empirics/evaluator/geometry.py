"""Element geometry (Fig. 2 step 3c): ``Element`` measurements from coverage; discs fitted with an edge-blurred
model (Levenberg-Marquardt), including discs cut by the border."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from empirics.data.tasks import Shape
from empirics.evaluator.morphology import plateau

BORDER_COVERAGE = 0.5       # an element whose coverage on a border pixel exceeds this is cut by the border
SHARP_EDGE = 0.45           # disc edge width (px, erf scale) up to which an image counts as unblurred
BLURRED_RIM = 1.4           # Task C: partial pixels per perimeter px above which a disc edge is blurred


@dataclass
class Element:
    """Measurements of one element per image, in pixels."""

    mass: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    dx: np.ndarray           # x-extent (rectangles) / diameter (discs)
    dy: np.ndarray
    r: np.ndarray
    touches: np.ndarray      # bool (n, 4): left, right, top, bottom
    fit_failed: np.ndarray
    rows: np.ndarray         # (n, S) coverage summed over x, per row
    cov: np.ndarray          # (n, S, S) coverage


def disc_fit(cov, weight, xs, ys, p0, iters: int = 40, scale: float = 1.0):
    """Levenberg-Marquardt fit of an edge-blurred disc amp * Phi((r - rho) / s) to coverage windows.

    cov, weight: (m, W, W); xs, ys: (m, W) pixel-centre coordinates of the window columns / rows;
    p0: (m, 4) initial (cx, cy, r, s) with amp = 1 fixed, or (m, 5) with a free amp. Returns the
    parameters and bool[m] convergence. The edge width s is kept in [0.15, 3] px x ``scale`` (S / 32 for an
    image of S px: an edge as soft as a 32 px render's, enlarged, is ``scale`` times wider in pixels).
    """
    m, k = p0.shape
    p = p0.astype(np.float64).copy()
    lam = np.full(m, 1e-2)
    X, Y = xs[:, None, :], ys[:, :, None]
    eye = np.eye(k)

    def amp(q):
        return q[:, 4, None, None] if k == 5 else 1.0

    def residuals(q):
        dxx, dyy = X - q[:, 0, None, None], Y - q[:, 1, None, None]
        rho = np.sqrt(dxx * dxx + dyy * dyy) + 1e-9
        z = (q[:, 2, None, None] - rho) / q[:, 3, None, None]
        return weight * (amp(q) * ndtr(z) - cov), dxx, dyy, rho, z

    res, dxx, dyy, rho, z = residuals(p)
    cost = np.einsum("nij,nij->n", res, res)
    for _ in range(iters):
        phi = weight * amp(p) * np.exp(-0.5 * z * z) / (math.sqrt(2 * math.pi) * p[:, 3, None, None])
        cols = [phi * dxx / rho, phi * dyy / rho, phi, -phi * z] + ([weight * ndtr(z)] if k == 5 else [])
        Jt = np.stack(cols, axis=1).reshape(m, k, -1)                       # (m, k, P)
        g = np.matmul(Jt, res.reshape(m, -1, 1))[..., 0]
        H = np.matmul(Jt, Jt.transpose(0, 2, 1))
        diag = np.einsum("nkk->nk", H) + 1e-12
        damped = H + lam[:, None, None] * np.einsum("nk,kl->nkl", diag, eye)
        # Degenerate windows (no coverage, overflowing damping) get no step instead of an exception.
        bad = ~(np.isfinite(damped).all((1, 2)) & np.isfinite(g).all(1))
        if bad.any():
            damped[bad], g[bad] = eye, 0.0
        try:
            step = -np.linalg.solve(damped, g[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = -np.matmul(np.linalg.pinv(damped), g[..., None])[..., 0]
        q = p + step
        q[:, 2] = np.maximum(q[:, 2], 0.3)
        q[:, 3] = np.clip(q[:, 3], 0.15 * scale, 3.0 * scale)
        if k == 5:
            q[:, 4] = np.clip(q[:, 4], 0.5, 2.0)
        res_q, dxx_q, dyy_q, rho_q, z_q = residuals(q)
        cost_q = np.einsum("nij,nij->n", res_q, res_q)
        better = cost_q < cost
        p = np.where(better[:, None], q, p)
        cost = np.where(better, cost_q, cost)
        lam = np.where(better, lam * 0.3, lam * 10.0)
        b = better[:, None, None]
        res, dxx, dyy, rho, z = (np.where(b, a1, a0) for a1, a0 in
                                 ((res_q, res), (dxx_q, dxx), (dyy_q, dyy), (rho_q, rho), (z_q, z)))
        if np.all(np.abs(step).max(1) < 1e-5):
            break
    npix = np.maximum(weight.reshape(m, -1).sum(1), 1.0)
    converged = np.isfinite(p).all(1) & (np.sqrt(cost / npix) < 0.2)
    return p, converged


def measure_element(cov: np.ndarray, shape: str, region: np.ndarray, radius: int,
             refine_level: bool = False) -> Element:
    """Sub-pixel measurements of one element from its coverage map (n, S, S)."""
    n, S, _ = cov.shape
    pos = np.arange(S) + 0.5
    cols = cov.sum(1, dtype=np.float64)     # (n, S) over x
    rows = cov.sum(2, dtype=np.float64)     # (n, S) over y
    mass = cols.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cx = cols @ pos / mass
        cy = rows @ pos / mass
        var_x = cols @ pos**2 / mass - cx**2
        var_y = rows @ pos**2 / mass - cy**2
    touches = np.stack([cov[:, :, 0].max(1), cov[:, :, -1].max(1), cov[:, 0, :].max(1), cov[:, -1, :].max(1)],
                       axis=1) > BORDER_COVERAGE
    fit_failed = np.zeros(n, bool)
    if shape in (Shape.RECT, Shape.SQUARE):
        tall = var_y >= var_x
        with np.errstate(divide="ignore", invalid="ignore"):
            dx = np.where(tall, plateau(rows), mass / plateau(cols))
            dy = np.where(tall, mass / dx, plateau(cols))
        r = np.full(n, np.nan)
    else:
        r = np.sqrt(np.maximum(mass, 0) / np.pi)
        cut = touches.any(1) & (mass > 0)
        whole = ~cut & (mass > 0)
        if refine_level:
            # The area gives the radius only as well as the element's ink level is known (JPEG
            # leaves the level of a small, low-luma disc uncertain by a few %): fit the level. A
            # sharp edge (partial pixels about one perimeter) needs no fit (disc_level trusts the
            # fit only for blurred edges).
            partial = ((cov > 0.05) & (cov < 0.95)).sum((1, 2))
            soft = whole & (partial > BLURRED_RIM * 2 * np.pi * np.maximum(r, 0.5))
            if soft.any():
                level, ok = disc_level(cov[soft], region[soft], cx[soft], cy[soft], r[soft])
                r = r.copy()
                r[soft] = np.where(ok, np.sqrt(np.maximum(mass[soft], 0) / (np.pi * level)), r[soft])
        if cut.any():
            fcx, fcy, fr, ok = fit_cut_discs(cov[cut], region[cut], touches[cut], cx[cut], cy[cut], radius)
            cx, cy, r = cx.copy(), cy.copy(), r.copy()
            cx[cut], cy[cut], r[cut] = fcx, fcy, fr
            fit_failed[np.flatnonzero(cut)[~ok]] = True
        dx = dy = 2 * r
    return Element(mass, cx, cy, dx, dy, r, touches, fit_failed, rows, cov)


def disc_level(cov, region, cx, cy, r0, iters: int = 8):
    """Level (amplitude) of whole discs by a fit of amp * Phi((r - |p - c|) / s) on a window.

    Levenberg-Marquardt over (cx, cy, r, s, amp) started from the moments; returns (amp, converged).
    """
    m, S, _ = cov.shape
    W = int(min(S, 2 * math.ceil(np.nanmax(r0) + 3)))
    oy = np.clip(np.round(cy - W / 2).astype(int), 0, S - W)
    ox = np.clip(np.round(cx - W / 2).astype(int), 0, S - W)
    ar = np.arange(W)
    n_idx = np.arange(m)[:, None, None]
    ri, ci = (oy[:, None] + ar)[:, :, None], (ox[:, None] + ar)[:, None, :]
    p0 = np.stack([cx, cy, r0, np.full(m, 0.45), np.ones(m)], axis=1)
    p, ok = disc_fit(cov[n_idx, ri, ci].astype(np.float64), region[n_idx, ri, ci].astype(np.float64),
                      ox[:, None] + ar + 0.5, oy[:, None] + ar + 0.5, p0, iters)
    # Sharp edges (box-filtered rendering: s ~ 0.4 px) have fully covered interior pixels whose luma
    # gives the level exactly; trust the fitted amplitude only as far as the edges are blurred.
    trust = np.clip((p[:, 3] - SHARP_EDGE) / 0.15, 0.0, 1.0)
    return 1.0 + trust * (p[:, 4] - 1.0), ok


def fit_cut_discs(cov, region, touches, cx, cy, radius):
    """Fit discs cut by the image border from their visible part (cropped windows)."""
    m, S, _ = cov.shape
    ys_any, xs_any = region.any(2), region.any(1)
    y0 = np.argmax(ys_any, 1)
    y1 = S - np.argmax(ys_any[:, ::-1], 1)
    x0 = np.argmax(xs_any, 1)
    x1 = S - np.argmax(xs_any[:, ::-1], 1)
    W = int(min(S, max((y1 - y0).max(), (x1 - x0).max())))
    oy = np.clip(y0, 0, S - W)
    ox = np.clip(x0, 0, S - W)
    ar = np.arange(W)
    ri, ci = (oy[:, None] + ar)[:, :, None], (ox[:, None] + ar)[:, None, :]
    n_idx = np.arange(m)[:, None, None]
    win = cov[n_idx, ri, ci].astype(np.float64)
    wt = region[n_idx, ri, ci].astype(np.float64)
    xs, ys = ox[:, None] + ar + 0.5, oy[:, None] + ar + 0.5
    # Initial guess: visible extents give the diameter along an uncut axis.
    mass = win.sum((1, 2))
    hard = win > 0.5
    wx = hard.any(1).sum(1).astype(float)
    wy = hard.any(2).sum(1).astype(float)
    r0 = np.maximum(np.maximum(wx, wy) / 2, np.sqrt(np.maximum(mass, 1) / np.pi))
    left, right, top, bottom = touches.T
    vis_x0 = np.where(hard.any(1), xs[:, :], np.inf).min(1) - 0.5
    vis_x1 = np.where(hard.any(1), xs[:, :], -np.inf).max(1) + 0.5
    vis_y0 = np.where(hard.any(2), ys[:, :], np.inf).min(1) - 0.5
    vis_y1 = np.where(hard.any(2), ys[:, :], -np.inf).max(1) + 0.5
    cx0 = np.where(left & ~right, vis_x1 - r0, np.where(right & ~left, vis_x0 + r0, cx))
    cy0 = np.where(top & ~bottom, vis_y1 - r0, np.where(bottom & ~top, vis_y0 + r0, cy))
    scale = max(1.0, S / 32)
    p0 = np.stack([cx0, cy0, r0, np.full(m, 0.45 * scale)], axis=1)
    p0 = np.where(np.isfinite(p0), p0, np.stack([cx, cy, r0, np.full(m, 0.45 * scale)], axis=1))
    p, ok = disc_fit(win, wt, xs, ys, p0, scale=scale)
    return p[:, 0], p[:, 1], p[:, 2], ok
