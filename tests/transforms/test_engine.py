"""The reference engine: window semantics on a hand-made stream, and replay() against scoring every window.

The hand stream (T0 = 1_700_000_000_000, a multiple of the 100 ms window and the 200 ms refresh slot):

    window 0 [T0, T0+100):     u1 view A @10, u1 view B @20, u2 view A @30
    window 1 [T0+100, T0+200): u2 view B @110, u3 view C @150
    window 2 [T0+200, T0+300): u3 view D @210, u1 forget @250

Catalog (ts T0 - 1000, so a catalog-only window ending T0 - 900 closes first): A, B books; C, D toys.
Refresh slots of 200 ms: window 0 (slot of T0+99) refreshes, window 1 (T0+199: same slot) does not,
window 2 (T0+299: next slot) does.

By hand (cosine; counts are occurrence weights, view = 1):
    after window 0: n_A = 2, n_B = 1, c_AB = 1 (u1)      -> A-B = 1/sqrt(2);  trending A 2, B 1
    after window 2: n_A = 2, n_B = 2, c_AB = 2 (u1, u2)  -> A-B = 2/sqrt(4) = 1
                    n_C = n_D = 1, c_CD = 1 (u3)         -> C-D = 1;          trending A 2, B 2, C 1, D 1
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from transforms.catalog import CatalogItem
from transforms.config import ModelConfig
from transforms.engine import FinalState, ReferenceEngine, WindowOutput, last_windows, replay
from transforms.events import EventBatch, batch_from_columns
from transforms.synthetic import generate_shop

T0 = 1_700_000_000_000
CONFIG = ModelConfig(window_ms=100, model_refresh_ms=200, half_life_ms=10**12, trending_window_ms=10_000, trending_slide_ms=100)
CATALOG = [
    CatalogItem("A", title="alpha book", category="books", ts=T0 - 1000),
    CatalogItem("B", title="beta book", category="books", ts=T0 - 1000),
    CatalogItem("C", title="gamma toy", category="toys", ts=T0 - 1000),
    CatalogItem("D", title="delta toy", category="toys", ts=T0 - 1000),
]
STREAM = [  # (user, item, event type, ms after T0)
    ("u1", "A", "view", 10),
    ("u1", "B", "view", 20),
    ("u2", "A", "view", 30),
    ("u2", "B", "view", 110),
    ("u3", "C", "view", 150),
    ("u3", "D", "view", 210),
    ("u1", "", "forget", 250),
]


def batch(rows) -> EventBatch:
    return batch_from_columns([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [T0 + r[3] for r in rows])


def run(rows, config=CONFIG, catalog=CATALOG, calls=None, score_users=True):
    outputs: list[WindowOutput] = []
    engine = ReferenceEngine(config, catalog, on_window=outputs.append, score_users=score_users)
    for part in calls or [rows]:
        engine.process(batch(part))
    engine.finish()
    return engine, outputs


def lists(nb):
    ids, sims = nb
    return list(zip(ids.tolist(), [pytest.approx(s, rel=1e-12) for s in sims.tolist()]))


def home(out: WindowOutput, user: str) -> list[tuple[str, float, str]]:
    return [(i.item, round(i.score, 6), i.reason.text) for i in out.users[user].home]


def by_end(outputs) -> dict[int, WindowOutput]:
    return {o.window_end_ms - T0: o for o in outputs}


def test_window_sequence_and_what_each_window_sees():
    engine, outputs = run(STREAM)
    assert [o.window_end_ms - T0 for o in outputs] == [-900, 100, 200, 300]  # nothing more at finish: no changes
    catalog_only, w0, w1, w2 = outputs

    # The catalog-only window: catalog and content, no events, no users.
    assert [c.item_id for c in catalog_only.catalog] == ["A", "B", "C", "D"]
    assert set(catalog_only.content) == {"A", "B", "C", "D"} and catalog_only.users == {} and catalog_only.events == 0
    assert catalog_only.content["A"][0].tolist() == ["B"]  # shares "book" and the category

    # Window 0: refresh (first slot); only A and B exist so far.
    assert w0.events == 3
    assert {k: lists(v) for k, v in w0.neighbours.items()} == {"A": [("B", 1 / math.sqrt(2))], "B": [("A", 1 / math.sqrt(2))]}
    assert lists(w0.trending_global) == [("A", 2.0), ("B", 1.0)]
    assert {k: v[0].tolist() for k, v in w0.trending_by_category.items()} == {"books": ["A", "B"]}
    assert sorted(w0.users) == ["u1", "u2"]
    # u1 (A, B ~ equal interest): A = cf 1 + content 0.3 + category 0.2 * 1 + popularity 0.05 * 1 = 1.55,
    #                              B = 1 + 0.3 + 0.2 * 0.5 + 0.05 * 0.5 = 1.425
    assert home(w0, "u1") == [("A", 1.55, "because you viewed B"), ("B", 1.425, "because you viewed A")]
    # u2 (A only): B = 1.425 as above; A = category 0.2 + popularity 0.05 = 0.25.
    assert home(w0, "u2") == [("B", 1.425, "because you viewed A"), ("A", 0.25, "trending in books")]

    # Window 1: same refresh slot -> no neighbour or trending output; users scored on window 0's model.
    assert w1.events == 2 and w1.neighbours == {} and w1.trending_global is None and w1.trending_by_category == {}
    assert sorted(w1.users) == ["u2", "u3"]
    assert home(w1, "u2") == [("A", 1.55, "because you viewed B"), ("B", 1.425, "because you viewed A")]
    # u3 viewed C: C has no neighbours and no trending yet; D via content only, A and B as popular items.
    assert home(w1, "u3") == [("D", 0.3, "similar to C"), ("A", 0.05, "popular now"), ("B", 0.025, "popular now")]

    # Window 2: next slot -> refresh of every row changed since window 0 (A, B by u2; C, D by u3).
    assert {k: lists(v) for k, v in w2.neighbours.items()} == {"A": [("B", 1.0)], "B": [("A", 1.0)], "C": [("D", 1.0)], "D": [("C", 1.0)]}
    assert lists(w2.trending_global) == [("A", 2.0), ("B", 2.0), ("C", 1.0), ("D", 1.0)]
    assert {k: v[0].tolist() for k, v in w2.trending_by_category.items()} == {"books": ["A", "B"], "toys": ["C", "D"]}
    assert w2.users["u1"] is None  # forgotten
    # u3: C = cf 1 + content 0.3 + toys trend 0.2 + popularity 0.05 * 1/2 = 1.525 (D the same up to decay).
    assert home(w2, "u3") == [("C", 1.525, "because you viewed D"), ("D", 1.525, "because you viewed C"), ("A", 0.05, "popular now"), ("B", 0.05, "popular now")]

    # u1's tombstone stays, so events stamped up to the clock skew after the forget are dropped.
    assert sorted(engine.profiles) == ["u1", "u2", "u3"] and engine.profiles["u1"].is_forgotten and engine.events_applied == 7


def test_refresh_every_window_when_slots_are_windows():
    _, outputs = run(STREAM, config=CONFIG.replace(model_refresh_ms=100))
    w1 = by_end(outputs)[200]
    # Refreshed at window 1 now: A-B = 2/sqrt(2*2) = 1 (u2 paired them), C has no pair yet.
    assert {k: lists(v) for k, v in w1.neighbours.items()} == {"A": [("B", 1.0)], "B": [("A", 1.0)]}
    assert lists(w1.trending_global) == [("A", 2.0), ("B", 2.0), ("C", 1.0)]


def test_final_refresh_at_finish():
    # A refresh slot of 1000 ms: only window 0 refreshes while running; finish() refreshes the rest.
    _, outputs = run(STREAM, config=CONFIG.replace(model_refresh_ms=1000))
    assert [o.window_end_ms - T0 for o in outputs] == [-900, 100, 200, 300, 300]
    last = outputs[-1]
    assert last.users == {} and last.catalog == []
    assert set(last.neighbours) == {"A", "B", "C", "D"}
    assert lists(last.trending_global) == [("A", 2.0), ("B", 2.0), ("C", 1.0), ("D", 1.0)]


def test_late_events_fold_into_the_open_window():
    first = STREAM[:5]  # windows 0 and 1; window 1 stays open
    late = [("u4", "B", "view", 50)]  # window 0 is closed: applied in window 1
    _, outputs = run(None, calls=[first, late + STREAM[5:]])
    w = by_end(outputs)
    assert "u4" not in w[100].users and w[100].events == 3
    assert sorted(w[200].users) == ["u2", "u3", "u4"] and w[200].events == 3
    assert lists(w[300].trending_global)[:2] == [("B", 3.0), ("A", 2.0)]  # the late view counts for B


def test_catalog_updates_and_catalog_only_windows():
    engine = None
    outputs: list[WindowOutput] = []
    engine = ReferenceEngine(CONFIG, CATALOG, on_window=outputs.append)
    engine.upsert_catalog([CatalogItem("C", title="gamma toy", category="toys", in_stock=False, ts=T0 + 120)])
    engine.upsert_catalog([CatalogItem("E", title="epsilon toy", category="toys", ts=T0 + 450)])
    # Events in windows 0 and 5 only, and a catalog change in window 2 between them.
    engine.upsert_catalog([CatalogItem("F", title="phi book", category="books", ts=T0 + 250)])
    engine.process(batch([("u1", "A", "view", 10), ("u1", "C", "view", 20)]))
    engine.process(batch([("u1", "D", "view", 520)]))
    engine.finish()
    ends = [o.window_end_ms - T0 for o in outputs]
    # catalog-only T0-900; window 0; catalog-only windows 1 (C), 2 (F), 4 (E) close before window 5.
    assert ends == [-900, 100, 200, 300, 500, 600]
    w = by_end(outputs)
    assert [c.item_id for c in w[200].catalog] == ["C"] and w[200].users == {} and w[200].events == 0
    assert [c.item_id for c in w[300].catalog] == ["F"] and [c.item_id for c in w[500].catalog] == ["E"]
    assert set(w[500].content) == {"E"}  # only changed items' content neighbours are recomputed
    assert engine.model.facts["C"] == ("toys", False)
    # Out of stock since window 1: C is no longer recommended to u1.
    assert "C" in [i.item for i in w[100].users["u1"].home]
    assert "C" not in [i.item for i in w[600].users["u1"].home]


def test_score_users_false_builds_the_same_profiles():
    full, _ = run(STREAM)
    fast, outputs = run(STREAM, score_users=False)
    assert fast.profiles == full.profiles
    assert [o.window_end_ms for o in outputs if o.users] == []  # nothing is scored
    # The item model holds the same sums; neighbours are computed once at the end.
    for item in "ABCD":
        assert fast.items.count_of(item) == full.items.count_of(item)
    assert {k: lists(v) for k, v in fast.items.neighbours.items()} == {"A": [("B", 1.0)], "B": [("A", 1.0)], "C": [("D", 1.0)], "D": [("C", 1.0)]}
    assert fast.model.trending_global[0].tolist() == ["A", "B", "C", "D"]


def test_recommend_after_finish():
    engine, _ = run(STREAM)
    got = engine.recommend(["u2", "nobody"], n=1, now_ms=T0 + 300)
    assert [i.item for i in got["u2"]] == ["A"]  # A = cf 1 + content 0.3 + category 0.2 + popularity 0.05
    assert [(i.item, i.reason.text) for i in got["nobody"]] == [("A", "trending now")]
    excluded = engine.recommend(["u2"], n=1, now_ms=T0 + 300, exclude={"u2": {"A"}})
    assert [i.item for i in excluded["u2"]] == ["B"]


def test_last_windows_and_final_state_merge():
    assert last_windows(batch(STREAM), 100) == {"u1": (T0 + 250) // 100, "u2": (T0 + 110) // 100, "u3": (T0 + 210) // 100}
    final = FinalState()
    _, outputs = run(STREAM)
    for out in outputs:
        final.merge(out)
    assert final.users["u1"] == (T0 + 300, None)
    assert final.users["u2"][0] == T0 + 200 and final.users["u3"][0] == T0 + 300
    assert {k: t - T0 for k, (t, _) in final.neighbours.items()} == {"A": 300, "B": 300, "C": 300, "D": 300}
    assert final.trending_global[0] == T0 + 300 and sorted(final.catalog) == ["A", "B", "C", "D"]
    assert {k: t for k, (t, _) in final.content.items()} == {k: T0 - 900 for k in "ABCD"}


# -- replay() against scoring in every window, on a synthetic shop ------------------------


def synthetic_shop():
    catalog, chunks = generate_shop(users=50, items=40, events=2000, seed=1)
    events = EventBatch.concat(list(chunks))
    # A few privacy deletions in the middle (two users come back afterwards, one does not).
    users = sorted(set(events.user.tolist()))[:3]
    middle = int(np.median(events.ts))
    forgets = batch_from_columns(users, [""] * 3, ["forget"] * 3, [middle, middle + 1, int(events.ts.max())])
    return catalog, EventBatch.concat([events, forgets]).sorted_by_time()


def comparable(final: FinalState):
    nb = lambda d: {k: (t, v[0].tolist(), v[1].tolist()) for k, (t, v) in d.items()}  # noqa: E731
    return {
        "users": final.users,
        "neighbours": nb(final.neighbours),
        "content": nb(final.content),
        "catalog": final.catalog,
        "trending_global": (final.trending_global[0], final.trending_global[1][0].tolist(), final.trending_global[1][1].tolist()),
        "trending_by_category": nb(final.trending_by_category),
    }


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(),
        # Wide windows and a slow refresh: many events per window, stale neighbours between refreshes.
        ModelConfig(window_ms=60_000, model_refresh_ms=3_600_000, history_length=5, similarity="jaccard", max_per_category=2),
        # Lists at most once per 30 minutes of event time: scoring windows with no events of their own.
        ModelConfig(score_interval_ms=1_800_000),
    ],
    ids=["defaults", "wide-windows", "score-interval"],
)
def test_replay_equals_scoring_every_window(config):
    catalog, events = synthetic_shop()
    engine, final = replay(events, config, catalog, chunk=700)
    every = FinalState()
    full = ReferenceEngine(config, catalog, on_window=every.merge, score_users=True)
    for start in range(0, len(events), 500):  # different chunking as well
        full.process(events.take(slice(start, start + 500)))
    full.finish()
    assert comparable(final) == comparable(every)
    assert engine.profiles == full.profiles
    assert sum(v is None for _, v in final.users.values()) >= 1  # the user forgotten last stays deleted
    assert len(final.users) == len(set(events.user.tolist()))
    # The offline fast path builds the same user state.
    fast = ReferenceEngine(config, catalog, score_users=False)
    fast.process(events)
    fast.finish()
    assert fast.profiles == full.profiles


def test_swing_similarity_in_the_engine_is_refused_clearly():
    """Swing needs whole user histories: the incremental engine refuses it with a reason."""
    config = CONFIG.replace(similarity="swing")
    with pytest.raises(ValueError, match="batch measure"):
        ReferenceEngine(config)

# -- learned embeddings: the version in effect, and the switch at an event time ---------------


def _embeddings(version: str, best: str):
    """A 2-d export in which a user of item A (q_A = (1, 0)) likes ``best`` most: c_best = (1, 0), others 0."""
    from state.embeddings import EmbeddingExport
    from transforms.embedding import EmbeddingModel

    ids = ["A", "B", "C", "D", "Z"]
    query = np.array([(1, 0), (0, 1), (0, 1), (0, 1), (0, 1)], dtype=np.float32)
    candidate = np.array([(1, 0) if item == best else (0, 0) for item in ids], dtype=np.float32)
    return EmbeddingModel(EmbeddingExport(version=version, item_ids=np.array(ids, dtype=object), query=query, candidate=candidate))


EMBEDDING_ONLY = CONFIG.replace(weight_cf=0, weight_content=0, weight_category=0, weight_popularity=0, weight_embedding=1.0)
SWITCH_STREAM = [("u1", "A", "view", 10), ("u1", "A", "view", 150), ("u1", "A", "view", 250)]


def test_embedding_version_switches_at_its_effective_time():
    old, new = _embeddings("v1", best="Z"), _embeddings("v2", best="D")
    outputs: list[WindowOutput] = []
    engine = ReferenceEngine(EMBEDDING_ONLY, CATALOG, on_window=outputs.append, embeddings=old)
    engine.set_embeddings(new, effective_ms=T0 + 150)  # takes effect when window 1 [T0+100, T0+200) closes
    engine.process(batch(SWITCH_STREAM))
    engine.finish()
    windows = by_end(o for o in outputs if "u1" in o.users)
    # Z is a new item (no events, not in the catalog): the embedding alone brings it in.
    assert home(windows[100], "u1") == [("Z", 1.0, "similar to A")]
    assert home(windows[200], "u1") == [("D", 1.0, "similar to A")]
    assert home(windows[300], "u1") == [("D", 1.0, "similar to A")]
    assert [windows[t].embeddings_version for t in (100, 200, 300)] == [None, "v2", None]
    assert engine.model.embeddings is new
    # Offline (state only), recommend() picks the version in effect at the time asked.
    offline = ReferenceEngine(EMBEDDING_ONLY, CATALOG, score_users=False, embeddings=old)
    offline.set_embeddings(new, effective_ms=T0 + 150)
    offline.process(batch(SWITCH_STREAM))
    offline.finish()
    assert [i.item for i in offline.recommend(["u1"], 5, T0 + 150)["u1"]] == ["Z"]
    assert [i.item for i in offline.recommend(["u1"], 5, T0 + 151)["u1"]] == ["D"]
    assert offline.embeddings_at(T0 + 150) is old and offline.embeddings_at(T0 + 10**9) is new


def test_late_version_applies_from_the_next_window_and_off_switches_off():
    old, new = _embeddings("v1", best="Z"), _embeddings("v2", best="D")
    outputs: list[WindowOutput] = []
    engine = ReferenceEngine(EMBEDDING_ONLY, CATALOG, on_window=outputs.append, embeddings=old)
    engine.process(batch(SWITCH_STREAM[:2]))  # closes window 0 (scored with v1)
    engine.set_embeddings(new, effective_ms=T0 + 50)  # arrives after its time
    engine.set_embeddings(None, effective_ms=T0 + 299)
    engine.process(batch(SWITCH_STREAM[2:]))
    engine.finish()
    windows = by_end(o for o in outputs if "u1" in o.users)
    assert home(windows[100], "u1") == [("Z", 1.0, "similar to A")]
    assert home(windows[200], "u1") == [("D", 1.0, "similar to A")]
    assert home(windows[300], "u1") == []  # no embeddings, every other weight 0
    assert [windows[t].embeddings_version for t in (100, 200, 300)] == [None, "v2", ""]


def test_replay_with_embedding_versions_equals_scoring_every_window():
    catalog, chunks = generate_shop(users=40, items=60, events=1500, seed=3)
    config = ModelConfig(window_ms=1000, weight_embedding=0.7, embedding_candidates=5)
    items = sorted({c.item_id for c in catalog})
    rng = np.random.default_rng(0)

    def version(name: str):
        from state.embeddings import EmbeddingExport
        from transforms.embedding import EmbeddingModel

        vectors = rng.normal(size=(2, len(items), 8)).astype(np.float32)
        return EmbeddingModel(EmbeddingExport(version=name, item_ids=np.array(items, dtype=object), query=vectors[0], candidate=vectors[1]))

    events = EventBatch.concat(list(chunks)).sorted_by_time()
    middle = int(events.ts[len(events) // 2])
    switches = [(0, version("v1")), (middle, version("v2"))]
    _, fast = replay(events, config, catalog, embeddings=switches)
    every = FinalState()
    full = ReferenceEngine(config, catalog, on_window=every.merge, score_users=True)
    for effective, model in switches:
        full.set_embeddings(model, effective)
    full.process(events)
    full.finish()
    assert fast.users.keys() == every.users.keys()
    for user, (t, lists) in fast.users.items():
        assert every.users[user][0] == t
        assert lists == every.users[user][1]
    # The embeddings took part: without them (or with only the first version) lists differ.
    _, plain = replay(events, config, catalog)
    _, first_only = replay(events, config, catalog, embeddings=switches[:1])
    assert sum(plain.users[u][1] != fast.users[u][1] for u in fast.users) > len(fast.users) // 2
    assert any(first_only.users[u][1] != fast.users[u][1] for u in fast.users)


def test_experiment_lists_are_each_users_variant_until_the_stop():
    from transforms.experiments import ExperimentRecord, ExperimentStart, ExperimentStop, assign, parse_experiment

    rows = [r for r in STREAM if r[2] != "forget"] + [("u4", "A", "view", 120), ("u5", "C", "view", 20), ("u6", "B", "view", 40)]
    experiment = parse_experiment({"id": "e1", "salt": "s", "variants": {"control": {"share": 0.5}, "pop": {"share": 0.5, "preset": "popularity"}}})
    other = parse_experiment({"id": "e2", "variants": {"a": {"share": 0.5}, "b": {"share": 0.5}}})
    # Started in window 0 (in effect for lists scored at T0+100), stopped in window 1 (from T0+200);
    # starting another experiment meanwhile is refused.
    controls = [ExperimentStart(experiment, T0 + 5), ExperimentStart(other, T0 + 50), ExperimentStop("e1", T0 + 150)]
    outputs: list[WindowOutput] = []
    engine = ReferenceEngine(CONFIG, CATALOG, on_window=outputs.append)
    for control in controls:
        engine.control_experiment(control)
    engine.process(batch(rows))
    engine.finish()
    final = FinalState()
    for out in outputs:
        final.merge(out)
    assert final.experiments == {"e1": ExperimentRecord(experiment, T0 + 100, T0 + 100, T0 + 200)}
    assert [r.reason for out in outputs for r in out.rejections] == ["experiment_conflict"]
    # Lists scored at T0+100 (window 0's users) are their variant's; later ones the base config's.
    configs = experiment.configs(CONFIG)
    first_window = [o for o in outputs if o.window_end_ms == T0 + 100 and o.users][0]
    assert sorted(first_window.users) == ["u1", "u2", "u5", "u6"]
    assert {assign(experiment, u) for u in first_window.users} == {"control", "pop"}  # both variants are exercised
    for user, lists in first_window.users.items():
        variant = assign(experiment, user)
        assert lists.home_from == lists.cart_from == ("e1", variant)
        alone = run_with(rows, configs[variant], until_ms=T0 + 100)
        assert lists.home == alone[user].home
    base = run_with(rows, CONFIG, until_ms=T0 + 100)
    assert any(lists.home != base[u].home for u, lists in first_window.users.items() if assign(experiment, u) == "pop")
    for out in outputs:
        if out.window_end_ms >= T0 + 200:
            assert all(lists.home_from == ("~", "~") for lists in out.users.values() if lists is not None)
    # A replay with the same controls ends with the same lists and records.
    _, replayed = replay(batch(rows), CONFIG, CATALOG, experiments=controls)
    assert replayed.experiments == final.experiments
    assert {u: v[1].home_from for u, v in replayed.users.items()} == {u: v[1].home_from for u, v in final.users.items()}


def run_with(rows, config, until_ms):
    """Lists of the window ending at ``until_ms`` under ``config`` alone."""
    outputs: list[WindowOutput] = []
    engine = ReferenceEngine(config, CATALOG, on_window=outputs.append)
    engine.process(batch(rows))
    engine.finish()
    return [o for o in outputs if o.window_end_ms == until_ms and o.users][0].users


def _fold_in_export(version: str, seed: int):
    """A fold_in export of A, B, C, D in 3 dimensions (random, fixed): no item N."""
    from state.embeddings import EmbeddingExport, UserVectorRule
    from transforms.embedding import EmbeddingModel

    rng = np.random.default_rng(seed)
    ids = np.array(["A", "B", "C", "D"], dtype=object)
    candidate = rng.normal(size=(4, 3)).astype(np.float32)
    return EmbeddingModel(EmbeddingExport(version=version, item_ids=ids, query=candidate, candidate=candidate, user_vector=UserVectorRule("fold_in", 1.0, 1.0)))


# Shoppers view A then N (an item the export lacks) in windows 0 and 1; u9 views only A in window 3.
NEW_ITEM_STREAM = [("u1", "A", "view", 10), ("u1", "N", "view", 20), ("u2", "A", "view", 110), ("u2", "N", "view", 120), ("u9", "A", "view", 310)]


@pytest.mark.parametrize("online", [True, False])
def test_online_item_vectors_list_an_item_the_export_lacks(online):
    config = EMBEDDING_ONLY.replace(online_item_vectors=online, top_n=4, online_vector_refresh_ms=0)
    outputs: list[WindowOutput] = []
    engine = ReferenceEngine(config, CATALOG, on_window=outputs.append, embeddings=_fold_in_export("v1", seed=0))
    engine.process(batch(NEW_ITEM_STREAM))
    engine.finish()
    windows = by_end(outputs)
    listed = [item for item, _, _ in home(windows[400], "u9")]
    if online:
        # N's evidence at the refreshes closing T0+100 and T0+400 (T0+200 is in the first's slot): A, weight 1 then 2.
        assert windows[100].evidence["N"][0].tolist() == ["A"] and windows[400].evidence["N"][1].tolist() == [2.0]
        # A's row holds N, but only export items are partners (their users are the export's): A keeps its vector.
        assert "N" in listed and engine.served_embeddings(T0 + 400).online_items == 1
    else:
        assert windows[400].evidence == {} and engine.evidence is None
        assert "N" not in listed


def test_online_evidence_restarts_at_an_embedding_switch():
    config = EMBEDDING_ONLY.replace(top_n=4)
    first, second = _fold_in_export("v1", seed=0), _fold_in_export("v2", seed=1)
    engine = ReferenceEngine(config, CATALOG, embeddings=first)
    engine.set_embeddings(second, effective_ms=T0 + 250)  # the window [T0+200, T0+300) closes with it
    engine.process(batch(NEW_ITEM_STREAM))
    engine.finish()
    # Only the window after the switch counts for v2: u9's view of A pairs with nothing, so no row has evidence.
    assert engine.online.base is second
    assert all(len(engine.evidence.rows.get(code, ((), ()))[0]) == 0 for code in range(len(engine.evidence.vocab)))
    # Before the switch the same stream had given N evidence under v1 (the previous test).
    assert engine.served_embeddings(T0 + 400) is second


def test_an_item_the_export_lacks_starts_from_its_features():
    """D has no events and no vector in the export: its catalog record's feature vectors place it (the cold prior)."""
    from state.embeddings import EmbeddingExport, FeatureVectors, UserVectorRule
    from transforms.content import feature_bag
    from transforms.embedding import EmbeddingModel

    rng = np.random.default_rng(4)
    tokens = np.array(sorted({t for c in CATALOG for t in feature_bag(c, {})}), dtype=object)
    token_vectors = rng.normal(size=(len(tokens), 3)).astype(np.float32)
    ids = np.array(["A", "B", "C"], dtype=object)
    candidate = rng.normal(size=(3, 3)).astype(np.float32)
    export = EmbeddingExport(
        "v1", ids, candidate, candidate, user_vector=UserVectorRule("fold_in", 1.0, 1.0), features=FeatureVectors(tokens, token_vectors, token_vectors)
    )
    model = EmbeddingModel(export)
    for online in (True, False):
        engine = ReferenceEngine(EMBEDDING_ONLY.replace(online_item_vectors=online), CATALOG, embeddings=model)
        engine.process(batch([("u1", "A", "view", 10)]))
        engine.finish()
        served = engine.served_embeddings(T0 + 100)
        if online:
            expected = model.cold_vectors([CATALOG[3]])[0][0]
            np.testing.assert_array_equal(served.candidate_vectors(["D"])[0], expected)
        else:
            assert "D" not in served.rows


def test_online_vectors_move_once_per_vector_slot_and_at_the_end():
    """With online_vector_refresh_ms 1 s, the refresh closing T0+400 (same slot as T0+100) holds N's new
    evidence back; the end of input sends it."""
    config = EMBEDDING_ONLY.replace(top_n=4, online_vector_refresh_ms=1000)
    outputs: list[WindowOutput] = []
    engine = ReferenceEngine(config, CATALOG, on_window=outputs.append, embeddings=_fold_in_export("v1", seed=0))
    engine.process(batch(NEW_ITEM_STREAM))
    engine.finish()
    *closed, final = outputs  # the end of input's refresh comes last, with the last window's time
    windows = by_end(closed)
    assert windows[100].evidence["N"][1].tolist() == [1.0]
    assert windows[400].evidence == {} and windows[400].neighbours  # the model refreshed, the vectors did not
    assert final.window_end_ms == T0 + 400 and final.evidence["N"][1].tolist() == [2.0]
