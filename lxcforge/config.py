"""Settings: command-line flags > LXCFORGE_* environment > /etc/lxcforge/config.toml > defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lxcforge.errors import LxcforgeError

CONFIG_FILE = Path(os.environ.get("LXCFORGE_CONFIG", "/etc/lxcforge/config.toml"))


@dataclass(frozen=True)
class Settings:
    store: Path = Path("/var/lib/lxcforge")
    # Where the loop-file pool lives when the store is not on btrfs; default: "<store>.img".
    pool_image: Path | None = None
    pool_size: str = "64G"
    uri: str = "lxc:///"
    network: str = "default"
    default_base: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pool_image_path(self) -> Path:
        if self.pool_image is not None:
            return self.pool_image
        return self.store.with_name(self.store.name + ".img")


_PATH_FIELDS = {"store", "pool_image"}


def _coerce(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _PATH_FIELDS:
        # One spelling per store: its containers' metadata, MACs and gc's notion of "mine"
        # all name it, so a symlink or '..' in --store must not make it another store.
        return Path(str(value)).resolve()
    return str(value)


def load(overrides: dict[str, Any] | None = None, config_file: Path | None = None) -> Settings:
    """Merge the config file, the environment and explicit overrides (None means 'not given')."""
    names = [f.name for f in fields(Settings) if f.name != "extra"]
    values: dict[str, Any] = {}
    path = config_file or CONFIG_FILE
    if path.exists():
        import tomllib  # only with a config file: ~2 ms of every start otherwise

        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise LxcforgeError(f"cannot read {path}: {exc}", hint="fix or remove the file") from exc
        for key, value in data.items():
            key = key.replace("-", "_")
            if key not in names:
                raise LxcforgeError(
                    f"unknown setting {key!r} in {path}", hint=f"known settings: {', '.join(names)}"
                )
            values[key] = value
    for name in names:
        env_value = os.environ.get("LXCFORGE_" + name.upper())
        if env_value:
            values[name] = env_value
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    settings = Settings()
    return replace(settings, **{k: _coerce(k, v) for k, v in values.items()})
