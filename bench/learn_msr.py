"""Quality of the learned embeddings on ML-100K, msr protocol: trained on the train part only, served as the job serves.

    python -m bench.learn_msr [--model-config FILE] [--half-life-days D] [--set name=value ...] [--json]

Trains with :func:`learn.train.train_and_export` on the msr training part
(its validation split is carved from that part), reads the export back, and
ranks every test user's list with :class:`transforms.embedding.EmbeddingModel`
from the user's training interests (the embedding source), from their recent
items (the sequence source), and from the mean of both vectors; training items
are excluded.  Prints nDCG@10, HR@10, P@10, R@10 per source and the training time.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from evaluation.harness import split_for_protocol
from flowrec.config import load_settings
from transforms import metrics as M
from transforms.config import ModelConfig
from transforms.datasets import dataset_path, load_movielens_100k
from transforms.embedding import EmbeddingModel

K = 10


def source_lists(model: EmbeddingModel, data, split) -> dict[str, dict[str, list[str]]]:
    """Top-k lists per user from the embedding vector, the sequence vector and their mean."""
    users = sorted(split.relevant)
    index = {user: k for k, user in enumerate(data.interests.users.tolist())}
    lists: dict[str, dict[str, list[str]]] = {"embedding": {}, "sequence": {}, "mean": {}}
    for user in users:
        seen = split.seen.get(user, set())
        vectors = {}
        if user in index:
            rows, weights = data.interests.of(index[user])
            vectors["embedding"] = model.user_vector(list(zip(data.item_ids[rows].tolist(), weights.tolist())))
        if user in data.recent:
            vectors["sequence"] = model.sequence_vector(data.item_ids[data.recent[user]].tolist())
        found = [v for v in vectors.values() if v is not None]
        if found:
            vectors["mean"] = np.mean(found, axis=0)
        for name, vector in vectors.items():
            if vector is not None:
                lists[name][user] = model.top(vector, K, exclude=seen)[0].tolist()
    return lists


def main(argv: list[str] | None = None) -> int:
    from learn.config import TrainConfig
    from learn.data import prepare
    from learn.train import train_and_export
    from state.embeddings import read_export

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", action="append", default=[], help="TrainConfig field=value (repeatable)")
    parser.add_argument("--model-config", type=Path, default=None, help="model settings JSON (e.g. from flowrec tune); default: the defaults")
    parser.add_argument("--half-life-days", type=float, default=None, help="interest half-life (default: the model config's)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {}
    for item in args.set:
        name, _, value = item.partition("=")
        overrides[name] = orjson.loads(value) if value not in ("softmax", "bpr", "sampled_softmax", "auto") else value
    config = TrainConfig().replace(**overrides)
    model_config = ModelConfig.from_dict(orjson.loads(args.model_config.read_bytes())) if args.model_config else ModelConfig()
    if args.half_life_days is not None:
        model_config = model_config.replace(half_life_ms=int(args.half_life_days * 24 * 3600 * 1000))
    events, catalog = load_movielens_100k(dataset_path(load_settings(), "ml-100k"))
    split = split_for_protocol(events, "msr")
    with tempfile.TemporaryDirectory(prefix="learn-msr-") as out:
        began = time.perf_counter()
        result = train_and_export(split.train, catalog, Path(out), now_ms=split.now_ms, config=config, model_config=model_config)
        seconds = time.perf_counter() - began
        model = EmbeddingModel(read_export(result.path))
    data = prepare(split.train, catalog, model_config, config.sequence_length or model_config.history_length, item_ids=model.export.item_ids)
    lists = source_lists(model, data, split)
    report = {
        "config": overrides,
        "half_life_ms": model_config.half_life_ms,
        "train_seconds": round(seconds, 1),
        "validation": result.summary["validation"],
        "epochs": result.summary["epochs"],
        "ann_recall": result.summary[f"ann_recall@{config.neighbours}"],
        "test": {name: {m: round(v, 4) for m, v in M.ranking_metrics(found, split.relevant, K).items() if m in ("ndcg", "hr", "precision", "recall")} for name, found in lists.items() if found},
    }
    if args.json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    else:
        print(f"train {report['train_seconds']} s, epochs {report['epochs']}, ANN recall {report['ann_recall']:.4f}")
        for name, values in report["test"].items():
            print(f"{name:10s} nDCG@{K} {values['ndcg']:.4f}  HR@{K} {values['hr']:.4f}  P@{K} {values['precision']:.4f}  R@{K} {values['recall']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
