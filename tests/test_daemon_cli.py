"""``algocyte-agent run`` without its hardware, and ``algocyte-agent demo`` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.report.model import Report
from tests.broker import free_port, running_broker, watching
from tests.conftest import agent_cli
from tests.daemon_support import BASE, TARGET, NotifySocket, sim_config_text, write_config


def test_run_without_its_hardware_exits_with_one_clear_line(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "agent.yaml",
        f"device_id: board-1\nstage: {{port: {tmp_path / 'no-such-tty'}, connect_timeout_s: 1}}\n"
        f"camera: {{type: opencv, device: '/dev/null'}}\nstorage: {{state_dir: {tmp_path / 's'}}}\n",
    )
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        result = agent_cli("run", "--config", str(config), env={"NOTIFY_SOCKET": str(notify.path)})
    finally:
        notify.close()
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("algocyte-agent:")]
    assert len(errors) == 1, result.stderr
    assert "stage controller on" in errors[0] and "no-such-tty" in errors[0]
    assert "Traceback" not in result.stderr
    lines = [text for _, text in notify.lines()]
    assert "READY=1" not in lines
    assert any(text.startswith("STATUS=failed to start: stage controller") for text in lines)


@pytest.mark.slow
def test_demo_prints_only_the_report_json_and_publishes_it(tmp_path: Path) -> None:
    # One simulated sample (about 15 s) with a broker listening.
    with running_broker(tmp_path / "broker") as broker:
        config = write_config(
            tmp_path / "agent.yaml", sim_config_text(tmp_path / "state", broker.port)
        )
        with watching(broker.port, f"{BASE}/#") as watcher:
            result = agent_cli("demo", "--config", str(config), "--json", "--seed", "5")
            assert result.returncode == 0, result.stderr
            report = Report.model_validate(json.loads(result.stdout))
            published = watcher.wait_topic(f"{BASE}/results")[0].json()
            watcher.wait_topic(f"{BASE}/results/fhir")
            availability = watcher.wait_topic(f"{BASE}/availability", 2)
    assert published["result_id"] == report.result_id
    assert report.status == "preliminary" and report.wbc_counted >= TARGET
    assert report.truth and report.sample_id.startswith("DEMO-")
    assert f"publishing to the MQTT broker at 127.0.0.1:{broker.port}" in result.stderr
    assert "delivered" in result.stderr
    # stderr is not a terminal here: plain progress lines, no carriage returns.
    assert "white cells," in result.stderr and "\r" not in result.stderr
    assert [m.payload for m in availability][-1] == b"stopped"


@pytest.mark.slow
def test_demo_without_a_broker_says_so_and_prints_the_table(tmp_path: Path) -> None:
    # One simulated sample (about 15 s) with nothing listening on the broker's port.
    config = write_config(tmp_path / "agent.yaml", sim_config_text(tmp_path / "state", free_port()))
    result = agent_cli("demo", "--config", str(config), "--target", "100")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "no MQTT broker" in line]
    assert len(notes) == 1 and "running without one" in notes[0]
    assert "Neutrophils" in result.stdout and "Truth %" in result.stdout
    assert "PRELIMINARY" in result.stdout
    assert "Traceback" not in result.stderr


def test_demo_rejects_a_target_out_of_range() -> None:
    result = agent_cli("demo", "--target", "50")
    assert result.returncode == 2
    assert "--target must be 100-500" in result.stderr
