"""Stain and colour normalisation of cell crops, shared by training and the runtime.

Smears from different labs differ in stain chemistry (May-Grünwald-Giemsa, Wright,
Leishman), staining time, illumination and camera colour response. A classifier trained
on one lab's colours fails on another's, so every crop is mapped to one reference
appearance before the network sees it. The training script imports this module and
applies the same functions to its (augmented) crops, so there is no train/serve skew.

Methods (chosen by the model card's ``input.normalization.stain.method``):

``macenko``
    The background (brightest pixels) is taken as the illumination white, so camera
    white balance and lamp colour drop out. In optical density (OD, Beer-Lambert)
    space two stain vectors are estimated per crop (Macenko et al. 2009: extreme angles
    in the plane of the two main OD directions); the nuclear (azure/methylene-blue,
    absorbs red light) and eosin (red cells, granules) vectors are told apart by their
    red absorbance. Each pixel's two stain amounts are rescaled so their 99th
    percentiles match the reference, and the crop is re-rendered with the reference
    stain vectors. Crops too pale to estimate stains keep the reference vectors.
``reinhard``
    Per-channel mean and standard deviation in CIE L*a*b* over the whole crop are
    matched to the reference (Reinhard et al. 2001).
``background``
    The background colour is taken as the illumination white (as for ``macenko``) and
    the crop's optical density is scaled by one factor so that the median total density
    of its stained pixels (mostly red cells and the cell itself) matches the reference; the crop is re-rendered under the reference white. This
    removes lamp, camera and overall staining-intensity differences but keeps each
    stain's hue, which the training augmentation varies instead.
``twopoint``
    Two anchor points per crop, both robust to the crop's content: the background
    (brightest pixels) is the illumination white, and the mean optical density of the
    darkest stained pixels (the top ``DARK_PERCENTILE`` of total density: the nucleus
    of every white cell, the granules of a basophil) is the chromatic dark level. Each
    channel's optical density is scaled so the dark level lands on the reference's
    (a diagonal map in OD space: it also turns a blue-violet nucleus into the
    reference's purple), and the crop is re-rendered under the reference white.
    Unlike ``reinhard``, whose whole-crop statistics change with what the crop holds
    (a small lymphocyte and a big monocyte get different corrections), both anchors
    are the same kind of pixel in every white-cell crop.
``none``
    Only scaled to [0, 1].

All functions take RGB uint8 crops, N x H x W x 3 (or H x W x 3), and return float32
RGB in [0, 1] of the same shape. numpy and OpenCV only: the agent never imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

_log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
UInt8Array = npt.NDArray[np.uint8]

Method = Literal["none", "reinhard", "macenko", "background", "twopoint"]
METHODS: tuple[Method, ...] = ("none", "reinhard", "macenko", "background", "twopoint")

BACKGROUND_PERCENTILE = 90.0
"""Pixels brighter than this percentile of a crop's brightness are its background."""
MIN_WHITE = 80.0
"""A background darker than this (0-255) is not background: the crop is all cell."""
OD_TISSUE_THRESHOLD = 0.15
"""Total optical density below which a pixel is background, not stain (Macenko's beta)."""
ANGLE_PERCENTILE = 1.0
"""Robust extremes of the stain angle distribution (Macenko's alpha, percent)."""
CONCENTRATION_PERCENTILE = 99.0
OD_PERCENTILE = 50.0
"""``background``: percentile of the stained pixels' total density matched to the reference."""
DARK_PERCENTILE = 98.0
"""``twopoint``: pixels whose total density is above this percentile form the dark level."""
MIN_DARK_OD = 0.05
"""``twopoint``: a channel whose dark level is below this OD is not rescaled (no stain)."""
MAX_CHANNEL_GAIN = 3.0
"""``twopoint``: per-channel OD scale factors are kept within [1/this, this]."""
MIN_TISSUE_PIXELS = 64
ESTIMATION_STRIDE = 2
"""Stain statistics are estimated on every 2nd pixel in each direction (4x faster)."""
EPS = 1e-6


@dataclass(frozen=True)
class StainReference:
    """The appearance every crop is mapped to (fitted on the training set)."""

    method: Method
    stains: tuple[tuple[float, float, float], tuple[float, float, float]] = (
        (0.0, 0.0, 0.0),
        (0.0, 0.0, 0.0),
    )
    """Macenko: unit OD vectors (R, G, B) of the nuclear and the eosin stain."""
    max_concentrations: tuple[float, float] = (0.0, 0.0)
    """Macenko: 99th-percentile amount of each stain."""
    white: tuple[float, float, float] = (255.0, 255.0, 255.0)
    """Macenko: RGB (0-255) the background is rendered as."""
    od_level: float = 1.0
    """Background: the reference median total optical density of stained pixels."""
    dark_od: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Twopoint: reference optical density (R, G, B) of the darkest stained pixels."""
    lab_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Reinhard: L*a*b* mean (OpenCV float scale: L 0-100, a and b about -127..127)."""
    lab_std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def to_spec(self) -> dict[str, Any]:
        """The JSON-able form stored in the model card."""
        spec: dict[str, Any] = {"method": self.method}
        if self.method == "macenko":
            spec.update(
                stains=[list(v) for v in self.stains],
                max_concentrations=list(self.max_concentrations),
                white=list(self.white),
                background_percentile=BACKGROUND_PERCENTILE,
                od_tissue_threshold=OD_TISSUE_THRESHOLD,
                angle_percentile=ANGLE_PERCENTILE,
                concentration_percentile=CONCENTRATION_PERCENTILE,
            )
        elif self.method == "background":
            spec.update(
                od_level=self.od_level,
                white=list(self.white),
                background_percentile=BACKGROUND_PERCENTILE,
                od_percentile=OD_PERCENTILE,
            )
        elif self.method == "reinhard":
            spec.update(lab_mean=list(self.lab_mean), lab_std=list(self.lab_std))
        elif self.method == "twopoint":
            spec.update(
                white=list(self.white),
                dark_od=list(self.dark_od),
                background_percentile=BACKGROUND_PERCENTILE,
                dark_percentile=DARK_PERCENTILE,
                max_channel_gain=MAX_CHANNEL_GAIN,
            )
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> StainReference:
        """Parse a card's ``normalization.stain``; raises ValueError on a bad spec."""
        method = spec.get("method")
        if method not in METHODS:
            raise ValueError(f"stain method must be one of {', '.join(METHODS)}, not {method!r}")
        try:
            if method == "macenko":
                s = [tuple(float(x) for x in v) for v in spec["stains"]]
                m = [float(x) for x in spec["max_concentrations"]]
                w = [float(x) for x in spec["white"]]
                if len(s) != 2 or any(len(v) != 3 for v in s) or len(m) != 2 or len(w) != 3:
                    raise ValueError("macenko needs 2 stains of 3 values, 2 maxima, 3 white")
                return cls(
                    method="macenko",
                    stains=(
                        (s[0][0], s[0][1], s[0][2]),
                        (s[1][0], s[1][1], s[1][2]),
                    ),
                    max_concentrations=(m[0], m[1]),
                    white=(w[0], w[1], w[2]),
                )
            if method == "background":
                w = [float(x) for x in spec["white"]]
                level = float(spec["od_level"])
                if len(w) != 3 or level <= 0:
                    raise ValueError("background needs 3 white values and a positive od_level")
                return cls(method="background", od_level=level, white=(w[0], w[1], w[2]))
            if method == "twopoint":
                w = [float(x) for x in spec["white"]]
                d = [float(x) for x in spec["dark_od"]]
                if len(w) != 3 or len(d) != 3 or min(d) <= 0 or min(w) <= 0:
                    raise ValueError("twopoint needs 3 positive white values and 3 dark ODs")
                return cls(method="twopoint", white=(w[0], w[1], w[2]), dark_od=(d[0], d[1], d[2]))
            if method == "reinhard":
                mean = [float(x) for x in spec["lab_mean"]]
                std = [float(x) for x in spec["lab_std"]]
                if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
                    raise ValueError("reinhard needs 3 means and 3 positive deviations")
                return cls(
                    method="reinhard",
                    lab_mean=(mean[0], mean[1], mean[2]),
                    lab_std=(std[0], std[1], std[2]),
                )
        except (KeyError, TypeError) as e:
            raise ValueError(f"incomplete {method} stain reference: {e}") from e
        return cls(method="none")


def _as_batch(images: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], bool]:
    if images.ndim == 3:
        return images[None], True
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected N x H x W x 3 RGB images, got shape {images.shape}")
    return images, False


def estimate_white(rgb: npt.NDArray[Any]) -> FloatArray:
    """Illumination colour (0-255) of one crop: median colour of its brightest pixels.

    Smear background (plasma between cells) transmits the lamp light unstained, so its
    colour is the white point. A crop with no background (a cell filling it) would give
    a stained colour: the result is then pushed up to at least ``MIN_WHITE`` per channel.
    """
    px = rgb[::ESTIMATION_STRIDE, ::ESTIMATION_STRIDE].reshape(-1, 3).astype(np.float32)
    brightness = px.sum(axis=1)
    bright = px[brightness >= np.percentile(brightness, BACKGROUND_PERCENTILE)]
    white: FloatArray = np.maximum(np.median(bright, axis=0), MIN_WHITE).astype(np.float32)
    return white


def optical_density(rgb: npt.NDArray[Any], white: npt.NDArray[Any]) -> FloatArray:
    """Beer-Lambert optical density per channel, 0 for background, clipped at 0."""
    od = -np.log((rgb.astype(np.float32) + 1.0) / (np.asarray(white, np.float32) + 1.0))
    return np.maximum(od, 0.0).astype(np.float32)


def estimate_stains(od: npt.NDArray[Any]) -> tuple[FloatArray, FloatArray] | None:
    """Macenko stain vectors (2 x 3, nuclear first) and 99th-percentile amounts of one crop.

    ``od`` is H x W x 3. Returns None when too few stained pixels exist to estimate.
    """
    sub = od[::ESTIMATION_STRIDE, ::ESTIMATION_STRIDE].reshape(-1, 3)
    tissue = sub[sub.sum(axis=1) > OD_TISSUE_THRESHOLD]
    if len(tissue) < MIN_TISSUE_PIXELS:
        return None
    cov = np.cov(tissue, rowvar=False)
    _, vecs = np.linalg.eigh(cov)
    plane = vecs[:, [2, 1]]  # the two main directions, largest first
    plane *= np.where(plane.sum(axis=0) < 0, -1.0, 1.0)
    proj = tissue @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [ANGLE_PERCENTILE, 100.0 - ANGLE_PERCENTILE])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    v1 = np.abs(v1) / (np.linalg.norm(v1) + EPS)  # OD vectors are non-negative
    v2 = np.abs(v2) / (np.linalg.norm(v2) + EPS)
    if abs(float(v1 @ v2)) > 0.995:
        return None  # one stain only (e.g. a pale crop of red cells): no second direction
    # The nuclear stain absorbs red light relative to green more than eosin does.
    if v1[0] / (v1[1] + EPS) < v2[0] / (v2[1] + EPS):
        v1, v2 = v2, v1
    stains = np.stack([v1, v2]).astype(np.float32)
    conc = _concentrations(sub, stains)
    maxc = np.percentile(conc, CONCENTRATION_PERCENTILE, axis=0).astype(np.float32)
    if np.any(maxc <= EPS):
        return None
    return stains, maxc


def _concentrations(od_px: npt.NDArray[Any], stains: npt.NDArray[Any]) -> FloatArray:
    """Least-squares amounts (P x 2) of each stain in each OD pixel (P x 3)."""
    pinv = np.linalg.pinv(stains.T.astype(np.float64)).astype(np.float32)  # 2 x 3
    conc: FloatArray = np.maximum(od_px.astype(np.float32) @ pinv.T, 0.0)
    return conc


def macenko_normalize(rgb: npt.NDArray[Any], ref: StainReference) -> FloatArray:
    """Re-render each crop with the reference stains, amounts and white (float RGB 0-1)."""
    batch, single = _as_batch(rgb)
    ref_stains = np.asarray(ref.stains, np.float32)
    ref_max = np.asarray(ref.max_concentrations, np.float32)
    ref_white = np.asarray(ref.white, np.float32)
    out = np.empty(batch.shape, np.float32)
    for i, image in enumerate(batch):
        od = optical_density(image, estimate_white(image))
        est = estimate_stains(od)
        if est is None:
            stains, maxc = ref_stains, ref_max
        else:
            stains, maxc = est
        conc = _concentrations(od.reshape(-1, 3), stains) * (ref_max / maxc)
        od_norm = conc @ ref_stains
        out[i] = (ref_white / 255.0 * np.exp(-od_norm)).reshape(image.shape)
    np.clip(out, 0.0, 1.0, out=out)
    return out[0] if single else out


def od_level(od: npt.NDArray[Any]) -> float:
    """The ``OD_PERCENTILE`` of the total optical density of a crop's stained pixels."""
    total = od[::ESTIMATION_STRIDE, ::ESTIMATION_STRIDE].sum(axis=-1).ravel()
    stained = total[total > OD_TISSUE_THRESHOLD]
    if len(stained) < MIN_TISSUE_PIXELS:
        return 0.0
    return float(np.percentile(stained, OD_PERCENTILE))


def background_normalize(rgb: npt.NDArray[Any], ref: StainReference) -> FloatArray:
    """White-balance to the background and match overall stain density (float RGB 0-1)."""
    batch, single = _as_batch(rgb)
    ref_white = np.asarray(ref.white, np.float32) / 255.0
    out = np.empty(batch.shape, np.float32)
    for i, image in enumerate(batch):
        od = optical_density(image, estimate_white(image))
        level = od_level(od)
        scale = ref.od_level / level if level > 0 else 1.0
        out[i] = ref_white * np.exp(-od * scale)
    np.clip(out, 0.0, 1.0, out=out)
    return out[0] if single else out


def _lab(image: npt.NDArray[Any]) -> FloatArray:
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    return np.asarray(lab, dtype=np.float32)


def lab_stats(image: npt.NDArray[Any]) -> tuple[FloatArray, FloatArray]:
    """Per-channel L*a*b* mean and standard deviation over the whole crop."""
    return _lab_stats(_lab(image))


def _lab_stats(lab: FloatArray) -> tuple[FloatArray, FloatArray]:
    mean, std = cv2.meanStdDev(lab)
    return (
        np.asarray(mean, np.float32).reshape(3),
        np.maximum(np.asarray(std, np.float32).reshape(3), 1e-3),
    )


def reinhard_normalize(rgb: npt.NDArray[Any], ref: StainReference) -> FloatArray:
    """Match each crop's L*a*b* mean and deviation to the reference (float RGB 0-1)."""
    batch, single = _as_batch(rgb)
    ref_mean = np.asarray(ref.lab_mean, np.float32)
    ref_std = np.asarray(ref.lab_std, np.float32)
    out = np.empty(batch.shape, np.float32)
    for i, image in enumerate(batch):
        lab = _lab(image)
        mean, std = _lab_stats(lab)
        lab = (lab - mean) * (ref_std / std) + ref_mean
        lab[..., 0] = np.clip(lab[..., 0], 0.0, 100.0)
        out[i] = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    np.clip(out, 0.0, 1.0, out=out)
    return out[0] if single else out


def batch_whites(batch: npt.NDArray[Any]) -> FloatArray:
    """``estimate_white`` of every crop of an N x H x W x 3 batch at once (N x 3)."""
    px = batch[:, ::ESTIMATION_STRIDE, ::ESTIMATION_STRIDE].reshape(len(batch), -1, 3)
    px = px.astype(np.float32)
    brightness = px.sum(axis=2)
    k = int(np.ceil(brightness.shape[1] * BACKGROUND_PERCENTILE / 100.0))
    k = min(max(k, 0), brightness.shape[1] - 1)
    cut = np.partition(brightness, k, axis=1)[:, k : k + 1]
    out = np.empty((len(batch), 3), np.float32)
    for i in range(len(batch)):
        out[i] = np.median(px[i][brightness[i] >= cut[i]], axis=0)
    white: FloatArray = np.maximum(out, MIN_WHITE).astype(np.float32)
    return white


def dark_levels(od: npt.NDArray[Any]) -> FloatArray:
    """Mean OD (N x 3) of each crop's darkest ``100 - DARK_PERCENTILE`` % of pixels."""
    sub = od[:, ::ESTIMATION_STRIDE, ::ESTIMATION_STRIDE].reshape(len(od), -1, 3)
    total = sub.sum(axis=2)
    k = min(int(total.shape[1] * DARK_PERCENTILE / 100.0), total.shape[1] - 1)
    cut = np.partition(total, k, axis=1)[:, k : k + 1]
    mask = (total >= cut).astype(np.float32)[..., None]
    level: FloatArray = ((sub * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)).astype(
        np.float32
    )
    return level


def twopoint_normalize(rgb: npt.NDArray[Any], ref: StainReference) -> FloatArray:
    """Map each crop's background and dark level to the reference's (float RGB 0-1)."""
    batch, single = _as_batch(rgb)
    whites = batch_whites(batch)
    od = -np.log((batch.astype(np.float32) + 1.0) / (whites[:, None, None, :] + 1.0))
    np.maximum(od, 0.0, out=od)
    dark = dark_levels(od)
    ref_dark = np.asarray(ref.dark_od, np.float32)
    gain = np.where(dark > MIN_DARK_OD, ref_dark / np.maximum(dark, EPS), 1.0)
    gain = np.clip(gain, 1.0 / MAX_CHANNEL_GAIN, MAX_CHANNEL_GAIN).astype(np.float32)
    od *= -gain[:, None, None, :]
    out = np.exp(od, out=od)
    out *= np.asarray(ref.white, np.float32) / 255.0
    np.clip(out, 0.0, 1.0, out=out)
    return out[0] if single else out


def normalize(rgb: npt.NDArray[Any], ref: StainReference) -> FloatArray:
    """Apply ``ref``'s method to RGB uint8 crops (N x H x W x 3 or H x W x 3)."""
    if ref.method == "macenko":
        return macenko_normalize(rgb, ref)
    if ref.method == "reinhard":
        return reinhard_normalize(rgb, ref)
    if ref.method == "background":
        return background_normalize(rgb, ref)
    if ref.method == "twopoint":
        return twopoint_normalize(rgb, ref)
    batch, single = _as_batch(rgb)
    out = batch.astype(np.float32) / 255.0
    return out[0] if single else out


def fit_reference(images: Sequence[npt.NDArray[Any]], method: Method) -> StainReference:
    """The reference appearance: medians of per-crop statistics over training crops."""
    if method == "reinhard":
        stats = [lab_stats(im) for im in images]
        mean = np.median(np.stack([m for m, _ in stats]), axis=0)
        std = np.median(np.stack([s for _, s in stats]), axis=0)
        return StainReference(
            method="reinhard",
            lab_mean=(float(mean[0]), float(mean[1]), float(mean[2])),
            lab_std=(float(std[0]), float(std[1]), float(std[2])),
        )
    if method == "macenko":
        whites, stains, maxcs = [], [], []
        for im in images:
            white = estimate_white(im)
            est = estimate_stains(optical_density(im, white))
            whites.append(white)
            if est is not None:
                stains.append(est[0])
                maxcs.append(est[1])
        if not stains:
            raise ValueError("no crop had two estimable stains")
        s = np.median(np.stack(stains), axis=0)
        s /= np.linalg.norm(s, axis=1, keepdims=True)
        m = np.median(np.stack(maxcs), axis=0)
        w = np.median(np.stack(whites), axis=0)
        _log.info("macenko reference from %d/%d crops", len(stains), len(images))
        return StainReference(
            method="macenko",
            stains=(
                (float(s[0, 0]), float(s[0, 1]), float(s[0, 2])),
                (float(s[1, 0]), float(s[1, 1]), float(s[1, 2])),
            ),
            max_concentrations=(float(m[0]), float(m[1])),
            white=(float(w[0]), float(w[1]), float(w[2])),
        )
    if method == "background":
        whites = [estimate_white(im) for im in images]
        levels = [od_level(optical_density(im, w)) for im, w in zip(images, whites, strict=True)]
        levels = [level for level in levels if level > 0]
        if not levels:
            raise ValueError("no crop had stained pixels")
        w = np.median(np.stack(whites), axis=0)
        return StainReference(
            method="background",
            od_level=float(np.median(levels)),
            white=(float(w[0]), float(w[1]), float(w[2])),
        )
    if method == "twopoint":
        batch = np.stack(list(images))
        crop_whites = batch_whites(batch)
        od = np.maximum(
            -np.log((batch.astype(np.float32) + 1.0) / (crop_whites[:, None, None, :] + 1.0)),
            0.0,
        )
        dark = np.median(dark_levels(od), axis=0)
        w = np.median(crop_whites, axis=0)
        return StainReference(
            method="twopoint",
            white=(float(w[0]), float(w[1]), float(w[2])),
            dark_od=(float(dark[0]), float(dark[1]), float(dark[2])),
        )
    return StainReference(method="none")
