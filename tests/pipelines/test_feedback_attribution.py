"""Attribution as UserState runs it (:class:`pipelines.operators.FeedbackAttribution`) on fake Flink state:
feedback fed on arrival, in bundles, out of order and late, adds up to the recount; each count is tagged
with its window (late feedback: the open one) and dead letters join the stats batch."""

from __future__ import annotations

import math
import random

from pipelines.operators import FeedbackAttribution
from tests.transforms.test_attribution import SECRET, T0, random_log, rid, shown
from state.schemas import decode_attribution
from transforms.attribution import recount
from transforms.config import ModelConfig
from transforms.events import parse_records, split_feedback
from transforms.windows import WindowClock
from tests.pipelines.fakestate import FakeMap, FakeValue, RecordingMap

CONFIG = ModelConfig()


class FakeCounter:
    def __init__(self):
        self.count = 0

    def inc(self, n=1):
        self.count += n


class FakeMetrics:
    def __init__(self):
        self.counters: dict[str, FakeCounter] = {}

    def counter(self, name):
        return self.counters.setdefault(name, FakeCounter())


class FakeContext:
    """The runtime context of one key: states by name."""

    def __init__(self):
        self.maps: dict[str, FakeMap] = {}
        self.values: dict[str, FakeValue] = {}
        self.metrics = FakeMetrics()

    def get_map_state(self, descriptor):
        return self.maps.setdefault(descriptor.name, FakeMap())

    def get_state(self, descriptor):
        return self.values.setdefault(descriptor.name, FakeValue())

    def get_metrics_group(self):
        return self.metrics


def attribution(context: FakeContext) -> FeedbackAttribution:
    return FeedbackAttribution(context, CONFIG, SECRET)


def add_to(totals: dict, counts: dict) -> None:
    for key, value in counts.items():
        totals[key] = totals.get(key, 0) + value


def test_fed_on_arrival_out_of_order_and_late_equals_the_recount():
    """Bundles of a few records, shuffled within 20 minutes of event time (within the 30-minute bound), the
    watermark trailing the latest event by 100 ms: impressions come after their clicks, whole windows late."""
    log = sorted(random_log(seed=4, users=10, steps=800), key=lambda r: r["ts"])
    rng = random.Random(1)
    arrival = [r for _, r in sorted(((r["ts"] + rng.uniform(0, 20 * 60_000), r) for r in log), key=lambda pair: pair[0])]
    clock = WindowClock.of(CONFIG)
    context = FakeContext()
    operator = attribution(context)
    counts: dict = {}
    ad_counts: dict = {}
    dead_letters: list = []
    late = replays = latest = 0
    watermark = -(2**63)
    for start in range(0, len(arrival), 7):
        _, feedback = split_feedback(parse_records(arrival[start:start + 7]).events)
        if not len(feedback):
            continue
        windows = feedback.ts // CONFIG.window_ms
        bundle = [(int(w), feedback.take(windows == w)) for w in sorted(set(windows.tolist()))]
        found, batch = operator.attribute(0, bundle, watermark)
        for piece in found:
            tagged = [w for w, _ in bundle if clock.timer(w) > watermark]
            # Each count is tagged with a window of the bundle, or with the open window when late.
            assert piece.window in tagged or piece.window == clock.open_window(watermark)
            add_to(counts, piece.counts)
            add_to(ad_counts, piece.ad_counts)
        dead_letters += batch.dead_letters
        late += batch.stats.get("attribution_late", 0)
        replays += batch.stats.get("attribution_replays", 0)
        assert batch.stats.get("attribution_too_late", 0) == 0
        latest = max(latest, int(feedback.ts.max()))
        watermark = latest - 100
    expected = recount(log, CONFIG, SECRET)
    minutes: dict = {}
    for (minute, *rest), value in counts.items():
        if value:
            minutes.setdefault(minute, {})[tuple(rest)] = value
    assert minutes.keys() == expected.minutes.keys()
    for minute, fields in expected.minutes.items():
        assert {k for k, v in minutes[minute].items() if v} == set(fields)
        assert all(math.isclose(minutes[minute][k], v, abs_tol=1e-9) for k, v in fields.items())
    ads: dict = {}
    for (day, item, measure), value in ad_counts.items():
        if value:
            ads.setdefault(day, {})[(item, measure)] = value
    assert ads == expected.ads
    assert len(dead_letters) == len(expected.rejections) > 0
    assert replays > 0  # rows came before rows they sort after
    assert late > 0 and late == context.metrics.counters["attribution_late"].count  # the shuffle made feedback late, counted both ways
    assert context.maps["attribution"] and context.maps["attribution"].keys() == context.maps["attribution_last_ms"].keys()


def test_a_users_state_is_read_from_flink_once_with_one_call():
    """In thread mode each call into Java costs the interpreter lock: a user's state is read with one
    call (absent or not), then kept; an operator opened again on the same state reads it back."""
    context = FakeContext()
    state = context.maps["attribution"] = RecordingMap()
    calls = state.calls
    clock = WindowClock.of(CONFIG)

    def feed(operator: FeedbackAttribution, records: list[dict]) -> None:
        _, rows = split_feedback(parse_records(records).events)
        operator.attribute(0, [(clock.window_of(int(rows.ts.max())), rows)], int(rows.ts.min()) - 1)

    operator = attribution(context)
    token = rid("u1", "00000001")
    feed(operator, [shown("u1", token, ["i1"], T0)])
    for k in range(3):
        feed(operator, [{"user_id": "u1", "item_id": "i1", "event_type": "click", "ts": T0 + 1 + k, "rec_id": token}])
    assert [call for call in calls if call[0] != "put"] == [("get", "u1")]
    calls.clear()
    reopened = attribution(context)
    feed(reopened, [{"user_id": "u1", "item_id": "i1", "event_type": "click", "ts": T0 + 10, "rec_id": token}])
    assert [call for call in calls if call[0] != "put"] == [("get", "u1")]
    assert reopened.states.get(0, "u1") == decode_attribution(context.maps["attribution"]["u1"])
