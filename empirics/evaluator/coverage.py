"""Coverage (Fig. 2 step 3a/3b): each element's soft coverage, unmixed into the colours of its group, and the
assignment of unlabelled ink (unexpected objects)."""

from __future__ import annotations

import cv2
import numpy as np

from empirics.evaluator.colour import EXACT_MIX, LUMA, span_residual
from empirics.evaluator.masks import REGION_INK, STRONG_INK, Chunk
from empirics.evaluator.morphology import dilate, distance_to, stack_images
from empirics.evaluator.reasons import Problem, Reason

MIN_COLOUR_ANGLE_SIN = 0.35  # touching elements are unmixed jointly if their inks differ by > ~20 degrees


def shares(ink: np.ndarray, colours: list, hards: list, radius: int) -> np.ndarray:
    """Share (2, n, S, S) of each pixel's ink that belongs to each of two touching elements.

    Joint least squares of the pixel's ink on both element inks (clipped at 0, weighted by their
    luma) when the inks are well apart; otherwise (nearly collinear inks, e.g. a desaturated blue
    pole next to a grey shadow) the pixel goes wholly to the element whose colour mask is nearest.
    """
    n, S = ink.shape[:2]
    D = np.stack([np.where(np.isfinite(c), c, 1.0) for c in colours], axis=2)      # (n, 3, 2)
    d0, d1 = D[:, :, 0], D[:, :, 1]
    sin = np.linalg.norm(np.cross(d0, d1), axis=1) / (np.linalg.norm(d0, axis=1) * np.linalg.norm(d1, axis=1))
    G = np.einsum("nck,ncl->nkl", D, D)
    G += 1e-9 * np.eye(2)[None] * np.trace(G, axis1=1, axis2=2)[:, None, None]
    P = np.linalg.solve(G, D.transpose(0, 2, 1))                                     # (n, 2, 3)
    luma = D.transpose(0, 2, 1) @ LUMA.astype(np.float64)                            # (n, 2)
    W = (P * luma[:, :, None]).astype(np.float32)
    parts = np.clip(np.matmul(W, ink.reshape(n, -1, 3).transpose(0, 2, 1)), 0, None)  # (n, 2, S*S)
    tot = parts.sum(1, keepdims=True)
    share = np.where(tot > 1e-4, parts / np.maximum(tot, 1e-4), np.float32(0.5)).reshape(n, 2, S, S)
    split = ~(sin >= MIN_COLOUR_ANGLE_SIN)
    if split.any():
        # Nearly collinear inks are still unmixed jointly when the pixels lie in their span (clean
        # or only blurred images); when they do not (JPEG), the ill-conditioned split is replaced.
        near = dilate(hards[0][split] | hards[1][split], 1)
        flat = ink[split]
        rest = span_residual(flat, D[split])
        off_span = np.where(near, rest, 0).sum((1, 2)) / np.maximum(near.sum((1, 2)), 1)
        split[np.flatnonzero(split)[off_span <= EXACT_MIX]] = False
    if split.any():
        d_0 = distance_to(hards[0][split], radius + 1)
        d_1 = distance_to(hards[1][split], radius + 1)
        near0 = (d_0 < d_1) | ((d_0 == d_1) & (share[split, 0] >= 0.5))
        share[split, 0] = near0
        share[split, 1] = ~near0
    return share.transpose(1, 0, 2, 3)


def cover(chunk: Chunk) -> None:
    """Step 3a: each group's region and each element's coverage (linear unmixing within its group)."""
    n, S, radius, ink, masks = chunk.n, chunk.S, chunk.radius, chunk.ink, chunk.masks
    luma_ink = ink @ LUMA
    chunk.coverage = [None] * len(masks)
    # An element's region is the whole ink blob holding its colour mask (so parts whose colour was
    # washed out still count), widened by the blur radius.
    _, blobs = cv2.connectedComponents(stack_images(chunk.inkmag >= REGION_INK, 1), connectivity=8, ltype=cv2.CV_32S)
    blobs = blobs.reshape(n, S + 1, S)[:, :S]
    for g in chunk.groups:
        members = chunk.members(g)
        core = np.any([masks[f].hard for f in members], axis=0)
        ids = np.where(core, blobs, 0).max((1, 2))
        blob = (blobs == ids[:, None, None]) & (ids[:, None, None] > 0)
        chunk.regions.append(dilate(core, radius) | dilate(blob, 1))
        # Where the pixels are exact mixes of the element colours and white (rendered images), the
        # coverage is the least-squares unmixing of all three channels (best signal). Otherwise
        # (blur, JPEG) it is the pixel's luma ink (full resolution even in JPEG) over the element's
        # luma level, shared between touching elements by their colours.
        D = np.stack([np.where(np.isfinite(masks[f].colour), masks[f].colour, 1.0) for f in members], axis=2)
        D_full = np.stack([np.where(np.isfinite(masks[f].colour_full), masks[f].colour_full, 1.0)
                           for f in members], 2)
        near = dilate(core, 1)
        off_span = np.where(near, span_residual(ink, D), 0).sum((1, 2)) / np.maximum(near.sum((1, 2)), 1)
        exact = off_span <= EXACT_MIX
        chunk.exact.append(exact)
        G = np.einsum("nck,ncl->nkl", D_full, D_full) + 1e-12 * np.eye(len(members))[None]
        P = np.linalg.solve(G, D_full.transpose(0, 2, 1)).astype(np.float32)          # (n, K, 3)
        unmixed = np.matmul(P, ink.reshape(n, -1, 3).transpose(0, 2, 1)).reshape(n, len(members), S, S)
        levels = D.transpose(0, 2, 1) @ LUMA.astype(np.float64)                      # (n, K)
        share = shares(ink, [masks[f].colour for f in members], [masks[f].hard for f in members], radius) \
            if len(members) == 2 else [None]
        for j, f in enumerate(members):
            by_luma = luma_ink / np.float32(levels[:, j])[:, None, None]
            if share[j] is not None:
                by_luma = by_luma * share[j]
            chunk.coverage[f] = np.where(exact[:, None, None], unmixed[:, j], by_luma)


def assign(chunk: Chunk) -> None:
    """Step 3b: a pixel in two groups' regions goes to the group whose colours explain it best; ink
    far from every element is an unexpected object."""
    groups, regions, ink = chunk.groups, chunk.regions, chunk.ink
    final = [r.copy() for r in regions]
    overlap = np.sum(regions, axis=0) > 1
    clash = np.flatnonzero(overlap.any((1, 2)))
    if clash.size:
        resid = np.stack([span_residual(ink[clash], np.stack([chunk.masks[f].colour[clash]
                                                               for f in chunk.members(g)], 2))
                          for g in groups])
        resid = np.where(np.stack([r[clash] for r in regions]), resid, np.inf)
        owner = np.argmin(resid, axis=0)
        for j in range(len(groups)):
            final[j][clash] = regions[j][clash] & (owner == j)
    any_region = np.any(regions, axis=0)
    chunk.regions = final
    for f, e in enumerate(chunk.spec.elements):
        chunk.coverage[f] = np.where(final[groups.index(e.group)], chunk.coverage[f], np.float32(0))
    stray = (chunk.inkmag >= STRONG_INK) & ~chunk.labelled & ~any_region
    n_stray = stray.sum((1, 2))
    for i in np.flatnonzero(~chunk.blank & (n_stray >= chunk.min_px)):
        chunk.reasons[i].append(Reason(Problem.UNEXPECTED_COLOUR))
