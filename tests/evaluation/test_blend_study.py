"""The blend study scores recorded lists exactly as the prequential harness's rows, and runs the engines' learner step."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation import blend_study, harness
from tests.evaluation.test_harness import two_taste_events, write_jsonl
from transforms.blend import blend_settings
from transforms.catalog import CatalogItem


def _dataset(tmp_path) -> harness.Dataset:
    events = harness.read_event_file(write_jsonl(tmp_path / "events.jsonl", two_taste_events()))
    catalog = [CatalogItem(f"{t}{i}", title=f"{t} item {i}", category=t, tags=(t,)) for t in "ab" for i in range(8)]
    return harness.Dataset(name="tiny", events=events, catalog=catalog)


def test_a_recorded_setting_scores_what_the_harness_row_with_those_weights_scores(tmp_path):
    pytest.importorskip("transforms.engine")
    dataset = _dataset(tmp_path)
    config = harness.ModelConfig(blend_learning=False)  # the harness row with fixed weights
    observations = blend_study.record(dataset.events, dataset.catalog, config)
    rows = ["flowrec", "flowrec-cf", "flowrec-content"]
    report = harness.evaluate(dataset, "prequential", k=3, algorithms=rows, config=config)
    assert len(observations) == report.results["flowrec"].evaluated
    settings = [blend_settings(config)[0], *[s for s in blend_study.only_settings(config) if s.name in ("only_cf", "only_content")]]
    gains = blend_study.setting_gains(observations, settings, 3)
    for name, column in zip(rows, gains.T):
        assert (column > 0).mean() == pytest.approx(report.results[name].metrics["hr"])
    # The two tastes make the parts disagree somewhere, or this test would prove little.
    assert not np.array_equal(gains[:, 1] > 0, gains[:, 2] > 0)


def test_the_learner_serves_the_setting_that_wins_and_only_on_its_shard():
    config = harness.ModelConfig(weight_cf=1.0, weight_content=0.5, weight_category=0.0, weight_popularity=0.0, blend_margin=0.0)
    settings = list(blend_settings(config))  # configured, lean_cf, lean_content
    # Four warm lists of one user; only lean_content ranks the target, every time.
    observations = [blend_study.Observation("u", t, "x", np.array(["x"], dtype=object), np.zeros((1, 6)), True) for t in range(4)]
    gains = np.array([[0.0, 0.0, 1.0]] * 4)
    hits = blend_study.simulate(observations, gains, settings, config, shards=8)
    # The first list is served with the configured weights (a miss); every later one with lean_content.
    assert hits.tolist() == [0.0, 1.0, 1.0, 1.0]


def test_with_the_catalog_at_first_event_no_list_holds_an_item_before_someone_touched_it(tmp_path):
    pytest.importorskip("transforms.engine")
    dataset = _dataset(tmp_path)
    ordered = dataset.events.sorted_by_time()
    first: dict[str, int] = {}
    for item, ts in zip(ordered.item.tolist(), ordered.ts.tolist()):
        first.setdefault(item, ts)
    untouched = CatalogItem("a-never", title="a item never", category="a", tags=("a",), ts=5)
    arriving = blend_study.catalog_at_first_event([*dataset.catalog, untouched], dataset.events)
    assert [c.ts for c in arriving] == [first[c.item_id] for c in dataset.catalog] + [5]
    config = harness.ModelConfig()
    # With the whole catalog from the start, content lists items nobody has touched yet (else this proves little)...
    ahead = blend_study.record(dataset.events, dataset.catalog, config)
    assert any(i in first and first[i] >= o.ts for o in ahead for i in o.items.tolist())
    # ...and with each item arriving at its first event, none (the untouched item is listable throughout).
    observations = blend_study.record(dataset.events, arriving, config)
    listed = [i for o in observations for i in o.items.tolist() if i not in first or first[i] >= o.ts]
    assert listed and set(listed) == {"a-never"}
