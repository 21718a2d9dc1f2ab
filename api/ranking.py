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
from transforms.reasons import Reason, reason, with_note

# The note on trending served to a user with no history (a code of transforms.reasons.NOTES).
COLD_START_NOTE = "no_history"


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


def trending_reason(category: str | None, note: str = "", item: str = "") -> Reason:
    """``"trending now"`` / ``"trending in fashion"``, with an optional note (a code of
    :data:`transforms.reasons.NOTES`, ``item`` filling it), e.g. "trending now (no history yet)"."""
    if category:
        return reason("trending_in", item=item, category=category, note=note)
    return reason("trending_now", item=item, note=note)


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


def with_reason(items: Iterable[ScoredItem], why: Reason) -> list[ScoredItem]:
    return [ScoredItem(i.item, i.score, why) for i in items]


def top_up(items: Sequence[ScoredItem], fallback: Iterable[ScoredItem], n: int, skip: set[str] | frozenset[str], why: Reason) -> list[ScoredItem]:
    """``items`` followed by fallback entries (relabelled ``reason``) until there are ``n``.

    Used to fill a short personal list with trending items; a fallback item
    already in the list or in ``skip`` is not repeated.
    """
    out = list(items[:n])
    if len(out) >= n:
        return out
    used = set(skip) | {i.item for i in out}
    out.extend(with_reason(take(fallback, n - len(out), used), why))
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
            why = reason("similar_and_often_together_with", item=anchor)
        elif in_cf:
            why = reason("often_together_with", item=anchor)
        else:
            why = reason("similar_to", item=anchor)
        out.append(ScoredItem(item, score, why))
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
        why = with_note(entry.reason, "matches_interest_in", category=top) if lift > 0 and entry.reason else entry.reason
        out.append((-(entry.score * (1.0 + weight * lift)), k, ScoredItem(entry.item, entry.score * (1.0 + weight * lift), why)))
    out.sort(key=lambda t: (t[0], t[1]))
    return [t[2] for t in out]


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
                (direct.get(item, 0.0), reason("interest_in_item", item=item)),
                (by_category.get(top, 0.0) if top else 0.0, reason("matches_interest_in", category=top)),
                (listed.get(item, 0.0), reason("in_your_recommendations", item=item)),
            ]
        strength, why = max(signals, key=lambda s: s[0])
        if strength <= 0:
            why = reason("search_order")
        out.append((rank, ScoredItem(item, search_prior(rank) + weight * strength, why)))
    out.sort(key=lambda t: (-t[1].score, t[0]))
    return [t[1] for t in out]
