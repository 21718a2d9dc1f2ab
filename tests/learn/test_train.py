"""Training end to end on planted clusters: recovered structure, cold items, the export, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

import torch

from learn.data import prepare
from learn.models import ItemTowers
from learn.trainer import vectors
from learn.train import ENCODER_FILE, INDEX_FILE, TOWERS_FILE, train_and_export, train_models, version_name
from state.embeddings import UserVectorRule, latest_version, read_export
from transforms.config import ModelConfig
from transforms.embedding import EmbeddingModel

from .conftest import CLUSTERS, SMALL, cluster_of

NOW_MS = 1_764_480_000_000  # 2025-11-30T05:20:00Z


@pytest.fixture(scope="module")
def trained(planted, tmp_path_factory):
    events, catalog = planted
    out = tmp_path_factory.mktemp("exports")
    result = train_and_export(events, catalog, out, now_ms=NOW_MS, config=SMALL)
    return out, result


@pytest.fixture(scope="module")
def trained_without_catalog(planted, tmp_path_factory):
    """Trained on events alone: no side features, so any cluster structure was learned from co-interactions."""
    events, _ = planted
    return train_and_export(events, [], tmp_path_factory.mktemp("plain"), now_ms=NOW_MS, config=SMALL)


def test_version_is_named_by_the_passed_in_time():
    assert version_name(NOW_MS) == "20251130T052000Z"


def test_export_round_trip_holds_every_catalog_item_and_the_run(trained, planted):
    out, result = trained
    _, catalog = planted
    assert latest_version(out) == result.path and result.path.name == "20251130T052000Z"
    export = read_export(result.path)
    assert sorted(export.item_ids.tolist()) == sorted(c.item_id for c in catalog)
    assert export.dim == SMALL.dim + 1
    assert export.user_vector == UserVectorRule("fold_in", SMALL.fold_in_confidence, SMALL.fold_in_regularization)
    np.testing.assert_array_equal(export.query, export.candidate)  # fold_in: one vector per item
    assert export.meta["model"]["name"] == "foldin-towers+sasrec"
    assert export.sequence is not None and export.sequence["position"].shape == (SMALL.sequence_length, SMALL.sequence_hidden)
    manifest_files = set((result.path / "manifest.json").read_text().split('"'))
    assert {INDEX_FILE, TOWERS_FILE, ENCODER_FILE} <= manifest_files
    assert export.meta["created_ms"] == NOW_MS
    assert export.meta["model"]["train"]["dim"] == SMALL.dim and export.meta["model"]["loss"] == "softmax"
    metrics = export.meta["metrics"]
    assert metrics["embedding"]["ndcg"] > 0 and len(metrics["embedding"]["epochs"]) >= metrics["embedding"]["best_epoch"] >= 1
    assert metrics["sequence"]["best_epoch"] >= 1
    assert export.meta["ann"]["library"] == "faiss" and 0.0 < export.meta["ann"]["recall_at_k"] <= 1.0
    summary = result.summary
    assert summary["path"] == str(result.path) and summary["ann_recall@5"] == export.meta["ann"]["recall_at_k"]
    assert (out / ".checkpoints" / "embedding.pt").exists() and (out / ".checkpoints" / "sequence-refit.pt").exists()


def test_the_mean_rule_exports_query_vectors_ending_in_one(planted, tmp_path):
    events, catalog = planted
    config = SMALL.replace(user_vector="mean", objective="leave_one_out", epochs=3, sequence=False, refit_full=False)
    export = read_export(train_and_export(events, catalog, tmp_path, now_ms=NOW_MS, config=config).path)
    assert export.user_vector == UserVectorRule() and export.meta["model"]["name"] == "fism-towers+sasrec"
    assert np.all(export.query[:, -1] == 1.0)  # the bias slot of the mean rule


def test_neighbours_recover_the_planted_clusters(trained_without_catalog):
    export = read_export(trained_without_catalog.path)
    assert export.meta["model"]["features"] == 0
    same = total = 0
    for item, (ids, scores) in export.neighbours.items():
        assert item not in ids.tolist() and list(scores) == sorted(scores, reverse=True)
        if item.startswith("i"):
            same += sum(cluster_of(other) == cluster_of(item) for other in ids.tolist() if other.startswith("i"))
            total += sum(other.startswith("i") for other in ids.tolist())
    assert same / total >= 0.9


def test_users_are_recommended_their_own_cluster(trained_without_catalog, planted):
    events, _ = planted
    model = EmbeddingModel(read_export(trained_without_catalog.path))
    hits = 0
    users = sorted(set(events.user.tolist()))[:40]
    for user in users:
        seen = events.item[events.user == user].tolist()
        vector = model.user_vector([(item, 1.0) for item in seen])
        top = [item for item in model.top(vector, 2, exclude=set(seen))[0].tolist() if item.startswith("i")]
        hits += all(cluster_of(item) == cluster_of(seen[0]) for item in top)
        recent = model.sequence_vector(seen[-3:])
        assert recent is not None and recent.shape == vector.shape
    assert hits / len(users) >= 0.9


def _cold_margins(item_ids: np.ndarray, candidate: np.ndarray) -> list[float]:
    """Per group: mean cosine of its new item to its own group's items minus the best mean cosine to another group."""
    ids = item_ids.tolist()
    unit = candidate[:, :-1] / np.linalg.norm(candidate[:, :-1], axis=1, keepdims=True)
    margins = []
    for group in range(CLUSTERS):
        new = unit[ids.index(f"n{group}")]
        mean_cos = [float(np.mean([unit[k] @ new for k, item in enumerate(ids) if item.startswith("i") and cluster_of(item) == other])) for other in range(CLUSTERS)]
        margins.append(mean_cos[group] - max(c for other, c in enumerate(mean_cos) if other != group))
    return margins


def test_a_new_item_lands_next_to_its_category_mates(trained, planted):
    export = read_export(trained[1].path)
    assert not export.meta["model"]["items_with_ids"] == len(export.item_ids)  # the n<k> items have features only
    trained_margins = _cold_margins(export.item_ids, export.candidate)
    assert min(trained_margins) > 0.3, trained_margins
    # Shared feature tokens alone make some margin even untrained; training must widen it.
    events, catalog = planted
    data = prepare(events, catalog, ModelConfig(), SMALL.sequence_length)
    torch.manual_seed(SMALL.seed)
    _, untrained = vectors(ItemTowers(data.n_items, SMALL.dim, data.features, data.has_id, shared=SMALL.user_vector == "fold_in"))
    untrained_margins = _cold_margins(data.item_ids, untrained)
    assert min(t - u for t, u in zip(trained_margins, untrained_margins)) > 0.1, (trained_margins, untrained_margins)


def test_the_refitted_export_places_its_featured_only_items_as_serving_does(trained, planted):
    _, catalog = planted
    model = EmbeddingModel(read_export(trained[1].path))
    new = [item for item in catalog if item.item_id.startswith("n")]  # no events: features only
    candidate, query, known = model.cold_vectors(new)
    rows = [model.rows[item.item_id] for item in new]
    assert known.all()
    np.testing.assert_allclose(candidate, model.export.candidate[rows], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(query, model.export.query[rows], rtol=1e-5, atol=1e-7)


def test_resume_continues_from_the_checkpoint(planted, tmp_path):
    events, catalog = planted
    config = SMALL.replace(epochs=4, sequence=False, refit_full=False)
    first = train_models(events, catalog, config, checkpoint_dir=tmp_path, resume=True)
    again = train_models(events, catalog, config, checkpoint_dir=tmp_path, resume=True)
    # Every epoch was checkpointed, so the second run trains none and keeps the same log and weights.
    assert [r.loss for r in again.embedding.records] == [r.loss for r in first.embedding.records]
    assert sum(r.seconds for r in again.embedding.records) == sum(r.seconds for r in first.embedding.records)
    for name, tensor in first.towers.state_dict().items():
        assert np.array_equal(tensor.numpy(), again.towers.state_dict()[name].numpy()), name
    fresh = train_models(events, catalog, config.replace(seed=5), checkpoint_dir=tmp_path, resume=True)
    assert [r.loss for r in fresh.embedding.records] != [r.loss for r in first.embedding.records]


def test_training_is_seeded(planted):
    events, catalog = planted
    config = SMALL.replace(epochs=3, sequence=False, refit_full=False)
    a, b = (train_models(events, catalog, config) for _ in range(2))
    assert [r.loss for r in a.embedding.records] == [r.loss for r in b.embedding.records]
