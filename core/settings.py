"""The environment both the service and the training CLI read (NICHEFEED_*).

The service derives every flag of its Config from the environment (service/config.py);
the training CLI needs only where Redis and the private Redis' data are, read the same
way so that `make publish` finds the Redis `make serve` uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

ENV_PREFIX = "NICHEFEED_"
DEFAULT_VAR_DIR = Path("var")


def env_name(field_name: str) -> str:
    """The environment variable of a setting: NICHEFEED_ + its name in capitals."""
    return ENV_PREFIX + field_name.upper()


def redis_url_from_env(environ: dict[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get(env_name("redis_url"), "")


def var_dir_from_env(environ: dict[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get(env_name("var_dir"), str(DEFAULT_VAR_DIR)))


def redis_address(url: str) -> str:
    """The address part of a Redis URL, for messages (never the password)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}"
