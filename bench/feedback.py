"""A bench shop with the loop closed: impressions before the shop's clicks, carts and purchases,
rec_ids on half of those outcomes, and a two-variant experiment on the catalog input.

`flowrec bench stream --parts feedback` replays it with attribution on against the plain shop with
attribution off, to measure what closing the loop costs (see :mod:`bench.stream`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from transforms.events import COLUMNS, IMPRESSION, OUTCOME_TYPES, VIEW, EventBatch
from transforms.experiments import Experiment, ExperimentStart, assign, parse_experiment
from transforms.recid import RecId, encode_rec_id

SHOWN = 10  # items per impression
EXPERIMENT = {
    "id": "bench",
    "variants": {"control": {"share": 0.5, "preset": "popularity"}, "treatment": {"share": 0.5, "preset": "default"}},
}


@dataclass(frozen=True)
class FeedbackShop:
    events: EventBatch  # the shop's events with impression rows before outcomes and some views
    experiment: Experiment
    control_line: bytes  # the catalog-input record that starts the experiment
    impressions: int  # impression records (each SHOWN rows)
    interactions: int  # the shop's own events


def feedback_shop(events: EventBatch, items: list[str], secret: str, seed: int = 7, view_share: float = 0.25) -> FeedbackShop:
    """``events`` with an impression of ``SHOWN`` items before every outcome (showing its item at a
    random position) and before ``view_share`` of the views, minted for each user's variant."""
    rng = np.random.default_rng(seed)
    experiment = parse_experiment(EXPERIMENT)
    catalog = np.array(items, dtype=object)
    outcome = np.isin(events.etype, OUTCOME_TYPES)
    shown_before = outcome | ((events.etype == VIEW) & (rng.random(len(events)) < view_share))
    variant_of: dict[str, str] = {}
    rows: list[tuple] = []  # (row of events to insert before, user, item, ts, rec_id, position)
    rec_ids = np.full(len(events), "", dtype=object)
    positions = np.full(len(events), -1, dtype=np.int16)
    for row in np.flatnonzero(shown_before).tolist():
        user, item, ts = events.user[row], events.item[row], int(events.ts[row])
        variant = variant_of.get(user) or variant_of.setdefault(user, assign(experiment, user))
        rec_id = encode_rec_id(RecId(experiment.id, variant, "home", ts, f"{row & 0xFFFFFFFF:08x}"), user, secret)
        others = [i for i in catalog[rng.choice(len(catalog), SHOWN + 1, replace=False)].tolist() if i != item][: SHOWN - 1]
        position = int(rng.integers(0, SHOWN))
        shown = others[:position] + [item] + others[position:]
        rows += [(row, user, shown_item, ts, rec_id, p) for p, shown_item in enumerate(shown)]
        if outcome[row] and rng.random() < 0.5:
            rec_ids[row], positions[row] = rec_id, position
    before, user, item, ts, rec_id, position = (np.array(column) for column in zip(*rows)) if rows else ([],) * 6
    impressions = EventBatch(
        user=np.asarray(user, dtype=object),
        item=np.asarray(item, dtype=object),
        etype=np.full(len(rows), IMPRESSION, dtype=np.int8),
        ts=np.asarray(ts, dtype=np.int64),
        rec_id=np.asarray(rec_id, dtype=object),
        position=np.asarray(position, dtype=np.int16),
    )
    shop = EventBatch(**{name: getattr(events, name) for name in COLUMNS} | {"rec_id": rec_ids, "position": positions})
    # Each impression goes right before the event it was shown for (a stable merge by position).
    order = np.argsort(np.concatenate([np.asarray(before, dtype=np.float64) - 0.5, np.arange(len(shop), dtype=np.float64)]), kind="stable")
    merged = EventBatch.concat([impressions, shop]).take(order) if rows else shop
    start = ExperimentStart(experiment, int(events.ts.min()) - 1 if len(events) else 0)
    return FeedbackShop(merged, experiment, orjson.dumps(start.to_dict()) + b"\n", int(shown_before.sum()), len(events))
