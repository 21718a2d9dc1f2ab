"""One user shard's profiles as a log of blocks: a few state calls per window, not two per user.

Layout (the user-state operator's MapState ``profile-log``, keyed by the shard):
``sequence number -> profile block`` (:func:`state.schemas.encode_profile_block`).
Each call of the operator appends **one** block with the users it changed
(their encoded profile and last event time; removed users as a removal mark),
instead of a get and two puts per user.  Reading every block in sequence order,
later entries replacing earlier ones, gives the shard's users.

The log is kept short by cleaning, a little at a time as blocks are appended:
while the log holds more than ``max_ratio`` times the bytes of the live
profiles (plus ``slack_bytes``), its oldest block is dropped and those of its
users whose latest value it holds are carried into the block being written.
The carried profiles are already encoded, so cleaning costs a copy, not an
encode.  A removal mark is dropped with its block once it is the oldest (no
older block can hold the user any more).  Carrying per call is bounded
(``max_carry_bytes`` beyond what the call wrote), so a large old block (a
bootstrap, a migrated savepoint) is absorbed over several calls, not in one.

Everything lives in memory too, encoded; the most recently written or read
profiles are also kept decoded, in a :class:`~state.recent.RecentlyUsed` that every shard
of one operator instance shares (a decoded profile takes about five times its
encoding: keeping every user decoded grew memory with every user the shard
ever saw, and a bound per shard with the number of shards an instance holds),
and the others are decoded again when next read.  So the operator reads state only when it opens a shard: after a
restore or a rescale, from the blocks; from a savepoint in the earlier
per-user layout (MapStates ``profiles`` and ``last_seen``) by migrating it
(:meth:`migrate`).

Pure Python: no Flink here; the operator moves :meth:`flush`'s puts and
removes into its MapState.
"""

from __future__ import annotations

import logging
from typing import Iterable

from state.recent import RecentlyUsed
from state.schemas import SchemaError, decode_profile, decode_profile_block, encode_profile_block
from transforms.profile import UserProfile

log = logging.getLogger(__name__)

# Users per block when many are written at once (a migration): keeps one value small.
BLOCK_USERS = 5_000
# Decoded profiles kept per user-state instance, all its shards together (about 3.5 KB each on the
# bench shop, against 640 bytes encoded).
MAX_DECODED = 50_000


class ProfileLog:
    """A user shard's profiles: in memory, and the log of blocks that persists them."""

    def __init__(self, max_ratio: float = 1.5, slack_bytes: int = 256 * 1024, max_carry_bytes: int = 1 << 20, decoded: RecentlyUsed[str, UserProfile] | None = None) -> None:
        self.max_ratio = max_ratio
        self.slack_bytes = slack_bytes
        self.max_carry_bytes = max_carry_bytes
        self._raw: dict[str, bytes] = {}  # user -> encoded profile (live users)
        self._last_seen: dict[str, int] = {}  # user -> last event time, ms (live users)
        self._decoded = RecentlyUsed(MAX_DECODED) if decoded is None else decoded  # maybe shared with other shards
        self._home: dict[str, int] = {}  # user -> block holding their latest value or removal mark
        self._members: dict[int, list[str]] = {}  # block -> users it holds, in order
        self._sizes: dict[int, int] = {}  # block -> encoded bytes
        self._changed: dict[str, None] = {}  # users changed since the last flush
        self._live_bytes = 0
        self._next = 0

    # -- restore --------------------------------------------------------------------
    @classmethod
    def restore(cls, blocks: Iterable[tuple[int, bytes]], **settings) -> "ProfileLog":
        """The log of stored ``(sequence, block)`` pairs (any order)."""
        profile_log = cls(**settings)
        for seq, raw in sorted(blocks, key=lambda b: b[0]):
            entries = decode_profile_block(raw)
            profile_log._sizes[seq] = len(raw)
            profile_log._members[seq] = [user for user, _, _ in entries]
            for user, last_ts, profile in entries:
                profile_log._home[user] = seq
                profile_log._store(user, last_ts, profile)
            profile_log._next = seq + 1
        return profile_log

    def migrate(self, profiles: Iterable[tuple[str, bytes]], last_seen: dict[str, int]) -> int:
        """Take in users of the earlier per-user layout (``profiles`` MapState, ``last_seen`` MapState).

        Each profile is decoded once, so a value that is not a profile of a
        known version refuses the migration with :class:`SchemaError` instead of
        being carried on.  Returns the user count; :meth:`flush` writes them.
        """
        count = 0
        for user, raw in profiles:
            try:
                profile = decode_profile(raw)
            except SchemaError as exc:
                raise SchemaError(f"cannot migrate user state of the per-user layout (user {user!r}): {exc}") from exc
            self.put_encoded(user, last_seen.get(user, profile.last_ts), raw)
            self._decoded.keep(user, profile)
            count += 1
        return count

    # -- reads ------------------------------------------------------------------------
    def get(self, user: str) -> UserProfile | None:
        """The user's profile (decoded on first use; the caller may change it in place, then :meth:`put`)."""
        profile = self._decoded.get(user)
        if profile is None:
            raw = self._raw.get(user)
            if raw is not None:
                profile = decode_profile(raw)
                self._decoded.keep(user, profile)
        return profile

    def encoded(self, user: str) -> bytes | None:
        return self._raw.get(user)

    def last_seen(self, user: str) -> int | None:
        return self._last_seen.get(user)

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, user: str) -> bool:
        return user in self._raw

    def users(self) -> list[str]:
        return list(self._raw)

    def expired(self, now_ms: int, ttl_ms: int) -> list[str]:
        """Users whose last event is more than ``ttl_ms`` before ``now_ms``."""
        return [user for user, seen in self._last_seen.items() if now_ms - seen > ttl_ms]

    @property
    def live_bytes(self) -> int:
        """Bytes of the live users' encoded profiles."""
        return self._live_bytes

    @property
    def log_bytes(self) -> int:
        """Bytes of every stored block (live values, superseded ones, removal marks)."""
        return sum(self._sizes.values())

    @property
    def blocks(self) -> int:
        return len(self._sizes)

    @property
    def decoded(self) -> int:
        """Profiles kept decoded, of every shard sharing this log's cache of them."""
        return len(self._decoded)

    # -- writes -----------------------------------------------------------------------
    def put(self, user: str, profile: UserProfile, raw: bytes, last_ts: int) -> None:
        """Set the user's profile (``raw``: its encoding) and last event time."""
        old = self._raw.get(user)
        if old is not None:
            self._live_bytes -= len(old)
        self._raw[user] = raw
        self._last_seen[user] = last_ts
        self._live_bytes += len(raw)
        self._decoded.keep(user, profile)
        self._changed[user] = None

    def put_encoded(self, user: str, last_ts: int, raw: bytes) -> None:
        """Set the user's encoded profile and last event time (decoded when first read)."""
        self._decoded.drop(user)
        self._store(user, last_ts, raw)
        self._changed[user] = None

    def remove(self, user: str) -> None:
        if user in self._raw or user in self._home:
            self._store(user, 0, None)
            self._changed[user] = None

    def _store(self, user: str, last_ts: int, raw: bytes | None) -> None:
        old = self._raw.pop(user, None)
        if old is not None:
            self._live_bytes -= len(old)
        if raw is None:
            self._last_seen.pop(user, None)
            self._decoded.drop(user)
        else:
            self._raw[user] = raw
            self._last_seen[user] = last_ts
            self._live_bytes += len(raw)

    def flush(self) -> tuple[list[tuple[int, bytes]], list[int]]:
        """The state calls that persist the changes since the last flush: ``(puts, removes)``.

        Usually one put (the changed users, plus users carried from cleaned
        blocks) and the cleaned blocks' removes; nothing when nothing changed.
        """
        if not self._changed:
            return [], []
        seq = self._next
        written = list(self._changed)
        self._changed = {}
        home, raws, seen = self._home, self._raw, self._last_seen
        written_bytes = 0
        for user in written:
            home[user] = seq
            raw = raws.get(user)
            if raw is not None:
                written_bytes += len(raw)
        carried, removes = self._clean(seq, written_bytes)
        users = written + carried
        puts = []
        for start in range(0, len(users), BLOCK_USERS):
            part = users[start : start + BLOCK_USERS] if len(users) > BLOCK_USERS else users
            raw = encode_profile_block([(user, seen.get(user, 0), raws.get(user)) for user in part])
            puts.append((seq, raw))
            self._sizes[seq] = len(raw)
            self._members[seq] = part
            if start:
                for user in part:
                    home[user] = seq
            seq += 1
        self._next = seq
        return puts, removes

    def _clean(self, seq: int, written_bytes: int) -> tuple[list[str], list[int]]:
        """Drop oldest blocks while the log is too long; returns (users to carry into block ``seq``, blocks dropped)."""
        carried: list[str] = []
        removes: list[int] = []
        budget = written_bytes + self.max_carry_bytes
        log_bytes = self.log_bytes
        while self._sizes:
            if log_bytes <= self.max_ratio * self._live_bytes + self.slack_bytes or budget <= 0:
                break
            oldest = min(self._sizes)
            for user in self._members.pop(oldest):
                if self._home.get(user) != oldest:
                    continue  # a later block holds this user
                raw = self._raw.get(user)
                if raw is None:
                    del self._home[user]  # a removal mark in the oldest block: nothing older to mask
                else:
                    carried.append(user)
                    self._home[user] = seq
                    budget -= len(raw)
            log_bytes -= self._sizes.pop(oldest)
            removes.append(oldest)
        return carried, removes
