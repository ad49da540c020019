"""Loading the YAML configuration into typed models, with errors an operator can act on.

Every problem is reported with the file, the line, the dotted key path, the bad value
and what was expected, and all problems are reported at once, before anything starts.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from agent.config.model import AgentConfig
from agent.config.secrets import fill_secrets
from agent.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/algocyte/agent.yaml")
"""Where the daemon looks for its configuration when ``--config`` is not given."""

EMBEDDED_DEFAULT = "default.yaml"
"""The simulated-analyzer configuration shipped inside the package (``make run``, ``demo``)."""

EXAMPLE_CONFIG = "agent.example.yaml"
"""The fully commented example configuration shipped inside the package."""

KeyPath = tuple[str | int, ...]


def _line_map(node: yaml.Node, source: str) -> dict[KeyPath, int]:
    """Map every key path to its 1-based line, rejecting duplicate keys on the way.

    PyYAML silently keeps the last of two equal keys; in a config file that hides a
    mistake, so it is an error here.
    """
    lines: dict[KeyPath, int] = {(): node.start_mark.line + 1}

    def walk(n: yaml.Node, path: KeyPath) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in n.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    dotted = _dotted((*path, key))
                    raise ConfigError(
                        f"{source}:{line}: {dotted}: duplicate key (first given on line {seen[key]})"
                    )
                seen[key] = line
                lines[(*path, key)] = line
                walk(value_node, (*path, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                lines[(*path, i)] = item.start_mark.line + 1
                walk(item, (*path, i))

    walk(node, ())
    return lines


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _resolve_loc(loc: tuple[str | int, ...], data: Any) -> KeyPath:
    """Turn pydantic's error location into the path as written in the file.

    Pydantic inserts union member names (e.g. ``function-after[...]`` or a tag) into
    locations; those segments do not exist in the file and are dropped.
    """
    path: list[str | int] = []
    node: Any = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        in_mapping = isinstance(node, Mapping) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_mapping or in_list:
            path.append(part)
            node = node[part]
        elif last:
            path.append(part)
        # else: a synthetic segment (union member, validator name): skip it
    return tuple(path)


def _unwrap_model(annotation: Any, value: Any) -> type[BaseModel] | None:
    """The model class an annotation holds, choosing a union member by its ``type`` tag."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap_model(typing.get_args(annotation)[0], value)
    if origin in (typing.Union, types.UnionType):
        members = [m for a in typing.get_args(annotation) if (m := _unwrap_model(a, value))]
        if isinstance(value, Mapping) and "type" in value:
            for m in members:
                tag = m.model_fields.get("type")
                if tag is not None and value["type"] in typing.get_args(tag.annotation):
                    return m
        return members[0] if members else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _allowed_keys(path: KeyPath, data: Any) -> list[str]:
    """The keys the model accepts at ``path``, for 'did you mean' hints."""
    model: type[BaseModel] | None = AgentConfig
    node: Any = data
    for part in path:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return []
        node = node.get(part) if isinstance(node, Mapping) else None
        model = _unwrap_model(model.model_fields[part].annotation, node)
    return sorted(model.model_fields) if model is not None else []


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _format_errors(
    error: ValidationError, data: Any, lines: dict[KeyPath, int], source: str
) -> list[str]:
    messages: list[tuple[int, str]] = []
    for err in error.errors():
        path = _resolve_loc(tuple(err["loc"]), data)
        line = next((lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in lines), 1)
        where = f"{source}:{line}: {_dotted(path)}"
        kind = err["type"]
        if kind == "missing":
            messages.append((line, f"{where}: required key is missing"))
        elif kind == "extra_forbidden":
            allowed = _allowed_keys(path[:-1], data)
            hint = ""
            if allowed:
                close = difflib.get_close_matches(str(path[-1]), allowed, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                hint += f" expected one of: {', '.join(allowed)}"
            messages.append((line, f"{where}: unknown key{hint}"))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if isinstance(got, Mapping) else f" (got {_show(got)})"
            messages.append((line, f"{where}: {msg}{shown}"))
    return [m for _, m in sorted(messages, key=lambda lm: lm[0])]


def parse_config(text: str, source: str, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Validate configuration ``text``; ``source`` names it in error messages."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{source}:1: the file is empty; expected at least 'device_id: ...'")
        lines = _line_map(node, source)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        pos = f"{mark.line + 1}:{mark.column + 1}" if mark else "1"
        raise ConfigError(f"{source}:{pos}: not valid YAML: {e.problem or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from e
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}:1: (top level): expected a mapping of sections, got {type(data).__name__}"
        )
    data = fill_secrets(data, environ)
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as e:
        messages = _format_errors(e, data, lines, source)
        raise ConfigError("\n".join(messages)) from e


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read and validate the configuration file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: configuration file not found") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read configuration file: {e}") from e
    return parse_config(text, str(path), environ)


def packaged_config_text(name: str) -> str:
    """Text of a configuration file shipped inside the package."""
    return resources.files("agent.config").joinpath(name).read_text(encoding="utf-8")


def default_config(environ: Mapping[str, str] | None = None) -> AgentConfig:
    """The embedded simulated-analyzer configuration."""
    return parse_config(
        packaged_config_text(EMBEDDED_DEFAULT), f"<embedded {EMBEDDED_DEFAULT}>", environ
    )


def config_hash(config: AgentConfig) -> str:
    """A stable sha256 of the effective configuration, for result provenance.

    Secrets are masked by pydantic's JSON dump, so the hash does not leak them and
    does not change when only a password is rotated.
    """
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
