"""``algocyte-agent sim`` as its own process: reachable with plain pyserial and the camera client.

Started as a user would, its printed addresses are used to home and move the stage
with raw GRBL bytes and to capture a frame; it stops cleanly on SIGTERM and SIGINT,
cleans up, and starts again.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import serial

from drivers.camera.simulated import SimulatedCameraClient
from drivers.sim.frame_protocol import parse_address
from tests.conftest import REPO

# Starting the simulator and moving its stage in real time takes several seconds.
pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 60.0


class SimProcess:
    def __init__(self, *args: str) -> None:
        exe = shutil.which("algocyte-agent", path=str(Path(sys.executable).parent))
        assert exe is not None
        self.proc = subprocess.Popen(
            [exe, "sim", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.printed: dict[str, str] = {}
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while "camera" not in self.printed or "stage port" not in self.printed:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                raise AssertionError("sim printed no addresses in time") from None
            key, sep, value = line.partition(": ")
            if sep and key in ("stage port", "camera"):
                self.printed[key] = value.strip()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=20)


def grbl(port: serial.Serial, line: str, timeout: float = 60.0) -> str:
    """Send one line, return everything up to its 'ok' (or raise on 'error')."""
    port.write(line.encode() + b"\n")
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += port.read(port.in_waiting or 1)
        if b"ok\r\n" in got or b"error:" in got or b"ALARM" in got:
            break
    text = got.decode(errors="replace")
    assert "ok" in text and "error" not in text, (line, text)
    return text


def wait_idle(port: serial.Serial, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        port.write(b"?")
        time.sleep(0.2)
        report = port.read(port.in_waiting or 1).decode(errors="replace")
        if "<Idle" in report:
            return report
    raise AssertionError("stage never became idle")


def drive_and_capture(sim: SimProcess) -> np.ndarray:
    with serial.Serial(sim.printed["stage port"], 115200, timeout=0.5) as port:
        time.sleep(0.3)
        port.reset_input_buffer()
        grbl(port, "$H")
        grbl(port, "G90 G21")
        grbl(port, "G0 X30 Y12.5 Z2.5")
        grbl(port, "M3 S700")
        report = wait_idle(port)
        assert "MPos:30.000,12.500,2.500" in report
    camera = SimulatedCameraClient(sim.printed["camera"], open_timeout_s=5, capture_timeout_s=30)
    try:
        image = camera.capture().image
    finally:
        camera.close()
    return image


def test_sim_process_serves_stage_and_camera_and_restarts() -> None:
    sim = SimProcess()
    try:
        assert os.path.exists(sim.printed["stage port"])
        image = drive_and_capture(sim)
        assert image.shape == (1520, 2028, 3)
        # The monolayer at 30 mm: red cells (darker than the glass in green) over much of it.
        green = image[..., 1].astype(np.float32)
        dark = (green < 0.85 * np.percentile(green, 99.5)).mean()
        assert 0.2 < dark < 0.9
    finally:
        rc = sim.stop(signal.SIGTERM)
    assert rc == 0
    socket_path = parse_address(sim.printed["camera"]).path
    assert not os.path.exists(socket_path)
    assert not os.path.exists(sim.printed["stage port"])

    again = SimProcess("--seed", "4")
    try:
        assert again.printed["camera"] != sim.printed["camera"]
        camera = SimulatedCameraClient(
            again.printed["camera"], open_timeout_s=5, capture_timeout_s=30
        )
        assert camera.capture().image.shape == (1520, 2028, 3)
        camera.close()
    finally:
        assert again.stop(signal.SIGINT) == 0


def test_sim_json_output_and_fixed_addresses(tmp_path: Path) -> None:
    link = tmp_path / "ttyGRBL"
    sim_proc = subprocess.Popen(
        [
            shutil.which("algocyte-agent", path=str(Path(sys.executable).parent))
            or "algocyte-agent",
            "sim",
            "--json",
            "--camera",
            "tcp://127.0.0.1:0",
            "--stage-link",
            str(link),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert sim_proc.stdout is not None
        line = sim_proc.stdout.readline()
        info = json.loads(line)
        assert info["stage_port"] == str(link)
        assert link.is_symlink()
        assert parse_address(info["camera"]).port > 0
        client = SimulatedCameraClient(info["camera"], open_timeout_s=5, capture_timeout_s=30)
        assert client.capture().image.ndim == 3
        client.close()
    finally:
        sim_proc.send_signal(signal.SIGTERM)
        assert sim_proc.wait(timeout=20) == 0
    assert not link.exists()


def test_killed_sim_restarts_on_the_same_camera_address(tmp_path: Path) -> None:
    address = f"unix://{tmp_path / 'camera.sock'}"
    first = SimProcess("--camera", address)
    assert first.printed["camera"] == address
    first.proc.kill()  # SIGKILL: no clean-up, the socket file stays behind
    first.proc.wait(timeout=20)
    assert (tmp_path / "camera.sock").exists()
    second = SimProcess("--camera", address)
    try:
        camera = SimulatedCameraClient(address, open_timeout_s=5, capture_timeout_s=30)
        assert camera.capture().image.ndim == 3
        camera.close()
    finally:
        assert second.stop(signal.SIGTERM) == 0


def test_sim_with_a_bad_cell_library_is_one_line_error(tmp_path: Path) -> None:
    exe = shutil.which("algocyte-agent", path=str(Path(sys.executable).parent)) or "algocyte-agent"
    result = subprocess.run(
        [exe, "sim", "--cells", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 1
    assert "cell library" in result.stderr and "not a directory" in result.stderr
    assert "Traceback" not in result.stderr
