"""Item vectors learned in the stream: the single-interest user vectors, the ridge step held to its
prior, and a model with moved and added vectors that scores like any export."""

from __future__ import annotations

import numpy as np
import pytest

from state.embeddings import EmbeddingExport, UserVectorRule
from transforms.embedding import EmbeddingModel, OnlineItemVectors, fold_in, online_item_vector, single_interest_vectors

FOLD_IN = UserVectorRule("fold_in", confidence=2.0, regularization=3.0)


def _export(n: int = 12, dim: int = 5, seed: int = 0, rule: UserVectorRule = FOLD_IN) -> EmbeddingExport:
    rng = np.random.default_rng(seed)
    ids = np.array([f"i{k:02d}" for k in range(n)], dtype=object)
    candidate = rng.normal(size=(n, dim)).astype(np.float32)
    query = candidate if rule.kind == "fold_in" else rng.normal(size=(n, dim)).astype(np.float32)
    return EmbeddingExport("v1", ids, query, candidate, user_vector=rule)


def test_single_interest_vectors_are_the_user_vector_of_one_interest():
    model = EmbeddingModel(_export())
    singles = single_interest_vectors(model)
    for k, item in enumerate(model.ids.tolist()):
        np.testing.assert_allclose(singles[k], model.user_vector([(item, 1.0)]), rtol=1e-9, atol=1e-12)
    mean = EmbeddingModel(_export(rule=UserVectorRule()))
    np.testing.assert_allclose(single_interest_vectors(mean), mean.export.query.astype(np.float64))


def test_the_ridge_step_is_held_to_its_prior_and_pulled_by_its_evidence():
    rng = np.random.default_rng(3)
    users, prior = rng.normal(size=(3, 4)), rng.normal(size=4)  # fewer partners than dimensions: all can score 1
    weights = np.array([1.0, 2.0, 0.5])
    # The minimiser of sum_k w_k (s_k . c - 1)^2 + p |c - prior|^2: its gradient vanishes there,
    # with fewer partners than dimensions and with more.
    for s_k, w_k in ((users, weights), (rng.normal(size=(9, 4)), rng.uniform(0.5, 3.0, size=9))):
        c = online_item_vector(prior, s_k, w_k, strength=4.0)
        gradient = 2 * (s_k.T * w_k) @ (s_k @ c - 1.0) + 2 * 4.0 * (c - prior)
        np.testing.assert_allclose(gradient, 0.0, atol=1e-9)
    # Negligible evidence weight: the prior; overwhelming evidence: every partner's user scores it 1.
    np.testing.assert_allclose(online_item_vector(prior, users, weights * 1e-12, strength=4.0), prior, atol=1e-9)
    np.testing.assert_allclose(users @ online_item_vector(prior, users, weights * 1e9, strength=4.0), 1.0, atol=1e-6)


def test_a_new_item_takes_a_vector_from_its_partners_and_a_known_one_moves_from_the_export():
    export = _export()
    model = EmbeddingModel(export)
    online = OnlineItemVectors(model, prior_strength=1.0)
    online.update({"new": (["i01", "i02"], [6.0, 2.0]), "i05": (["i01"], [30.0]), "i07": (["unknown", "i07"], [5.0, 5.0])})
    moved = online.model()
    assert moved.online_items == 2 and "i07" not in online.vectors  # no usable partner: the export's vector stays
    # The new item is appended; rows and ids agree; the export's own rows are untouched but i05's.
    assert moved.ids.tolist() == export.item_ids.tolist() + ["new"] and moved.rows["new"] == len(export.item_ids)
    unchanged = [k for k in range(len(export.item_ids)) if k != 5]
    np.testing.assert_array_equal(moved.candidate[unchanged], export.candidate[unchanged])
    # Someone who just touched i01 is predicted to like the items i01 co-occurs with more than before.
    just_i01 = model.user_vector([("i01", 1.0)])
    assert moved.scan(just_i01)[moved.rows["i05"]] > model.scan(just_i01)[5]
    assert moved.scan(just_i01)[moved.rows["new"]] > np.median(model.scan(just_i01))
    assert "new" in moved.top(just_i01, 3)[0].tolist()
    # A user whose interest is the new item gets a vector (fold_in reads its learned row).
    assert moved.user_vector([("new", 1.0)]) is not None and model.user_vector([("new", 1.0)]) is None
    # The base model is not changed by building another.
    assert "new" not in model.rows and model.candidate is export.candidate


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
