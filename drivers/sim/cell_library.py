"""A directory of single-cell images, one subfolder per class, cut out ready to composite.

The virtual slide places library cells by (class, key): the key is a deterministic
integer from the slide's seed, and the library turns it into one image file of that
class and its cut-out. Images are read and segmented lazily, the first time a cell is
drawn, and kept in a bounded cache, so a library of thousands of images costs nothing
until it is used. An image that cannot be read or segmented (two touching cells, no
stained cell in the centre) is skipped deterministically in favour of the next file of
the same class, so the same key always gives the same picture.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from drivers.errors import DeviceError
from drivers.sim.segmentation import SegmentationFailed, optical_density, segment_cell

_log = logging.getLogger(__name__)

DEMO_LIBRARY = Path(__file__).resolve().parent / "demo_cells"
"""The small library shipped with the agent (PBC images, CC BY 4.0; see its ATTRIBUTION.md)."""

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
MAX_PROBES = 64
"""Files tried after a key's own file before a class is declared unusable."""
SPRITE_CACHE = 1024
"""Cut-outs kept in memory (each is a few tens of kB)."""
EDGE_FEATHER_PX = 0.8
"""Softness (Gaussian sigma, px) of a cut-out's edge, so it blends into the red cells."""

NOMINAL_RADIUS_UM: dict[str, float] = {
    "basophil": 5.5,
    "eosinophil": 6.5,
    "erythroblast": 4.5,
    "ig": 7.0,
    "lymphocyte": 4.5,
    "monocyte": 8.0,
    "neutrophil": 6.0,
    "platelet": 1.5,
}
"""Typical radius by class, for laying cells out before their image is read (um)."""
DEFAULT_NOMINAL_RADIUS_UM = 6.0


class CellLibraryError(DeviceError):
    """The cell library cannot supply what the simulator needs."""


@dataclass(frozen=True)
class CellSprite:
    """One library cell cut out of its picture, as optical density to composite.

    The arrays are centred on the cell's centroid: pixel ``(h // 2, w // 2)`` is the
    cell's centre of mass, so placing the array's centre at a slide position puts the
    cell there.
    """

    cls: str
    source: Path
    od: npt.NDArray[np.float32]
    """H x W x 3 (B, G, R) optical density relative to the source image's clear glass."""
    alpha: npt.NDArray[np.float32]
    """H x W coverage in [0, 1]: 1 inside the cell, feathered at its edge, 0 outside."""
    radius_px: float
    """Radius of the circle with the cell's area (px at the library's scale)."""


def _list_images(folder: Path) -> tuple[Path, ...]:
    return tuple(
        sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    )


def make_sprite(cls: str, source: Path, image: npt.NDArray[np.uint8]) -> CellSprite:
    """Cut the centred cell out of ``image`` (raises SegmentationFailed)."""
    cut = segment_cell(image)
    mask = cut.mask
    ys, xs = np.nonzero(mask)
    cy, cx = float(ys.mean()), float(xs.mean())
    # A square window centred on the centroid, big enough for the mask plus the feather.
    half = int(np.ceil(max(np.abs(ys - cy).max(), np.abs(xs - cx).max()))) + 3
    h, w = mask.shape
    icx, icy = round(cx), round(cy)
    pad = max(0, half - icx, half - icy, icx + half + 1 - w, icy + half + 1 - h)
    glass = np.array(cut.glass_bgr, dtype=np.float32)
    od_full = optical_density(image, glass)
    if pad:
        od_full = np.pad(od_full, ((pad, pad), (pad, pad), (0, 0)))
        mask = np.pad(mask, pad)
    y0, x0 = icy + pad - half, icx + pad - half
    window = (slice(y0, y0 + 2 * half + 1), slice(x0, x0 + 2 * half + 1))
    m = mask[window].astype(np.float32)
    alpha = cv2.GaussianBlur(m, (0, 0), EDGE_FEATHER_PX)
    alpha[alpha < 0.01] = 0.0
    od = np.ascontiguousarray(od_full[window], dtype=np.float32)
    radius = float(np.sqrt(mask.sum() / np.pi))
    return CellSprite(
        cls=cls, source=source, od=od, alpha=alpha.astype(np.float32), radius_px=radius
    )


class CellLibrary:
    """Cell images by class from ``root`` (one subfolder per class)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or DEMO_LIBRARY).expanduser()
        if not self.root.is_dir():
            raise CellLibraryError(f"cell library {self.root}: not a directory")
        files: dict[str, tuple[Path, ...]] = {}
        try:
            for sub in sorted(p for p in self.root.iterdir() if p.is_dir()):
                images = _list_images(sub)
                if images:
                    files[sub.name] = images
        except OSError as e:
            raise CellLibraryError(f"cell library {self.root}: cannot list it: {e}") from e
        if not files:
            raise CellLibraryError(
                f"cell library {self.root}: no class subfolders with images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        self._files = files
        self._lock = threading.Lock()
        self._sprites: OrderedDict[Path, CellSprite] = OrderedDict()
        self._bad: set[Path] = set()

    @property
    def classes(self) -> tuple[str, ...]:
        """The classes (subfolder names) that hold images, sorted."""
        return tuple(self._files)

    def files(self, cls: str) -> tuple[Path, ...]:
        """The image files of ``cls``, sorted by name."""
        try:
            return self._files[cls]
        except KeyError:
            raise CellLibraryError(
                f"cell library {self.root}: no images of class '{cls}' "
                f"(classes there: {', '.join(self.classes)})"
            ) from None

    def sprite(self, cls: str, key: int) -> CellSprite:
        """The cut-out for ``key`` of ``cls``: the key's own file, or the next usable one."""
        files = self.files(cls)
        start = key % len(files)
        for probe in range(min(MAX_PROBES, len(files))):
            path = files[(start + probe) % len(files)]
            sprite = self._load(cls, path)
            if sprite is not None:
                return sprite
        raise CellLibraryError(
            f"cell library {self.root}: none of {min(MAX_PROBES, len(files))} images of class "
            f"'{cls}' from {files[start].name} on could be cut out"
        )

    def source(self, cls: str, key: int) -> Path:
        """The image file ``sprite(cls, key)`` draws."""
        return self.sprite(cls, key).source

    def _load(self, cls: str, path: Path) -> CellSprite | None:
        with self._lock:
            if path in self._bad:
                return None
            cached = self._sprites.get(path)
            if cached is not None:
                self._sprites.move_to_end(path)
                return cached
        read = cv2.imread(str(path), cv2.IMREAD_COLOR)
        image = None if read is None else np.asarray(read, np.uint8)
        sprite: CellSprite | None = None
        if image is None:
            _log.warning("cell library: cannot read %s; skipping it", path)
        else:
            try:
                sprite = make_sprite(cls, path, image)
            except SegmentationFailed as e:
                _log.info("cell library: %s skipped: %s", path.name, e)
        with self._lock:
            if sprite is None:
                self._bad.add(path)
                return None
            self._sprites[path] = sprite
            while len(self._sprites) > SPRITE_CACHE:
                self._sprites.popitem(last=False)
        return sprite
