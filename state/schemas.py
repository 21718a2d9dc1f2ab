"""Versioned encodings of everything flowrec keeps in Flink managed state, and the versions of the
list values it writes to Redis.

Each value is UTF-8 JSON (orjson: floats round-trip exactly) whose first field
``"v"`` is the schema version.  Decoders accept every version they know and
reject others with :class:`SchemaError`, so a savepoint taken by one release
restores in the next.  Nothing here pickles Python objects.

==========================  ==========================================================
value                       fields (version 1)
==========================  ==========================================================
user profile                L landmark ms, t last ts, i [item], s [interest], a [action],
                            h [[item, ts, weight]], c [[item, ts]], p [[item, ts]];
                            version 2 adds f (forgotten until, ms; null: never forgotten);
                            version 3 adds x [[half-life ms, landmark ms, [sum per item
                            of i]]] when variant half-lives are kept (absent: none)
co-occurrence row           o [other item], w [weight] (snapshots and bootstrap lines; the job's
                            item model keeps columnar blocks, see :mod:`state.itemstate`)
neighbour list              i [item], s [score]
trending bucket             i [item], w [weight]
id list                     i [item]
versioned value             x [[window, payload]]  (payload: another encoded value)
catalog facts               k top category, s in stock
sponsored bids              b {item: bid} of every sponsored item (the scorer's ``a:`` entry)
sponsorships                s {item: [bid, campaign]} of every sponsored item (ad spend)
embedding version           e path of the export version directory
item evidence               w since window (the embedding switch it counts from; -1: the
                            job's start), i [partner item], s [co-occurrence weight]: an
                            item's heaviest co-occurrences for online item vectors
cold prior                  w since window (as above), c [float]: the candidate vector the
                            export's feature towers give an item it lacks
blend learner               k settings key, g [gain per setting], c served setting, n observations
blend memo                  t scored ms, k settings key, i [item], r [[index into i] per setting]
experiment in effect        d the running experiment's declaration (null: none)
experiment record           r :class:`transforms.experiments.ExperimentRecord` as a dict
                            (null: none running)
attribution state           version 2: settled {the version 1 fields}, b settled ms (the
                            user's bound), log {i [item], e [type code], t [ms], r [rec_id],
                            o [position], pr [price or null], q [quantity or null]};
                            version 1 (n next arrival number, m [{r rec_id, e experiment,
                            a variant, c context, q arrival, s [[item, position, shown ms]],
                            k [[item, outcome code]] counted, h [item] chosen}]) restores
                            as a settled state with an empty log and no bound yet
metric totals               f {field: value} (fields of :mod:`state.metrics`)
==========================  ==========================================================

One value is binary, not JSON: a **profile block** (:func:`encode_profile_block`),
an entry of the user-state log (:mod:`state.profile_log`) holding many users'
encoded profiles.  Its profiles are already JSON; embedding them in a JSON
document would escape every quote of every profile, so a block frames them:
``b"FRPB"``, a version byte (:data:`PROFILE_BLOCK_VERSION`), the entry count
(uint32), then per entry a head — user id length (uint16), the user's last
event time (int64 ms), profile length (int32; -1: the user was removed) — the
user id (UTF-8) and the profile bytes.  All integers little-endian.

Redis list values (``rec:``, ``complements:``, ``profile:``, ``sim:``,
``content:``, ``trend:``; written by :func:`state.store.encode_list`) carry
their own version, :data:`REDIS_LIST_VERSION`:

=======  ======================================================================
version  shape
=======  ======================================================================
1        ``{"ts", "items": [{"item", "score", "reason"?}], ...}`` (no ``"v"``)
2        ``{"v": 2, "ts", "items": [{"item", "score", "reason"?, "why"?}], ...}``:
         ``reason`` is still the English text, ``why`` its structured form
         ``{"code", "item"?, "category"?, "note"?}`` (:mod:`transforms.reasons`)
=======  ======================================================================

Version 2 only adds fields, so a reader of version 1 reads it unchanged.
"""

from __future__ import annotations

import struct
from typing import Any, Iterable

import numpy as np
import orjson

from transforms.blend import BlendLearner, BlendMemo
from transforms.attribution import AttributionState, UserFeedback
from transforms.experiments import Experiment, ExperimentError, ExperimentRecord, parse_experiment
from transforms.profile import UserProfile

PROFILE_VERSION = 3
# Redis list values: the version written, and every version readers accept.
REDIS_LIST_VERSION = 2
REDIS_LIST_VERSIONS = (1, 2)
ROW_VERSION = 1
LIST_VERSION = 1
ATTRIBUTION_VERSION = 2
TOTALS_VERSION = 1


class SchemaError(ValueError):
    """A stored value with an unknown version or shape."""


def _load(raw: bytes, versions: Iterable[int]) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"state value is not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("v") not in set(versions):
        raise SchemaError(f"unsupported state value version {data.get('v') if isinstance(data, dict) else '?'}")
    return data


def _shape_checked(decode):
    """Report a known version with missing or mistyped fields as a SchemaError."""

    def checked(raw: bytes):
        try:
            return decode(raw)
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            if isinstance(exc, SchemaError):
                raise
            raise SchemaError(f"malformed state value: {type(exc).__name__}: {exc}") from exc

    checked.__name__ = decode.__name__
    checked.__doc__ = decode.__doc__
    return checked


def encode_profile(profile: UserProfile) -> bytes:
    return orjson.dumps(
        {
            "v": PROFILE_VERSION,
            "L": profile.landmark_ms,
            "t": profile.last_ts,
            "i": list(profile.interests.keys()),
            "s": list(profile.interests.values()),
            "a": [profile.last_action.get(i, -1) for i in profile.interests],
            "h": [list(h) for h in profile.history],
            "c": [[k, v] for k, v in profile.cart.items()],
            "p": [[k, v] for k, v in profile.purchased.items()],
            "f": profile.forgotten_until,
            # Variant half-lives' sums, aligned with "i" (ModelConfig.variant_half_lives_ms): [[half-life, landmark, sums]].
            **({"x": [[h, landmark, [sums.get(i, 0.0) for i in profile.interests]] for h, (landmark, sums) in profile.variant_interests.items()]} if profile.variant_interests else {}),
        }
    )


PROFILE_BLOCK_MAGIC = b"FRPB"
PROFILE_BLOCK_VERSION = 1
_BLOCK_HEAD = struct.Struct("<4sBI")
_ENTRY_HEAD = struct.Struct("<Hqi")  # user id length, last event ms, profile length (REMOVED: none)
REMOVED = -1


def encode_profile_block(entries: Iterable[tuple[str, int, bytes | None]]) -> bytes:
    """Many users' state in one value: ``(user, last event ms, encoded profile or None: removed)``."""
    parts = [b""]
    head = _ENTRY_HEAD.pack
    count = 0
    for user, last_ts, raw in entries:
        key = user.encode()
        if raw is None:
            parts += (head(len(key), last_ts, REMOVED), key)
        else:
            parts += (head(len(key), last_ts, len(raw)), key, raw)
        count += 1
    parts[0] = _BLOCK_HEAD.pack(PROFILE_BLOCK_MAGIC, PROFILE_BLOCK_VERSION, count)
    return b"".join(parts)


def decode_profile_block(raw: bytes) -> list[tuple[str, int, bytes | None]]:
    """The entries of :func:`encode_profile_block`, in order (raises :class:`SchemaError` for another layout)."""
    if len(raw) < _BLOCK_HEAD.size or raw[:4] != PROFILE_BLOCK_MAGIC:
        raise SchemaError("not a profile block")
    _, version, count = _BLOCK_HEAD.unpack_from(raw)
    if version != PROFILE_BLOCK_VERSION:
        raise SchemaError(f"unsupported profile block version {version}")
    out: list[tuple[str, int, bytes | None]] = []
    at = _BLOCK_HEAD.size
    head, head_size = _ENTRY_HEAD.unpack_from, _ENTRY_HEAD.size
    try:
        for _ in range(count):
            n, last_ts, size = head(raw, at)
            at += head_size
            user = raw[at : at + n].decode()
            at += n
            if size == REMOVED:
                out.append((user, last_ts, None))
                continue
            if size < 0 or at + size > len(raw):
                raise SchemaError("malformed profile block: entry past its end")
            out.append((user, last_ts, raw[at : at + size]))
            at += size
    except (struct.error, UnicodeDecodeError) as exc:
        raise SchemaError(f"malformed profile block: {type(exc).__name__}: {exc}") from exc
    if at != len(raw):
        raise SchemaError("malformed profile block: trailing bytes")
    return out


@_shape_checked
def decode_profile(raw: bytes) -> UserProfile:
    d = _load(raw, (1, 2, PROFILE_VERSION))
    return UserProfile(
        landmark_ms=d["L"],
        last_ts=d["t"],
        interests=dict(zip(d["i"], d["s"])),
        last_action={i: a for i, a in zip(d["i"], d["a"]) if a >= 0},
        history=[(h[0], h[1], h[2]) for h in d["h"]],
        cart={k: v for k, v in d["c"]},
        purchased={k: v for k, v in d["p"]},
        forgotten_until=d.get("f"),
        variant_interests={h: (landmark, dict(zip(d["i"], sums))) for h, landmark, sums in d.get("x", ())},
    )


def encode_row(others: Iterable[str], weights: Iterable[float]) -> bytes:
    return orjson.dumps({"v": ROW_VERSION, "o": list(others), "w": [float(w) for w in weights]})


@_shape_checked
def decode_row(raw: bytes) -> tuple[list[str], list[float]]:
    d = _load(raw, (ROW_VERSION,))
    return d["o"], d["w"]


def encode_scored(ids: np.ndarray | list, scores: np.ndarray | list) -> bytes:
    """A ranked list (neighbours, trending) as stored in state."""
    return orjson.dumps({"v": LIST_VERSION, "i": list(ids), "s": [float(s) for s in scores]})


@_shape_checked
def decode_scored(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    d = _load(raw, (LIST_VERSION,))
    return np.array(d["i"], dtype=object), np.array(d["s"], dtype=np.float64)


def encode_ids(ids: Iterable[str]) -> bytes:
    return orjson.dumps({"v": LIST_VERSION, "i": list(ids)})


@_shape_checked
def decode_ids(raw: bytes) -> list[str]:
    return _load(raw, (LIST_VERSION,))["i"]


def encode_versions(versions: list[tuple[int, bytes]]) -> bytes:
    """Values of one key by the window that produced them (oldest first)."""
    return orjson.dumps({"v": LIST_VERSION, "x": [[w, p.decode()] for w, p in versions]})


@_shape_checked
def decode_versions(raw: bytes) -> list[tuple[int, bytes]]:
    return [(w, p.encode()) for w, p in _load(raw, (LIST_VERSION,))["x"]]


def encode_facts(top_category: str, in_stock: bool) -> bytes:
    return orjson.dumps({"v": LIST_VERSION, "k": top_category, "s": in_stock})


@_shape_checked
def decode_facts(raw: bytes) -> tuple[str, bool]:
    d = _load(raw, (LIST_VERSION,))
    return d["k"], d["s"]


def encode_sponsored(bids: dict[str, float]) -> bytes:
    """Every sponsored item's bid (cost per click), as of one catalog window."""
    return orjson.dumps({"v": LIST_VERSION, "b": {item: float(bid) for item, bid in sorted(bids.items())}})


@_shape_checked
def decode_sponsored(raw: bytes) -> dict[str, float]:
    bids = _load(raw, (LIST_VERSION,))["b"]
    if not isinstance(bids, dict):
        raise SchemaError("sponsored bids must be an object")
    return {str(item): float(bid) for item, bid in bids.items()}


def encode_sponsorships(sponsored: dict[str, tuple[float, str]]) -> bytes:
    """Every sponsored item's bid and campaign (the ad-spend operator's current catalog)."""
    return orjson.dumps({"v": LIST_VERSION, "s": {item: [float(bid), campaign] for item, (bid, campaign) in sorted(sponsored.items())}})


@_shape_checked
def decode_sponsorships(raw: bytes) -> dict[str, tuple[float, str]]:
    entries = _load(raw, (LIST_VERSION,))["s"]
    if not isinstance(entries, dict):
        raise SchemaError("sponsorships must be an object")
    return {str(item): (float(bid), str(campaign)) for item, (bid, campaign) in entries.items()}


def encode_embedding_ref(path: str) -> bytes:
    """The learned-embedding version in use: the path of its export directory (see :mod:`state.embeddings`)."""
    return orjson.dumps({"v": LIST_VERSION, "e": path})


@_shape_checked
def decode_embedding_ref(raw: bytes) -> str:
    path = _load(raw, (LIST_VERSION,))["e"]
    if not isinstance(path, str):
        raise SchemaError("embedding version path must be a string")
    return path


def encode_evidence(since_window: int, ids: np.ndarray | list, weights: np.ndarray | list) -> bytes:
    """An item's online-vector evidence (the scorer's ``o:`` entry): partners and weights since ``since_window``."""
    return orjson.dumps({"v": LIST_VERSION, "w": int(since_window), "i": list(ids), "s": [float(w) for w in weights]})


@_shape_checked
def decode_evidence(raw: bytes) -> tuple[int, np.ndarray, np.ndarray]:
    d = _load(raw, (LIST_VERSION,))
    return int(d["w"]), np.array(d["i"], dtype=object), np.array(d["s"], dtype=np.float64)


def encode_cold_prior(since_window: int, vector: np.ndarray) -> bytes:
    """An item's cold prior (the scorer's ``v:`` entry): its feature-tower vector under the version in effect since ``since_window``."""
    return orjson.dumps({"v": LIST_VERSION, "w": int(since_window), "c": [float(x) for x in vector]})


@_shape_checked
def decode_cold_prior(raw: bytes) -> tuple[int, np.ndarray]:
    d = _load(raw, (LIST_VERSION,))
    return int(d["w"]), np.array(d["c"], dtype=np.float32)


def encode_experiment_ref(experiment: Experiment | None) -> bytes:
    """The experiment the scorer applies from a window on (None: none)."""
    return orjson.dumps({"v": LIST_VERSION, "d": None if experiment is None else experiment.to_dict()})


@_shape_checked
def decode_experiment_ref(raw: bytes) -> Experiment | None:
    declaration = _load(raw, (LIST_VERSION,))["d"]
    try:
        return None if declaration is None else parse_experiment(declaration)
    except ExperimentError as exc:
        raise SchemaError(f"stored experiment: {exc}") from exc


def encode_experiment_record(record: ExperimentRecord | None) -> bytes:
    """The running experiment as the content operator keeps it (None: none running)."""
    return orjson.dumps({"v": LIST_VERSION, "r": None if record is None else record.to_dict()})


@_shape_checked
def decode_experiment_record(raw: bytes) -> ExperimentRecord | None:
    record = _load(raw, (LIST_VERSION,))["r"]
    try:
        return None if record is None else ExperimentRecord.from_dict(record)
    except ExperimentError as exc:
        raise SchemaError(f"stored experiment: {exc}") from exc


def encode_attribution(state: UserFeedback) -> bytes:
    """A user's attribution (:class:`transforms.attribution.UserFeedback`: settled state and log)."""
    return orjson.dumps({"v": ATTRIBUTION_VERSION, **state.to_state()})


@_shape_checked
def decode_attribution(raw: bytes) -> UserFeedback:
    data = _load(raw, (1, ATTRIBUTION_VERSION))
    if data["v"] == 1:  # before late feedback was logged: all of it settled
        return UserFeedback(AttributionState.from_state(data))
    return UserFeedback.from_state(data)


def encode_totals(totals: dict[str, float]) -> bytes:
    """Running metric totals by hash field (one minute, day or experiment of the metrics aggregator)."""
    return orjson.dumps({"v": TOTALS_VERSION, "f": totals})


@_shape_checked
def decode_totals(raw: bytes) -> dict[str, float]:
    return {str(k): float(v) for k, v in _load(raw, (TOTALS_VERSION,))["f"].items()}


BLEND_VERSION = 1


def encode_blend_learner(learner: BlendLearner) -> bytes:
    """One shard's blend learner (:class:`transforms.blend.BlendLearner`)."""
    return orjson.dumps({"v": BLEND_VERSION, "k": learner.key, "g": [float(g) for g in learner.gains], "c": learner.current, "n": learner.observations})


@_shape_checked
def decode_blend_learner(raw: bytes) -> BlendLearner:
    d = _load(raw, (BLEND_VERSION,))
    gains = [float(g) for g in d["g"]]
    current = int(d["c"])
    if not 0 <= current < len(gains):
        raise SchemaError(f"blend learner serves setting {current} of {len(gains)}")
    return BlendLearner(str(d["k"]), gains, current, int(d["n"]))


def encode_blend_memo(memo: BlendMemo) -> bytes:
    """A user's lists under each blend setting at their last scoring (:class:`transforms.blend.BlendMemo`)."""
    return orjson.dumps({"v": BLEND_VERSION, "t": memo.scored_ms, "k": memo.key, "i": list(memo.items), "r": [list(r) for r in memo.ranked]})


@_shape_checked
def decode_blend_memo(raw: bytes) -> BlendMemo:
    d = _load(raw, (BLEND_VERSION,))
    items = tuple(str(i) for i in d["i"])
    ranked = tuple(tuple(int(i) for i in r) for r in d["r"])
    if any(not 0 <= i < len(items) for r in ranked for i in r):
        raise SchemaError("blend memo ranks point outside its items")
    return BlendMemo(int(d["t"]), str(d["k"]), items, ranked)
