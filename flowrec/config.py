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
from typing import Callable, Mapping
from urllib.parse import urlsplit

from transforms.config import ModelConfig
from transforms.recid import DEFAULT_SECRET as DEFAULT_REC_ID_SECRET

ENV_PREFIX = "FLOWREC_"


class CommandError(Exception):
    """A command cannot go on; `flowrec` prints the message as one line and exits with :attr:`exit_status`."""

    exit_status = 1


class UsageError(CommandError, ValueError):
    """Bad usage: a flag, an environment variable or a file the user named is wrong (exit status 2)."""

    exit_status = 2


REDIS_SCHEMES = ("redis", "rediss", "unix")


def whole_number(text: str) -> int:
    """An integer setting; raises ValueError saying what was expected."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def rec_id_secret(text: str) -> str:
    """The rec_id key: 16-64 characters (never echoed back: it is a secret)."""
    if not 16 <= len(text) <= 64:
        raise ValueError(f"a rec_id secret is 16-64 characters, got {len(text)}")
    return text


def port_number(text: str) -> int:
    """A TCP port flag (``--port``): 1 to 65535; raises argparse.ArgumentTypeError saying so."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a whole number from 1 to 65535, not {text!r}")
    return value


def non_negative_seconds(text: str) -> float:
    """A duration flag in seconds, 0 or more; raises argparse.ArgumentTypeError saying so."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, not {text!r}")
    return value


def whole_number_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number >= ``minimum`` (a count flag such as ``--users`` or ``--workers``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, not {text!r}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0 (a rate, a duration that cannot be zero)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number > 0, not {text!r}")
    return value


def yes_or_no(text: str) -> bool:
    """A true/false setting: true, yes, 1 or false, no, 0 (any case)."""
    value = str(text).strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def positive_number(text: str) -> int:
    """A setting that counts something there must be at least one of (parallelism, shards, batch size)."""
    return whole_number_setting_at_least(1)(text)


def whole_number_setting_at_least(minimum: int, why: str = "") -> Callable[[str], int]:
    """A whole-number setting of at least ``minimum`` (``why``: the reason, shown in the error); raises ValueError saying so.

    Settings parsers raise ValueError (a flag's becomes argparse's error, an environment
    variable's a :class:`UsageError`); :func:`whole_number_at_least` is the argparse type of other flags.
    """

    def parse(text: str) -> int:
        value = whole_number(text)
        if value < minimum:
            raise ValueError(f"expected a whole number >= {minimum}{why}, got {text!r}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def key_namespace(text: str) -> str:
    """``text`` when it can start a Redis key (the rule of :func:`state.keys.redis_key`); raises ValueError otherwise."""
    from state.keys import KeyKind, redis_key

    redis_key(KeyKind.STATS, None, text)  # raises InvalidKeyPart (a ValueError) naming the rule
    return text


def redis_url(text: str) -> str:
    """``text`` when it is a Redis URL redis-py can connect to; raises ValueError otherwise.

    The value is not repeated in the message: a URL may hold a password.
    """
    parts = urlsplit(text)
    if parts.scheme not in REDIS_SCHEMES or not (parts.netloc or (parts.scheme == "unix" and parts.path)):
        raise ValueError("a Redis URL starts with redis:// (rediss:// for TLS, unix:// for a socket), e.g. redis://localhost:6379/0")
    return text


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
    # The native memory allocator the JVM that runs the job starts with (its Python in thread
    # mode, RocksDB): auto | jemalloc | glibc | system (see pipelines.flink_env.allocator_env).
    native_allocator: str = "auto"
    user_shards: int = 8
    item_shards: int = 4
    batch_size: int = 1000
    # Live inputs: a wall-clock heartbeat advances event time while input is
    # idle, so windows close during lulls.  0 disables it, e.g. to feed dated
    # history through a spool directory (windows then close only as data advances).
    heartbeat_ms: int = 50
    max_out_of_orderness_ms: int = 100
    # Restarts after a failure before the job gives up (0: fail at once).
    restart_attempts: int = 10
    # Record event -> Redis lags in the freshness list (benchmarks).
    record_freshness: bool = False
    # User state TTL inside the job (inactive users are dropped), ms.
    user_state_ttl_ms: int = 30 * 24 * 3600 * 1000
    # Directory of JSON-lines event files the live job watches; the API writes here.
    spool_dir: Path | None = None
    # The live job deletes a spool file it has read this long after reading it
    # (at least two checkpoint intervals; 0 keeps every file).
    spool_retention_s: int = 600
    # Bearer keys for the API's write/admin endpoints (comma-separated in FLOWREC_API_KEYS).
    api_keys: tuple[str, ...] = ()
    # The API's deadline for each Redis call of a request (connecting included), reads and
    # writes alike: past it the request answers 503 with Retry-After instead of waiting on.
    redis_deadline_ms: int = 1000
    # Key of the check in every rec_id the API issues; the job verifies it to
    # attribute feedback (see transforms.recid).  The API and the job must share
    # it; set your own (FLOWREC_REC_ID_SECRET or --rec-id-secret-file) in production.
    rec_id_secret: str = DEFAULT_REC_ID_SECRET
    # Attribute impressions, clicks, carts and purchases in the job and write the
    # metrics hashes (on by default; off only to measure what it costs).
    attribution: bool = True
    # Learned embeddings the scorer starts with: an export root (its newest
    # version is used) or one version directory (`flowrec train --out`).  Later
    # versions arrive as switches on the catalog input (`flowrec train --publish`).
    embeddings: Path | None = None
    datasets_dir: Path = field(default_factory=lambda: Path(__file__).resolve().parent.parent.parent / "shared" / "datasets")
    model: ModelConfig = field(default_factory=ModelConfig)


# Flag/env name -> (field, parser).  One table so flags and env vars never drift apart.
_FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "redis-url": ("redis_url", redis_url),
    "namespace": ("namespace", key_namespace),
    "user-ttl-s": ("user_ttl_s", whole_number_setting_at_least(1)),
    "item-ttl-s": ("item_ttl_s", whole_number_setting_at_least(1)),
    "parallelism": ("parallelism", positive_number),
    "execution-mode": ("execution_mode", str),
    "checkpoint-interval-ms": ("checkpoint_interval_ms", whole_number_setting_at_least(10, " (Flink's shortest checkpoint interval)")),
    "checkpoint-dir": ("checkpoint_dir", str),
    "state-backend": ("state_backend", str),
    "native-allocator": ("native_allocator", str),
    "user-shards": ("user_shards", positive_number),
    "item-shards": ("item_shards", positive_number),
    "batch-size": ("batch_size", positive_number),
    "heartbeat-ms": ("heartbeat_ms", whole_number_setting_at_least(0)),
    "max-out-of-orderness-ms": ("max_out_of_orderness_ms", whole_number_setting_at_least(0)),
    "user-state-ttl-ms": ("user_state_ttl_ms", whole_number_setting_at_least(1)),
    "restart-attempts": ("restart_attempts", whole_number_setting_at_least(0)),
    "record-freshness": ("record_freshness", yes_or_no),
    "datasets-dir": ("datasets_dir", Path),
    "spool-dir": ("spool_dir", Path),
    "spool-retention-s": ("spool_retention_s", whole_number_setting_at_least(0)),
    "embeddings": ("embeddings", Path),
    "api-keys": ("api_keys", lambda text: tuple(k for k in text.split(",") if k)),
    "redis-deadline-ms": ("redis_deadline_ms", positive_number),
    "rec-id-secret": ("rec_id_secret", rec_id_secret),
    "attribution": ("attribution", yes_or_no),
}
# Native allocators the job's JVM can start with (pipelines.flink_env.allocator_env).
NATIVE_ALLOCATORS = ("auto", "jemalloc", "glibc", "system")
# The allowed values of the settings that have a fixed set.
_CHOICES: dict[str, tuple[str, ...]] = {
    "execution_mode": ("thread", "process"),
    "state_backend": ("hashmap", "rocksdb"),
    "native_allocator": NATIVE_ALLOCATORS,
}
# What each setting is, for --help (the default and the environment variable are added).
_HELP: dict[str, str] = {
    "redis_url": "where results go: redis://[:PASSWORD@]HOST:PORT/DB, rediss:// for TLS",
    "namespace": "first part of every Redis key",
    "user_ttl_s": "expiry of per-user keys in Redis, seconds",
    "item_ttl_s": "expiry of per-item keys in Redis, seconds",
    "parallelism": "parallel instances of each operator",
    "execution_mode": "where Python operators run: in the JVM's threads or in separate processes",
    "checkpoint_interval_ms": "checkpoint every this many ms",
    "checkpoint_dir": "where checkpoints go (path or URI)",
    "state_backend": "Flink state backend",
    "native_allocator": "native memory allocator of the JVM that runs the job (local mini-cluster, deploy/cluster.sh): jemalloc when installed (auto), glibc tuned, or the system's as it is",
    "user_shards": "key groups of users (fixed for a job's lifetime)",
    "item_shards": "key groups of items (fixed for a job's lifetime)",
    "batch_size": "events per Flink record (chunk)",
    "heartbeat_ms": "live inputs: advance event time every this many ms while idle (0: off)",
    "max_out_of_orderness_ms": "how late an event may be before it counts as late",
    "user_state_ttl_ms": "drop a user's state after this long without events, ms",
    "restart_attempts": "restarts after a failure before the job gives up",
    "record_freshness": "record event -> Redis lags (true/false)",
    "datasets_dir": "folder holding the data sets (ml-100k/, taobao/)",
    "spool_dir": "spool directory (events/, catalog/) the live job watches and the API writes",
    "embeddings": "learned embeddings to start with: an export root (newest version) or a version directory",
    "api_keys": "comma-separated bearer keys for the API's write endpoints",
    "spool_retention_s": "the live job deletes a spool file this long after reading it, s (at least two checkpoint intervals; 0: keep files)",
    "redis_deadline_ms": "the API's deadline for each Redis call on a request path, ms (then 503 with Retry-After)",
    "rec_id_secret": "key of the check in rec_ids (the API and the job must share it)",
    "attribution": "attribute feedback to shown lists and write the metrics hashes (true/false)",
}
# REDIS_URL is the conventional name; FLOWREC_REDIS_URL also works.
_EXTRA_ENV = {"redis_url": "REDIS_URL"}
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")
# `flowrec submit` hands the URL to the Flink client under this name: Flink masks
# variables whose names contain "secret" when it logs a process environment.
SECRET_REDIS_URL_ENV = "FLOWREC_REDIS_URL_SECRET"


# Every settings flag, in --help order.
SETTINGS_FLAGS: tuple[str, ...] = (*_FIELDS, "model-config")


def _argument_type(flag: str, kind: Callable[[str], object]) -> Callable[[str], object]:
    """``kind`` for argparse: its ValueError message becomes argparse's one-line error (exit status 2)."""

    def parse(text: str) -> object:
        try:
            return kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc) or f"invalid value for --{flag}") from None

    parse.__name__ = getattr(kind, "__name__", flag)  # argparse names the type in some messages
    return parse


def _shown(value: object) -> str:
    if value in (None, ()):
        return "none"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


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
_SECRET_FILES = {"redis_url": _parse_redis_url, "api_keys": _parse_api_keys, "rec_id_secret": lambda text: rec_id_secret(text.strip())}


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
    defaults = Settings()
    for flag, (name, kind) in _FIELDS.items():
        if only is not None and flag not in only:
            continue
        env = _EXTRA_ENV.get(name, ENV_PREFIX + name.upper())
        default = "a private local redis-server where the command can start one" if name == "redis_url" else _shown(getattr(defaults, name))
        if name in _SECRET_FILES:
            default = "none" if name == "api_keys" else default
            exclusive = group.add_mutually_exclusive_group()
            text = f"{_HELP[name]} (env {env}; default: {default}; visible in `ps`, prefer --{flag}-file)".replace("%", "%%")
            exclusive.add_argument(f"--{flag}", dest=name, type=_argument_type(flag, kind), default=None, help=text)
            exclusive.add_argument(f"--{flag}-file", dest=name, type=_secret_file_type(name), default=None, metavar="FILE",
                                   help=f"read it from FILE (env {ENV_PREFIX}{name.upper()}_FILE; default: {default})".replace("%", "%%"))
            continue
        # argparse expands %-formats in help texts.
        text = f"{_HELP[name]} (env {env}; default: {default})".replace("%", "%%")
        kind_of_flag = str if name in _CHOICES else _argument_type(flag, kind)
        metavar = "{true,false}" if kind is yes_or_no else None
        group.add_argument(f"--{flag}", dest=name, type=kind_of_flag, choices=_CHOICES.get(name), default=None, metavar=metavar, help=text)
    if only is None or "model-config" in only:
        group.add_argument("--model-config", type=Path, default=None, metavar="FILE",
                           help="JSON file of model settings, e.g. from `flowrec tune` (env FLOWREC_MODEL_CONFIG; default: the built-in model)")


def load_settings(args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build the frozen settings from parsed flags and an environment mapping (default: os.environ).

    Raises :class:`UsageError` naming the variable or file that is wrong.
    """
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
                    shown = "(hidden)" if name == "redis_url" else repr(env[env_name])
                    raise UsageError(f"{env_name}={shown} is not valid: {exc}") from exc
                break
        if name in _SECRET_FILES and name not in values:
            file_env = f"{ENV_PREFIX}{name.upper()}_FILE"
            if env.get(file_env):
                try:
                    values[name] = read_secret_file(env[file_env], name)
                except ValueError as exc:
                    raise UsageError(f"{file_env}: {exc}") from None
    model_path = getattr(args, "model_config", None) if args is not None else None
    model_path = model_path or (Path(env["FLOWREC_MODEL_CONFIG"]) if env.get("FLOWREC_MODEL_CONFIG") else None)
    if model_path is not None:
        values["model"] = read_model_config(Path(model_path))
    settings = Settings(**values)
    for name, allowed in _CHOICES.items():
        if getattr(settings, name) not in allowed:
            raise UsageError(f"{name.replace('_', ' ')} must be one of {', '.join(allowed)} (--{name.replace('_', '-')}, env {ENV_PREFIX}{name.upper()})")
    return settings


def read_model_config(path: Path) -> ModelConfig:
    """The model settings in a JSON file (``--model-config``); raises :class:`UsageError` saying what is wrong with it."""
    try:
        return ModelConfig.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise UsageError(f"model config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read model config {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"model config {path} is not valid JSON: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise UsageError(f"model config {path}: {exc}") from None


def require_redis(url: str, timeout_s: float = 3.0) -> None:
    """Raise :class:`CommandError` unless the Redis at ``url`` answers a PING within ``timeout_s``.

    Commands check before they start work, instead of failing (after retries) when they write.
    """
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise CommandError(f"cannot reach Redis at {redacted_url(url)}: {exc}") from None
    finally:
        client.close()


def redacted_url(url: str) -> str:
    """A URL with its password (if any) replaced, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()
