"""Cutting the centred cell out of a single-cell image (PBC style) so it can be composited.

A library image shows one cell in its centre, surrounded by red cells and pale glass.
The cut must keep the whole cell, including a pale cytoplasm that is barely darker
than the glass, and drop the red cells that touch it. Colour alone does not separate
them reliably (eosinophil granules are as red as a red cell), so the decision is made
in optical density (OD, absorbance relative to the image's own glass), against a
colour model of the red cells learnt from the same image's periphery:

1. the nucleus is the dense, strongly stained blob nearest the centre (lobes of one
   nucleus are merged; a second cell's nucleus is kept out);
2. a pixel belongs to the cell if it absorbs light (not glass) and its OD is far, in
   Mahalanobis distance, from the red-cell model of that image;
3. the region grown from the nucleus is split from any second cell by a watershed,
   closed, hole-filled and smoothed.

Everything is pure numpy/OpenCV on one image; no state, no I/O.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from drivers.camera.base import BgrImage

_log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
MaskArray = npt.NDArray[np.uint8]

GLASS_PERCENTILE = 90.0
"""Brightness percentile above which a pixel is taken as clear glass (background)."""
MIN_OD = 1e-3
GLASS_OD_SUM = 0.10
"""Summed B+G+R optical density below which a pixel is glass, not a cell."""
NUCLEUS_OD_GREEN = 0.45
"""Green-channel OD above which a pixel is nuclear chromatin (or a platelet's granulomere)."""
MIN_NUCLEUS_PX = 12
"""Smallest nucleus blob kept (px); smaller ones are noise or granules."""
OTHER_NUCLEUS_PX = 60
"""A distant blob at least this big is another cell's nucleus and is kept out of the mask."""
LOBE_GAP_PX = 9
"""Blobs within this distance of the central nucleus are lobes of the same nucleus."""
PERIPHERY_FRACTION = 0.36
"""Pixels farther than this fraction of the image size from the centre teach the red-cell model."""
RED_CELL_OD_FLOOR = 0.02
"""Least spread (OD) of the red-cell colour model in every direction, so red cells that
all have exactly the same colour (rendered ones) still have a usable model."""
RED_CELL_DISTANCE = 2.2
"""Mahalanobis distance from the red-cell model beyond which a pixel is not a red cell."""
SMOOTH_KERNEL_PX = 5
NEIGHBOUR_MIN_RADIUS_PX = 10
"""A distance-transform peak at least this deep (px) is a separate round object (red cell)."""
TWIN_CORE_RADIUS_PX = 15.0
"""Nucleus cores at least this thick (px) are candidates for two separate cells."""
TWIN_SEPARATION = 0.9
"""Cores farther apart than this times the sum of their radii belong to two cells."""
TWIN_NECK = 0.5
"""...and are joined by a neck thinner than this times the smaller radius."""
RAY_COUNT = 180
"""Directions sampled to find where the cell meets the glass."""
ROUNDNESS_SLACK = 1.08
"""A boundary point farther than this times the fitted ellipse is a touching neighbour."""


class SegmentationFailed(ValueError):
    """No cell could be found in the image's centre."""


@dataclass(frozen=True)
class CellMask:
    """The cut-out of the centred cell of one image."""

    mask: MaskArray
    """H x W, 1 inside the cell, 0 outside."""
    nucleus: MaskArray
    """H x W, 1 on the nucleus (or the dense part of a platelet)."""
    glass_bgr: tuple[float, float, float]
    """Colour of clear glass in the source image (B, G, R), the reference for its OD."""


def glass_colour(image: BgrImage) -> npt.NDArray[np.float32]:
    """The B, G, R value of clear glass: the median of the brightest pixels."""
    gray = image.mean(axis=2)
    bright = gray >= np.percentile(gray, GLASS_PERCENTILE)
    return np.array([np.median(image[..., c][bright]) for c in range(3)], dtype=np.float32).clip(
        1.0, 255.0
    )


def optical_density(image: BgrImage, glass: npt.NDArray[np.float32]) -> FloatArray:
    """Per-channel OD = -log10(I / I_glass), >= 0 where the pixel absorbs light."""
    ratio = np.clip(image.astype(np.float32) / glass, MIN_OD, None)
    od: FloatArray = (-np.log10(ratio)).astype(np.float32)
    return od


def _nucleus(od: FloatArray) -> tuple[MaskArray, MaskArray]:
    """The central nucleus (all its lobes) and the nuclei of any other cells."""
    h, w = od.shape[:2]
    dense = (cv2.GaussianBlur(od[..., 1], (0, 0), 1.0) > NUCLEUS_OD_GREEN).astype(np.uint8)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(dense, connectivity=8)
    if n <= 1:
        raise SegmentationFailed("no stained nucleus in the image")
    cx, cy = w / 2.0, h / 2.0
    big = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= MIN_NUCLEUS_PX]
    if not big:
        raise SegmentationFailed("no nucleus large enough")
    # The cell is centred: pick the blob closest to the centre, weighting bigger blobs.
    main = min(
        big,
        key=lambda i: (
            np.hypot(centroids[i][0] - cx, centroids[i][1] - cy)
            / np.sqrt(stats[i, cv2.CC_STAT_AREA])
        ),
    )
    if np.hypot(centroids[main][0] - cx, centroids[main][1] - cy) > 0.3 * min(h, w):
        raise SegmentationFailed("no nucleus near the image centre")
    nucleus = (labels == main).astype(np.uint8)
    other = np.zeros_like(nucleus)
    # Lobes: blobs close to what is already nucleus (repeat so chains of lobes join).
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * LOBE_GAP_PX + 1,) * 2)
    remaining = set(big) - {main}
    changed = True
    while changed and remaining:
        changed = False
        near = cv2.dilate(nucleus, kernel)
        for i in sorted(remaining):
            if near[labels == i].any():
                nucleus[labels == i] = 1
                remaining.discard(i)
                changed = True
    for i in remaining:
        if stats[i, cv2.CC_STAT_AREA] >= OTHER_NUCLEUS_PX:
            other[labels == i] = 1
    _refuse_two_nuclei(nucleus)
    return nucleus, other


def _refuse_two_nuclei(nucleus: MaskArray) -> None:
    """Refuse a picture of two touching cells, whose nuclei merge into one blob.

    Two round nuclei that touch have distance-transform peaks about as far apart as the
    sum of their radii; the lobes of one nucleus overlap much more than that.
    """
    dist = cv2.distanceTransform(_filled(nucleus), cv2.DIST_L2, 5)
    peaks = (dist >= cv2.dilate(dist, np.ones((5, 5), np.uint8))) & (dist >= TWIN_CORE_RADIUS_PX)
    n, labels, _, centroids = cv2.connectedComponentsWithStats(peaks.astype(np.uint8))
    cores = [(centroids[i], float(dist[labels == i].max())) for i in range(1, n)]
    for a in range(len(cores)):
        for b in range(a + 1, len(cores)):
            (pa, ra), (pb, rb) = cores[a], cores[b]
            if np.hypot(pa[0] - pb[0], pa[1] - pb[1]) <= TWIN_SEPARATION * (ra + rb):
                continue
            t = np.linspace(0.0, 1.0, 64)
            xs = np.rint(pa[0] + t * (pb[0] - pa[0])).astype(np.intp)
            ys = np.rint(pa[1] + t * (pb[1] - pa[1])).astype(np.intp)
            if dist[ys, xs].min() < TWIN_NECK * min(ra, rb):
                raise SegmentationFailed("two cells touch in the image centre")


def _red_cell_distance(od: FloatArray, absorbing: npt.NDArray[np.bool_]) -> FloatArray:
    """Mahalanobis distance of each pixel's OD from this image's red cells."""
    h, w = od.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(xx - w / 2.0, yy - h / 2.0)
    sample = od[(r > PERIPHERY_FRACTION * min(h, w)) & absorbing]
    if len(sample) < 200:
        # Hardly any red cells around: nothing to exclude.
        return np.full((h, w), np.inf, dtype=np.float32)
    mean = sample.mean(axis=0)
    cov = np.cov(sample.T) + np.eye(3) * RED_CELL_OD_FLOOR**2
    inv = np.linalg.inv(cov).astype(np.float32)
    d = od - mean.astype(np.float32)
    dist2 = np.einsum("hwi,ij,hwj->hw", d, inv, d)
    out: FloatArray = np.sqrt(np.maximum(dist2, 0)).astype(np.float32)
    return out


def _component_of(mask: MaskArray, seed: MaskArray) -> MaskArray:
    """The connected parts of ``mask`` that touch ``seed``."""
    _, labels = cv2.connectedComponents(mask, connectivity=8)
    keep = np.unique(labels[(seed > 0) & (mask > 0)])
    keep = keep[keep > 0]
    out: MaskArray = np.isin(labels, keep).astype(np.uint8)
    return out


def _filled(mask: MaskArray) -> MaskArray:
    """``mask`` with its holes (vacuoles, pale centres) filled."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros_like(mask)
    cv2.drawContours(out, contours, -1, 1, thickness=-1)
    return out


def _split_touching(blob: MaskArray, nucleus: MaskArray) -> MaskArray:
    """The part of ``blob`` that is the cell, with touching round neighbours split off.

    Every round object (a red cell, the cell itself) has its own peak in the distance
    transform; a watershed from those peaks and from the nucleus gives each its basin.
    """
    dist = cv2.distanceTransform(blob, cv2.DIST_L2, 5)
    peaks = (dist >= cv2.dilate(dist, np.ones((7, 7), np.uint8))) & (
        dist >= NEIGHBOUR_MIN_RADIUS_PX
    )
    near_nucleus = cv2.dilate(nucleus, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (11, 11)))
    peaks &= near_nucleus == 0
    if not peaks.any():
        return blob
    _, peak_labels = cv2.connectedComponents(peaks.astype(np.uint8))
    markers = np.zeros(blob.shape, np.int32)
    markers[peak_labels > 0] = peak_labels[peak_labels > 0] + 2
    markers[blob == 0] = 2
    markers[nucleus > 0] = 1
    relief = 255 - np.clip(dist * (255.0 / max(float(dist.max()), 1.0)), 0, 255).astype(np.uint8)
    cv2.watershed(cv2.cvtColor(relief, cv2.COLOR_GRAY2BGR), markers)
    out: MaskArray = ((markers == 1) & (blob > 0)).astype(np.uint8)
    return out


def _star_outline(blob: MaskArray, nucleus: MaskArray) -> MaskArray:
    """The cell as seen from its nucleus: rays out to the glass, neighbours cut off."""
    h, w = blob.shape
    ys, xs = np.nonzero(nucleus)
    cx, cy = float(xs.mean()), float(ys.mean())
    theta = np.linspace(0, 2 * np.pi, RAY_COUNT, endpoint=False)
    steps = np.arange(0, max(h, w), 0.5, dtype=np.float32)
    px = cx + np.cos(theta)[:, None] * steps[None, :]
    py = cy + np.sin(theta)[:, None] * steps[None, :]
    inside = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
    xi = np.clip(np.rint(px), 0, w - 1).astype(np.intp)
    yi = np.clip(np.rint(py), 0, h - 1).astype(np.intp)
    on = (blob[yi, xi] > 0) & inside
    on[:, 0] = True
    first_off = np.argmax(~on, axis=1)
    first_off[on.all(axis=1)] = len(steps) - 1
    radius = steps[first_off].astype(np.float64)
    # Robust round outline: start from the median radius, refit on the points that fit it.
    inlier = radius <= 1.2 * np.median(radius) + 2
    fitted = np.full_like(radius, np.median(radius))
    for _ in range(3):
        if inlier.sum() < 12:
            break
        pts = np.stack([cx + np.cos(theta) * radius, cy + np.sin(theta) * radius], axis=1)
        (ex, ey), (ea, eb), angle = cv2.fitEllipse(pts[inlier].astype(np.float32))
        fitted = _ellipse_radius(theta, cx, cy, ex, ey, ea / 2, eb / 2, np.deg2rad(angle))
        inlier = radius <= ROUNDNESS_SLACK * fitted + 2
    limited = np.minimum(radius, ROUNDNESS_SLACK * fitted + 2)
    poly = np.stack([cx + np.cos(theta) * limited, cy + np.sin(theta) * limited], axis=1)
    out = np.zeros_like(blob)
    cv2.fillPoly(out, [np.rint(poly).astype(np.int32)], 1)
    out &= blob
    return out


def _ellipse_radius(
    theta: npt.NDArray[np.float64],
    cx: float,
    cy: float,
    ex: float,
    ey: float,
    a: float,
    b: float,
    phi: float,
) -> npt.NDArray[np.float64]:
    """Distance from (cx, cy) along each direction to the ellipse ((ex, ey), a, b, phi)."""
    # Solve |p0 + t d| on the ellipse for t > 0, in the ellipse's own frame.
    dx, dy = np.cos(theta), np.sin(theta)
    c, s = np.cos(phi), np.sin(phi)
    ox, oy = (cx - ex) * c + (cy - ey) * s, -(cx - ex) * s + (cy - ey) * c
    ux, uy = dx * c + dy * s, -dx * s + dy * c
    a2, b2 = max(a, 1.0) ** 2, max(b, 1.0) ** 2
    qa = ux**2 / a2 + uy**2 / b2
    qb = 2 * (ox * ux / a2 + oy * uy / b2)
    qc = ox**2 / a2 + oy**2 / b2 - 1
    disc = np.maximum(qb**2 - 4 * qa * qc, 0)
    t = (-qb + np.sqrt(disc)) / (2 * qa)
    out: npt.NDArray[np.float64] = np.maximum(t, 1.0)
    return out


def segment_cell(image: BgrImage) -> CellMask:
    """Mask of the cell centred in ``image`` (a PBC-style single-cell picture).

    Raises:
        SegmentationFailed: there is no stained cell near the centre.
    """
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 32:
        raise SegmentationFailed(f"expected a colour image of at least 32x32, got {image.shape}")
    glass = glass_colour(image)
    od = optical_density(image, glass)
    smooth = np.asarray(cv2.GaussianBlur(od, (0, 0), 1.0), np.float32)
    nucleus, other = _nucleus(smooth)
    absorbing = smooth.sum(axis=2) > GLASS_OD_SUM
    distance = _red_cell_distance(smooth, absorbing)
    candidate = (absorbing & (distance > RED_CELL_DISTANCE)).astype(np.uint8)
    candidate |= nucleus
    candidate[cv2.dilate(other, np.ones((3, 3), np.uint8)) > 0] = 0
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (SMOOTH_KERNEL_PX,) * 2)
    # Thin bridges (a red cell's rim touching the cytoplasm) are cut by the opening.
    candidate = np.asarray(cv2.morphologyEx(candidate, cv2.MORPH_OPEN, kernel), np.uint8)
    candidate |= nucleus
    # Split from any second cell: watershed between the two nuclei over the candidate.
    if other.any():
        markers = np.zeros(candidate.shape, np.int32)
        markers[candidate == 0] = 3
        markers[other > 0] = 2
        markers[nucleus > 0] = 1
        cv2.watershed(
            cv2.cvtColor(
                np.clip(smooth[..., 1] * 400, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR
            ),
            markers,
        )
        candidate = ((markers == 1) & (candidate > 0)).astype(np.uint8)
    region = _component_of(candidate, nucleus)
    # Pale cytoplasm with the red cells' colour (neutrophils) is found by its outline instead:
    # the cell ends where the glass begins, except where a neighbour touches it, and those
    # directions are recognised as sticking out of the cell's roundish outline.
    blob = _component_of(absorbing.astype(np.uint8) | nucleus, nucleus)
    blob[cv2.dilate(other, kernel) > 0] = 0
    region |= _star_outline(_split_touching(blob, nucleus), nucleus)
    region = np.asarray(cv2.morphologyEx(region, cv2.MORPH_CLOSE, kernel), np.uint8)
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(region)
    cv2.drawContours(filled, contours, -1, 1, thickness=-1)
    filled |= nucleus
    filled = _split_touching(filled, nucleus) | nucleus
    b, g, r = (float(v) for v in glass)
    return CellMask(mask=filled, nucleus=nucleus, glass_bgr=(b, g, r))
