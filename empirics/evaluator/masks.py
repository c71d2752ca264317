"""Element masks and counts (Fig. 2 step 2): the pipeline's chunk state, colour labels per element, rims
merged, specks and pale blobs adopted."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from empirics.data.tasks import Shape, TaskSpec
from empirics.evaluator.colour import FAMILY_TOLERANCE, colour_fits, element_colour, membership, restore_chroma
from empirics.evaluator.geometry import Element
from empirics.evaluator.morphology import dilate, stack_images
from empirics.evaluator.reasons import Problem, Reason

BLANK_INK = 0.1             # an image whose strongest pixel has less ink (sum over RGB, 0..3) is blank
REGION_INK = 0.15           # pixels with more ink than this (sum over RGB) form the ink blobs
STRONG_INK = 0.6            # unlabelled pixels with this much ink far from every element: unexpected object
MERGE_RESIDUAL = 0.15       # a rim component is merged if its colour is explained to within 15 %


def min_pixels(S: int) -> int:
    """Components below ``2 (S/32)^2`` pixels of an S px image are specks, not elements (Fig. 2 step 2)."""
    return max(2, round(2 * (S / 32) ** 2))


def element_radius(S: int) -> int:
    """Radius (px) of an element's neighbourhood in an S px image: its colour, region and ink sums reach
    this far beyond its mask (blur and JPEG chroma subsampling move ink to neighbouring pixels)."""
    return 2 + S // 64


@dataclass
class ColourMask:
    """One element's colour mask in every image of a chunk (step 2 of the module docstring)."""

    comp_image: np.ndarray   # image index of each connected component
    comp_area: np.ndarray    # its area (px)
    comp_label: np.ndarray   # its label in ``labels``
    labels: np.ndarray       # (n, S, S) component label of each pixel
    primary: np.ndarray      # (n,) label of the largest component of >= min_px pixels (0: none; -1: a pale
                             # blob outside the colour labels, ``adopt_pale_blob``)
    count: np.ndarray        # (n,) number of such components (rims merged into other elements excluded)
    hard: np.ndarray         # (n, S, S) the primary component's pixels (plus the rims merged into it)
    colour: np.ndarray       # (n, 3) ink colour, luma level (``element_colour``); NaN if absent
    colour_full: np.ndarray  # (n, 3) ink colour, level of the ink projected on its direction


@dataclass
class Chunk:
    """A chunk of images passing through the pipeline ``label_elements`` -> ``cover`` -> ``assign`` ->
    ``measure_chunk``."""

    rgb: np.ndarray
    spec: TaskSpec
    reasons: list[list[Reason]]
    masks: list[ColourMask] = field(default_factory=list)
    labelled: np.ndarray | None = None      # (n, S, S) pixels of some colour family
    blank: np.ndarray | None = None         # (n,) images without ink
    coverage: list[np.ndarray] = field(default_factory=list)   # per element, (n, S, S)
    regions: list[np.ndarray] = field(default_factory=list)    # per group, (n, S, S)
    exact: list[np.ndarray] = field(default_factory=list)      # per group, (n,): pixels are exact colour mixes
    elements: list[Element] = field(default_factory=list)    # per element, its measurements (``measure_chunk``)

    def __post_init__(self):
        self.ink = 1.0 - self.rgb
        self.inkmag = self.ink.sum(-1)

    @property
    def n(self) -> int:
        return self.rgb.shape[0]

    @property
    def S(self) -> int:
        return self.rgb.shape[1]

    @property
    def min_px(self) -> int:
        return min_pixels(self.S)

    @property
    def radius(self) -> int:
        return element_radius(self.S)

    @property
    def groups(self) -> list[int]:
        return sorted({e.group for e in self.spec.elements})

    def members(self, group: int) -> list[int]:
        return [f for f, e in enumerate(self.spec.elements) if e.group == group]


def merge_rims(chunk: Chunk, i: int) -> None:
    """Merge extra components of image i that are anti-aliased rims of another element."""
    masks, ink = chunk.masks, chunk.ink
    for f, mask in enumerate(masks):
        if mask.count[i] <= 1:
            continue
        extra = mask.comp_label[(mask.comp_image == i) & (mask.comp_area >= chunk.min_px)
                                & (mask.comp_label != mask.primary[i])]
        for c in extra:
            pix = mask.labels[i] == c
            near = cv2.dilate(pix.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            inks = ink[i][pix]
            for g, other in enumerate(masks):
                if g == f or other.primary[i] == 0 or not (near & other.hard[i]).any():
                    continue
                d = other.colour[i]
                a = inks @ d / (d @ d)
                off = np.linalg.norm(inks - a[:, None] * d[None, :], axis=1)
                resid = off / (np.linalg.norm(inks, axis=1) + 1e-6)
                if np.median(resid) <= MERGE_RESIDUAL and 0.02 < np.median(a) <= 1.1:
                    mask.count[i] -= 1
                    other.hard[i] |= pix
                    break


def adopt_small_parts(chunk: Chunk, i: int, labelled: np.ndarray, best: np.ndarray) -> None:
    """A strip (rectangle) of image i with no component of ``min_px`` pixels takes its largest smaller
    one if that touches another element of its group (a shadow that shows one pixel beside its pole's
    foot): specks are ignored only where they stand alone."""
    masks, elements = chunk.masks, chunk.spec.elements
    for f, mask in enumerate(masks):
        if mask.count[i] != 0 or elements[f].shape is not Shape.RECT:
            continue                    # a speck is no disc or square of the task's sizes
        mates = [g for g, e in enumerate(elements)
                 if g != f and e.group == elements[f].group and masks[g].primary[i] != 0]
        if not mates:
            continue
        near = dilate(np.any([masks[g].hard[i] for g in mates], axis=0)[None], 1)[0]
        own = (mask.comp_image == i) & (mask.comp_area < chunk.min_px)
        touching = [(a, c) for a, c in zip(mask.comp_area[own], mask.comp_label[own])
                    if (near & (mask.labels[i] == c)).any()]
        if not touching:
            continue
        label = max(touching)[1]
        mask.primary[i], mask.count[i] = label, 1
        mask.hard[i] = mask.labels[i] == label
        others = dilate((labelled[i] & (best[i] != f))[None], 1)
        col, col_full = element_colour(chunk.ink[i:i + 1], mask.hard[i:i + 1], others, chunk.radius, both=True)
        mask.colour[i], mask.colour_full[i] = col[0], col_full[0]


def adopt_pale_blob(chunk: Chunk, i: int, labelled: np.ndarray) -> None:
    """A missing element of image i takes the one unlabelled ink blob whose colour, mixed with white,
    is a colour of its family (a bar thinner than a pixel of a dark, weakly saturated blue-green shows
    only pixels half white, whose saturation is below the family's floor).

    The blob's ink is its summed direction at its peak magnitude; it fits if some coverage a in
    (peak, 1] makes 1 - ink / a a colour of the element's family (``colour_fits``, with
    ``FAMILY_TOLERANCE``) and of no other family of the task. Only one blob and one missing element
    that it fits are accepted; anything else stays Invalid."""
    masks, elements, ink = chunk.masks, chunk.spec.elements, chunk.ink[i]
    missing = [f for f, m in enumerate(masks) if m.count[i] == 0]
    if not missing:
        return
    pale = (chunk.inkmag[i] >= REGION_INK) & ~dilate(labelled[i:i + 1], 1)[0]
    num, lab, stats, _ = cv2.connectedComponentsWithStats(pale.astype(np.uint8), connectivity=8)
    blobs = [j for j in range(1, num) if stats[j, cv2.CC_STAT_AREA] >= chunk.min_px
             and chunk.inkmag[i][lab == j].max() >= STRONG_INK]
    if len(blobs) != 1:
        return
    pix = lab == blobs[0]
    total = ink[pix].sum(0, dtype=np.float64)
    direction = total / max(np.linalg.norm(total), 1e-12)
    peak = direction * float((ink[pix] @ direction).max())
    fits = [f for f, e in enumerate(elements) if colour_fits(peak, e.family, thin=True, tol=FAMILY_TOLERANCE)]
    if len(fits) != 1 or fits[0] not in missing:
        return
    f = fits[0]
    masks[f].primary[i], masks[f].count[i] = -1, 1
    masks[f].hard[i] = pix
    others = dilate((labelled[i] & ~pix)[None], 1)
    col, col_full = element_colour(chunk.ink[i:i + 1], pix[None], others, chunk.radius, both=True)
    masks[f].colour[i], masks[f].colour_full[i] = col[0], col_full[0]
    labelled[i] |= pix


def label_elements(chunk: Chunk, tol: dict, restore: int = 0, adopt: bool = False) -> None:
    """Steps 1-2: colour-family labels, one mask per element, rims merged, counts checked (with
    ``adopt``, a missing element may take a speck that touches its group, ``adopt_small_parts``)."""
    n, S, elements = chunk.n, chunk.S, chunk.spec.elements
    seen = restore_chroma(chunk.ink, restore) if restore else chunk.rgb
    hsv = cv2.cvtColor(seen.reshape(n * S, S, 3), cv2.COLOR_RGB2HSV).reshape(n, S, S, 3)
    h, s, v = hsv[..., 0] * 0.5, hsv[..., 1] * 255.0, hsv[..., 2] * 255.0
    memb = np.stack([membership(h, s, v, e.family, tol) for e in elements])
    best = memb.argmax(0)
    labelled = memb.max(0) >= 0.5
    for f in range(len(elements)):
        mask = labelled & (best == f)
        num, lab, stats, _ = cv2.connectedComponentsWithStats(stack_images(mask, 1), connectivity=8,
                                                              ltype=cv2.CV_32S)
        lab = lab.reshape(n, S + 1, S)[:, :S]
        area = stats[1:, cv2.CC_STAT_AREA]
        img = stats[1:, cv2.CC_STAT_TOP] // (S + 1)
        ids = np.arange(1, num)
        keep = area >= chunk.min_px
        cnt = np.bincount(img[keep], minlength=n)
        prim = np.zeros(n, np.int64)
        if keep.any():
            order = np.lexsort((-area[keep], img[keep]))
            first = np.unique(img[keep][order], return_index=True)
            prim[first[0]] = ids[keep][order][first[1]]
        hard = (lab == prim[:, None, None]) & (prim[:, None, None] > 0)
        col, col_full = element_colour(chunk.ink, hard, dilate(labelled & (best != f), 1), chunk.radius,
                                        both=True)
        chunk.masks.append(ColourMask(img, area, ids, lab, prim, cnt, hard, col, col_full))
    for i in np.flatnonzero(np.any([m.count > 1 for m in chunk.masks], axis=0)):
        merge_rims(chunk, i)
    if adopt:
        for i in np.flatnonzero(np.any([m.count == 0 for m in chunk.masks], axis=0)):
            adopt_small_parts(chunk, i, labelled, best)
            adopt_pale_blob(chunk, i, labelled)
    chunk.labelled = labelled
    chunk.blank = chunk.inkmag.reshape(n, -1).max(1) < BLANK_INK
    for i in np.flatnonzero(chunk.blank):
        chunk.reasons[i].append(Reason(Problem.BLANK))
    for mask, e in zip(chunk.masks, elements):
        for i in np.flatnonzero(~chunk.blank & (mask.count == 0)):
            chunk.reasons[i].append(Reason(Problem.MISSING, e.label))
        for i in np.flatnonzero(mask.count > 1):
            chunk.reasons[i].append(Reason(Problem.TOO_MANY, e.plural, int(mask.count[i])))
