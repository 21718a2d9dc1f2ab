"""What online item vectors add: one prequential replay with them and one without, side by side.

Usage::

    python -m evaluation.online_vectors --dataset taobao --catalog-at-first-event
    python -m evaluation.online_vectors --dataset events.jsonl --catalog catalog.jsonl

Embeddings are trained at the start of each UTC day on every earlier event
(:class:`evaluation.harness.TrainedEmbeddings`, needs PyTorch) and shared by
both replays, so the two differ only in ``online_item_vectors``: between
trainings, co-occurrences move the exported vectors and place the items the
export lacks (:class:`transforms.embedding.OnlineItemVectors`).  Rows: the
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

from evaluation import harness
from flowrec.config import Settings
from evaluation.blend_study import catalog_at_first_event
from transforms.config import ModelConfig
from transforms.datasets import DatasetMissing

ROWS = ("flowrec-embedding", "flowrec")


def compare(dataset: harness.Dataset, config: ModelConfig, k: int, seed: int, max_events: int | None, progress: bool = False) -> dict:
    """Both replays (online vectors on, off) with one embedding source; ``{"on": {row: metrics}, "off": ...}``."""
    embeddings = harness.TrainedEmbeddings(dataset.catalog, seed=seed)
    out: dict = {}
    for label, online in (("on", True), ("off", False)):
        report = harness.evaluate(
            dataset,
            "prequential",
            k=k,
            algorithms=ROWS,
            config=config.replace(online_item_vectors=online),
            seed=seed,
            progress=progress,
            max_events=max_events,
            embeddings=embeddings,
        )
        results = report.to_json()["results"]
        out[label] = {row: {m: results[row].get(m) for m in ("hr", "ndcg", "new_item_hit_share", "coverage", "evaluated")} for row in ROWS}
    return out


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
    parser.add_argument("--max-events", type=int, default=None)
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
    print(json.dumps(compare(dataset, config, args.k, args.seed, args.max_events), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
