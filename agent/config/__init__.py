"""The agent's single validated YAML configuration."""

from agent.config.loader import (
    DEFAULT_CONFIG_PATH,
    config_hash,
    default_config,
    load_config,
    parse_config,
)
from agent.config.model import AgentConfig

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AgentConfig",
    "config_hash",
    "default_config",
    "load_config",
    "parse_config",
]
