"""Cost of running an A/B experiment in the job's maths: a replay of a synthetic shop through the
reference engine without an experiment, with one of two variants, and with a treatment that has a
half-life and a similarity of its own, interleaved.

    python -m bench.experiment_cost [--users 2000] [--items 500] [--events 50000] [--runs 3] [--json]

The experiment (control: the job's configuration, treatment: another content
weight, 50/50) runs from the first event on, so every list is scored in two
batches per window instead of one (:func:`transforms.experiments.score_by_variant`).
The third replay keeps a second half-life's interest sums in every profile and
a second similarity's neighbour lists (``variant_half_lives_ms``,
``variant_similarities``), which its treatment uses.  Prints the medians of
the replay's CPU time (process time: steadier than wall time on a shared
machine) and their ratios to the plain replay; the scorer is most of the
replay's time, so the first ratio bounds the scorer's extra cost.  Also the
mean encoded profile size with and without the second half-life's sums.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import orjson

from state.schemas import encode_profile
from transforms.config import ModelConfig
from transforms.engine import replay
from transforms.events import EventBatch
from transforms.experiments import ExperimentStart, parse_experiment
from transforms.synthetic import generate_shop

EXPERIMENT = {"id": "bench", "variants": {"control": {"share": 0.5}, "treatment": {"share": 0.5, "config": {"weight_content": 0.6}}}}
STATE_TREATMENT = {"half_life_ms": 3_600_000, "similarity": "jaccard"}
STATE_EXPERIMENT = {"id": "bench-state", "variants": {"control": {"share": 0.5}, "treatment": {"share": 0.5, "config": STATE_TREATMENT}}}


def mean_profile_bytes(engine) -> float:
    return statistics.fmean(len(encode_profile(p)) for p in engine.profiles.values()) if engine.profiles else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.experiment_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    catalog, stream = generate_shop(users=args.users, items=args.items, events=args.events, seed=3)
    events = EventBatch.concat(list(stream))
    config = ModelConfig()
    keeping = config.replace(variant_half_lives_ms=(STATE_TREATMENT["half_life_ms"],), variant_similarities=(STATE_TREATMENT["similarity"],))
    start = int(events.ts.min()) - 1
    arms = {
        "without": (config, (), []),
        "with_two_variants": (config, [ExperimentStart(parse_experiment(EXPERIMENT), start)], []),
        "with_state_variants": (keeping, [ExperimentStart(parse_experiment(STATE_EXPERIMENT), start)], []),
    }
    sizes: dict[str, float] = {}
    for _ in range(args.runs):
        for name, (given_config, controls, times) in arms.items():
            started = time.process_time()
            engine, _ = replay(events, given_config, catalog, experiments=controls)
            times.append(time.process_time() - started)
            sizes[name] = mean_profile_bytes(engine)
    medians = {name: statistics.median(times) for name, (_, _, times) in arms.items()}
    result = {
        "events": len(events),
        "replay_cpu_s_without": round(medians["without"], 6),
        "replay_cpu_s_with_two_variants": round(medians["with_two_variants"], 6),
        "ratio": round(medians["with_two_variants"] / medians["without"], 3),
        "replay_cpu_s_with_state_variants": round(medians["with_state_variants"], 6),
        "state_ratio": round(medians["with_state_variants"] / medians["without"], 3),
        "profile_bytes_without": round(sizes["without"], 1),
        "profile_bytes_with_state_variants": round(sizes["with_state_variants"], 1),
    }
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        print(f"{result['events']} events: replay CPU {result['replay_cpu_s_without']} s without an experiment, "
              f"{result['replay_cpu_s_with_two_variants']} s with two variants (x{result['ratio']}), "
              f"{result['replay_cpu_s_with_state_variants']} s with a treatment of its own half-life and similarity (x{result['state_ratio']}); "
              f"medians of {args.runs}; profile {result['profile_bytes_without']} -> {result['profile_bytes_with_state_variants']} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
