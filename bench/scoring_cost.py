"""Cost per user of the hybrid scorer's learned-embedding components, by catalog size.

    python -m bench.scoring_cost [--items 1700,5000,50000] [--dim 64] [--users 200] [--json]

Builds a random export (``dim`` + 1 entries per vector: the trainer's bias
column; a 2-block sequence model of width 64 when ``--sequence-hidden`` > 0)
and a scoring model with ``neighbours`` collaborative neighbours per item,
then times :func:`transforms.scoring.score_user` per user for: the hybrid
without embeddings, with the embedding component (exact catalog scan) under
the fold-in user vector (the trainer's default) and under the mean one, with
the sequence component, and with both, plus the parts (each user vector,
scan, top-M, sequence forward pass).  Prints medians in ms per user (one BLAS thread).  These are the
numbers behind the full-scan decision documented in :mod:`transforms.scoring`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import orjson

import dataclasses

from state.embeddings import EmbeddingExport, UserVectorRule
from transforms.config import ModelConfig
from transforms.embedding import EmbeddingModel
from transforms.events import VIEW
from transforms.profile import UserProfile
from transforms.scoring import ScoringModel, score_user

HISTORY = 20
INTERESTS = 60


def random_sequence_weights(rng: np.random.Generator, dim: int, hidden: int, length: int, blocks: int = 2) -> dict[str, np.ndarray]:
    """Weights in the layout of :func:`transforms.embedding.sequence_forward` (random values: only the cost matters)."""

    def mat(a: int, b: int) -> np.ndarray:
        return (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32)

    w = {"heads": np.array([2], np.float32), "input.weight": mat(dim, hidden), "input.bias": np.zeros(hidden, np.float32), "position": mat(length, hidden)}
    for b in range(blocks):
        p = f"blocks.{b}"
        for norm in ("norm1", "norm2"):
            w[f"{p}.{norm}.weight"], w[f"{p}.{norm}.bias"] = np.ones(hidden, np.float32), np.zeros(hidden, np.float32)
        for name in ("query", "key", "value", "attention_out", "ff1", "ff2"):
            w[f"{p}.{name}.weight"], w[f"{p}.{name}.bias"] = mat(hidden, hidden), np.zeros(hidden, np.float32)
    w["final_norm.weight"], w["final_norm.bias"] = np.ones(hidden, np.float32), np.zeros(hidden, np.float32)
    w["output.weight"], w["output.bias"] = mat(hidden, dim - 1), np.zeros(dim - 1, np.float32)
    return w


def build(items: int, dim: int, sequence_hidden: int, neighbours: int, seed: int) -> tuple[ScoringModel, list[UserProfile]]:
    """A scoring model over a random export (mean rule) and ``200`` random profiles."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"i{k}" for k in range(items)], dtype=object)
    vectors = rng.normal(size=(2, items, dim + 1)).astype(np.float32)
    vectors[0, :, -1] = 1.0  # the trainer's bias column
    nbr_rows = rng.integers(0, items, size=(items, 20))
    export = EmbeddingExport(
        version="bench",
        item_ids=ids,
        query=vectors[0],
        candidate=vectors[1],
        neighbours={ids[k]: (ids[nbr_rows[k]], np.linspace(1, 0.5, 20)) for k in range(items)},
        sequence=random_sequence_weights(rng, dim + 1, sequence_hidden, HISTORY) if sequence_hidden else None,
    )
    cf_rows = rng.integers(0, items, size=(items, neighbours))
    sims = np.sort(rng.random(neighbours))[::-1]
    model = ScoringModel(neighbours={ids[k]: (ids[cf_rows[k]], sims) for k in range(items)}, embeddings=EmbeddingModel(export))
    profiles = []
    for _ in range(200):
        chosen = ids[rng.choice(items, size=INTERESTS, replace=False)].tolist()
        profiles.append(
            UserProfile(
                interests={i: float(v) for i, v in zip(chosen, rng.random(INTERESTS) + 0.1)},
                last_action=dict.fromkeys(chosen, VIEW),
                history=[(i, t, 1.0) for t, i in enumerate(chosen[-HISTORY:])],
            )
        )
    return model, profiles


def median_ms(fn, args_list: list) -> float:
    times = []
    for args in args_list:
        started = time.perf_counter()
        fn(*args)
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def measure(items: int, dim: int, sequence_hidden: int, users: int, seed: int = 0) -> dict[str, float]:
    base = ModelConfig(half_life_ms=10**12, interest_items=30, neighbours=50, embedding_candidates=100)
    model, profiles = build(items, dim, sequence_hidden, base.neighbours, seed)
    profiles = (profiles * (users // len(profiles) + 1))[:users]
    configs = {
        "hybrid": base,
        "+embedding": base.replace(weight_embedding=0.5),
        "+sequence": base.replace(weight_sequence=0.5),
        "+both": base.replace(weight_embedding=0.5, weight_sequence=0.5),
    }
    # The same export read by the fold-in rule (its query vectors are its candidate vectors).
    export = model.embeddings.export
    folded = EmbeddingModel(dataclasses.replace(export, query=export.candidate, user_vector=UserVectorRule("fold_in", 1.0, 50.0)))
    models = {"mean": model, "fold-in": dataclasses.replace(model, embeddings=folded)}
    runs = [("hybrid", "mean"), ("+embedding", "fold-in"), ("+embedding", "mean"), ("+sequence", "mean"), ("+both", "fold-in")]
    out = {"items": items}
    for name, rule in runs:
        if ("sequence" in name or "both" in name) and not sequence_hidden:
            continue
        config, scorer = configs[name], models[rule]
        score_user(profiles[0], 0, scorer, config)  # warm caches
        label = name if name in ("hybrid", "+sequence") else f"{name} ({rule})"
        out[f"{label} ms"] = median_ms(lambda p, c=config, m=scorer: score_user(p, 0, m, c), [(p,) for p in profiles])
    for rule, scorer in models.items():
        out[f"user vector ({rule}) ms"] = median_ms(lambda p, e=scorer.embeddings: e.user_vector(list(p.interests.items())), [(p,) for p in profiles])
    emb = model.embeddings
    vector = emb.user_vector(list(profiles[0].interests.items()))
    out["scan ms"] = median_ms(lambda: emb.scan(vector), [()] * users)
    scores = emb.scan(vector)
    banned = set(list(profiles[0].interests)[:30])
    out["top-100 ms"] = median_ms(lambda: emb.best(scores, 100, banned), [()] * users)
    if sequence_hidden:
        recent = [i for i, _, _ in profiles[0].history]
        out["sequence forward ms"] = median_ms(lambda: emb.sequence_vector(recent), [()] * users)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="1700,5000,50000", help="catalog sizes (comma-separated)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--sequence-hidden", type=int, default=64, help="0: no sequence model")
    parser.add_argument("--users", type=int, default=200, help="users timed per setting")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    # One BLAS thread, as in a job's Python worker (parallelism comes from the
    # operator's subtasks): a second BLAS thread on a busy core stalls a
    # matrix-vector product by 10-20 ms here.
    with threadpool_limits(1, "blas"):
        rows = [measure(int(n), args.dim, args.sequence_hidden, args.users) for n in args.items.split(",")]
    if args.json:
        sys.stdout.write(orjson.dumps(rows).decode() + "\n")
        return 0
    header = list(rows[0])
    print(f"score_user per user, median ms (dim {args.dim}+1, {INTERESTS} interests, history {HISTORY}, 50 CF neighbours per item, top-100 scan candidates)")
    print("  ".join(f"{h:>18}" for h in header))
    for row in rows:
        print("  ".join(f"{row[h]:>18.3f}" if isinstance(row[h], float) else f"{row[h]:>18}" for h in header))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
