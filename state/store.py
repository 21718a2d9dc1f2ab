"""Values written to Redis and the batched, retrying writer every engine uses.

Every value is deterministic JSON (no wall-clock fields), so replaying the same
events after a failure overwrites each key with the same bytes: writes are
idempotent.  Writes go out in one non-transactional pipeline per call.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import orjson

from state.keys import DEFAULT_NAMESPACE, SET_KINDS, USER_KEY_KINDS, KeyKind, redis_key
from state.schemas import REDIS_LIST_VERSION, REDIS_LIST_VERSIONS
from transforms.reasons import read_reason
from transforms.scoring import ScoredItem

__all__ = ["ScoredItem", "encode_list", "decode_list", "Write", "HashWrite", "RetryPolicy", "RedisStore", "JobStats"]

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000
# The per-minute copies of the job's counters are for the dashboard's recent history only.
STATS_MINUTE_TTL_S = 2 * 24 * 3600


def encode_list(ts: int, items: Sequence[ScoredItem], **extra: Any) -> bytes:
    """A ranked list as stored (value schema :data:`state.schemas.REDIS_LIST_VERSION`):
    ``{"v": 2, "ts": event-time ms, "items": [{"item", "score", "reason"?, "why"?}], ...}``."""
    return orjson.dumps({"v": REDIS_LIST_VERSION, "ts": int(ts), "items": [i.to_dict() for i in items], **extra})


def decode_list(raw: bytes | str | None) -> tuple[int, list[ScoredItem], dict[str, Any]]:
    """Inverse of :func:`encode_list`: (ts, items, other fields); an absent key is an empty list.

    Reads every value schema version (:data:`state.schemas.REDIS_LIST_VERSIONS`;
    version 1 has no ``"v"`` and reasons as text only); another raises ValueError.
    """
    if raw is None:
        return 0, [], {}
    data = orjson.loads(raw)
    version = data.pop("v", 1)
    if version not in REDIS_LIST_VERSIONS:
        raise ValueError(f"unsupported list value version {version!r}")
    items = [ScoredItem(d["item"], float(d["score"]), read_reason(d)) for d in data.pop("items")]
    return int(data.pop("ts")), items, data


@dataclass(frozen=True)
class Write:
    """One SET (with optional TTL in seconds) or DEL, built from a key kind and id.

    For a set key (:data:`state.keys.SET_KINDS`) the value is a member to add (SADD).
    """

    kind: KeyKind
    part: str | None
    value: bytes | None  # None deletes the key
    ttl_s: int | None = None


@dataclass(frozen=True)
class HashWrite:
    """HSET of some fields of a hash (absolute values, so replaying it is idempotent), then its TTL if given.

    The TTL is (re)set on every write: a hash lives ``ttl_s`` after its last change.
    """

    kind: KeyKind
    part: str | None
    fields: Mapping[str, str]
    ttl_s: int | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for Redis writes: the sink must ride out a Redis restart."""

    attempts: int = 30
    first_delay_s: float = 0.05
    max_delay_s: float = 2.0


@dataclass(frozen=True)
class JobStats:
    """What :meth:`RedisStore.read_job_stats` read: counters as stored (text), per-minute counts, recent lags in ms."""

    counters: dict[str, str]
    per_minute: dict[int, dict[str, int]]
    lags_ms: list[int]


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw


def _is_int(raw: bytes | str) -> bool:
    try:
        int(raw)
    except ValueError:
        return False
    return True


def _counts(raw: dict) -> dict[str, int]:
    """A hash of HINCRBY counters; a field that is not an integer (never written so) is skipped."""
    return {_text(k): int(v) for k, v in raw.items() if _is_int(v)}


class RedisStore:
    """Batched writer/reader over one Redis connection pool.

    ``sleep`` is injected so tests of the retry loop need no real waiting.
    """

    def __init__(
        self,
        client: Any,
        namespace: str = DEFAULT_NAMESPACE,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.retry = retry
        self._sleep = sleep

    @classmethod
    def from_url(cls, url: str, namespace: str = DEFAULT_NAMESPACE, **kwargs: Any) -> "RedisStore":
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30)
        return cls(client, namespace=namespace, **kwargs)

    def key(self, kind: KeyKind, part: str | None = None) -> str:
        return redis_key(kind, part, self.namespace)

    def _with_retry(self, what: str, action: Callable[[], Any]) -> Any:
        import redis

        delay = self.retry.first_delay_s
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return action()
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                if attempt == self.retry.attempts:
                    raise
                log.warning("redis %s failed (%s), retry %d in %.2fs", what, type(exc).__name__, attempt, delay)
                self._sleep(delay)
                delay = min(delay * 2, self.retry.max_delay_s)
        raise AssertionError("unreachable")

    def apply(
        self,
        writes: Sequence[Write | HashWrite] = (),
        dead_letters: Sequence[bytes] = (),
        counters: Mapping[str, int] | None = None,
        minute_ms: int | None = None,
        gauges: Mapping[str, int | str] | None = None,
        lags_ms: Sequence[int] = (),
    ) -> None:
        """A sink batch in one pipeline, one round trip (retried whole, like each part alone):
        :meth:`write`, :meth:`dead_letter`, :meth:`add_stats`, :meth:`set_stats` and
        :meth:`record_freshness` together.  A job sink calls this once per batch: a window's
        lists, counters and lags cost one round trip instead of up to five."""
        counters = {k: v for k, v in (counters or {}).items() if v}
        if not (writes or dead_letters or counters or gauges or lags_ms):
            return

        def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            self._queue_writes(pipe, writes)
            self._queue_dead_letters(pipe, dead_letters)
            self._queue_stats(pipe, counters, minute_ms)
            if gauges:
                pipe.hset(self.key(KeyKind.STATS), mapping=dict(gauges))
            self._queue_freshness(pipe, lags_ms)
            pipe.execute()

        self._with_retry("batch", run)

    def write(self, writes: Iterable[Write | HashWrite]) -> int:
        """Apply SET/DEL, HSET and SADD writes in one pipeline (retried whole: every write is idempotent)."""
        writes = list(writes)
        if not writes:
            return 0

        def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            self._queue_writes(pipe, writes)
            pipe.execute()

        self._with_retry("write", run)
        return len(writes)

    def _queue_writes(self, pipe, writes: Iterable[Write | HashWrite]) -> None:
        for w in writes:
            key = self.key(w.kind, w.part)
            if isinstance(w, HashWrite):
                if w.fields:
                    pipe.hset(key, mapping=dict(w.fields))
                    if w.ttl_s:
                        pipe.expire(key, w.ttl_s)
            elif w.kind in SET_KINDS and w.value is not None:
                pipe.sadd(key, w.value)
            elif w.value is None:
                pipe.delete(key)
            elif w.ttl_s:
                pipe.set(key, w.value, ex=w.ttl_s)
            else:
                pipe.set(key, w.value)

    def add_stats(self, counters: dict[str, int], minute_ms: int | None = None) -> None:
        """Add to the job's counters hash (HINCRBY; not idempotent, so only for monitoring).

        With ``minute_ms`` (the start of the current minute of processing time)
        the same amounts are also added to that minute's hash, which expires
        after :data:`STATS_MINUTE_TTL_S`: the dashboard's events/s, late events
        and dead letters per minute.
        """
        counters = {k: v for k, v in counters.items() if v}
        if not counters:
            return

        def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            self._queue_stats(pipe, counters, minute_ms)
            pipe.execute()

        self._with_retry("stats", run)

    def _queue_stats(self, pipe, counters: Mapping[str, int], minute_ms: int | None) -> None:
        if not counters:
            return
        minute_key = self.key(KeyKind.STATS_MINUTE, str(minute_ms)) if minute_ms is not None else None
        for name, value in counters.items():
            pipe.hincrby(self.key(KeyKind.STATS), name, int(value))
            if minute_key is not None:
                pipe.hincrby(minute_key, name, int(value))
        if minute_key is not None:
            pipe.expire(minute_key, STATS_MINUTE_TTL_S)

    def set_stats(self, values: dict[str, int | str]) -> None:
        """Set gauges in the job's counters hash (HSET; e.g. the last closed window, the embeddings in use)."""
        if not values:
            return
        self._with_retry("stats", lambda: self.client.hset(self.key(KeyKind.STATS), mapping=values))

    def dead_letter(self, entries: Iterable[bytes], max_len: int = 100_000) -> int:
        """Append dead-lettered records (JSON with reason and raw) to the capped dead-letter stream."""
        entries = list(entries)
        if not entries:
            return 0

        def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            self._queue_dead_letters(pipe, entries, max_len)
            pipe.execute()

        self._with_retry("dead-letter", run)
        return len(entries)

    def _queue_dead_letters(self, pipe, entries: Iterable[bytes], max_len: int = 100_000) -> None:
        for entry in entries:
            pipe.xadd(self.key(KeyKind.DEAD_LETTER), {"record": entry}, maxlen=max_len, approximate=True)

    def record_freshness(self, lags_ms: list[int], keep: int = 100_000) -> None:
        """Append event -> list lags (ms) to the capped freshness list read by `flowrec bench stream`."""
        if not lags_ms:
            return

        def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            self._queue_freshness(pipe, lags_ms, keep)
            pipe.execute()

        self._with_retry("freshness", run)

    def _queue_freshness(self, pipe, lags_ms: Sequence[int], keep: int = 100_000) -> None:
        if lags_ms:
            pipe.rpush(self.key(KeyKind.FRESHNESS), *lags_ms)
            pipe.ltrim(self.key(KeyKind.FRESHNESS), -keep, -1)

    def read_job_stats(self, minutes: Sequence[int], recent_lags: int) -> "JobStats":
        """The job's counters hash, its per-minute hashes of ``minutes`` and the newest ``recent_lags``
        freshness lags, in one round trip (what the dashboard shows of the job)."""
        if recent_lags < 1:
            raise ValueError(f"recent_lags must be at least 1, got {recent_lags}")
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.key(KeyKind.STATS))
        for minute in minutes:
            pipe.hgetall(self.key(KeyKind.STATS_MINUTE, str(minute)))
        pipe.lrange(self.key(KeyKind.FRESHNESS), -recent_lags, -1)
        replies = pipe.execute()
        per_minute = {minute: _counts(raw) for minute, raw in zip(minutes, replies[1:-1]) if raw}
        lags = [int(v) for v in replies[-1] if _is_int(v)]
        return JobStats({_text(k): _text(v) for k, v in replies[0].items()}, per_minute, lags)

    def get_many(self, keys: Sequence[tuple[KeyKind, str | None]]) -> list[bytes | None]:
        """MGET of several keys in one round trip."""
        if not keys:
            return []
        return self.client.mget([self.key(kind, part) for kind, part in keys])

    def delete_user(self, user_id: str) -> int:
        """Remove every per-user key now (privacy); the job forgets its state on a forget event."""
        return self.client.delete(*(self.key(kind, user_id) for kind in USER_KEY_KINDS))
