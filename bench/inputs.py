"""The inputs the backfill and bootstrap benchmarks share: ML-100K (when present) and a synthetic shop, as files.

Both benchmarks take the same flags for them (:func:`add_input_arguments`),
write each input as ``events.jsonl`` + ``catalog.jsonl`` under a work folder
(:func:`benchmark_inputs`), read a private Redis back to compare runs
(:func:`redis_content`) and print one row per input as it is measured
(:func:`print_row`).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger(__name__)


def add_input_arguments(parser: argparse.ArgumentParser, workdir_help: str) -> None:
    parser.add_argument("--events", type=int, default=1_000_000, help="events of the synthetic shop (default 1000000)")
    parser.add_argument("--users", type=int, default=20_000, help="shoppers of the synthetic shop (default 20000)")
    parser.add_argument("--items", type=int, default=2_000, help="items of the synthetic shop (default 2000)")
    parser.add_argument("--days", type=float, default=2.0, help="simulated days of the synthetic shop (default 2)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip", choices=("ml-100k", "shop"), action="append", default=[], help="skip an input (repeatable)")
    parser.add_argument("--datasets-dir", type=Path, help="folder holding ml-100k/ (default: the settings' datasets_dir)")
    parser.add_argument("--workdir", type=Path, help=workdir_help)
    parser.add_argument("--json", action="store_true", help="print one JSON object per input")


def write_inputs(folder: Path, events, catalog) -> tuple[Path, Path]:
    """``folder/events.jsonl`` and ``folder/catalog.jsonl`` from an event batch and catalog items."""
    from transforms.synthetic import events_to_jsonl

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "events.jsonl").write_bytes(events_to_jsonl(events))
    (folder / "catalog.jsonl").write_bytes(b"".join(c.to_json() + b"\n" for c in catalog))
    return folder / "events.jsonl", folder / "catalog.jsonl"


def benchmark_inputs(args: argparse.Namespace, workdir: Path) -> Iterator[tuple[str, Path, Path]]:
    """``(name, events path, catalog path)`` of each input not in ``--skip``, written under ``workdir`` one at a time.

    ML-100K is skipped with a warning when the data set is absent.
    """
    from flowrec.config import load_settings
    from transforms.datasets import DatasetMissing, dataset_path, load_movielens_100k
    from transforms.events import EventBatch
    from transforms.synthetic import generate_shop

    if "ml-100k" not in args.skip:
        try:
            folder = dataset_path(args.datasets_dir or load_settings(None).datasets_dir, "ml-100k")
        except DatasetMissing as exc:
            log.warning("skipping ML-100K: %s", exc)
        else:
            events, catalog = load_movielens_100k(folder)
            yield ("ml-100k", *write_inputs(workdir / "ml-100k", events, catalog))
    if "shop" not in args.skip:
        catalog, stream = generate_shop(users=args.users, items=args.items, events=args.events, seed=args.seed, days=args.days)
        yield (f"shop-{args.events}", *write_inputs(workdir / "shop", EventBatch.concat(list(stream)), catalog))


def work_folder(args: argparse.Namespace, prefix: str) -> Path:
    """``--workdir``, or a new temporary folder named with ``prefix``."""
    return args.workdir or Path(tempfile.mkdtemp(prefix=prefix))


def redis_content(url: str) -> dict[bytes, bytes]:
    """Every key of the Redis at ``url`` and its value, without the counters, dead letters and freshness log."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = [k for k in client.keys("*") if not k.endswith((b":stats", b":deadletter", b":freshness"))]
        return dict(zip(keys, client.mget(keys))) if keys else {}
    finally:
        client.close()


def print_row(row: dict, as_json: bool, line: Callable[[dict], str]) -> dict:
    """Print one input's result as soon as it is measured: JSON, or ``line(row)``; returns ``row``."""
    print(json.dumps(row) if as_json else line(row), flush=True)
    return row
