"""`flowrec generate`: write a seeded synthetic shop (catalog and events) to a folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "write a synthetic shop (catalog.jsonl, events.jsonl, optionally Parquet) for demos, tests and benchmarks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=1000, help="number of shoppers")
    parser.add_argument("--items", type=int, default=500, help="number of catalog items")
    parser.add_argument("--events", type=int, default=100_000, help="exact number of events")
    parser.add_argument("--seed", type=int, default=7, help="random seed; the same seed writes identical files")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; existing files are overwritten)")
    parser.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl", help="jsonl, or parquet to write Parquet files as well")
    parser.add_argument("--days", type=float, default=14.0, help="length of the simulated period in days")
    parser.add_argument("--start-ms", type=int, default=1_700_000_000_000, help="start of the simulated period, epoch ms")


def main(args: argparse.Namespace) -> int:
    # Imported here so `flowrec --help` does not pay for numpy and the generator.
    from transforms.synthetic import write_shop

    try:
        summary = write_shop(
            args.out, users=args.users, items=args.items, events=args.events, seed=args.seed,
            fmt=args.format, start_ms=args.start_ms, days=args.days,
        )
    except ValueError as exc:
        print(f"flowrec generate: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the output folder cannot be created or written
        print(f"flowrec generate: error: cannot write the shop to {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    counts = " ".join(f"{name}={count}" for name, count in summary.event_counts.items())
    print(
        f"wrote {summary.events} events ({counts}), {summary.items} items, {summary.users} users "
        f"to {summary.out_dir} in {summary.seconds:.2f} s ({summary.events_per_second:,.0f} events/s)"
    )
    return 0
