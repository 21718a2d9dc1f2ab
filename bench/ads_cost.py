"""What the ad slot costs the batched scorer: CPU time of a window's lists with and without sponsored items.

    python -m bench.ads_cost [--users 2000] [--items 1000] [--events 60000] [--share 0.05] [--runs 15] [--json]

Builds the state of a synthetic shop with the reference engine (no lists),
then times :func:`transforms.scoring.score_users` over every user in batches
of 200 (process CPU time, the least of ``runs``; the machine's other load
moves wall-clock times far more): once with no sponsored item (the ads path
must cost nothing then) and once with ``share`` of the items sponsored.
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson

from transforms.config import ModelConfig
from transforms.engine import ReferenceEngine
from transforms.events import EventBatch
from transforms.profile import scorable
from transforms.scoring import score_users
from transforms.synthetic import generate_shop

BATCH = 200


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ads_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--share", type=float, default=0.05, help="share of the items sponsored in the second run")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 0 < args.share <= 1 or args.runs < 1:
        parser.error("--share must be in (0, 1] and --runs >= 1")
    catalog, stream = generate_shop(users=args.users, items=args.items, events=args.events, seed=3)
    events = EventBatch.concat(list(stream))
    engine = ReferenceEngine(ModelConfig(), catalog, score_users=False)
    engine.process(events)
    engine.finish()
    profiles = [scorable(p) for p in engine.profiles.values()]
    now = int(events.ts.max()) + 1
    every = max(1, round(1 / args.share))
    sponsored = {c.item_id: 1.0 + k % 5 for k, c in enumerate(catalog) if k % every == 0}

    def least_cpu_ms(bids: dict[str, float]) -> float:
        engine.model.sponsored = bids
        times = []
        for _ in range(args.runs + 1):  # the first run warms the caches
            started = time.process_time()
            for start in range(0, len(profiles), BATCH):
                score_users(profiles[start : start + BATCH], now, engine.model, engine.config)
            times.append(time.process_time() - started)
        return min(times[1:]) * 1000

    result = {"users": len(profiles), "items": len(catalog), "sponsored": len(sponsored), "no_ads_ms": least_cpu_ms({}), "with_ads_ms": least_cpu_ms(sponsored)}
    result["ratio"] = result["with_ads_ms"] / result["no_ads_ms"]
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print(f"{result['users']} users, {result['items']} items: {result['no_ads_ms']:.0f} ms CPU without sponsored items, "
              f"{result['with_ads_ms']:.0f} ms with {result['sponsored']} ({result['ratio']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
