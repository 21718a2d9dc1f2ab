"""Blend weights learned online: a full-information choice among a few weight settings, per user shard.

Why: fixed weights dilute the strongest part (on the Taobao sample the default
blend scored HR@10 0.1028 against its own content part's 0.1047).  Each
engine knows what a user did after their list was written, so it can check,
prequentially, which blend would have served them best and move to it.

**Settings.**  A small fixed set of weight settings within bounds
(:func:`blend_settings`): the configured weights, and for each configured
part ``p`` (weight > 0) "lean on p": ``w_p = blend_lean * (sum of the
configured weights)``, the other parts unchanged, so ``p`` leads and the
others break its ties.  A part the config leaves at 0 stays at 0 in every
setting (it is not even computed), and no weight exceeds ``blend_lean`` times
the configured total: the bounds.

**Credit.**  When a user with interests is listed at ``T``, every setting's
top ``blend_k`` at ``T`` is computed from the same part values (the scorer's
entries before the blend sum, :class:`transforms.scoring.PartEntries`),
without the items the user had already touched (a list is judged on what it
could teach them) and is kept as the user's :class:`BlendMemo` (at most
``settings * blend_k`` item ids).  When the user is listed again at ``T'``,
every item they touched positively in ``(T, T']`` (the profile's recent
history) earns each setting the DCG gain ``1 / log2(rank + 2)`` of its rank in
that setting's memo list (0 outside it).  Every setting is credited on every
observation (counterfactually, from the memo), so this is the experts problem
with full information: no exploration, no randomness.

**Choice.**  Per user shard and context a :class:`BlendLearner` keeps each
setting's discounted gain (half-life ``blend_half_life`` credited users) and
serves the current best; it leaves the setting it serves only for one whose
gain is ahead by more than ``blend_margin`` (hysteresis against noise); ties go
to the earlier setting, so the configured weights win until something beats
them.

**Determinism.**  A window's users are all scored with the learner as it was
before the window; the window's credit is then summed (an order-free sum over
users sorted by id) and applied once.  Shards are the job's user shards
(:func:`user_shard`, the same CRC-32 as ``pipelines.messages.shard_of``),
fixed for a job's lifetime and independent of its parallelism, so the job at
any parallelism and the reference engine make the same steps in the same
order.  No clock, no randomness.  While an experiment is in effect
(:mod:`transforms.experiments`) its variants score the lists and nothing is
learned (the engines drop those users' memos).
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, NamedTuple, Sequence

import numpy as np

from transforms.config import ModelConfig
from transforms.cooccurrence import Vocabulary, group_starts, may_reach_top, row_thresholds, run_positions, sorted_unique
from transforms.profile import UserProfile

if TYPE_CHECKING:
    from transforms.scoring import PartEntries

# The blend's parts, in the order of settings' scales; ``learned`` is the embedding and sequence
# components together (they are scaled alike).
PARTS: tuple[str, ...] = ("cf", "content", "category", "popularity", "recent", "learned")
PART_FIELDS: dict[str, tuple[str, ...]] = {
    "cf": ("weight_cf",),
    "content": ("weight_content",),
    "category": ("weight_category",),
    "popularity": ("weight_popularity",),
    "recent": ("weight_recent",),
    "learned": ("weight_embedding", "weight_sequence"),
}
WEIGHT_FIELDS: tuple[str, ...] = tuple(f for p in PARTS for f in PART_FIELDS[p])
# Contexts with a learner of their own: the home list (every part) and the cart's complements
# (cf and content only: :mod:`transforms.complements`).
CONTEXTS: tuple[str, ...] = ("home", "cart")
CART_PARTS: tuple[str, ...] = ("cf", "content")
CONFIGURED = "configured"
# The job's default number of user shards (flowrec.config.Settings.user_shards): an engine
# compared with a job must be told the job's value.
DEFAULT_USER_SHARDS = 8


def user_shard(user: str, shards: int) -> int:
    """The user shard of ``user`` (CRC-32 of the id); the job shards users and items with it (``pipelines.messages.shard_of``)."""
    return zlib.crc32(user.encode()) % shards


def part_weight(config: ModelConfig, part: str) -> float:
    return float(sum(getattr(config, name) for name in PART_FIELDS[part]))


@dataclass(frozen=True)
class BlendSetting:
    """One weight setting: a multiplier of each part's configured weight (in :data:`PARTS` order)."""

    name: str
    scale: tuple[float, ...]

    def weights(self, config: ModelConfig) -> dict[str, float]:
        """The model-config weight fields of this setting."""
        return {name: getattr(config, name) * s for part, s in zip(PARTS, self.scale) for name in PART_FIELDS[part]}

    def applied(self, config: ModelConfig) -> ModelConfig:
        """``config`` with this setting's weights (the configured setting: ``config`` itself)."""
        if all(s == 1.0 for s in self.scale):
            return config
        return config.replace(**self.weights(config))


def blend_settings(config: ModelConfig) -> tuple[BlendSetting, ...]:
    """The configured weights, then "lean on p" for each configured part (see the module docstring)."""
    settings = [BlendSetting(CONFIGURED, (1.0,) * len(PARTS))]
    weights = [part_weight(config, p) for p in PARTS]
    active = [i for i, w in enumerate(weights) if w > 0]
    if len(active) < 2:
        return tuple(settings)
    total = sum(weights[i] for i in active)
    for i in active:
        scale = [1.0] * len(PARTS)
        scale[i] = config.blend_lean * total / weights[i]
        settings.append(BlendSetting(f"lean_{PARTS[i]}", tuple(scale)))
    return tuple(settings)


def context_settings(config: ModelConfig, context: str) -> tuple[BlendSetting, ...]:
    """The settings of a context: the cart list's are those of its two parts alone (cf, content)."""
    if context == "cart":
        others = {name: 0.0 for part in PARTS if part not in CART_PARTS for name in PART_FIELDS[part]}
        return blend_settings(config.replace(**others))
    return blend_settings(config)


def settings_key(settings: Sequence[BlendSetting]) -> str:
    """A fingerprint of a settings list: state learned under other settings is not reused."""
    return _settings_key(tuple(settings))


@functools.lru_cache(maxsize=64)
def _settings_key(settings: tuple[BlendSetting, ...]) -> str:
    return ";".join(f"{s.name}:{','.join(repr(x) for x in s.scale)}" for s in settings)


@dataclass
class BlendLearner:
    """One shard's and context's learner: each setting's discounted gain and the setting served."""

    key: str
    gains: list[float]
    current: int = 0
    observations: int = 0

    @classmethod
    def fresh(cls, settings: Sequence[BlendSetting]) -> "BlendLearner":
        return cls(settings_key(settings), [0.0] * len(settings))

    def for_settings(self, settings: Sequence[BlendSetting]) -> "BlendLearner":
        """This learner, or a fresh one if it learned under other settings (the config changed)."""
        return self if self.key == settings_key(settings) else BlendLearner.fresh(settings)


def choose(gains: Sequence[float], current: int, margin: float) -> int:
    """The setting to serve: the best by gain (ties: the earlier), if ahead of ``current`` by more than ``margin``."""
    best = int(np.argmax(np.asarray(gains, dtype=np.float64)))  # the first of equal maxima
    return best if gains[best] > gains[current] + margin else current


def learn(learner: BlendLearner, rewards: Sequence[Sequence[float]], config: ModelConfig) -> BlendLearner:
    """The learner after one window's credit: ``rewards[u][s]`` per credited user and setting.

    Gains decay by half every ``blend_half_life`` credited users; the window's
    rewards are summed first (so the result does not depend on the users' order).
    """
    if not rewards:
        return learner
    count = len(rewards)
    decay = 0.5 ** (count / config.blend_half_life)
    total = np.asarray(rewards, dtype=np.float64).sum(axis=0)
    gains = [g * decay + float(r) for g, r in zip(learner.gains, total.tolist())]
    return BlendLearner(learner.key, gains, choose(gains, learner.current, config.blend_margin), learner.observations + count)


class BlendMemo(NamedTuple):
    """What a user's lists were at ``scored_ms`` under each setting (``ranked[s]``: indices into ``items``)."""

    scored_ms: int
    key: str
    items: tuple[str, ...]
    ranked: tuple[tuple[int, ...], ...]


def gain(rank: int) -> float:
    """DCG gain of a hit at 0-based ``rank``."""
    return 1.0 / math.log2(rank + 2)


def rewards(memo: BlendMemo, profile: UserProfile, now_ms: int, key: str, config: ModelConfig) -> list[float] | None:
    """Each setting's gain for what the user touched in ``(memo.scored_ms, now_ms]``; None when nothing to credit.

    Nothing is credited for a memo of other settings, one older than
    ``blend_memo_ms``, or when the user touched nothing in between.
    """
    if memo.key != key or now_ms - memo.scored_ms > config.blend_memo_ms:
        return None
    touched = {item for item, ts, weight in profile.history if memo.scored_ms < ts <= now_ms and weight > 0}
    if not touched:
        return None
    hit = [i for i, item in enumerate(memo.items) if item in touched]
    if not hit:
        return [0.0] * len(memo.ranked)
    hits = set(hit)
    return [sum(gain(rank) for rank, index in enumerate(ranked) if index in hits) for ranked in memo.ranked]


def memos(
    users: Sequence[str],
    profiles: Sequence[UserProfile | None],
    entries: "PartEntries",
    settings: Sequence[BlendSetting],
    served: BlendSetting,
    now_ms: int,
    k: int,
) -> dict[str, BlendMemo]:
    """Each listed user's :class:`BlendMemo` from the scorer's part entries
    (:class:`transforms.scoring.PartEntries`: one per row, item and part).

    The values are weighted by ``served`` (the setting the lists were scored
    with).  Rows without entries (cold users) get no memo: every setting gives
    them the same list.  Items the user already touched are left out; ties
    rank by item id, as the lists do.  The whole batch is ranked at once; a
    row's memo depends only on its own entries, in their order.
    """
    out: dict[str, BlendMemo] = {}
    if len(entries.row) == 0:
        return out
    key = settings_key(settings)
    base = np.asarray(served.scale, dtype=np.float64)
    # Each setting's multiplier of the served values, per part: setting scale / served scale.
    ratios = np.array([[s / b if b > 0 else 0.0 for s, b in zip(setting.scale, base.tolist())] for setting in settings], dtype=np.float64)
    # One group per (row, item), in (row, item id) order; each group's part sums run in entry order.
    vocab = entries.vocab
    rank = vocab.id_rank()
    width = np.int64(len(rank))
    entry_key = np.asarray(entries.row, dtype=np.int64) * width + rank[entries.code]
    order = np.argsort(entry_key, kind="stable")
    entry_key = entry_key[order]
    bounds = group_starts(entry_key)
    group_key = entry_key[bounds[:-1]]
    group_code = entries.code[order[bounds[:-1]]]
    # Per (group, part), the sum of its entries from 0.0 in entry order: bincount adds each bin's
    # weights in input order, so one count over (group, part) bins sums as one per part would.
    parts = len(PARTS)
    bins = np.repeat(np.arange(len(group_key)) * parts, np.diff(bounds)) + entries.part[order]
    table = np.ascontiguousarray(np.bincount(bins, weights=entries.value[order], minlength=len(group_key) * parts).reshape(len(group_key), parts).T)
    # Leave out rows without a profile, and items the user touched.
    group_row = group_key // width
    listed = np.array([profile is not None for profile in profiles], dtype=bool)
    keep = listed[group_row] & ~_sorted_member(group_key, _touched_keys(group_row, profiles, vocab, rank))
    table, group_key, group_row, group_code = table[:, keep], group_key[keep], group_row[keep], group_code[keep]
    if not len(group_key):
        return out
    return _ranked_memos(users, group_row, group_key, group_code, vocab.array(), setting_scores(table, ratios).T, key, now_ms, k)


def setting_scores(table: np.ndarray, ratios: np.ndarray, chunk: int = 16_384) -> np.ndarray:
    """Every setting's score of every candidate (settings x candidates): ``table`` (parts x candidates)
    times ``ratios`` (settings x parts), summed over parts in :data:`PARTS` order from 0.0.

    An explicit elementwise sum, not a matrix product: a BLAS kernel may round
    differently by batch size, and a row's memo must not.  A candidate's score
    depends only on its own column.  Worked in column blocks that stay in the
    CPU cache (a batch has hundreds of thousands of candidates, and the
    settings x parts passes over whole rows were bound by memory); a ratio of
    exactly 1.0 adds the part as it is (``x * 1.0 == x``).
    """
    settings, parts = ratios.shape
    width = table.shape[1]
    scores = np.zeros((settings, width), dtype=np.float64)
    plan = [[(p, float(ratios[s, p])) for p in range(parts) if ratios[s, p] != 0] for s in range(settings)]
    term = np.empty(min(chunk, width), dtype=np.float64)
    for lo in range(0, width, chunk):
        hi = min(width, lo + chunk)
        block, scratch = table[:, lo:hi], term[: hi - lo]
        for s, terms in enumerate(plan):
            out = scores[s, lo:hi]
            for p, ratio in terms:
                out += block[p] if ratio == 1.0 else np.multiply(block[p], ratio, out=scratch)
    return scores


def _sorted_member(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``np.isin(keys, wanted)`` for ``keys`` sorted ascending: a binary search per wanted key,
    not a sort of both (``wanted``, the items users touched, is the smaller)."""
    found = np.zeros(len(keys), dtype=bool)
    if len(keys) == 0 or len(wanted) == 0:
        return found
    position = np.searchsorted(keys, wanted)
    inside = position < len(keys)
    position = position[inside]
    found[position[keys[position] == wanted[inside]]] = True
    return found


def _touched_keys(rows: np.ndarray, profiles: Sequence[UserProfile | None], vocab: Vocabulary, rank: np.ndarray) -> np.ndarray:
    """``row * len(rank) + rank[item]`` of each item each of ``rows``' users touched (profile
    interests; items without a code are in no list); ``rows`` ascending."""
    width = len(rank)
    known = vocab.code
    return np.asarray(
        [
            r * width + int(rank[c])
            for r in sorted_unique(rows).tolist()
            if profiles[r] is not None
            for c in map(known.get, profiles[r].interests)
            if c is not None
        ],
        dtype=np.int64,
    )


# Batches of more candidates than this are cut to those that may reach a top k before ranking.
PRUNE_FROM = 2_048


def _ranked_memos(
    users: Sequence[str],
    group_row: np.ndarray,
    group_order: np.ndarray,
    group_code: np.ndarray,
    ids: np.ndarray,
    scores: np.ndarray,
    key: str,
    now_ms: int,
    k: int,
) -> dict[str, BlendMemo]:
    """Memos from each candidate's score under every setting (``scores``: candidates x settings).

    Candidates are one per (row, item), ``group_row`` ascending, ``group_order``
    ordering a row's items as their ids do; ``ids[group_code]`` are their items.  Each setting ranks a row's
    positive scores (ties: item id) and keeps ``k``; every row with a
    candidate gets a memo, even an empty one.
    """
    settings = scores.shape[1]
    memo_rows = sorted_unique(group_row)
    if len(group_row) > PRUNE_FROM:
        # Most candidates cannot reach any setting's top k: rank only those that may.
        keep = may_reach_top(group_row, scores, k)
        group_row, group_order, group_code, scores = group_row[keep], group_order[keep], group_code[keep], scores[keep]
    # Per setting, each row's k best: cut at the row's k-th score, then sorted.
    thresholds = row_thresholds(group_row, scores, k)
    picked_key, picked_group = [], []
    for s in range(settings):
        column = scores[:, s]
        cut = np.flatnonzero((column > 0) & (column >= thresholds[:, s]))
        cut = cut[np.lexsort((group_order[cut], -column[cut], group_row[cut]))]
        cut = cut[run_positions(group_row[cut]) < k]  # sorted by row: a position in the row's run is its rank
        picked_key.append(group_row[cut] * settings + s)
        picked_group.append(cut)
    pick_key = np.concatenate(picked_key)
    pick_group = np.concatenate(picked_group)
    order = np.argsort(pick_key, kind="stable")  # by (row, setting), rank order kept
    pick_key, pick_group = pick_key[order], pick_group[order]
    # A row's memo items: the union of its settings' picks, in item id order; picks point into it.
    used_mask = np.zeros(len(group_row), dtype=bool)
    used_mask[pick_group] = True
    used = np.flatnonzero(used_mask)  # the picked candidates, once each, in (row, item id) order
    pick = np.searchsorted(used, pick_group)
    used_row = group_row[used]
    used_names = ids[group_code[used]].tolist()
    used_bounds = np.searchsorted(used_row, np.stack([memo_rows, memo_rows + 1], axis=1))
    # Each pick as an index into its row's items; the picks of (row, setting) run from cuts[r, s] to cuts[r, s + 1].
    local = (pick - used_bounds[np.searchsorted(memo_rows, pick_key // settings), 0]).tolist()
    cuts = np.searchsorted(pick_key, memo_rows[:, None] * settings + np.arange(settings + 1)).tolist()
    out: dict[str, BlendMemo] = {}
    for r, (lo, hi), row_cuts in zip(memo_rows.tolist(), used_bounds.tolist(), cuts):
        out[users[r]] = BlendMemo(now_ms, key, tuple(used_names[lo:hi]), tuple(tuple(local[row_cuts[s] : row_cuts[s + 1]]) for s in range(settings)))
    return out


@dataclass
class ShardBlend:
    """The blend learning of one user shard: a learner per context and each user's latest memo.

    The reference engine keeps one per shard; the job's scorer keeps the
    same in keyed state (learners per shard, memos per user).
    """

    learners: dict[str, BlendLearner] = field(default_factory=dict)
    memos: dict[str, BlendMemo] = field(default_factory=dict)  # by memo_key(context, user)


def window_rewards(
    users: Sequence[str],
    profiles: Sequence[UserProfile | None],
    previous: Mapping[str, BlendMemo],
    now_ms: int,
    key: str,
    config: ModelConfig,
) -> list[list[float]]:
    """The credit of one window's listed users (sorted by id, so the sum is order-free by construction)."""
    out = []
    for user, profile in sorted(zip(users, profiles), key=lambda up: up[0]):
        memo = previous.get(user)
        if memo is None or profile is None:
            continue
        found = rewards(memo, profile, now_ms, key, config)
        if found is not None:
            out.append(found)
    return out



def memo_key(context: str, user: str) -> str:
    """Where a user's memo of a context is kept ("/" is never part of a user id)."""
    return user if context == "home" else f"{context}/{user}"


def cart_memos(
    users: Sequence[str],
    profiles: Sequence[UserProfile | None],
    model,
    config: ModelConfig,
    settings: Sequence[BlendSetting],
    now_ms: int,
    k: int,
) -> dict[str, BlendMemo]:
    """Each user's cart-list :class:`BlendMemo`: every setting's complements of the cart
    (:func:`transforms.complements.cart_complements`: the same terms, summed in its order),
    allowed items the user never touched, top ``k``.  The whole batch at once."""
    from transforms.scoring import cart_terms, items_allowed

    terms = cart_terms(profiles, model)
    if len(terms.row) == 0:
        return {}
    # One candidate per (row, item), in (row, item id) order.
    rank = model.codes.vocab.id_rank()
    width = np.int64(len(rank))
    candidates, first, term_candidate = np.unique(terms.row * width + rank[terms.code], return_index=True, return_inverse=True)
    group_row = candidates // width
    group_code = terms.code[first]
    # Each setting's scores: the positive terms of its weights, added in the terms' order from 0.0 (as a dict would).
    scores = np.zeros((len(candidates), len(settings)), dtype=np.float64)
    for s, setting in enumerate(settings):
        weights = setting.weights(config)
        weight = np.where(terms.kind == 0, weights["weight_cf"], weights["weight_content"])
        value = weight * terms.sim / terms.top
        live = (weight > 0) & (value > 0)
        scores[:, s] = np.bincount(term_candidate[live], weights=value[live], minlength=len(candidates))
    # Only items the user never touched and the business filters allow.
    touched = _touched_keys(group_row, profiles, model.codes.vocab, rank)
    keep = (scores > 0).any(axis=1) & ~np.isin(candidates, touched) & items_allowed(group_code, model, config)
    if not keep.any():
        return {}
    return _ranked_memos(users, group_row[keep], candidates[keep], group_code[keep], model.codes.vocab.array(), scores[keep], settings_key(settings), now_ms, k)


class _SettingsTable(NamedTuple):
    """Each context's settings and the config each setting scores with, for one model config."""

    config: ModelConfig
    settings: dict[str, tuple[BlendSetting, ...]]
    configs: dict[str, list[ModelConfig]]


# Per model config object (a job or engine keeps one): building settings and configs costs more
# than a small window's learning, so they are built once.  A cache only: never reaches an output.
_TABLES: dict[int, _SettingsTable] = {}


def _settings_table(config: ModelConfig) -> _SettingsTable:
    found = _TABLES.get(id(config))
    if found is not None and found.config is config:
        return found
    settings = {context: context_settings(config, context) for context in CONTEXTS}
    configs = {
        "home": [s.applied(config) for s in settings["home"]],
        "cart": [config.replace(**{n: s.weights(config)[n] for n in ("weight_cf", "weight_content")}) for s in settings["cart"]],
    }
    if len(_TABLES) > 16:
        _TABLES.clear()
    table = _SettingsTable(config, settings, configs)
    _TABLES[id(config)] = table
    return table


def score_and_learn(
    users: Sequence[str],
    profiles: Sequence[UserProfile],
    now_ms: int,
    model,
    config: ModelConfig,
    learners: Mapping[str, BlendLearner],
    previous: Mapping[str, BlendMemo],
) -> tuple[list, dict[str, BlendLearner], dict[str, BlendMemo | None]]:
    """One window of one shard: lists scored with the served settings, then the learners' steps.

    ``learners`` and the returned learners are by context (a missing one
    starts fresh); ``previous`` holds the users' memos by :func:`memo_key`.
    Returns the users' :class:`transforms.scoring.UserLists`, the learners
    after this window's credit, and each user's new memo per context by
    :func:`memo_key` (None: drop the old one, already credited).
    """
    from transforms.scoring import score_users  # scoring imports nothing from here; late to keep the module light

    table = _settings_table(config)
    settings = {context: table.settings[context] for context in CONTEXTS}
    current = {c: (learners[c].for_settings(settings[c]) if c in learners else BlendLearner.fresh(settings[c])) for c in CONTEXTS}
    served = {c: settings[c][current[c].current] for c in CONTEXTS}
    served_configs = {c: table.configs[c][current[c].current] for c in CONTEXTS}
    entries: list = []
    lists = score_users(list(profiles), now_ms, model, served_configs["home"], part_entries=entries, cart_config=served_configs["cart"])
    found = {"home": memos(users, profiles, entries[0], settings["home"], served["home"], now_ms, config.blend_k) if entries else {}}
    found["cart"] = cart_memos(users, profiles, model, config, settings["cart"], now_ms, config.blend_k)
    stepped: dict[str, BlendLearner] = {}
    new: dict[str, BlendMemo | None] = {}
    for context in CONTEXTS:
        mine = {user: previous[memo_key(context, user)] for user in users if memo_key(context, user) in previous}
        stepped[context] = learn(current[context], window_rewards(users, profiles, mine, now_ms, current[context].key, config), config)
        new.update((memo_key(context, user), found[context].get(user)) for user in users)
    return lists, stepped, new


def served_config(learner: BlendLearner | None, config: ModelConfig) -> ModelConfig:
    """The config a home-list learner's lists are scored with (``config`` for no learner yet)."""
    if learner is None:
        return config
    table = _settings_table(config)
    return table.configs["home"][learner.for_settings(table.settings["home"]).current]


def served_weights(learner: BlendLearner | None, config: ModelConfig, context: str) -> tuple[str, dict[str, float]]:
    """The setting a context's learner serves and its weights (the cart's: cf and content only)."""
    settings = _settings_table(config).settings[context]
    setting = settings[0 if learner is None else learner.for_settings(settings).current]
    weights = setting.weights(config)
    if context == "cart":
        weights = {name: weights[name] for name in ("weight_cf", "weight_content")}
    return setting.name, weights
