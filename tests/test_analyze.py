"""``algocyte-agent analyze`` as tools outside the project use it: JSON lines, pixels, bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np

from agent.vision.boxes import match_detections
from tests.conftest import agent_cli

FIXTURES = Path(__file__).parent / "fixtures" / "detector"
FIELDS = json.loads((FIXTURES / "fields.json").read_text(encoding="utf-8"))
CELL_KEYS = {"bbox", "label", "top_label", "confidence"}


def _records(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines()]


def _check_record(record: dict[str, object]) -> np.ndarray:
    assert set(record) == {"path", "cells"}
    assert isinstance(record["path"], str)
    cells = record["cells"]
    assert isinstance(cells, list)
    boxes = []
    for cell in cells:
        assert set(cell) == CELL_KEYS
        assert isinstance(cell["label"], str) and cell["label"]
        assert isinstance(cell["top_label"], str) and cell["top_label"]
        assert 0.0 <= cell["confidence"] <= 1.0
        x0, y0, x1, y1 = cell["bbox"]
        assert x0 < x1 and y0 < y1
        boxes.append(cell["bbox"])
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def test_json_lines_for_a_directory_searched_recursively(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(FIXTURES / "bccd_00070.png", tmp_path / "a" / "b" / "one.png")
    shutil.copy(FIXTURES / "bccd_00110.png", tmp_path / "two.PNG")
    (tmp_path / "notes.txt").write_text("not an image", encoding="utf-8")
    result = agent_cli("analyze", "--json", str(tmp_path))
    assert result.returncode == 0, result.stderr
    records = _records(result.stdout)
    assert sorted(Path(str(r["path"])).name for r in records) == ["one.png", "two.PNG"]
    for record in records:
        boxes = _check_record(record)
        source = "bccd_00070.png" if str(record["path"]).endswith("one.png") else "bccd_00110.png"
        truth = np.asarray(FIELDS[source]["white_cells"])
        m = match_detections(boxes, np.ones(len(boxes)), truth, 0.5)
        assert m.false_negatives == 0 and m.false_positives == 0, record


def test_boxes_are_in_the_input_pixels_at_another_pixel_size(tmp_path: Path) -> None:
    image = cv2.imread(str(FIXTURES / "bccd_00070.png"))
    big = cv2.resize(image, None, fx=2.5, fy=2.5, interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(tmp_path / "big.png"), big)
    result = agent_cli("analyze", "--json", "--pixel-size", "0.08", str(tmp_path / "big.png"))
    assert result.returncode == 0, result.stderr
    (record,) = _records(result.stdout)
    boxes = _check_record(record)
    truth = np.asarray(FIELDS["bccd_00070.png"]["white_cells"]) * 2.5
    m = match_detections(boxes, np.ones(len(boxes)), truth, 0.5)
    assert m.false_negatives == 0 and m.false_positives == 0, boxes


def test_bad_files_are_reported_and_the_rest_analysed(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "bccd_00110.png", tmp_path / "good.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    missing = tmp_path / "missing.png"
    result = agent_cli("analyze", "--json", str(tmp_path), str(missing))
    assert result.returncode != 0
    records = _records(result.stdout)
    assert [Path(str(r["path"])).name for r in records] == ["good.png"]
    _check_record(records[0])
    errors = result.stderr.strip().splitlines()
    assert any("empty.jpg" in line and "empty" in line for line in errors), result.stderr
    assert any("corrupt.png" in line for line in errors), result.stderr
    assert any("missing.png" in line for line in errors), result.stderr
    assert "Traceback" not in result.stderr


def test_readable_summary_without_json() -> None:
    result = agent_cli("analyze", str(FIXTURES / "bccd_00070.png"))
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith(str(FIXTURES / "bccd_00070.png")) and "2 cells" in first


def test_nonsense_pixel_size_is_an_error() -> None:
    result = agent_cli("analyze", "--pixel-size", "-1", str(FIXTURES / "bccd_00070.png"))
    assert result.returncode != 0
    assert "pixel-size" in result.stderr and "Traceback" not in result.stderr
