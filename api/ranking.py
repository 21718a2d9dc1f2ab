"""Request-time ranking: the small blends the API does over lists the job precomputed.

Nothing here recomputes the model.  Every function takes already-fetched
lists (:class:`state.store.ScoredItem`) and returns a new ranked list; they are
pure, so they are tested without Redis or HTTP.  Scores from different lists
are made comparable by dividing each list by its own maximum ("max-normalised",
range 0..1) before weighting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from state.store import ScoredItem
from transforms.catalog import CATEGORY_SEPARATOR

COLD_START_NOTE = "no history yet"


@dataclass(frozen=True)
class BlendWeights:
    """Weights of the request-time blends.

    ``cf`` and ``content`` weight collaborative and content neighbours (the
    app takes them from :class:`transforms.config.ModelConfig` so the API and
    the job agree).  ``taste`` is how much the user's interest can lift an
    item: a candidate in the user's strongest category has its score
    multiplied by ``1 + taste`` (context ``item``), and in context ``search``
    the user's interest adds up to ``taste`` to a candidate's position prior.
    """

    cf: float = 1.0
    content: float = 0.3
    taste: float = 1.0


def normalised(items: Iterable[ScoredItem]) -> dict[str, float]:
    """``score / max(score)`` per item (first occurrence wins); non-positive scores map to 0."""
    scores: dict[str, float] = {}
    for entry in items:
        if entry.item not in scores:
            scores[entry.item] = entry.score if math.isfinite(entry.score) else 0.0
    top = max((s for s in scores.values() if s > 0), default=0.0)
    if top <= 0:
        return {item: 0.0 for item in scores}
    return {item: max(score, 0.0) / top for item, score in scores.items()}


def normalised_map(scores: Mapping[str, float]) -> dict[str, float]:
    """Same as :func:`normalised` for a ``{key: score}`` mapping (e.g. category interests)."""
    return normalised(ScoredItem(key, float(value)) for key, value in scores.items() if isinstance(value, (int, float)))


def top_category(category: str) -> str:
    """``"fashion/shoes"`` -> ``"fashion"`` (the segment trending is keyed by)."""
    return category.split(CATEGORY_SEPARATOR, 1)[0]


def in_category(item_category: str, wanted: str) -> bool:
    """True when ``item_category`` is ``wanted`` or below it (``fashion/shoes`` is in ``fashion``)."""
    return item_category == wanted or item_category.startswith(wanted + CATEGORY_SEPARATOR)


def trending_reason(category: str | None, note: str = "") -> str:
    """``"trending now"`` / ``"trending in fashion"``, with an optional note in brackets."""
    text = f"trending in {category}" if category else "trending now"
    return f"{text} ({note})" if note else text


def take(items: Iterable[ScoredItem], n: int, skip: set[str] | frozenset[str] = frozenset()) -> list[ScoredItem]:
    """The first ``n`` items not in ``skip``, each item at most once, order kept."""
    out: list[ScoredItem] = []
    seen: set[str] = set(skip)
    for entry in items:
        if len(out) >= n:
            break
        if entry.item in seen:
            continue
        seen.add(entry.item)
        out.append(entry)
    return out


def with_reason(items: Iterable[ScoredItem], reason: str) -> list[ScoredItem]:
    return [ScoredItem(i.item, i.score, reason) for i in items]


def top_up(items: Sequence[ScoredItem], fallback: Iterable[ScoredItem], n: int, skip: set[str] | frozenset[str], reason: str) -> list[ScoredItem]:
    """``items`` followed by fallback entries (relabelled ``reason``) until there are ``n``.

    Used to fill a short personal list with trending items; a fallback item
    already in the list or in ``skip`` is not repeated.
    """
    out = list(items[:n])
    if len(out) >= n:
        return out
    used = set(skip) | {i.item for i in out}
    out.extend(with_reason(take(fallback, n - len(out), used), reason))
    return out


def blend_neighbours(anchor: str, cf: Sequence[ScoredItem], content: Sequence[ScoredItem], weights: BlendWeights, skip: set[str] | frozenset[str] = frozenset()) -> list[ScoredItem]:
    """Collaborative and content neighbours of ``anchor`` in one ranking.

    ``score(c) = cf * cf(c) / max cf + content * content(c) / max content``
    (a list missing ``c`` contributes 0).  Ties keep collaborative order first.
    The reason says which list(s) the item came from.  ``anchor`` and ``skip``
    are left out; the anchor is dropped before normalising (an item's similarity
    to itself says nothing about the scale of the others), ``skip`` after.
    """
    cf = [i for i in cf if i.item != anchor]
    content = [i for i in content if i.item != anchor]
    cf_norm = normalised(cf)
    content_norm = normalised(content)
    order = list(dict.fromkeys([i.item for i in cf] + [i.item for i in content]))
    out = []
    for item in order:
        if item == anchor or item in skip:
            continue
        in_cf, in_content = item in cf_norm, item in content_norm
        score = weights.cf * cf_norm.get(item, 0.0) + weights.content * content_norm.get(item, 0.0)
        if in_cf and in_content:
            reason = f"similar to and often together with {anchor}"
        elif in_cf:
            reason = f"often together with {anchor}"
        else:
            reason = f"similar to {anchor}"
        out.append(ScoredItem(item, score, reason))
    position = {item: k for k, item in enumerate(order)}
    out.sort(key=lambda i: (-i.score, position[i.item]))
    return out


def boost_by_taste(items: Sequence[ScoredItem], category_of: Mapping[str, str], interests: Mapping[str, float], weight: float) -> list[ScoredItem]:
    """Lift items in the categories the user likes.

    ``score'(c) = score(c) * (1 + weight * interest(top_category(c)) / max interest)``
    where ``interest`` is the profile's decayed interest per top category.
    An item whose category the user likes gets ``", matches your interest in <cat>"``
    appended to its reason.  Order: by new score, ties in input order.
    """
    taste = normalised_map(interests)
    out = []
    for k, entry in enumerate(items):
        top = top_category(category_of.get(entry.item, ""))
        lift = taste.get(top, 0.0) if top else 0.0
        reason = f"{entry.reason}, matches your interest in {top}" if lift > 0 else entry.reason
        out.append((-(entry.score * (1.0 + weight * lift)), k, ScoredItem(entry.item, entry.score * (1.0 + weight * lift), reason)))
    out.sort(key=lambda t: (t[0], t[1]))
    return [t[2] for t in out]


def cart_complements(cart: Sequence[str], neighbours: Mapping[str, Sequence[ScoredItem]], skip: set[str] | frozenset[str] = frozenset()) -> list[ScoredItem]:
    """Items that go with a cart, from each cart item's collaborative neighbours.

    ``score(c) = sum over cart items i of sim_i(c) / max sim_i`` (each
    neighbour list max-normalised, so one popular cart item cannot drown the
    others).  The reason names the cart item contributing most.  Cart items
    themselves and ``skip`` are left out.  Ties keep first-seen order.
    """
    in_cart = set(cart)
    total: dict[str, float] = {}
    best: dict[str, tuple[float, str]] = {}
    for cart_item in cart:
        for item, score in normalised(neighbours.get(cart_item, ())).items():
            if item in in_cart or item in skip:
                continue
            total[item] = total.get(item, 0.0) + score
            if item not in best or score > best[item][0]:
                best[item] = (score, cart_item)
    order = {item: k for k, item in enumerate(total)}
    ranked = sorted(total, key=lambda item: (-total[item], order[item]))
    return [ScoredItem(item, total[item], f"goes with {best[item][1]} in your cart") for item in ranked]


def search_prior(rank: int) -> float:
    """Weight of the search engine's own order: ``1 / log2(rank + 2)`` (rank 0 -> 1.0, rank 2 -> 0.5), as in DCG."""
    return 1.0 / math.log2(rank + 2)


def rerank_candidates(
    candidates: Sequence[str],
    weight: float,
    item_interest: Mapping[str, float],
    category_of: Mapping[str, str],
    category_interest: Mapping[str, float],
    personal_list: Sequence[ScoredItem],
    trending: Sequence[ScoredItem] = (),
    cold_start: bool = False,
) -> list[ScoredItem]:
    """Re-rank search results by the user's interests without discarding the search order.

    ``score(c) = search_prior(rank(c)) + weight * personal(c)`` with
    ``personal(c) = max(item interest, category interest, personal-list score)``,
    each max-normalised to 0..1 (the reason names the strongest signal).  For
    a cold-start user ``personal(c)`` is the item's normalised global trending
    score instead.  Ties keep the search order.
    """
    direct = normalised_map(item_interest)
    by_category = normalised_map(category_interest)
    listed = normalised(personal_list)
    popular = normalised(trending)
    out = []
    for rank, item in enumerate(dict.fromkeys(candidates)):
        top = top_category(category_of.get(item, ""))
        if cold_start:
            signals = [(popular.get(item, 0.0), trending_reason(None, COLD_START_NOTE))]
        else:
            signals = [
                (direct.get(item, 0.0), "you showed interest in this item"),
                (by_category.get(top, 0.0) if top else 0.0, f"matches your interest in {top}"),
                (listed.get(item, 0.0), "also in your recommendations"),
            ]
        strength, reason = max(signals, key=lambda s: s[0])
        if strength <= 0:
            reason = "search order"
        out.append((rank, ScoredItem(item, search_prior(rank) + weight * strength, reason)))
    out.sort(key=lambda t: (-t[1].score, t[0]))
    return [t[1] for t in out]
