"""Image arrays as the evaluator reads them: float RGB in [0, 1], NHWC, non-finite pixels flagged."""

from __future__ import annotations

import math

import numpy as np


def as_float_rgb(images, value_range=None) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 [N, S, S, 3] in [0, 1] and a bool[N] of images with non-finite pixels.

    Accepts uint8 (0..255), uint16 (0..65535) and float arrays, NHWC or NCHW (channels-first when
    the second axis has 3 entries and the last has not), a single H x W x 3 image, and torch tensors.
    Grayscale (single-channel) and RGBA arrays are refused by name: the rules are read from colours.
    Floats: ``value_range=None`` reads the batch as [-1, 1] if any finite value is < -0.02, else as
    [0, 1]; pass ``value_range=(lo, hi)`` to map lo -> 0 and hi -> 1 explicitly. Values slightly out
    of range (generated samples) are clipped; non-finite pixels are set to white and flagged.
    """
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    arr = np.asarray(images)
    if arr.dtype == object or arr.dtype.kind not in "uif" or arr.dtype == np.bool_:
        raise ValueError(f"images must be a numeric array (uint8, uint16 or float), got dtype {arr.dtype}")
    shape = tuple(arr.shape)
    allowed = "expected RGB images (N, S, S, 3) or (N, 3, S, S), or one (S, S, 3) image"
    if arr.ndim == 3 and arr.shape[-1] == 3:
        arr = arr[None]
    if arr.ndim == 4 and arr.shape[-1] != 3 and arr.shape[1] == 3:
        arr = arr.transpose(0, 2, 3, 1)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        # Channel count as the layout suggests: (S, S) one grey image, (N, S, S) grey images,
        # (S, S, C) one image with C <= 4, (N, S, S, C) / (N, C, S, S) a batch (C the shorter axis).
        if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] > 4):
            channels = 1
        elif arr.ndim == 3:
            channels = arr.shape[-1]
        elif arr.ndim == 4:
            channels = min(arr.shape[1], arr.shape[-1])
        else:
            channels = None
        what = {1: ": single-channel (grayscale) images, but the rules are read from colours",
                2: ": 2 channels (grayscale with alpha?), but the rules are read from colours",
                4: ": 4 channels (RGBA?); drop or composite the alpha channel"}.get(channels, "")
        if channels is not None and not what:
            what = f": {channels} channels, not 3"
        raise ValueError(f"images have shape {shape}{what}; {allowed}")
    if arr.shape[0] == 0:
        raise ValueError(f"images is empty: shape {shape}, N = 0; give at least one image")
    if arr.shape[1] != arr.shape[2] or arr.shape[1] < 16:
        raise ValueError(f"images must be square and at least 16 x 16 px, "
                         f"got {arr.shape[1]} x {arr.shape[2]}")
    bad = np.zeros(arr.shape[0], bool)
    if value_range is not None:
        try:
            lo, hi = (float(v) for v in value_range)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"value_range must be None or (lo, hi), got {value_range!r}") from exc
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ValueError(f"value_range must be finite with hi > lo, got {value_range!r}")
    elif arr.dtype == np.uint8:
        lo, hi = 0.0, 255.0
    elif arr.dtype.kind in "ui":
        if arr.dtype == np.uint16:
            lo, hi = 0.0, 65535.0
        elif arr.min() >= 0 and arr.max() <= 255:
            lo, hi = 0.0, 255.0
        else:
            raise ValueError(f"integer images must be uint8/uint16 or within 0..255, got {arr.dtype} "
                             f"with range [{arr.min()}, {arr.max()}]; pass value_range=(lo, hi)")
    else:
        finite = np.isfinite(arr)
        bad = ~finite.reshape(arr.shape[0], -1).all(1)
        vals = arr[finite]
        if vals.size == 0:
            lo, hi = 0.0, 1.0
        else:
            vmin, vmax = float(vals.min()), float(vals.max())
            if vmin < -1.5 or vmax > 1.5:
                raise ValueError(f"float images must be in [0, 1] or [-1, 1], got values in "
                                 f"[{vmin:.3g}, {vmax:.3g}]; "
                                 "pass value_range=(lo, hi) for another range")
            lo, hi = (-1.0, 1.0) if vmin < -0.02 else (0.0, 1.0)
    out = (arr.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)
    if arr.dtype.kind == "f":
        out[~np.isfinite(out)] = 1.0
    np.clip(out, 0.0, 1.0, out=out)
    return np.ascontiguousarray(out), bad
