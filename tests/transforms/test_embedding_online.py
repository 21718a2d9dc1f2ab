"""Item vectors learned in the stream: the co-occurrence-weighted mean held to its prior, items the
export lacks placed by their partners, and a model with added vectors that scores like any export."""

from __future__ import annotations

import numpy as np
import pytest

from state.embeddings import EmbeddingExport, UserVectorRule
from transforms.config import ModelConfig
from transforms.embedding import EmbeddingModel, OnlineItemVectors, fold_in, online_item_vector

FOLD_IN = UserVectorRule("fold_in", confidence=2.0, regularization=3.0)


def _export(n: int = 12, dim: int = 5, seed: int = 0, rule: UserVectorRule = FOLD_IN) -> EmbeddingExport:
    rng = np.random.default_rng(seed)
    ids = np.array([f"i{k:02d}" for k in range(n)], dtype=object)
    candidate = rng.normal(size=(n, dim)).astype(np.float32)
    query = candidate if rule.kind == "fold_in" else rng.normal(size=(n, dim)).astype(np.float32)
    return EmbeddingExport("v1", ids, query, candidate, user_vector=rule)


def test_the_mean_is_held_to_its_prior_by_its_strength():
    prior, partners = np.array([1.0, 0.0]), np.array([[0.0, 2.0], [0.0, 4.0]])
    # (p prior + sum w c) / (p + sum w): with p = 2, w = (1, 1): ((2, 0) + (0, 6)) / 4.
    np.testing.assert_allclose(online_item_vector(prior, partners, np.array([1.0, 1.0]), 2.0), [0.5, 1.5])
    # Overwhelming evidence: the weighted mean of the partners; none to speak of: the prior.
    np.testing.assert_allclose(online_item_vector(prior, partners, np.array([1e9, 3e9]), 2.0), [0.0, 3.5], atol=1e-8)
    np.testing.assert_allclose(online_item_vector(prior, partners, np.array([1e-9, 1e-9]), 2.0), prior, atol=1e-8)


def test_an_item_the_export_lacks_takes_its_partners_vectors_and_known_ones_stay():
    export = _export()
    model = EmbeddingModel(export)
    online = OnlineItemVectors(model, prior_strength=1.0)
    online.update({"new": (["i01", "i02", "unknown"], [6.0, 2.0, 9.0]), "i05": (["i01"], [30.0]), "lone": (["unknown"], [5.0])})
    moved = online.model()
    # Known items keep their trained vectors by default; an item with no usable partner and no prior has none.
    assert set(online.vectors) == {"new"} and moved.online_items == 1
    expected = (6.0 * export.candidate[1].astype(np.float64) + 2.0 * export.candidate[2]) / (1.0 + 8.0)
    np.testing.assert_allclose(moved.candidate_vectors(["new"])[0], expected, rtol=1e-6)
    # The new item is appended; rows and ids agree; the export's rows are untouched.
    assert moved.ids.tolist() == export.item_ids.tolist() + ["new"] and moved.rows["new"] == len(export.item_ids)
    np.testing.assert_array_equal(moved.candidate[: len(export.item_ids)], export.candidate)
    # Someone who just touched i01 is offered the item bought with it.
    just_i01 = model.user_vector([("i01", 1.0)])
    assert moved.scan(just_i01)[moved.rows["new"]] > np.median(model.scan(just_i01))
    # A user whose interest is the new item gets a vector (fold_in reads its learned row).
    assert moved.user_vector([("new", 1.0)]) is not None and model.user_vector([("new", 1.0)]) is None
    # The base model is not changed by building another.
    assert "new" not in model.rows and model.candidate is export.candidate


def test_known_items_move_when_asked_and_a_cold_prior_places_a_new_item_before_any_evidence():
    export = _export(seed=2)
    config = ModelConfig(online_vector_known_prior=3.0, online_vector_prior=2.0)
    online = OnlineItemVectors.of(EmbeddingModel(export), config)
    cold = np.full(export.dim, 0.5, dtype=np.float32)
    online.set_priors({"fresh": cold})
    np.testing.assert_array_equal(online.model().candidate_vectors(["fresh"])[0], cold)
    online.update({"i05": (["i01"], [1.0]), "fresh": (["i03"], [2.0])})
    expected = (3.0 * export.candidate[5].astype(np.float64) + export.candidate[1]) / 4.0
    np.testing.assert_allclose(online.model().candidate_vectors(["i05"])[0], expected, rtol=1e-6)
    np.testing.assert_allclose(online.model().candidate_vectors(["fresh"])[0], (2.0 * cold + 2.0 * export.candidate[3]) / 4.0, rtol=1e-6)
    # The model was updated in place (a known row) and rebuilt (a new row): same rows as one built from scratch.
    scratch = EmbeddingModel(export).with_item_vectors(online.vectors)
    np.testing.assert_array_equal(online.model().candidate, scratch.candidate)
    assert online.model().rows == scratch.rows


def test_a_vector_depends_on_the_latest_evidence_only():
    export = _export(seed=5)
    evidence = [
        {"a": (["i01"], [1.0]), "i03": (["i02", "i04"], [2.0, 1.0])},
        {"a": (["i01", "i06"], [3.0, 1.0])},
        {"i03": (["i04", "i02"], [5.0, 2.0]), "b": (["i09"], [1.0])},
    ]
    stepwise = OnlineItemVectors(EmbeddingModel(export), prior_strength=2.0)
    for step in evidence:
        stepwise.update(step)
    latest = {item: found for step in evidence for item, found in step.items()}
    at_once = OnlineItemVectors(EmbeddingModel(export), prior_strength=2.0)
    at_once.update(dict(reversed(list(latest.items()))))
    a, b = stepwise.model(), at_once.model()
    assert a.ids.tolist() == b.ids.tolist()
    np.testing.assert_array_equal(a.candidate, b.candidate)


@pytest.mark.parametrize("rule", [FOLD_IN, UserVectorRule()])
def test_query_side_of_an_added_item(rule):
    """Under fold_in an added item is an interest like any other; under the mean rule it has no query vector."""
    model = EmbeddingModel(_export(rule=rule))
    online = OnlineItemVectors(model, prior_strength=1.0)
    online.update({"new": (["i01"], [4.0])})
    moved = online.model()
    keep, vectors = moved.query_vectors(["i02", "new"])
    assert keep == ([0, 1] if rule.kind == "fold_in" else [0])
    if rule.kind == "fold_in":
        np.testing.assert_array_equal(vectors[1], moved.candidate_vectors(["new"])[0])
        c = moved.candidate.astype(np.float64)
        np.testing.assert_allclose(moved.user_vector([("new", 1.0)]), fold_in(model.gram, c[[moved.rows["new"]]], np.array([1.0]), 2.0, 3.0))
    else:
        assert moved.user_vector([("new", 1.0)]) is None
        assert moved.sequence_vector(["new"]) is None
