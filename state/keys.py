"""The Redis key layout, version 1.  :func:`redis_key` builds every key flowrec reads or writes.

Layout (``{ns}`` is the namespace, default ``flowrec``; values are UTF-8 JSON
written by :mod:`state.store`, lists in the versioned shape of :mod:`state.schemas`):

====================================  ==========================================  =========
key                                   value                                       TTL
====================================  ==========================================  =========
``{ns}:v1:rec:{user}``                the user's home list ``RecList``            user TTL
``{ns}:v1:complements:{user}``        "goes with your cart" list ``RecList``      user TTL
``{ns}:v1:profile:{user}``            top interests, cart, purchased ``Profile``  user TTL
``{ns}:v1:ads:{user}``                the user's ads (sponsored) ``RecList``      user TTL
``{ns}:v1:sim:{item}``                collaborative neighbours ``NeighbourList``  item TTL
``{ns}:v1:content:{item}``            content neighbours ``NeighbourList``        item TTL
``{ns}:v1:item:{item}``               catalog item JSON                           none
``{ns}:v1:trend:global``              global trending ``NeighbourList``           none
``{ns}:v1:trend:cat:{category}``      trending in a top category                  none
``{ns}:v1:stats``                     job counters (Redis hash)                   none
``{ns}:v1:stats:min:{minute_ms}``     the job's counters added in one minute of   2 days
                                      processing time (Redis hash; dashboard)
``{ns}:v1:deadletter``                dead-lettered records (Redis stream)        capped
``{ns}:v1:freshness``                 recent event->list lags in ms (Redis list)  capped
``{ns}:v1:experiment:{id}``           an experiment as the job applied it: JSON   none
                                      ``{"v": 1, "experiment": declaration,
                                      "started_ms", "updated_ms", "stopped_ms"}``
                                      (:class:`transforms.experiments.ExperimentRecord`)
``{ns}:v1:experiments``               ids of every experiment ever applied        none
                                      (Redis set; a write of it is an SADD)
``{ns}:v1:metrics:min:{minute_ms}``   attributed counts of one minute (hash)      7 days
``{ns}:v1:metrics:exp:{experiment}``  cumulative counts of an experiment (hash)   none
``{ns}:v1:metrics:ads:{day_ms}``      ad counts per item and campaign of a day    3 days
``{ns}:v1:metrics:experiments``       experiments with counts (hash name -> "1")   none
====================================  ==========================================  =========

``ads:{user}`` is written only while the catalog has sponsored items
(:mod:`transforms.ads`); its list carries ``"relevance"``, each item's
relevance in the order of ``"items"``, so the API can re-rank by current bids.

The ``metrics:*`` hashes are written by the job's attribution with HSET of
absolute values; their fields are built and parsed only by :mod:`state.metrics`.
``{minute_ms}`` and ``{day_ms}`` are the epoch-ms start of the minute or UTC day
(multiples of 60,000 and 86,400,000); ``{experiment}`` is an experiment name
(:data:`transforms.recid.NAME_PATTERN`) or ``~`` for users in no experiment.

``profile:{user}`` is personal data (what the user bought and has in the
cart): it is for flowrec's API, not for shop frontends; give frontends a
Redis user limited to the list keys (see the README).  ``{ns}:v1:cart:{user}``
is the name releases before the rename gave the complements list; nothing
writes it any more, forgetting a user still deletes it.

Ids are validated (length and charset, see :data:`transforms.events.ID_PATTERN`)
and categories by the catalog's one rule (:func:`transforms.catalog.valid_top_category`)
before they become part of a key, so no caller can inject ``*`` patterns or
separators.  Every entry point (API, job parsing, replay, backfill, bootstrap)
rejects a record that breaks these rules, so this check never fires on input.
Bump :data:`LAYOUT_VERSION` when a value's shape changes; readers of the old version keep working until its keys expire.
"""

from __future__ import annotations

import enum
import re

from transforms.catalog import valid_top_category
from transforms.events import valid_id
from transforms.recid import NAME_PATTERN, NO_EXPERIMENT

LAYOUT_VERSION = 1
DEFAULT_NAMESPACE = "flowrec"
_NAMESPACE = re.compile(r"[A-Za-z0-9_\-]{1,32}")


class KeyKind(enum.Enum):
    """What a key holds; the value is its segment in the key."""

    USER_RECS = "rec"
    COMPLEMENTS = "complements"
    PROFILE = "profile"
    ADS = "ads"
    # Written by releases before the complements list was renamed; only deleted now.
    LEGACY_CART = "cart"
    ITEM_NEIGHBOURS = "sim"
    CONTENT_NEIGHBOURS = "content"
    ITEM = "item"
    TRENDING_GLOBAL = "trend:global"
    TRENDING_CATEGORY = "trend:cat"
    STATS = "stats"
    STATS_MINUTE = "stats:min"
    DEAD_LETTER = "deadletter"
    FRESHNESS = "freshness"
    EXPERIMENT = "experiment"
    EXPERIMENTS = "experiments"
    METRICS_MINUTE = "metrics:min"
    METRICS_EXPERIMENT = "metrics:exp"
    METRICS_ADS = "metrics:ads"
    METRICS_EXPERIMENTS = "metrics:experiments"


_USER_KINDS = {KeyKind.USER_RECS, KeyKind.COMPLEMENTS, KeyKind.PROFILE, KeyKind.LEGACY_CART, KeyKind.ADS}
# Every key holding something about one user: what forgetting the user deletes.
USER_KEY_KINDS = (KeyKind.USER_RECS, KeyKind.COMPLEMENTS, KeyKind.PROFILE, KeyKind.LEGACY_CART, KeyKind.ADS)
_ITEM_KINDS = {KeyKind.ITEM_NEIGHBOURS, KeyKind.CONTENT_NEIGHBOURS, KeyKind.ITEM}
_SINGLETONS = {KeyKind.TRENDING_GLOBAL, KeyKind.STATS, KeyKind.DEAD_LETTER, KeyKind.FRESHNESS, KeyKind.EXPERIMENTS, KeyKind.METRICS_EXPERIMENTS}
# Keys holding a Redis set: a Write's value is a member to add (SADD), not the value to SET.
SET_KINDS = frozenset({KeyKind.EXPERIMENTS})
# Kinds whose part is the epoch-ms start of a period: the period's length in ms.
_PERIOD_KINDS = {KeyKind.STATS_MINUTE: 60_000, KeyKind.METRICS_MINUTE: 60_000, KeyKind.METRICS_ADS: 86_400_000}
_EPOCH_MS = re.compile(r"0|[1-9][0-9]{0,15}")


class InvalidKeyPart(ValueError):
    """An id or category that must not become part of a Redis key."""


def redis_key(kind: KeyKind, part: str | None = None, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The one place a Redis key is built.

    ``part`` is the user id, item id or category the key is about (``None`` for
    the singleton keys).  Raises :class:`InvalidKeyPart` for anything that is not
    a valid id, so a bad id never reaches Redis.
    """
    if not _NAMESPACE.fullmatch(namespace):
        raise InvalidKeyPart(f"namespace must match {_NAMESPACE.pattern}")
    prefix = f"{namespace}:v{LAYOUT_VERSION}:{kind.value}"
    if kind in _SINGLETONS:
        if part is not None:
            raise InvalidKeyPart(f"{kind.name} takes no id")
        return prefix
    if kind is KeyKind.TRENDING_CATEGORY:
        if not valid_top_category(part):
            raise InvalidKeyPart("a top category must be 1-128 printable chars without / * ? [ ] \\")
        return f"{prefix}:{part}"
    if kind is KeyKind.EXPERIMENT:
        if not isinstance(part, str) or not NAME_PATTERN.fullmatch(part):
            raise InvalidKeyPart("an experiment id must be 1-32 chars of [A-Za-z0-9_-]")
        return f"{prefix}:{part}"
    if kind in _PERIOD_KINDS:
        period = _PERIOD_KINDS[kind]
        if not (isinstance(part, str) and _EPOCH_MS.fullmatch(part) and int(part) % period == 0):
            raise InvalidKeyPart(f"{kind.name} takes the epoch-ms start of its period (a multiple of {period})")
        return f"{prefix}:{part}"
    if kind is KeyKind.METRICS_EXPERIMENT:
        if not (part == NO_EXPERIMENT or (isinstance(part, str) and NAME_PATTERN.fullmatch(part))):
            raise InvalidKeyPart(f"an experiment must be {NO_EXPERIMENT!r} or 1-32 chars of [A-Za-z0-9_-]")
        return f"{prefix}:{part}"
    if kind in _USER_KINDS | _ITEM_KINDS:
        if not valid_id(part):
            what = "user_id" if kind in _USER_KINDS else "item_id"
            raise InvalidKeyPart(f"{what} must be 1-128 chars of [A-Za-z0-9_.:@-]")
        return f"{prefix}:{part}"
    raise InvalidKeyPart(f"unknown key kind {kind!r}")  # pragma: no cover - enum is closed
