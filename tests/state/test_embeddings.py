"""The embedding export layout: round trip, atomic versions, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import orjson

from state.embeddings import EmbeddingExport, ExportError, UserVectorRule, latest_version, read_export, read_manifest, write_export


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
    import dataclasses

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
