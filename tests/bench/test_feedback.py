"""The bench shop with feedback: every outcome follows an impression that showed its item."""

from __future__ import annotations

import numpy as np
import orjson

from bench.feedback import SHOWN, feedback_shop
from transforms.attribution import recount
from transforms.config import ModelConfig
from transforms.events import IMPRESSION, OUTCOME_TYPES, EventBatch
from transforms.experiments import validate_experiment_control
from transforms.synthetic import generate_shop

SECRET = "bench-test-secret-0123456"


def test_outcomes_follow_an_impression_of_their_item_and_all_count():
    catalog, stream = generate_shop(users=50, items=40, events=800, seed=3)
    events = EventBatch.concat(list(stream)).sorted_by_time()
    shop = feedback_shop(events, [c.item_id for c in catalog], SECRET, seed=1)
    ev = shop.events
    assert (ev.etype != IMPRESSION).sum() == len(events) == shop.interactions
    assert (ev.etype == IMPRESSION).sum() == SHOWN * shop.impressions
    assert shop.impressions >= np.isin(events.etype, OUTCOME_TYPES).sum()
    for row in np.flatnonzero(np.isin(ev.etype, OUTCOME_TYPES)):
        shown = ev.item[row - SHOWN : row][ev.etype[row - SHOWN : row] == IMPRESSION]
        assert ev.item[row] in shown.tolist() and (ev.user[row - SHOWN : row] == ev.user[row]).all()
    control, rejection = validate_experiment_control(orjson.loads(shop.control_line))
    assert rejection is None and control.ts < events.ts.min()
    counted = recount(ev.to_jsonl().splitlines(), ModelConfig(), SECRET)
    totals = counted.experiments["bench"]
    assert totals[("control", "all", "impressions")] + totals[("treatment", "all", "impressions")] == SHOWN * shop.impressions
    # Every outcome was shown right before it: each click is attributed.
    clicks = int((events.etype == OUTCOME_TYPES[0]).sum())
    assert totals[("control", "all", "clicks")] + totals[("treatment", "all", "clicks")] == clicks
