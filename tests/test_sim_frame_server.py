"""The frame server and its client: frames cross processes intact; failures are clear."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from drivers.camera.base import CameraSettings
from drivers.camera.simulated import SimulatedCameraClient
from drivers.errors import DeviceConnectionError, UnsupportedFeatureError
from drivers.sim.camera_model import ManualStage, VirtualCamera
from drivers.sim.cell_library import DEMO_LIBRARY, CellLibrary
from drivers.sim.config import SimulatorConfig
from drivers.sim.frame_protocol import parse_address
from drivers.sim.frame_server import FrameServer
from drivers.sim.slide import VirtualSlide
from drivers.stage.base import Position

W, H = 400, 300


@pytest.fixture(scope="module")
def slide() -> VirtualSlide:
    return VirtualSlide(SimulatorConfig(seed=5), CellLibrary(DEMO_LIBRARY))


@pytest.fixture
def served(slide: VirtualSlide, tmp_path: Path) -> Iterator[tuple[FrameServer, VirtualCamera]]:
    stage = ManualStage(Position(30_000.0, 12_000.0, 2_500.0))
    cam = VirtualCamera(slide, stage, SimulatorConfig().optics, width=W, height=H)
    server = FrameServer(cam, f"unix://{tmp_path / 'sock' / 'cam.sock'}")
    server.start()
    yield server, cam
    server.stop()


def client(address: str) -> SimulatedCameraClient:
    return SimulatedCameraClient(address, open_timeout_s=2.0, capture_timeout_s=5.0)


def test_frames_arrive_bit_exact(served: tuple[FrameServer, VirtualCamera]) -> None:
    server, cam = served
    c = client(server.address)
    c.configure(CameraSettings(W, H, exposure_us=3000))
    frame = c.capture()
    expected = cam.render(Position(30_000.0, 12_000.0, 2_500.0), 700, capture_index=0)
    assert np.array_equal(frame.image, expected)
    assert frame.metadata.exposure_us == 3000
    assert frame.metadata.extra["capture_index"] == 0.0
    c.close()


def test_tcp_with_a_free_port(slide: VirtualSlide) -> None:
    cam = VirtualCamera(slide, ManualStage(), SimulatorConfig().optics, width=W, height=H)
    with FrameServer(cam, "tcp://127.0.0.1:0") as server:
        assert parse_address(server.address).port > 0
        c = client(server.address)
        assert c.capture().image.shape == (H, W, 3)
        c.close()


def test_device_errors_cross_the_socket(served: tuple[FrameServer, VirtualCamera]) -> None:
    server, _ = served
    c = client(server.address)
    with pytest.raises(UnsupportedFeatureError, match="4056x3040"):
        c.configure(CameraSettings(9000, 9000))
    # The connection is still usable after a refused request.
    assert c.capture().image.shape == (H, W, 3)
    c.close()
    with pytest.raises(DeviceConnectionError, match="closed"):
        c.capture()


def test_client_survives_a_server_restart(
    slide: VirtualSlide, served: tuple[FrameServer, VirtualCamera]
) -> None:
    server, _ = served
    address = server.address
    c = client(address)
    c.configure(CameraSettings(W // 2, H // 2))
    assert c.capture().image.shape == (H // 2, W // 2, 3)
    server.stop()
    with pytest.raises(DeviceConnectionError, match="algocyte-agent sim"):
        c.capture()
    cam2 = VirtualCamera(slide, ManualStage(), SimulatorConfig().optics, width=W, height=H)
    with FrameServer(cam2, address):
        # Reconnected, and the last settings were sent again.
        assert c.capture().image.shape == (H // 2, W // 2, 3)
    c.close()


def test_garbage_does_not_take_the_server_down(served: tuple[FrameServer, VirtualCamera]) -> None:
    server, _ = served
    path = parse_address(server.address).path
    for junk in (b"\xff\xff\xff\xff", struct.pack(">I", 5) + b"nope!", b"\x00\x00"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(junk)
        s.close()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    body = b'{"op": "dance"}'
    s.sendall(struct.pack(">I", len(body)) + body)
    s.settimeout(5)
    reply = s.recv(4096)
    assert b"unknown op" in reply
    s.close()
    c = client(server.address)
    assert c.capture().image.shape == (H, W, 3)
    c.close()


def test_second_server_on_a_live_socket_is_refused(
    slide: VirtualSlide, served: tuple[FrameServer, VirtualCamera]
) -> None:
    server, cam = served
    with pytest.raises(DeviceConnectionError, match="already listening"):
        FrameServer(cam, server.address).start()


def test_stale_socket_file_is_replaced(slide: VirtualSlide, tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: what a killed server leaves
    cam = VirtualCamera(slide, ManualStage(), SimulatorConfig().optics, width=W, height=H)
    with FrameServer(cam, f"unix://{path}") as server:
        c = client(server.address)
        assert c.capture().image.shape == (H, W, 3)
        c.close()
    assert not path.exists()


@pytest.mark.parametrize("bad", ["unix://relative.sock", "tcp://nohost", "http://x:1", "/tmp/x"])
def test_bad_addresses_are_refused(bad: str) -> None:
    with pytest.raises(DeviceConnectionError, match=r"expected|absolute"):
        client(bad)
