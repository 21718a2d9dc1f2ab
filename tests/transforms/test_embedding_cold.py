"""Cold items at serving time: vectors from the export's side-feature vectors (equality with the towers is in tests/learn)."""

from __future__ import annotations

import numpy as np

from state.embeddings import EmbeddingExport, FeatureVectors, UserVectorRule, read_export, write_export
from transforms.catalog import CatalogItem
from transforms.embedding import EmbeddingModel, bag_means

IDS = np.array(["a", "b"], dtype=object)
ITEM_VECTORS = np.array([[1.0, 2.0, 1.0], [3.0, 4.0, 1.0]], dtype=np.float32)
# Query rows end in the constant 1 (mean rule); candidate rows end in a bias part.
FEATURES = FeatureVectors(
    names=np.array(["brand:acme", "cat:home", "lamp", "price:home:1"], dtype=object),
    query=np.array([[2.0, 0.0, 1.0], [0.0, 4.0, 1.0], [6.0, 2.0, 1.0], [1.0, 1.0, 1.0]], dtype=np.float32),
    candidate=np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -0.5], [3.0, 3.0, 0.25], [0.0, 0.0, 2.0]], dtype=np.float32),
    price_edges={"home": np.log1p([10.0, 100.0])},
)


def _model(rule: UserVectorRule = UserVectorRule(), features: FeatureVectors | None = FEATURES) -> EmbeddingModel:
    return EmbeddingModel(EmbeddingExport("v1", IDS, ITEM_VECTORS, ITEM_VECTORS, user_vector=rule, features=features))


ITEMS = [
    CatalogItem(item_id="new1", title="Lamp", category="home", brand="ACME", price=50.0),  # lamp, cat:home, brand:acme, price:home:1
    CatalogItem(item_id="new2", title="Lamp lamp shade"),  # lamp once (shade unknown)
    CatalogItem(item_id="new3", title="Sofa", category="garden", price=5.0),  # nothing known
    CatalogItem(item_id="a", title="", category="home", price=500.0),  # cat:home (price:home:2 unknown); a known id changes nothing
]


def test_cold_vectors_are_the_means_of_the_known_feature_rows():
    candidate, query, known = _model().cold_vectors(ITEMS)
    assert candidate.dtype == query.dtype == np.float32 and candidate.shape == query.shape == (4, 3)
    assert known.tolist() == [True, True, False, True]
    np.testing.assert_allclose(candidate[0], [1.0, 1.0, 2.25 / 4])  # (brand + cat + lamp + price) / 4
    np.testing.assert_allclose(query[0], [9.0 / 4, 7.0 / 4, 1.0])
    np.testing.assert_array_equal(candidate[1], [3.0, 3.0, 0.25])
    np.testing.assert_array_equal(query[1], [6.0, 2.0, 1.0])
    np.testing.assert_array_equal(candidate[3], [0.0, 1.0, -0.5])
    # Nothing known: the empty bag, zero but for the mean rule's constant query entry.
    np.testing.assert_array_equal(candidate[2], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(query[2], [0.0, 0.0, 1.0])


def test_fold_in_exports_have_no_constant_entry():
    shared = FeatureVectors(names=FEATURES.names, query=FEATURES.candidate, candidate=FEATURES.candidate, price_edges=FEATURES.price_edges)
    candidate, query, known = _model(UserVectorRule("fold_in", confidence=1.0, regularization=5.0), shared).cold_vectors(ITEMS)
    np.testing.assert_array_equal(query, candidate)
    assert not query[2].any() and known.tolist() == [True, True, False, True]


def test_cold_vectors_do_not_depend_on_order_or_batch():
    model = _model()
    candidate, query, known = model.cold_vectors(ITEMS)
    backwards = model.cold_vectors(ITEMS[::-1])
    np.testing.assert_array_equal(backwards[0], candidate[::-1])
    np.testing.assert_array_equal(backwards[1], query[::-1])
    for k, item in enumerate(ITEMS):
        alone = model.cold_vectors([item])
        np.testing.assert_array_equal(alone[0][0], candidate[k])
    empty = model.cold_vectors([])
    assert empty[0].shape == empty[1].shape == (0, 3) and empty[2].shape == (0,)


def test_an_old_export_without_features_still_loads_and_places_nothing(tmp_path):
    path = write_export(tmp_path, EmbeddingExport("v1", IDS, ITEM_VECTORS, ITEM_VECTORS))
    model = EmbeddingModel(read_export(path))
    assert model.export.features is None
    candidate, query, known = model.cold_vectors(ITEMS)
    assert not known.any() and not candidate.any()
    np.testing.assert_array_equal(query, np.tile([0.0, 0.0, 1.0], (4, 1)))
    np.testing.assert_array_equal(model.user_vector([("a", 1.0)]), ITEM_VECTORS[0])  # the rest serves as before


def test_bag_means():
    vectors = np.array([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]], dtype=np.float32)
    out = bag_means(vectors, [[0, 1], [], [2], [2, 0, 1]])
    np.testing.assert_array_equal(out, np.array([[0.5, 1.0], [0.0, 0.0], [4.0, 4.0], [5.0 / 3, 2.0]], dtype=np.float32))
    assert out.dtype == np.float32
