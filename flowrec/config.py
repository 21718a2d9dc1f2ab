"""One frozen settings object for every command, from flags and environment variables.

Precedence: a command-line flag, then the environment variable, then the
default.  Nothing here is computed at import time; call :func:`load_settings`.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from transforms.config import ModelConfig

ENV_PREFIX = "FLOWREC_"


@dataclass(frozen=True)
class Settings:
    """Runtime settings (where things are) plus the model (how to score)."""

    # Redis: None means "start a private local redis-server" where a command allows it.
    redis_url: str | None = None
    namespace: str = "flowrec"
    # TTLs for per-user and per-item keys in Redis, seconds.
    user_ttl_s: int = 30 * 24 * 3600
    item_ttl_s: int = 30 * 24 * 3600
    # Flink.
    parallelism: int = 1
    execution_mode: str = "thread"  # thread | process
    checkpoint_interval_ms: int = 10_000
    checkpoint_dir: str | None = None
    state_backend: str = "hashmap"  # hashmap | rocksdb
    user_shards: int = 8
    item_shards: int = 4
    batch_size: int = 1000
    # Live inputs: a wall-clock heartbeat advances event time while input is
    # idle, so windows close during lulls.  0 disables it, e.g. to feed dated
    # history through a spool directory (windows then close only as data advances).
    heartbeat_ms: int = 50
    batch_timeout_ms: int = 20
    max_out_of_orderness_ms: int = 100
    # Restarts after a failure before the job gives up (0: fail at once).
    restart_attempts: int = 10
    # Record event -> Redis lags in the freshness list (benchmarks).
    record_freshness: bool = False
    # User state TTL inside the job (inactive users are dropped), ms.
    user_state_ttl_ms: int = 30 * 24 * 3600 * 1000
    # Directory of JSON-lines event files the live job watches; the API writes here.
    spool_dir: Path | None = None
    # Bearer keys for the API's write/admin endpoints (comma-separated in FLOWREC_API_KEYS).
    api_keys: tuple[str, ...] = ()
    # Learned embeddings the scorer starts with: an export root (its newest
    # version is used) or one version directory (`flowrec train --out`).  Later
    # versions arrive as switches on the catalog input (`flowrec train --publish`).
    embeddings: Path | None = None
    datasets_dir: Path = field(default_factory=lambda: Path(__file__).resolve().parent.parent.parent / "shared" / "datasets")
    model: ModelConfig = field(default_factory=ModelConfig)


# Flag/env name -> (field, parser).  One table so flags and env vars never drift apart.
_FIELDS: dict[str, tuple[str, object]] = {
    "redis-url": ("redis_url", str),
    "namespace": ("namespace", str),
    "user-ttl-s": ("user_ttl_s", int),
    "item-ttl-s": ("item_ttl_s", int),
    "parallelism": ("parallelism", int),
    "execution-mode": ("execution_mode", str),
    "checkpoint-interval-ms": ("checkpoint_interval_ms", int),
    "checkpoint-dir": ("checkpoint_dir", str),
    "state-backend": ("state_backend", str),
    "user-shards": ("user_shards", int),
    "item-shards": ("item_shards", int),
    "batch-size": ("batch_size", int),
    "heartbeat-ms": ("heartbeat_ms", int),
    "batch-timeout-ms": ("batch_timeout_ms", int),
    "max-out-of-orderness-ms": ("max_out_of_orderness_ms", int),
    "user-state-ttl-ms": ("user_state_ttl_ms", int),
    "restart-attempts": ("restart_attempts", int),
    "record-freshness": ("record_freshness", lambda text: str(text).lower() in ("1", "true", "yes")),
    "datasets-dir": ("datasets_dir", Path),
    "spool-dir": ("spool_dir", Path),
    "embeddings": ("embeddings", Path),
    "api-keys": ("api_keys", lambda text: tuple(k for k in text.split(",") if k)),
}
# REDIS_URL is the conventional name; FLOWREC_REDIS_URL also works.
_EXTRA_ENV = {"redis_url": "REDIS_URL"}
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")
# `flowrec submit` hands the URL to the Flink client under this name: Flink masks
# variables whose names contain "secret" when it logs a process environment.
SECRET_REDIS_URL_ENV = "FLOWREC_REDIS_URL_SECRET"


def _parse_redis_url(text: str) -> str:
    url = text.strip()
    if not url.startswith(REDIS_URL_SCHEMES):
        # The text may be a secret: say what is wrong, never echo it.
        raise ValueError(f"it does not hold a Redis URL (one line starting with {', '.join(REDIS_URL_SCHEMES)})")
    return url


def _parse_api_keys(text: str) -> tuple[str, ...]:
    keys = tuple(k.strip() for line in text.splitlines() if not line.lstrip().startswith("#") for k in line.split(",") if k.strip())
    if not keys:
        raise ValueError("it holds no API key (one key per line or comma-separated; lines starting with # are ignored)")
    return keys


# Secrets can come from a file instead (`--redis-url-file`, `FLOWREC_REDIS_URL_FILE`, ...):
# a value given as a flag shows in `ps` to every local user.  Field -> how its file reads.
_SECRET_FILES = {"redis_url": _parse_redis_url, "api_keys": _parse_api_keys}


def read_secret_file(path: str | Path, name: str) -> object:
    """The value of setting ``name`` (``redis_url`` or ``api_keys``) read from the file ``path``.

    Raises ValueError with a one-line reason that names the file but never its content.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"cannot read {path}: {reason}") from None
    try:
        return _SECRET_FILES[name](text)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _secret_file_type(name: str):
    """An argparse ``type`` reading the setting from a file at parse time (a bad file is a usage error, exit 2)."""

    def read(path: str) -> object:
        try:
            return read_secret_file(path, name)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return read


def add_settings_arguments(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """Add the settings flags (all, or the named ones) to a command's parser.

    A secret (the Redis URL, the API keys) also gets a ``--<flag>-file FILE``
    form, exclusive with the flag, filling the same setting.
    """
    group = parser.add_argument_group("settings (flags override FLOWREC_* environment variables)")
    for flag, (name, kind) in _FIELDS.items():
        if only is not None and flag not in only:
            continue
        env = _EXTRA_ENV.get(name, ENV_PREFIX + name.upper())
        if name in _SECRET_FILES:
            exclusive = group.add_mutually_exclusive_group()
            exclusive.add_argument(f"--{flag}", dest=name, type=kind, default=None, help=f"(env {env}; visible in `ps`, prefer --{flag}-file)")
            exclusive.add_argument(f"--{flag}-file", dest=name, type=_secret_file_type(name), default=None, metavar="FILE",
                                   help=f"read it from FILE (env {ENV_PREFIX}{name.upper()}_FILE)")
            continue
        group.add_argument(f"--{flag}", dest=name, type=kind, default=None, help=f"(env {env})")
    if only is None or "model-config" in only:
        group.add_argument("--model-config", type=Path, default=None, help="JSON file of model settings (env FLOWREC_MODEL_CONFIG), e.g. from `flowrec tune`")


def load_settings(args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build the frozen settings from parsed flags and an environment mapping (default: os.environ)."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for flag, (name, kind) in _FIELDS.items():
        flag_value = getattr(args, name, None) if args is not None else None
        if flag_value is not None:
            values[name] = flag_value
            continue
        for env_name in (ENV_PREFIX + name.upper(), _EXTRA_ENV.get(name), SECRET_REDIS_URL_ENV if name == "redis_url" else None):
            if env_name and env.get(env_name):
                try:
                    values[name] = kind(env[env_name])
                except ValueError as exc:
                    raise ValueError(f"{env_name}={env[env_name]!r} is not valid: {exc}") from exc
                break
        if name in _SECRET_FILES and name not in values:
            file_env = f"{ENV_PREFIX}{name.upper()}_FILE"
            if env.get(file_env):
                try:
                    values[name] = read_secret_file(env[file_env], name)
                except ValueError as exc:
                    raise ValueError(f"{file_env}: {exc}") from None
    model_path = getattr(args, "model_config", None) if args is not None else None
    model_path = model_path or (Path(env["FLOWREC_MODEL_CONFIG"]) if env.get("FLOWREC_MODEL_CONFIG") else None)
    if model_path is not None:
        values["model"] = ModelConfig.from_dict(json.loads(Path(model_path).read_text()))
    settings = Settings(**values)
    if settings.execution_mode not in ("thread", "process"):
        raise ValueError("execution mode must be 'thread' or 'process'")
    if settings.state_backend not in ("hashmap", "rocksdb"):
        raise ValueError("state backend must be 'hashmap' or 'rocksdb'")
    return settings
