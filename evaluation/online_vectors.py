"""What online item vectors add: one prequential replay with them and one without, side by side.

Usage::

    python -m evaluation.online_vectors --dataset taobao
    python -m evaluation.online_vectors --dataset events.jsonl --catalog catalog.jsonl --train-days 3

By default embeddings are trained at the start of each UTC day on every
earlier event (:class:`evaluation.harness.TrainedEmbeddings`, needs PyTorch)
and shared by both replays.  With ``--train-days N`` one export is trained on
the first ``N`` days (and the catalog items known by then) and the lists of
the days after are evaluated: the life of an export between two trainings.
The two replays differ only in ``online_item_vectors``: between trainings the
items the export lacks get vectors from their features and co-occurrences
(:class:`transforms.embedding.OnlineItemVectors`).  Rows: the
embedding component alone (``flowrec-embedding``) and the blend with it
(``flowrec`` with ``weight_embedding``).  Columns: HR@k and nDCG@k, and the
share of hits on items first touched the day they were hit (newer than the
day's training: only what learns in the stream can list them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from evaluation import harness
from flowrec.config import Settings
from evaluation.blend_study import catalog_at_first_event
from transforms.config import ModelConfig
from transforms.datasets import DatasetMissing

ROWS = ("flowrec-embedding", "flowrec")


def compare(dataset: harness.Dataset, config: ModelConfig, k: int, seed: int, train_days: float | None = None) -> dict:
    """Both replays (online vectors on, off) with the same embeddings; ``{"on": {row: metrics}, "off": ...}``.

    ``train_days``: one export trained on the first days, the lists after them evaluated
    (else: retrained at each day's start, every list evaluated).
    """
    ordered = dataset.events.sorted_by_time()
    evaluate_from = None
    embeddings: harness.EmbeddingSource = harness.TrainedEmbeddings(dataset.catalog, seed=seed)
    if train_days is not None:
        evaluate_from = int(ordered.ts[0] + train_days * harness.DAY_MS)
        train = ordered.take(np.flatnonzero(ordered.ts < evaluate_from))
        embeddings = _Fixed(embeddings.model_for(train, config))
    out: dict = {}
    for label, online in (("on", True), ("off", False)):
        row_config = config.replace(online_item_vectors=online)
        learners = harness.make_learners(ROWS, row_config, dataset.catalog, seed=seed, embeddings=embeddings)
        results, _ = harness.evaluate_prequential(ordered, learners, k, dataset.catalog, evaluate_from_ms=evaluate_from)
        out[label] = {row: {m: results[row].to_json().get(m) for m in ("hr", "ndcg", "new_item_hit_share", "coverage", "evaluated")} for row in ROWS}
    return out


class _Fixed(harness.EmbeddingSource):
    """One trained model for every list (the export between two trainings)."""

    def __init__(self, model) -> None:
        self.model = model

    def model_for(self, train, config):
        return self.model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.online_vectors", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="ml-100k, taobao, or a CSV/JSON-lines event file")
    parser.add_argument("--catalog", type=Path, default=None, help="catalog JSON lines for a file dataset")
    parser.add_argument("--datasets-dir", type=Path, default=None, help="folder holding the data sets (default: the settings' datasets_dir)")
    parser.add_argument("--catalog-at-first-event", action="store_true", help="each catalog item takes effect at its first event")
    parser.add_argument("--weight-embedding", type=float, default=1.0, help="the blend row's weight_embedding (default 1.0)")
    parser.add_argument("--model-config", type=Path, default=None, help="model config JSON (default: the defaults)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--train-days", type=float, default=None, help="one export trained on the first N days; the lists after them are evaluated")
    args = parser.parse_args(argv)
    datasets_dir = args.datasets_dir if args.datasets_dir is not None else Settings().datasets_dir
    try:
        dataset = harness.load_dataset(args.dataset, datasets_dir, args.catalog)
    except (DatasetMissing, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.catalog_at_first_event:
        dataset = dataclasses.replace(dataset, catalog=catalog_at_first_event(dataset.catalog, dataset.events))
    config = ModelConfig.from_dict(json.loads(args.model_config.read_text())) if args.model_config else ModelConfig()
    config = config.replace(weight_embedding=args.weight_embedding)
    print(json.dumps(compare(dataset, config, args.k, args.seed, args.train_days), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
