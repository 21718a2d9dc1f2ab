"""Model parameters shared by every engine (reference replay, Flink job, Beam backfill).

The values here are the defaults for a shop-like setting; `flowrec tune` writes
a tuned copy as JSON, which :func:`ModelConfig.from_dict` reads back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from transforms.events import EVENT_TYPES

# Default of ModelConfig.max_clock_skew_ms (the API's limit on future timestamps).
DEFAULT_MAX_CLOCK_SKEW_MS = 5 * 60 * 1000
SIMILARITY_MEASURES = ("cosine", "jaccard", "lift", "conditional", "swing")
# Settings that can be measured from the history at start-up (see transforms.derive).
DERIVABLE_FIELDS = ("half_life_ms",)

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "favorite": 3.0,
    "add_to_cart": 4.0,
    "purchase": 6.0,
    # Negative feedback: taking an item out of the cart lowers interest in it.
    "remove_from_cart": -2.0,
    # Rating events are weighted by `rating * weight`; see `event_weights`.
    "rating": 1.0,
    "forget": 0.0,
}


@dataclass(frozen=True)
class ModelConfig:
    """Every knob of the recommendation maths, with units in the names.

    Times are event-time milliseconds.  ``window_ms`` is the scoring window: all
    engines recompute neighbour lists, trending and the lists of users active in
    a window when that window closes, so it is also the debounce interval of a
    user's list and a lower bound on freshness.
    """

    event_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    # Interest decay: an event's weight halves every `half_life_ms`.  By default
    # it is measured from the history at start-up (`derive_from_history`, see
    # transforms.derive: how long users' interest in an item lasts, or the
    # history's span when they never come back to an item); this value is used
    # only without any history.  One day suits shops (shoppers' intent moves
    # within days); a ratings log such as ML-100K needs months (on ML-100K msr
    # the co-occurrence part scores nDCG@10 0.320 with one day, 0.389 derived).
    half_life_ms: int = 24 * 3600 * 1000
    # Settings measured from the history before the state is built
    # (transforms.derive.derive_config); a setting given explicitly through
    # from_dict or replace is taken as given and leaves this list (the
    # constructor cannot tell a given value from a default: pass this list too).
    derive_from_history: tuple[str, ...] = DERIVABLE_FIELDS
    # Half-lives an experiment's variants may use (transforms.experiments): a
    # profile keeps one more forward-decayed interest sum per listed half-life,
    # exact from the user's first event under this setting on (a profile kept
    # from before is seeded from its main sum at its next event).  A decayed sum
    # cannot be re-decayed with another half-life afterwards, so the sums must
    # be kept before an experiment asks for them.  Empty: no extra state.
    variant_half_lives_ms: tuple[int, ...] = ()
    # Co-occurrence: an event pairs with at most `history_length` distinct recent
    # items of the same user that were seen within `session_gap_ms` before it.
    history_length: int = 20
    session_gap_ms: int = 30 * 60 * 1000
    # Item neighbours kept per item (collaborative).  Truncation is what most
    # separates the co-occurrence part from SAR, which scores with every
    # neighbour: on ML-100K msr (derived half-life) nDCG@10 0.389 with 20,
    # 0.400 with 50, 0.420 with 50 and interest_items 100 (which costs 0.005 on
    # the Taobao sample, where old interests are stale), at 2.5x the neighbour
    # entries per scored list; larger catalogs lose more to a short list.
    neighbours: int = 50
    similarity: str = "cosine"
    # More count-based measures (transforms.similarity.COUNT_MEASURES) an
    # experiment's variants may use: the item model keeps a neighbour list per
    # listed measure next to the main one, from the same co-occurrence rows
    # (each costs one more top-k per refreshed item).  Empty: none.
    variant_similarities: tuple[str, ...] = ()
    # Popularity damping exponent for the "conditional" measure: c_ab / (n_a * n_b^alpha).
    conditional_alpha: float = 0.5
    # Swing parameters (Flink ML): 1/((|I_u|+alpha1)^beta (|I_v|+alpha1)^beta (alpha2 + |I_u ∩ I_v|)).
    swing_alpha1: float = 5.0
    swing_alpha2: float = 1.0
    swing_beta: float = 0.3
    # Pairs whose co-occurrence weight is below this are ignored when ranking neighbours.
    min_cooccurrence: float = 1.0
    # Co-occurrence entries kept per item (strongest first); bounds item state.
    row_capacity: int = 1000
    # Scoring.
    window_ms: int = 200
    # Neighbour lists and trending are recomputed at most once per this much event
    # time (at the first window that closes in each refresh slot, and at the end).
    model_refresh_ms: int = 1000
    # Users' lists are recomputed at most once per this much event time (a multiple of
    # window_ms; 0 = every window they are active in): under load a shop trades a
    # little freshness for far fewer lists (see transforms.windows).
    score_interval_ms: int = 0
    top_n: int = 20
    interest_items: int = 30  # the user's strongest items used to gather candidates
    max_user_items: int = 200  # interest entries kept per user (weakest dropped)
    weight_cf: float = 1.0
    weight_content: float = 0.3
    weight_category: float = 0.2
    weight_popularity: float = 0.05
    weight_recent: float = 0.0
    # Learned embeddings (see :mod:`transforms.embedding`; 0 = off, so a job
    # without an export scores exactly as before): the user vector from the
    # decayed interests, and the sequence model over the recent history.
    weight_embedding: float = 0.0
    weight_sequence: float = 0.0
    # Items added to the candidate pool by each embedding component: the best
    # ``embedding_candidates`` of the whole catalog by dot product (an exact
    # scan), besides the export's neighbours of the user's strongest items.
    embedding_candidates: int = 100
    # Item vectors learned in the stream (transforms.embedding.OnlineItemVectors), while an
    # embedding export is in effect: an item the export lacks takes the co-occurrence-weighted
    # mean of its partners' exported vectors (its `online_vector_evidence` heaviest since the
    # export took effect), held to its cold prior (the export's feature vectors of its catalog
    # record) with `online_vector_prior` of co-occurrence weight.  Items the export has keep
    # their vectors unless `online_vector_known_prior` > 0 (moved the same way, held to the
    # trained vector with that weight; measured to cost quality on generated shops, so 0).
    # False: the export's vectors only, until the next training.
    online_item_vectors: bool = True
    online_vector_prior: float = 1.0
    online_vector_known_prior: float = 0.0
    online_vector_evidence: int = 50
    # Vectors move at the first model refresh of each slot of this much event time (and at
    # the end of a bounded input): one update per changed item per slot, not per refresh
    # (0: at every model refresh).
    online_vector_refresh_ms: int = 60_000
    # Blend weights learned online (transforms.blend): per user shard, the engines serve the best
    # of a few weight settings (the configured weights, and "lean on" each configured part:
    # that part's weight raised to `blend_lean` times the configured total), credited
    # prequentially with what users touch after each list.  False: the configured weights, fixed.
    # On by default: no fixed weights are right for every shop (content leads on the Taobao
    # sample, co-occurrence on generated shops, where the fixed blend trails it), and the
    # learner is what keeps the blend at or above its best part; see README "A learned blend".
    blend_learning: bool = True
    blend_lean: float = 3.0
    # Settings' gains halve every this many credited lists; a setting replaces the served one
    # only when ahead by more than `blend_margin` (in DCG gain: 1.0 = one hit at the top).
    blend_half_life: float = 2000.0
    blend_margin: float = 1.0
    # Each setting is judged on its top `blend_k`; a list older than `blend_memo_ms` earns nothing.
    blend_k: int = 10
    blend_memo_ms: int = 24 * 3600 * 1000
    exclude_purchased: bool = True
    # Categories (top level) whose items may be bought again and so stay recommendable.
    repeat_purchase_categories: tuple[str, ...] = ()
    exclude_seen: bool = False
    max_per_category: int = 0  # 0 = no cap; else at most this many items per top category
    # Business filters on top categories: an empty allow list allows all.
    allow_categories: tuple[str, ...] = ()
    deny_categories: tuple[str, ...] = ()
    exclude_out_of_stock: bool = True
    # The ad slot (transforms.ads): at most `ads_n` sponsored items per user, each with a
    # relevance of at least `ads_relevance_floor`, where relevance is the user's blended
    # score for the item over their best item's score (in [0, 1]; 1 = as good as the
    # top of their home list).  The floor keeps a high bid from buying a slot in front
    # of a user it means nothing to: at 0.1 an ad must score a tenth of the user's best.
    ads_n: int = 10
    ads_relevance_floor: float = 0.1
    # Trending: positive event weight per item summed over a sliding window.
    trending_window_ms: int = 60 * 60 * 1000
    trending_slide_ms: int = 60 * 1000
    trending_size: int = 50
    # Content similarity: TF-IDF neighbours per item.
    content_neighbours: int = 20
    # Clock skew accepted from producers: the API takes events stamped up to
    # this far ahead of its clock, so a `forget` wins over every event of the
    # user stamped up to this long after it (earlier sends included).
    max_clock_skew_ms: int = DEFAULT_MAX_CLOCK_SKEW_MS
    # Attribution (transforms.attribution): a click, cart or purchase without a
    # known rec_id goes to the latest impression that showed the item at most
    # this long before it (last touch); each user keeps at most the latest
    # `impressions_kept` impressions (distinct rec_ids), none older than the window.
    attribution_window_ms: int = 30 * 60 * 1000
    impressions_kept: int = 50

    def __post_init__(self) -> None:
        if self.similarity not in SIMILARITY_MEASURES:
            raise ValueError(f"similarity must be one of {SIMILARITY_MEASURES}, got {self.similarity!r}")
        positive = {
            "half_life_ms": self.half_life_ms,
            "history_length": self.history_length,
            "session_gap_ms": self.session_gap_ms,
            "neighbours": self.neighbours,
            "row_capacity": self.row_capacity,
            "window_ms": self.window_ms,
            "model_refresh_ms": self.model_refresh_ms,
            "top_n": self.top_n,
            "interest_items": self.interest_items,
            "max_user_items": self.max_user_items,
            "trending_window_ms": self.trending_window_ms,
            "trending_slide_ms": self.trending_slide_ms,
            "trending_size": self.trending_size,
            "content_neighbours": self.content_neighbours,
            "blend_half_life": self.blend_half_life,
            "blend_k": self.blend_k,
            "blend_memo_ms": self.blend_memo_ms,
            "ads_n": self.ads_n,
            "attribution_window_ms": self.attribution_window_ms,
            "impressions_kept": self.impressions_kept,
            "online_vector_prior": self.online_vector_prior,
            "online_vector_evidence": self.online_vector_evidence,
        }
        non_negative = {
            "max_clock_skew_ms": self.max_clock_skew_ms,
            "weight_embedding": self.weight_embedding,
            "weight_sequence": self.weight_sequence,
            "embedding_candidates": self.embedding_candidates,
            "blend_margin": self.blend_margin,
            "online_vector_refresh_ms": self.online_vector_refresh_ms,
            "online_vector_known_prior": self.online_vector_known_prior,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if not self.blend_lean >= 1.0:
            raise ValueError(f"blend_lean must be >= 1, got {self.blend_lean}")
        if self.score_interval_ms < 0 or self.score_interval_ms % self.window_ms:
            raise ValueError(f"score_interval_ms must be 0 or a multiple of window_ms ({self.window_ms}), got {self.score_interval_ms}")
        if not 0 <= self.ads_relevance_floor <= 1:
            raise ValueError(f"ads_relevance_floor must be in [0, 1], got {self.ads_relevance_floor}")
        if self.trending_window_ms % self.trending_slide_ms:
            raise ValueError("trending_window_ms must be a multiple of trending_slide_ms")
        from transforms.catalog import CATEGORY_RULE, valid_category  # (transforms.catalog imports this module)

        for name in CATEGORY_LISTS:
            bad = [c for c in getattr(self, name) if not valid_category(c)]
            if bad:
                raise ValueError(f"{name} must be a list of categories ({CATEGORY_RULE}), got {bad[0]!r}")
        bad_half_lives = [h for h in self.variant_half_lives_ms if isinstance(h, bool) or not isinstance(h, int) or h <= 0]
        if bad_half_lives:
            raise ValueError(f"variant_half_lives_ms must be a list of whole milliseconds > 0, got {bad_half_lives[0]!r}")
        from transforms.similarity import COUNT_MEASURES  # (transforms.similarity imports this module)

        bad_measures = [m for m in self.variant_similarities if m not in COUNT_MEASURES]
        if bad_measures:
            raise ValueError(f"variant_similarities must be count-based measures {list(COUNT_MEASURES)}, got {bad_measures[0]!r}")
        not_derivable = set(self.derive_from_history) - set(DERIVABLE_FIELDS)
        if not_derivable:
            raise ValueError(f"derive_from_history: {sorted(not_derivable)} cannot be derived; derivable: {list(DERIVABLE_FIELDS)}")
        unknown = set(self.event_weights) - set(EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown event types in event_weights: {sorted(unknown)}")

    def extra_half_lives_ms(self) -> list[int]:
        """The half-lives profiles keep a sum for besides the main one: ``variant_half_lives_ms``
        without the job's own ``half_life_ms``, each once (a repeated one would add each event twice)."""
        return list(dict.fromkeys(h for h in self.variant_half_lives_ms if h != self.half_life_ms))

    def extra_similarities(self) -> list[str]:
        """The measures the item model keeps lists for besides the main one: ``variant_similarities``
        without the job's own ``similarity``, each once."""
        return list(dict.fromkeys(m for m in self.variant_similarities if m != self.similarity))

    def weight_table(self) -> np.ndarray:
        """Weights indexed by event-type code (see :data:`transforms.events.EVENT_TYPES`)."""
        return np.array([float(self.event_weights.get(name, 0.0)) for name in EVENT_TYPES], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["event_weights"] = dict(self.event_weights)
        for name in LIST_FIELDS:
            out[name] = list(getattr(self, name))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        if not isinstance(data, Mapping):
            raise ValueError(f"model settings are a JSON object of setting: value, got {type(data).__name__}")
        reject_unknown_fields(cls, data, "model settings")
        values = dict(data)
        if "event_weights" in values:
            values["event_weights"] = {**DEFAULT_EVENT_WEIGHTS, **values["event_weights"]}
        for name in LIST_FIELDS:
            if name in values:
                if not isinstance(values[name], (list, tuple)):  # tuple("fashion") would be its letters
                    raise ValueError(f"{name} must be a list, got {values[name]!r}")
                values[name] = tuple(values[name])
        return cls().replace(**values)

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with ``changes``; a derivable setting given here is final (it leaves ``derive_from_history``)."""
        if "derive_from_history" not in changes:
            given = set(changes) & set(self.derive_from_history)
            if given:
                changes["derive_from_history"] = tuple(f for f in self.derive_from_history if f not in given)
        return dataclasses.replace(self, **changes)


# The settings that hold lists (tuples here, JSON lists in a model config file).
LIST_FIELDS = ("repeat_purchase_categories", "allow_categories", "deny_categories", "derive_from_history", "variant_half_lives_ms", "variant_similarities")
# The settings that hold categories (full paths or top categories, compared with an item's category).
CATEGORY_LISTS = ("repeat_purchase_categories", "allow_categories", "deny_categories")


def reject_unknown_fields(cls: type, data: Mapping[str, Any], what: str) -> None:
    """Raise a ValueError naming the keys of ``data`` that are not fields of dataclass ``cls``."""
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what}: {sorted(unknown)}")


def event_weights(etype: np.ndarray, rating: np.ndarray, config: ModelConfig) -> np.ndarray:
    """Per-event weight: the event type's weight, times the rating for rating events.

    Units: interest points.  Negative weights (remove_from_cart) lower interest
    and never form co-occurrence pairs.
    """
    table = config.weight_table()
    weights = table[etype.astype(np.intp)]
    is_rating = etype == EVENT_TYPES.index("rating")
    if is_rating.any():
        weights = weights.copy()
        weights[is_rating] *= np.nan_to_num(rating[is_rating], nan=0.0)
    return weights
