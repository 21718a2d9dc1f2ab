"""Train both models on an event log and write a versioned embedding export.

Steps (:func:`train_and_export`):

1. Hold out ``validation_fraction`` of each user's events at random
   (:func:`transforms.splits.per_user_holdout`); the relevant items are the
   held-out positive items the user has not touched in the rest (as the msr
   protocol counts them).
2. Train the item towers on the rest, early-stopped on validation nDCG@k;
   then the sequence encoder against the frozen item vectors, likewise.
3. With ``refit_full``, train both again on all events for their best epoch
   counts (the validation numbers reported are those of step 2).
4. Export query/candidate vectors of every catalog item (items without
   training events from their side features alone), the side-feature vectors
   and price bucket edges (so serving places items that join later the same
   way), the sequence weights, the
   ANN item neighbours and their measured recall, the faiss index and the
   final state dicts, as ``<out>/<version>/`` with the version named by the
   passed-in time.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import faiss
import numpy as np
import torch

from evaluation.harness import EvaluationError, make_static_split
from learn.ann import build_neighbours
from learn.config import TrainConfig
from learn.data import TrainingData, item_vocabulary, prepare
from learn.models import ItemTowers, SequenceEncoder, sequence_arrays
from learn.trainer import LoopResult, Validation, fingerprint, fit_encoder, fit_towers, vectors
from state.embeddings import EmbeddingExport, FeatureVectors, UserVectorRule, write_export
from transforms.catalog import CatalogItem
from transforms.config import ModelConfig
from transforms.events import EventBatch
from transforms.splits import per_user_holdout

log = logging.getLogger(__name__)

# The export's model name per user-vector rule (the sequence encoder is the same either way).
MODEL_NAMES = {"mean": "fism-towers+sasrec", "fold_in": "foldin-towers+sasrec"}
INDEX_FILE = "neighbours.hnsw.faiss"
TOWERS_FILE = "towers.pt"
ENCODER_FILE = "sequence.pt"


def version_name(now_ms: int) -> str:
    """The export version for a training run at ``now_ms``: ``YYYYMMDDTHHMMSSZ`` (UTC; sorts by time)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now_ms // 1000))


@dataclass
class TrainedModels:
    """The models to export, the data they were trained on, and the training log."""

    towers: ItemTowers
    encoder: SequenceEncoder | None
    data: TrainingData
    loss: str
    embedding: LoopResult | None = None  # the validated run (None without validation)
    sequence: LoopResult | None = None
    seconds: float = 0.0

    def metrics(self) -> dict[str, Any]:
        """Validation metrics of the kept epochs, and every epoch's log line, per model."""
        out: dict[str, Any] = {}
        for name, result in (("embedding", self.embedding), ("sequence", self.sequence)):
            if result is None:
                continue
            best = result.best
            out[name] = {
                "ndcg": None if best is None else best.ndcg,
                "hr": None if best is None else best.hr,
                "best_epoch": result.best_epoch,
                "epochs": [asdict(r) for r in result.records],
            }
        return out


def split_validation(events: EventBatch, config: TrainConfig, item_ids: np.ndarray) -> tuple[EventBatch, Validation | None]:
    """``(events to fit on, validation)``; all events and no validation when no held-out user is usable."""
    parts = per_user_holdout(events.user, ratio=1.0 - config.validation_fraction, seed=config.seed, by="random")
    fit, held = events.take(parts.train), events.take(parts.test)
    try:
        split = make_static_split(fit, held, warm_only=True)
    except EvaluationError as exc:
        log.warning("no validation split (%s): training for a fixed %d epochs", exc, config.epochs)
        return events, None
    row_of = {item: k for k, item in enumerate(item_ids.tolist())}
    exclude = {user: np.array(sorted(row_of[i] for i in items if i in row_of), dtype=np.int64) for user, items in split.seen.items()}
    return fit, Validation(relevant=split.relevant, exclude_rows=exclude)


def train_models(
    events: EventBatch,
    catalog: Sequence[CatalogItem],
    config: TrainConfig = TrainConfig(),
    model_config: ModelConfig = ModelConfig(),
    progress: bool = False,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
) -> TrainedModels:
    """Steps 1-3 of the module doc; checkpoints go to ``checkpoint_dir`` (``resume`` continues matching ones)."""
    if len(events) == 0:
        raise ValueError("no events to train on")
    began = time.perf_counter()
    torch.set_num_threads(config.threads)
    length = config.sequence_length or model_config.history_length
    item_ids = item_vocabulary(events, catalog)
    loss = config.resolved_loss(len(item_ids))
    prep = dict(model_config=model_config, sequence_length=length, min_feature_items=config.min_feature_items, price_buckets=config.price_buckets, item_ids=item_ids)
    key = fingerprint(config.to_dict(), model_config.to_dict(), len(events), int(events.ts.sum()), item_ids.tolist()) if resume else None

    def checkpoint(name: str) -> Path | None:
        return None if checkpoint_dir is None else Path(checkpoint_dir) / f"{name}.pt"

    fit_events, validation = split_validation(events, config, item_ids)
    data = prepare(fit_events, catalog, **prep)
    towers, embedding = fit_towers(data, config, config.epochs, validation, checkpoint("embedding"), key, progress)
    encoder, sequence = None, None
    if config.sequence and len(data.examples):
        query, candidate = vectors(towers)
        encoder, sequence = fit_encoder(data, query, candidate, config, config.sequence_epochs, validation, checkpoint("sequence"), key, progress)
    if validation is not None and config.refit_full:
        data = prepare(events, catalog, **prep)
        towers, _ = fit_towers(data, config, embedding.best_epoch, None, checkpoint("embedding-refit"), key, progress)
        if sequence is not None and len(data.examples):
            query, candidate = vectors(towers)
            encoder, _ = fit_encoder(data, query, candidate, config, sequence.best_epoch, None, checkpoint("sequence-refit"), key, progress)
    validated = validation is not None
    return TrainedModels(
        towers=towers, encoder=encoder, data=data, loss=loss,
        embedding=embedding if validated else None, sequence=sequence if validated else None,
        seconds=time.perf_counter() - began,
    )


def export_features(models: TrainedModels) -> FeatureVectors | None:
    """The towers' side-feature vectors with their token names and price edges (None when trained without features)."""
    rows = models.towers.feature_vectors()
    if rows is None:
        return None
    features = models.data.features
    return FeatureVectors(names=np.array(features.names, dtype=object), query=rows[0], candidate=rows[1], price_edges=features.price_edges)


def user_vector_rule(config: TrainConfig) -> UserVectorRule:
    """The serving rule the towers were trained for."""
    if config.user_vector == "fold_in":
        return UserVectorRule("fold_in", confidence=config.fold_in_confidence, regularization=config.fold_in_regularization)
    return UserVectorRule()


@dataclass(frozen=True)
class TrainResult:
    """Where the export went and a JSON-ready summary of the run."""

    path: Path
    version: str
    summary: dict[str, Any]


def export_models(
    models: TrainedModels,
    out: Path,
    now_ms: int,
    config: TrainConfig,
    model_config: ModelConfig,
) -> TrainResult:
    """Step 4 of the module doc."""
    query, candidate = vectors(models.towers)
    faiss.omp_set_num_threads(config.threads)
    ann = build_neighbours(
        candidate, models.data.item_ids, config.neighbours, config.ann_m, config.ann_ef_construction, config.ann_ef_search, config.seed,
        has_bias=config.user_vector == "mean",
    )
    metrics = models.metrics()
    version = version_name(now_ms)
    meta = {
        "created_ms": int(now_ms),
        "model": {
            "name": MODEL_NAMES[config.user_vector],
            "loss": models.loss,
            "train": config.to_dict(),
            "sequence_length": models.data.sequence_length if models.encoder is not None else None,
            "features": len(models.data.features.names),
            "items_with_ids": int(models.data.has_id.sum()),
            # What the user vector's weights mean: the job must feed the same interests.
            "interests": {
                "half_life_ms": model_config.half_life_ms,
                "event_weights": dict(model_config.event_weights),
                "max_user_items": model_config.max_user_items,
                "history_length": model_config.history_length,
            },
        },
        "metrics": metrics,
        "ann": {**ann.info, "file": INDEX_FILE},
        "train_seconds": round(models.seconds, 2),
    }
    export = EmbeddingExport(
        version=version,
        item_ids=models.data.item_ids,
        query=query,
        candidate=candidate,
        neighbours=ann.neighbours,
        sequence=None if models.encoder is None else sequence_arrays(models.encoder),
        meta=meta,
        user_vector=user_vector_rule(config),
        features=export_features(models),
    )
    with tempfile.TemporaryDirectory(prefix="flowrec-train-") as scratch:
        extra = {INDEX_FILE: Path(scratch) / INDEX_FILE, TOWERS_FILE: Path(scratch) / TOWERS_FILE}
        faiss.write_index(ann.index, str(extra[INDEX_FILE]))
        torch.save(models.towers.state_dict(), extra[TOWERS_FILE])
        if models.encoder is not None:
            extra[ENCODER_FILE] = Path(scratch) / ENCODER_FILE
            torch.save(models.encoder.state_dict(), extra[ENCODER_FILE])
        path = write_export(out, export, extra)
    summary = {
        "path": str(path),
        "version": version,
        "items": len(models.data.item_ids),
        "train_seconds": round(models.seconds, 2),
        "loss": models.loss,
        "epochs": {name: {"best": m["best_epoch"], "run": len(m["epochs"])} for name, m in metrics.items()},
        "validation": {name: {f"ndcg@{config.k}": m["ndcg"], f"hr@{config.k}": m["hr"]} for name, m in metrics.items()},
        f"ann_recall@{config.neighbours}": ann.info["recall_at_k"],
    }
    return TrainResult(path=path, version=version, summary=summary)


def train_and_export(
    events: EventBatch,
    catalog: Sequence[CatalogItem],
    out: str | Path,
    now_ms: int,
    config: TrainConfig = TrainConfig(),
    model_config: ModelConfig = ModelConfig(),
    progress: bool = False,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train on ``events`` + ``catalog`` and write ``<out>/<version(now_ms)>/``; returns its path and a summary.

    ``checkpoint_dir`` defaults to ``<out>/.checkpoints`` (hidden, so
    :func:`state.embeddings.latest_version` never mistakes it for a version).
    """
    out = Path(out)
    checkpoint_dir = out / ".checkpoints" if checkpoint_dir is None else checkpoint_dir
    models = train_models(events, catalog, config, model_config, progress, checkpoint_dir, resume)
    return export_models(models, out, now_ms, config, model_config)
