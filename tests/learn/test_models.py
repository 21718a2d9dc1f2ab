"""The torch models against their NumPy serving twins, and the losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learn.data import PAD, prepare
from learn.config import TrainConfig
from learn.models import ItemTowers, SequenceEncoder, fold_in_user_vectors, ranking_loss, sequence_arrays, user_vectors
from learn.trainer import encode_windows, fit_towers, fold_in_vectors, mean_query_vectors, vectors
from state.embeddings import EmbeddingExport, UserVectorRule
from transforms.config import ModelConfig
from transforms.embedding import EmbeddingModel, sequence_forward

from .conftest import SMALL


@pytest.fixture(scope="module")
def data(planted):
    events, catalog = planted
    return prepare(events, catalog, ModelConfig(), sequence_length=SMALL.sequence_length)


def _export(query: np.ndarray, candidate: np.ndarray, item_ids: np.ndarray, sequence=None) -> EmbeddingExport:
    return EmbeddingExport(version="v1", item_ids=item_ids, query=query, candidate=candidate, sequence=sequence)


def test_served_user_vector_equals_the_torch_forward(data):
    torch.manual_seed(0)
    towers = ItemTowers(data.n_items, 8, data.features, data.has_id).eval()
    query, candidate = vectors(towers)
    model = EmbeddingModel(_export(query, candidate, data.item_ids))
    interests = data.interests
    owner = np.repeat(np.arange(len(interests)), np.diff(interests.indptr))
    with torch.no_grad():
        q, _ = towers()
        expected = user_vectors(q, torch.as_tensor(owner), torch.as_tensor(interests.rows), torch.as_tensor(interests.weights, dtype=torch.float32), len(interests)).numpy()
    batch = mean_query_vectors(query, interests)
    for k in range(0, len(interests), 17):
        rows, weights = interests.of(k)
        served = model.user_vector(list(zip(data.item_ids[rows].tolist(), weights.tolist())))
        np.testing.assert_allclose(served, expected[k], atol=1e-5)
        np.testing.assert_allclose(batch[k], expected[k], atol=1e-5)
        assert served[-1] == pytest.approx(1.0)  # the bias slot: every query vector ends in 1


def test_fold_in_training_vectors_equal_the_served_solve(data):
    torch.manual_seed(0)
    towers = ItemTowers(data.n_items, 8, data.features, data.has_id, shared=True).eval()
    query, candidate = vectors(towers)
    np.testing.assert_array_equal(query, candidate)  # shared towers: one vector per item
    rule = UserVectorRule("fold_in", confidence=0.7, regularization=3.0)
    model = EmbeddingModel(EmbeddingExport("v1", data.item_ids, query, candidate, user_vector=rule))
    interests = data.interests
    owner = np.repeat(np.arange(len(interests)), np.diff(interests.indptr))
    with torch.no_grad():
        _, c = towers()
        expected = fold_in_user_vectors(
            c.double(), torch.as_tensor(owner), torch.as_tensor(interests.rows), torch.as_tensor(interests.weights), len(interests), 0.7, 3.0
        ).numpy()
    batch = fold_in_vectors(candidate, interests, np.arange(len(interests)), 0.7, 3.0)
    for k in range(0, len(interests), 17):
        rows, weights = interests.of(k)
        served = model.user_vector(list(zip(data.item_ids[rows].tolist(), weights.tolist())))
        np.testing.assert_allclose(served, expected[k], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(batch[k], expected[k], rtol=1e-6, atol=1e-8)


def test_fold_in_trains_only_with_the_holdout_objective():
    with pytest.raises(ValueError, match="objective 'holdout'"):
        TrainConfig(user_vector="fold_in", objective="leave_one_out")
    with pytest.raises(ValueError, match="user_vector must be one of"):
        TrainConfig(user_vector="sum")


def test_items_without_training_data_are_placed_by_features_alone(data):
    towers = ItemTowers(data.n_items, 8, data.features, data.has_id).eval()
    query, candidate = vectors(towers)
    new = data.rows_of()["n1"]
    assert not data.has_id[new]
    with torch.no_grad():
        bag = torch.as_tensor(data.features.indices[data.features.indptr[new]:data.features.indptr[new + 1]])
        expected = towers.query_features.weight[bag].mean(dim=0).numpy()
    np.testing.assert_allclose(query[new, :-1], expected, atol=1e-6)
    assert not np.allclose(query[new, :-1], 0.0)


@pytest.mark.parametrize("blocks,heads", [(1, 1), (2, 2)])
def test_sequence_numpy_forward_equals_torch(data, blocks, heads):
    torch.manual_seed(blocks)
    rng = np.random.default_rng(blocks)
    query = rng.normal(size=(data.n_items, 9)).astype(np.float32)
    query[:, -1] = 1.0
    encoder = SequenceEncoder(9, 8, length=5, blocks=blocks, heads=heads, dropout=0.3).eval()
    arrays = sequence_arrays(encoder)
    model = EmbeddingModel(_export(query, query.copy(), data.item_ids, sequence=arrays))
    windows = [rng.choice(data.n_items, size=n, replace=False) for n in (1, 3, 5, 5)]
    padded = np.full((len(windows), 5), PAD)
    for m, rows in enumerate(windows):
        padded[m, 5 - len(rows):] = rows
    with torch.no_grad():
        expected = encode_windows(encoder, torch.as_tensor(query), padded).numpy()
    for m, rows in enumerate(windows):
        np.testing.assert_allclose(sequence_forward(arrays, query[rows]), expected[m], atol=1e-5)
        np.testing.assert_allclose(model.sequence_vector(data.item_ids[rows].tolist()), expected[m], atol=1e-5)
    # Unknown items are skipped and only the last L known ones are read.
    longer = ["nope"] + data.item_ids[np.r_[windows[0], windows[2]]].tolist()
    np.testing.assert_allclose(model.sequence_vector(longer), expected[2], atol=1e-5)
    assert model.sequence_vector(["nope"]) is None
    assert EmbeddingModel(_export(query, query, data.item_ids)).sequence_vector(data.item_ids[:2].tolist()) is None


@pytest.mark.parametrize("kind", ["softmax", "sampled_softmax", "bpr"])
def test_losses_prefer_the_target(kind):
    generator = torch.Generator().manual_seed(0)
    candidate = torch.eye(6)
    users = torch.eye(6)[:2] * 5.0  # user 0 points at item 0, user 1 at item 1
    args = (torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), 4, generator)
    good = ranking_loss(kind, users, candidate, *args)
    bad = ranking_loss(kind, users.flip(0), candidate, *args)
    assert torch.isfinite(good) and good < bad


def test_softmax_mask_removes_the_inputs_from_the_normaliser():
    candidate = torch.eye(3)
    users = torch.tensor([[0.0, 5.0, 5.0]])
    generator = torch.Generator()
    plain = ranking_loss("softmax", users, candidate, torch.tensor([0]), torch.tensor([1]), torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), 1, generator)
    masked = ranking_loss("softmax", users, candidate, torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([2]), 1, generator)
    assert masked < plain
    assert masked == pytest.approx(-torch.log_softmax(torch.tensor([0.0, 5.0]), 0)[1].item(), abs=1e-6)


# Fold-in scores regress towards 0/1 (flat logits), so its softmax loss has a high floor and falls less.
@pytest.mark.parametrize("objective,user_vector,drop", [("leave_one_out", "mean", 0.8), ("holdout", "mean", 0.8), ("holdout", "fold_in", 0.95)])
def test_training_loss_decreases(data, objective, user_vector, drop):
    _, result = fit_towers(data, SMALL.replace(epochs=8, objective=objective, user_vector=user_vector), epochs=8)
    losses = [r.loss for r in result.records]
    assert len(losses) == 8 and result.best_epoch == 8
    assert losses[-1] < drop * losses[0]


def test_leave_one_out_vectors_are_the_served_vector_without_the_target(data):
    from learn.trainer import _interest_batch, _leave_one_out, leave_one_out_pairs

    owner = np.array([0, 0, 0, 1, 1])
    pair, entry = leave_one_out_pairs(owner, np.array([True, False, True, False, True]))
    assert list(zip(pair.tolist(), entry.tolist())) == [(0, 1), (0, 2), (1, 0), (1, 1), (2, 3)]

    towers = ItemTowers(data.n_items, 8, data.features, data.has_id).eval()
    query, candidate = vectors(towers)
    model = EmbeddingModel(_export(query, candidate, data.item_ids))
    users = np.arange(6)
    owner, rows, weights, is_target = _interest_batch(data.interests, users, np.random.default_rng(0), 0.5)
    with torch.no_grad():
        found, masked_pairs, masked_rows = _leave_one_out(torch.as_tensor(query), owner, rows, weights, is_target, data.n_items)
    for p, e in enumerate(np.flatnonzero(is_target).tolist()):
        others = [(data.item_ids[r], w) for o, r, w, k in zip(owner, rows, weights, range(len(rows))) if o == owner[e] and k != e]
        np.testing.assert_allclose(found[p].numpy(), model.user_vector(others), atol=1e-5)
        assert sorted(masked_rows[masked_pairs == p].tolist()) == sorted(data.rows_of()[item] for item, _ in others)
