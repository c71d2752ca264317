"""Mask and profile helpers shared by the evaluator's stages: dilation / erosion of image stacks, masked
medians, plateaus of box-like profiles and edge integrals."""

from __future__ import annotations

import cv2
import numpy as np


def stack_images(mask: np.ndarray, pad: int) -> np.ndarray:
    """(n, S, S) -> ((S + pad) n, S) uint8 with ``pad`` zero rows after each image."""
    n, s, _ = mask.shape
    out = np.zeros((n, s + pad, s), np.uint8)
    out[:, :s] = mask
    return out.reshape(n * (s + pad), s)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    n, s, _ = mask.shape
    k = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(stack_images(mask, radius), k).reshape(n, s + radius, s)[:, :s].astype(bool)


def erode(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 8 neighbours are all in ``mask`` (n, S, S); the image border counts as outside."""
    n, s, _ = mask.shape
    return cv2.erode(stack_images(mask, 1), np.ones((3, 3), np.uint8),
                     borderType=cv2.BORDER_CONSTANT, borderValue=0).reshape(n, s + 1, s)[:, :s].astype(bool)


def plateau(profile: np.ndarray) -> np.ndarray:
    """Plateau of (n, S) box-like profiles: median inside the >= half-max run minus one index each side."""
    n, s = profile.shape
    mx = profile.max(1)
    above = profile >= 0.5 * mx[:, None]
    i0 = np.argmax(above, 1)
    i1 = s - 1 - np.argmax(above[:, ::-1], 1)
    idx = np.arange(s)[None, :]
    inner = (idx > i0[:, None]) & (idx < i1[:, None])
    return masked_median(profile, inner, mx)


def distance_to(mask: np.ndarray, pad: int) -> np.ndarray:
    """Euclidean distance (px) of every pixel to ``mask`` (n, S, S), exact up to ``pad`` px."""
    n, S, _ = mask.shape
    inv = np.ones((n, S + pad, S), np.uint8)
    inv[:, :S][mask] = 0
    dist = cv2.distanceTransform(inv.reshape(n * (S + pad), S), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist.reshape(n, S + pad, S)[:, :S]


def masked_median(values: np.ndarray, mask: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """Median of ``values`` over ``mask`` per image (n, ...), ``empty`` where the mask is empty."""
    n = len(values)
    v = np.sort(np.where(mask, values, np.inf).reshape(n, -1), axis=1)
    k = mask.reshape(n, -1).sum(1)
    lo = np.take_along_axis(v, np.maximum((k - 1) // 2, 0)[:, None], 1)[:, 0]
    hi = np.take_along_axis(v, np.maximum(k // 2, 0)[:, None], 1)[:, 0]
    return np.where(k > 0, 0.5 * (lo + hi), empty)


def edge_integral(profile: np.ndarray, start: np.ndarray, stop: float = 0.5) -> np.ndarray:
    """Length of the run of a (n, S) coverage profile from row ``start`` on: the sum of the profile,
    clipped to [0, 1], up to one row past the first row below ``stop`` (the edge, and a blurred edge's
    tail); the rows further on hold only noise, which a longer sum would gather. An enlarged image
    (nearest-neighbour) repeats a partial end pixel over many rows: pass a lower ``stop`` to keep them."""
    n, S = profile.shape
    idx = np.arange(S)[None, :]
    p = np.clip(np.nan_to_num(profile), 0.0, 1.0)
    low = (p < stop) & (idx >= start[:, None])
    end = np.where(low.any(1), np.argmax(low, 1), S - 1) + 1
    return np.where((idx >= start[:, None]) & (idx <= end[:, None]), p, 0.0).sum(1)
