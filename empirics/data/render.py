"""Rendering of Tasks A-D (App. C) with exact box-filtered coverage, ``generate`` and ``degrade``.

The task specs, colour families, parameter samplers and rules are in ``empirics.data.tasks``; the
rendering model (pixel colour = white - sum_e coverage_e * (white - colour_e), discs integrated over
``DISC_SUBCOLUMNS`` sub-columns per pixel) is described in that module's docstring.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from empirics._checks import check_int, check_real
from empirics.data.tasks import ELEMENTS, SPECS, Task, sample_params

__all__ = ["DISC_SUBCOLUMNS", "rect_coverage", "disc_coverage", "element_coverages", "render", "TaskBatch", "generate",
           "degrade"]


# ----------------------------------------------------------------------------------------------
# Rendering: exact box-filtered coverage.

DISC_SUBCOLUMNS = 16


def _interval_coverage(lo: np.ndarray, hi: np.ndarray, size: int) -> np.ndarray:
    """Length of [lo, hi] inside each pixel [j, j+1): shape (m, size)."""
    j = np.arange(size, dtype=np.float64)
    return np.clip(np.minimum(hi[:, None], j + 1) - np.maximum(lo[:, None], j), 0.0, 1.0)


def _geometry(names, values, size):
    size = check_int("size", size, 1, 4096)
    arrays = [np.atleast_1d(np.asarray(v, float)) for v in values]
    for name, a in zip(names, arrays):
        if a.ndim != 1 or a.shape != arrays[0].shape or not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be a finite 1-D array shaped like the other coordinates, "
                             f"got shape {a.shape}")
    return arrays, size


def rect_coverage(x0, x1, y0, y1, size: int) -> np.ndarray:
    """Exact pixel coverage of axis-aligned rectangles [x0, x1] x [y0, y1]: (m, size, size)."""
    (x0, x1, y0, y1), size = _geometry(("x0", "x1", "y0", "y1"), (x0, x1, y0, y1), size)
    cx = _interval_coverage(x0, x1, size)
    cy = _interval_coverage(y0, y1, size)
    return cy[:, :, None] * cx[:, None, :]


def disc_coverage(cx, cy, r, size: int, subcolumns: int = DISC_SUBCOLUMNS) -> np.ndarray:
    """Pixel coverage of discs: midpoint rule over ``subcolumns`` per pixel in x, exact in y."""
    (cx, cy, r), size = _geometry(("cx", "cy", "r"), (cx, cy, r), size)
    subcolumns = check_int("subcolumns", subcolumns, 1, 256)
    if np.any(r < 0):
        raise ValueError("r must be >= 0")
    xs = (np.arange(size * subcolumns) + 0.5) / subcolumns
    half = np.sqrt(np.clip(r[:, None] ** 2 - (xs[None, :] - cx[:, None]) ** 2, 0.0, None))  # (m, S*ss)
    lo, hi = cy[:, None] - half, cy[:, None] + half
    j = np.arange(size, dtype=np.float64)[None, :, None]
    cov = np.clip(np.minimum(hi[:, None, :], j + 1) - np.maximum(lo[:, None, :], j), 0.0, 1.0)
    return cov.reshape(len(cx), size, size, subcolumns).mean(axis=3)


def element_coverages(task: Task, p: dict[str, np.ndarray], sl: slice, size: int) -> list[tuple[str, np.ndarray]]:
    """(element, coverage) of each element of images ``sl``, from the pixel parameters."""
    g = {k[:-3]: v[sl] for k, v in p.items() if k.endswith("_px")}
    if task is Task.A:
        half = g["pole_width"] / 2
        side = np.sign(g["shadow_end"] - g["pole_x"])
        foot = g["pole_x"] + side * half
        return [
            ("sun", disc_coverage(g["sun_x"], g["sun_y"], g["sun_radius"], size)),
            ("pole", rect_coverage(g["pole_x"] - half, g["pole_x"] + half, g["pole_top"], g["ground_y"],
                                   size)),
            ("shadow", rect_coverage(np.minimum(foot, g["shadow_end"]), np.maximum(foot, g["shadow_end"]),
                                     g["ground_y"] - g["shadow_thickness"], g["ground_y"], size)),
        ]
    if task is Task.B:
        out = []
        for e, left, w, h, yc in (("left", "l1", "left_width", "h1", "left_y"),
                                  ("right", "l2", "right_width", "h2", "right_y")):
            out.append((e, rect_coverage(g[left], g[left] + g[w], g[yc] - g[h] / 2, g[yc] + g[h] / 2, size)))
        return out
    if task is Task.C:
        return [(e, disc_coverage(g[f"{e}_x"], g[f"{e}_y"], g[f"r_{e}"], size)) for e in ("small", "large")]
    out = []
    for e in ("top", "bottom"):
        h = g[f"side_{e}"] / 2
        x, y = g[f"{e}_x"], g[f"{e}_y"]
        out.append((e, rect_coverage(x - h, x + h, y - h, y + h, size)))
    return out


def render(task, params: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Images (uint8 [N, size, size, 3], RGB, white background) from ``params`` in pixels.

    ``params`` needs the ``"<key>_px"`` geometry and the ``"<element>_{red,green,blue}"`` colours of
    ``sample_params``; edit them to draw controlled variants (e.g. a broken rule).
    """
    task = Task.parse(task)
    size = check_int("size", size, 16, 512)
    need = [f"{k}_px" for k in SPECS[task].lengths]
    need += [f"{e}_{c}" for e, _ in ELEMENTS[task] for c in ("red", "green", "blue")]
    missing = [k for k in need if k not in params]
    if missing:
        raise ValueError(f"params is missing {missing} for task {task.value}")
    n = len(np.asarray(params[need[0]]))
    arrays = {}
    for k in need:
        v = np.asarray(params[k], np.float64)
        if v.shape != (n,) or not np.all(np.isfinite(v)):
            raise ValueError(f"params[{k!r}] must be a finite float array of shape ({n},)")
        arrays[k] = v
    if n == 0:
        raise ValueError("params must describe at least one image")
    out = np.empty((n, size, size, 3), np.uint8)
    chunk = max(1, 2_000_000 // (size * size * DISC_SUBCOLUMNS))
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        ink = np.zeros((sl.stop - sl.start, size, size, 3))
        for element, cov in element_coverages(task, arrays, sl, size):
            rgb = np.stack([arrays[f"{element}_{c}"][sl] for c in ("red", "green", "blue")], axis=1) / 255.0
            ink += cov[..., None] * (1.0 - rgb)[:, None, None, :]
        out[sl] = np.clip(np.rint(255.0 * (1.0 - ink)), 0, 255).astype(np.uint8)
    return out


# ----------------------------------------------------------------------------------------------


@dataclass
class TaskBatch:
    """Images and ground truth of one task: ``images`` uint8 [N, H, W, 3] RGB, ``params`` float64[N]."""

    images: np.ndarray
    params: dict[str, np.ndarray]
    task: Task
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.task = Task.parse(self.task)
        imgs = np.asarray(self.images)
        if imgs.ndim != 4 or imgs.shape[3] != 3 or imgs.shape[1] != imgs.shape[2] or imgs.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N, S, S, 3], got {imgs.dtype} {imgs.shape}")
        for k, v in self.params.items():
            if np.shape(v) != (len(imgs),):
                raise ValueError(f"params[{k!r}] must have shape ({len(imgs)},), got {np.shape(v)}")
        self.images = imgs

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx) -> TaskBatch:
        if isinstance(idx, int | np.integer):
            idx = slice(int(idx), int(idx) + 1 if idx != -1 else None)
        params = {k: v[idx] for k, v in self.params.items()}
        return TaskBatch(self.images[idx], params, self.task, dict(self.meta))

    @property
    def x(self) -> np.ndarray:
        return self.params["x"]

    @property
    def y(self) -> np.ndarray:
        return self.params["y"]


def generate(task, n: int, size: int = 32, seed: int = 0, *, fine_factor: float | np.ndarray = 1.0,
             violate_coarse: bool = False) -> TaskBatch:
    """``n`` images of ``task`` (App. C) at ``size`` x ``size`` px with their ground truth.

    Reproducible: the same (task, size, seed) gives the same images, and image i does not depend
    on ``n``. ``fine_factor`` (in [0.5, 1.5], or per image as in ``sample_params``) scales y so that
    y/x = fine_factor * k; ``violate_coarse`` breaks the coarse rule (negative controls, module docstring).
    """
    params = sample_params(task, n, size, seed, fine_factor=fine_factor, violate_coarse=violate_coarse)
    task = Task.parse(task)
    per_image = np.ndim(fine_factor) > 0
    meta = {"task": task.value, "size": size, "seed": seed,
            "fine_factor": "per image: params ratio / k" if per_image else float(fine_factor),
            "violate_coarse": bool(violate_coarse)}
    return TaskBatch(render(task, params, size), params, task, meta)


def degrade(images: np.ndarray, blur_sigma: float = 0.5, jpeg_quality: int | None = 75) -> np.ndarray:
    """Gaussian blur (sigma in px; 0 = none) then JPEG re-encoding (OpenCV, 4:2:0), uint8 RGB in and out.

    Stand-in for the blur and compression artefacts of generated samples (robustness checks).
    """
    imgs = np.asarray(images)
    if imgs.ndim != 4 or imgs.shape[3] != 3 or imgs.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {imgs.dtype} {imgs.shape}")
    blur_sigma = check_real("blur_sigma", blur_sigma, 0.0, 10.0)
    if jpeg_quality is not None:
        jpeg_quality = check_int("jpeg_quality", jpeg_quality, 1, 100)
    out = np.empty_like(imgs)
    for i, img in enumerate(imgs):
        if blur_sigma > 0:
            img = cv2.GaussianBlur(img, (0, 0), sigmaX=blur_sigma, sigmaY=blur_sigma)
        if jpeg_quality is not None:
            ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            if not ok:  # pragma: no cover - OpenCV failure
                raise RuntimeError("JPEG encoding failed")
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
        out[i] = img
    return out
