"""The daemon end to end: ``algocyte-agent run`` on the simulated analyzer, driven over MQTT.

One daemon process serves the whole module (the tests run in file order and share
it): it starts under a fake systemd notify socket, runs a full sample whose results
are validated against their schemas, answers get_result, get_cell_image and
reclassify, aborts a sample on request, refuses hundreds of malformed requests, and
finally stops on SIGTERM in the middle of a sample.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent.report.classes import WBC_CLASSES
from agent.report.model import Report
from agent.report.store import SampleStore
from agent.transport.replay import is_replayed
from tests.broker import Broker, Watcher, running_broker, wait_for
from tests.daemon_support import (
    BASE,
    DEVICE,
    TARGET,
    DaemonProcess,
    NotifySocket,
    Requester,
    results_for,
    sim_config_text,
    wait_result,
    write_config,
)
from tests.test_fhir import validate as validate_fhir
from tests.test_mqtt_fuzz import CASES, ISSUE_16_REQUEST, NO_TX

# A real daemon process, a real broker and two or three simulated samples: ~1 minute.
pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parent.parent / "docs"
WATCHDOG_USEC = 2_000_000
"""The fake systemd asks for a 2 s watchdog: the daemon pings every second."""


@dataclass
class Setup:
    broker: Broker
    watcher: Watcher
    requester: Requester
    daemon: DaemonProcess
    notify: NotifySocket
    state_dir: Path
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("e2e")
    state_dir = tmp / "state"
    with running_broker(tmp / "broker") as broker:
        notify = NotifySocket(tmp / "notify.sock")
        watcher = Watcher(broker.port, f"{BASE}/#")
        config = write_config(tmp / "agent.yaml", sim_config_text(state_dir, broker.port))
        daemon = DaemonProcess(
            config,
            tmp / "daemon.log",
            env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)},
        )
        try:
            daemon.wait_ready()
            watcher.wait_topic(f"{BASE}/availability")
            yield Setup(broker, watcher, Requester(watcher), daemon, notify, state_dir)
        finally:
            daemon.stop()
            watcher.close()
            notify.close()


def test_ready_after_the_health_check_then_watchdog_pings(setup: Setup) -> None:
    ready = setup.notify.times("READY=1")
    assert len(ready) == 1
    status = [text for _, text in setup.notify.lines() if text.startswith("STATUS=")]
    assert status[0].startswith("STATUS=idle")
    wait_for(lambda: len(setup.notify.times("WATCHDOG=1")) >= 3, 10, "three watchdog pings")
    pings = setup.notify.times("WATCHDOG=1")
    assert pings[0] > ready[0]
    gaps = np.diff(pings)
    assert gaps.max() < WATCHDOG_USEC / 1e6, gaps  # always within the watchdog period
    assert "ready: idle" in setup.daemon.log

    availability = setup.watcher.on(f"{BASE}/availability")
    assert availability[-1].payload == b"online"
    info = setup.watcher.wait_topic(f"{BASE}/info")[-1].json()
    assert info["device_id"] == DEVICE
    assert {m["name"] for m in info["models"]} >= {"detector"}
    assert all(len(m["sha256"]) == 64 for m in info["models"])
    assert info["result_schema_version"] == "1.0"
    assert set(info["commands"]) >= {"start_sample", "abort", "reclassify", "get_cell_image"}
    state = setup.requester.call("status")
    assert state["status"] == "ok" and state["data"]["state"] == "idle"


def test_a_full_sample_publishes_one_valid_report_and_one_fhir_bundle(setup: Setup) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    req = setup.requester
    accepted = req.call("start_sample", sample_id="S-FULL", accession="ACC-1")
    assert accepted["status"] == "ok", accepted
    assert accepted["data"] == {"accepted": True, "sample_id": "S-FULL", "target_wbc": TARGET}
    busy = req.call("start_sample", sample_id="S-OTHER")
    assert busy["status"] == "error" and "busy" in busy["error"], busy

    report = wait_result(setup.watcher, "S-FULL")
    time.sleep(0.5)  # a duplicate, if any, would arrive now
    plain = results_for(setup.watcher, "S-FULL")
    fhir = [
        m
        for m in setup.watcher.on(f"{BASE}/results/fhir")
        if report["result_id"] in m.json()["identifier"]["value"]
    ]
    assert len(plain) == 1 and len(fhir) == 1
    assert not is_replayed(plain[0].payload)

    schema = json.loads((DOCS / "report.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(report, schema)
    parsed = Report.model_validate(report)
    validate_fhir(fhir[0].json())

    assert parsed.status == "preliminary" and parsed.accession == "ACC-1"
    assert parsed.wbc_counted >= TARGET
    assert set(parsed.differential) == set(WBC_CLASSES)
    assert parsed.truth is not None and sum(parsed.truth.get(c, 0) for c in WBC_CLASSES) > 0
    t = parsed.timings
    assert t.total_s > 0 and t.acquisition_s > 0 and t.analysis_s > 0
    assert parsed.provenance.device_id == DEVICE
    assert len(parsed.provenance.models) == 2
    assert parsed.provenance.finished_at is not None

    progress = [m.json() for m in setup.watcher.on(f"{BASE}/progress")]
    ours = [p for p in progress if p["sample_id"] == "S-FULL"]
    assert ours and ours[-1]["wbc_found"] >= TARGET and ours[-1]["target_wbc"] == TARGET
    assert [p["fields_scanned"] for p in ours] == sorted(p["fields_scanned"] for p in ours)
    phases = [
        m.json()["phase"]
        for m in setup.watcher.on(f"{BASE}/state")
        if m.json()["sample_id"] == "S-FULL"
    ]
    assert "scanning" in phases and "reporting" in phases
    wait_for(
        lambda: setup.watcher.on(f"{BASE}/state")[-1].json()["state"] == "idle",
        10,
        "the daemon to be idle again",
    )

    folder = setup.state_dir / "samples" / "S-FULL"
    assert (folder / "scan-map.png").is_file()
    assert list(folder.glob("gallery-*.png"))
    assert len(list((folder / "cells").glob("*.png"))) >= TARGET
    setup.reports["S-FULL"] = report


def test_get_result_get_cell_image_reclassify_and_finalize(setup: Setup) -> None:
    original = setup.reports.get("S-FULL")
    if original is None:
        pytest.skip("needs the full sample of the previous test")
    req = setup.requester
    got = req.call("get_result", sample_id="S-FULL")
    assert got["status"] == "ok" and got["data"]["result_id"] == original["result_id"]
    wait_for(lambda: len(results_for(setup.watcher, "S-FULL")) == 2, 10, "the re-published report")
    again = results_for(setup.watcher, "S-FULL")[1]
    assert is_replayed(again.payload) and again.json()["result_id"] == original["result_id"]

    image = req.call("get_cell_image", sample_id="S-FULL", cell_id=1)
    assert image["status"] == "ok", image
    png = base64.b64decode(image["data"]["png_base64"])
    crop = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert crop is not None and crop.shape[0] > 20 and crop.shape[1] > 20
    missing = req.call("get_cell_image", sample_id="S-FULL", cell_id=99999)
    assert missing["status"] == "error" and "no cell" in missing["error"]

    store = SampleStore(setup.state_dir, DEVICE)
    try:
        cell = store.cells("S-FULL")[0]
    finally:
        store.close()
    new_label = "monocyte" if cell.effective_label != "monocyte" else "lymphocyte"
    amended = req.call(
        "reclassify", sample_id="S-FULL", cell_id=cell.cell_id, label=new_label, reviewer="dr who"
    )
    assert amended["status"] == "ok", amended
    assert amended["data"]["status"] == "amended"
    assert amended["data"]["supersedes"] == original["result_id"]
    doc = wait_result(setup.watcher, "S-FULL", status="amended", timeout=10)
    assert doc["result_id"] == amended["data"]["result_id"]
    assert doc["supersedes"] == original["result_id"]
    assert doc["audit"][-1]["new_label"] == new_label and doc["audit"][-1]["reviewer"] == "dr who"
    wait_for(
        lambda: any(
            doc["result_id"] in m.json()["identifier"]["value"]
            for m in setup.watcher.on(f"{BASE}/results/fhir")
        ),
        10,
        "the amended FHIR bundle",
    )
    store = SampleStore(setup.state_dir, DEVICE)
    try:
        versions = [r.result_id for r in store.reports("S-FULL")]
    finally:
        store.close()
    assert versions == [original["result_id"], doc["result_id"]]  # the original is kept

    signed = req.call("finalize", sample_id="S-FULL", reviewer="dr who")
    assert signed["status"] == "ok", signed
    assert signed["data"]["status"] == "final"
    assert signed["data"]["supersedes"] == doc["result_id"]
    final = wait_result(setup.watcher, "S-FULL", status="final", timeout=10)
    assert final["result_id"] == signed["data"]["result_id"]
    again = req.call("finalize", sample_id="S-FULL", reviewer="dr who")
    assert again["status"] == "error"  # a final result cannot be signed off twice


def test_abort_stops_a_running_sample_with_an_aborted_report(setup: Setup) -> None:
    req = setup.requester
    nothing = req.call("abort")
    assert nothing["status"] == "error" and "no sample is running" in nothing["error"]
    assert req.call("start_sample", sample_id="S-ABORT")["status"] == "ok"
    wrong = req.call("abort", sample_id="S-NOT-THIS")
    assert wrong["status"] == "error" and "S-ABORT" in wrong["error"]
    aborting = req.call("abort", sample_id="S-ABORT")
    assert aborting["status"] == "ok" and aborting["data"]["sample_id"] == "S-ABORT"
    report = wait_result(setup.watcher, "S-ABORT", timeout=30)
    assert report["status"] == "aborted"
    assert report["reason"] == "aborted on request (abort command)"
    assert report["differential"] == {}
    wait_for(
        lambda: setup.watcher.on(f"{BASE}/state")[-1].json()["state"] == "idle",
        10,
        "the daemon to be idle again",
    )
    events = [m.json() for m in setup.watcher.on(f"{BASE}/events")]
    assert any(e["code"] == "sample.aborted" and e["sample_id"] == "S-ABORT" for e in events)


def test_home_and_self_test(setup: Setup) -> None:
    req = setup.requester
    assert req.call("self_test")["status"] == "ok"
    setup.watcher.wait(
        lambda msgs: any(
            m.topic == f"{BASE}/events" and m.json()["code"] == "self_test.passed" for m in msgs
        ),
        20,
        "the self-test result",
    )
    wait_for(lambda: req.call("status")["data"]["state"] == "idle", 10, "idle after the self-test")
    assert req.call("home")["status"] == "ok"
    wait_for(lambda: req.call("status")["data"]["state"] == "idle", 20, "idle after homing")
    states = [m.json() for m in setup.watcher.on(f"{BASE}/state")]
    assert any(s["state"] == "maintenance" and s["phase"] == "homing" for s in states)


def test_malformed_requests_each_get_an_error_and_the_daemon_still_answers(setup: Setup) -> None:
    watcher = setup.watcher
    cases = list(CASES)
    assert len(cases) >= 200
    try:
        for case in cases:
            topic = f"{BASE}/response/{case.command}"
            before = len(watcher.on(topic))
            watcher.publish(f"{BASE}/request/{case.command}", case.payload, retain=case.retain)
            reply = watcher.wait_topic(topic, before + 1)[before].json()
            assert reply["status"] == "error" and reply["error"], (case, reply)
            expected = None if case.transaction is NO_TX else case.transaction
            assert reply["transaction"] == expected, (case, reply)
    finally:
        for case in cases:  # retained requests stay on the broker: remove them
            if case.retain:
                watcher.publish(f"{BASE}/request/{case.command}", b"", retain=True)
    status = setup.requester.call("status")
    assert status["status"] == "ok" and status["data"]["state"] == "idle"
    assert setup.daemon.proc.poll() is None
    started = [m for m in watcher.on(f"{BASE}/state") if m.json()["sample_id"] in ("S", "S-1")]
    assert not started  # no malformed request started anything


def test_the_request_with_a_lone_surrogate_is_refused_and_status_answers_after(
    setup: Setup,
) -> None:
    """Issue 16: this request once ended the command thread; no request was answered after."""
    watcher, topic = setup.watcher, f"{BASE}/response/status"
    log_from = len(setup.daemon.log)
    assert ISSUE_16_REQUEST == b'{"transaction": "mal-0439\\ud800", "bogus": 1}'
    before = len(watcher.on(topic))
    watcher.publish(f"{BASE}/request/status", ISSUE_16_REQUEST)
    reply = watcher.wait_topic(topic, before + 1)[before].json()
    assert reply["status"] == "error" and reply["data"] is None
    assert reply["transaction"] == '"mal-0439\\ud800"'  # its JSON text, escaped
    assert "lone UTF-16 surrogate" in reply["error"]
    status = setup.requester.call("status")
    assert status["status"] == "ok" and status["data"]["state"] == "idle"
    assert "Traceback" not in setup.daemon.log[log_from:]


def test_sigterm_aborts_the_sample_says_stopping_and_goes_offline(setup: Setup) -> None:
    req = setup.requester
    assert req.call("start_sample", sample_id="S-TERM")["status"] == "ok"
    wait_for(
        lambda: any(
            m.json()["sample_id"] == "S-TERM" and m.json()["phase"] in ("surveying", "scanning")
            for m in setup.watcher.on(f"{BASE}/state")
        ),
        20,
        "the sample to be scanning",
    )
    assert setup.daemon.terminate() == 0
    report = wait_result(setup.watcher, "S-TERM", timeout=10)
    assert report["status"] == "aborted" and report["reason"] == "daemon stopped"
    lines = [text for _, text in setup.notify.lines()]
    assert "STOPPING=1" in lines
    wait_for(
        lambda: setup.watcher.on(f"{BASE}/availability")[-1].payload == b"stopped",
        10,
        "availability 'stopped'",
    )
    late = Watcher(setup.broker.port, f"{BASE}/availability")  # what a new subscriber sees
    try:
        retained = late.wait_topic(f"{BASE}/availability")[0]
    finally:
        late.close()
    assert retained.payload == b"stopped" and retained.retain
