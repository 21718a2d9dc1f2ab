"""Reading experiments back from Redis: the records the job wrote and their attributed counts.

The job writes each experiment it applied to ``experiment:{id}`` and its id to
the set ``experiments`` (:func:`state.writes.experiment_writes`); attribution
counts live in ``metrics:exp:{id}`` (read through :mod:`state.metrics`, the
one place their fields are parsed).  Readers take a synchronous redis client.

At start-up the job records in its stats hash which half-lives and similarity
measures it keeps state for (:func:`kept_settings_stats`), so the API can
refuse an experiment the job could not run before queueing it
(:func:`read_kept_settings`); the job checks again when it applies it.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from state.keys import KeyKind, redis_key
from state.metrics import ALL_CONTEXTS, read_experiment_totals
from transforms.config import ModelConfig
from transforms.experiments import KEPT_FIELDS, ExperimentError, ExperimentRecord, VariantCounts

log = logging.getLogger(__name__)

_COUNT_MEASURES = ("impressions", "clicks", "carts", "purchases")


def _decode_record(raw: bytes | None, key: str) -> ExperimentRecord | None:
    if raw is None:
        return None
    try:
        return ExperimentRecord.from_dict(orjson.loads(raw))
    except (ExperimentError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.warning("skipping unreadable experiment record %s: %s", key, exc)
        return None


def read_experiment_record(client: Any, namespace: str, experiment_id: str) -> ExperimentRecord | None:
    """The record of experiment ``experiment_id`` (None when the job never applied it)."""
    key = redis_key(KeyKind.EXPERIMENT, experiment_id, namespace)
    return _decode_record(client.get(key), key)


def read_experiment_records(client: Any, namespace: str) -> dict[str, ExperimentRecord]:
    """Every experiment the job applied, by id (unreadable records are skipped with a warning)."""
    ids = sorted(m.decode() if isinstance(m, bytes) else m for m in client.smembers(redis_key(KeyKind.EXPERIMENTS, None, namespace)))
    if not ids:
        return {}
    keys = [redis_key(KeyKind.EXPERIMENT, i, namespace) for i in ids]
    records = {i: _decode_record(raw, key) for i, key, raw in zip(ids, keys, client.mget(keys))}
    return {i: r for i, r in records.items() if r is not None}


def running_experiment(records: dict[str, ExperimentRecord]) -> ExperimentRecord | None:
    """The running experiment among ``records`` (the job runs at most one)."""
    running = [r for r in records.values() if r.running]
    return max(running, key=lambda r: r.started_ms) if running else None


def read_variant_counts(client: Any, namespace: str, experiment_id: str) -> tuple[dict[str, VariantCounts], dict[str, dict[str, VariantCounts]]]:
    """Attributed counts of an experiment: per variant over all contexts, and per variant and context."""
    totals = read_experiment_totals(client, namespace, experiment_id)
    fields: dict[tuple[str, str], dict[str, float]] = {}
    for (variant, context, measure), value in totals.items():
        fields.setdefault((variant, context), {})[measure] = value
    overall: dict[str, VariantCounts] = {}
    by_context: dict[str, dict[str, VariantCounts]] = {}
    for (variant, context), values in fields.items():
        counts = VariantCounts(**{m: int(values.get(m, 0)) for m in _COUNT_MEASURES}, revenue=float(values.get("revenue", 0.0)))
        if context == ALL_CONTEXTS:
            overall[variant] = counts
        else:
            by_context.setdefault(variant, {})[context] = counts
    return overall, by_context


def _kept_names() -> list[str]:
    """The job's settings that decide which variant values it can run: each kept field and its list."""
    return [name for field in KEPT_FIELDS.items() for name in field]


def kept_settings_stats(model: ModelConfig) -> dict[str, int | str]:
    """The stats fields (``model.{setting}``) recording what ``model`` keeps state for; lists comma-separated."""
    out: dict[str, int | str] = {}
    for name in _kept_names():
        value = getattr(model, name)
        out[f"model.{name}"] = ",".join(str(v) for v in value) if isinstance(value, tuple) else value
    return out


def read_kept_settings(client: Any, namespace: str) -> ModelConfig | None:
    """A model config with the job's recorded kept settings (the rest default); None when the job recorded none
    (not started yet, or a release before they were recorded) or they cannot be read."""
    names = _kept_names()
    values = client.hmget(redis_key(KeyKind.STATS, None, namespace), [f"model.{n}" for n in names])
    if any(v is None for v in values):
        return None
    defaults = ModelConfig()
    given: dict[str, Any] = {}
    try:
        for name, raw in zip(names, values):
            text = raw.decode()
            default = getattr(defaults, name)
            if isinstance(default, tuple):
                given[name] = tuple(int(v) if name.endswith("_ms") else v for v in text.split(",") if v)
            else:
                given[name] = int(text) if isinstance(default, int) else text
        return defaults.replace(**given)
    except (UnicodeDecodeError, ValueError) as exc:
        log.warning("cannot read the job's kept settings from its stats: %s", exc)
        return None
