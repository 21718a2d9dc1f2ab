"""The learned-embedding components of the hybrid scorer on a hand-built export (dim 2).

Export (query vectors q, candidate vectors c):

    item   q        c
    A      (1, 0)   (0, 0)
    B      (0, 1)   (0, 0)
    C      (0, 0)   (1, 0)
    D      (0, 0)   (0, 1)
    E      (0, 0)   (-1, 0)
    X      (0, 0)   (1, 1)      X is known only to the export (a new candidate)
    neighbours: A -> E, X

User interests A 2, B 1 (the scoring test's user):
    u = (2 q_A + 1 q_B) / 3 = (2/3, 1/3)
    u . c over the catalog [A B C D E X] = [0, 0, 2/3, 1/3, -2/3, 1]; mean 2/9, max 1, spread 7/9
    rel = max(0, (x - 2/9) / (7/9)):  C 4/7, D 1/7, X 1; A, B, E 0
    sources (v_i q_i . c_j): X: A 2, B 1 -> "similar to A";  D: A 0, B 1 -> "similar to B";  C -> A
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from state.embeddings import EmbeddingExport
from transforms.embedding import EmbeddingModel
from transforms.scoring import PICKED_FOR_YOU, relative_scores, score_user
from tests.transforms.test_scoring import BASE_HOME, CONFIG, make_model, make_profile, rounded


def rounded6(items):
    """Scores to 6 places: the scan multiplies in float32 (2/3 is not exact there)."""
    return [(i.item, round(i.score, 6), i.reason.text) for i in items]

IDS = ["A", "B", "C", "D", "E", "X"]
QUERY = [(1, 0), (0, 1), (0, 0), (0, 0), (0, 0), (0, 0)]
CANDIDATE = [(0, 0), (0, 0), (1, 0), (0, 1), (-1, 0), (1, 1)]


def sequence_weights() -> dict[str, np.ndarray]:
    """A block-free sequence model whose vector reads only the most recent item r:
    layer-norm(q_r) @ (1, -1), then the constant 1 -> A last: (~2, 1); B last: (~-2, 1)."""
    f = np.float32
    return {
        "heads": np.array([1], f),
        "input.weight": np.eye(2, dtype=f),
        "input.bias": np.zeros(2, f),
        "position": np.zeros((5, 2), f),
        "final_norm.weight": np.ones(2, f),
        "final_norm.bias": np.zeros(2, f),
        "output.weight": np.array([[1.0], [-1.0]], f),
        "output.bias": np.zeros(1, f),
    }


def make_embeddings(neighbours=None) -> EmbeddingModel:
    export = EmbeddingExport(
        version="v1",
        item_ids=np.array(IDS, dtype=object),
        query=np.array(QUERY, dtype=np.float32),
        candidate=np.array(CANDIDATE, dtype=np.float32),
        neighbours={"A": (np.array(["E", "X"], dtype=object), np.array([0.9, 0.8]))} if neighbours is None else neighbours,
        sequence=sequence_weights(),
    )
    return EmbeddingModel(export)


EMB = CONFIG.replace(weight_embedding=0.5, embedding_candidates=1)


def test_relative_scores():
    np.testing.assert_allclose(relative_scores(np.array([0, 0, 2 / 3, 1 / 3, -2 / 3, 1])), [0, 0, 4 / 7, 1 / 7, 0, 1])
    # Invariant to the softmax's free shift and to scale; all equal -> nothing stands out.
    x = np.array([-3.0, -1.0, -2.0, -2.5])
    np.testing.assert_allclose(relative_scores(x), relative_scores(5 * x + 40))
    assert relative_scores(x).max() == 1.0 and relative_scores(x)[1] == 1.0
    assert relative_scores(np.full(4, -7.0)).tolist() == [0.0] * 4
    assert relative_scores(np.empty(0)).tolist() == []


def test_embedding_scan_is_the_dot_product_over_the_export():
    np.testing.assert_allclose(make_embeddings().scan(np.array([2 / 3, 1 / 3])), [0, 0, 2 / 3, 1 / 3, -2 / 3, 1], rtol=1e-6)


def test_best_skips_excluded_items_and_breaks_ties_by_id():
    model = make_embeddings()
    scores = model.scan(np.array([2 / 3, 1 / 3]))
    ids, best = model.best(scores, 3, exclude={IDS[5], "not-in-export"})
    assert ids.tolist() == [IDS[2], IDS[3], IDS[0]]  # IDS[0] and IDS[1] tie at 0: the smaller id
    np.testing.assert_allclose(best, [2 / 3, 1 / 3, 0], rtol=1e-6)
    assert model.best(scores, 0)[0].tolist() == []
    assert model.best(scores, 10, exclude=set(IDS))[0].tolist() == []
    assert model.top(np.array([2 / 3, 1 / 3]), 2)[0].tolist() == [IDS[5], IDS[2]]


def test_embedding_component_blends_and_explains():
    lists = score_user(make_profile(), 0, make_model(embeddings=make_embeddings()), EMB)
    assert rounded6(lists.home) == [
        ("C", round(1.1 + 0.5 * 4 / 7, 6), "because you viewed A"),  # cf part 1.0 beats the embedding part 2/7
        ("E", round(2 / 3, 6), "because you clicked B"),  # E is worse than average: no embedding part
        ("D", round(1 / 3 + 0.3 * 0.375 + 0.2 * 0.5 + 0.5 / 7, 6), "because you viewed A"),
        ("X", 0.5, "similar to A"),  # the best unexcluded item by dot product joins the pool
        ("F", 0.3, "similar to A"),  # unknown to the export: no embedding part
        ("G", 0.225, "trending in books"),
        ("H", 0.05, "popular now"),
    ]


def test_embedding_alone_and_its_reasons():
    alone = CONFIG.replace(weight_cf=0, weight_content=0, weight_category=0, weight_popularity=0, weight_embedding=1.0, embedding_candidates=3)
    lists = score_user(make_profile(), 0, make_model(embeddings=make_embeddings()), alone)
    assert rounded6(lists.home) == [("X", 1.0, "similar to A"), ("C", round(4 / 7, 6), "similar to A"), ("D", round(1 / 7, 6), "similar to B")]
    # With only A among the strongest interests, nothing explains D (A's term is 0): "picked for you".
    one = score_user(make_profile(), 0, make_model(embeddings=make_embeddings()), alone.replace(interest_items=1))
    assert [(i.item, i.reason.text) for i in one.home] == [("X", "similar to A"), ("C", "similar to A"), ("D", PICKED_FOR_YOU.text)]


def test_candidates_skip_excluded_items_and_come_from_neighbours():
    alone = CONFIG.replace(weight_cf=0, weight_content=0, weight_category=0, weight_popularity=0, weight_embedding=1.0, embedding_candidates=1)
    model = make_model(embeddings=make_embeddings())
    # Top-1 by dot product is X; the export's neighbours of A (E, X) add nothing positive.
    assert [i.item for i in score_user(make_profile(), 0, model, alone).home] == ["X"]
    # X excluded: the scan's best unexcluded item is C; X's score still sets the scale (C stays 4/7).
    assert rounded6(score_user(make_profile(), 0, model, alone, exclude={"X"}).home) == [("C", round(4 / 7, 6), "similar to A")]
    # No scan candidates: only the neighbours of the strongest interests join (X via A).
    none = score_user(make_profile(), 0, model, alone.replace(embedding_candidates=0))
    assert [i.item for i in none.home] == ["X"]
    bare = make_model(embeddings=make_embeddings(neighbours={}))
    assert score_user(make_profile(), 0, bare, alone.replace(embedding_candidates=0)).home == []


def test_off_by_default_and_without_a_model():
    with_model = make_model(embeddings=make_embeddings())
    assert rounded(score_user(make_profile(), 0, with_model, CONFIG).home) == BASE_HOME  # weights default to 0
    assert rounded(score_user(make_profile(), 0, make_model(), EMB).home) == BASE_HOME  # no export
    # Cold start stays trending, and interests unknown to the export give no user vector.
    assert rounded(score_user(None, 0, with_model, EMB).home) == [("H", 1.0, "trending now"), ("G", 0.5, "trending now")]
    unknown = make_profile(interests={"Q": 1.0}, last_action={"Q": 0})
    assert score_user(unknown, 0, with_model, EMB.replace(weight_cf=0, weight_content=0, weight_category=0, weight_popularity=0)).home == []


def test_config_rejects_negative_embedding_settings():
    for name in ("weight_embedding", "weight_sequence", "embedding_candidates"):
        with pytest.raises(ValueError, match=name):
            CONFIG.replace(**{name: -1})


def test_sequence_component_reads_the_history_in_order():
    # A last: s = (2, 1) -> u . c = [0, 0, 2, 1, -2, 3], mean 2/3, max 3 -> X 1, C 4/7, D 1/7.
    # B last: s = (-2, 1) -> [0, 0, -2, 1, 2, -1], mean 0, max 2 -> E 1, D 1/2.
    alone = CONFIG.replace(weight_cf=0, weight_content=0, weight_category=0, weight_popularity=0, weight_sequence=1.0, embedding_candidates=3)
    model = make_model(embeddings=make_embeddings())
    a_last = score_user(make_profile(history=[("B", 0, 1.0), ("A", 1, 1.0)]), 0, model, alone)
    assert [(i.item, round(i.score, 3), i.reason.text) for i in a_last.home] == [("X", 1.0, PICKED_FOR_YOU.text), ("C", round(4 / 7, 3), PICKED_FOR_YOU.text), ("D", round(1 / 7, 3), PICKED_FOR_YOU.text)]
    b_last = score_user(make_profile(history=[("A", 0, 1.0), ("B", 1, 1.0)]), 0, model, alone)
    assert [(i.item, round(i.score, 3)) for i in b_last.home] == [("E", 1.0), ("D", 0.5)]
    # No history the export knows, or no sequence model in the export: no sequence component.
    assert score_user(make_profile(history=[("Q", 0, 1.0)]), 0, model, alone).home == []
    without = make_model(embeddings=EmbeddingModel(dataclasses.replace(make_embeddings().export, sequence=None)))
    assert score_user(make_profile(history=[("B", 0, 1.0), ("A", 1, 1.0)]), 0, without, alone).home == []
    # Both learned components: their parts add up (D: embedding 1/7 * 0.5 + sequence 1/2 * 1).
    both = score_user(make_profile(history=[("A", 0, 1.0), ("B", 1, 1.0)]), 0, model, alone.replace(weight_embedding=0.5))
    assert round({i.item: i.score for i in both.home}["D"], 3) == round(0.5 / 7 + 0.5, 3)
