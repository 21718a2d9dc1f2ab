"""Cost per list of the batched scorer, by batch size, on the default bench shop.

    python -m bench.list_cost [--users 20000] [--items 5000] [--events 200000] [--batches 1,10,100,1000]
                              [--lists 2000] [--runs 3] [--json] [--profile FILE] [--state-cache FILE]

Builds the state of the shop ``flowrec bench stream`` replays (same generator,
seed and time compression) with the reference engine (no lists), then times
:func:`transforms.experiments.score_by_variant` - the step the reference
engine and the job's Scorer call - for ``--lists`` users cut into batches of
each size, in five settings: plain; a running two-variant experiment (50/50,
the treatment with another content weight); 5% of the items sponsored (the
ads lists); both; and ``learned``, the default product's path with the blend
learned online (:func:`transforms.blend.score_and_learn`: the lists plus every
blend setting's memo, crediting the memos of the pass before).  Prints process CPU µs per list, the least of
``--runs`` (the machine's other load moves wall-clock times far more),
per batch size and setting.  ``--profile FILE`` writes a cProfile of one
pass over every setting at the largest batch size instead.  Building the
state replays the shop (minutes on a busy machine): ``--state-cache FILE``
keeps it between runs (the same file serves a base worktree and yours).
"""

from __future__ import annotations

import argparse
import cProfile
import pickle
import sys
import time
from pathlib import Path
from typing import Callable

import orjson

from transforms.blend import score_and_learn
from transforms.config import ModelConfig
from transforms.experiments import parse_experiment, score_by_variant
from transforms.scoring import ItemCodes

EXPERIMENT = {"id": "bench", "variants": {"control": {"share": 0.5}, "treatment": {"share": 0.5, "config": {"weight_content": 0.6}}}}
SPONSORED_SHARE = 0.05


def build_state(users: int, items: int, events: int, seed: int, event_rate: float):
    """(engine, catalog, scoring time) after replaying the shop without lists."""
    from bench.stream import compress_time
    from transforms.engine import ReferenceEngine
    from transforms.events import EventBatch
    from transforms.synthetic import generate_shop

    catalog, stream = generate_shop(users=users, items=items, events=events, seed=seed)
    batch = compress_time(EventBatch.concat(list(stream)), event_rate)
    engine = ReferenceEngine(ModelConfig(), catalog, score_users=False)
    engine.process(batch)
    engine.finish()
    now = int(batch.ts.max()) + 1
    return engine, catalog, now


LEARNED = "learned"


def settings(catalog) -> dict[str, tuple[dict[str, float], object]]:
    """name -> (sponsored bids, experiment); the learned blend's setting has neither."""
    every = round(1 / SPONSORED_SHARE)
    sponsored = {c.item_id: 1.0 + k % 5 for k, c in enumerate(catalog) if k % every == 0}
    experiment = parse_experiment(EXPERIMENT)
    return {"plain": ({}, None), "experiment": ({}, experiment), "ads": (sponsored, None), "experiment+ads": (sponsored, experiment), LEARNED: ({}, None)}


def least_cpu_us_per_list(run: Callable[[], int], runs: int) -> float:
    """The least process CPU time of ``runs`` calls of ``run`` (after one warm-up), per list it scored."""
    run()
    best = float("inf")
    lists = 1
    for _ in range(runs):
        started = time.process_time()
        lists = run()
        best = min(best, time.process_time() - started)
    return best * 1e6 / max(lists, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.list_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--event-rate", type=float, default=100_000, help="event-time density, as flowrec bench stream (default 100000)")
    parser.add_argument("--batches", default="1,10,100,1000", help="batch sizes (comma-separated)")
    parser.add_argument("--lists", type=int, default=2000, help="lists scored per measurement (default 2000)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", default=None, help="write a cProfile of the largest batch size here and stop")
    parser.add_argument("--state-cache", default=None, help="pickle of the built state: read it if it exists, else write it (saves the replay between runs)")
    args = parser.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        parser.error("--batches must be comma-separated integers")
    if min(batches) < 1 or args.lists < 1 or args.runs < 1:
        parser.error("--batches, --lists and --runs must be >= 1")
    from threadpoolctl import threadpool_limits

    from transforms.profile import scorable

    cache = Path(args.state_cache) if args.state_cache else None
    if cache is not None and cache.exists():
        model, catalog, all_profiles, now = pickle.loads(cache.read_bytes())
        model.codes = ItemCodes()  # a cache: the pickled one may be of another version of the class
    else:
        engine, catalog, now = build_state(args.users, args.items, args.events, args.seed, args.event_rate)
        model, all_profiles = engine.model, engine.profiles
        if cache is not None:
            cache.write_bytes(pickle.dumps((model, catalog, all_profiles, now)))
    users = sorted(all_profiles)[: args.lists]
    profiles = [scorable(all_profiles[u]) for u in users]
    config = ModelConfig()
    if not config.blend_learning:
        config = config.replace(blend_learning=True)
    fixed = config.replace(blend_learning=False)
    cases = settings(catalog)
    previous: dict = {}  # the learned setting's memos of its last pass, by memo key

    def one_pass(size: int, sponsored: dict, experiment, learned: bool = False) -> int:
        model.sponsored = sponsored
        for start in range(0, len(users), size):
            batch_users, batch_profiles = users[start : start + size], profiles[start : start + size]
            if learned:
                _, _, memos = score_and_learn(batch_users, batch_profiles, now, model, config, {}, previous)
                previous.update((key, memo) for key, memo in memos.items() if memo is not None)
            else:
                score_by_variant(batch_users, batch_profiles, now, model, fixed, experiment)
        return len(users)

    with threadpool_limits(1, "blas"):
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for name, (sponsored, experiment) in cases.items():
                one_pass(max(batches), sponsored, experiment, name == LEARNED)
            profiler.disable()
            profiler.dump_stats(args.profile)
            return 0
        rows = []
        for size in batches:
            row: dict = {"batch": size}
            for name, (sponsored, experiment) in cases.items():
                row[f"{name}_us_per_list"] = round(least_cpu_us_per_list(lambda: one_pass(size, sponsored, experiment, name == LEARNED), args.runs), 1)
            rows.append(row)
    result = {"users": args.users, "items": args.items, "events": args.events, "lists": len(users), "rows": rows}
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
        return 0
    print(f"score_by_variant, CPU µs per list (least of {args.runs}; {len(users)} lists; shop {args.users} users, {args.items} items, {args.events} events)")
    header = list(rows[0])
    print("  ".join(f"{h:>24}" for h in header))
    for row in rows:
        print("  ".join(f"{row[h]:>24}" for h in header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
