"""The embedding export layout: round trip, atomic versions, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import orjson

import dataclasses

import pyarrow as pa
import pyarrow.parquet as pq

from state.embeddings import (
    FEATURES_FILE, EmbeddingExport, ExportError, FeatureVectors, UserVectorRule, latest_version, read_export, read_manifest, write_export,
)


def _export(version: str = "20261130T000000Z", n: int = 5, dim: int = 4, sequence: bool = True) -> EmbeddingExport:
    rng = np.random.default_rng(3)
    ids = np.array([f"i{k}" for k in range(n)], dtype=object)
    return EmbeddingExport(
        version=version,
        item_ids=ids,
        query=rng.normal(size=(n, dim)).astype(np.float32),
        candidate=rng.normal(size=(n, dim)).astype(np.float32),
        neighbours={"i0": (np.array(["i1", "i2"], dtype=object), np.array([0.5, 0.25]))},
        sequence={"pos": rng.normal(size=(3, dim)).astype(np.float32)} if sequence else None,
        meta={"model": {"name": "test"}, "created_ms": 1},
    )


def test_round_trip_keeps_every_value(tmp_path):
    original = _export()
    path = write_export(tmp_path, original)
    back = read_export(path)
    assert back.version == original.version and back.dim == 4
    assert back.item_ids.tolist() == original.item_ids.tolist()
    np.testing.assert_array_equal(back.query, original.query)
    np.testing.assert_array_equal(back.candidate, original.candidate)
    assert back.neighbours["i0"][0].tolist() == ["i1", "i2"]
    np.testing.assert_array_equal(back.neighbours["i0"][1], [0.5, 0.25])
    np.testing.assert_array_equal(back.sequence["pos"], original.sequence["pos"])
    assert back.meta["model"] == {"name": "test"}


def test_user_vector_rule_round_trips_and_old_exports_are_mean(tmp_path):
    folded = dataclasses.replace(_export(), user_vector=UserVectorRule("fold_in", confidence=0.5, regularization=40.0))
    path = write_export(tmp_path, folded)
    assert read_export(path).user_vector == UserVectorRule("fold_in", confidence=0.5, regularization=40.0)
    assert "user_vector" not in read_export(path).meta
    manifest = orjson.loads((path / "manifest.json").read_bytes())
    del manifest["user_vector"]  # as written before the rule was recorded
    (path / "manifest.json").write_bytes(orjson.dumps(manifest))
    assert read_export(path).user_vector == UserVectorRule()
    manifest["user_vector"] = {"kind": "fold_in"}
    (path / "manifest.json").write_bytes(orjson.dumps(manifest))
    with pytest.raises(ExportError, match="fold_in needs"):
        read_export(path)


def test_latest_version_skips_incomplete_and_hidden(tmp_path):
    write_export(tmp_path, _export("20261130T000000Z", sequence=False))
    write_export(tmp_path, _export("20261130T010000Z", sequence=False))
    (tmp_path / "20261130T020000Z").mkdir()  # being written by hand: no manifest yet
    (tmp_path / ".20261130T030000Z.tmp").mkdir()
    assert latest_version(tmp_path).name == "20261130T010000Z"
    assert latest_version(tmp_path / "20261130T000000Z").name == "20261130T000000Z"
    assert latest_version(tmp_path / "missing") is None
    assert read_export(latest_version(tmp_path)).sequence is None


def test_existing_version_is_not_overwritten(tmp_path):
    write_export(tmp_path, _export())
    with pytest.raises(ExportError, match="already exists"):
        write_export(tmp_path, _export())


def test_unknown_schema_and_bad_shapes_are_clear_errors(tmp_path):
    path = write_export(tmp_path, _export())
    (path / "manifest.json").write_text('{"schema": 99}')
    with pytest.raises(ExportError, match="unsupported export schema 99"):
        read_manifest(path)
    with pytest.raises(ExportError, match="not an embedding export"):
        read_export(tmp_path / "nothing")
    with pytest.raises(ExportError, match="do not match"):
        EmbeddingExport("v1", np.array(["a"], dtype=object), np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(ExportError, match="bad export version"):
        EmbeddingExport("../x", np.array([], dtype=object), np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32))


def _features(dim: int = 4) -> FeatureVectors:
    rng = np.random.default_rng(5)
    return FeatureVectors(
        names=np.array(["brand:acme", "cat:home", "lamp", "price:home:1"], dtype=object),
        query=rng.normal(size=(4, dim)).astype(np.float32),
        candidate=rng.normal(size=(4, dim)).astype(np.float32),
        # log1p quantiles: arbitrary float64 values that must come back bit for bit.
        price_edges={"home": np.log1p([3.0, 7.5, 7.5, 20.0]), "": np.array([0.1]), "toys": np.array([])},
    )


def test_feature_vectors_round_trip_and_are_listed(tmp_path):
    path = write_export(tmp_path, dataclasses.replace(_export(), features=_features()))
    manifest = read_manifest(path)
    assert FEATURES_FILE in manifest["files"]
    assert manifest["features"]["file"] == FEATURES_FILE and manifest["features"]["tokens"] == 4
    back = read_export(path)
    assert "features" not in back.meta
    original = _features()
    assert back.features.names.tolist() == original.names.tolist()
    np.testing.assert_array_equal(back.features.query, original.query)
    np.testing.assert_array_equal(back.features.candidate, original.candidate)
    assert back.features.price_edges.keys() == original.price_edges.keys()
    for top, edges in original.price_edges.items():
        assert back.features.price_edges[top].dtype == np.float64
        np.testing.assert_array_equal(back.features.price_edges[top], edges)


def test_an_export_without_features_reads_as_none(tmp_path):
    path = write_export(tmp_path, _export())
    assert FEATURES_FILE not in read_manifest(path)["files"] and not (path / FEATURES_FILE).exists()
    assert read_export(path).features is None


def _rewrite(path, columns: dict) -> None:
    pq.write_table(pa.table(columns), path / FEATURES_FILE)


def test_malformed_feature_files_are_clear_errors(tmp_path):
    path = write_export(tmp_path, dataclasses.replace(_export(), features=_features()))
    good_manifest = (path / "manifest.json").read_bytes()
    good_table = pq.read_table(path / FEATURES_FILE)
    names, query, candidate = (good_table.column(c) for c in ("feature", "query", "candidate"))

    def flat(width: int, rows: int = 4, value: float = 0.5) -> pa.FixedSizeListArray:
        return pa.FixedSizeListArray.from_arrays(pa.array(np.full(rows * width, value, np.float32)), width)

    cases = [
        ({"feature": names, "query": query}, "missing column"),
        ({"feature": names, "query": flat(3), "candidate": candidate}, "fixed-size lists of 4 floats"),
        ({"feature": names, "query": pa.array([[0.5] * 4] * 4, pa.list_(pa.float32())), "candidate": candidate}, "fixed-size lists of 4 floats"),
        ({"feature": pa.array(["a", None, "c", "d"]), "query": query, "candidate": candidate}, "strings without nulls"),
        ({"feature": pa.array(["a", "a", "c", "d"]), "query": query, "candidate": candidate}, "distinct"),
        ({"feature": names, "query": flat(4, value=np.nan), "candidate": candidate}, "finite"),
        ({"feature": names.slice(0, 3), "query": query.slice(0, 3), "candidate": candidate.slice(0, 3)}, "3 rows, the manifest says 4"),
    ]
    for columns, message in cases:
        _rewrite(path, columns)
        with pytest.raises(ExportError, match=message):
            read_export(path)
    (path / FEATURES_FILE).write_bytes(b"not parquet")
    with pytest.raises(ExportError, match="unreadable features.parquet"):
        read_export(path)
    pq.write_table(good_table, path / FEATURES_FILE)
    manifest = orjson.loads(good_manifest)
    for entry, message in (
        (None, "needs a manifest entry"),
        ({**manifest["features"], "price_edges": {"home": ["x"]}}, "list of numbers"),
        ({**manifest["features"], "price_edges": {"home": [2.0, 1.0]}}, "ascending finite"),
    ):
        (path / "manifest.json").write_bytes(orjson.dumps({**manifest, "features": entry}))
        with pytest.raises(ExportError, match=message):
            read_export(path)
    (path / "manifest.json").write_bytes(good_manifest)
    assert read_export(path).features is not None
    with pytest.raises(ExportError, match="feature vectors have 3 entries, item vectors 4"):
        dataclasses.replace(_export(), features=_features(dim=3))
