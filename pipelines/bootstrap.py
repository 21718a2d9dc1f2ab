"""Backfill snapshots: the mid-stream state of every engine at a cutoff, and starting from one.

Consistency rule
----------------
A snapshot with cutoff ``C`` (a multiple of ``window_ms``) holds the state
after every event and catalog record with ``ts < C`` has been applied and all
windows before ``C`` have closed — and *nothing else*: the end-of-input
refresh that a bounded replay runs last (:meth:`ReferenceEngine.finish`) is
not part of it, because a continuous run does not refresh there.  The stream
that continues from a snapshot must deliver exactly the records with
``ts >= C`` (events and catalog upserts), in any order the job accepts.  Then
the continuation computes, window by window, what one uninterrupted run over
all records computes, and Redis ends with the same content: the backfill's
writes, overwritten by the continuation's (every key the backfill's final
refresh wrote is still *dirty* in the snapshot, so the continuation rewrites
it at its first refresh or at its end).

Layout of a snapshot directory (schema version :data:`SNAPSHOT_VERSION`)
------------------------------------------------------------------------
==========================  =================================================================
file                        content
==========================  =================================================================
``snapshot.json``           version, cutoff, model settings, refresh slot, last window end,
                            events since the last refresh, counters
``users-*.parquet``         user, profile (:func:`state.schemas.encode_profile`), last_ts,
                            last_window
``items.parquet``           item, count (occurrence weight), row (:func:`encode_row`, null
                            when none), dirty (row changed since the last refresh),
                            neighbours (:func:`encode_scored`, null until first refreshed),
                            neighbours_ts (window end that computed them)
``catalog.parquet``         item_id, item (catalog JSON), content (:func:`encode_scored`),
                            content_ts
``trending_buckets.parquet``  bucket (index of ``trending_slide_ms``), item, weight
``trending_items.parquet``  item, total, category (as of the last trending refresh), changed
``trending_lists.parquet``  category (null: global), list (:func:`encode_scored`), ts
==========================  =================================================================

Starting from a snapshot
------------------------
* Reference engine: :func:`restore_engine` returns a :class:`ReferenceEngine`
  whose state is the snapshot's; feed it the records with ``ts >= C``.
* Flink job (``flowrec run --bootstrap DIR``): :func:`prepare_bootstrap`
  reads and checks a snapshot and :func:`boot_lines` turns it into lines
  prefixed with :data:`BOOT_PREFIX` that travel through the job's own inputs
  ahead of the events (a live input's are gated in, see
  :class:`pipelines.operators.BootGate`); :func:`decode_boot_line` plus the
  ``load_*`` functions below turn them into each operator's managed state.
  ``pipelines/BACKFILL.md`` lists the hooks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import orjson

from state.profile_log import ProfileLog
from state.schemas import (
    decode_profile,
    decode_row,
    decode_scored,
    encode_facts,
    encode_row,
    encode_scored,
    encode_sponsored,
    encode_versions,
)
from transforms.ads import sponsored_bids
from transforms.catalog import CatalogItem, valid_top_category, validate_catalog_record
from transforms.config import ModelConfig
from transforms.content import ContentIndex
from transforms.cooccurrence import ItemModel, Neighbours, maps_from_state, state_from_maps
from transforms.engine import FinalState, ReferenceEngine
from transforms.trending import TrendingModel, TrendingState

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1
META_FILE = "snapshot.json"
# Settings that shape the state itself: a snapshot only continues under the same values.
STATE_FIELDS = (
    "event_weights",
    "half_life_ms",
    "history_length",
    "session_gap_ms",
    "neighbours",
    "similarity",
    "conditional_alpha",
    "min_cooccurrence",
    "row_capacity",
    "window_ms",
    "model_refresh_ms",
    "max_user_items",
    "trending_window_ms",
    "trending_slide_ms",
    "trending_size",
    "content_neighbours",
)
# Flink bootstrap records: a line starting with this is state, not an event.
BOOT_PREFIX = "\x00boot:"
BOOT_VERSION = 1


class SnapshotError(ValueError):
    """A snapshot that is missing, of an unknown version, or made under other model settings."""


@dataclass
class Snapshot:
    """The state at a cutoff, decoded enough to restore any engine (see the module doc).

    Profiles stay encoded (``state.schemas``) because every consumer stores
    them encoded; everything else is plain Python values.
    """

    cutoff_ms: int
    config: ModelConfig
    last_end_ms: int
    refresh_slot: int | None
    events_since_refresh: int
    profiles: dict[str, bytes] = field(default_factory=dict)
    last_ts: dict[str, int] = field(default_factory=dict)
    last_window: dict[str, int] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)
    rows: dict[str, tuple[list[str], list[float]]] = field(default_factory=dict)
    dirty: list[str] = field(default_factory=list)
    neighbours: dict[str, tuple[int, Neighbours]] = field(default_factory=dict)
    catalog: list[CatalogItem] = field(default_factory=list)
    content: dict[str, tuple[int, Neighbours]] = field(default_factory=dict)
    trending_buckets: dict[int, dict[str, float]] = field(default_factory=dict)
    trending_totals: dict[str, float] = field(default_factory=dict)
    trending_category: dict[str, str] = field(default_factory=dict)
    trending_changed: list[str] = field(default_factory=list)
    trending_global: tuple[int, Neighbours] | None = None
    trending_by_category: dict[str, tuple[int, Neighbours]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def cutoff_window(self) -> int:
        return self.cutoff_ms // self.config.window_ms


# -- capture and restore (reference engine) ----------------------------------------------


def check_cutoff(cutoff_ms: int, config: ModelConfig) -> None:
    """A cutoff must be a window boundary, so no window is split between snapshot and stream."""
    if cutoff_ms % config.window_ms:
        aligned = cutoff_ms - cutoff_ms % config.window_ms
        raise SnapshotError(f"cutoff {cutoff_ms} is not a multiple of window_ms={config.window_ms}; use {aligned}")


def capture(
    engine: ReferenceEngine,
    final: FinalState,
    cutoff_ms: int,
    profiles: Mapping[str, bytes],
    last_ts: Mapping[str, int],
    last_window: Mapping[str, int],
    counters: Mapping[str, int] | None = None,
) -> Snapshot:
    """The snapshot of an engine whose windows before ``cutoff_ms`` are closed and that has not finished.

    ``final`` supplies the window end that produced each current list (the
    engine keeps only the values); ``profiles`` are the users' encoded final
    profiles (an engine driven by pre-replayed users does not hold them all).
    Everything is copied, so the engine may go on (e.g. :meth:`finish`).
    """
    check_cutoff(cutoff_ms, engine.config)
    items = engine.items
    counts, rows, dirty = maps_from_state(items.to_state())
    trending = engine.trending.to_state()
    model = engine.model
    return Snapshot(
        cutoff_ms=cutoff_ms,
        config=engine.config,
        last_end_ms=engine._last_end,
        refresh_slot=engine._refresh_slot,
        events_since_refresh=engine._events_since_refresh,
        profiles=dict(profiles),
        last_ts=dict(last_ts),
        last_window=dict(last_window),
        counts=counts,
        rows=rows,
        dirty=dirty,
        neighbours={item: (final.neighbours[item][0], _copy(nb)) for item, nb in items.neighbours.items()},
        catalog=list(engine.catalog.values()),
        content={item: (final.content[item][0], _copy(nb)) for item, nb in model.content.items()},
        trending_buckets=trending.buckets,
        trending_totals=trending.totals,
        trending_category=trending.category,
        trending_changed=trending.changed,
        trending_global=None if final.trending_global is None else (final.trending_global[0], _copy(model.trending_global)),
        trending_by_category={c: (final.trending_by_category[c][0], _copy(tl)) for c, tl in model.trending_by_category.items()},
        counters=dict(counters or {}),
    )


def _copy(nb: Neighbours) -> Neighbours:
    return np.array(nb[0], dtype=object), np.array(nb[1], dtype=np.float64)


def continued_config(snapshot: Snapshot, config: ModelConfig) -> ModelConfig:
    """The config a job started from ``snapshot`` runs under: ``config``, with the snapshot's values for
    the settings ``config`` leaves to be derived from history (the backfill measured them on the history)."""
    if not config.derive_from_history:
        return config
    theirs = snapshot.config
    return config.replace(derive_from_history=(), **{name: getattr(theirs, name) for name in config.derive_from_history})


def check_config(snapshot: Snapshot, config: ModelConfig) -> None:
    """Raise :class:`SnapshotError` when ``config`` differs from the snapshot's in a state-shaping setting."""
    ours, theirs = config.to_dict(), snapshot.config.to_dict()
    different = [name for name in STATE_FIELDS if ours[name] != theirs[name]]
    if different:
        raise SnapshotError(
            "the snapshot was made under other model settings ("
            + ", ".join(f"{n}: snapshot {theirs[n]!r}, now {ours[n]!r}" for n in different)
            + "); run the backfill again with the new settings"
        )


def restore_engine(
    snapshot: Snapshot,
    config: ModelConfig | None = None,
    on_window=None,
    score_users: bool | Mapping[str, int] = True,
) -> ReferenceEngine:
    """A reference engine in the snapshot's state: feed it the records with ``ts >= cutoff``.

    ``config`` defaults to the snapshot's; a different one may change only
    scoring settings (see :data:`STATE_FIELDS`).
    """
    config = continued_config(snapshot, config or snapshot.config)
    check_config(snapshot, config)
    engine = ReferenceEngine(config, (), on_window=on_window, score_users=score_users)
    engine.profiles = {user: decode_profile(raw) for user, raw in snapshot.profiles.items()}

    items = ItemModel.from_state(config, state_from_maps(snapshot.counts, snapshot.rows, snapshot.dirty))
    items.neighbours.update({item: nb for item, (_, nb) in snapshot.neighbours.items()})
    engine.items = items
    engine.trending = TrendingModel.from_state(
        config, TrendingState(snapshot.trending_buckets, snapshot.trending_totals, snapshot.trending_changed, snapshot.trending_category)
    )

    engine.catalog = {item.item_id: item for item in snapshot.catalog}
    model = engine.model
    model.neighbours = items.neighbours
    model.variant_neighbours = items.variant_neighbours
    model.facts = {item.item_id: (item.top_category, item.in_stock) for item in snapshot.catalog}
    model.sponsored = sponsored_bids(snapshot.catalog)
    model.content = {item: nb for item, (_, nb) in snapshot.content.items()}
    if snapshot.trending_global is not None:
        model.trending_global = snapshot.trending_global[1]
    model.trending_by_category = {c: tl for c, (_, tl) in snapshot.trending_by_category.items()}
    engine.content_index = ContentIndex.build(snapshot.catalog) if snapshot.catalog else None

    engine._refresh_slot = snapshot.refresh_slot
    engine._last_end = snapshot.last_end_ms
    engine._events_since_refresh = snapshot.events_since_refresh
    engine.events_applied = int(snapshot.counters.get("events", 0))
    return engine


# -- Parquet files --------------------------------------------------------------------------


def write_snapshot(snapshot: Snapshot, directory: Path | str, write_users: bool = True) -> Path:
    """Write the snapshot files into ``directory`` (created; existing snapshot files replaced).

    ``write_users=False`` leaves the ``users-*.parquet`` files to the caller
    (the Beam backfill writes them in parallel with :func:`write_users`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if write_users:
        for old in out.glob("users-*.parquet"):
            old.unlink()
        write_users_file(out / "users-00000.parquet", snapshot.profiles, snapshot.last_ts, snapshot.last_window)

    names = sorted(set(snapshot.counts) | set(snapshot.rows) | set(snapshot.neighbours))
    dirty = set(snapshot.dirty)
    rows = [snapshot.rows.get(n) for n in names]
    nbs = [snapshot.neighbours.get(n) for n in names]
    pq.write_table(
        pa.table(
            {
                "item": pa.array(names, type=pa.string()),
                "count": pa.array([snapshot.counts.get(n, 0.0) for n in names], type=pa.float64()),
                "row": pa.array([None if r is None else encode_row(*r) for r in rows], type=pa.binary()),
                "dirty": pa.array([n in dirty for n in names], type=pa.bool_()),
                "neighbours": pa.array([None if nb is None else encode_scored(*nb[1]) for nb in nbs], type=pa.binary()),
                "neighbours_ts": pa.array([None if nb is None else nb[0] for nb in nbs], type=pa.int64()),
            }
        ),
        out / "items.parquet",
    )
    content = [snapshot.content.get(c.item_id) for c in snapshot.catalog]
    pq.write_table(
        pa.table(
            {
                "item_id": pa.array([c.item_id for c in snapshot.catalog], type=pa.string()),
                "item": pa.array([c.to_json() for c in snapshot.catalog], type=pa.binary()),
                "content": pa.array([None if nb is None else encode_scored(*nb[1]) for nb in content], type=pa.binary()),
                "content_ts": pa.array([None if nb is None else nb[0] for nb in content], type=pa.int64()),
            }
        ),
        out / "catalog.parquet",
    )
    buckets = [(b, item, w) for b, values in sorted(snapshot.trending_buckets.items()) for item, w in values.items()]
    pq.write_table(
        pa.table(
            {
                "bucket": pa.array([b for b, _, _ in buckets], type=pa.int64()),
                "item": pa.array([i for _, i, _ in buckets], type=pa.string()),
                "weight": pa.array([w for _, _, w in buckets], type=pa.float64()),
            }
        ),
        out / "trending_buckets.parquet",
    )
    trend_names = sorted(set(snapshot.trending_totals) | set(snapshot.trending_category) | set(snapshot.trending_changed))
    changed = set(snapshot.trending_changed)
    pq.write_table(
        pa.table(
            {
                "item": pa.array(trend_names, type=pa.string()),
                "total": pa.array([snapshot.trending_totals.get(n) for n in trend_names], type=pa.float64()),
                "category": pa.array([snapshot.trending_category.get(n) for n in trend_names], type=pa.string()),
                "changed": pa.array([n in changed for n in trend_names], type=pa.bool_()),
            }
        ),
        out / "trending_items.parquet",
    )
    lists = ([(None, *snapshot.trending_global)] if snapshot.trending_global is not None else []) + [
        (c, t, tl) for c, (t, tl) in sorted(snapshot.trending_by_category.items())
    ]
    pq.write_table(
        pa.table(
            {
                "category": pa.array([c for c, _, _ in lists], type=pa.string()),
                "list": pa.array([encode_scored(*tl) for _, _, tl in lists], type=pa.binary()),
                "ts": pa.array([t for _, t, _ in lists], type=pa.int64()),
            }
        ),
        out / "trending_lists.parquet",
    )
    meta = {
        "v": SNAPSHOT_VERSION,
        "cutoff_ms": snapshot.cutoff_ms,
        "model": snapshot.config.to_dict(),
        "last_end_ms": snapshot.last_end_ms,
        "refresh_slot": snapshot.refresh_slot,
        "events_since_refresh": snapshot.events_since_refresh,
        "counters": snapshot.counters,
    }
    # The meta file goes last: a directory without it is an incomplete snapshot.
    (out / META_FILE).write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    return out


def write_users_file(path: Path, profiles: Mapping[str, bytes], last_ts: Mapping[str, int], last_window: Mapping[str, int]) -> None:
    """One users file: encoded profiles with each user's last event time and last window."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    users = sorted(profiles)
    pq.write_table(
        pa.table(
            {
                "user": pa.array(users, type=pa.string()),
                "profile": pa.array([profiles[u] for u in users], type=pa.binary()),
                "last_ts": pa.array([int(last_ts[u]) for u in users], type=pa.int64()),
                "last_window": pa.array([int(last_window[u]) for u in users], type=pa.int64()),
            }
        ),
        path,
    )


def read_snapshot(directory: Path | str) -> Snapshot:
    """Read a snapshot directory written by :func:`write_snapshot` (raises :class:`SnapshotError`)."""
    import pyarrow.parquet as pq

    folder = Path(directory)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise SnapshotError(f"{folder} holds no complete snapshot ({META_FILE} missing)")
    try:
        meta = orjson.loads(meta_path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(f"{meta_path} is not JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("v") != SNAPSHOT_VERSION:
        raise SnapshotError(f"{meta_path}: unsupported snapshot version {meta.get('v') if isinstance(meta, dict) else '?'}")
    try:
        config = ModelConfig.from_dict(meta["model"])
        snapshot = Snapshot(
            cutoff_ms=int(meta["cutoff_ms"]),
            config=config,
            last_end_ms=int(meta["last_end_ms"]),
            refresh_slot=meta["refresh_slot"],
            events_since_refresh=int(meta["events_since_refresh"]),
            counters=dict(meta.get("counters", {})),
        )
        for path in sorted(folder.glob("users-*.parquet")):
            table = pq.read_table(path).to_pydict()
            for user, profile, ts, window in zip(table["user"], table["profile"], table["last_ts"], table["last_window"]):
                snapshot.profiles[user] = profile
                snapshot.last_ts[user] = ts
                snapshot.last_window[user] = window
        items = pq.read_table(folder / "items.parquet").to_pydict()
        for item, count, row, dirty, nb, nb_ts in zip(items["item"], items["count"], items["row"], items["dirty"], items["neighbours"], items["neighbours_ts"]):
            snapshot.counts[item] = count
            if row is not None:
                snapshot.rows[item] = decode_row(row)
            if dirty:
                snapshot.dirty.append(item)
            if nb is not None:
                snapshot.neighbours[item] = (nb_ts, decode_scored(nb))
        catalog = pq.read_table(folder / "catalog.parquet").to_pydict()
        for item_id, raw, content, content_ts in zip(catalog["item_id"], catalog["item"], catalog["content"], catalog["content_ts"]):
            item, rejection = validate_catalog_record(orjson.loads(raw))
            if item is None:
                raise SnapshotError(f"catalog item {item_id!r} in the snapshot is invalid: {rejection.detail}")
            snapshot.catalog.append(item)
            if content is not None:
                snapshot.content[item_id] = (content_ts, decode_scored(content))
        buckets = pq.read_table(folder / "trending_buckets.parquet").to_pydict()
        for bucket, item, weight in zip(buckets["bucket"], buckets["item"], buckets["weight"]):
            snapshot.trending_buckets.setdefault(bucket, {})[item] = weight
        trend = pq.read_table(folder / "trending_items.parquet").to_pydict()
        for item, total, category, changed in zip(trend["item"], trend["total"], trend["category"], trend["changed"]):
            if total is not None:
                snapshot.trending_totals[item] = total
            if category is not None:
                if category and not valid_top_category(category):
                    raise SnapshotError(f"trending item {item!r} in the snapshot has an invalid category {category[:40]!r}")
                snapshot.trending_category[item] = category
            if changed:
                snapshot.trending_changed.append(item)
        lists = pq.read_table(folder / "trending_lists.parquet").to_pydict()
        for category, raw, ts in zip(lists["category"], lists["list"], lists["ts"]):
            if category is None:
                snapshot.trending_global = (ts, decode_scored(raw))
            elif not valid_top_category(category):
                raise SnapshotError(f"a trending list in the snapshot has an invalid category {category[:40]!r}")
            else:
                snapshot.trending_by_category[category] = (ts, decode_scored(raw))
    except (KeyError, TypeError, ValueError, OSError) as exc:
        if isinstance(exc, SnapshotError):
            raise
        raise SnapshotError(f"{folder}: malformed snapshot: {type(exc).__name__}: {exc}") from exc
    return snapshot


# -- Flink bootstrap records -----------------------------------------------------------------
#
# One line per record: BOOT_PREFIX + versioned JSON {"v", "k": kind, ...}.  Kinds, and the
# operator that loads each (see pipelines/BACKFILL.md for the hooks):
#   users    user shard  -> UserState: its profile log (state.profile_log), one block per record
#   items    item shard  -> ItemModelOperator: rows (owned items), counts (all items), meta
#   trending             -> TrendingOperator: buckets, facts, meta, listed categories
#   catalog  (catalog input) -> ContentOperator: catalog MapState
#   model                -> Scorer broadcast state (versioned entries), sent by whichever
#                           operator loads the matching part
# Every record carries "ts" = cutoff - 1, so it is on time for the event-time clock
# and older than every event the stream delivers.


def boot_lines(snapshot: Snapshot, user_shards: int, item_shards: int, max_users_per_line: int = 5_000) -> tuple[list[str], list[str]]:
    """Bootstrap lines for the job: (event-input lines, catalog-input lines), to precede live records.

    Event-input lines hold the user, item-model and trending state; the
    catalog line holds the catalog and its content lists.  Each line is a
    self-contained record (:func:`decode_boot_line`).
    """
    from pipelines.messages import shard_of

    ts = snapshot.cutoff_ms - 1
    window = snapshot.cutoff_window - 1
    lines: list[str] = []
    by_shard: dict[int, list[str]] = {}
    for user in snapshot.profiles:
        by_shard.setdefault(shard_of(user, user_shards), []).append(user)
    for shard, users in sorted(by_shard.items()):
        for start in range(0, len(users), max_users_per_line):
            part = users[start : start + max_users_per_line]
            lines.append(
                _boot_line(
                    "users",
                    ts,
                    shard=shard,
                    profiles={u: snapshot.profiles[u].decode() for u in part},
                    last_seen={u: int(snapshot.last_ts[u]) for u in part},
                )
            )
    dirty = set(snapshot.dirty)
    for shard in range(item_shards):
        owned = [i for i in snapshot.rows if shard_of(i, item_shards) == shard]
        lines.append(
            _boot_line(
                "items",
                ts,
                shard=shard,
                window=window,
                counts=snapshot.counts,
                rows={i: encode_row(*snapshot.rows[i]).decode() for i in owned},
                meta={"v": 1, "slot": snapshot.refresh_slot, "end": snapshot.last_end_ms, "dirty": sorted(i for i in owned if i in dirty)},
                model=[
                    ["n:" + i, t // snapshot.config.window_ms - 1, encode_scored(*nb).decode()]
                    for i, (t, nb) in sorted(snapshot.neighbours.items())
                    if shard_of(i, item_shards) == shard
                ],
            )
        )
    buckets = {str(b): encode_scored(list(v.keys()), list(v.values())).decode() for b, v in sorted(snapshot.trending_buckets.items())}
    trend_model = []
    if snapshot.trending_global is not None:
        t, tl = snapshot.trending_global
        trend_model.append(["t:", t // snapshot.config.window_ms - 1, encode_scored(*tl).decode()])
    trend_model += [["tc:" + c, t // snapshot.config.window_ms - 1, encode_scored(*tl).decode()] for c, (t, tl) in sorted(snapshot.trending_by_category.items())]
    lines.append(
        _boot_line(
            "trending",
            ts,
            window=window,
            buckets=buckets,
            facts={c.item_id: encode_facts(c.top_category, c.in_stock).decode() for c in snapshot.catalog},
            meta={"v": 2, "slot": snapshot.refresh_slot, "end": snapshot.last_end_ms, "since": snapshot.events_since_refresh, "changed": snapshot.trending_changed},
            category=snapshot.trending_category,
            model=trend_model,
        )
    )
    catalog_model = [["c:" + i, t // snapshot.config.window_ms - 1, encode_scored(*nb).decode()] for i, (t, nb) in sorted(snapshot.content.items())]
    catalog_model += [["f:" + c.item_id, window, encode_facts(c.top_category, c.in_stock).decode()] for c in snapshot.catalog]
    sponsored = sponsored_bids(snapshot.catalog)
    if sponsored:
        catalog_model.append(["a:", window, encode_sponsored(sponsored).decode()])
    catalog_lines = [
        _boot_line("catalog", ts, window=window, items={c.item_id: c.to_json().decode() for c in snapshot.catalog}, model=catalog_model)
    ]
    return lines, catalog_lines


@dataclass(frozen=True)
class BootInput:
    """A snapshot as the job's bootstrap input: its cutoff and its bootstrap lines for the job's shard counts."""

    directory: Path
    cutoff_ms: int
    event_lines: list[str]
    catalog_lines: list[str]
    # The model settings the job continues under (see continued_config): the job must use these.
    config: ModelConfig


def prepare_bootstrap(directory: Path | str, config: ModelConfig, user_shards: int, item_shards: int) -> BootInput:
    """Read a snapshot, check it continues under ``config``, and make its bootstrap lines.

    Raises :class:`SnapshotError` when the snapshot is missing, corrupt, or made
    under other state-shaping settings (:func:`check_config`).
    """
    snapshot = read_snapshot(directory)
    config = continued_config(snapshot, config)
    check_config(snapshot, config)
    event_lines, catalog_lines = boot_lines(snapshot, user_shards, item_shards)
    log.info(
        "bootstrap from %s: cutoff %d, %d users, %d items, %d catalog items in %d + %d lines",
        directory, snapshot.cutoff_ms, len(snapshot.profiles), len(snapshot.counts), len(snapshot.catalog), len(event_lines), len(catalog_lines),
    )
    return BootInput(Path(directory), snapshot.cutoff_ms, event_lines, catalog_lines, config)


def _boot_line(kind: str, ts: int, **payload: Any) -> str:
    return BOOT_PREFIX + orjson.dumps({"v": BOOT_VERSION, "k": kind, "ts": ts, **payload}).decode()


@dataclass(frozen=True)
class BootRecord:
    """A decoded bootstrap line: ``kind`` and its payload; ``shard`` for users/items (else 0)."""

    kind: str
    ts: int
    shard: int
    payload: dict

    def model_update_entries(self) -> list[tuple[int, str, bytes]]:
        """The Scorer's broadcast entries this record carries: (window, key, encoded value)."""
        return [(int(w), key, value.encode()) for key, w, value in self.payload.get("model", [])]


def decode_boot_line(line: str) -> BootRecord:
    """Parse a bootstrap line (raises :class:`SnapshotError` for a malformed or unknown one)."""
    if not line.startswith(BOOT_PREFIX):
        raise SnapshotError("not a bootstrap line")
    try:
        data = orjson.loads(line[len(BOOT_PREFIX) :])
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(f"bootstrap line is not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("v") != BOOT_VERSION or data.get("k") not in ("users", "items", "trending", "catalog"):
        raise SnapshotError("unsupported bootstrap record")
    kind = data.pop("k")
    data.pop("v")
    return BootRecord(kind=kind, ts=int(data.pop("ts")), shard=int(data.pop("shard", 0)), payload=data)


def load_user_state(record: BootRecord, profiles: ProfileLog) -> int:
    """UserState: put the record's profiles and last-seen times into its shard's profile log; returns the user count.

    The caller flushes the log (one block per record).
    """
    last_seen = record.payload["last_seen"]
    for user, raw in record.payload["profiles"].items():
        profiles.put_encoded(user, int(last_seen[user]), raw.encode())
    return len(record.payload["profiles"])


def load_item_state(record: BootRecord, rows, counts, meta) -> list[tuple[int, str, bytes]]:
    """ItemModelOperator (key = the record's item shard): rows, counts and meta; returns the Scorer entries."""
    for item, raw in record.payload["rows"].items():
        rows.put(item, raw.encode())
    for item, count in record.payload["counts"].items():
        counts.put(item, float(count))
    meta.update(orjson.dumps(record.payload["meta"]))
    return record.model_update_entries()


def load_trending_state(record: BootRecord, buckets, facts, meta, listed) -> list[tuple[int, str, bytes]]:
    """TrendingOperator: buckets, catalog facts, meta and listed categories; returns the Scorer entries."""
    for bucket, raw in record.payload["buckets"].items():
        buckets.put(bucket, raw.encode())
    for item, raw in record.payload["facts"].items():
        facts.put(item, raw.encode())
    for item, category in record.payload["category"].items():
        listed.put(item, category)
    meta.update(orjson.dumps(record.payload["meta"]))
    return record.model_update_entries()


def load_content_state(record: BootRecord, catalog) -> list[tuple[int, str, bytes]]:
    """ContentOperator: the catalog MapState; returns the Scorer entries (content lists and facts)."""
    for item, raw in record.payload["items"].items():
        catalog.put(item, raw.encode())
    return record.model_update_entries()


def scorer_state(entries: Sequence[tuple[int, str, bytes]]) -> dict[str, bytes]:
    """The Scorer's broadcast-state values for bootstrap entries (one version per key)."""
    return {key: encode_versions([(window, value)]) for window, key, value in entries}


def cutoff_for(max_ts_ms: int, config: ModelConfig) -> int:
    """The smallest window boundary after ``max_ts_ms``: the default cutoff of a backfill."""
    return (max_ts_ms // config.window_ms + 1) * config.window_ms
