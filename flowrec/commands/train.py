"""`flowrec train`: learn item embeddings and a sequence model offline, and write a versioned export.

Examples::

    flowrec train --dataset ml-100k --out exports/
    flowrec train --input shop/events.jsonl --catalog shop/catalog.jsonl --out exports/ --epochs 30 --json

Needs the optional ``learn`` extra (PyTorch, faiss): ``pip install '.[learn]'``.
The export lands in ``<out>/<version>/`` (version = the UTC start time of the
run); see :mod:`state.embeddings` for its layout and :mod:`learn.train` for
the steps.  Checkpoints go to ``<out>/.checkpoints`` unless
``--checkpoint-dir`` says otherwise; ``--resume`` continues a run of the same
data and settings from there.

``--publish SPOOL_DIR`` hands the new version to a running job: it writes an
embedding switch (``{"embeddings": PATH, "ts": now}``) into the job's spool
``catalog/`` folder, and the job scores with the new vectors from the window
that closes after ``now`` on, without a restart (see
:class:`transforms.catalog.EmbeddingSwitch`).  For a Kafka or socket job,
send the printed switch line on the catalog input instead.  The export's path
must be readable by every TaskManager at the same path.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import orjson

from flowrec.config import UsageError, add_settings_arguments, load_settings

HELP = "train learned item embeddings and a sequence model on an event log (needs pip install '.[learn]')"

log = logging.getLogger(__name__)

# Flag -> TrainConfig field, for the hyper-parameters offered on the command line.
_HYPER = {
    "dim": int,
    "epochs": int,
    "sequence_epochs": int,
    "batch_users": int,
    "learning_rate": float,
    "sequence_learning_rate": float,
    "weight_decay": float,
    "target_fraction": float,
    "id_dropout": float,
    "objective": str,
    "user_vector": str,
    "fold_in_confidence": float,
    "fold_in_regularization": float,
    "loss": str,
    "negatives": int,
    "patience": int,
    "validation_fraction": float,
    "neighbours": int,
    "threads": int,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, help="event file: flowrec JSON lines or CSV, or a user,item,rating,timestamp table")
    source.add_argument("--dataset", choices=("ml-100k", "taobao"), help="a data set from the datasets folder")
    parser.add_argument("--catalog", type=Path, default=None, help="catalog JSON lines (side features; every item in it gets a vector)")
    parser.add_argument("--out", type=Path, required=True, help="export root; the export is written to OUT/<version>/")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 42)")
    parser.add_argument("--train-config", type=Path, default=None, help="JSON file of TrainConfig fields; flags override it")
    hyper = parser.add_argument_group("hyper-parameters (defaults: learn.config.TrainConfig)")
    for name, kind in _HYPER.items():
        hyper.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None)
    hyper.add_argument("--no-sequence", action="store_true", help="train the embedding model only")
    hyper.add_argument("--no-refit", action="store_true", help="export the early-stopped models instead of refitting on all events")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="where checkpoints go (default OUT/.checkpoints)")
    parser.add_argument("--resume", action="store_true", help="continue from checkpoints of a run with the same data and settings")
    parser.add_argument("--publish", type=Path, default=None, metavar="SPOOL_DIR", help="announce the new version to the live job reading this spool directory")
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_settings_arguments(parser, only=("datasets-dir", "model-config"))


def train_config(args: argparse.Namespace):
    """The TrainConfig from ``--train-config`` and the flags."""
    from learn.config import TrainConfig

    values = orjson.loads(args.train_config.read_bytes()) if args.train_config is not None else {}
    values.update({name: getattr(args, name) for name in _HYPER if getattr(args, name) is not None})
    if args.seed is not None:
        values["seed"] = args.seed
    if args.no_sequence:
        values["sequence"] = False
    if args.no_refit:
        values["refit_full"] = False
    return TrainConfig.from_dict(values)


def main(args: argparse.Namespace) -> int:
    from learn import TorchMissing, require_torch

    try:
        require_torch()
    except TorchMissing as exc:
        raise UsageError(f"{exc}") from None
    from evaluation.harness import EvaluationError, load_dataset
    from learn.train import train_and_export
    from transforms.datasets import DatasetMissing

    try:
        settings = load_settings(args)
        config = train_config(args)
        dataset = load_dataset(args.dataset or str(args.input), settings.datasets_dir, args.catalog)
        result = train_and_export(
            dataset.events, dataset.catalog, args.out, now_ms=int(time.time() * 1000), config=config,
            model_config=settings.model, progress=not args.no_progress, checkpoint_dir=args.checkpoint_dir, resume=args.resume,
        )
    except DatasetMissing as exc:
        raise UsageError(f"{exc} (set --datasets-dir or FLOWREC_DATASETS_DIR)") from None
    except (EvaluationError, OSError, ValueError) as exc:
        raise UsageError(f"{exc}") from None
    summary = {"dataset": dataset.name, "events": len(dataset.events), **result.summary}
    if args.publish is not None:
        summary["published"] = str(publish(args.publish, Path(result.path), int(time.time() * 1000)))
    if args.json:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
        return 0
    print(f"wrote {summary['path']} ({summary['items']} items) in {summary['train_seconds']} s")
    for name, values in summary["validation"].items():
        shown = ", ".join(f"{metric} {value:.4f}" for metric, value in values.items() if value is not None)
        print(f"  {name}: validation {shown}; best epoch {summary['epochs'][name]['best']} of {summary['epochs'][name]['run']}")
    recall = next(value for key, value in summary.items() if key.startswith("ann_recall@"))
    print(f"  item neighbours: faiss HNSW, recall {recall:.4f} against exact search")
    if args.publish is not None:
        print(f"  published to the live job: {summary['published']}")
    return 0


def publish(spool_dir: Path, version: Path, now_ms: int) -> Path:
    """Write the switch to export ``version`` (effective ``now_ms``) into the job's spool; returns the spool file."""
    from api.spool import write_spool_file
    from transforms.catalog import EmbeddingSwitch

    line = orjson.dumps(EmbeddingSwitch(str(version.resolve()), now_ms).to_dict()) + b"\n"
    return write_spool_file(spool_dir, "catalog", [line], now_ms)
