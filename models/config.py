"""Configuration: a TOML file plus command-line and environment overrides (ARCHITECTURE.md "Configuration").

Precedence for where the data lives: `--db URL` > `--data-dir DIR` > `$REFERDESK_DATA_DIR` > `[database] url`
in the file > the platform's user data folder. Nothing is created here; the database layer creates its file.
Secrets are never read from the file: it names the environment variable that holds them (`*_env` keys).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from models.db import sqlite_url

APP_NAME = "referdesk"
DB_FILENAME = "referdesk.db"
CONFIG_FILENAME = "config.toml"  # a data folder may carry its own (the sandbox writes one there)


class ConfigError(Exception):
    pass


@dataclass
class Config:
    path: Path | None
    data_dir: Path
    database_url: str
    values: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        value = self.values.get(name, {})
        return value if isinstance(value, dict) else {}


def default_config_path(env: Mapping[str, str]) -> Path:
    if env.get("REFERDESK_CONFIG"):
        return Path(env["REFERDESK_CONFIG"]).expanduser()
    from platformdirs import user_config_path

    return user_config_path(APP_NAME) / "config.toml"


def default_data_dir() -> Path:
    from platformdirs import user_data_path

    return user_data_path(APP_NAME)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file: {exc.strerror}") from exc


def load_config(
    config_file: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    db_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    env = os.environ if env is None else env
    explicit = config_file is not None or bool(env.get("REFERDESK_CONFIG"))
    path = Path(config_file).expanduser() if config_file else default_config_path(env)
    named_dir = data_dir if data_dir is not None else env.get("REFERDESK_DATA_DIR")
    if not explicit and named_dir and (Path(named_dir).expanduser() / CONFIG_FILENAME).is_file():
        # A data folder that carries its own configuration (a sandbox writes one) is used as a whole.
        path = Path(named_dir).expanduser() / CONFIG_FILENAME
    if path.exists():
        values = read_toml(path)
    elif explicit:
        raise ConfigError(f"{path}: configuration file not found")
    else:
        values, path = {}, None

    file_url = values.get("database", {}).get("url") if isinstance(values.get("database"), dict) else None
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
    elif env.get("REFERDESK_DATA_DIR"):
        folder = Path(env["REFERDESK_DATA_DIR"]).expanduser()
    else:
        folder = None
    if db_url:
        url = db_url
    elif folder is not None:
        url = sqlite_url(folder / DB_FILENAME)
    elif file_url:
        url = str(file_url)
    else:
        url = sqlite_url(default_data_dir() / DB_FILENAME)
    return Config(path=path, data_dir=folder or default_data_dir(), database_url=url, values=values)
