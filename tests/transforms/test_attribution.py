"""Attribution with known answers, and the step against the independent recount on random logs."""

from __future__ import annotations

import math
import random

import orjson
import pytest

from state.schemas import SchemaError, decode_attribution, encode_attribution
from transforms.attribution import ALL, NO_BOUND, UserFeedback, attribute, experiment_totals, feed, recount
from transforms.config import ModelConfig
from transforms.events import parse_records
from transforms.recid import NO_EXPERIMENT, RecId, encode_rec_id

SECRET = "test-secret-0123456789"  # 16-64 chars, as the settings require
T0 = 1_765_000_020_000  # the start of a minute
MIN = 60_000
CONFIG = ModelConfig()
WINDOW = CONFIG.attribution_window_ms


def rid(user: str, nonce: str, context: str = "home", experiment: str = "exp", variant: str = "a", served: int = T0) -> str:
    return encode_rec_id(RecId(experiment, variant, context, served, nonce), user, SECRET)


def shown(user, rec_id, items, ts, positions=None):
    rec = {"user_id": user, "event_type": "impression", "rec_id": rec_id, "items": items, "ts": ts}
    if positions is not None:
        rec["positions"] = positions
    return rec


def event(user, etype, item, ts, **extra):
    return {"user_id": user, "event_type": etype, "item_id": item, "ts": ts, **extra}


def step(records, config=CONFIG, state=None, user="u1"):
    parsed = parse_records(records)
    assert not parsed.rejections
    return attribute(state, user, parsed.events.sorted_by_time(), config, SECRET)


def measures(counts, position=ALL, experiment="exp", variant="a", context="home"):
    """{measure: total over minutes} at one position of one list kind."""
    out: dict[str, float] = {}
    for (_, e, v, c, p, measure), value in counts.items():
        if (e, v, c, p) == (experiment, variant, context, position):
            out[measure] = out.get(measure, 0) + value
    return out


def test_rec_id_wins_over_last_touch():
    a, b = rid("u1", "0000000a"), rid("u1", "0000000b", variant="b")
    result = step([shown("u1", a, ["x", "y"], T0), shown("u1", b, ["z", "x"], T0 + 1000), event("u1", "click", "x", T0 + 2000, rec_id=a)])
    assert measures(result.counts, 0) == {"impressions": 1, "clicks": 1}  # x at position 0 of list a
    assert measures(result.counts, 1, variant="b") == {"impressions": 1}  # x at 1 of b: shown, not clicked
    assert measures(result.counts) == {"impressions": 2, "clicks": 1}
    # Live HR@k: the click is a choice of the latest list (b), a hit because b showed x.
    assert measures(result.counts, variant="b") == {"impressions": 2, "choices": 1, "hits": 1}
    assert result.unattributed == 0 and result.rejections == []


def test_last_touch_without_rec_id_and_with_a_rec_id_that_did_not_show_the_item():
    a, b = rid("u1", "0000000a"), rid("u1", "0000000b", variant="b")
    base = [shown("u1", a, ["x", "y"], T0), shown("u1", b, ["z", "x"], T0 + 1000)]
    for click in (event("u1", "click", "x", T0 + 2000), event("u1", "click", "x", T0 + 2000, rec_id=rid("u1", "0000000c")), event("u1", "click", "y", T0 + 2000, rec_id=b)):
        result = step(base + [click])
        item = click["item_id"]
        expected_variant, expected_position = ("b", 1) if item == "x" else ("a", 1)
        assert measures(result.counts, expected_position, variant=expected_variant)["clicks"] == 1
        assert sum(v for k, v in result.counts.items() if k[5] == "clicks") == 2  # one position + "all"


def test_window_expiry_is_inclusive_of_the_window():
    a = rid("u1", "0000000a")
    at_edge = step([shown("u1", a, ["x"], T0), event("u1", "click", "x", T0 + WINDOW)])
    assert measures(at_edge.counts, 0)["clicks"] == 1
    past = step([shown("u1", a, ["x"], T0), event("u1", "click", "x", T0 + WINDOW + 1, rec_id=a)])
    assert "clicks" not in measures(past.counts, 0) and past.unattributed == 1
    assert past.state is None  # nothing left in reach
    # A shorter configured window.
    short = step([shown("u1", a, ["x"], T0), event("u1", "click", "x", T0 + 10_001)], ModelConfig(attribution_window_ms=10_000))
    assert short.unattributed == 1


def test_duplicates_count_once():
    a = rid("u1", "0000000a")
    records = [
        shown("u1", a, ["x", "y"], T0),
        shown("u1", a, ["x", "y"], T0 + 10),  # the frontend resent it
        shown("u1", a, ["w"], T0 + 20, positions=[2]),  # the third item scrolled into view: new
        event("u1", "click", "x", T0 + 100),
        event("u1", "click", "x", T0 + 200, rec_id=a),
        event("u1", "purchase", "x", T0 + 300, price=2.5, quantity=4),
        event("u1", "purchase", "x", T0 + 400, price=2.5, quantity=4),
        event("u1", "purchase", "w", T0 + 500),  # no price: counts, adds nothing
    ]
    result = step(records)
    assert measures(result.counts) == {"impressions": 3, "clicks": 1, "purchases": 2, "revenue": 10.0, "choices": 2, "hits": 2}
    assert measures(result.counts, 2) == {"impressions": 1, "purchases": 1, "revenue": 0.0}
    assert result.duplicate_impressions == 2 and result.duplicate_outcomes == 2


def test_minutes_are_the_counted_events_own():
    a = rid("u1", "0000000a")
    result = step([shown("u1", a, ["x"], T0 + 59_999), event("u1", "add_to_cart", "x", T0 + MIN + 5)])
    assert result.counts[(T0, "exp", "a", "home", 0, "impressions")] == 1
    assert result.counts[(T0 + MIN, "exp", "a", "home", 0, "carts")] == 1
    assert result.counts[(T0 + MIN, "exp", "a", "home", ALL, "carts")] == 1


def test_forget_clears_the_users_impressions():
    a = rid("u1", "0000000a")
    result = step([shown("u1", a, ["x"], T0), {"user_id": "u1", "event_type": "forget", "ts": T0 + 1}, event("u1", "click", "x", T0 + 2, rec_id=a)])
    assert measures(result.counts) == {"impressions": 1} and result.unattributed == 1 and result.state is None


def test_bad_and_unknown_rec_ids_are_dead_lettered_whole():
    borrowed = rid("u2", "0000000a")  # issued to another user
    forged = rid("u1", "0000000b").replace(".exp.", ".exp2.")
    malformed = "r1.garbage"
    result = step([shown("u1", borrowed, ["x", "y"], T0, positions=[3, 4]), shown("u1", forged, ["x"], T0 + 1), shown("u1", malformed, ["z"], T0 + 2), event("u1", "click", "x", T0 + 3)])
    assert result.counts == {} and result.state is None and result.unattributed == 1
    reasons = [(r.reason, orjson.loads(r.raw)) for r in result.rejections]
    assert reasons == [
        ("unknown_rec_id", {"user_id": "u1", "event_type": "impression", "rec_id": borrowed, "items": ["x", "y"], "positions": [3, 4], "ts": T0}),
        ("unknown_rec_id", {"user_id": "u1", "event_type": "impression", "rec_id": forged, "items": ["x"], "positions": [0], "ts": T0 + 1}),
        ("bad_rec_id", {"user_id": "u1", "event_type": "impression", "rec_id": malformed, "items": ["z"], "positions": [0], "ts": T0 + 2}),
    ]
    other_secret = attribute(None, "u1", parse_records([shown("u1", rid("u1", "0000000a"), ["x"], T0)]).events, CONFIG, "another-secret")
    assert [r.reason for r in other_secret.rejections] == ["unknown_rec_id"]


def test_live_hit_rate():
    a, b = rid("u1", "0000000a"), rid("u1", "0000000b")
    records = [
        shown("u1", a, ["x", "y"], T0),
        event("u1", "click", "z", T0 + 1),  # chose something not shown: a choice, no hit
        event("u1", "click", "x", T0 + 2),  # a hit
        event("u1", "add_to_cart", "x", T0 + 3),  # the same item again: no second choice
        shown("u1", b, ["q"], T0 + 4),
        event("u1", "click", "y", T0 + 5),  # b is the latest list now: a choice of b, no hit (y goes to a by last touch)
    ]
    result = step(records)
    assert measures(result.counts) == {"impressions": 3, "clicks": 2, "carts": 1, "choices": 3, "hits": 1}
    totals = experiment_totals(result.counts)
    assert totals["exp"][("a", ALL, "choices")] == 3 and totals["exp"][("a", "home", "hits")] == 1


def test_no_outcome_before_any_impression_is_a_choice():
    result = step([event("u1", "click", "x", T0), event("u1", "view", "x", T0 + 1)])
    assert result.counts == {} and result.unattributed == 1 and result.state is None


def test_impressions_kept_bounds_the_state():
    config = ModelConfig(impressions_kept=2)
    lists = [rid("u1", f"0000000{n}") for n in range(3)]
    records = [shown("u1", lists[n], [f"i{n}"], T0 + n) for n in range(3)] + [event("u1", "click", f"i{n}", T0 + 10) for n in range(3)]
    result = step(records, config)
    assert measures(result.counts) == {"impressions": 3, "clicks": 2, "choices": 3, "hits": 1}
    assert sorted(result.state.impressions) == sorted(lists[1:])


def test_ads_count_per_item_and_day_and_no_experiment():
    ad = rid("u1", "0000000a", context="ads", experiment=NO_EXPERIMENT, variant=NO_EXPERIMENT)
    result = step([shown("u1", ad, ["sku1", "sku2"], T0), event("u1", "click", "sku2", T0 + 5), event("u1", "purchase", "sku2", T0 + 6, price=3.0)])
    day = T0 - T0 % 86_400_000
    assert result.ad_counts == {(day, "sku1", "impressions"): 1, (day, "sku2", "impressions"): 1, (day, "sku2", "clicks"): 1}
    assert measures(result.counts, experiment="~", variant="~", context="ads") == {"impressions": 2, "clicks": 1, "purchases": 1, "revenue": 3.0, "choices": 1, "hits": 1}  # one choice per (list, item)


def test_state_encoding_round_trips_and_is_versioned():
    a = rid("u1", "0000000a")
    records = [shown("u1", a, ["x", "y"], T0), event("u1", "click", "x", T0 + 1), event("u1", "click", "q", T0 + 2, rec_id=a), event("u1", "purchase", "x", T0 + 3, price=2.5)]
    state = feed(None, "u1", parse_records(records).events, T0, CONFIG, SECRET).state
    assert len(state.log) == 5 and state.settled.impressions == {}  # two shown items, three outcomes
    raw = encode_attribution(state)
    assert orjson.loads(raw)["v"] == 2
    decoded = decode_attribution(raw)
    assert decoded == state and decoded.current is None  # the current state is replayed when needed
    settled = feed(state, "u1", parse_records([event("u1", "view", "x", T0 + 5)]).events, T0 + 2 * WINDOW + 4, CONFIG, SECRET).state
    assert settled is None  # every row settled, its impressions out of reach of the bound
    with pytest.raises(SchemaError):
        decode_attribution(orjson.dumps({"v": 99, "n": 0, "m": []}))
    with pytest.raises(SchemaError):
        decode_attribution(orjson.dumps({"v": 2, "settled": {"n": 0, "m": []}}))
    # Version 1 (a settled state, no log) restores with its impressions settled.
    v1 = step(records).state
    migrated = decode_attribution(orjson.dumps({"v": 1, **v1.to_state()}))
    assert migrated.settled == v1 and len(migrated.log) == 0
    assert decode_attribution(encode_attribution(UserFeedback())) == UserFeedback()


# -- late feedback ---------------------------------------------------------------------------


def arrive(state, records, watermark, user="u1"):
    return feed(state, user, parse_records(records).events, watermark, CONFIG, SECRET)


def test_a_click_read_before_its_impression_is_attributed_when_the_impression_arrives():
    a = rid("u1", "0000000a")
    click = arrive(None, [event("u1", "click", "x", T0 + 1000)], T0 + 5 * MIN)
    assert click.counts == {} and click.unattributed == 1 and click.state is not None  # kept: an impression may come
    late = arrive(click.state, [shown("u1", a, ["w", "x"], T0)], T0 + 10 * MIN)
    assert late.replayed and late.unattributed == -1  # the click found its impression
    assert measures(late.counts, 1) == {"impressions": 1, "clicks": 1}
    assert measures(late.counts) == {"impressions": 2, "clicks": 1, "choices": 1, "hits": 1}
    # Resent, later still: nothing new.
    again = arrive(late.state, [shown("u1", a, ["x"], T0 + 2, positions=[1]), event("u1", "click", "x", T0 + 3000, rec_id=a)], T0 + 11 * MIN)
    assert again.counts == {} and again.duplicates == 2
    both = recount([event("u1", "click", "x", T0 + 1000), shown("u1", a, ["w", "x"], T0)], CONFIG, SECRET)
    assert measures({(m, *k): v for m, d in both.minutes.items() for k, v in d.items()}, 1) == {"impressions": 1, "clicks": 1}


def test_a_late_impression_takes_the_click_from_an_earlier_list():
    a, b = rid("u1", "0000000a"), rid("u1", "0000000b", variant="b")
    first = arrive(None, [shown("u1", a, ["x"], T0), event("u1", "click", "x", T0 + 2000)], T0 + MIN)
    assert measures(first.counts)["clicks"] == 1
    late = arrive(first.state, [shown("u1", b, ["x"], T0 + 1000)], T0 + 2 * MIN)  # the last touch, read late
    assert measures(late.counts) == {"clicks": -1, "choices": -1, "hits": -1}  # taken from list a ...
    assert measures(late.counts, variant="b") == {"impressions": 1, "clicks": 1, "choices": 1, "hits": 1}  # ... by b
    assert measures(late.counts, 0, variant="b") == {"impressions": 1, "clicks": 1}


def test_feedback_beyond_the_bound_is_not_attributed():
    a = rid("u1", "0000000a")
    clicked = lambda: arrive(None, [event("u1", "click", "x", T0 + 1000)], T0).state  # noqa: E731 (feed takes a state over)
    too_late = arrive(clicked(), [shown("u1", a, ["x"], T0)], T0 + WINDOW + 1)
    assert too_late.too_late == 1 and too_late.counts == {}
    at_bound = arrive(clicked(), [shown("u1", a, ["x"], T0)], T0 + WINDOW)
    assert at_bound.too_late == 0 and measures(at_bound.counts)["clicks"] == 1
    # A forget that late still clears the user.
    forgotten = arrive(at_bound.state, [{"user_id": "u1", "event_type": "forget", "ts": T0 - 1}], T0 + 3 * WINDOW)
    assert forgotten.too_late == 1 and forgotten.state is None


def test_a_bad_impression_read_late_is_dead_lettered_once():
    borrowed = rid("u2", "0000000a")
    result = arrive(None, [event("u1", "click", "x", T0 + 5), shown("u1", borrowed, ["x", "y"], T0)], T0 + MIN)
    assert [r.reason for r in result.rejections] == ["unknown_rec_id"] and result.counts == {}
    assert len(result.state.log) == 1  # only the click: rejected rows are never replayed


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("config", [CONFIG, ModelConfig(impressions_kept=2, attribution_window_ms=300_000)], ids=["default", "tight"])
def test_any_arrival_order_within_the_bound_counts_as_the_recount(seed, config):
    """Records arrive shuffled, each at most 0.9 of the bound behind the latest event time read before it,
    in batches; the state is encoded between batches.  The summed counts are the recount's."""
    rng = random.Random(seed)
    log = random_log(seed, users=6)
    bound = config.attribution_window_ms
    arrival = [r for _, r in sorted(((r["ts"] + rng.uniform(0, 0.9 * bound), r) for r in log), key=lambda pair: pair[0])]
    assert arrival != sorted(log, key=lambda r: r["ts"])
    states: dict[str, bytes] = {}
    counts: dict = {}
    ads: dict = {}
    rejections = []
    replays = 0
    watermark = NO_BOUND
    start = 0
    while start < len(arrival):
        batch = arrival[start : start + rng.randint(1, 12)]
        start += len(batch)
        events = parse_records(batch).events
        for user in dict.fromkeys(events.user.tolist()):
            previous = decode_attribution(states[user]) if user in states else None
            result = feed(previous, user, events.take(events.user == user), watermark, config, SECRET)
            assert result.too_late == 0
            if result.state is None:
                states.pop(user, None)
            else:
                states[user] = encode_attribution(result.state)
            replays += result.replayed
            rejections += result.rejections
            for key, value in result.counts.items():
                counts[key] = counts.get(key, 0) + value
            for (day, item, measure), value in result.ad_counts.items():
                ads.setdefault(day, {})[(item, measure)] = ads.setdefault(day, {}).get((item, measure), 0) + value
        watermark = max(watermark, max(r["ts"] for r in batch))
    expected = recount(log, config, SECRET)
    minutes: dict[int, dict] = {}
    for (minute, *rest), value in counts.items():
        if value:
            minutes.setdefault(minute, {})[tuple(rest)] = value
    assert close(minutes, expected.minutes)
    assert close(experiment_totals(counts), expected.experiments)
    assert close({d: {k: v for k, v in c.items() if v} for d, c in ads.items()}, expected.ads)
    assert sorted(r.raw for r in rejections) == sorted(r.raw for r in expected.rejections)
    assert replays and rejections  # the order exercised the replays


def close(a: dict, b: dict) -> bool:
    """Nested count dicts equal, up to float rounding of revenue (a replay adds and takes back) and zero totals."""
    def flat(d, prefix=()):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, prefix + (k,))
            elif abs(v) > 1e-9:
                yield prefix + (k,), v
    fa, fb = dict(flat(a)), dict(flat(b))
    return fa.keys() == fb.keys() and all(math.isclose(fa[k], fb[k], rel_tol=1e-9, abs_tol=1e-9) for k in fa)


# -- the step against the recount ------------------------------------------------------------


def random_log(seed: int, users: int = 12, steps: int = 600) -> list[dict]:
    """A shop's feedback with every awkward case: resends, foreign rec_ids, repeats, forgets, gaps past the window."""
    rng = random.Random(seed)
    items = [f"i{n}" for n in range(15)]
    ts = T0
    log: list[dict] = []
    issued: dict[str, list[tuple[str, list[str]]]] = {}
    for n in range(steps):
        ts += rng.choice([0, 1, 500, 20_000, 200_000]) if rng.random() > 0.01 else WINDOW + 1
        user = f"u{rng.randrange(users)}"
        roll = rng.random()
        mine = issued.setdefault(user, [])
        if roll < 0.3 or not mine:
            token = rid(user, f"{n:08x}", context=rng.choice(["home", "ads", "cart"]), variant=rng.choice(["a", "b"]))
            if rng.random() < 0.05:
                token = rid("someone-else", f"{n:08x}")
            shown_items = rng.sample(items, rng.randint(1, 5))
            mine.append((token, shown_items))
            log.append(shown(user, token, shown_items, ts))
        elif roll < 0.38:
            token, shown_items = rng.choice(mine)  # a resend, maybe of part of the list
            log.append(shown(user, token, shown_items[:1], ts, positions=[0]))
        elif roll < 0.39:
            log.append({"user_id": user, "event_type": "forget", "ts": ts})
        else:
            etype = rng.choice(["click", "click", "add_to_cart", "purchase", "view"])
            token, shown_items = rng.choice(mine)
            item = rng.choice(shown_items) if rng.random() < 0.8 else rng.choice(items)
            extra = {"rec_id": token} if rng.random() < 0.5 else {}
            if etype == "purchase":
                extra.update(price=round(rng.uniform(1, 50), 2), quantity=rng.randint(1, 3))
            log.append(event(user, etype, item, ts, **extra))
    return log


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("config", [CONFIG, ModelConfig(impressions_kept=2, attribution_window_ms=300_000)], ids=["default", "tight"])
def test_step_over_chunks_equals_recount(seed, config):
    """The job's way on input in order (per user, in windows, state encoded between) gives the recount's totals."""
    log = random_log(seed)
    events = parse_records(log).events.sorted_by_time()
    states: dict[str, bytes] = {}
    minutes: dict[int, dict] = {}
    ads: dict[int, dict] = {}
    all_counts: dict = {}
    rejections = []
    windows = events.ts // 200  # the job's windows: rows of one record share a time, so a window
    for window in dict.fromkeys(windows.tolist()):
        chunk = events.take(windows == window)
        for user in dict.fromkeys(chunk.user.tolist()):
            rows = chunk.take(chunk.user == user)
            previous = decode_attribution(states[user]) if user in states else None
            result = feed(previous, user, rows, window * 200, config, SECRET)
            assert not result.replayed and not result.too_late  # in order: no replays
            if result.state is None:
                states.pop(user, None)
            else:
                states[user] = encode_attribution(result.state)
            rejections += result.rejections
            for (minute, *rest), value in result.counts.items():
                bucket = minutes.setdefault(minute, {})
                bucket[tuple(rest)] = bucket.get(tuple(rest), 0) + value
                all_counts[(minute, *rest)] = all_counts.get((minute, *rest), 0) + value
            for (day, item, measure), value in result.ad_counts.items():
                ads.setdefault(day, {})[(item, measure)] = ads.setdefault(day, {}).get((item, measure), 0) + value
    expected = recount(log, config, SECRET)
    assert minutes == expected.minutes
    assert experiment_totals(all_counts) == expected.experiments
    assert ads == expected.ads
    assert sorted(r.raw for r in rejections) == sorted(r.raw for r in expected.rejections)
    assert any(k[-1] == "hits" for m in minutes.values() for k in m) and rejections  # the log exercised the rules


def test_recount_ignores_records_that_do_not_parse():
    a = rid("u1", "0000000a")
    expected = recount([shown("u1", a, ["x"], T0), {"user_id": "u1"}, "junk", b"[1, 2]"], CONFIG, SECRET)
    assert expected.minutes == {T0: {("exp", "a", "home", 0, "impressions"): 1.0, ("exp", "a", "home", ALL, "impressions"): 1.0}}
    assert expected.experiments == {"exp": {("a", "home", "impressions"): 1.0, ("a", ALL, "impressions"): 1.0}}


def test_recount_reads_json_lines_too():
    log = random_log(seed=2)
    lines = [orjson.dumps(r) for r in log[:100]] + [orjson.dumps(log[100:300]).decode()] + [orjson.dumps(r).decode() for r in log[300:]]
    assert recount(lines, CONFIG, SECRET) == recount(log, CONFIG, SECRET)
