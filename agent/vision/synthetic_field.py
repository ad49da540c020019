"""A drawn smear field for timing the models on a board that has no data set.

Pale background, a monolayer of pink red-cell discs and a few white cells with purple
lobed nuclei, at a given pixel size. It only has to cost what a real field costs (same
size, comparable number of heatmap peaks); nothing is measured for accuracy on it.
"""

from __future__ import annotations

import cv2
import numpy as np

from drivers.camera.base import BgrImage

RED_CELL_DIAMETER_UM = 7.5
WHITE_CELL_DIAMETER_UM = 12.0


def synthetic_field(
    width: int = 2028,
    height: int = 1520,
    pixel_size_um: float = 0.2,
    white_cells: int = 4,
    seed: int = 0,
) -> tuple[BgrImage, list[tuple[float, float]]]:
    """The field and the (x, y) pixel centres of its white cells."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = (215, 212, 222)
    r_red = RED_CELL_DIAMETER_UM / pixel_size_um / 2
    area = width * height
    for _ in range(int(0.55 * area / (np.pi * r_red**2))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        r = r_red * rng.uniform(0.9, 1.1)
        colour = tuple(int(c) for c in rng.normal((175, 160, 215), 6))
        cv2.circle(image, (int(x), int(y)), int(r), colour, -1, cv2.LINE_AA)
        cv2.circle(image, (int(x), int(y)), int(r * 0.35), (190, 180, 220), -1, cv2.LINE_AA)
    r_white = WHITE_CELL_DIAMETER_UM / pixel_size_um / 2
    centres = []
    for _ in range(white_cells):
        x = rng.uniform(r_white, width - r_white)
        y = rng.uniform(r_white, height - r_white)
        cv2.circle(image, (int(x), int(y)), int(r_white), (215, 185, 200), -1, cv2.LINE_AA)
        for _ in range(3):
            dx, dy = rng.normal(0, r_white * 0.3, 2)
            cv2.circle(
                image,
                (int(x + dx), int(y + dy)),
                int(r_white * 0.35),
                (150, 60, 95),
                -1,
                cv2.LINE_AA,
            )
        centres.append((float(x), float(y)))
    blurred = cv2.GaussianBlur(image, (0, 0), 0.8).astype(np.float64)
    noisy = np.clip(blurred + rng.normal(0, 2.0, blurred.shape), 0, 255).astype(np.uint8)
    return noisy, centres
