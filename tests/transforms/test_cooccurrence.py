"""The collaborative item model: vocabulary order keys, sparse row arithmetic, windows and neighbour refresh."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.config import ModelConfig
from transforms import cooccurrence
from transforms.cooccurrence import ItemModel, Vocabulary, batch_top_k, group_starts, maps_from_state, may_reach_top, merge_row, rank_within, row_thresholds, run_positions, sorted_unique, sum_pair_codes
from transforms.similarity import pair_similarity

ID_CHARS = "ABCZabcz0129_.:@-"
# Ids in the id charset, many longer than 16 bytes and sharing long prefixes.
ids_strategy = st.one_of(
    st.text(alphabet=ID_CHARS, min_size=1, max_size=20),
    st.builds(lambda p, s: p + s, st.sampled_from(["item-0000000000000", "item-00000000000000000", "x" * 16]), st.text(alphabet=ID_CHARS, max_size=4)),
)


# -- Vocabulary ------------------------------------------------------------------


def test_vocabulary_codes():
    vocab = Vocabulary(["b", "a"])
    assert vocab.encode(["a", "c", "b", "c"]).tolist() == [1, 2, 0, 2]
    assert vocab.ids == ["b", "a", "c"] and vocab.code == {"b": 0, "a": 1, "c": 2} and len(vocab) == 3
    first = vocab.array()
    assert first.tolist() == ["b", "a", "c"] and vocab.array() is first  # cached
    vocab.encode(["d"])
    assert vocab.array().tolist() == ["b", "a", "c", "d"]  # refreshed after growth
    assert vocab.encode([]).tolist() == []


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(ids_strategy, min_size=1, max_size=25, unique=True), st.integers(0, 25))
def test_sort_keys_follow_string_order(ids, split):
    vocab = Vocabulary(ids[:split])
    vocab.sort_keys()  # computed for the first part, then extended
    vocab.encode(ids[split:])
    k1, k2 = vocab.sort_keys()
    assert len(k1) == len(ids)
    for x in range(len(ids)):
        for y in range(len(ids)):
            kx, ky = (int(k1[x]), int(k2[x])), (int(k1[y]), int(k2[y]))
            if kx < ky:
                assert vocab.ids[x] < vocab.ids[y]
            elif kx == ky:
                assert vocab.ids[x][:16] == vocab.ids[y][:16]  # only a shared 16-byte prefix ties
    fresh = Vocabulary(vocab.ids).sort_keys()
    assert np.array_equal(fresh[0], k1) and np.array_equal(fresh[1], k2)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(ids_strategy, min_size=1, max_size=12, unique=True), st.data())
def test_batch_top_k_matches_reference(ids, data):
    vocab = Vocabulary(ids)
    n = data.draw(st.integers(0, 30))
    row = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), dtype=np.int64)
    candidates = np.array(data.draw(st.lists(st.integers(0, len(ids) - 1), min_size=n, max_size=n)), dtype=np.int64)
    scores = np.array(data.draw(st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=n, max_size=n)), dtype=np.float64)
    k = data.draw(st.integers(1, 5))
    got = {r: idx.tolist() for r, idx in batch_top_k(row, candidates, scores, k, vocab)}
    expected = {}
    for r in sorted(set(row.tolist())):
        positions = [p for p in range(n) if row[p] == r]
        positions.sort(key=lambda p: (-scores[p], ids[candidates[p]]))
        expected[r] = [(scores[p], ids[candidates[p]]) for p in positions[:k]]
    # Compare (score, id): positions of duplicate candidates are interchangeable.
    assert {r: [(scores[p], ids[candidates[p]]) for p in idx] for r, idx in got.items()} == expected


# -- row arithmetic ------------------------------------------------------------------


def test_group_starts():
    assert group_starts(np.array([1, 1, 2, 5, 5, 5])).tolist() == [0, 2, 3, 6]
    assert group_starts(np.array([], dtype=np.int64)).tolist() == [0]


def test_sum_pair_codes_by_hand():
    a = np.array([2, 0, 2, 1, 0])
    b = np.array([1, 3, 1, 0, 3])
    w = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    sa, sb, sw = sum_pair_codes(a, b, w)
    assert list(zip(sa.tolist(), sb.tolist(), sw.tolist())) == [(0, 3, 7.0), (1, 0, 4.0), (2, 1, 4.0)]
    empty = sum_pair_codes(np.array([], dtype=np.int64), np.array([], dtype=np.int64), np.array([]))
    assert [len(x) for x in empty] == [0, 0, 0]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), st.integers(-5, 5)), max_size=40))
def test_sum_pair_codes_vs_dict(triples):
    reference: dict[tuple[int, int], float] = {}
    for a, b, w in triples:
        reference[(a, b)] = reference.get((a, b), 0.0) + w
    a = np.array([t[0] for t in triples], dtype=np.int64)
    b = np.array([t[1] for t in triples], dtype=np.int64)
    w = np.array([t[2] for t in triples], dtype=np.float64)
    sa, sb, sw = sum_pair_codes(a, b, w)
    assert list(zip(sa.tolist(), sb.tolist(), sw.tolist())) == [(x, y, v) for (x, y), v in sorted(reference.items())]


def test_merge_row_by_hand():
    codes, weights = merge_row(np.array([1, 4, 7]), np.array([1.0, 1.0, 1.0]), np.array([0, 4, 5, 9]), np.array([2.0, 3.0, 4.0, 5.0]))
    assert codes.tolist() == [0, 1, 4, 5, 7, 9] and weights.tolist() == [2.0, 1.0, 4.0, 4.0, 1.0, 5.0]
    old_w = np.array([1.0])
    codes, weights = merge_row(np.array([3]), old_w, np.array([3]), np.array([2.0]))
    assert codes.tolist() == [3] and weights.tolist() == [3.0] and old_w.tolist() == [1.0]  # input not mutated


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.dictionaries(st.integers(0, 60), st.integers(-3, 9), max_size=15), st.dictionaries(st.integers(0, 60), st.integers(-3, 9), max_size=15))
def test_merge_row_vs_dict(old, new):
    codes, weights = merge_row(
        np.array(sorted(old), dtype=np.int64), np.array([old[c] for c in sorted(old)], dtype=np.float64),
        np.array(sorted(new), dtype=np.int64), np.array([new[c] for c in sorted(new)], dtype=np.float64),
    )
    reference = dict(old)
    for c, w in new.items():
        reference[c] = reference.get(c, 0) + w
    assert codes.tolist() == sorted(reference)
    assert weights.tolist() == [float(reference[c]) for c in sorted(reference)]


# -- ItemModel on a hand board ---------------------------------------------------------------

CONFIG = ModelConfig(similarity="cosine", neighbours=5, min_cooccurrence=1.0)


def as_lists(neighbours):
    return {item: [(j, pytest.approx(s, rel=1e-12)) for j, s in zip(ids.tolist(), sims.tolist())] for item, (ids, sims) in neighbours.items()}


def test_windows_and_refresh_on_a_hand_board():
    model = ItemModel(CONFIG)
    # Window 1: occurrences A 1, B 2, C 1; pairs A-B 1 and B-C 1 (both directions).
    model.apply_window(["A", "B", "C", "B"], [1.0, 1.0, 1.0, 1.0], ["A", "B", "B", "C"], ["B", "A", "C", "B"], [1.0, 1.0, 1.0, 1.0])
    assert (model.count_of("A"), model.count_of("B"), model.count_of("C"), model.count_of("nope")) == (1.0, 2.0, 1.0, 0.0)
    first = model.refresh()
    # cosine: A-B = 1 / sqrt(1 * 2), B-C = 1 / sqrt(2 * 1); B's two neighbours tie -> by id.
    r = 1 / math.sqrt(2)
    assert as_lists(first) == {"A": [("B", r)], "B": [("A", r), ("C", r)], "C": [("B", r)]}
    assert model.refresh() == {}  # nothing changed since
    # Window 2: occurrences C +2, D +1; pair C-D 1.
    model.apply_window(["C", "D"], [2.0, 1.0], ["C", "D"], ["D", "C"], [1.0, 1.0])
    second = model.refresh()
    # Only rows that changed are recomputed: C (n_C = 3): D = 1/sqrt(3 * 1) = 0.577, B = 1/sqrt(3 * 2) = 0.408.
    assert as_lists(second) == {"C": [("D", 1 / math.sqrt(3)), ("B", 1 / math.sqrt(6))], "D": [("C", 1 / math.sqrt(3))]}
    assert as_lists(model.neighbours)["B"] == [("A", r), ("C", r)]  # B's list is kept from the first refresh


def test_variant_measures_are_the_lists_a_model_of_that_measure_computes():
    rng = np.random.default_rng(5)
    ids = [f"i{k:02d}" for k in range(40)]
    windows = []
    for _ in range(6):
        a = rng.choice(ids, 300).tolist()
        b = rng.choice(ids, 300).tolist()
        w = rng.choice([1.0, 2.0, 4.0], 300).tolist()
        windows.append((a + b, w + w, a + b, b + a, w + w))
    config = CONFIG.replace(neighbours=5, min_cooccurrence=2.0, variant_similarities=("jaccard", "lift", "cosine", "jaccard"))
    kept = ItemModel(config)
    alone = {m: ItemModel(CONFIG.replace(neighbours=5, min_cooccurrence=2.0, similarity=m)) for m in ("cosine", "jaccard", "lift")}
    for window in windows:
        for model in (kept, *alone.values()):
            model.apply_window(*window)
        changed = kept.refresh()
        for model in alone.values():
            model.refresh()
        # The variants refresh the same items as the main lists.
        assert all(set(lists) >= set(changed) for lists in kept.variant_neighbours.values())
    assert as_lists(kept.neighbours) == as_lists(alone["cosine"].neighbours)
    # The job's own measure is not kept twice.
    assert set(kept.variant_neighbours) == {"jaccard", "lift"}
    for measure in ("jaccard", "lift"):
        assert as_lists(kept.variant_neighbours[measure]) == as_lists(alone[measure].neighbours)
    # The measures really differ here (else the test shows nothing).
    assert {k: v[0].tolist() for k, v in kept.variant_neighbours["lift"].items()} != {k: v[0].tolist() for k, v in kept.neighbours.items()}


def test_min_cooccurrence_and_self_pairs():
    model = ItemModel(CONFIG.replace(min_cooccurrence=2.0))
    model.apply_window(["A", "B", "C"], [4.0, 4.0, 4.0], ["A", "A", "A"], ["B", "C", "A"], [1.0, 2.0, 5.0])
    # A-B (1.0) is below min_cooccurrence; A-A is never a neighbour.
    assert as_lists(model.refresh()) == {"A": [("C", 2 / 4)]}


def test_rows_only_for_owned_items_counts_for_all():
    model = ItemModel(CONFIG, owns=lambda item: item in {"A", "B"})
    model.apply_window(["A", "B", "C"], [1.0, 1.0, 1.0], ["A", "C", "B", "C"], ["C", "A", "C", "B"], [1.0, 1.0, 1.0, 1.0])
    assert {model.vocab.ids[c] for c in model.rows} == {"A", "B"}
    assert model.count_of("C") == 1.0
    assert set(model.refresh()) == {"A", "B"}


def test_row_capacity_keeps_the_strongest_with_id_tie_break():
    model = ItemModel(CONFIG.replace(row_capacity=4))  # prune when a row exceeds 4 + 4 // 4 = 5 entries
    others = ["o1", "o2", "o3", "o4", "o5", "o6"]
    weights = [1.0, 5.0, 3.0, 2.0, 3.0, 2.0]
    model.apply_window(others + ["X"], [1.0] * 7, ["X"] * 5, others[:5], weights[:5])
    code_x = model.vocab.code["X"]
    assert len(model.rows[code_x][0]) == 5  # at the threshold: kept whole
    model.apply_window([], [], ["X"], ["o6"], [2.0])
    codes, kept = model.rows[code_x]
    # Ranked: o2 5, o3 3, o5 3, then o4 and o6 tie at 2 -> o4 (smaller id) kept; o1 dropped.
    assert sorted(zip([model.vocab.ids[c] for c in codes.tolist()], kept.tolist())) == [("o2", 5.0), ("o3", 3.0), ("o4", 2.0), ("o5", 3.0)]
    assert codes.tolist() == sorted(codes.tolist())  # the row stays sorted by code


def test_growth_beyond_initial_counts():
    model = ItemModel(CONFIG)
    many = [f"i{k}" for k in range(3000)]
    model.apply_window(many, [1.0] * 3000, [], [], [])
    assert len(model.counts) >= 3000 and model.count_of("i2999") == 1.0 and model.count_of("i0") == 1.0


def reference_neighbours(item_w, pairs, config):
    """Plain-dict model: counts, rows, then the measure and (score desc, id asc) order."""
    counts: dict[str, float] = {}
    for i, w in item_w:
        counts[i] = counts.get(i, 0.0) + w
    rows: dict[str, dict[str, float]] = {}
    for a, b, w in pairs:
        rows.setdefault(a, {})[b] = rows.setdefault(a, {}).get(b, 0.0) + w
    out = {}
    for a, row in rows.items():
        scored = []
        for b, c in row.items():
            if c < config.min_cooccurrence or a == b:
                continue
            s = float(pair_similarity(config.similarity, np.array([c]), counts.get(a, 0.0), np.array([counts.get(b, 0.0)]), config.conditional_alpha)[0])
            if s > 0:
                scored.append((b, s))
        scored.sort(key=lambda kv: (-kv[1], kv[0]))
        out[a] = scored[: config.neighbours]
    return out


item_names = st.sampled_from(["A", "B", "C", "D", "E", "long-id-prefix-0000-x", "long-id-prefix-0000-a"])


@settings(max_examples=120, deadline=None, derandomize=True)
@given(
    st.lists(st.tuples(item_names, st.integers(1, 3)), min_size=1, max_size=20),
    st.lists(st.tuples(item_names, item_names, st.integers(1, 3)), max_size=25),
    st.sampled_from(["cosine", "jaccard", "lift", "conditional"]),
    st.randoms(use_true_random=False),
    st.integers(0, 25),
)
def test_order_and_window_split_do_not_matter(item_w, pairs, measure, rng, cut):
    config = CONFIG.replace(similarity=measure, neighbours=3)
    one = ItemModel(config)
    one.apply_window([i for i, _ in item_w], [float(w) for _, w in item_w], [a for a, _, _ in pairs], [b for _, b, _ in pairs], [float(w) for _, _, w in pairs])
    shuffled_items, shuffled_pairs = list(item_w), list(pairs)
    rng.shuffle(shuffled_items)
    rng.shuffle(shuffled_pairs)
    two = ItemModel(config)
    for part_items, part_pairs in ((shuffled_items[:cut], shuffled_pairs[:cut]), (shuffled_items[cut:], shuffled_pairs[cut:])):
        two.apply_window([i for i, _ in part_items], [float(w) for _, w in part_items], [a for a, _, _ in part_pairs], [b for _, b, _ in part_pairs], [float(w) for _, _, w in part_pairs])
    got_one = {k: (v[0].tolist(), v[1].tolist()) for k, v in one.refresh().items()}
    got_two = {k: (v[0].tolist(), v[1].tolist()) for k, v in two.refresh().items()}
    assert got_one == got_two  # bit-identical
    reference = reference_neighbours(item_w, pairs, config)
    for item, (ids, sims) in got_one.items():
        assert ids == [b for b, _ in reference.get(item, [])]
        assert sims == pytest.approx([s for _, s in reference.get(item, [])], rel=1e-12)


# -- the vectorised window merge against the row-by-row one -------------------------------------


def row_by_row_apply(counts: dict, rows: dict, items, item_weights, pair_a, pair_b, pair_weights, config, owns) -> None:
    """The merge as it was before it was vectorised: per owned row, merge_row then the capacity cut."""
    from transforms.similarity import top_k

    for item, w in zip(items, item_weights):
        counts[item] = counts.get(item, 0.0) + w
    summed: dict = {}
    for a, b, w in zip(pair_a, pair_b, pair_weights):
        summed.setdefault(a, {})[b] = summed.setdefault(a, {}).get(b, 0.0) + w
    capacity = config.row_capacity
    for a, new in summed.items():
        if not owns(a):
            continue
        row = rows.get(a, {})
        for b, w in new.items():
            row[b] = row.get(b, 0.0) + w
        if len(row) > capacity + capacity // 4:
            ids = np.array(list(row), dtype=object)
            kept = top_k(np.array(list(row.values())), ids, capacity)
            row = {ids[k]: row[ids[k]] for k in kept.tolist()}
        rows[a] = row


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.lists(st.tuples(item_names, st.integers(1, 3)), max_size=6),
            st.lists(st.tuples(item_names, item_names, st.integers(1, 2)), max_size=20),
        ),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from([None, {"A", "C", "long-id-prefix-0000-x"}]),
)
def test_vectorised_merge_matches_row_by_row(windows, owned):
    # A tiny capacity makes rows overflow and be cut, with many weight ties (broken by id).
    config = CONFIG.replace(row_capacity=2)
    owns = (lambda item: True) if owned is None else (lambda item: item in owned)
    model = ItemModel(config, owns=owns)
    counts: dict = {}
    rows: dict = {}
    for item_w, pairs in windows:
        args = ([i for i, _ in item_w], [float(w) for _, w in item_w], [a for a, _, _ in pairs], [b for _, b, _ in pairs], [float(w) for _, _, w in pairs])
        model.apply_window(*args)
        row_by_row_apply(counts, rows, *args, config, owns)
        got_counts, got_rows, _ = maps_from_state(model.to_state())
        assert {k: v for k, v in got_counts.items() if k in counts} == counts
        assert {a: dict(zip(*row)) for a, row in got_rows.items()} == rows
        for codes, _ in model.rows.values():
            assert codes.tolist() == sorted(codes.tolist())


def test_refresh_rows_gives_the_heaviest_entries_of_changed_rows_once():
    """What the online item vectors read: each changed row's heaviest entries (ties: smaller id), then nothing until rows change."""
    model = ItemModel(ModelConfig())
    model.apply_window([], [], ["a", "a", "a", "a", "b"], ["x", "w", "y", "z", "x"], [1.0, 2.0, 2.0, 5.0, 1.0])
    rows = model.refresh_rows(3)
    assert {item: (ids.tolist(), weights.tolist()) for item, (ids, weights) in rows.items()} == {
        "a": (["z", "w", "y"], [5.0, 2.0, 2.0]),
        "b": (["x"], [1.0]),
    }
    assert model.refresh_rows(3) == {}
    model.apply_window([], [], ["b"], ["x"], [2.0])
    (only,) = model.refresh_rows(3).items()
    assert only[0] == "b" and only[1][1].tolist() == [3.0]


@given(st.lists(st.lists(st.text(min_size=0, max_size=6), max_size=8), max_size=6))
@settings(max_examples=200, deadline=None)
def test_id_rank_is_the_string_order_of_the_ids_as_the_vocabulary_grows(parts):
    vocab = Vocabulary()
    for part in parts:
        vocab.encode(part)
        rank = vocab.id_rank()
        assert [vocab.ids[c] for c in np.argsort(rank)] == sorted(vocab.ids)
        assert sorted(rank.tolist()) == list(range(len(vocab)))


def test_row_thresholds_known_answers_one_column_and_several():
    row = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    value = np.array([5.0, 1.0, 3.0, 2.0, 9.0, 4.0, 4.0, 1.0, 7.0])
    # The 2nd largest of each row: row 0 -> 3, row 2 -> 4 (ties count twice); row 1 has no more
    # entries than wanted, so no threshold to cut at (-inf: it keeps them all).
    assert row_thresholds(row, value, 2).tolist() == [3.0] * 3 + [-np.inf] * 2 + [4.0] * 4
    assert row_thresholds(row, value, 1).tolist() == [5.0] * 3 + [9.0] * 2 + [7.0] * 4
    several = np.stack([value, -value, value * 0], axis=1)
    assert row_thresholds(row, several, 2).shape == several.shape
    assert row_thresholds(row, several, 2)[:, 1].tolist() == [-3.0] * 3 + [-np.inf] * 2 + [-4.0] * 4


def _rows_of(lengths: list[int], columns: int, seed: int, low: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the given lengths (row ascending) and random values from few distinct ones, so ties
    within a row are common: (row, value of shape (entries, columns))."""
    rng = np.random.default_rng(seed)
    row = np.repeat(np.arange(len(lengths)), lengths)
    return row, rng.integers(low, 6, size=(len(row), columns)).astype(np.float64)


def test_row_thresholds_of_no_entries_is_empty_in_the_values_shape():
    nothing = np.zeros(0, dtype=np.int64)
    assert row_thresholds(nothing, np.zeros(0), 3).shape == (0,)
    assert row_thresholds(nothing, np.zeros((0, 4)), 3).shape == (0, 4)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30), st.integers(1, 12), st.integers(1, 4), st.integers(0, 2**31))
def test_row_thresholds_of_several_columns_equal_each_column_alone(lengths, want, columns, seed):
    row, value = _rows_of(lengths, columns, seed)
    together = row_thresholds(row, value, want)
    for c in range(columns):
        assert np.array_equal(together[:, c], row_thresholds(row, value[:, c].copy(), want))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 150), min_size=1, max_size=12), st.integers(1, 12), st.integers(1, 3), st.integers(0, 2**31))
def test_row_thresholds_row_by_row_and_laid_out_give_each_rows_want_th_largest(lengths, want, columns, seed):
    # Long rows and the rows of a batch of few are partitioned row by row, the others in a padded
    # layout: every way must give each row's want-th largest value, the known answer from sorting the row.
    row, value = _rows_of(lengths, columns, seed)
    starts = np.cumsum(lengths) - lengths
    expected = np.full(value.shape, -np.inf)
    for r, (start, length) in enumerate(zip(starts, lengths)):
        if length > want:
            expected[row == r] = np.sort(value[start : start + length], axis=0)[length - want]
    assert np.array_equal(row_thresholds(row, value, want), expected)
    chosen = cooccurrence.FEW_ROWS, cooccurrence.ROW_BY_ROW_FROM
    try:
        cooccurrence.FEW_ROWS, cooccurrence.ROW_BY_ROW_FROM = 0, 10**9  # all laid out
        assert np.array_equal(row_thresholds(row, value, want), expected)
        cooccurrence.ROW_BY_ROW_FROM = 0  # all row by row
        assert np.array_equal(row_thresholds(row, value, want), expected)
    finally:
        cooccurrence.FEW_ROWS, cooccurrence.ROW_BY_ROW_FROM = chosen


def test_run_positions_and_sorted_unique_of_a_sorted_array():
    keys = np.array([2, 2, 5, 7, 7, 7, 9])
    assert run_positions(keys).tolist() == [0, 1, 0, 0, 1, 2, 0]
    assert run_positions(keys).tolist() == rank_within(keys).tolist()
    assert sorted_unique(keys).tolist() == [2, 5, 7, 9]
    assert run_positions(np.zeros(0, dtype=np.int64)).tolist() == []
    assert sorted_unique(np.zeros(0, dtype=np.int64)).tolist() == []


def test_may_reach_top_known_answer():
    # One row of 12 entries in runs of 4: run maxima 9, 8, 7; the 2nd largest run maximum (8) is a
    # value 2 entries reach, so everything below 8 goes; row 1 (2 entries, 1 run) keeps its positives.
    row = np.array([0] * 12 + [1, 1])
    value = np.array([9.0, 1, 2, 3, 8, 8, 0, 1, 7, 6, 5, 4, 0.0, 2.0])[:, None]
    assert np.flatnonzero(may_reach_top(row, value, 2, block=4)).tolist() == [0, 4, 5, 13]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=12), st.integers(1, 10), st.integers(1, 4), st.sampled_from([2, 4, 8]), st.integers(0, 2**31))
def test_may_reach_top_keeps_every_entry_of_a_rows_top_positive_values(lengths, want, columns, block, seed):
    # Zeros and negatives among the values: non-positive entries are common too.
    row, value = _rows_of(lengths, columns, seed, low=-2)
    kept = may_reach_top(row, value, want, block)
    top = (value > 0) & (value >= row_thresholds(row, value, want))
    assert not (top.any(axis=1) & ~kept).any()
    assert not (kept & ~(value > 0).any(axis=1)).any()
