"""The hybrid scorer: candidates, blend, filters, diversity and explanations, for a batch of users.

:func:`score_users` scores a window's users together (:func:`score_user` is
the batch of one): each component is built for the whole batch as long-form
arrays of (user row, item code, value, explanation) with a few numpy passes,
blended with one grouped sum, and cut per row by a row-wise partition before
the exact (score, item id) sort.  A user's lists never depend on the other
users of the batch, so however the job shards users it computes what the
reference engine computes.

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
The cart list is :func:`transforms.complements.cart_complements`, ranked like the home list.

When the catalog has sponsored items (``ScoringModel.sponsored``), each user's
blended scores of them, over the user's best score, are their relevance
(:func:`sponsored_relevance`, read from the blend before the top-N cut, after
the exclusions and business filters), and :func:`transforms.ads.rank_ads`
turns those into the user's ads list (``UserLists.ads``).  Without sponsored
items none of this runs.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from transforms.ads import AdPick, rank_ads
from transforms.blend import PARTS
from transforms.complements import goes_with
from transforms.config import ModelConfig
from transforms.cooccurrence import Vocabulary, group_starts, rank_within, row_thresholds, run_positions
from transforms.embedding import EmbeddingModel
from transforms.events import EVENT_TYPES
from transforms.profile import UserProfile, top_interests
from transforms.reasons import Reason, because_you, reason, written_fields, you_did_recently
from transforms.recid import NO_EXPERIMENT

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
        if self.reason:
            return {"item": self.item, "score": self.score, **written_fields(self.reason)}
        return {"item": self.item, "score": self.score}


@dataclass
class ScoringModel:
    """Everything the scorer reads besides the user: a view over the current item-side state.

    ``facts`` maps item -> (top category, in stock) from the catalog;
    ``embeddings`` is the current learned-embedding version (None: no
    embedding components, whatever their weights); ``sponsored`` maps each
    sponsored item to its bid (empty: no ads lists are computed).
    """

    neighbours: Mapping[str, Neighbours] = field(default_factory=dict)
    content: Mapping[str, Neighbours] = field(default_factory=dict)
    trending_global: Neighbours = field(default_factory=lambda: (np.empty(0, dtype=object), np.empty(0)))
    trending_by_category: Mapping[str, Neighbours] = field(default_factory=dict)
    facts: Mapping[str, tuple[str, bool]] = field(default_factory=dict)
    embeddings: EmbeddingModel | None = None
    sponsored: Mapping[str, float] = field(default_factory=dict)
    # Dense item codes for the batched scorer: a cache, shared by the models of one scorer.
    codes: "ItemCodes" = field(default_factory=lambda: ItemCodes())
    # Neighbour lists by the measures of ModelConfig.variant_similarities (measure -> item -> list),
    # for experiments' variants (see with_similarity).
    variant_neighbours: Mapping[str, Mapping[str, Neighbours]] = field(default_factory=dict)
    # The business filters' results by filter setting, per item code of ``codes``, kept by the caller
    # while ``facts`` stay the same (see AllowedMemo); None: every batch checks its items afresh.
    allowed_memo: dict | None = None

    def top_category(self, item: str) -> str:
        fact = self.facts.get(item)
        return fact[0] if fact else ""

    def with_similarity(self, measure: str, main_measure: str) -> "ScoringModel":
        """This model as seen by a variant whose item neighbours come from ``measure``.

        ``main_measure`` (the job's ``similarity``) gives this model itself.  An
        item with no list of ``measure`` yet (the item model computes them as
        rows change, see ``ModelConfig.variant_similarities``) keeps its main list.
        """
        if measure == main_measure:
            return self
        return dataclasses.replace(self, neighbours=FallbackNeighbours(self.variant_neighbours.get(measure, {}), self.neighbours))


class FallbackNeighbours:
    """Neighbour lists looked up in ``lists``, else in ``fallback`` (``.get`` only, as the scorer reads them)."""

    def __init__(self, lists: Mapping[str, Neighbours], fallback: Mapping[str, Neighbours]) -> None:
        self.lists = lists
        self.fallback = fallback

    def get(self, item: str, default: Neighbours | None = None) -> Neighbours | None:
        found = self.lists.get(item)
        return found if found is not None else self.fallback.get(item, default)


@dataclass(frozen=True)
class UserLists:
    """The scorer's output for one user."""

    home: list[ScoredItem]
    cart: list[ScoredItem]
    interests: list[tuple[str, float]]
    categories: dict[str, float]
    in_cart: list[str] = field(default_factory=list)
    purchased: list[str] = field(default_factory=list)
    # (experiment, variant) whose configuration computed the home and the cart list
    # (see transforms.experiments.score_by_variant); NO_EXPERIMENT for neither.
    home_from: tuple[str, str] = (NO_EXPERIMENT, NO_EXPERIMENT)
    cart_from: tuple[str, str] = (NO_EXPERIMENT, NO_EXPERIMENT)
    # The ad slot (None: the shop has no sponsored items): the user's ads, best first, and the
    # relevance of every sponsored item the user could be shown (before the floor).
    ads: list[AdPick] | None = None
    sponsored_relevance: dict[str, float] = field(default_factory=dict)


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
    keep, query = embeddings.query_vectors([i for i, _ in strongest])
    sources = [strongest[k] for k in keep]
    if not sources or not items:
        return [PICKED_FOR_YOU] * len(items)
    candidate = embeddings.candidate_vectors(items)
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


def item_allowed(item: str, model: ScoringModel, config: ModelConfig) -> bool:
    """Whether the business filters (stock, allowed and denied categories) let ``item`` into a list."""
    return _allowed(item, model, config)


def _allowed(item: str, model: ScoringModel, config: ModelConfig) -> bool:
    fact = model.facts.get(item)
    category = fact[0] if fact else ""
    if config.exclude_out_of_stock and fact is not None and not fact[1]:
        return False
    if config.allow_categories and category not in config.allow_categories:
        return False
    return category not in config.deny_categories


# -- the batched scorer ------------------------------------------------------------------------
#
# A window's users are scored together: every component is a table in "long" form, one entry
# per (user row, candidate item code) with a value and the entry's explanation (a kind and a
# source), built with a handful of numpy operations over the whole batch instead of dict loops
# per user.  Every per-user result is independent of which other users share the batch (each
# sum runs over that user's own entries in a fixed order; ties break by item id, never by code),
# so a sharded job computes exactly what the reference engine computes.

# Explanation kinds of long-form entries; an entry's ``source`` is an item code (cf, content,
# recent), a category index (category) or an index into the batch's text table (embeddings).
_CF, _CONTENT, _RECENT, _CATEGORY, _POPULAR, _TEXT, _CART = range(7)


# Trending lists whose codes ItemCodes keeps (the global list and one per category, a version
# each; more only hold replaced versions alive).
MAX_CACHED_LISTS = 8192


class ItemCodes:
    """Dense integer codes for item ids, kept across batches by whoever scores.

    A cache only: codes never reach an output.  Neighbour lists are encoded once per list
    object (lists are immutable values, replaced when the model refreshes).
    """

    def __init__(self) -> None:
        self.vocab = Vocabulary()
        self._lists: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._pools: dict[int, _ListPool] = {}  # by entry kind (_CF, _CONTENT)
        # Reasons by what determines them (kind, source code, action...): immutable values, so the
        # entries of every list may share them instead of rendering the same text again.
        self._reasons: dict[tuple, Reason] = {}

    def of_list(self, ids: np.ndarray) -> np.ndarray:
        """Codes of a trending list's ids (cached per list object: a window reads the same few lists for every user)."""
        hit = self._lists.get(id(ids))
        if hit is not None and hit[0] is ids:
            return hit[1]
        codes = self.vocab.encode(ids.tolist())
        if len(self._lists) >= MAX_CACHED_LISTS:
            self._lists.clear()  # replaced lists would otherwise stay alive here
        self._lists[id(ids)] = (ids, codes)
        return codes

    def lists(self, table: Mapping[str, Neighbours], kind: int, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The lists ``table`` holds for the item codes ``items``, as (pool codes, pool values, start, length) per item.

        Each list is encoded once into a pool kept per ``kind`` and re-read only
        when the table holds another list object for the item (a refresh).
        """
        pool = self._pools.get(kind)
        if pool is None:
            pool = self._pools[kind] = _ListPool()
        return pool.lists(table, items, self)

    def of(self, items: Sequence[str]) -> np.ndarray:
        try:  # every item already coded (the usual case): one C-level pass
            return np.fromiter(map(self.vocab.code.__getitem__, items), dtype=np.int64, count=len(items))
        except KeyError:
            return self.vocab.encode(items)

    def reason(self, key: tuple, build, *args) -> Reason:
        """The reason ``build(*args)``, built once per ``key`` (which must determine it)."""
        found = self._reasons.get(key)
        if found is None:
            if len(self._reasons) > 8 * len(self.vocab) + 4096:
                self._reasons.clear()  # bounded: keys of items no list names any more would pile up
            found = self._reasons[key] = build(*args)
        return found

    def known(self, items: Iterable[str]) -> list[int]:
        """Codes of the items that have one (an item without a code is in no list)."""
        code = self.vocab.code
        return [c for c in (code.get(i) for i in items) if c is not None]


class _ListPool:
    """Neighbour lists of one kind, encoded (item codes, float64 values) into one growing pool.

    ``held[c]`` is the list object last read for item code ``c``; while the
    table still holds that very object the pooled copy is current (held, it
    cannot be freed and its id reused).  Replaced lists leave dead entries,
    dropped by a compaction when they outnumber the live ones.
    """

    def __init__(self) -> None:
        self.held: list[object] = []
        self.start = np.zeros(0, dtype=np.int64)
        self.length = np.zeros(0, dtype=np.int64)
        self.codes = np.zeros(1024, dtype=np.int64)
        self.values = np.zeros(1024, dtype=np.float64)
        self.used = 0
        self.live = 0

    def lists(self, table: Mapping[str, Neighbours], items: np.ndarray, codes: "ItemCodes") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        width = len(codes.vocab)
        if len(self.held) < width:
            grow = width - len(self.held)
            self.held.extend([None] * grow)
            self.start = np.concatenate([self.start, np.zeros(grow, dtype=np.int64)])
            self.length = np.concatenate([self.length, np.zeros(grow, dtype=np.int64)])
        ids = codes.vocab.array()
        held = self.held
        get = table.get
        changed = [(c, entry) for c, entry in zip(items.tolist(), map(get, ids[items].tolist())) if entry is not held[c]]
        for c, entry in changed:
            self._put(c, entry, codes)
        if self.used > 2 * self.live + 4096:
            self._compact()
        return self.codes, self.values, self.start[items], self.length[items]

    def _put(self, code: int, entry: Neighbours | None, codes: "ItemCodes") -> None:
        self.held[code] = entry
        self.live -= int(self.length[code])
        n = 0 if entry is None else len(entry[0])
        if n == 0:
            self.length[code] = 0
            return
        self._reserve(n)
        at = self.used
        # Encoded here, not through of_list's cache: the pool is this list's cache, and of_list would
        # keep every list ever pooled alive (up to four times the vocabulary of them, most replaced).
        self.codes[at : at + n] = codes.vocab.encode(entry[0].tolist())
        self.values[at : at + n] = entry[1]
        self.start[code], self.length[code] = at, n
        self.used += n
        self.live += n

    def _reserve(self, n: int) -> None:
        if self.used + n > len(self.codes):
            size = max(2 * len(self.codes), self.used + n)
            self.codes = np.concatenate([self.codes[: self.used], np.zeros(size - self.used, dtype=np.int64)])
            self.values = np.concatenate([self.values[: self.used], np.zeros(size - self.used, dtype=np.float64)])

    def _compact(self) -> None:
        """Copy the live lists to a fresh pool (their order kept)."""
        alive = np.flatnonzero(self.length > 0)
        lengths = self.length[alive]
        order = np.argsort(self.start[alive], kind="stable")
        alive, lengths = alive[order], lengths[order]
        new_start = np.cumsum(lengths) - lengths
        source = np.repeat(self.start[alive] - new_start, lengths) + np.arange(int(lengths.sum()))
        self.codes = np.concatenate([self.codes[source], np.zeros(1024, dtype=np.int64)])
        self.values = np.concatenate([self.values[source], np.zeros(1024, dtype=np.float64)])
        self.start[alive] = new_start
        self.used = self.live = int(lengths.sum())


@dataclass
class _Long:
    """A component (or the blend) in long form; ``row`` ascending."""

    row: np.ndarray
    code: np.ndarray
    value: np.ndarray
    kind: np.ndarray
    source: np.ndarray

    @staticmethod
    def empty() -> "_Long":
        return _Long(*(np.empty(0, dtype=t) for t in (np.intp, np.int64, np.float64, np.int8, np.int64)))

    def take(self, index: np.ndarray) -> "_Long":
        return _Long(self.row[index], self.code[index], self.value[index], self.kind[index], self.source[index])

    @staticmethod
    def concat(parts: Sequence["_Long"]) -> "_Long":
        if not parts:
            return _Long.empty()
        return _Long(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("row", "code", "value", "kind", "source")))


def _expand(pair_list: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For pairs pointing at list ``pair_list[p]``: (pair of each entry, index into the concatenated lists)."""
    counts = lengths[pair_list]
    pair = np.repeat(np.arange(len(pair_list)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    return pair, starts[pair_list][pair] + (np.arange(len(pair)) - first)


def _grouped(long: _Long, width: int, reduce: str) -> _Long:
    """One entry per (row, code): values summed (``"sum"``) or maxed (``"max"``) in entry order.

    The explanation is the first entry with the group's largest value (strictly positive; the
    others come from a later, larger one), as a dict update with ``>`` would choose.  Entries
    must be in the order the sums should run (per row: component order, then source rank).
    (A dense (row, code) scratch with ``np.bincount`` instead of the sort was measured: faster
    only below about 10k entries, 6x slower at the bench shop's 500-user batches.)
    """
    if len(long.row) == 0:
        return long
    key = long.row.astype(np.int64) * width + long.code
    order = np.argsort(key, kind="stable")
    key = key[order]
    value = long.value[order]
    bounds = group_starts(key)
    starts = bounds[:-1]
    best = np.maximum.reduceat(value, starts)
    total = np.add.reduceat(value, starts) if reduce == "sum" else best
    group = np.repeat(np.arange(len(starts)), np.diff(bounds))
    position = np.where(value == best[group], np.arange(len(key)), len(key))
    first = order[np.minimum.reduceat(position, starts)]
    return _Long(long.row[first], long.code[first], total, long.kind[first], long.source[first])


def _row_normalised(long: _Long) -> _Long:
    """Each row's values divided by the row's maximum; only positive values stay (``row`` sorted)."""
    if len(long.row) == 0:
        return long
    bounds = group_starts(long.row)
    top = np.repeat(np.maximum.reduceat(long.value, bounds[:-1]), np.diff(bounds))
    keep = (top > 0) & (long.value > 0)
    out = long.take(keep)
    out.value = out.value / top[keep]
    return out


def _neighbour_entries(
    pair_row: np.ndarray, pair_item: np.ndarray, pair_weight: np.ndarray, table: Mapping[str, Neighbours], kind: int, codes: ItemCodes
) -> _Long:
    """``v_i * sim(i, j)`` for every neighbour ``j`` of every source pair ``(row, i, v_i)``, in pair order."""
    if len(pair_row) == 0:
        return _Long.empty()
    sources, pair_source = np.unique(pair_item, return_inverse=True)
    neighbour_codes, sims, starts, lengths = codes.lists(table, kind, sources)
    pair, index = _expand(pair_source, starts, lengths)
    return _Long(pair_row[pair], neighbour_codes[index], pair_weight[pair] * sims[index], np.full(len(pair), kind, dtype=np.int8), pair_item[pair])


def _neighbour_component(
    pair_row: np.ndarray, pair_item: np.ndarray, pair_weight: np.ndarray, table: Mapping[str, Neighbours], kind: int, codes: ItemCodes
) -> _Long:
    """``sum_i v_i * sim(i, j)`` per row over the neighbour lists of the rows' source items, normalised per row.

    Pairs come per row in source-rank order, which is the order each sum runs in.
    """
    entries = _neighbour_entries(pair_row, pair_item, pair_weight, table, kind, codes)
    return _row_normalised(_grouped(entries, len(codes.vocab), "sum"))


def _trend_list(entry: Neighbours | None, codes: ItemCodes) -> tuple[np.ndarray, np.ndarray]:
    """A trending list as (codes, value / top value), positive values only."""
    if entry is None or len(entry[0]) == 0 or not float(entry[1][0]) > 0:
        return np.empty(0, dtype=np.int64), np.empty(0)
    ids, values = entry
    values = np.asarray(values, dtype=np.float64)
    keep = values > 0
    return codes.of_list(ids)[keep], values[keep] / float(values[0])


@dataclass
class _Prepared:
    """One user's inputs to the batch, read from the profile once."""

    profile: UserProfile | None
    interests: list[tuple[str, float]]
    strongest: list[tuple[str, float]]
    categories: dict[str, float]
    banned: set[str]


def _prepare(profile: UserProfile | None, now_ms: int, model: ScoringModel, config: ModelConfig, exclude: Iterable[str]) -> _Prepared:
    interests = top_interests(profile, now_ms, config, limit=config.max_user_items) if profile else []
    banned = set(exclude)
    if profile is not None:
        repeat = set(config.repeat_purchase_categories)
        if config.exclude_purchased:
            banned.update(i for i in profile.purchased if model.top_category(i) not in repeat)
        banned.update(i for i, v in profile.interests.items() if v < 0)
        if config.exclude_seen:
            banned.update(profile.interests)
    return _Prepared(profile, interests, interests[: config.interest_items], category_interests(interests, model), banned)


def score_users(
    profiles: Sequence[UserProfile | None],
    now_ms: int,
    model: ScoringModel,
    config: ModelConfig,
    excludes: Sequence[Iterable[str]] | None = None,
    n: int | None = None,
    part_entries: list["PartEntries"] | None = None,
    cart_config: ModelConfig | None = None,
) -> list[UserLists]:
    """Home list, cart-complement list and profile summary for each user at ``now_ms``, in one batch.

    ``excludes[u]`` removes further items for user ``u`` (the evaluation passes
    the training items).  Each result equals what the batch of that user alone gives.
    ``part_entries`` (a list) receives the home blend's entries before the sum
    (:class:`PartEntries`, for learning the blend weights: :mod:`transforms.blend`);
    ``cart_config`` scores the cart list with other weights than ``config``.
    """
    n = n or config.top_n
    codes = model.codes
    allowed = _Allowed(model, codes)
    users = [_prepare(p, now_ms, model, config, excludes[u] if excludes is not None else ()) for u, p in enumerate(profiles)]

    # Source pairs (row, interest item, interest), per row in rank order.
    pair_row, pair_names, pair_weight = [], [], []
    for row, user in enumerate(users):
        for item, value in user.strongest:
            pair_row.append(row)
            pair_names.append(item)
            pair_weight.append(value)
    pair_row_a = np.asarray(pair_row, dtype=np.intp)
    pair_item = codes.of(pair_names)
    pair_weight_a = np.asarray(pair_weight, dtype=np.float64)
    parts: list[tuple[float | np.ndarray, _Long]] = []  # (weight per entry, normalised component)
    if config.weight_cf > 0:
        parts.append((config.weight_cf, _neighbour_component(pair_row_a, pair_item, pair_weight_a, model.neighbours, _CF, codes)))
    if config.weight_content > 0:
        parts.append((config.weight_content, _neighbour_component(pair_row_a, pair_item, pair_weight_a, model.content, _CONTENT, codes)))
    if config.weight_recent > 0 and len(pair_row_a):
        recent = _Long(pair_row_a, pair_item, pair_weight_a, np.full(len(pair_row_a), _RECENT, dtype=np.int8), pair_item)
        parts.append((config.weight_recent, _row_normalised(recent)))

    # Category: the trending lists of each row's top 3 categories, scaled by the category's share.
    category_names: list[str] = []
    category_index: dict[str, int] = {}
    if config.weight_category > 0:
        cat_row, cat_list, cat_scale = [], [], []
        for row, user in enumerate(users):
            if not user.categories:
                continue
            top_cat = max(user.categories.values())
            if not top_cat > 0:
                continue
            for category, value in sorted(user.categories.items(), key=lambda kv: (-kv[1], kv[0]))[:3]:
                if category not in category_index:
                    category_index[category] = len(category_names)
                    category_names.append(category)
                cat_row.append(row)
                cat_list.append(category_index[category])
                cat_scale.append(value / top_cat)
        if cat_row:
            lists = [_trend_list(model.trending_by_category.get(c), codes) for c in category_names]
            lengths = np.fromiter((len(c) for c, _ in lists), dtype=np.intp, count=len(lists))
            starts = np.cumsum(lengths) - lengths
            list_codes = np.concatenate([c for c, _ in lists])
            list_values = np.concatenate([v for _, v in lists])
            pair, index = _expand(np.asarray(cat_list, dtype=np.intp), starts, lengths)
            scale = np.asarray(cat_scale, dtype=np.float64)
            long = _Long(
                np.asarray(cat_row, dtype=np.intp)[pair],
                list_codes[index],
                scale[pair] * list_values[index],
                np.full(len(pair), _CATEGORY, dtype=np.int8),
                np.asarray(cat_list, dtype=np.int64)[pair],
            )
            parts.append((config.weight_category, _grouped(long, len(codes.vocab), "max")))

    # Popularity: global trending for every row (weight 1 for a cold start: it is all there is).
    pop_codes, pop_values = _trend_list(model.trending_global, codes)
    cold = np.array([not user.strongest for user in users], dtype=bool)
    pop_weight = np.where(cold, 1.0, config.weight_popularity)
    pop_rows = np.flatnonzero(pop_weight > 0)
    if len(pop_codes) and len(pop_rows):
        rows = np.repeat(pop_rows, len(pop_codes))
        long = _Long(rows, np.tile(pop_codes, len(pop_rows)), np.tile(pop_values, len(pop_rows)), np.full(len(rows), _POPULAR, dtype=np.int8), np.full(len(rows), -1, dtype=np.int64))
        parts.append((pop_weight[rows], long))

    blended = [_Long(p.row, p.code, weight * p.value, p.kind, p.source) for weight, p in parts]
    texts: list[Reason] = []
    if model.embeddings is not None and (config.weight_embedding > 0 or config.weight_sequence > 0):
        blended += _embedding_parts(users, blended, model, config, texts)

    blend = _Long.concat(blended)
    if len(blend.row):
        # The parts are concatenated in component order, which _grouped's stable sort keeps
        # within each (row, item) sum; its output is in (row, item) order.
        blend = _without_banned(blend, users, codes)
        if part_entries is not None:
            part_entries.append(_part_entries(blend.take(np.argsort(blend.row, kind="stable")), allowed, config, codes))
        blend = _grouped(blend, len(codes.vocab), "sum")
    # The business filters are checked lazily, on the entries that could make a list (see _top_n).
    top = _top_n(blend, model, config, n, codes, allowed)
    carts = _cart_lists(users, model, cart_config or config, n, allowed)
    relevance: dict[int, dict[str, float]] = {}
    if model.sponsored and len(blend.row):
        ids = codes.vocab.array()
        # Sponsored entries of allowed items, over their row's best allowed entry: the head of the row's list.
        sponsored_codes = np.asarray(codes.known(model.sponsored), dtype=np.int64)
        candidate = np.flatnonzero(np.isin(blend.code, sponsored_codes))
        candidate = candidate[allowed.mask(blend.code[candidate], config)]
        row_best = np.zeros(len(users))
        heads = group_starts(top.row)[:-1]
        row_best[top.row[heads]] = top.value[heads]
        rel_row, rel_code, rel_value = sponsored_relevance(blend.row[candidate], blend.code[candidate], blend.value[candidate], sponsored_codes, row_best[blend.row[candidate]])
        for r, code, value in zip(rel_row.tolist(), rel_code.tolist(), rel_value.tolist()):
            relevance.setdefault(r, {})[ids[code]] = value

    ids = codes.vocab.array()
    # Each table's entries built in a few passes (reasons per distinct key, ScoredItems by map), then cut per row.
    tables = []
    for ranked in (top, carts):
        lo, hi = _row_bounds(ranked, len(users))
        reasons = _reasons(ranked, users, ids, category_names, texts, codes)
        # tuple.__new__ makes each ScoredItem in C (the NamedTuple's own __new__ is a Python function).
        tables.append((lo, hi, list(map(tuple.__new__, itertools.repeat(ScoredItem), zip(ids[ranked.code].tolist(), ranked.value.tolist(), reasons)))))
    out = []
    for row, user in enumerate(users):
        profile = user.profile
        home, cart = (entries[lo[row] : hi[row]] for lo, hi, entries in tables)
        out.append(
            UserLists(
                home=home,
                cart=cart,
                interests=user.strongest,
                categories=user.categories,
                in_cart=list(profile.cart) if profile else [],
                purchased=list(profile.purchased) if profile else [],
                ads=_ads(relevance.get(row, {}), profile, model, config) if model.sponsored else None,
                sponsored_relevance=relevance.get(row, {}),
            )
        )
    return out


def _ads(relevance: dict[str, float], profile: UserProfile | None, model: ScoringModel, config: ModelConfig) -> list[AdPick]:
    purchased = profile.purchased if profile is not None else ()
    return rank_ads(relevance, model.sponsored, purchased, config.ads_relevance_floor, config.ads_n)


def sponsored_relevance(
    row: np.ndarray, code: np.ndarray, value: np.ndarray, sponsored: np.ndarray, best: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each entry whose code is in ``sponsored``, as (row, code, value / the row's largest value).

    The input is a blend in long form (one entry per row and item, ``row``
    ascending, only items the row may be recommended); entries with a
    non-positive value, or in a row whose largest value is not positive, are
    left out.  Order is kept.  ``best`` gives each entry its row's largest
    value when the caller knows it (then the input may hold only some of each
    row's entries); without it, it is the largest of the row's given entries.
    """
    if len(row) == 0 or len(sponsored) == 0:
        empty = np.empty(0)
        return empty.astype(np.intp), empty.astype(np.int64), empty
    if best is None:
        bounds = group_starts(row)
        best = np.repeat(np.maximum.reduceat(value, bounds[:-1]), np.diff(bounds))
    keep = np.isin(code, sponsored) & (value > 0) & (best > 0)
    return row[keep], code[keep], value[keep] / best[keep]


def _reasons(ranked: _Long, users: list[_Prepared], ids: np.ndarray, categories: list[str], texts: list[Reason], codes: ItemCodes) -> list[Reason]:
    """The reason of each entry of ``ranked``, built once per distinct reason key in the batch
    (and shared through ``codes``' cache, keyed by all a reason depends on)."""
    if len(ranked.row) == 0:
        return []
    kind = ranked.kind.astype(np.int64)
    # The user's latest action on the entry's source (cf) or on the item itself (recent).
    action = np.zeros(len(kind), dtype=np.int64)
    acted = np.flatnonzero((kind == _CF) | (kind == _RECENT))
    if len(acted):
        on = np.where(kind[acted] == _CF, ranked.source[acted], ranked.code[acted])
        action[acted] = [users[r].profile.last_action.get(i, 0) for r, i in zip(ranked.row[acted].tolist(), ids[on].tolist())]
    # One integer per distinct reason: kind, an item code / category / text index / cold flag, and the action.
    subject = ranked.source.copy()
    subject[kind == _RECENT] = ranked.code[kind == _RECENT]
    popular = kind == _POPULAR
    subject[popular] = np.array([bool(u.strongest) for u in users], dtype=np.int64)[ranked.row[popular]]
    distinct, inverse = np.unique((kind << 56) | (subject << 4) | action, return_inverse=True)
    built = []
    for key in distinct.tolist():
        k, subject_of, act = key >> 56, (key >> 4) & ((1 << 52) - 1), key & 15
        if k == _CF:
            src = ids[subject_of]
            built.append(codes.reason((_CF, subject_of, act), because_you, EVENT_TYPES[act], src))
        elif k == _CONTENT:
            built.append(codes.reason((_CONTENT, subject_of), _similar_to, ids[subject_of]))
        elif k == _RECENT:
            item = ids[subject_of]
            built.append(codes.reason((_RECENT, item, act), you_did_recently, EVENT_TYPES[act], item))
        elif k == _CATEGORY:
            built.append(codes.reason((_CATEGORY, categories[subject_of]), _trending_in, categories[subject_of]))
        elif k == _POPULAR:
            built.append(codes.reason((_POPULAR, bool(subject_of)), reason, "popular_now" if subject_of else "trending_now"))
        elif k == _CART:
            built.append(codes.reason((_CART, subject_of), goes_with, ids[subject_of]))
        else:
            built.append(texts[subject_of])
    return list(map(built.__getitem__, inverse.tolist()))


def _similar_to(item: str) -> Reason:
    return reason("similar_to", item=item)


def _trending_in(category: str) -> Reason:
    return reason("trending_in", category=category)


def _embedding_parts(users: list[_Prepared], blended: list[_Long], model: ScoringModel, config: ModelConfig, texts: list[Reason]) -> list[_Long]:
    """The embedding and sequence components of each row with interests (see :func:`_embedding_components`)."""
    codes = model.codes
    ids = codes.vocab.array()
    pool_long = _Long.concat(blended)
    pools: dict[int, set[str]] = {}
    for row, code in zip(pool_long.row.tolist(), pool_long.code.tolist()):
        pools.setdefault(row, set()).add(ids[code])
    out: list[_Long] = []
    for row, user in enumerate(users):
        if not user.strongest:
            continue
        for weight, scores, reasons in _embedding_components(user.profile, user.interests, user.strongest, pools.get(row, set()), user.banned, model.embeddings, config):
            items = list(scores)
            text_ids = []
            for item in items:
                text_ids.append(len(texts))
                texts.append(reasons[item])
            values = np.fromiter(scores.values(), dtype=np.float64, count=len(items))
            out.append(_Long(np.full(len(items), row, dtype=np.intp), codes.of(items), weight * values, np.full(len(items), _TEXT, dtype=np.int8), np.asarray(text_ids, dtype=np.int64)))
    return out


def _without_banned(blend: _Long, users: list[_Prepared], codes: ItemCodes) -> _Long:
    """``blend`` without the entries of items banned for their row (purchased, disliked...)."""
    width = np.int64(max(len(codes.vocab), 1))
    banned_keys = [row * int(width) + c for row, user in enumerate(users) if user.banned for c in codes.known(user.banned)]
    if not banned_keys:
        return blend
    # A binary search in the few banned keys, not np.isin, which sorts every entry's key.
    banned = np.unique(np.asarray(banned_keys, dtype=np.int64))
    keys = blend.row.astype(np.int64) * width + blend.code
    at = np.minimum(np.searchsorted(banned, keys), len(banned) - 1)
    return blend.take(banned[at] != keys)


class AllowedMemo:
    """The business filters' results kept across batches for as long as the facts they read hold.

    A scorer whose facts each take effect at a window (the job's broadcast
    model: every fact version carries the window that produced it) keeps one
    and passes :meth:`for_window` as ``ScoringModel.allowed_memo``.  The memo
    serves the span of windows it was used for; it is emptied when a window
    is scored that a fact took effect in, or before, since the span began
    (:meth:`fact_at` is told of each fact version as it arrives), so every
    item is checked against the facts as of the window it is scored for, as
    a fresh memo per batch would.
    """

    def __init__(self) -> None:
        self._memo: dict | None = None
        self._first = self._last = 0  # the windows the memo has served
        self._fact_windows: list[int] = []  # windows of the fact versions that may still matter, ascending

    def fact_at(self, window: int) -> None:
        """A fact version produced in ``window`` has arrived."""
        if self._memo is not None and window <= self._last:
            self._memo = None  # windows already served would have seen it
        bisect.insort(self._fact_windows, window)

    def for_window(self, window: int, settled: int | None = None) -> dict:
        """The memo for scoring ``window`` (emptied if a fact differs between it and the windows served).

        ``settled``: no window up to it will be scored again, so the facts of
        those windows can be forgotten (None: all are kept).  Windows need not
        come in order (a scorer's keys close their windows in turn).
        """
        changed = bisect.bisect_right(self._fact_windows, self._last)
        if self._memo is None or window < self._first or (changed < len(self._fact_windows) and self._fact_windows[changed] <= window):
            self._memo = {}
            self._first = self._last = window
        else:
            self._last = max(self._last, window)
        if settled is not None:
            # The memo consults facts after its first window only, and a later memo starts after `settled`.
            del self._fact_windows[: bisect.bisect_right(self._fact_windows, min(self._first, settled))]
        return self._memo


class _Allowed:
    """The business filters (:func:`item_allowed`) per item code, each item checked at most once
    per filter setting: per batch, or while the model's ``allowed_memo`` is kept (the facts may
    change between batches, so only the caller knows how long a result holds)."""

    def __init__(self, model: ScoringModel, codes: ItemCodes) -> None:
        self.model = model
        self.codes = codes
        # filter setting -> (checked, allowed) by code
        self._memo: dict[tuple, tuple[np.ndarray, np.ndarray]] = {} if model.allowed_memo is None else model.allowed_memo

    def mask(self, code: np.ndarray, config: ModelConfig) -> np.ndarray:
        """Whether each entry's item passes ``config``'s filters."""
        key = (config.exclude_out_of_stock, config.allow_categories, config.deny_categories)
        width = len(self.codes.vocab)
        checked, allowed = self._memo.get(key, (np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)))
        if len(checked) < width:  # the vocabulary grew: new codes are unchecked
            checked = np.concatenate([checked, np.zeros(width - len(checked), dtype=bool)])
            allowed = np.concatenate([allowed, np.zeros(width - len(allowed), dtype=bool)])
            self._memo[key] = (checked, allowed)
        need = np.unique(code[~checked[code]])
        if len(need):
            ids = self.codes.vocab.array()
            model = self.model
            allowed[need] = np.fromiter((_allowed(i, model, config) for i in ids[need].tolist()), dtype=bool, count=len(need))
            checked[need] = True
        return allowed[code]


def _top_n(blend: _Long, model: ScoringModel, config: ModelConfig, n: int, codes: ItemCodes, allowed: _Allowed) -> _Long:
    """Per row, the ``n`` best allowed entries (score desc, then item id asc), at most
    ``max_per_category`` per top category (0: no cap), as one long table: rows ascending,
    each row's entries in rank order.

    ``blend`` has one entry per (row, item), ``row`` ascending.  Each row is first cut to its
    ``want`` best scores (ties at the cut kept) by a row-wise partition; only that cut is
    checked against the business filters and sorted exactly.  Every entry left out of a cut
    ranks below every entry in it, so a row whose cut yields ``n`` items is complete; a row
    short of ``n`` items (after the filters and the cap) whose cut left entries out is cut
    again, four times wider, until it is complete.
    """
    if len(blend.row) == 0:
        return _Long.empty()
    cap = config.max_per_category
    want = n if cap <= 0 else n * 4
    ranked: list[_Long] = []  # per round, the ranked entries of the rows that round completed
    while len(blend.row):
        cut = blend.take(blend.value >= row_thresholds(blend.row, blend.value, want))
        cut_sizes = np.bincount(cut.row, minlength=int(blend.row[-1]) + 1)
        cut = cut.take(allowed.mask(cut.code, config))
        chosen = _rank_cut(cut, model, n, cap, codes.vocab) if len(cut.row) else _Long.empty()
        # Rows short of n whose cut left items out go round again with a wider cut.
        bounds = group_starts(blend.row)
        rows = blend.row[bounds[:-1]]
        sizes = np.diff(bounds)
        found = np.bincount(chosen.row, minlength=int(blend.row[-1]) + 1)
        again = np.zeros(len(found), dtype=bool)
        again[rows[(cut_sizes[rows] < sizes) & (found[rows] < n)]] = True
        if not again.any():
            ranked.append(chosen)
            break
        ranked.append(chosen.take(~again[chosen.row]))
        blend = blend.take(again[blend.row])
        want *= 4
    if len(ranked) == 1:
        return ranked[0]
    out = _Long.concat(ranked)
    return out.take(np.argsort(out.row, kind="stable"))


def _rank_cut(cut: _Long, model: ScoringModel, n: int, cap: int, vocab: Vocabulary) -> _Long:
    """Each row's ``n`` best entries of ``cut`` (score desc, item id asc; at most ``cap`` per
    top category, 0: no cap), rows ascending, in rank order."""
    order = np.lexsort((vocab.id_rank()[cut.code], -cut.value, cut.row))
    if cap > 0:
        candidates, inverse = np.unique(cut.code, return_inverse=True)
        category = np.unique(np.array([model.top_category(i) for i in vocab.array()[candidates].tolist()], dtype=object), return_inverse=True)[1]
        order = order[rank_within(cut.row[order].astype(np.int64) * (int(category.max()) + 1) + category[inverse[order]]) < cap]
    return cut.take(order[run_positions(cut.row[order]) < n])  # rows ascending in rank order: a run position is the rank


def _row_bounds(ranked: _Long, rows: int) -> tuple[list[int], list[int]]:
    """Where each of ``rows`` rows' entries start and end in ``ranked`` (rows ascending)."""
    bounds = np.searchsorted(ranked.row, np.arange(rows + 1))
    return bounds[:-1].tolist(), bounds[1:].tolist()


def _cart_lists(users: list[_Prepared], model: ScoringModel, config: ModelConfig, n: int, allowed: _Allowed) -> _Long:
    """Complements of each row's cart (:func:`transforms.complements.cart_complements`, the one
    formula the API uses too: the same terms, summed in its order, explained by the first largest
    term's cart item), without banned and disallowed items, ranked like the home list."""
    codes = model.codes
    terms = cart_terms([user.profile for user in users], model)
    weight = np.where(terms.kind == 0, config.weight_cf, config.weight_content)
    value = weight * terms.sim / terms.top
    live = (weight > 0) & (value > 0)
    if not live.any():
        return _Long.empty()
    entries = _Long(terms.row[live], terms.code[live], value[live], np.full(int(live.sum()), _CART, dtype=np.int8), terms.source[live])
    width = len(codes.vocab)
    # _grouped keeps each (row, item)'s first largest term, in (row, item) order; the sum runs in term order from 0.0.
    grouped = _grouped(entries, width, "max")
    group = np.unique(entries.row.astype(np.int64) * width + entries.code, return_inverse=True)[1]
    grouped.value = np.bincount(group, weights=entries.value)
    grouped = _without_banned(grouped, users, codes)
    return _top_n(grouped.take(grouped.value > 0), model, config, n, codes, allowed)


class CartTerms(NamedTuple):
    """The terms of :func:`transforms.complements.cart_complements` for a batch of carts, in its order.

    One entry per (row, cart item, kind, neighbour): kind 0 the collaborative list, 1 the content
    list, of cart item ``source``; ``sim`` the neighbour's similarity and ``top`` its list's
    largest (positive).  Entries run per row, in cart order, collaborative before content, each
    list in its order; neighbours in the row's cart are left out.  A weighting ``w`` gives each
    term ``w * sim / top`` as that function computes it.
    """

    row: np.ndarray
    code: np.ndarray  # item codes (ItemCodes of the model)
    kind: np.ndarray
    sim: np.ndarray
    top: np.ndarray
    source: np.ndarray


def cart_terms(profiles: Sequence[UserProfile | None], model: ScoringModel) -> CartTerms:
    """Every cart's :class:`CartTerms` (rows without a profile or a cart have none)."""
    codes = model.codes
    rows, carts = [], []
    for row, profile in enumerate(profiles):
        if profile is not None and profile.cart:
            cart = list(profile.cart)
            rows.append(np.full(len(cart), row, dtype=np.int64))
            carts.append(codes.of(cart))
    if not rows:
        empty = np.empty(0, dtype=np.int64)
        return CartTerms(empty, empty, empty, np.empty(0), np.empty(0), empty)
    pair_row, pair_code = np.concatenate(rows), np.concatenate(carts)
    sources, pair_source = np.unique(pair_code, return_inverse=True)
    found = []
    for order, (kind, table) in enumerate(((_CF, model.neighbours), (_CONTENT, model.content))):
        pool_codes, pool_values, starts, lengths = codes.lists(table, kind, sources)
        list_of, index = _expand(np.arange(len(sources)), starts, lengths)
        top = np.full(len(sources), -np.inf)
        np.maximum.at(top, list_of, pool_values[index])
        pair, index = _expand(pair_source, starts, lengths)
        found.append((pair, np.full(len(pair), order, dtype=np.int64), pool_codes[index], pool_values[index], top[pair_source[pair]]))
    pair, kind, code, sim, top = (np.concatenate(column) for column in zip(*found))
    order = np.argsort(pair * 2 + kind, kind="stable")  # per cart item: collaborative, then content
    pair, kind, code, sim, top = pair[order], kind[order], code[order], sim[order], top[order]
    row = pair_row[pair]
    width = np.int64(max(len(codes.vocab), 1))
    keep = (top > 0) & ~np.isin(row * width + code, pair_row * width + pair_code)
    return CartTerms(row[keep], code[keep], kind[keep], sim[keep], top[keep], pair_code[pair][keep])


def items_allowed(codes: np.ndarray, model: ScoringModel, config: ModelConfig) -> np.ndarray:
    """:func:`item_allowed` of each item code (each distinct item checked once)."""
    return _Allowed(model, model.codes).mask(codes, config)


class PartEntries(NamedTuple):
    """The home blend's weighted entries before the sum: one per (row, item, part), allowed items only.

    ``part`` indexes :data:`transforms.blend.PARTS`; the values are weighted
    with the weights the batch was scored with.  Items are codes of ``vocab``
    (ids are looked up only where needed: a batch holds about a million entries).
    """

    row: np.ndarray
    code: np.ndarray
    part: np.ndarray
    value: np.ndarray
    vocab: Vocabulary

    @property
    def item(self) -> np.ndarray:
        """Each entry's item id."""
        return self.vocab.array()[self.code]


# Each entry kind's part, as indexed by transforms.blend.PARTS (the cart's entries are no part of the home blend).
_KIND_PART = np.array([PARTS.index(p) for p in ("cf", "content", "recent", "category", "popularity", "learned")] + [-1], dtype=np.intp)


def _part_entries(blend: _Long, allowed: _Allowed, config: ModelConfig, codes: ItemCodes) -> PartEntries:
    kept = blend.take(allowed.mask(blend.code, config))
    return PartEntries(kept.row.copy(), kept.code.copy(), _KIND_PART[kept.kind.astype(np.intp)], kept.value.copy(), codes.vocab)


def score_user(
    profile: UserProfile | None,
    now_ms: int,
    model: ScoringModel,
    config: ModelConfig,
    exclude: set[str] | frozenset[str] = frozenset(),
    n: int | None = None,
) -> UserLists:
    """:func:`score_users` for one user."""
    return score_users([profile], now_ms, model, config, [exclude], n)[0]
