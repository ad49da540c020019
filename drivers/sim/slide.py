"""The virtual slide: a stained blood smear made of real cell images, with its ground truth.

The slide is rendered at the project's reference scale (``REFERENCE_PIXEL_UM`` um per
pixel, the Nyquist scale of a 40x/0.65 objective and the scale of the PBC images) in
square tiles that are generated lazily and deterministically from the seed and the
tile's index, so any part of a 75 x 25 mm slide can be looked at without rendering the
rest, in any order, with the same result.

Red cells sit on a jittered hexagonal lattice (one lattice per layer; the thick zone
has up to three layers) kept with a probability set by the smear's local coverage.
White cells and the other library objects (NRBCs, platelet clumps) are placed in
proportion to the red cells (``rbc_per_wbc``), drawn from the class mix, rotated and
flipped at random, and composited over the red cells they push aside. Every object's
position, class and source image is known: :meth:`VirtualSlide.cells_in` is the
ground truth the end-to-end checks compare results against.

Coordinates are slide = stage coordinates in um; slide pixel ``(gx, gy)`` covers
``[gx, gx + 1) * pixel`` in x and the same in y, and image +x/+y are slide +x/+y.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from drivers.camera.base import BgrImage
from drivers.sim.cell_library import (
    DEFAULT_NOMINAL_RADIUS_UM,
    NOMINAL_RADIUS_UM,
    CellLibrary,
    CellLibraryError,
)
from drivers.sim.config import SimulatorConfig
from drivers.sim.red_cells import RedCellBank
from drivers.sim.smear import Rect, SmearGeometry, Zone

_log = logging.getLogger(__name__)

REFERENCE_PIXEL_UM = 0.2
"""Scale of the rendered slide and of the cell library images (um per pixel)."""
TILE_PX = 512
"""Side of a slide tile (px); a 2028 x 1520 field touches at most 5 x 4 tiles."""
LATTICE_SPACING = 1.04
"""Red-cell lattice spacing as a multiple of the red-cell diameter."""
JITTER = 0.13
"""Random displacement of a red cell from its lattice site (sigma, fraction of the spacing)."""
MAX_LAYERS = 3
FLAT_BELOW_LAYERS = 0.5
"""Below this coverage red cells start to lose their pallor (feathered end)."""
FILM_OD_BGR = np.array([0.03, 0.015, 0.0], dtype=np.float32)
"""The dried plasma film's faint tint over the smear (OD), absent on clear glass."""
FILM_FULL_AT_LAYERS = 0.3
OBJECT_SPACING = 0.9
"""Two objects closer than this times the sum of their radii: the lower-priority one is dropped."""
CLEAR_UNDER_OBJECT = 0.8
"""Red cells whose centre lies within this fraction of an object's radius are pushed aside."""
OBJECT_SCATTER_UM = 1.0
_SEED_OFFSET = 1 << 24
_LN10 = math.log(10.0)


@dataclass(frozen=True)
class CellTruth:
    """One object on the slide: what it is and where (um, slide coordinates)."""

    id: str
    """Stable name of the object on this slide (tile and index), e.g. ``"t230_41_2"``."""
    cls: str
    """Cell-library class (folder name), e.g. ``neutrophil``."""
    is_white: bool
    """True for white cells (what a differential counts); False for NRBCs and platelets."""
    x_um: float
    y_um: float
    radius_um: float
    """Typical radius of the class (um); the drawn cell's own size may differ a little."""
    key: int
    """Which library image: see :meth:`VirtualSlide.source_of`."""
    rotation_deg: float
    flipped: bool


@dataclass(frozen=True)
class _Raw:
    """A tile's own content before it is reconciled with its neighbours."""

    rbc_xy: npt.NDArray[np.float64]
    rbc_sprite: npt.NDArray[np.intp]
    objects: tuple[CellTruth, ...]
    priority: tuple[float, ...]


@dataclass(frozen=True)
class _Layout:
    """A tile's final content: red cells and the objects whose centres lie in it."""

    rbc_xy: npt.NDArray[np.float64]
    rbc_sprite: npt.NDArray[np.intp]
    objects: tuple[CellTruth, ...]


@dataclass(frozen=True)
class _PlacedSprite:
    od: npt.NDArray[np.float32]
    alpha: npt.NDArray[np.float32]

    @property
    def half(self) -> int:
        return int(self.od.shape[0]) // 2


class VirtualSlide:
    """A deterministic virtual smear; renders any region and knows every cell on it."""

    def __init__(self, config: SimulatorConfig, library: CellLibrary | None = None) -> None:
        self.config = config
        self.seed = config.seed
        self.pixel_size_um = REFERENCE_PIXEL_UM
        self.tile_um = TILE_PX * REFERENCE_PIXEL_UM
        self.library = library if library is not None else CellLibrary(config.cell_library)
        self.smear = SmearGeometry(config.smear, config.seed)
        self._bank = RedCellBank(config.red_cell_diameter_um, REFERENCE_PIXEL_UM, config.seed)
        self._library_scale = config.cell_library_pixel_size_um / REFERENCE_PIXEL_UM
        self._setup_mix()
        rng = np.random.default_rng([config.seed, 0x1A77])
        theta = float(rng.uniform(0, np.pi / 3))
        s = LATTICE_SPACING * config.red_cell_diameter_um
        self._spacing = s
        self._basis = np.array(
            [
                [s * np.cos(theta), s * np.cos(theta + np.pi / 3)],
                [s * np.sin(theta), s * np.sin(theta + np.pi / 3)],
            ]
        )
        self._basis_inv = np.linalg.inv(self._basis)
        self._lock = threading.RLock()
        self._raw: OrderedDict[tuple[int, int], _Raw] = OrderedDict()
        self._kept: OrderedDict[tuple[int, int], tuple[CellTruth, ...]] = OrderedDict()
        self._layouts: OrderedDict[tuple[int, int], _Layout] = OrderedDict()
        self._tiles: OrderedDict[tuple[int, int], BgrImage] = OrderedDict()
        self._placed: OrderedDict[str, _PlacedSprite] = OrderedDict()
        tile_bytes = TILE_PX * TILE_PX * 3
        self._max_tiles = max(8, config.tile_cache_mb * 1024 * 1024 // tile_bytes)
        self._max_layouts = 4096

    # -- the class mix ---------------------------------------------------------------

    def _setup_mix(self) -> None:
        mix = {k: v for k, v in self.config.class_mix.items() if v > 0}
        missing = sorted(k for k in mix if k not in self.library.classes)
        if missing:
            raise CellLibraryError(
                f"cell library {self.library.root}: simulator.class_mix names "
                f"{', '.join(missing)} but the library has no such class folder "
                f"(it has: {', '.join(self.library.classes)})"
            )
        not_white = set(self.config.not_white_cells)
        white_total = sum(v for k, v in mix.items() if k not in not_white)
        per_white: dict[str, float] = {}
        for k, v in mix.items():
            per_white[k] = v / 100.0 if k in not_white else v / white_total
        total = sum(per_white.values())
        self._classes = sorted(per_white)
        self._class_p = np.array([per_white[k] / total for k in self._classes])
        self._class_white = [k not in not_white for k in self._classes]
        self._objects_per_white = total

    # -- generation --------------------------------------------------------------------

    def _tile_of(self, x_um: float, y_um: float) -> tuple[int, int]:
        return (math.floor(x_um / self.tile_um), math.floor(y_um / self.tile_um))

    def _rng(self, i: int, j: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, i + _SEED_OFFSET, j + _SEED_OFFSET, stream])

    def _lattice(self, i: int, j: int, layer: int) -> npt.NDArray[np.float64]:
        """Nominal lattice sites of one layer whose position lies in tile (i, j) (um)."""
        x0, y0 = i * self.tile_um, j * self.tile_um
        x1, y1 = x0 + self.tile_um, y0 + self.tile_um
        origin = (self._basis[:, 0] + self._basis[:, 1]) * (layer / 3.0)
        corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) - origin
        ab = corners @ self._basis_inv.T
        a = np.arange(math.floor(ab[:, 0].min()) - 1, math.ceil(ab[:, 0].max()) + 2)
        b = np.arange(math.floor(ab[:, 1].min()) - 1, math.ceil(ab[:, 1].max()) + 2)
        aa, bb = np.meshgrid(a, b, indexing="ij")
        pts = np.stack([aa.ravel(), bb.ravel()], axis=1) @ self._basis.T + origin
        inside = (pts[:, 0] >= x0) & (pts[:, 0] < x1) & (pts[:, 1] >= y0) & (pts[:, 1] < y1)
        out: npt.NDArray[np.float64] = pts[inside]
        return out

    def _make_raw(self, i: int, j: int) -> _Raw:
        xy_parts: list[npt.NDArray[np.float64]] = []
        sprite_parts: list[npt.NDArray[np.intp]] = []
        bank = self._bank
        for layer in range(MAX_LAYERS):
            sites = self._lattice(i, j, layer)
            rng = self._rng(i, j, layer)
            n = len(sites)
            jitter = rng.normal(0.0, JITTER * self._spacing, (n, 2))
            u_keep, u_flat, u_pick = rng.random(n), rng.random(n), rng.random(n)
            if n == 0:
                continue
            cov = self.smear.coverage(sites[:, 0], sites[:, 1])
            keep = u_keep < np.clip(cov - layer, 0.0, 1.0)
            if not keep.any():
                continue
            p_flat = np.clip(1.0 - cov / FLAT_BELOW_LAYERS, 0.0, 1.0)
            flat = u_flat < p_flat
            idx = np.where(
                flat,
                bank.flat[(u_pick * len(bank.flat)).astype(np.intp) % len(bank.flat)],
                bank.normal[(u_pick * len(bank.normal)).astype(np.intp) % len(bank.normal)],
            )
            xy_parts.append((sites + jitter)[keep])
            sprite_parts.append(idx[keep].astype(np.intp))
        if xy_parts:
            rbc_xy = np.concatenate(xy_parts)
            rbc_sprite = np.concatenate(sprite_parts)
        else:
            rbc_xy = np.zeros((0, 2))
            rbc_sprite = np.zeros(0, dtype=np.intp)
        objects: list[CellTruth] = []
        priority: list[float] = []
        rng = self._rng(i, j, 99)
        lam = len(rbc_xy) / self.config.rbc_per_wbc * self._objects_per_white
        count = int(rng.poisson(lam)) if lam > 0 else 0
        for k in range(count):
            anchor = rbc_xy[int(rng.integers(len(rbc_xy)))]
            dx, dy = rng.normal(0.0, OBJECT_SCATTER_UM, 2)
            ci = int(rng.choice(len(self._classes), p=self._class_p))
            cls = self._classes[ci]
            objects.append(
                CellTruth(
                    id=f"t{i}_{j}_{k}",
                    cls=cls,
                    is_white=self._class_white[ci],
                    x_um=float(anchor[0] + dx),
                    y_um=float(anchor[1] + dy),
                    radius_um=NOMINAL_RADIUS_UM.get(cls, DEFAULT_NOMINAL_RADIUS_UM),
                    key=int(rng.integers(0, 2**31 - 1)),
                    rotation_deg=float(rng.uniform(0.0, 360.0)),
                    flipped=bool(rng.random() < 0.5),
                )
            )
            priority.append(float(rng.random()))
        return _Raw(rbc_xy, rbc_sprite, tuple(objects), tuple(priority))

    def _raw_tile(self, i: int, j: int) -> _Raw:
        with self._lock:
            hit = self._raw.get((i, j))
            if hit is not None:
                self._raw.move_to_end((i, j))
                return hit
            raw = self._make_raw(i, j)
            self._raw[(i, j)] = raw
            while len(self._raw) > self._max_layouts:
                self._raw.popitem(last=False)
            return raw

    def _kept_objects(self, i: int, j: int) -> tuple[CellTruth, ...]:
        """Tile (i, j)'s objects that no higher-priority neighbour object overlaps."""
        with self._lock:
            hit = self._kept.get((i, j))
            if hit is not None:
                self._kept.move_to_end((i, j))
                return hit
            own = self._raw_tile(i, j)
            rivals: list[tuple[CellTruth, float]] = []
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    raw = self._raw_tile(i + di, j + dj)
                    rivals.extend(zip(raw.objects, raw.priority, strict=True))
            kept = []
            for obj, prio in zip(own.objects, own.priority, strict=True):
                beaten = any(
                    p > prio
                    and math.hypot(o.x_um - obj.x_um, o.y_um - obj.y_um)
                    < OBJECT_SPACING * (o.radius_um + obj.radius_um)
                    for o, p in rivals
                    if o.id != obj.id
                )
                if not beaten:
                    kept.append(obj)
            result = tuple(kept)
            self._kept[(i, j)] = result
            while len(self._kept) > self._max_layouts:
                self._kept.popitem(last=False)
            return result

    def _layout(self, i: int, j: int) -> _Layout:
        with self._lock:
            hit = self._layouts.get((i, j))
            if hit is not None:
                self._layouts.move_to_end((i, j))
                return hit
            raw = self._raw_tile(i, j)
            keep = np.ones(len(raw.rbc_xy), dtype=bool)
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    for obj in self._kept_objects(i + di, j + dj):
                        d = np.hypot(raw.rbc_xy[:, 0] - obj.x_um, raw.rbc_xy[:, 1] - obj.y_um)
                        keep &= d >= CLEAR_UNDER_OBJECT * obj.radius_um
            layout = _Layout(raw.rbc_xy[keep], raw.rbc_sprite[keep], self._kept_objects(i, j))
            self._layouts[(i, j)] = layout
            while len(self._layouts) > self._max_layouts:
                self._layouts.popitem(last=False)
            return layout

    # -- ground truth --------------------------------------------------------------------

    def _tiles_over(self, rect: Rect, margin_um: float = 0.0) -> Iterator[tuple[int, int]]:
        i0, j0 = self._tile_of(rect.x0 - margin_um, rect.y0 - margin_um)
        i1, j1 = self._tile_of(rect.x1 + margin_um, rect.y1 + margin_um)
        for j in range(j0, j1 + 1):
            for i in range(i0, i1 + 1):
                yield i, j

    def cells_in(self, rect: Rect, *, white_only: bool = False) -> list[CellTruth]:
        """Every object whose centre lies in ``rect`` (um), sorted by y then x."""
        found = [
            obj
            for i, j in self._tiles_over(rect)
            for obj in self._layout(i, j).objects
            if rect.contains(obj.x_um, obj.y_um) and (obj.is_white or not white_only)
        ]
        return sorted(found, key=lambda o: (o.y_um, o.x_um, o.id))

    def red_cell_count(self, rect: Rect) -> int:
        """Red cells whose centre lies in ``rect`` (um)."""
        total = 0
        for i, j in self._tiles_over(rect):
            xy = self._layout(i, j).rbc_xy
            total += int(
                (
                    (xy[:, 0] >= rect.x0)
                    & (xy[:, 0] < rect.x1)
                    & (xy[:, 1] >= rect.y0)
                    & (xy[:, 1] < rect.y1)
                ).sum()
            )
        return total

    def source_of(self, cell: CellTruth) -> Path:
        """The library image drawn for ``cell``."""
        return self.library.source(cell.cls, cell.key)

    def zone_at(self, x_um: float, y_um: float) -> Zone:
        """'glass', 'thick', 'monolayer' or 'thin' at a point."""
        return self.smear.zone(x_um, y_um)

    def coverage_at(self, x_um: float, y_um: float) -> float:
        """Expected red-cell layers at a point (about 0.5-1 in the monolayer)."""
        return float(self.smear.coverage(x_um, y_um))

    def monolayer_bounds(self) -> Rect:
        return self.smear.monolayer_bounds()

    def monolayer_core(self) -> Rect:
        return self.smear.monolayer_core()

    def smear_extent(self) -> Rect:
        return self.smear.extent()

    # -- rendering -------------------------------------------------------------------------

    def _placed_sprite(self, obj: CellTruth) -> _PlacedSprite:
        with self._lock:
            hit = self._placed.get(obj.id)
            if hit is not None:
                self._placed.move_to_end(obj.id)
                return hit
        sprite = self.library.sprite(obj.cls, obj.key)
        od, alpha = sprite.od, sprite.alpha
        if obj.flipped:
            od, alpha = od[:, ::-1], alpha[:, ::-1]
        half = od.shape[0] // 2
        new_half = math.ceil(half * math.sqrt(2) * self._library_scale) + 1
        size = 2 * new_half + 1
        m = cv2.getRotationMatrix2D((half, half), obj.rotation_deg, self._library_scale)
        m[0, 2] += new_half - half
        m[1, 2] += new_half - half
        od_r = cv2.warpAffine(
            np.ascontiguousarray(od),
            m,
            (size, size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
        alpha_r = cv2.warpAffine(
            np.ascontiguousarray(alpha),
            m,
            (size, size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        placed = _PlacedSprite(od=od_r.astype(np.float32), alpha=alpha_r.astype(np.float32))
        with self._lock:
            self._placed[obj.id] = placed
            while len(self._placed) > 2048:
                self._placed.popitem(last=False)
        return placed

    def _render_tile(self, i: int, j: int) -> BgrImage:
        ps = REFERENCE_PIXEL_UM
        gx0, gy0 = i * TILE_PX, j * TILE_PX
        od = np.zeros((TILE_PX, TILE_PX, 3), dtype=np.float32)
        # The plasma film, from the coverage on a coarse grid.
        grid = np.linspace(0, self.tile_um, 9)
        gx, gy = np.meshgrid(i * self.tile_um + grid, j * self.tile_um + grid)
        film = np.clip(self.smear.coverage(gx, gy) / FILM_FULL_AT_LAYERS, 0, 1).astype(np.float32)
        if film.any():
            film_px = cv2.resize(film, (TILE_PX, TILE_PX), interpolation=cv2.INTER_LINEAR)
            od += film_px[:, :, None] * FILM_OD_BGR[None, None, :]
        sprites = self._bank.sprites
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                lay = self._layout(i + di, j + dj)
                if not len(lay.rbc_xy):
                    continue
                cx = np.floor(lay.rbc_xy[:, 0] / ps).astype(np.intp) - gx0
                cy = np.floor(lay.rbc_xy[:, 1] / ps).astype(np.intp) - gy0
                m = self._bank.max_half + 1
                near = (cx > -m) & (cx < TILE_PX + m) & (cy > -m) & (cy < TILE_PX + m)
                for x, y, k in zip(cx[near], cy[near], lay.rbc_sprite[near], strict=True):
                    _stamp_add(od, sprites[int(k)].od, int(x), int(y))
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                for obj in self._layout(i + di, j + dj).objects:
                    x = math.floor(obj.x_um / ps) - gx0
                    y = math.floor(obj.y_um / ps) - gy0
                    reach = int(obj.radius_um * 3 / ps) + 64
                    if -reach < x < TILE_PX + reach and -reach < y < TILE_PX + reach:
                        placed = self._placed_sprite(obj)
                        _stamp_over(od, placed.od, placed.alpha, x, y)
        trans = cv2.exp(od * np.float32(-_LN10))
        out: BgrImage = np.asarray(cv2.convertScaleAbs(trans, alpha=255.0), np.uint8)
        return out

    def _tile(self, i: int, j: int) -> BgrImage:
        with self._lock:
            hit = self._tiles.get((i, j))
            if hit is not None:
                self._tiles.move_to_end((i, j))
                return hit
            tile = self._render_tile(i, j)
            self._tiles[(i, j)] = tile
            while len(self._tiles) > self._max_tiles:
                self._tiles.popitem(last=False)
            return tile

    def render_pixels(self, gx0: int, gy0: int, width: int, height: int) -> BgrImage:
        """Slide pixels ``[gx0, gx0 + width) x [gy0, gy0 + height)`` as transmittance.

        255 is clear glass under the ideal light; the camera model adds illumination,
        focus, colour response and noise.
        """
        out = np.empty((height, width, 3), dtype=np.uint8)
        with self._lock:
            for j in range(gy0 // TILE_PX, (gy0 + height - 1) // TILE_PX + 1):
                for i in range(gx0 // TILE_PX, (gx0 + width - 1) // TILE_PX + 1):
                    tile = self._tile(i, j)
                    ax0, ay0 = max(gx0, i * TILE_PX), max(gy0, j * TILE_PX)
                    ax1 = min(gx0 + width, (i + 1) * TILE_PX)
                    ay1 = min(gy0 + height, (j + 1) * TILE_PX)
                    out[ay0 - gy0 : ay1 - gy0, ax0 - gx0 : ax1 - gx0] = tile[
                        ay0 - j * TILE_PX : ay1 - j * TILE_PX, ax0 - i * TILE_PX : ax1 - i * TILE_PX
                    ]
        return out

    def pixel_origin(self, x_um: float, y_um: float, width: int, height: int) -> tuple[int, int]:
        """Slide pixel of the top-left corner of a ``width`` x ``height`` view centred at (x, y)."""
        return (
            round(x_um / REFERENCE_PIXEL_UM - width / 2.0),
            round(y_um / REFERENCE_PIXEL_UM - height / 2.0),
        )

    def render(self, x_um: float, y_um: float, width: int, height: int) -> BgrImage:
        """The in-focus view of ``width`` x ``height`` reference pixels centred at (x, y) um."""
        gx0, gy0 = self.pixel_origin(x_um, y_um, width, height)
        return self.render_pixels(gx0, gy0, width, height)


def _clip_window(
    size: int, half: int, x: int, y: int, limit_w: int, limit_h: int
) -> tuple[slice, slice, slice, slice] | None:
    """Destination and source slices of a ``size`` patch centred at (x, y), clipped."""
    x0, y0 = x - half, y - half
    dx0, dy0 = max(0, x0), max(0, y0)
    dx1, dy1 = min(limit_w, x0 + size), min(limit_h, y0 + size)
    if dx0 >= dx1 or dy0 >= dy1:
        return None
    return (
        slice(dy0, dy1),
        slice(dx0, dx1),
        slice(dy0 - y0, dy1 - y0),
        slice(dx0 - x0, dx1 - x0),
    )


def _stamp_add(
    canvas: npt.NDArray[np.float32], patch: npt.NDArray[np.float32], x: int, y: int
) -> None:
    size = patch.shape[0]
    win = _clip_window(size, size // 2, x, y, canvas.shape[1], canvas.shape[0])
    if win is None:
        return
    dy, dx, sy, sx = win
    canvas[dy, dx] += patch[sy, sx]


def _stamp_over(
    canvas: npt.NDArray[np.float32],
    od: npt.NDArray[np.float32],
    alpha: npt.NDArray[np.float32],
    x: int,
    y: int,
) -> None:
    size = od.shape[0]
    win = _clip_window(size, size // 2, x, y, canvas.shape[1], canvas.shape[0])
    if win is None:
        return
    dy, dx, sy, sx = win
    a = alpha[sy, sx][:, :, None]
    region = canvas[dy, dx]
    canvas[dy, dx] = region + a * (od[sy, sx] + FILM_OD_BGR - region)
