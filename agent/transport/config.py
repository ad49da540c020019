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
    reconnect_min_s: float = Field(default=1.0, gt=0, le=60, description="First reconnect delay.")
    reconnect_max_s: float = Field(
        default=60.0, gt=0, le=3600, description="Longest reconnect delay."
    )

    @model_validator(mode="after")
    def _backoff_ordered(self) -> MqttConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) exceeds reconnect_max_s ({self.reconnect_max_s})"
            )
        return self
