"""Cost per event of the user-state step, by part, in the per-user layout and the profile log.

    python -m bench.user_state_cost [--users 20000] [--items 5000] [--events 200000] [--chunk 1000] [--max-ratio R] [--repeats 3] [--json]

Replays the ``flowrec bench stream`` shop (same generator, seed and time
compression) through the user-state step in chunks of ``--chunk`` events,
one user shard, as the job's user-state operator sees it, and times per
event (CPU of this process, the best of ``--repeats`` passes):

* ``apply``: :func:`transforms.profile.apply_window` (grouping, the per-event loop);
* ``encode``: :func:`state.schemas.encode_profile` of every changed profile
  (the snapshot the scorer gets; both layouts need it);
* ``per_user_layout``: what the earlier layout added — a ``contains``/``get``
  pair on a cache miss is not counted, only the two puts per changed user
  (profile and last-seen), as state calls per event;
* ``profile_log``: :class:`state.profile_log.ProfileLog` bookkeeping and
  :meth:`~state.profile_log.ProfileLog.flush` (block encoding, cleaning), and
  its state calls per event (puts and removes);
* ``restore``: CPU per user to rebuild a shard from state (per-user layout:
  decode every profile up front; profile log: read the blocks, decode lazily).

State calls are counted, not timed: each one crosses into the JVM (in thread
mode about 3 us measured on the 2-core box with a 640-byte value; see the
closing note of the layout change), so calls per event times that cost is what
the layout saves in the job.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import orjson

from state.profile_log import ProfileLog
from state.schemas import decode_profile, encode_profile
from transforms.config import ModelConfig, event_weights
from transforms.events import EventBatch, split_feedback
from transforms.profile import ItemContribution, apply_window


def shop_events(users: int, items: int, events: int, seed: int, event_rate: float) -> EventBatch:
    """The interactions of the stream bench's shop, time-compressed as it replays them."""
    from bench.stream import compress_time
    from transforms.synthetic import generate_shop

    _, stream = generate_shop(users=users, items=items, events=events, seed=seed)
    return split_feedback(compress_time(EventBatch.concat(list(stream)), event_rate))[0]


def one_pass(events: EventBatch, chunk: int, config: ModelConfig, max_ratio: float) -> dict[str, float]:
    """One replay through both layouts; CPU seconds by part and state-call counts."""
    cpu = time.process_time
    profiles: dict = {}
    profile_log = ProfileLog(max_ratio=max_ratio)
    blocks: dict[int, bytes] = {}
    t = {"apply": 0.0, "encode": 0.0, "profile_log": 0.0}
    changed_users = log_calls = 0
    for start in range(0, len(events), chunk):
        part = events.take(slice(start, start + chunk))
        weights = event_weights(part.etype, part.rating, config)
        t0 = cpu()
        changed = apply_window(profiles.get, part.user, part.item, part.etype, part.ts, weights, config, ItemContribution())
        t1 = cpu()
        encoded = [(user, profile, encode_profile(profile)) for user, profile, _ in changed]
        t2 = cpu()
        for user, profile, raw in encoded:
            profiles[user] = profile
            profile_log.put(user, profile, raw, profile.last_ts)
        puts, removes = profile_log.flush()
        for seq, raw in puts:
            blocks[seq] = raw
        for seq in removes:
            del blocks[seq]
        t3 = cpu()
        t["apply"] += t1 - t0
        t["encode"] += t2 - t1
        t["profile_log"] += t3 - t2
        changed_users += len(changed)
        log_calls += len(puts) + len(removes)
    # Rebuilding the shard from state.
    per_user = {user: encode_profile(profile) for user, profile in profiles.items()}
    t0 = cpu()
    {user: decode_profile(raw) for user, raw in per_user.items()}
    t1 = cpu()
    ProfileLog.restore(blocks.items())
    t2 = cpu()
    return {
        **t,
        "restore_per_user_layout": t1 - t0,
        "restore_profile_log": t2 - t1,
        "changed_users": changed_users,
        "per_user_calls": 2 * changed_users,
        "profile_log_calls": log_calls,
        "users": len(profiles),
        "per_user_bytes": sum(len(r) + 2 * len(u.encode()) + 8 for u, r in per_user.items()),
        "log_bytes": profile_log.log_bytes,
        "live_bytes": profile_log.live_bytes,
        "blocks": profile_log.blocks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--event-rate", type=float, default=100_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-ratio", type=float, default=ProfileLog().max_ratio, help="ProfileLog.max_ratio: log bytes kept per live byte before cleaning")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    config = ModelConfig()
    events = shop_events(args.users, args.items, args.events, args.seed, args.event_rate)
    runs = [one_pass(events, args.chunk, config, args.max_ratio) for _ in range(args.repeats)]
    n = len(events)
    best = {key: min(r[key] for r in runs) for key in ("apply", "encode", "profile_log", "restore_per_user_layout", "restore_profile_log")}
    last = runs[-1]
    users = last["users"]
    result = {
        "events": n,
        "users": users,
        "changed_users_per_event": last["changed_users"] / n,
        "cpu_us_per_event": {key: best[key] / n * 1e6 for key in ("apply", "encode", "profile_log")},
        "state_calls_per_event": {"per_user_layout": last["per_user_calls"] / n, "profile_log": last["profile_log_calls"] / n},
        "restore_us_per_user": {"per_user_layout": best["restore_per_user_layout"] / users * 1e6, "profile_log": best["restore_profile_log"] / users * 1e6},
        "state_bytes_per_user": {"per_user_layout": last["per_user_bytes"] / users, "profile_log": last["log_bytes"] / users, "profile_log_live": last["live_bytes"] / users},
        "blocks": last["blocks"],
    }
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(f"{n} events, {users} users, {result['changed_users_per_event']:.3f} changed users per event (chunks of {args.chunk})")
    for key, value in result["cpu_us_per_event"].items():
        print(f"  {key:<14} {value:8.2f} CPU us/event")
    calls = result["state_calls_per_event"]
    print(f"  state calls/event: per-user layout {calls['per_user_layout']:.3f}, profile log {calls['profile_log']:.4f} ({calls['per_user_layout'] / max(calls['profile_log'], 1e-9):.0f}x fewer)")
    restore = result["restore_us_per_user"]
    print(f"  restore: per-user layout {restore['per_user_layout']:.1f} us/user, profile log {restore['profile_log']:.1f} us/user")
    size = result["state_bytes_per_user"]
    print(f"  state bytes/user: per-user layout {size['per_user_layout']:.0f}, profile log {size['profile_log']:.0f} (live {size['profile_log_live']:.0f}), {result['blocks']} blocks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
