"""Geometry of cell crops: bring any image to the reference scale and cut the cell out.

The classifier sees a fixed-size square around the cell at a fixed scale (um per pixel),
whatever the camera's pixel size; cells near a field's edge are padded with the
smear's background colour, not mirrored (a mirrored half-cell would look like a second
nucleus lobe).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from agent.errors import InputError
from agent.vision.model_card import InputSpec
from agent.vision.stain import StainReference, estimate_white, normalize

Image = npt.NDArray[np.uint8]
"""H x W x 3 uint8 (channel order preserved by every function here)."""

SCALE_TOLERANCE = 1e-3
"""Relative scale change below which an image is used as is."""


def check_image(image: object) -> Image:
    """The image as H x W x 3 uint8, or an InputError that says what is wrong."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected an image array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"expected an H x W x 3 colour image, got shape {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise InputError(f"image of {image.shape[1]}x{image.shape[0]} px is too small")
    if image.dtype != np.uint8:
        raise InputError(f"expected 8-bit pixels, got {image.dtype}")
    return image


def rescale(image: Image, pixel_size_um: float, target_um: float) -> Image:
    """Resample ``image`` from ``pixel_size_um`` to ``target_um`` per pixel.

    Area averaging when shrinking (no aliasing of granules), bilinear when enlarging.
    """
    if not (pixel_size_um > 0 and math.isfinite(pixel_size_um)):
        raise InputError(f"pixel size must be a positive number of um, got {pixel_size_um}")
    factor = pixel_size_um / target_um
    if abs(factor - 1.0) < SCALE_TOLERANCE:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    interp = cv2.INTER_AREA if factor < 1.0 else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, size, interpolation=interp), dtype=np.uint8)


def background_fill(image: Image) -> tuple[float, float, float]:
    """The colour used to pad beyond an image's edge: its background (brightest pixels)."""
    white = estimate_white(image)
    return (float(white[0]), float(white[1]), float(white[2]))


def crop_centred(
    image: Image,
    centre: tuple[float, float],
    size: int,
    fill: tuple[float, float, float] | None = None,
) -> Image:
    """A ``size`` x ``size`` crop centred on pixel ``centre`` (x, y), padded with ``fill``.

    ``fill`` None uses the image's background colour.
    """
    h, w = image.shape[:2]
    x0 = round(centre[0] - size / 2.0)
    y0 = round(centre[1] - size / 2.0)
    if x0 >= 0 and y0 >= 0 and x0 + size <= w and y0 + size <= h:
        return np.ascontiguousarray(image[y0 : y0 + size, x0 : x0 + size])
    colour = fill if fill is not None else background_fill(image)
    out = np.empty((size, size, 3), np.uint8)
    out[:] = np.clip(np.round(colour), 0, 255).astype(np.uint8)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + size, w), min(y0 + size, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def centred_cell(image: Image, pixel_size_um: float, target_um: float, size: int) -> Image:
    """The centre of a single-cell image at the reference scale, padded to ``size``."""
    image = check_image(image)
    fill = background_fill(image)
    scaled = rescale(image, pixel_size_um, target_um)
    h, w = scaled.shape[:2]
    return crop_centred(scaled, (w / 2.0, h / 2.0), size, fill)


def cells_in_field(
    field: Image,
    centres: Sequence[tuple[float, float]],
    pixel_size_um: float,
    target_um: float,
    size: int,
) -> list[Image]:
    """Reference-scale crops around pixel ``centres`` of a field (any pixel size).

    Only a window around each cell is resampled, not the whole field.
    """
    field = check_image(field)
    fill = background_fill(field)
    factor = pixel_size_um / target_um
    if not (factor > 0 and math.isfinite(factor)):
        raise InputError(f"pixel size must be a positive number of um, got {pixel_size_um}")
    window = math.ceil(size / factor) + 4  # source pixels, with a margin for resampling
    crops = []
    for cx, cy in centres:
        if not (math.isfinite(cx) and math.isfinite(cy)):
            raise InputError(f"cell centre ({cx}, {cy}) is not a finite pixel position")
        patch = crop_centred(field, (cx, cy), window, fill)
        scaled = rescale(patch, pixel_size_um, target_um)
        sh, sw = scaled.shape[:2]
        crops.append(crop_centred(scaled, (sw / 2.0, sh / 2.0), size, fill))
    return crops


TTA_METHODS = ("none", "dihedral8")


def dihedral_views(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The 8 rotations/reflections of N x C x H x W square inputs, view-major (8N).

    A cell on a slide has no up, down or handedness, so the eight views are equally
    valid pictures of it; averaging the network's answers over them removes the part
    of its error that depends on orientation. Row ``v * N + i`` is view ``v`` of input
    ``i``: the rotations by 0, 90, 180, 270 degrees, then the same after a flip.
    """
    views = []
    for flipped in (x, x[:, :, :, ::-1]):
        for k in range(4):
            views.append(np.rot90(flipped, k, axes=(2, 3)))
    return np.ascontiguousarray(np.concatenate(views), dtype=np.float32)


def mean_over_views(logits: npt.NDArray[np.float32], views: int) -> npt.NDArray[np.float32]:
    """Average ``views`` view-major blocks of (views * N) x K logits into N x K."""
    n = logits.shape[0] // views
    out: npt.NDArray[np.float32] = logits.reshape(views, n, -1).mean(axis=0).astype(np.float32)
    return out


@dataclass(frozen=True)
class InputTransform:
    """Everything done to an image before the network, as recorded in the model card.

    The training script builds its inputs with ``network_input`` too, so the network is
    trained on exactly what it is served.
    """

    crop_px: int
    pixel_size_um: float
    reference: StainReference
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_spec(self) -> dict[str, Any]:
        """The card's ``input.normalization``."""
        return {
            "crop_px": self.crop_px,
            "rescale": "cv2 INTER_AREA when shrinking, INTER_LINEAR when enlarging",
            "padding": "background colour (median of the brightest 10% of pixels)",
            "stain": self.reference.to_spec(),
            "scale": "RGB / 255 after stain normalisation",
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_card(cls, spec: InputSpec) -> InputTransform:
        """Parse a card's input section; raises ValueError on anything missing."""
        norm = spec.normalization
        try:
            crop_px = int(norm["crop_px"])
            mean = [float(x) for x in norm["mean"]]
            std = [float(x) for x in norm["std"]]
            reference = StainReference.from_spec(norm["stain"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"input.normalization lacks {e}") from e
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError("input.normalization needs 3 means and 3 positive deviations")
        if spec.color != "RGB":
            raise ValueError(f"only RGB network input is supported, not {spec.color}")
        return cls(
            crop_px=crop_px,
            pixel_size_um=spec.pixel_size_um,
            reference=reference,
            mean=(mean[0], mean[1], mean[2]),
            std=(std[0], std[1], std[2]),
        )

    def network_input(self, rgb_crops: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """N x 3 x H x W float32 network input from N x H x W x 3 RGB uint8 crops."""
        rgb = normalize(rgb_crops, self.reference)
        x = (rgb - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)

    def bgr_input(self, bgr_crops: Sequence[Image]) -> npt.NDArray[np.float32]:
        """Network input from BGR crops already at the reference scale and crop size."""
        rgb = np.stack([c[:, :, ::-1] for c in bgr_crops])
        return self.network_input(rgb)
