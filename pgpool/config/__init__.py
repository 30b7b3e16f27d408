"""pgpool.conf handling: the settings table, the parser and typed Config, SHOW support, file readers."""

from pgpool.config.parser import (
    BackendConfig, Config, ConfigError, HeartbeatConfig, WatchdogNodeConfig, load_config, parse_config_text,
)
from pgpool.config.settings import SETTINGS, Setting, setting

__all__ = ["BackendConfig", "Config", "ConfigError", "HeartbeatConfig", "WatchdogNodeConfig", "SETTINGS",
           "Setting", "load_config", "parse_config_text", "setting"]
