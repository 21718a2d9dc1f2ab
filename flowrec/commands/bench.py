"""`flowrec bench engine|stream|api|backfill|bootstrap`: speed benchmarks that print medians and same-run ratios."""

from __future__ import annotations

import argparse
import importlib

HELP = "speed benchmarks: engine (reference replay), stream (the Flink job), api (lookup API), backfill (Beam), bootstrap (snapshot load)"

# Each benchmark module defines add_arguments(parser) and main(args) -> int.
BENCHMARKS = {
    "engine": "bench.engine",
    "stream": "bench.stream",
    "api": "bench.api",
    "backfill": "bench.backfill",
    "bootstrap": "bench.bootstrap",
    "itemmodel": "bench.itemmodel",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, path in BENCHMARKS.items():
        try:
            module = importlib.import_module(path)
        except ModuleNotFoundError as exc:
            if exc.name != path:
                raise
            continue
        command = sub.add_parser(name, help=module.HELP, description=module.HELP, formatter_class=parser.formatter_class)
        module.add_arguments(command)
        command.set_defaults(_bench_main=module.main)


def main(args: argparse.Namespace) -> int:
    return int(args._bench_main(args) or 0)
