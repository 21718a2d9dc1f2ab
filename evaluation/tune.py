"""Tuning flowrec's model settings on a validation split carved from the training data only.

The test part of the protocol is set aside first and never read: the
training part is split again into a fitting part and a validation part, and
candidates are ranked by their validation score.

* ``msr``: training = the 75 % msr part; validation = a further per-user
  random 10 % of it (seed + 1).  Objective: nDCG@k.
* ``temporal``: training = the first 80 % of time; validation = the last
  10 % (by time) of that, warm users only.  Objective: nDCG@k.
* ``prequential``: training = the first 80 % of time; the engine replays it
  all, and the events of its last 10 % are evaluated prequentially (top-k
  asked before each event).  Objective: HR@k.

Search: random search in two levels, because settings fall in two groups.
State settings (:data:`STATE_SPACE`: decay half-life, similarity measure,
co-occurrence history and session gap, window, neighbour count) change what
the engine learns, so each state candidate costs one replay; scoring settings
(:data:`SCORING_SPACE`: the blend weights and the number of interests used)
only change how lists are scored, so many of them are tried on each replay at
the price of scoring alone.  ``budget`` is the number of replays,
``scoring_trials`` the scoring candidates per replay; the base config is
always candidate 0 at both levels, so the result is never worse than it on
validation.

Learned embeddings: the blend weights of the embedding and sequence
components and the number of embedding candidates (:data:`EMBEDDING_SPACE`)
are scoring settings too; :func:`tune` adds them to the default space when
``search_embeddings`` is set.  The embeddings are trained once per tuning run
on the fitting part (msr, temporal) - the validation part is never seen - or
per UTC day of the replay (prequential), with the base config's event weights
and half-life; a given export (``--embeddings DIR``) must likewise not have
seen the validation part.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from evaluation.harness import (
    EmbeddingSource,
    EngineLearner,
    EvaluationError,
    SCORING_FIELDS,
    evaluate_prequential,
    evaluate_static,
    make_static_split,
)
from transforms.catalog import CatalogItem
from transforms.config import ModelConfig
from transforms.derive import derive_config
from transforms.events import EventBatch
from transforms.splits import per_user_holdout, stratified_random_split, temporal_cut_time

log = logging.getLogger(__name__)

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS
VALIDATION_SHARE = 0.1

# Candidate values per state setting (each combination costs a replay).
STATE_SPACE: dict[str, tuple[Any, ...]] = {
    "half_life_ms": (DAY_MS, 7 * DAY_MS, 30 * DAY_MS, 180 * DAY_MS),
    "similarity": ("cosine", "jaccard", "lift", "conditional"),
    "history_length": (10, 20, 50),
    "session_gap_ms": (30 * 60 * 1000, DAY_MS, 365 * DAY_MS),
    "window_ms": (200, 1000, 60_000),
    "neighbours": (20, 50, 100),
}
# Candidate values per scoring setting (cheap: no replay).
SCORING_SPACE: dict[str, tuple[Any, ...]] = {
    "weight_cf": (0.5, 1.0),
    "weight_content": (0.0, 0.1, 0.3, 0.6),
    "weight_category": (0.0, 0.1, 0.2, 0.5),
    "weight_popularity": (0.0, 0.02, 0.05, 0.2),
    "weight_recent": (0.0, 0.05, 0.2),
    "interest_items": (10, 30, 100),
}
# The learned components' scoring settings (searched with ``search_embeddings``).
EMBEDDING_SPACE: dict[str, tuple[Any, ...]] = {
    "weight_embedding": (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
    "weight_sequence": (0.0, 0.1, 0.25, 0.5, 1.0),
    "embedding_candidates": (50, 100, 200),
}


def default_scoring_space(search_embeddings: bool) -> dict[str, tuple[Any, ...]]:
    """:data:`SCORING_SPACE`, plus :data:`EMBEDDING_SPACE` when the learned components are searched too."""
    return {**SCORING_SPACE, **(EMBEDDING_SPACE if search_embeddings else {})}


@dataclass(frozen=True)
class Trial:
    """One evaluated candidate: its config, the replay it used and its validation numbers."""

    replay: int
    config: ModelConfig
    changes: dict[str, Any]
    score: float
    metrics: dict[str, float | None]


@dataclass(frozen=True)
class TuneResult:
    """The search's trials, the best and the base one, and ``chosen``: the best config with the
    settings it derives from history (``derive_from_history``) measured on all the events tuned
    on - the config a job serving that history runs with (``flowrec run --model-config``)."""

    best: Trial
    base: Trial
    trials: list[Trial]
    objective: str
    runtime_s: float
    chosen: ModelConfig


def parse_space(data: Mapping[str, Any]) -> tuple[dict[str, tuple[Any, ...]], dict[str, tuple[Any, ...]]]:
    """Split a ``{field: [values...]}`` search space into (state space, scoring space).

    Raises ``ValueError`` for unknown fields, empty value lists or values the
    config rejects (each value is checked by building a config with it).
    """
    import dataclasses

    known = {f.name for f in dataclasses.fields(ModelConfig)}
    state: dict[str, tuple[Any, ...]] = {}
    scoring: dict[str, tuple[Any, ...]] = {}
    for name, values in data.items():
        if name not in known:
            raise ValueError(f"unknown model setting {name!r} in the search space")
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"{name}: give a non-empty list of candidate values")
        for value in values:
            ModelConfig().replace(**{name: value})
        (scoring if name in SCORING_FIELDS else state)[name] = tuple(values)
    return state, scoring


def sample_candidates(
    space: Mapping[str, Sequence[Any]], base: ModelConfig, count: int, rng: random.Random
) -> list[dict[str, Any]]:
    """``count`` distinct change sets drawn uniformly from ``space``; the first is ``{}`` (the base config).

    Values equal to the base's are left out of a change set, so equal
    candidates are recognised and not drawn twice.  Stops early when the space
    holds fewer distinct candidates.
    """
    if count <= 0:
        return []
    out: list[dict[str, Any]] = [{}]
    seen = {()}
    total = int(np.prod([len(v) for v in space.values()])) if space else 1
    attempts = 0
    while len(out) < count and len(seen) < total + 1 and attempts < 50 * count:
        attempts += 1
        changes = {}
        for name, values in space.items():
            value = rng.choice(list(values))
            if value != getattr(base, name):
                changes[name] = value
        key = tuple(sorted(changes.items()))
        if key in seen:
            continue
        seen.add(key)
        out.append(changes)
    return out


def random_search(
    base: ModelConfig,
    state_space: Mapping[str, Sequence[Any]],
    scoring_space: Mapping[str, Sequence[Any]],
    budget: int,
    scoring_trials: int,
    evaluate_replay: Callable[[ModelConfig, dict[str, ModelConfig]], dict[str, float]],
    seed: int = 42,
) -> list[tuple[int, str, ModelConfig, dict[str, Any], float]]:
    """Two-level random search; returns ``(replay, name, config, changes, score)`` for every candidate tried.

    ``evaluate_replay(state_config, {name: scoring_config})`` learns once with
    ``state_config`` and returns each named scoring config's objective.
    """
    overlap = set(state_space) & set(SCORING_FIELDS)
    if overlap:
        raise ValueError(f"{sorted(overlap)} are scoring settings, not state settings")
    stray = set(scoring_space) - set(SCORING_FIELDS)
    if stray:
        raise ValueError(f"{sorted(stray)} change the learned state; put them in the state space")
    if budget <= 0 or scoring_trials <= 0:
        raise ValueError("budget and scoring_trials must be positive")
    rng = random.Random(seed)
    tried = []
    for replay, state_changes in enumerate(sample_candidates(state_space, base, budget, rng)):
        state_config = base.replace(**state_changes)
        scoring = {}
        changes_by_name = {}
        for index, scoring_changes in enumerate(sample_candidates(scoring_space, base, scoring_trials, rng)):
            name = f"r{replay}s{index}"
            # The replayed config itself is scoring candidate 0 (identical object, see EngineLearner).
            scoring[name] = state_config if not scoring_changes else state_config.replace(**scoring_changes)
            changes_by_name[name] = {**state_changes, **scoring_changes}
        scores = evaluate_replay(state_config, scoring)
        for name, config in scoring.items():
            tried.append((replay, name, config, changes_by_name[name], scores[name]))
        best_here = max(scores.values())
        log.info("replay %d %s: best validation score %.4f", replay, state_changes or "(base)", best_here)
    return tried


def validation_split(events: EventBatch, protocol: str, seed: int) -> tuple[EventBatch, EventBatch | None, int | None]:
    """(learning events, validation events or None, evaluate-from time or None) from the TRAINING part only."""
    if protocol == "msr":
        train = events.take(stratified_random_split(events.user, events.item, ratio=0.75, seed=seed).train)
        parts = per_user_holdout(train.user, ratio=1.0 - VALIDATION_SHARE, seed=seed + 1, by="random")
        return train.take(parts.train), train.take(parts.test), None
    if protocol in ("temporal", "prequential"):
        train = events.take(events.ts < temporal_cut_time(events.ts, 0.8))
        cut = temporal_cut_time(train.ts, 1.0 - VALIDATION_SHARE)
        if protocol == "temporal":
            return train.take(train.ts < cut), train.take(train.ts >= cut), None
        return train, None, cut
    raise EvaluationError(f"unknown protocol {protocol!r}")


def tune(
    events: EventBatch,
    catalog: Sequence[CatalogItem],
    protocol: str = "msr",
    k: int = 10,
    base: ModelConfig | None = None,
    budget: int = 8,
    scoring_trials: int = 16,
    seed: int = 42,
    search_seed: int = 1,
    state_space: Mapping[str, Sequence[Any]] = STATE_SPACE,
    scoring_space: Mapping[str, Sequence[Any]] | None = None,
    progress: bool = False,
    embeddings: EmbeddingSource | None = None,
    search_embeddings: bool = False,
) -> TuneResult:
    """Search model settings on validation data carved from the protocol's training part.

    ``seed`` is the protocol's split seed and must match the one the final
    evaluation uses (``flowrec evaluate --seed``, 42 by default), or the
    validation data could overlap that evaluation's test part;
    ``search_seed`` drives the random search only.  ``scoring_space``
    defaults to :data:`SCORING_SPACE`, plus :data:`EMBEDDING_SPACE` with
    ``search_embeddings``; ``embeddings`` is where candidates that use the
    learned components get them (default: trained on the fitting part).
    """
    base = base or ModelConfig()
    if scoring_space is None:
        scoring_space = default_scoring_space(search_embeddings)
    if embeddings is None:
        from evaluation.harness import TrainedEmbeddings

        embeddings = TrainedEmbeddings(catalog, seed=seed)
    started = time.perf_counter()
    learn, validation, evaluate_from = validation_split(events, protocol, seed)
    objective = "hr" if protocol == "prequential" else "ndcg"
    metrics_by_name: dict[str, dict[str, float | None]] = {}

    if validation is not None:
        split = make_static_split(learn, validation, warm_only=(protocol == "temporal"))
        all_items = set(events.item.tolist()) | {c.item_id for c in catalog}

        def evaluate_replay(state_config: ModelConfig, scoring: dict[str, ModelConfig]) -> dict[str, float]:
            learner = EngineLearner(scoring, state_config, catalog, progress=progress, embeddings=embeddings)
            results = evaluate_static(split, [learner], k, catalog, all_items, progress=False)
            metrics_by_name.update({name: r.metrics for name, r in results.items()})
            return {name: _objective(r, objective) for name, r in results.items()}

    else:

        def evaluate_replay(state_config: ModelConfig, scoring: dict[str, ModelConfig]) -> dict[str, float]:
            learner = EngineLearner(scoring, state_config, catalog, progress=False, embeddings=embeddings)
            results, _ = evaluate_prequential(learn, [learner], k, catalog, progress=progress, evaluate_from_ms=evaluate_from)
            metrics_by_name.update({name: r.metrics for name, r in results.items()})
            return {name: _objective(r, objective) for name, r in results.items()}

    tried = random_search(base, state_space, scoring_space, budget, scoring_trials, evaluate_replay, search_seed)
    trials = [
        Trial(replay=replay, config=config, changes=changes, score=score, metrics=metrics_by_name[name])
        for replay, name, config, changes, score in tried
    ]
    base_trial = trials[0]
    # Highest score wins; on a tie the earlier (simpler, base-first) candidate stays.
    best = max(trials, key=lambda t: t.score)
    chosen = derive_config(events, best.config).config
    return TuneResult(best=best, base=base_trial, trials=trials, objective=objective, runtime_s=time.perf_counter() - started, chosen=chosen)


def _objective(result, objective: str) -> float:
    """The validation score of one candidate; a candidate whose scoring raised ranks last."""
    if result.error is not None:
        return float("-inf")
    return float(result.metrics.get(objective) or 0.0)


def format_trials(result: TuneResult, k: int, limit: int = 15) -> str:
    """The best ``limit`` trials (and the base) as an aligned table of validation metrics and changes."""
    ranked = sorted(result.trials, key=lambda t: -t.score)[:limit]
    if result.base not in ranked:
        ranked.append(result.base)
    header = ["#", "replay", f"{result.objective}@{k}", f"P@{k}", f"R@{k}", f"HR@{k}", "changes from base"]
    rows = []
    for position, trial in enumerate(ranked, start=1):
        m = trial.metrics
        changes = ", ".join(f"{key}={_show(value)}" for key, value in sorted(trial.changes.items())) or "(base config)"
        if trial.score == float("-inf"):
            changes += "  [failed, see log]"
        rows.append(
            [str(position), str(trial.replay), f"{trial.score:.4f}", f"{m.get('precision') or 0:.4f}", f"{m.get('recall') or 0:.4f}", f"{m.get('hr') or 0:.4f}", changes]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i < len(header) - 1 else c for i, (c, w) in enumerate(zip(header, widths)))]
    lines += ["  ".join(c.rjust(w) if i < len(header) - 1 else c for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= HOUR_MS and value % HOUR_MS == 0:
        return f"{value // HOUR_MS}h" if value < DAY_MS or value % DAY_MS else f"{value // DAY_MS}d"
    return str(value)
