"""The user-state layout: profile blocks (exact round trips, refusals) and the profile log
(what a restore reads back equals what was written; the log stays short; few state calls)."""

from __future__ import annotations

import random
import struct

import orjson
import pytest

from state.profile_log import BLOCK_USERS, ProfileLog
from state.recent import RecentlyUsed
from state.schemas import SchemaError, decode_profile, decode_profile_block, encode_profile, encode_profile_block
from transforms.config import ModelConfig
from transforms.events import ADD_TO_CART, PURCHASE, VIEW
from transforms.profile import ItemContribution, UserProfile, apply_user_events


def _profile(seed: int) -> UserProfile:
    rng = random.Random(seed)
    items = [f"i{rng.randrange(50)}" for _ in range(rng.randrange(1, 12))]
    codes = [rng.choice((VIEW, ADD_TO_CART, PURCHASE)) for _ in items]
    ts = sorted(rng.randrange(10**9) for _ in items)
    return apply_user_events(None, items, codes, ts, [float(rng.randrange(1, 6)) for _ in items], ModelConfig(), ItemContribution())


def test_block_round_trip_is_exact():
    entries = [("u1", 1_700_000_000_123, encode_profile(_profile(1))), ("ü:@-2", 5, None), ("u3", -7, b""), ("u1", 9, encode_profile(_profile(2)))]
    raw = encode_profile_block(entries)
    assert raw[:4] == b"FRPB" and raw[4] == 1
    assert decode_profile_block(raw) == entries
    assert decode_profile_block(encode_profile_block([])) == []


def test_block_refuses_other_versions_and_damage():
    raw = encode_profile_block([("u1", 1, b"{}")])
    with pytest.raises(SchemaError, match="unsupported profile block version 2"):
        decode_profile_block(raw[:4] + b"\x02" + raw[5:])
    with pytest.raises(SchemaError, match="not a profile block"):
        decode_profile_block(encode_profile(_profile(3)))  # a per-user value of the earlier layout
    with pytest.raises(SchemaError, match="malformed"):
        decode_profile_block(raw[:-1])
    with pytest.raises(SchemaError, match="trailing"):
        decode_profile_block(raw + b"x")
    with pytest.raises(SchemaError, match="malformed"):
        decode_profile_block(raw[:5] + struct.pack("<I", 2) + raw[9:])  # claims two entries, holds one


class _Store(dict):
    """A shard's MapState ``profile-log``, as the operator writes it."""

    def apply(self, flushed: tuple[list, list]) -> int:
        puts, removes = flushed
        for seq, raw in puts:
            assert seq not in self, "a block number is never reused while stored"
            self[seq] = raw
        for seq in removes:
            del self[seq]
        return len(puts) + len(removes)


def test_restore_reads_back_what_was_written_and_the_log_stays_short():
    rng = random.Random(11)
    profile_log = ProfileLog(slack_bytes=4096, max_carry_bytes=8192)
    store = _Store()
    expected: dict[str, tuple[int, bytes]] = {}
    profiles = [encode_profile(_profile(s)) for s in range(40)]
    calls = 0
    for step in range(400):
        for _ in range(rng.randrange(0, 30)):
            user = f"u{rng.randrange(300)}"
            if rng.random() < 0.1:
                profile_log.remove(user)
                expected.pop(user, None)
            else:
                raw, ts = rng.choice(profiles), rng.randrange(10**6)
                profile_log.put_encoded(user, ts, raw)
                expected[user] = (ts, raw)
        calls += store.apply(profile_log.flush())
        restored = ProfileLog.restore(store.items())
        assert {u: (restored.last_seen(u), restored.encoded(u)) for u in restored.users()} == expected
        assert {u: (profile_log.last_seen(u), profile_log.encoded(u)) for u in profile_log.users()} == expected
        assert profile_log.log_bytes == sum(len(raw) for raw in store.values())
        # Cleaning keeps the log within its bound, give or take one call's block and carry.
        assert profile_log.log_bytes <= 2 * profile_log.live_bytes + 4096 + 2 * 8192 + 30 * 1000
    assert calls < 3 * 400  # a put per call and a few removes: not a put per user
    # A restored log goes on writing where the stored one left off.
    restored = ProfileLog.restore(store.items())
    restored.put_encoded("new", 1, profiles[0])
    puts, _ = restored.flush()
    assert all(seq > max(store) for seq, _ in puts)


def test_flush_writes_nothing_without_changes_and_splits_large_writes():
    profile_log = ProfileLog()
    assert profile_log.flush() == ([], [])
    raw = encode_profile(_profile(5))
    for n in range(BLOCK_USERS + 10):
        profile_log.put_encoded(f"u{n}", n, raw)
    puts, removes = profile_log.flush()
    assert [len(decode_profile_block(b)) for _, b in puts] == [BLOCK_USERS, 10] and removes == []
    assert profile_log.flush() == ([], [])


def test_get_decodes_once_and_put_keeps_the_callers_object():
    profile_log = ProfileLog()
    profile = _profile(7)
    profile_log.put("u", profile, encode_profile(profile), profile.last_ts)
    assert profile_log.get("u") is profile
    restored = ProfileLog.restore(profile_log.flush()[0])
    assert restored.get("u") == profile and restored.get("u") is restored.get("u")
    assert restored.get("nobody") is None


def test_only_the_most_recently_used_profiles_stay_decoded_and_the_others_read_back_equal():
    profile_log = ProfileLog(decoded=RecentlyUsed(2))
    profiles = {f"u{n}": _profile(20 + n) for n in range(5)}
    for user, profile in profiles.items():
        profile_log.put(user, profile, encode_profile(profile), profile.last_ts)
    assert profile_log.decoded == 2
    assert profile_log.get("u4") is profiles["u4"]  # among the two most recent: the caller's object
    assert profile_log.get("u0") == profiles["u0"] and profile_log.get("u0") is not profiles["u0"]  # decoded again
    assert profile_log.decoded == 2
    # A profile read, changed in place and put back survives its decoded copy being dropped.
    changed = profile_log.get("u1")
    changed.last_ts += 1
    for user in ("u2", "u3"):
        profile_log.get(user)
    profile_log.put("u1", changed, encode_profile(changed), changed.last_ts)
    for user in ("u2", "u3", "u4"):
        profile_log.get(user)
    assert profile_log.get("u1") == changed and profile_log.get("u1").last_ts == profiles["u1"].last_ts + 1
    assert ProfileLog.restore(profile_log.flush()[0]).get("u1") == changed


def test_expired_users_and_removal_marks():
    profile_log = ProfileLog(max_ratio=1.0, slack_bytes=0)
    store = _Store()
    raw = encode_profile(_profile(8))
    profile_log.put_encoded("old", 1_000, raw)
    profile_log.put_encoded("new", 50_000, raw)
    store.apply(profile_log.flush())
    assert profile_log.expired(60_000, 20_000) == ["old"]
    profile_log.remove("old")
    profile_log.remove("never-seen")  # nothing to mark
    store.apply(profile_log.flush())
    restored = ProfileLog.restore(store.items())
    assert restored.users() == ["new"] and "old" not in restored and restored.last_seen("old") is None
    # Rewriting the live user cleans the old blocks: the removal mark goes with them.
    for ts in range(10):
        profile_log.put_encoded("new", 60_000 + ts, raw)
        store.apply(profile_log.flush())
    assert len(store) == 1 and [u for b in store.values() for u, _, _ in decode_profile_block(b)] == ["new"]


def test_migrating_the_per_user_layout():
    profiles = {f"u{n}": encode_profile(_profile(n)) for n in range(20)}
    last_seen = {u: decode_profile(raw).last_ts + 1 for u, raw in profiles.items()}
    profile_log = ProfileLog()
    assert profile_log.migrate(profiles.items(), last_seen) == 20
    restored = ProfileLog.restore(profile_log.flush()[0])
    assert {u: restored.encoded(u) for u in restored.users()} == profiles
    assert {u: restored.last_seen(u) for u in restored.users()} == last_seen
    # A version-1 profile (before tombstones) migrates too.
    v1 = orjson.loads(profiles["u0"])
    del v1["f"]
    v1["v"] = 1
    assert ProfileLog().migrate([("u0", orjson.dumps(v1))], {}) == 1
    # A value of an unknown version is refused, naming the user, not carried on.
    with pytest.raises(SchemaError, match="cannot migrate user state of the per-user layout \\(user 'bad'\\): unsupported state value version 9"):
        ProfileLog().migrate([("bad", orjson.dumps({"v": 9}))], {})


def test_the_shards_of_one_instance_share_one_bound_on_decoded_profiles():
    """An instance holds several shards: their decoded profiles count against one bound, not one each
    (a bound per shard kept eight times as many at the default eight user shards)."""
    shared = RecentlyUsed(3)
    shards = [ProfileLog(decoded=shared), ProfileLog(decoded=shared)]
    profiles = {f"u{n}": _profile(30 + n) for n in range(6)}
    for n, (user, profile) in enumerate(profiles.items()):
        shards[n % 2].put(user, profile, encode_profile(profile), profile.last_ts)
    assert len(shared) == 3 and shards[0].decoded == shards[1].decoded == 3
    for n, (user, profile) in enumerate(profiles.items()):
        assert shards[n % 2].get(user) == profile and user not in shards[1 - n % 2]
    assert len(shared) == 3
    shards[0].remove("u4")  # a removed user's decoded copy goes too
    assert shards[0].get("u4") is None and shared.get("u4") is None
