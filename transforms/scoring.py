"""The hybrid scorer: candidates, blend, filters, diversity and explanations for one user.

For user ``u`` at time ``T`` with decayed interests ``v_i`` (the
``interest_items`` strongest, see :func:`transforms.profile.top_interests`):

* collaborative  ``cf(j)  = sum_i v_i * sim(i, j)`` over the item neighbours of i
* content        ``ct(j)  = sum_i v_i * csim(i, j)`` over the content neighbours
* category       ``cat(j) = catint(c) * trend_c(j)`` for the user's top categories c
* popularity     ``pop(j) = trend(j)`` from global trending
* recent         ``rec(j) = v_j`` for the user's own interests (re-engagement)
* embedding      ``emb(j) = rel(u . c_j)`` with the learned user vector ``u``
  (the fold-in of the user's interests, or their weighted mean of query
  vectors, as the export says: :mod:`transforms.embedding`)
* sequence       ``seq(j) = rel(s . c_j)`` with the sequence model's vector
  ``s`` over the user's recent items in order (``UserProfile.history``)

each divided by its maximum over the candidates (so components are in [0, 1]),
then ``score = w_cf*cf + w_content*ct + w_category*cat + w_popularity*pop +
w_recent*rec + w_embedding*emb + w_sequence*seq``.  A user with no positive
interest gets trending (cold start).

Dot products are logits of a softmax over the catalog (the trainer's loss;
fold-in scores also regress towards 1 for the user's items), so only their
differences for one user mean anything: they may all be negative,
and adding a constant changes nothing.  ``rel`` therefore measures each item
against the user's *average catalog item* and scales by the best one,
``rel(x_j) = max(0, (x_j - mean_i x_i) / (max_i x_i - mean_i x_i))`` over the
whole catalog: invariant to shift and scale like the softmax, in [0, 1] like
the other components, 1 for the user's best item, 0 for any item no better
than average; and independent of which other candidates happen to be in the
pool (as the exclusions do not change the other components' normalisation).
The scores come from an exact scan of the catalog (float32 matrix-vector
product; see :meth:`EmbeddingModel.scan`), whose ``embedding_candidates`` best
unexcluded items join the candidate pool, as do the export's neighbours of the
user's strongest items; every candidate of every component gets its
embedding score.  (Business filters - stock, categories - act after the
blend, as for every component.)  Why a full scan rather than neighbours only:
it costs 0.01 ms per user on 1.7k items, 0.05 ms on 5k and 0.6 ms on 50k
(``python -m bench.scoring_cost``), well under the rest of the scorer, and it
is exact, so the embedding can surface items no neighbour list holds (new
items placed by their side features).  Past about a million items the scan
(~10 ms) should give way to the export's ANN index.
Purchased items (outside repeat-purchase categories), items with negative
interest, out-of-stock items and denied categories are removed; an optional
per-category cap adds diversity.  Each item's explanation names the component
that contributed most: "because you viewed X", "similar to X",
"trending in C", "popular now", "you viewed this recently", and for the
embedding components "similar to X" (X: the strongest interest whose query
vector adds most to ``u . c_j``) or "picked for you" (each a
:class:`transforms.reasons.Reason`: a code, the item or category, the text).
The cart list is :func:`transforms.complements.cart_complements`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, NamedTuple

import numpy as np

from transforms.complements import cart_complements, goes_with
from transforms.config import ModelConfig
from transforms.embedding import EmbeddingModel
from transforms.events import EVENT_TYPES
from transforms.profile import UserProfile, top_interests
from transforms.reasons import UNSTRUCTURED, Reason, because_you, reason, you_did_recently
from transforms.similarity import top_k

Neighbours = tuple[np.ndarray, np.ndarray]  # (item ids, similarities), best first

# The reason of an embedding pick that no single interest explains (and of every sequence pick).
PICKED_FOR_YOU = reason("picked_for_you")


class ScoredItem(NamedTuple):
    """One entry of a ranked list: item, score, and why it is there (see :mod:`transforms.reasons`)."""

    item: str
    score: float
    reason: Reason | None = None

    def to_dict(self) -> dict:
        """``{"item", "score", "reason": English text, "why": {"code", "item"?, "category"?, "note"?}}``."""
        out: dict = {"item": self.item, "score": self.score}
        if self.reason:
            out["reason"] = self.reason.text
            if self.reason.code != UNSTRUCTURED:
                out["why"] = self.reason.fields()
        return out


@dataclass
class ScoringModel:
    """Everything the scorer reads besides the user: a view over the current item-side state.

    ``facts`` maps item -> (top category, in stock) from the catalog;
    ``embeddings`` is the current learned-embedding version (None: no
    embedding components, whatever their weights).
    """

    neighbours: Mapping[str, Neighbours] = field(default_factory=dict)
    content: Mapping[str, Neighbours] = field(default_factory=dict)
    trending_global: Neighbours = field(default_factory=lambda: (np.empty(0, dtype=object), np.empty(0)))
    trending_by_category: Mapping[str, Neighbours] = field(default_factory=dict)
    facts: Mapping[str, tuple[str, bool]] = field(default_factory=dict)
    embeddings: EmbeddingModel | None = None

    def top_category(self, item: str) -> str:
        fact = self.facts.get(item)
        return fact[0] if fact else ""


@dataclass(frozen=True)
class UserLists:
    """The scorer's output for one user."""

    home: list[ScoredItem]
    cart: list[ScoredItem]
    interests: list[tuple[str, float]]
    categories: dict[str, float]
    in_cart: list[str] = field(default_factory=list)
    purchased: list[str] = field(default_factory=list)


def _accumulate(sources: list[tuple[str, float]], table: Mapping[str, Neighbours], scores: dict, best: dict) -> None:
    """``scores[j] += v_i * s_ij`` over the neighbours of each source item; ``best[j]`` = strongest source."""
    for source, weight in sources:
        entry = table.get(source)
        if entry is None or weight <= 0:
            continue
        ids, sims = entry
        for j, s in zip(ids.tolist(), sims.tolist()):
            contribution = weight * s
            scores[j] = scores.get(j, 0.0) + contribution
            if contribution > best.get(j, (0.0, ""))[0]:
                best[j] = (contribution, source)


def _normalised(scores: dict[str, float]) -> dict[str, float]:
    top = max(scores.values(), default=0.0)
    if top <= 0:
        return {}
    return {k: v / top for k, v in scores.items() if v > 0}


def _trend_scores(entry: Neighbours | None, scale: float = 1.0) -> dict[str, float]:
    if entry is None or len(entry[0]) == 0:
        return {}
    ids, values = entry
    top = float(values[0]) if len(values) else 0.0
    if top <= 0:
        return {}
    return {i: scale * v / top for i, v in zip(ids.tolist(), values.tolist()) if v > 0}


def relative_scores(scores: np.ndarray) -> np.ndarray:
    """``max(0, (x - mean x) / (max x - mean x))``: logits against the average item, best = 1.

    All zeros when every score is equal (nothing stands out).  See the module
    docstring for why the catalog mean is the reference.
    """
    if len(scores) == 0:
        return scores
    mean = float(scores.mean())
    spread = float(scores.max()) - mean
    if not spread > 0:
        return np.zeros_like(scores)
    return np.maximum((scores - mean) / spread, 0.0)


def _attribution(embeddings: EmbeddingModel, strongest: list[tuple[str, float]], items: list[str]) -> list[Reason]:
    """Per item, "similar to i" for the strongest interest ``i`` with the largest positive
    ``v_i * q_i . c_j``; "picked for you" when no term is positive.

    Under the mean rule that is the user vector's biggest term; under fold_in
    (query = candidate vectors) it is the interest-weighted similarity of the
    two items, which names the item that best explains ``j`` without a solve per item.
    """
    sources = [(i, v) for i, v in strongest if i in embeddings.rows]
    if not sources or not items:
        return [PICKED_FOR_YOU] * len(items)
    export = embeddings.export
    query = export.query[[embeddings.rows[i] for i, _ in sources]].astype(np.float64)
    candidate = export.candidate[[embeddings.rows[j] for j in items]].astype(np.float64)
    terms = np.array([v for _, v in sources])[:, None] * (query @ candidate.T)
    best = terms.argmax(axis=0)  # the first (strongest) source on ties
    positive = terms[best, np.arange(len(items))] > 0
    labels = [reason("similar_to", item=i) for i, _ in sources]
    return [labels[b] if p else PICKED_FOR_YOU for b, p in zip(best.tolist(), positive.tolist())]


def _embedding_components(
    profile: UserProfile,
    interests: list[tuple[str, float]],
    strongest: list[tuple[str, float]],
    pool: set[str],
    banned: set[str],
    embeddings: EmbeddingModel,
    config: ModelConfig,
) -> list[tuple[float, dict[str, float], dict[str, str]]]:
    """The embedding and sequence components (those with a positive weight and a vector).

    Candidates: ``pool`` (the other components' items), each component's
    ``embedding_candidates`` best unexcluded items, and the export's
    neighbours of the strongest interests; each component scores them all.
    """
    scans: list[tuple[float, np.ndarray, bool]] = []  # (weight, relative scores, attribute to sources)
    if config.weight_embedding > 0:
        vector = embeddings.user_vector(interests)
        if vector is not None:
            scans.append((config.weight_embedding, embeddings.scan(vector), True))
    if config.weight_sequence > 0:
        vector = embeddings.sequence_vector([item for item, _, _ in profile.history])
        if vector is not None:
            scans.append((config.weight_sequence, embeddings.scan(vector), False))
    if not scans:
        return []
    candidates = set(pool)
    for _, scores, _ in scans:
        candidates.update(embeddings.best(scores, config.embedding_candidates, banned)[0].tolist())
    for item, _ in strongest:
        entry = embeddings.neighbours(item)
        if entry is not None:
            candidates.update(entry[0].tolist())
    # (The order of ``known`` reaches no output: the blend adds per item, ranks by score and id.)
    known = np.array([j for j in candidates if j in embeddings.rows], dtype=object)
    rows = np.fromiter((embeddings.rows[j] for j in known.tolist()), dtype=np.intp, count=len(known))
    out = []
    for weight, scores, attribute in scans:
        relative = relative_scores(scores)[rows]
        keep = relative > 0
        items = known[keep].tolist()
        component = dict(zip(items, relative[keep].tolist()))
        reasons = _attribution(embeddings, strongest, items) if attribute else [PICKED_FOR_YOU] * len(items)
        out.append((weight, component, dict(zip(items, reasons))))
    return out


def category_interests(interests: list[tuple[str, float]], model: ScoringModel) -> dict[str, float]:
    """Decayed interest per top category: the sum of the user's item interests in it."""
    out: dict[str, float] = {}
    for item, value in interests:
        category = model.top_category(item)
        if category:
            out[category] = out.get(category, 0.0) + value
    return out


def _allowed(item: str, model: ScoringModel, config: ModelConfig) -> bool:
    fact = model.facts.get(item)
    category = fact[0] if fact else ""
    if config.exclude_out_of_stock and fact is not None and not fact[1]:
        return False
    if config.allow_categories and category not in config.allow_categories:
        return False
    return category not in config.deny_categories


def _rank(blend: dict[str, float], reasons: dict[str, Reason], model: ScoringModel, config: ModelConfig, n: int) -> list[ScoredItem]:
    """Top ``n`` of the blended scores (argpartition cut, id tie-break), with the per-category cap."""
    if not blend:
        return []
    ids = np.array(list(blend.keys()), dtype=object)
    scores = np.fromiter(blend.values(), dtype=np.float64, count=len(ids))
    cap = config.max_per_category
    want = n if cap <= 0 else n * 4
    while True:
        idx = top_k(scores, ids, want)
        out: list[ScoredItem] = []
        per_category: dict[str, int] = {}
        for i in idx.tolist():
            item = ids[i]
            if cap > 0:
                category = model.top_category(item)
                if per_category.get(category, 0) >= cap:
                    continue
                per_category[category] = per_category.get(category, 0) + 1
            out.append(ScoredItem(item, float(scores[i]), reasons[item]))
            if len(out) == n:
                return out
        if want >= len(ids):
            return out
        want *= 4


def score_user(
    profile: UserProfile | None,
    now_ms: int,
    model: ScoringModel,
    config: ModelConfig,
    exclude: set[str] | frozenset[str] = frozenset(),
    n: int | None = None,
) -> UserLists:
    """Home list, cart-complement list and profile summary for one user at ``now_ms``.

    ``exclude`` removes further items (the evaluation passes the training items).
    """
    n = n or config.top_n
    interests = top_interests(profile, now_ms, config, limit=config.max_user_items) if profile else []
    strongest = interests[: config.interest_items]
    categories = category_interests(interests, model)

    banned = set(exclude)
    if profile is not None:
        repeat = set(config.repeat_purchase_categories)
        if config.exclude_purchased:
            banned.update(i for i in profile.purchased if model.top_category(i) not in repeat)
        banned.update(i for i, v in profile.interests.items() if v < 0)
        if config.exclude_seen:
            banned.update(profile.interests)

    components: list[tuple[float, dict[str, float], dict[str, str]]] = []
    if strongest:
        cf, cf_best = {}, {}
        _accumulate(strongest, model.neighbours, cf, cf_best)
        actions = {i: EVENT_TYPES[profile.last_action.get(i, 0)] for i, _ in strongest}
        components.append((config.weight_cf, _normalised(cf), {j: because_you(actions[src], src) for j, (_, src) in cf_best.items()}))
        ct, ct_best = {}, {}
        _accumulate(strongest, model.content, ct, ct_best)
        components.append((config.weight_content, _normalised(ct), {j: reason("similar_to", item=src) for j, (_, src) in ct_best.items()}))
        recent = _normalised(dict(strongest))
        components.append((config.weight_recent, recent, {j: you_did_recently(actions[j], j) for j in recent}))
    if categories:
        top_cat = max(categories.values())
        cat_scores: dict[str, float] = {}
        cat_reason: dict[str, Reason] = {}
        for category, value in sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))[:3]:
            for j, s in _trend_scores(model.trending_by_category.get(category), value / top_cat).items():
                if s > cat_scores.get(j, 0.0):
                    cat_scores[j] = s
                    cat_reason[j] = reason("trending_in", category=category)
        components.append((config.weight_category, cat_scores, cat_reason))
    cold_start = not strongest
    pop = _trend_scores(model.trending_global)
    pop_weight = config.weight_popularity if not cold_start else 1.0
    components.append((pop_weight, pop, {j: reason("trending_now" if cold_start else "popular_now") for j in pop}))
    if strongest and model.embeddings is not None and (config.weight_embedding > 0 or config.weight_sequence > 0):
        pool = {j for weight, scores, _ in components if weight > 0 for j in scores}
        components += _embedding_components(profile, interests, strongest, pool, banned, model.embeddings, config)

    blend: dict[str, float] = {}
    reasons: dict[str, Reason] = {}
    best_part: dict[str, float] = {}
    for weight, scores, why in components:
        if weight <= 0:
            continue
        for j, s in scores.items():
            if j in banned:
                continue
            part = weight * s
            blend[j] = blend.get(j, 0.0) + part
            if part > best_part.get(j, 0.0):
                best_part[j] = part
                reasons[j] = why[j]
    blend = {j: s for j, s in blend.items() if _allowed(j, model, config)}
    home = _rank(blend, reasons, model, config, n)

    cart: list[ScoredItem] = []
    if profile is not None and profile.cart:
        comp, comp_source = cart_complements(list(profile.cart), model.neighbours, model.content, config.weight_cf, config.weight_content)
        comp = {j: s for j, s in comp.items() if j not in banned and _allowed(j, model, config)}
        cart = _rank(comp, {j: goes_with(src) for j, src in comp_source.items()}, model, config, n)
    return UserLists(
        home=home,
        cart=cart,
        interests=interests[: config.interest_items],
        categories=categories,
        in_cart=list(profile.cart) if profile else [],
        purchased=list(profile.purchased) if profile else [],
    )
