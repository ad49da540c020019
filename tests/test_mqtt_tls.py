"""TLS with client certificates and a password file, on a real mosquitto; refusals are loud."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.errors import ConfigError
from agent.transport.commands import CommandArgs
from agent.transport.config import TlsConfig
from agent.transport.link import MqttLink
from agent.transport.outbox import Outbox
from tests.broker import (
    HOST,
    Broker,
    Certs,
    link_config,
    make_certs,
    running_broker,
    started_link,
    wait_for,
    watching,
)

BASE = "algocyte/dev-1"
USER, PASSWORD = "analyzer", "correct horse battery staple"


class NoCommands:
    def handle(self, command: str, args: CommandArgs) -> Any:
        return None


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def broker(tmp_path: Path, certs: Certs) -> Iterator[Broker]:
    with running_broker(tmp_path / "broker", certs=certs, username=USER, password=PASSWORD) as b:
        yield b


def tls_settings(
    broker: Broker,
    *,
    ca: Path,
    cert: Path,
    key: Path,
    password: str = PASSWORD,
) -> dict[str, Any]:
    assert broker.tls_port is not None
    return {
        "port": broker.tls_port,
        "username": USER,
        "password": password,
        "tls": TlsConfig(ca_file=ca, cert_file=cert, key_file=key),
    }


def test_connects_with_ca_client_certificate_and_password(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    settings = tls_settings(broker, ca=certs.ca, cert=certs.client_cert, key=certs.client_key)
    with watching(broker.port, f"{BASE}/#") as watcher:
        port = settings.pop("port")
        with started_link(port, tmp_path / "state", NoCommands(), **settings) as link:
            assert link.connected and link.last_error is None
            link.submit_result("tls-1", [("results", json.dumps({"result_id": "tls-1"}).encode())])
            assert watcher.wait_topic(f"{BASE}/results")[0].json() == {"result_id": "tls-1"}
            wait_for(lambda: link.outbox.count() == 0, what="PUBACK over TLS")
        assert watcher.wait_topic(f"{BASE}/availability", 2)[-1].payload == b"stopped"


def refused_link(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture, **tls: Path | str
) -> tuple[str, list[str]]:
    """Start a link that must be refused; return its error and the error log lines."""
    settings = tls_settings(broker, **tls)  # type: ignore[arg-type]
    port = settings.pop("port")
    caplog.set_level(logging.ERROR, logger="agent.transport")
    with started_link(port, tmp_path / "state", NoCommands(), wait=False, **settings) as link:
        error = wait_for(lambda: link.last_error, what="the connection to be refused")
        assert not link.connected
        assert not link.wait_connected(0.5)
        assert not link.connected
        events = [json.loads(r.payload) for r in link.outbox.pending() if r.kind == "event"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors, "a refused connection must be logged as an error"
    assert [e["code"] for e in events] == ["mqtt.refused"]  # once, to be delivered later
    assert events[0]["severity"] == "error"
    return str(error), errors


def test_wrong_password_is_a_clear_refusal_never_connected(
    broker: Broker, certs: Certs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    error, logged = refused_link(
        broker,
        tmp_path,
        caplog,
        ca=certs.ca,
        cert=certs.client_cert,
        key=certs.client_key,
        password="wrong",
    )
    assert "refused the connection" in error
    assert "password" in error.lower() or "authori" in error.lower()
    assert any("refused" in line for line in logged)
    assert PASSWORD not in error and "wrong" not in error


def test_client_certificate_from_an_unknown_ca_is_refused(
    broker: Broker, certs: Certs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    error, _ = refused_link(
        broker,
        tmp_path,
        caplog,
        ca=certs.ca,
        cert=certs.rogue_client_cert,
        key=certs.rogue_client_key,
    )
    assert "TLS" in error


def test_broker_certificate_not_signed_by_the_configured_ca_is_refused(
    broker: Broker, certs: Certs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rogue_ca = certs.rogue_client_cert.parent / "rogue-ca.crt"
    error, _ = refused_link(
        broker, tmp_path, caplog, ca=rogue_ca, cert=certs.client_cert, key=certs.client_key
    )
    assert "certificate" in error and "not trusted" in error


def test_key_that_does_not_match_the_certificate_is_a_config_error(
    certs: Certs, tmp_path: Path
) -> None:
    config = link_config(
        8883,
        tls=TlsConfig(
            ca_file=certs.ca, cert_file=certs.client_cert, key_file=certs.rogue_client_key
        ),
    )
    with Outbox.in_state_dir(tmp_path) as box:
        link = MqttLink(config, "dev-1", box, NoCommands())
        with pytest.raises(ConfigError, match=r"mqtt\.tls: cannot load client certificate"):
            link.start()
        assert not link.connected


def test_plain_connection_to_the_tls_port_is_not_treated_as_connected(
    broker: Broker, tmp_path: Path
) -> None:
    assert broker.tls_port is not None
    with started_link(
        broker.tls_port, tmp_path / "state", NoCommands(), wait=False, username=USER
    ) as link:
        wait_for(lambda: link.last_error, what="the failure to be reported")
        assert not link.connected
    assert HOST in str(link.last_error)
