"""Why a learned blend does or does not reach its best part: one prequential replay, every weight setting scored.

A prequential run of a learned blend (``blend_learning``) replays the data
set once per configuration and scores lists at every window close; on a
shared machine that is many minutes per variant.  This study replays once:
before each evaluated event (the rule of
:func:`evaluation.harness.evaluate_prequential`: a positive first touch) it
records the user's blend entries per part over the candidates
(:class:`transforms.scoring.PartEntries`, weighted with the configured
weights, already touched items excluded as the harness excludes them).  Any
weight setting, given as a multiplier of each part's configured weight
(:class:`transforms.blend.BlendSetting`), then ranks every recorded list in
microseconds, and the blend learner (:func:`transforms.blend.learn`, the
engines' own step) can be run over the recorded lists per user shard.

The simulated learner credits each list as soon as its event is seen,
where the engines credit a user's list at their next window close: an
approximation used to compare designs, never a replacement for the
prequential run of :mod:`evaluation.harness`.  A fixed setting's HR here
equals the harness row with those weights (tested), since the lists are the
same scorer's.

``python -m evaluation.blend_study --dataset taobao`` prints each setting's
HR@k fixed and the learner's HR@k at several shard counts;
``--catalog-at-first-event`` replays with each catalog item arriving with its
first event (:func:`catalog_at_first_event`).
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from transforms.blend import PARTS, BlendLearner, BlendSetting, blend_settings, gain, learn
from transforms.catalog import CatalogItem
from transforms.config import ModelConfig
from transforms.events import FORGET, EventBatch


@dataclass(frozen=True)
class Observation:
    """One evaluated event: the user's candidates with their per-part blend values, and the item touched."""

    user: str
    ts: int
    target: str
    items: np.ndarray  # candidate ids, sorted (ties rank by id, as the lists do)
    parts: np.ndarray  # items x PARTS, weighted with the configured weights
    warm: bool  # False: a cold user, listed trending whatever the weights


def catalog_at_first_event(catalog: Sequence[CatalogItem], events: EventBatch) -> list[CatalogItem]:
    """``catalog`` with each item taking effect no earlier than its first event (items without events unchanged).

    A catalog derived from the event file itself (the Taobao sample's: every
    item some user of the sample touches, and nothing else, all from the
    start) holds items only because a user will touch them later.  Content
    ranks catalog items, so it can list the untouched items of a user's small
    categories, which are mostly the ones that user touches next, while the
    parts learned from events (co-occurrence, trending) and the baselines
    cannot know them.  With each item arriving at its first event no part sees
    an item before someone touches it, as in a shop whose catalog is not
    chosen by its future traffic.
    """
    first: dict[str, int] = {}
    ordered = events.sorted_by_time()
    for item, ts in zip(ordered.item.tolist(), ordered.ts.tolist()):
        first.setdefault(item, ts)
    return [replace(c, ts=max(c.ts, first[c.item_id])) if c.item_id in first else c for c in catalog]


def record(events: EventBatch, catalog: Sequence[CatalogItem], config: ModelConfig) -> list[Observation]:
    """Replay ``events`` in time order through the reference engine and record every evaluated list."""
    from evaluation.harness import evaluable_events
    from transforms.engine import ReferenceEngine
    from transforms.profile import scorable
    from transforms.scoring import score_users

    ordered = events.sorted_by_time()
    evaluate = evaluable_events(ordered)
    engine = ReferenceEngine(config, list(catalog), score_users={})
    users, items, ts, etypes = ordered.user.tolist(), ordered.item.tolist(), ordered.ts.tolist(), ordered.etype.tolist()
    touched: dict[str, set[str]] = defaultdict(set)
    applied = 0
    out: list[Observation] = []
    for row in range(len(ordered)):
        user = users[row]
        if evaluate[row]:
            if applied < row:
                engine.process(ordered.take(slice(applied, row)))
                applied = row
            profile = scorable(engine.profiles.get(user))
            entries: list = []
            score_users([profile], ts[row], engine.model, config, [touched[user]], config.top_n, part_entries=entries)
            ids, table = np.empty(0, dtype=object), np.zeros((0, len(PARTS)))
            if entries and len(entries[0].row):
                ids, inverse = np.unique(entries[0].item, return_inverse=True)
                table = np.zeros((len(ids), len(PARTS)))
                np.add.at(table, (inverse, entries[0].part), entries[0].value)
            warm = profile is not None and any(value > 0 for value in profile.interests.values())
            out.append(Observation(user, ts[row], items[row], ids, table, warm))
        if etypes[row] == FORGET:
            touched.pop(user, None)
        else:
            touched[user].add(items[row])
    return out


def ranked(observation: Observation, setting: BlendSetting, k: int) -> list[str]:
    """The top ``k`` of one recorded list under ``setting`` (a cold user's list does not depend on it)."""
    if not len(observation.items):
        return []
    scale = np.asarray(setting.scale if observation.warm else (1.0,) * len(PARTS), dtype=np.float64)
    scores = observation.parts @ scale
    order = np.lexsort((np.arange(len(scores)), -scores))
    order = order[scores[order] > 0][:k]
    return observation.items[order].tolist()


def setting_gains(observations: Sequence[Observation], settings: Sequence[BlendSetting], k: int) -> np.ndarray:
    """DCG gain of each observation's target in each setting's top ``k`` (observations x settings; 0: a miss)."""
    out = np.zeros((len(observations), len(settings)))
    for n, observation in enumerate(observations):
        for s, setting in enumerate(settings):
            top = ranked(observation, setting, k)
            if observation.target in top:
                out[n, s] = gain(top.index(observation.target))
    return out


def only_settings(config: ModelConfig) -> list[BlendSetting]:
    """Each configured part alone (the ``flowrec-<part>`` rows): what "never worse than its best part" compares with."""
    from transforms.blend import part_weight

    out = []
    for i, part in enumerate(PARTS):
        if part_weight(config, part) > 0:
            scale = [0.0] * len(PARTS)
            scale[i] = 1.0
            out.append(BlendSetting(f"only_{part}", tuple(scale)))
    return out


def simulate(observations: Sequence[Observation], gains: np.ndarray, settings: Sequence[BlendSetting], config: ModelConfig, shards: int) -> np.ndarray:
    """Hits of the blend learner over the recorded lists, one learner per user shard, credited after each list."""
    learners: dict[int, BlendLearner] = {}
    hits = np.zeros(len(observations))
    for n, observation in enumerate(observations):
        shard = zlib.crc32(observation.user.encode()) % shards
        learner = learners.get(shard) or BlendLearner.fresh(settings)
        hits[n] = gains[n, learner.current] > 0
        if observation.warm:
            learners[shard] = learn(learner, [gains[n].tolist()], config)
        else:
            learners[shard] = learner
    return hits


def study(observations: Sequence[Observation], config: ModelConfig, k: int, shards: Sequence[int]) -> dict:
    """Fixed HR@k of each setting (the blend's own set, then each part alone) and the learner's HR@k per shard count."""
    own = list(blend_settings(config))
    extended = own + only_settings(config)
    gains = setting_gains(observations, extended, k)
    fixed = {s.name: float((gains[:, i] > 0).mean()) for i, s in enumerate(extended)}
    learned = {}
    for count in shards:
        learned[f"blend settings, {count} shards"] = float(simulate(observations, gains[:, : len(own)], own, config, count).mean())
        learned[f"blend + parts alone, {count} shards"] = float(simulate(observations, gains, extended, config, count).mean())
    differ = int((gains > 0).any(axis=1).sum() - (gains > 0).all(axis=1).sum())
    return {"evaluated": len(observations), "lists_where_settings_disagree": differ, "fixed": fixed, "learned": learned}


def main(argv: Sequence[str] | None = None) -> int:
    from evaluation.harness import load_dataset

    parser = argparse.ArgumentParser(prog="python -m evaluation.blend_study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="ml-100k, taobao, or a CSV/JSON-lines event file")
    parser.add_argument("--datasets-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--catalog", type=Path, help="catalog JSON lines for an event-file data set (e.g. from `flowrec generate`)")
    parser.add_argument("--model-config", type=Path, help="model config JSON (default: the defaults)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--shards", default="8,4,2,1", help="user shard counts to simulate the learner with")
    parser.add_argument("--catalog-at-first-event", action="store_true", help="each catalog item takes effect at its first event (no catalog look-ahead)")
    args = parser.parse_args(argv)
    try:
        config = ModelConfig.from_dict(json.loads(args.model_config.read_text())) if args.model_config else ModelConfig()
        shards = [int(s) for s in args.shards.split(",")]
        if any(s <= 0 for s in shards):
            raise ValueError("shard counts must be positive")
        dataset = load_dataset(args.dataset, args.datasets_dir, args.catalog)
    except Exception as exc:  # noqa: BLE001 - a clear one-line error for the command line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    catalog = catalog_at_first_event(dataset.catalog, dataset.events) if args.catalog_at_first_event else dataset.catalog
    result = study(record(dataset.events, catalog, config), config, args.k, shards)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
