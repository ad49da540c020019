"""``algocyte-agent classify`` as a user and a parsing tool see it (real model, real files)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.vision.model_card import shipped_models_dir
from tests.conftest import agent_cli

CELLS = Path(__file__).parent / "fixtures" / "cells"
KEYS = {"path", "label", "top_label", "confidence", "probabilities"}


def cell(cls: str) -> Path:
    return sorted((CELLS / cls).glob("*.jpg"))[0]


@pytest.fixture(scope="module")
def expected() -> dict[str, str]:
    """What the runtime API names each class's first fixture cell: the CLI must agree.

    The fixtures are not chosen by the model (tests/test_classifier.py checks accuracy),
    so the command is held to the API's answer, not to the true class.
    """
    import cv2

    from agent.vision.classifier import CellClassifier

    clf = CellClassifier.load(threads=1)
    names = sorted(p.name for p in CELLS.iterdir() if p.is_dir())
    calls = clf.classify([cv2.imread(str(cell(n))) for n in names])
    return {n: c.top_label for n, c in zip(names, calls, strict=True)}


def json_lines(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_json_output_has_the_documented_shape(expected: dict[str, str]) -> None:
    result = agent_cli("classify", "--json", str(cell("eosinophil")), str(cell("lymphocyte")))
    assert result.returncode == 0, result.stderr
    rows = json_lines(result.stdout)
    assert [r["path"] for r in rows] == [str(cell("eosinophil")), str(cell("lymphocyte"))]
    assert [r["top_label"] for r in rows] == [expected["eosinophil"], expected["lymphocyte"]]
    for r in rows:
        assert set(r) == KEYS
        probs = r["probabilities"]
        assert isinstance(probs, dict) and len(probs) == 8
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
        assert r["confidence"] == pytest.approx(max(probs.values()), abs=1e-6)
        assert r["label"] in (r["top_label"], "unidentified")


def test_directories_are_searched_recursively(tmp_path: Path, expected: dict[str, str]) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(cell("neutrophil"), tmp_path / "n.JPG")
    shutil.copy(cell("monocyte"), tmp_path / "a" / "b" / "m.jpeg")
    png = tmp_path / "a" / "p.PNG"
    import cv2

    cv2.imwrite(str(png), cv2.imread(str(cell("platelet"))))
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    result = agent_cli("classify", "--json", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = {Path(str(r["path"])).name: r["top_label"] for r in json_lines(result.stdout)}
    assert rows == {
        "n.JPG": expected["neutrophil"],
        "m.jpeg": expected["monocyte"],
        "p.PNG": expected["platelet"],
    }


def test_a_corrupt_file_is_reported_and_the_rest_still_classified(
    tmp_path: Path, expected: dict[str, str]
) -> None:
    good = tmp_path / "good.jpg"
    shutil.copy(cell("basophil"), good)
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage, not a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    result = agent_cli("classify", "--json", str(tmp_path), str(tmp_path / "missing.jpg"))
    assert result.returncode != 0
    rows = json_lines(result.stdout)
    assert [Path(str(r["path"])).name for r in rows] == ["good.jpg"]
    assert rows[0]["top_label"] == expected["basophil"]
    for name in ("corrupt.jpg", "empty.png", "missing.jpg"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr


def test_table_output_is_aligned(expected: dict[str, str]) -> None:
    result = agent_cli("classify", str(cell("ig")), str(cell("erythroblast")))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[0] == "label" and lines[0].rstrip().endswith("path")
    assert len(lines) == 3
    assert {line.index(str(cell("ig").parent.parent)) for line in lines[1:]} == {
        lines[0].index("path")
    }
    assert lines[1].split()[2] == expected["ig"]
    assert lines[2].split()[2] == expected["erythroblast"]


def test_pixel_size_option_rescales(tmp_path: Path, expected: dict[str, str]) -> None:
    import cv2

    image = cv2.imread(str(cell("neutrophil")))
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC))
    result = agent_cli("classify", "--json", "--pixel-size", "0.1", str(big))
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout)[0]["top_label"] == expected["neutrophil"]
    bad = agent_cli("classify", "--pixel-size", "0", str(big))
    assert bad.returncode != 0 and "pixel-size" in bad.stderr


def test_config_models_dir_is_honoured(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for name in ("classifier.card.json", "classifier.int8.onnx"):
        shutil.copy(shipped_models_dir() / name, models / name)
    (models / "classifier.int8.onnx").write_bytes(b"swapped")
    config = tmp_path / "agent.yaml"
    config.write_text(f"device_id: test\nvision:\n  models_dir: {models}\n  threads: 1\n")
    result = agent_cli("classify", "--config", str(config), str(cell("neutrophil")))
    assert result.returncode == 1
    assert "does not match its model card" in result.stderr
    assert "Traceback" not in result.stderr
