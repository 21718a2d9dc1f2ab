"""Quality metrics for ranked recommendation lists.

Two levels:

* per-list functions over one ranked list ``recommended`` (best first) and the
  set ``relevant`` of items the user actually interacted with in the test
  period (binary relevance);
* :func:`ranking_metrics` and :func:`beyond_accuracy_metrics`, which average
  the per-list values over users.

The accuracy definitions follow Microsoft Recommenders'
``recommenders.evaluation.python_evaluation`` (the reference for the
MovieLens-100K numbers quoted in the README), so results are comparable:

* precision@k divides the hits by ``k`` even when the list is shorter than k;
* nDCG@k uses binary gains and the natural-log discount ``1 / ln(1 + rank)``
  (the ratio DCG/IDCG does not depend on the log base, so this equals the
  log2 form);
* MAP is their ``map``: the sum of ``precision at each hit`` over the top-k,
  divided by the number of relevant items (not by ``min(k, |relevant|)``);
* every user counted in the denominator who has no hit contributes 0 to every
  mean (their implementation sums over users with hits and divides by the
  number of evaluated users).

Everything here is pure: no I/O, no clocks; the one resampling function
(:func:`bootstrap_intervals`) takes its seed as an argument.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Collection, Iterable, Mapping, Sequence

import numpy as np

ACCURACY_METRICS: tuple[str, ...] = ("precision", "recall", "f1", "ndcg", "map", "hr", "mrr")
BEYOND_ACCURACY_METRICS: tuple[str, ...] = ("coverage", "diversity", "novelty")
ALL_METRICS: tuple[str, ...] = ACCURACY_METRICS + BEYOND_ACCURACY_METRICS


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def hit_ranks(recommended: Sequence[str], relevant: Collection[str], k: int) -> list[int]:
    """1-based ranks (ascending) of the relevant items among the first ``k`` recommended.

    A repeated item counts once, at its first position (a list should not
    repeat items; this keeps a faulty one from scoring twice).
    """
    _check_k(k)
    ranks, seen = [], set()
    for rank, item in enumerate(recommended[:k], start=1):
        if item in relevant and item not in seen:
            ranks.append(rank)
        seen.add(item)
    return ranks


def precision_at_k(recommended: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Precision@k = |hits in top k| / k (dimensionless, 0..1)."""
    return len(hit_ranks(recommended, relevant, k)) / k


def recall_at_k(recommended: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Recall@k = |hits in top k| / |relevant|; 0 when nothing is relevant."""
    if not relevant:
        return 0.0
    return len(hit_ranks(recommended, relevant, k)) / len(relevant)


def f1_at_k(recommended: Sequence[str], relevant: Collection[str], k: int) -> float:
    """F1@k = 2 P R / (P + R) of this list's precision@k and recall@k; 0 when both are 0."""
    p = precision_at_k(recommended, relevant, k)
    r = recall_at_k(recommended, relevant, k)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def ndcg_at_k(recommended: Sequence[str], relevant: Collection[str], k: int) -> float:
    """nDCG@k with binary gains and natural-log discount.

    DCG = sum over hits at rank r <= k of 1 / ln(1 + r);
    IDCG = sum over r = 1 .. min(|relevant|, k) of 1 / ln(1 + r);
    nDCG = DCG / IDCG, 0 when nothing is relevant.
    """
    if not relevant:
        return 0.0
    dcg = sum(1.0 / math.log(1 + r) for r in hit_ranks(recommended, relevant, k))
    idcg = sum(1.0 / math.log(1 + r) for r in range(1, min(len(relevant), k) + 1))
    return dcg / idcg


def average_precision(recommended: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Average precision over the top k, divided by the number of relevant items.

    AP = (1 / |relevant|) * sum over the j-th hit, at rank r_j <= k, of j / r_j.
    This is the per-user term of Microsoft Recommenders' ``map`` (not
    ``map_at_k``, which divides by min(|relevant|, k)).
    """
    if not relevant:
        return 0.0
    ranks = hit_ranks(recommended, relevant, k)
    return sum(j / r for j, r in enumerate(ranks, start=1)) / len(relevant)


def hit_at_k(recommended: Sequence[str], relevant: Collection[str], k: int) -> float:
    """HR@k for one list: 1.0 when any relevant item is in the top k, else 0.0."""
    return 1.0 if hit_ranks(recommended, relevant, k) else 0.0


def reciprocal_rank(recommended: Sequence[str], relevant: Collection[str], k: int) -> float:
    """1 / rank of the first relevant item within the top k; 0 when there is none."""
    ranks = hit_ranks(recommended, relevant, k)
    return 1.0 / ranks[0] if ranks else 0.0


def intra_list_diversity(recommended: Sequence[str], category_of: Mapping[str, str], k: int) -> float | None:
    """Share of unordered item pairs in the top k whose top-level categories differ.

    ILD = |{(i, j), i < j : cat(i) != cat(j)}| / (n (n - 1) / 2), n = len(top k).
    Items missing from ``category_of`` are skipped; ``None`` when fewer than two
    items have a category (the share is undefined for such a list).
    """
    _check_k(k)
    categories = [category_of[item] for item in recommended[:k] if item in category_of]
    if len(categories) < 2:
        return None
    pairs = len(categories) * (len(categories) - 1) // 2
    different = sum(1 for a, b in combinations(categories, 2) if a != b)
    return different / pairs


def self_information(item: str, popularity: Mapping[str, int], n_users: int) -> float:
    """-log2(share of users who interacted with ``item``), in bits.

    An item nobody interacted with is treated as seen by one user (the
    rarest possible observation), i.e. log2(n_users) bits, so recommending a
    never-seen item is maximally novel instead of infinitely so.
    """
    if n_users <= 0:
        raise ValueError("n_users must be > 0")
    count = max(1, min(int(popularity.get(item, 0)), n_users))
    return -math.log2(count / n_users)


def novelty(recommended: Sequence[str], popularity: Mapping[str, int], n_users: int, k: int) -> float | None:
    """Mean self-information (bits) of the top-k items; ``None`` for an empty list."""
    _check_k(k)
    top = recommended[:k]
    if not top:
        return None
    return sum(self_information(item, popularity, n_users) for item in top) / len(top)


def catalog_coverage(recommendations: Iterable[Sequence[str]], catalog: Collection[str], k: int) -> float:
    """Share of the catalog that appears in at least one top-k list.

    coverage = |union of top-k lists ∩ catalog| / |catalog|; 0 for an empty catalog.
    """
    _check_k(k)
    if not catalog:
        return 0.0
    shown: set[str] = set()
    for items in recommendations:
        shown.update(items[:k])
    return len(shown & set(catalog)) / len(catalog)


PER_LIST = {
    "precision": precision_at_k,
    "recall": recall_at_k,
    "f1": f1_at_k,
    "ndcg": ndcg_at_k,
    "map": average_precision,
    "hr": hit_at_k,
    "mrr": reciprocal_rank,
}


def ranking_metrics(
    recommendations: Mapping[str, Sequence[str]],
    relevant: Mapping[str, Collection[str]],
    k: int,
) -> dict[str, float]:
    """Accuracy metrics averaged over the evaluated users.

    The evaluated users are those in ``relevant`` with at least one relevant
    item.  A user without a list (or with an empty one) counts with 0 on every
    metric; users with a list but no relevant item are ignored, as in
    Microsoft Recommenders, which only scores users present in the truth.
    Returns the mean of each per-list function (keys: :data:`ACCURACY_METRICS`)
    plus ``users`` (how many were averaged).
    """
    per_user = per_user_metrics(recommendations, relevant, k)
    n = len(per_user["hr"])
    out = {name: (sum(values.tolist()) / n if n else 0.0) for name, values in per_user.items()}
    out["users"] = float(n)
    return out


def per_user_metrics(
    recommendations: Mapping[str, Sequence[str]],
    relevant: Mapping[str, Collection[str]],
    k: int,
) -> dict[str, np.ndarray]:
    """Every accuracy metric per evaluated user (``relevant`` order), as :func:`ranking_metrics` averages them."""
    _check_k(k)
    users = [u for u, items in relevant.items() if items]
    out = {name: np.zeros(len(users)) for name in PER_LIST}
    for row, user in enumerate(users):
        truth = relevant[user]
        if not isinstance(truth, (set, frozenset)):
            truth = set(truth)
        recommended = recommendations.get(user, ())
        for name, metric in PER_LIST.items():
            out[name][row] = metric(recommended, truth, k)
    return out


def bootstrap_intervals(values: np.ndarray, level: float = 0.95, resamples: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap confidence intervals of the mean of each column of ``values`` (n x m).

    Each resample draws ``n`` rows with replacement (as multinomial counts,
    the same draws for every column, so the metrics of one table row vary
    together); returns ``(low, high)`` arrays of length m.  Seeded, so one
    evaluation always reports the same intervals.  With no rows both are NaN.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    n, m = values.shape
    if not 0 < level < 1:
        raise ValueError(f"level must be within (0, 1), got {level}")
    if n == 0:
        return np.full(m, np.nan), np.full(m, np.nan)
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples)
    means = counts @ values / n
    tail = (1.0 - level) / 2.0
    return np.quantile(means, tail, axis=0), np.quantile(means, 1.0 - tail, axis=0)


def beyond_accuracy_metrics(
    recommendations: Mapping[str, Sequence[str]],
    k: int,
    catalog: Collection[str],
    category_of: Mapping[str, str],
    popularity: Mapping[str, int],
    n_users: int,
) -> dict[str, float | None]:
    """Catalog coverage, mean intra-list diversity and mean novelty of the top-k lists.

    ``catalog`` is the set of recommendable items (coverage denominator),
    ``category_of`` maps items to top-level categories, ``popularity`` counts
    the distinct users per item in the reference data and ``n_users`` is the
    number of users there.  Diversity and novelty are means over the lists for
    which they are defined; ``None`` when no list qualifies.
    """
    lists = list(recommendations.values())
    diversities = [d for d in (intra_list_diversity(items, category_of, k) for items in lists) if d is not None]
    novelties = [v for v in (novelty(items, popularity, n_users, k) for items in lists) if v is not None] if n_users > 0 else []
    return {
        "coverage": catalog_coverage(lists, catalog, k),
        "diversity": sum(diversities) / len(diversities) if diversities else None,
        "novelty": sum(novelties) / len(novelties) if novelties else None,
    }


def percentiles(values: Sequence[float], qs: Sequence[float] = (50.0, 95.0, 99.0)) -> dict[str, float | None]:
    """Percentiles by linear interpolation between closest ranks (numpy's default method).

    Keys are ``p50`` style names; values ``None`` when there are no samples.
    """
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for q in qs:
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be within 0..100, got {q}")
        name = f"p{q:g}"
        if not ordered:
            out[name] = None
            continue
        position = (len(ordered) - 1) * q / 100.0
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        out[name] = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
    return out
