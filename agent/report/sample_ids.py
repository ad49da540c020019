"""Sample ids: typed by users or read from barcodes, so checked before they name a folder.

A sample id becomes a directory name under ``<state_dir>/samples/``; an id such as
``../../etc`` must never reach the filesystem. The allowed alphabet is that of
laboratory barcodes (letters, digits, ``_ . : -``), starting with a letter or digit,
so an id can contain no path separator and can be neither ``.`` nor ``..`` nor a
hidden name.
"""

from __future__ import annotations

import re
from pathlib import Path

from agent.errors import InputError

SAMPLE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
"""What a sample id may look like (also for MQTT command validation)."""

_SAMPLE_ID = re.compile(SAMPLE_ID_PATTERN)


def validate_sample_id(sample_id: object) -> str:
    """``sample_id`` if it is acceptable, else an ``InputError`` that says why."""
    if not isinstance(sample_id, str):
        raise InputError(f"sample id must be text, got {type(sample_id).__name__}")
    if not _SAMPLE_ID.fullmatch(sample_id):
        shown = sample_id if len(sample_id) <= 80 else sample_id[:77] + "..."
        raise InputError(
            f"sample id {shown!r} is not allowed: use 1-64 letters, digits, '_', '.', ':' or "
            "'-', starting with a letter or digit"
        )
    return sample_id


def sample_folder(samples_root: Path, sample_id: str) -> Path:
    """The folder of ``sample_id`` under ``samples_root``, checked to stay inside it."""
    validate_sample_id(sample_id)
    root = samples_root.resolve()
    folder = (root / sample_id).resolve()
    if folder.parent != root:
        raise InputError(f"sample id {sample_id!r} does not name a folder inside {root}")
    return folder
