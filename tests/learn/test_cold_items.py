"""Items placed by side features alone: the export's feature vectors give serving the trained towers' vectors."""

from __future__ import annotations

import numpy as np
import pytest

from learn.train import train_and_export
from state.embeddings import read_export
from transforms.catalog import CatalogItem
from transforms.embedding import EmbeddingModel

from .conftest import SMALL, planted_catalog

NOW_MS = 1_764_480_000_000
FAST = SMALL.replace(epochs=3, sequence=False, refit_full=False)
# A catalog item whose only token (a title word no other item has) is too rare to be a feature: an empty bag.
BARE = CatalogItem(item_id="e0", title="Zyxwv")


@pytest.fixture(scope="module", params=["fold_in", "mean"])
def exported(request, planted, tmp_path_factory):
    events, _ = planted
    catalog = planted_catalog() + [BARE]
    config = FAST if request.param == "fold_in" else FAST.replace(user_vector="mean", objective="leave_one_out")
    result = train_and_export(events, catalog, tmp_path_factory.mktemp(request.param), now_ms=NOW_MS, config=config)
    return read_export(result.path), catalog


def test_items_without_an_id_embedding_get_the_exported_vectors_from_their_records(exported):
    export, catalog = exported
    model = EmbeddingModel(export)
    cold = [item for item in catalog if item.item_id.startswith(("n", "e"))]  # no events, so no id embedding
    assert export.meta["model"]["items_with_ids"] == len(catalog) - len(cold)
    candidate, query, known = model.cold_vectors(cold)
    assert candidate.dtype == query.dtype == np.float32 and candidate.shape == query.shape == (len(cold), export.dim)
    assert known.tolist() == [item is not BARE for item in cold]
    rows = [model.rows[item.item_id] for item in cold]
    np.testing.assert_allclose(candidate, export.candidate[rows], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(query, export.query[rows], rtol=1e-5, atol=1e-7)
    assert np.abs(export.candidate[rows[known.tolist().index(True)]]).max() > 1e-3  # trained rows, not zeros
    # A trained item's own vector includes its id embedding, which its record alone cannot give.
    trained, _, _ = model.cold_vectors([catalog[0]])
    assert not np.allclose(trained[0], export.candidate[model.rows[catalog[0].item_id]], atol=1e-4)


def test_an_item_that_joins_later_gets_the_mean_of_its_known_features(exported):
    export, catalog = exported
    model = EmbeddingModel(export)
    features = export.features
    row = {name: k for k, name in enumerate(features.names.tolist())}
    n0 = next(item for item in catalog if item.item_id == "n0")
    later = [
        # n0's record under a new id, with an unknown title word and tag: the unknown tokens are ignored.
        CatalogItem(item_id="late0", title=n0.title + " shinyword", category=n0.category, brand=n0.brand, price=n0.price, tags=("novelty",)),
        CatalogItem(item_id="late1", title="Lamp"),  # one known token
        CatalogItem(item_id="late2", title="kettle lamp lamp"),  # two, the repeat counted once
        CatalogItem(item_id="late3", title="Gizmo", category="elsewhere", brand="nobody", price=3.0),  # none known
    ]
    candidate, query, known = model.cold_vectors(later)
    assert known.tolist() == [True, True, True, False]
    n0_row = model.rows["n0"]
    np.testing.assert_allclose(candidate[0], export.candidate[n0_row], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(query[0], export.query[n0_row], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(candidate[1], features.candidate[row["lamp"]])
    np.testing.assert_array_equal(query[1], features.query[row["lamp"]])
    np.testing.assert_allclose(candidate[2], (features.candidate[row["lamp"]] + features.candidate[row["kettle"]]) / 2, rtol=1e-6)
    np.testing.assert_allclose(query[2], (features.query[row["lamp"]] + features.query[row["kettle"]]) / 2, rtol=1e-6)
    assert not candidate[3].any()
    if export.user_vector.kind == "mean":  # the constant entry of the query vectors, bag or no bag
        assert np.all(query[:, -1] == 1.0) and not query[3, :-1].any()
    else:  # fold_in: one vector per item
        np.testing.assert_array_equal(query, candidate)


def test_the_price_token_uses_the_exported_edges(exported):
    export, _ = exported
    # top1's prices are 15, 16, 17 (and n1's 16): 5 quantile buckets of log(1 + price) have inner edges
    # log 16, log 17, log 17, log 18, so only buckets 1, 3 and 4 occur among the trained items.
    np.testing.assert_allclose(export.features.price_edges["top1"], np.log1p([15.0, 16.0, 16.0, 17.0]))
    model = EmbeddingModel(export)
    row = {name: k for k, name in enumerate(export.features.names.tolist())}
    priced = [CatalogItem(item_id=f"p{k}", category="top1/sub1", price=price) for k, price in enumerate((1.0, 15.0, 16.5, 1e6))]
    # Bucket = number of edges <= log(1 + price): 0 (never seen, so no token), 1 (an edge itself counts), 3, 4.
    tokens = [[], ["price:top1:1"], ["price:top1:3"], ["price:top1:4"]]
    candidate, _, _ = model.cold_vectors(priced)
    for k, extra in enumerate(tokens):
        bag = ["cat:top1", "cat:top1/sub1"] + extra
        expected = np.mean([export.features.candidate[row[t]].astype(np.float64) for t in bag], axis=0)
        np.testing.assert_allclose(candidate[k], expected, rtol=1e-6, atol=1e-8)


def test_an_export_trained_without_features_has_no_feature_vectors(planted, tmp_path):
    events, catalog = planted
    export = read_export(train_and_export(events, catalog, tmp_path, now_ms=NOW_MS, config=FAST.replace(use_features=False)).path)
    assert export.features is None
    _, _, known = EmbeddingModel(export).cold_vectors(catalog[:3])
    assert not known.any()
