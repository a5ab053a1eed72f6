"""The environment both the service and the training CLI read (NICHEFEED_*).

The service derives every flag of its Config from the environment (service/config.py);
the training CLI needs only where Redis and the private Redis' data are, read the same
way so that `make publish` finds the Redis `make serve` uses.
"""

from __future__ import annotations

import os
import re
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
    if parts.scheme.lower().endswith("+cluster"):  # a list of seeds: host:port,host:port
        return parts.netloc.rpartition("@")[2]
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}"


def redact_url(url: str) -> str:
    """A Redis URL fit for logs and output: user and password replaced by ***.

    `redis://:secret@host:6379/0` -> `redis://:***@host:6379/0`, and a `password=`
    query parameter (how unix:// URLs carry one) likewise; a URL without credentials
    comes back unchanged."""

    def userinfo(m: re.Match) -> str:
        user, colon, _ = m.group(2).partition(":")
        return f"{m.group(1)}{'***' if user else ''}{':***' if colon else ''}@"

    url = re.sub(r"^([a-z][a-z0-9+.-]*://)([^/?#]*)@", userinfo, url, flags=re.I)
    return re.sub(r"([?&](?:password|username)=)[^&#]*", r"\1***", url)
