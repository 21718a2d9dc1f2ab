"""`flowrec evaluate`: quality of flowrec and the baselines on one split, side by side.

Examples::

    flowrec evaluate --dataset ml-100k --protocol msr --k 10
    flowrec evaluate --dataset taobao --protocol prequential --out results/taobao
    flowrec evaluate --train train.csv --test test.csv --algorithms flowrec,sar,ease --json
    flowrec evaluate --dataset ml-100k --algorithms flowrec,flowrec-embedding --embeddings exports/

Prints a table (or, with ``--json``, one JSON object); ``--out DIR`` also
writes results.json, results.md and PNG plots there.  The JSON records the
model config the flowrec rows ran with (``model_config``: settings derived
from the training part included, with their evidence under ``derived``), so
it can be passed back with ``--model-config``.  See
:mod:`evaluation.harness` for the protocols and metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import orjson

from flowrec.config import UsageError, add_settings_arguments, load_settings

HELP = "measure recommendation quality of flowrec and baselines (msr, temporal or prequential protocol)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from evaluation.harness import ALGORITHMS, PROTOCOLS

    source = parser.add_argument_group("data")
    source.add_argument("--dataset", default=None, help="ml-100k, taobao, or a CSV/JSON-lines event file")
    source.add_argument("--train", type=Path, default=None, help="training file from another tool (user,item,rating/weight,timestamp); needs --test")
    source.add_argument("--test", type=Path, default=None, help="test file matching --train")
    source.add_argument("--catalog", type=Path, default=None, help="catalog JSON lines (categories and content) for a file dataset")
    source.add_argument(
        "--catalog-at-first-event",
        action="store_true",
        help="each catalog item takes effect at its first event (no catalog look-ahead: a catalog derived from the events themselves, as the Taobao sample's)",
    )
    parser.add_argument("--protocol", choices=PROTOCOLS, default="msr", help="evaluation protocol (default msr; ignored with --train/--test)")
    parser.add_argument("--k", type=int, default=10, help="list length evaluated (default 10)")
    parser.add_argument("--algorithms", default=None, help=f"comma-separated subset of: {','.join(ALGORITHMS)} (default all)")
    parser.add_argument("--seed", type=int, default=42, help="split and model seed (default 42)")
    parser.add_argument("--window-hours", type=float, default=24.0, help="prequential reporting window (default 24 h)")
    parser.add_argument("--max-events", type=int, default=None, help="prequential: replay only the first N events")
    parser.add_argument(
        "--embeddings",
        type=Path,
        default=None,
        help="a pre-trained embedding export (version directory, or a root: its newest version) for the embedding rows, "
        "instead of training on the training part; it must not have seen the test part",
    )
    parser.add_argument(
        "--train-config",
        type=Path,
        default=None,
        help="JSON of trainer settings (learn.TrainConfig fields, e.g. {\"sequence_epochs\": 5}) for embeddings trained here",
    )
    parser.add_argument("--keep-embeddings", type=Path, default=None, help="keep the exports trained here in this folder (for --embeddings later)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--out", type=Path, default=None, help="write results.json, results.md and plots into this folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_settings_arguments(parser, only=("datasets-dir", "model-config"))


def embedding_source(args: argparse.Namespace, catalog):
    """The rows' embeddings: ``--embeddings DIR``, else trained here (with ``--train-config``/``--keep-embeddings``)."""
    from evaluation import harness

    if args.embeddings is not None:
        if args.train_config is not None or args.keep_embeddings is not None:
            raise ValueError("--embeddings uses a trained export; --train-config and --keep-embeddings apply to training here")
        return harness.PretrainedEmbeddings(args.embeddings)
    train_config = None
    if args.train_config is not None:
        from learn.config import TrainConfig  # no PyTorch needed to read it

        train_config = TrainConfig.from_dict(orjson.loads(args.train_config.read_bytes()))
    return harness.TrainedEmbeddings(catalog, seed=args.seed, train_config=train_config, keep_dir=args.keep_embeddings)


def main(args: argparse.Namespace) -> int:
    from evaluation import harness
    from transforms.datasets import DatasetMissing

    if (args.train is None) != (args.test is None):
        raise UsageError("--train and --test go together")
    if args.train is None and not args.dataset:
        raise UsageError("give --dataset, or --train and --test")
    if args.k <= 0:
        raise UsageError("--k must be positive")
    if args.window_hours <= 0:
        raise UsageError("--window-hours must be positive")
    try:
        settings = load_settings(args)
        algorithms = harness.parse_algorithms(args.algorithms)
        fixed = None
        if args.train is not None:
            fixed = (harness.read_event_file(args.train), harness.read_event_file(args.test))
            catalog = harness.read_catalog_file(args.catalog) if args.catalog else []
            dataset = harness.Dataset(name=f"{args.train.name}+{args.test.name}", events=fixed[0], catalog=catalog)
        else:
            dataset = harness.load_dataset(args.dataset, settings.datasets_dir, args.catalog)
        if args.catalog_at_first_event:
            from evaluation.blend_study import catalog_at_first_event

            dataset = dataclasses.replace(dataset, catalog=catalog_at_first_event(dataset.catalog, dataset.events))
        report = harness.evaluate(
            dataset,
            args.protocol,
            k=args.k,
            algorithms=algorithms,
            config=settings.model,
            seed=args.seed,
            progress=not args.no_progress,
            window_ms=int(args.window_hours * 3600 * 1000),
            max_events=args.max_events,
            fixed_split=fixed,
            embeddings=embedding_source(args, dataset.catalog),
        )
    except DatasetMissing as exc:
        raise UsageError(f"{exc} (set --datasets-dir or FLOWREC_DATASETS_DIR)") from None
    except (harness.EvaluationError, OSError, ValueError) as exc:
        raise UsageError(f"{exc}") from None
    if args.out is not None:
        for path in harness.write_outputs(report, args.out):
            log.info("wrote %s", path)
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_json()).decode() + "\n")
    else:
        print(harness.format_table(report))
    # The table is complete either way; a failed algorithm still makes the run fail.
    return 1 if any(result.error is not None for result in report.results.values()) else 0
