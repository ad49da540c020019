"""The shipped systemd unit is valid and keeps the properties the service relies on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "algocyte-agent.service"


def _settings() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = ""
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = {}
            continue
        key, _, value = line.partition("=")
        sections[current].setdefault(key, []).append(value)
    return sections


def test_unit_has_notify_watchdog_restart_and_hardening() -> None:
    s = _settings()
    service, unit = s["Service"], s["Unit"]
    assert service["Type"] == ["notify"]
    assert float(service["WatchdogSec"][0]) > 0
    assert service["Restart"] == ["on-failure"]
    assert "StartLimitBurst" in unit and "StartLimitIntervalSec" in unit
    assert service["StateDirectory"] == ["algocyte"]
    assert set(service["SupplementaryGroups"][0].split()) >= {"dialout", "video"}
    assert service["User"] == ["algocyte"]
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "true",
        "NoNewPrivileges": "true",
        "PrivateTmp": "true",
    }.items():
        assert service[key] == [value], key
    # PrivateDevices would hide the serial port and the camera.
    assert "PrivateDevices" not in service
    assert service["ExecStart"][0].endswith("algocyte-agent run --config /etc/algocyte/agent.yaml")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    venv_bin = str(Path(sys.executable).parent)
    unit = tmp_path / "algocyte-agent.service"
    unit.write_text(
        UNIT.read_text(encoding="utf-8").replace("/opt/algocyte/venv/bin", venv_bin),
        encoding="utf-8",
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "algocyte-agent.service" in line
    ]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_install_script_is_valid_bash() -> None:
    result = subprocess.run(
        ["bash", "-n", str(REPO / "scripts" / "install.sh")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
