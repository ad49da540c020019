"""Image files named on a command line: the one listing and decoding rule of the CLI.

``classify`` and ``analyze`` both take files and directories; both must find the same
images in a directory and report an unreadable file the same way, so they share this.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from agent.errors import InputError
from drivers.camera.base import BgrImage

_log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
"""Matched case-insensitively."""


def image_inputs(paths: Sequence[Path]) -> Iterator[Path | InputError]:
    """Each named file, and the images under each named directory (recursive, sorted).

    A named path that does not exist yields an ``InputError`` in its place, so the
    caller reports it like any other bad file and goes on with the rest.
    """
    for path in paths:
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
            if not found:
                _log.warning("%s: no images found", path)
            yield from found
        elif path.exists():
            yield path
        else:
            yield InputError(f"{path}: no such file or directory")


def read_image(path: Path) -> BgrImage:
    """The image at ``path`` as 8-bit BGR, or an ``InputError`` naming the problem."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such file or directory") from e
    except OSError as e:
        raise InputError(f"{path}: cannot read file: {e.strerror or e}") from e
    if data.size == 0:
        raise InputError(f"{path}: empty file")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as e:
        raise InputError(f"{path}: not a readable image") from e
    if image is None or image.size == 0:
        raise InputError(f"{path}: not a readable image")
    return np.ascontiguousarray(image, dtype=np.uint8)
