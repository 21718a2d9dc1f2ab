"""`flowrec tune`: choose model settings on validation data carved from the training part only.

Examples::

    flowrec tune --events history.jsonl --catalog catalog.jsonl --protocol temporal --out model.json
    flowrec run --events new.jsonl --catalog catalog.jsonl --model-config model.json
    flowrec tune --dataset ml-100k --protocol msr --out tuned-ml100k.json
    flowrec tune --dataset taobao --protocol prequential --budget 12 --out tuned-shop.json
    flowrec evaluate --dataset taobao --protocol prequential --model-config tuned-shop.json
    flowrec tune --dataset ml-100k --model-config tuned-ml100k.json --search-embeddings --out tuned-hybrid.json

Prints the validation table (best candidates and the base config) and writes
the chosen config as JSON (``ModelConfig.to_dict()``), which ``--model-config``
of every command reads back.  Settings derived from history (the interest
half-life, see :mod:`transforms.derive`) are written as measured on all the
given events, so the job serves with the values the tuning validated.  The protocol's test part is never looked at;
see :mod:`evaluation.tune` for the validation splits and the search.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from flowrec.config import UsageError, add_settings_arguments, load_settings

HELP = "tune model weights, half-life, similarity and window on validation data from the training split"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", type=Path, default=None, help="your own event history: flowrec JSON lines or CSV (see `flowrec evaluate`)")
    source.add_argument("--dataset", default=None, help="ml-100k, taobao, or a CSV/JSON-lines event file")
    parser.add_argument("--catalog", type=Path, default=None, help="catalog JSON lines for a file dataset")
    parser.add_argument("--protocol", choices=("msr", "temporal", "prequential"), default="msr", help="whose training part to carve validation from (default msr)")
    parser.add_argument("--k", type=int, default=10, help="list length of the objective (default 10)")
    parser.add_argument("--budget", type=int, default=8, help="engine replays, i.e. state candidates (default 8)")
    parser.add_argument("--scoring-trials", type=int, default=16, help="blend-weight candidates scored per replay (default 16)")
    parser.add_argument("--seed", type=int, default=42, help="protocol split seed; use the same as `flowrec evaluate --seed` (default 42)")
    parser.add_argument("--search-seed", type=int, default=1, help="random search seed (default 1)")
    parser.add_argument(
        "--space",
        default=None,
        help='search space replacing the default: JSON {"field": [values...]} or a file holding it, '
        'e.g. \'{"neighbours": [50, 100], "weight_content": [0, 0.3]}\'',
    )
    parser.add_argument(
        "--search-embeddings",
        action="store_true",
        help="also search the learned components' weights (weight_embedding, weight_sequence, embedding_candidates); "
        "the embeddings are trained on the fitting part unless --embeddings is given",
    )
    parser.add_argument("--embeddings", type=Path, default=None, help="a pre-trained export to tune with; it must not have seen the validation part")
    parser.add_argument("--train-config", type=Path, default=None, help="JSON of trainer settings (learn.TrainConfig fields) for embeddings trained here")
    parser.add_argument("--keep-embeddings", type=Path, default=None, help="keep the exports trained here in this folder")
    parser.add_argument("--out", type=Path, required=True, help="where to write the chosen config (JSON)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_settings_arguments(parser, only=("datasets-dir", "model-config"))


def main(args: argparse.Namespace) -> int:
    from evaluation import harness
    from evaluation import tune as tuner
    from flowrec.commands.evaluate import embedding_source
    from transforms.datasets import DatasetMissing

    if args.k <= 0 or args.budget <= 0 or args.scoring_trials <= 0:
        raise UsageError("--k, --budget and --scoring-trials must be positive")
    try:
        settings = load_settings(args)
        spaces = {}
        if args.space is not None:
            text = Path(args.space).read_text() if Path(args.space).is_file() else args.space
            try:
                spaces["state_space"], spaces["scoring_space"] = tuner.parse_space(json.loads(text))
            except json.JSONDecodeError as exc:
                raise ValueError(f"--space is not valid JSON: {exc}") from exc
        if args.events is not None and not args.events.is_file():
            raise harness.EvaluationError(f"--events {args.events}: no such file")
        dataset = harness.load_dataset(args.dataset or str(args.events), settings.datasets_dir, args.catalog)
        result = tuner.tune(
            dataset.events,
            dataset.catalog,
            protocol=args.protocol,
            k=args.k,
            base=settings.model,
            budget=args.budget,
            scoring_trials=args.scoring_trials,
            seed=args.seed,
            search_seed=args.search_seed,
            progress=not args.no_progress,
            embeddings=embedding_source(args, dataset.catalog),
            search_embeddings=args.search_embeddings,
            **spaces,
        )
    except DatasetMissing as exc:
        raise UsageError(f"{exc} (set --datasets-dir or FLOWREC_DATASETS_DIR)") from None
    except (harness.EvaluationError, OSError, ValueError) as exc:
        raise UsageError(f"{exc}") from None
    print(f"{dataset.name} · {args.protocol} validation (from the training part only) · {len(result.trials)} candidates · {result.runtime_s:.0f} s")
    print()
    print(tuner.format_trials(result, args.k))
    print()
    gain = result.best.score - result.base.score
    print(f"chosen: {result.objective}@{args.k} {result.best.score:.4f} (base {result.base.score:.4f}, {gain:+.4f})")
    for name in result.best.config.derive_from_history:
        print(f"{name} = {getattr(result.chosen, name)} (measured on the {len(dataset.events)} events given)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result.chosen.to_dict(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return 0
