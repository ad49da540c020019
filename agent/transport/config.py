"""Configuration of the MQTT link to the clinic."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, FilePath, SecretStr, model_validator

from drivers.config_model import StrictModel


class TlsConfig(StrictModel):
    """TLS towards the broker. Key paths may also come from systemd credentials."""

    ca_file: FilePath | None = Field(
        default=None, description="CA bundle that signed the broker's certificate."
    )
    cert_file: FilePath | None = Field(default=None, description="Client certificate (PEM).")
    key_file: Path | None = Field(
        default=None,
        description=(
            "Client private key (PEM). May instead come from $ALGOCYTE_MQTT_TLS_KEY_FILE or "
            "the systemd credential 'mqtt_tls_key'."
        ),
    )

    @model_validator(mode="after")
    def _cert_needs_key(self) -> TlsConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError(
                "key_file is set but cert_file is not: a client key needs its certificate"
            )
        return self


class MqttConfig(StrictModel):
    """The broker, credentials and topics."""

    enabled: bool = Field(default=True, description="Publish results and take commands over MQTT.")
    host: str = Field(default="localhost", min_length=1, description="Broker host name or address.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port (8883 for TLS).")
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        default="auto", description="MQTT version; 'auto' tries 5 and falls back to 3.1.1."
    )
    topic_root: str = Field(
        default="algocyte",
        pattern=r"^[^#+\s]+$",
        description="Topics are <topic_root>/<device_id>/...; no wildcards or spaces.",
    )
    username: str | None = Field(default=None, description="User name for the broker.")
    password: SecretStr | None = Field(
        default=None,
        description=(
            "Password; better left empty here and given as $ALGOCYTE_MQTT_PASSWORD or the "
            "systemd credential 'mqtt_password'."
        ),
    )
    tls: TlsConfig | None = Field(default=None, description="TLS settings; empty for plain TCP.")
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive (s).")
    reconnect_min_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description=(
            "Delay of the first reconnect attempts after a loss (s); later ones back off "
            "exponentially, each delay jittered between half and all of its step."
        ),
    )
    reconnect_max_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description=(
            "Longest reconnect delay (s): a result waits at most about this long after the "
            "broker is back."
        ),
    )
    client_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]{1,128}$",
        description=(
            "MQTT client id; empty means 'algocyte-<device_id>'. Must be unique on the broker: "
            "a second client with the same id disconnects the first."
        ),
    )
    connect_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Longest wait for the TCP and TLS handshake (s)."
    )
    session_expiry_s: int = Field(
        default=0,
        ge=0,
        le=4_294_967_295,
        description=(
            "How long the broker keeps this client's session (subscription and queued "
            "requests) while it is offline (s). 0 = a clean session on every connect, so "
            "requests sent while the analyzer was offline are not delivered later."
        ),
    )
    max_request_bytes: int = Field(
        default=65_536,
        ge=256,
        le=16_777_216,
        description="Largest request payload accepted (bytes); larger ones get an error response.",
    )
    command_max_age_s: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description=(
            "A request whose 'sent_at' is older than this (s) is refused as stale, so a "
            "start_sample queued during an outage does not run long after it was sent."
        ),
    )
    outbox_inflight: int = Field(
        default=10,
        ge=1,
        le=100,
        description=(
            "Most result/event messages published and not yet acknowledged (PUBACK) at once; "
            "the rest wait in the outbox, in order."
        ),
    )
    stop_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="On shutdown, longest wait for the broker to acknowledge 'stopped' (s).",
    )

    @model_validator(mode="after")
    def _backoff_ordered(self) -> MqttConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) exceeds reconnect_max_s ({self.reconnect_max_s})"
            )
        return self
