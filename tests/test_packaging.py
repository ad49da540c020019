"""A non-editable install carries everything the agent needs at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_contains_models_configs_and_demo_cells(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("algocyte_agent-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for card in REPO.glob("models/*.card.json"):
        assert f"models/{card.name}" in names
    for model in REPO.glob("models/*.int8.onnx"):
        assert f"models/{model.name}" in names
    assert "models/classifier.card.json" in names and "models/detector.card.json" in names
    assert not any(n.endswith(".fp32.onnx") for n in names)  # training outputs, not shipped
    assert {"agent/config/default.yaml", "agent/config/agent.example.yaml"} <= names
    demo = {n for n in names if n.startswith("drivers/sim/demo_cells/") and n.endswith(".jpg")}
    on_disk = list((REPO / "drivers/sim/demo_cells").rglob("*.jpg"))
    assert on_disk and len(demo) == len(on_disk)
    assert not any(n.startswith(("tests/", "scripts/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "algocyte-agent = agent.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
