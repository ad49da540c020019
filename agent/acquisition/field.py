"""A captured field: the unit that flows from acquisition to vision."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.camera.base import BgrImage


@dataclass(frozen=True)
class FieldImage:
    """One in-focus field with where it was taken.

    The stage position is the slide coordinate of the image centre; image +x is slide
    +x and image +y is slide +y (see ``drivers.stage.base.Position``).
    """

    index: int
    image: BgrImage
    x_um: float
    y_um: float
    z_um: float
    pixel_size_um: float
    focus_score: float
    focus_ok: bool
    captured_at: float
    """Wall-clock capture time, seconds since the epoch (UTC)."""
    focus_images: int = 0
    """Images the autofocus took for this field (including this one)."""
    focus_method: str = ""
    """How focus was found: 'local' (check around the surface's prediction) or 'search'."""
    rbc_coverage: float | None = None
    """Share of the field covered by cells (see ``agent.acquisition.field_classes``)."""

    def to_slide(self, px: float, py: float) -> tuple[float, float]:
        """Slide coordinates (um) of image pixel (px, py)."""
        h, w = self.image.shape[:2]
        return (
            self.x_um + (px - w / 2.0) * self.pixel_size_um,
            self.y_um + (py - h / 2.0) * self.pixel_size_um,
        )

    def to_pixel(self, x_um: float, y_um: float) -> tuple[float, float]:
        """Image pixel (px, py) of slide point (x, y) um; the inverse of ``to_slide``."""
        h, w = self.image.shape[:2]
        return (
            (x_um - self.x_um) / self.pixel_size_um + w / 2.0,
            (y_um - self.y_um) / self.pixel_size_um + h / 2.0,
        )

    def slide_bounds(self) -> tuple[float, float, float, float]:
        """The slide rectangle (x0, y0, x1, y1, um) this field covers."""
        h, w = self.image.shape[:2]
        x0, y0 = self.to_slide(0, 0)
        x1, y1 = self.to_slide(w, h)
        return (x0, y0, x1, y1)
