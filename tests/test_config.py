"""Configuration validation: every bad file is rejected with file, line, key path and value."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from agent.config import AgentConfig, config_hash, default_config, load_config, parse_config
from agent.config.loader import EXAMPLE_CONFIG, packaged_config_text
from agent.errors import ConfigError

BAD_CONFIGS = [
    pytest.param(
        """
        device_id: a1
        acquisition:
          target_wbc: 900
        """,
        ["bad.yaml:4:", "acquisition.target_wbc", "less than or equal to 500", "900"],
        id="out-of-range",
    ),
    pytest.param(
        """
        device_id: a1
        acquisition:
          target_wbc: lots
        """,
        ["bad.yaml:4:", "acquisition.target_wbc", "valid integer", "'lots'"],
        id="wrong-type",
    ),
    pytest.param(
        """
        device_id: a1
        mqtt:
          hots: broker.local
        """,
        ["bad.yaml:4:", "mqtt.hots", "unknown key", "did you mean 'host'"],
        id="unknown-key-with-suggestion",
    ),
    pytest.param(
        """
        log_level: info
        """,
        ["bad.yaml:2:", "device_id", "required key is missing"],
        id="missing-required",
    ),
    pytest.param(
        """
        device_id: "has space"
        """,
        ["bad.yaml:2:", "device_id", "pattern", "'has space'"],
        id="bad-device-id",
    ),
    pytest.param(
        """
        device_id: a1
        stage:
          limits:
            x: {min_um: 100, max_um: 10}
        """,
        ["bad.yaml:5:", "stage.limits.x", "must be below max_um"],
        id="cross-field-limits",
    ),
    pytest.param(
        """
        device_id: a1
        camera:
          type: webcam
        """,
        ["bad.yaml:4:", "camera.type", "'picamera2', 'opencv' or 'simulated'", "'webcam'"],
        id="bad-enum",
    ),
    pytest.param(
        """
        device_id: a1
        camera:
          type: simulated
        """,
        ["bad.yaml:", "camera.type is 'simulated'", "no simulator section"],
        id="simulation-not-explicit",
    ),
    pytest.param(
        """
        device_id: a1
        mqtt:
          port: 70000
        """,
        ["bad.yaml:4:", "mqtt.port", "less than or equal to 65535", "70000"],
        id="port-range",
    ),
    pytest.param(
        """
        device_id: a1
        mqtt:
          tls:
            ca_file: /nonexistent/ca.crt
        """,
        ["bad.yaml:5:", "mqtt.tls.ca_file", "/nonexistent/ca.crt"],
        id="missing-file",
    ),
    pytest.param(
        """
        device_id: a1
        device_id: a2
        """,
        ["bad.yaml:3:", "device_id", "duplicate key", "line 2"],
        id="duplicate-key",
    ),
    pytest.param(
        """
        device_id: a1
        stage: [1, 2
        """,
        ["bad.yaml:", "not valid YAML"],
        id="yaml-syntax",
    ),
    pytest.param(
        """
        - device_id
        """,
        ["bad.yaml:1:", "expected a mapping"],
        id="not-a-mapping",
    ),
    pytest.param(
        """
        device_id: a1
        mqtt:
          reconnect_min_s: 30
          reconnect_max_s: 5
        """,
        ["bad.yaml:3:", "mqtt", "reconnect_min_s (30.0) exceeds reconnect_max_s (5.0)"],
        id="cross-field-backoff",
    ),
    pytest.param(
        """
        device_id: a1
        stage:
          limits:
            z: {min_um: 0}
        """,
        ["bad.yaml:5:", "stage.limits.z.max_um", "required key is missing"],
        id="missing-nested",
    ),
    pytest.param("", ["bad.yaml:1:", "empty"], id="empty-file"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS)
def test_bad_config_is_rejected_with_location(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = tmp_path / "bad.yaml"
    # Each literal starts with a newline, so its first key is on line 2 of the file.
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    for fragment in expected:
        assert fragment.replace("bad.yaml", str(path)) in message, message


def test_all_errors_reported_at_once_in_line_order() -> None:
    text = "device_id: a1\nacquisition:\n  target_wbc: 5\nmqtt:\n  port: 0\n  colour: red\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "multi.yaml")
    lines = str(info.value).splitlines()
    assert [line.split(":")[1] for line in lines] == ["3", "5", "6"]


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "nope.yaml")


def test_example_config_is_valid_and_documents_every_key() -> None:
    text = packaged_config_text(EXAMPLE_CONFIG)
    config = parse_config(text, EXAMPLE_CONFIG)
    assert config.device_id == "analyzer-01"
    # Every option of every section appears in the example, commented out or not,
    # so operators can discover it there.
    uncommented = "\n".join(line.replace("#", " ", 1) for line in text.splitlines())
    keys = _keys_of(AgentConfig)
    missing = [k for k in keys if f"{k}:" not in uncommented]
    assert not missing, f"example config does not mention: {missing}"


def _keys_of(model: type) -> set[str]:
    from pydantic import BaseModel

    from agent.config.loader import _unwrap_model

    keys: set[str] = set()
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        keys.add(name)
        sub = _unwrap_model(field.annotation, None)
        if sub is not None and issubclass(sub, BaseModel):
            keys |= _keys_of(sub)
    return keys


def test_embedded_default_is_the_simulator() -> None:
    config = default_config()
    assert config.simulator is not None
    assert config.camera.type == "simulated"
    assert config.stage.port == "simulator"
    assert "~" not in str(config.storage.state_dir)


def test_password_from_environment_and_credentials(tmp_path: Path) -> None:
    text = "device_id: a1\nmqtt:\n  username: lab\n"
    config = parse_config(text, "c.yaml", environ={"ALGOCYTE_MQTT_PASSWORD": "s3cret"})
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "s3cret"

    (tmp_path / "mqtt_password").write_text("fromcred\n", encoding="utf-8")
    config = parse_config(text, "c.yaml", environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "fromcred"

    # The file wins over the environment.
    text_with = text + "  password: infile\n"
    config = parse_config(text_with, "c.yaml", environ={"ALGOCYTE_MQTT_PASSWORD": "env"})
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "infile"


def test_tls_key_from_credentials_only_when_tls_configured(tmp_path: Path) -> None:
    (tmp_path / "mqtt_tls_key").write_text("KEY", encoding="utf-8")
    cert = tmp_path / "client.crt"
    cert.write_text("CERT", encoding="utf-8")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    config = parse_config("device_id: a1\n", "c.yaml", environ=env)
    assert config.mqtt.tls is None
    config = parse_config(
        f"device_id: a1\nmqtt:\n  tls:\n    cert_file: {cert}\n", "c.yaml", environ=env
    )
    assert config.mqtt.tls is not None
    assert config.mqtt.tls.key_file == tmp_path / "mqtt_tls_key"


def test_config_hash_is_stable_and_hides_secrets() -> None:
    a = parse_config("device_id: a1\nmqtt: {password: one}\n", "c.yaml", environ={})
    b = parse_config("device_id: a1\nmqtt: {password: two}\n", "c.yaml", environ={})
    c = parse_config("device_id: a1\nacquisition: {target_wbc: 300}\n", "c.yaml", environ={})
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(c)
    assert "one" not in yaml.safe_dump(a.model_dump(mode="json"))
