"""Secrets that may live outside the config file.

A password in a world-readable YAML file is a bad habit, so secrets can instead come
from an environment variable or a systemd credential (``LoadCredential=`` puts them
in ``$CREDENTIALS_DIRECTORY``). The file wins when it sets a value, then the
environment, then the credential.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import ConfigError


@dataclass(frozen=True)
class SecretSource:
    """Where one secret may come from when the file leaves it empty."""

    path: tuple[str, ...]
    env: str
    credential: str
    is_file_path: bool


SECRET_SOURCES: tuple[SecretSource, ...] = (
    SecretSource(("mqtt", "password"), "ALGOCYTE_MQTT_PASSWORD", "mqtt_password", False),
    SecretSource(("mqtt", "tls", "key_file"), "ALGOCYTE_MQTT_TLS_KEY_FILE", "mqtt_tls_key", True),
)


def _lookup(data: Mapping[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = data
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return False, None
        node = node[key]
    return True, node


def _parent_exists(data: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    found, parent = _lookup(data, path[:-1])
    return found and isinstance(parent, Mapping)


def fill_secrets(data: dict[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return ``data`` with secrets the file leaves empty filled from env or credentials.

    A secret is only filled where its section exists (no TLS key without a ``tls``
    section), so a stray environment variable cannot switch a feature on.
    """
    env = os.environ if environ is None else environ
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    for source in SECRET_SOURCES:
        found, value = _lookup(data, source.path)
        if found and value not in (None, ""):
            continue
        if not _parent_exists(data, source.path):
            continue
        secret: str | None = env.get(source.env) or None
        if secret is None and cred_dir:
            cred = Path(cred_dir) / source.credential
            if cred.is_file():
                if source.is_file_path:
                    secret = str(cred)
                else:
                    try:
                        secret = cred.read_text(encoding="utf-8").strip()
                    except OSError as e:
                        raise ConfigError(f"cannot read systemd credential {cred}: {e}") from e
        if secret is not None:
            _parent = data
            for key in source.path[:-1]:
                _parent = _parent[key]
            _parent[source.path[-1]] = secret
    return data
