"""The versioned on-disk layout of a learned-embedding export (written by `flowrec train`).

The trainer (:mod:`learn`, needs PyTorch) writes an export; the streaming job,
the reference engine and the evaluation read it with NumPy and PyArrow only,
so serving never needs PyTorch.  An export is a directory
``<root>/<version>/`` holding:

==========================  ==================================================================
file                        content (schema :data:`EXPORT_SCHEMA`)
==========================  ==================================================================
``manifest.json``           ``schema``, ``version``, ``dim``, ``created_ms`` (passed in),
                            ``user_vector`` (how a user's vector is built, see
                            :class:`UserVectorRule`; absent = ``mean``),
                            ``model`` (name and hyper-parameters), ``metrics`` (validation),
                            ``ann`` (library, parameters, measured recall), ``files``
``items.parquet``           ``item`` (string), ``query`` and ``candidate``
                            (fixed-size lists of ``dim`` float32): the item as part of a
                            user's history, and as a recommendation
``neighbours.parquet``      ``item``, ``neighbours`` (list of string), ``scores``
                            (list of float32): item-to-item neighbours, best first
``sequence.npz``            optional: the sequence model's weights as named float32 arrays
                            (``numpy.savez``, no pickles); the names are the trainer's
                            documented layout
``features.parquet``        optional: ``feature`` (string, one row per side-feature token the
                            model knows), ``query`` and ``candidate`` (fixed-size lists of
                            ``dim`` float32); the manifest's ``features`` entry names the file
                            and holds the price bucket edges (see :class:`FeatureVectors`)
==========================  ==================================================================

**Cold items.**  An item the model has no id embedding for is placed by its
side features alone: its query and candidate vectors are the means of the
``features.parquet`` rows of its known feature tokens
(:meth:`transforms.embedding.EmbeddingModel.cold_vectors`).  The rows are
stored so that the mean *is* the model's vector: under the ``mean`` rule every
query row ends in the constant 1 (so the mean does too), and under
``fold_in`` the query rows are the candidate rows.  The manifest entry is
``"features": {"file": "features.parquet", "tokens": N, "price_edges":
{TOP: [e1, ...]}}``: per top category, the ascending inner quantile edges of
log(1 + price) the tokens ``price:<top>:<bucket>`` were made with
(:func:`transforms.content.feature_tokens`).  An export without the file
(written before it existed, or trained without side features) places no
item by features.

Other files (an ANN index, trainer checkpoints) may sit beside them and are
named in ``files``.  :func:`write_export` writes into a temporary sibling and
renames it into place, so a reader never sees a half-written version, and
:func:`latest_version` picks the newest complete one: a running job can watch
``root`` and switch versions without a restart.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

EXPORT_SCHEMA = 1
MANIFEST = "manifest.json"
ITEMS_FILE = "items.parquet"
NEIGHBOURS_FILE = "neighbours.parquet"
SEQUENCE_FILE = "sequence.npz"
FEATURES_FILE = "features.parquet"
# Versions sort as strings; the trainer names them by training time, e.g. "20261130T051500Z".
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


USER_VECTOR_RULES = ("mean", "fold_in")


class ExportError(ValueError):
    """An export directory that is missing, incomplete or of an unknown schema."""


@dataclass(frozen=True)
class UserVectorRule:
    """How serving turns a user's decayed interests into a user vector (the trainer optimised this form).

    * ``mean``: ``u = sum v_i q_i / sum v_i`` over the query vectors;
    * ``fold_in``: ``u`` solves the ridge regression of the user's interests on
      the candidate vectors, weighted as in implicit ALS (every item a
      negative of weight 1, each interest a positive of weight
      ``1 + confidence * v_i``, plus ``regularization * |u|^2``).

    See :mod:`transforms.embedding` for the formulas.
    """

    kind: str = "mean"
    confidence: float = 0.0
    regularization: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in USER_VECTOR_RULES:
            raise ExportError(f"unknown user vector rule {self.kind!r} (known: {', '.join(USER_VECTOR_RULES)})")
        if self.kind == "fold_in" and not (self.confidence > 0 and self.regularization > 0):
            raise ExportError(f"fold_in needs confidence > 0 and regularization > 0, got {self.confidence}, {self.regularization}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "confidence": self.confidence, "regularization": self.regularization}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "UserVectorRule":
        if data is None:
            return cls()  # exports written before the rule was recorded are all mean-rule
        try:
            return cls(kind=str(data["kind"]), confidence=float(data.get("confidence", 0.0)), regularization=float(data.get("regularization", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportError(f"bad user_vector entry {data!r}: {exc}") from exc


@dataclass(frozen=True, eq=False)
class FeatureVectors:
    """The side-feature vectors of an export: a bag of known tokens places an item as the mean of their rows.

    ``query[k]`` and ``candidate[k]`` belong to token ``names[k]`` and follow the
    layout of the item vectors (module doc: the constant 1 of a ``mean``-rule
    query row is stored in every row).  ``price_edges[top]`` are the ascending
    bucket edges of the price tokens of top category ``top``.
    """

    names: np.ndarray  # object array of distinct str, shape (n,)
    query: np.ndarray  # float32, shape (n, dim)
    candidate: np.ndarray  # float32, shape (n, dim)
    price_edges: Mapping[str, np.ndarray] = field(default_factory=dict)  # float64, ascending

    def __post_init__(self) -> None:
        n = len(self.names)
        if self.query.ndim != 2 or self.query.shape[0] != n or self.candidate.shape != self.query.shape:
            raise ExportError(f"feature vector shapes {self.query.shape} / {self.candidate.shape} do not match {n} features")
        names = self.names.tolist()
        if not all(isinstance(name, str) and name for name in names) or len(set(names)) != n:
            raise ExportError("feature names must be distinct non-empty strings")
        if not (np.isfinite(self.query).all() and np.isfinite(self.candidate).all()):
            raise ExportError("feature vectors must be finite")
        for top, edges in self.price_edges.items():
            edges = np.asarray(edges)
            if not isinstance(top, str) or edges.ndim != 1 or not np.isfinite(edges).all() or np.any(np.diff(edges) < 0):
                raise ExportError(f"price edges of {top!r} must be a list of ascending finite numbers")

    @property
    def dim(self) -> int:
        return int(self.query.shape[1])


@dataclass(frozen=True)
class EmbeddingExport:
    """One version of learned item embeddings, as the job and the evaluation read it.

    ``query[i]`` and ``candidate[i]`` are the vectors of ``item_ids[i]``; a
    user's vector is built from the items they interacted with as
    ``user_vector`` says, and scored against candidate vectors by dot product.
    """

    version: str
    item_ids: np.ndarray  # object array of str, shape (n,)
    query: np.ndarray  # float32, shape (n, dim)
    candidate: np.ndarray  # float32, shape (n, dim)
    neighbours: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    sequence: Mapping[str, np.ndarray] | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    user_vector: UserVectorRule = UserVectorRule()
    # Side-feature vectors that place items without an id embedding (None: the export places none).
    features: FeatureVectors | None = None

    def __post_init__(self) -> None:
        if not VERSION_PATTERN.match(self.version):
            raise ExportError(f"bad export version {self.version!r}")
        n = len(self.item_ids)
        if self.query.ndim != 2 or self.query.shape[0] != n or self.candidate.shape != self.query.shape:
            raise ExportError(f"vector shapes {self.query.shape} / {self.candidate.shape} do not match {n} items")
        if self.features is not None and self.features.dim != self.dim:
            raise ExportError(f"feature vectors have {self.features.dim} entries, item vectors {self.dim}")

    @property
    def dim(self) -> int:
        return int(self.query.shape[1])


def _vectors(matrix: np.ndarray) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).ravel(), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, int(matrix.shape[1]))


def _matrix(column: pa.ChunkedArray, dim: int) -> np.ndarray:
    flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(-1, dim)


# Manifest keys the reader interprets; every other key is the export's meta.
_MANIFEST_KEYS = ("schema", "version", "dim", "items", "files", "user_vector", "features")


def _feature_entry(features: FeatureVectors) -> dict[str, Any]:
    edges = {top: np.asarray(features.price_edges[top], dtype=np.float64).tolist() for top in sorted(features.price_edges)}
    return {"file": FEATURES_FILE, "tokens": len(features.names), "price_edges": edges}


def _checked_matrix(table: pa.Table, name: str, dim: int, where: Path) -> np.ndarray:
    """Column ``name`` of a feature table as a float32 ``(rows, dim)`` matrix; ExportError unless it is one."""
    column = table.column(name)
    kind = column.type
    if not (pa.types.is_fixed_size_list(kind) and kind.list_size == dim and pa.types.is_floating(kind.value_type)):
        raise ExportError(f"{where}: column {name} must be fixed-size lists of {dim} floats, not {kind}")
    chunk = column.combine_chunks()
    if chunk.null_count or chunk.flatten().null_count:
        raise ExportError(f"{where}: column {name} has missing values")
    return _matrix(column, dim)


def _read_features(path: Path, manifest: Mapping[str, Any], dim: int) -> FeatureVectors:
    """The export's :class:`FeatureVectors` (its file is listed in ``files``); ExportError when malformed."""
    where = path / FEATURES_FILE
    entry = manifest.get("features")
    if not isinstance(entry, Mapping) or entry.get("file") != FEATURES_FILE or not isinstance(entry.get("price_edges"), Mapping):
        raise ExportError(f"{path}: {FEATURES_FILE} needs a manifest entry features = {{file, tokens, price_edges}}, got {entry!r}")
    edges: dict[str, np.ndarray] = {}
    for top, values in entry["price_edges"].items():
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ExportError(f"{path}: price edges of {top!r} must be a list of numbers, got {values!r}")
        edges[top] = np.array(values, dtype=np.float64)
    try:
        table = pq.read_table(where)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ExportError(f"{path}: unreadable {FEATURES_FILE}: {exc}") from exc
    missing = [name for name in ("feature", "query", "candidate") if name not in table.column_names]
    if missing:
        raise ExportError(f"{where}: missing column(s) {', '.join(missing)}")
    names = table.column("feature")
    if not pa.types.is_string(names.type) or names.null_count:
        raise ExportError(f"{where}: column feature must be strings without nulls, not {names.type}")
    if entry.get("tokens") != table.num_rows:
        raise ExportError(f"{where}: {table.num_rows} rows, the manifest says {entry.get('tokens')!r}")
    query, candidate = _checked_matrix(table, "query", dim, where), _checked_matrix(table, "candidate", dim, where)
    try:
        return FeatureVectors(names=np.array(names.to_pylist(), dtype=object), query=query, candidate=candidate, price_edges=edges)
    except ExportError as exc:
        raise ExportError(f"{where}: {exc}") from exc


def write_export(root: str | Path, export: EmbeddingExport, extra_files: Mapping[str, Path] = {}) -> Path:
    """Write ``export`` as ``root/<version>/`` atomically; ``extra_files`` are copied beside it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / export.version
    if final.exists():
        raise ExportError(f"export version {export.version} already exists in {root}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{export.version}.", dir=root))
    try:
        items = pa.table({"item": pa.array(export.item_ids.tolist(), pa.string()), "query": _vectors(export.query), "candidate": _vectors(export.candidate)})
        pq.write_table(items, tmp / ITEMS_FILE)
        keys = list(export.neighbours)
        nbrs = pa.table(
            {
                "item": pa.array(keys, pa.string()),
                "neighbours": pa.array([list(export.neighbours[k][0]) for k in keys], pa.list_(pa.string())),
                "scores": pa.array([np.asarray(export.neighbours[k][1], np.float32).tolist() for k in keys], pa.list_(pa.float32())),
            }
        )
        pq.write_table(nbrs, tmp / NEIGHBOURS_FILE)
        files = [ITEMS_FILE, NEIGHBOURS_FILE]
        if export.sequence is not None:
            np.savez(tmp / SEQUENCE_FILE, **{k: np.asarray(v, np.float32) for k, v in export.sequence.items()})
            files.append(SEQUENCE_FILE)
        described: dict[str, Any] = {}
        if export.features is not None:
            features = export.features
            table = pa.table({"feature": pa.array(features.names.tolist(), pa.string()), "query": _vectors(features.query), "candidate": _vectors(features.candidate)})
            pq.write_table(table, tmp / FEATURES_FILE)
            files.append(FEATURES_FILE)
            described["features"] = _feature_entry(features)
        for name, path in extra_files.items():
            shutil.copyfile(path, tmp / name)
            files.append(name)
        manifest = {
            **export.meta, "schema": EXPORT_SCHEMA, "version": export.version, "dim": export.dim,
            "items": len(export.item_ids), "user_vector": export.user_vector.to_dict(), **described, "files": files,
        }
        (tmp / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        # mkdtemp makes the folder private; the job (perhaps another user) reads it.
        os.chmod(tmp, 0o755)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote embedding export %s (%d items, dim %d)", final, len(export.item_ids), export.dim)
    return final


def read_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        manifest = orjson.loads((path / MANIFEST).read_bytes())
    except FileNotFoundError as exc:
        raise ExportError(f"{path} is not an embedding export (no {MANIFEST})") from exc
    except orjson.JSONDecodeError as exc:
        raise ExportError(f"{path / MANIFEST} is not JSON: {exc}") from exc
    if manifest.get("schema") != EXPORT_SCHEMA:
        raise ExportError(f"{path}: unsupported export schema {manifest.get('schema')!r} (this release reads {EXPORT_SCHEMA})")
    return manifest


def read_export(path: str | Path) -> EmbeddingExport:
    """Read one export version directory (``root/<version>``)."""
    path = Path(path)
    manifest = read_manifest(path)
    dim = int(manifest["dim"])
    try:
        items = pq.read_table(path / ITEMS_FILE)
        nbrs = pq.read_table(path / NEIGHBOURS_FILE).to_pydict()
    except (OSError, pa.ArrowInvalid) as exc:
        raise ExportError(f"{path}: incomplete export: {exc}") from exc
    neighbours = {
        item: (np.array(ids, dtype=object), np.array(scores, dtype=np.float64))
        for item, ids, scores in zip(nbrs["item"], nbrs["neighbours"], nbrs["scores"])
    }
    sequence = None
    if SEQUENCE_FILE in manifest.get("files", ()):
        with np.load(path / SEQUENCE_FILE, allow_pickle=False) as npz:
            sequence = {k: npz[k] for k in npz.files}
    features = _read_features(path, manifest, dim) if FEATURES_FILE in manifest.get("files", ()) else None
    meta = {k: v for k, v in manifest.items() if k not in _MANIFEST_KEYS}
    return EmbeddingExport(
        version=str(manifest["version"]),
        item_ids=np.array(items.column("item").to_pylist(), dtype=object),
        query=_matrix(items.column("query"), dim),
        candidate=_matrix(items.column("candidate"), dim),
        neighbours=neighbours,
        sequence=sequence,
        meta=meta,
        user_vector=UserVectorRule.from_dict(manifest.get("user_vector")),
        features=features,
    )


def latest_version(root: str | Path) -> Path | None:
    """The newest complete export under ``root`` (versions sort as strings), or None."""
    root = Path(root)
    if (root / MANIFEST).exists():  # ``root`` is itself a version directory
        return root
    if not root.is_dir():
        return None
    versions = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).exists())
    return versions[-1] if versions else None
