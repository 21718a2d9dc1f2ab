"""Attribution: which shown list caused a click, cart or purchase, counted exactly once.

A user's feedback rows (impressions, outcomes and forgets, from
:func:`transforms.events.split_feedback`) are applied in event-time order to
the user's :class:`AttributionState`, the impressions still in reach:

Impressions
    An impression row (one per shown item) must carry a rec_id that decodes for
    this user with the deployment's secret (:func:`transforms.recid.decode_rec_id`);
    otherwise its record is a :class:`~transforms.events.Rejection` with reason
    ``bad_rec_id`` or ``unknown_rec_id`` (dead-lettered with the raw record).
    A shown item counts once per ``(rec_id, item)`` (a resent impression, or a
    page reporting items as they scroll into view, counts each item once) as
    ``impressions`` at its shown position.
Outcomes (click, add_to_cart, purchase)
    attributed to the impression that showed the item: the impression of the
    event's rec_id when the user still has it and it showed the item; else
    *last touch*: the latest impression (by the time it showed the item) that
    showed the item at most ``attribution_window_ms`` before the outcome.  Each
    ``(rec_id, item, outcome type)`` counts once, as ``clicks``, ``carts`` or
    ``purchases`` at the item's shown position; an attributed purchase adds
    ``price * quantity`` (quantity 1 when absent, price 0 when absent) to
    ``revenue``.  Outcomes with no impression to go to are not counted.
Live HR@k (``choices``, ``hits``)
    an outcome within ``attribution_window_ms`` of the user's latest impression
    is a *choice* of that impression, once per ``(rec_id, item)``; a *hit*
    when the impression showed the item.
Forget
    clears the user's state (counts already made are aggregates and stay).

Reach: before each row, impressions whose latest shown item is more than
``attribution_window_ms`` older than the row are dropped; after an impression
is added, only the ``impressions_kept`` latest (by latest shown time, then
arrival) stay.  Ties in time go to the impression that arrived later.

Counts are keyed by ``(minute_ms, experiment, variant, context, position,
measure)`` where ``minute_ms`` is the start of the minute of the counted
row's event time and ``position`` is the shown position or ``"all"`` (every
measure is also counted under ``"all"``; choices and hits only there).
Impressions and clicks of context ``ads`` are also counted per item and UTC
day (``(day_ms, item, measure)``) for the ad slot.

Order: rows apply in :func:`feedback_order`: event time, then at equal time
impressions before clicks, carts, purchases and forgets, then item, rec_id,
position, price and quantity.  Rows equal in all of these are interchangeable,
so the order, and with it every count, depends only on the set of rows, never
on the order they arrived in.

Late feedback (:func:`feed`, what the job runs): a user's feedback is kept as
a *settled* state (every row before ``settled_ms`` applied) and the *log* of
the rows since, in the order above.  Rows that arrive in order extend the log
and are applied to the current state (settled state plus log).  A row that
sorts before a row already applied (a click read before its impression, a
late impression) is merged into the log and the log is replayed from the
settled state; the difference between the new and the old counts is what the
row changed (it may take a click or a choice from another list: a negative
count there).  Rows leave the log into the settled state once they are more
than ``attribution_window_ms`` behind the watermark (the *bound*).  So on any
arrival order in which every row arrives at most ``attribution_window_ms`` of
event time behind the watermark, the sum of the counts :func:`feed` returns is
exactly :func:`recount`'s.  Rows arriving later than that are not attributed
(counted as ``too_late``; a forget that late still clears the user).  A log
longer than :data:`LOG_ROWS_MAX` rows settles its oldest rows early, which
moves the user's bound forward.  A forget clears the state as of its event
time; rows before it stay in the log until they pass the bound.

:func:`attribute` is the step, over rows already in order; :func:`feed` the
job's per-user call around it; :func:`recount` is an independent,
deliberately plain reference over a whole raw event log, which tests and
``flowrec simulate`` compare the job's Redis counts against.  Nothing here
touches Flink or Redis.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Union

import numpy as np
import orjson

from transforms.config import ModelConfig
from transforms.events import ADD_TO_CART, CLICK, FORGET, IMPRESSION, PURCHASE, EventBatch, Rejection, parse_records
from transforms.recid import BadRecId, decode_rec_id

MINUTE_MS = 60_000
DAY_MS = 86_400_000
ALL = "all"
ADS_CONTEXT = "ads"
# Rows a user's log holds at most before its oldest rows settle early (a bot's burst).
LOG_ROWS_MAX = 5_000
# The order of row types at equal event time: an impression before the outcomes it may explain.
TYPE_RANK: dict[int, int] = {IMPRESSION: 0, CLICK: 1, ADD_TO_CART: 2, PURCHASE: 3, FORGET: 4}
# The measure each outcome type counts as.
OUTCOME_MEASURE: dict[int, str] = {CLICK: "clicks", ADD_TO_CART: "carts", PURCHASE: "purchases"}

Position = Union[int, str]
# (minute_ms, experiment, variant, context, position or "all", measure)
CountKey = tuple[int, str, str, str, Position, str]
# (day_ms, item, "impressions" | "clicks") of context ads
AdKey = tuple[int, str, str]


@dataclass
class Impression:
    """One shown list (one rec_id) of one user, as far as its impressions have arrived."""

    rec_id: str
    experiment: str
    variant: str
    context: str
    seq: int  # arrival order among the user's impressions (ties in time go to the later)
    shown: dict[str, tuple[int, int]] = field(default_factory=dict)  # item -> (position, shown ms)
    counted: set[tuple[str, int]] = field(default_factory=set)  # (item, outcome type) already counted
    chosen: set[str] = field(default_factory=set)  # items already counted as a choice of this list
    last_ms: int = -1  # when this list last showed an item (what its reach is measured from)

    def show(self, item: str, position: int, ts: int) -> None:
        self.shown[item] = (position, ts)
        self.last_ms = max(self.last_ms, ts)


@dataclass
class AttributionState:
    """A user's impressions still in reach, by rec_id, and the arrival counter."""

    impressions: dict[str, Impression] = field(default_factory=dict)
    next_seq: int = 0

    @property
    def last_ms(self) -> int:
        """The latest time any kept impression showed an item (0 when none)."""
        return max((imp.last_ms for imp in self.impressions.values()), default=0)

    def to_state(self) -> dict[str, Any]:
        """A JSON-ready dict (encoded with a version by :func:`state.schemas.encode_attribution`)."""
        return {
            "n": self.next_seq,
            "m": [
                {
                    "r": imp.rec_id,
                    "e": imp.experiment,
                    "a": imp.variant,
                    "c": imp.context,
                    "q": imp.seq,
                    "s": [[item, pos, ts] for item, (pos, ts) in imp.shown.items()],
                    "k": sorted([item, etype] for item, etype in imp.counted),
                    "h": sorted(imp.chosen),
                }
                for imp in self.impressions.values()
            ],
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> "AttributionState":
        """Inverse of :meth:`to_state`."""
        impressions = {}
        for d in data["m"]:
            imp = Impression(
                rec_id=d["r"],
                experiment=d["e"],
                variant=d["a"],
                context=d["c"],
                seq=int(d["q"]),
                shown={item: (int(pos), int(ts)) for item, pos, ts in d["s"]},
                counted={(item, int(etype)) for item, etype in d["k"]},
                chosen=set(d["h"]),
                last_ms=max(int(ts) for _, _, ts in d["s"]),
            )
            impressions[imp.rec_id] = imp
        return cls(impressions, int(data["n"]))


@dataclass
class AttributionResult:
    """What one step produced: the new state (None: nothing to keep), counts, dead letters and tallies."""

    state: AttributionState | None
    counts: dict[CountKey, float] = field(default_factory=dict)
    ad_counts: dict[AdKey, float] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    duplicate_impressions: int = 0
    duplicate_outcomes: int = 0
    unattributed: int = 0


def minute_of(ts_ms: int) -> int:
    return ts_ms - ts_ms % MINUTE_MS


def day_of(ts_ms: int) -> int:
    return ts_ms - ts_ms % DAY_MS


def _add(counts: dict, key: tuple, value: float) -> None:
    counts[key] = counts.get(key, 0) + value


def _count(result: AttributionResult, ts: int, imp: Impression, position: int, measure: str, value: float = 1) -> None:
    """``value`` of ``measure`` at ``position`` and over all positions, in the minute of ``ts``."""
    base = (minute_of(ts), imp.experiment, imp.variant, imp.context)
    _add(result.counts, base + (position, measure), value)
    _add(result.counts, base + (ALL, measure), value)


def revenue_of(price: float, quantity: float) -> float:
    """What a purchase row is worth: ``price * quantity`` (quantity 1 and price 0 when absent)."""
    price = 0.0 if math.isnan(price) else float(price)
    quantity = 1.0 if math.isnan(quantity) else float(quantity)
    return price * quantity


def impression_record(user: str, rec_id: str, ts: int, items: list[str], positions: list[int]) -> str:
    """The impression record (as a producer sends it) that rows of one rec_id and time stand for: the dead letter's raw."""
    return orjson.dumps({"user_id": user, "event_type": "impression", "rec_id": rec_id, "items": items, "positions": positions, "ts": ts}).decode()


def attribute(
    state: AttributionState | None, user: str, rows: EventBatch, config: ModelConfig, secret: str, index: np.ndarray | None = None
) -> AttributionResult:
    """Apply one user's feedback rows (in event-time order) to their state: the step the job runs.

    The rows are ``rows`` at ``index`` (all of them when None).  The step
    takes ``state`` over (it may change it in place: pass a copy to keep the
    old one).  Other event types are ignored.  Returns the new
    state (None when no impression is left in reach), the counts the rows
    caused, and one rejection per impression record (rows of one rec_id and
    time) whose rec_id does not decode for ``user``.
    """
    state = state if state is not None else AttributionState()
    result = AttributionResult(state)
    window = config.attribution_window_ms
    any_rejected = False
    decoded: dict[str, Any] = {}
    take = slice(None) if index is None else index
    etypes, times, items, rec_ids = rows.etype[take].tolist(), rows.ts[take].tolist(), rows.item[take].tolist(), rows.rec_id[take].tolist()
    positions, prices, quantities = rows.position[take].tolist(), rows.price[take].tolist(), rows.quantity[take].tolist()
    for i, (etype, ts) in enumerate(zip(etypes, times)):
        if etype == FORGET:
            state.impressions.clear()
            continue
        if etype != IMPRESSION and etype not in OUTCOME_MEASURE:
            continue
        # Out of reach: lists that last showed an item more than the window ago.
        for rec_id in [r for r, imp in state.impressions.items() if ts - imp.last_ms > window]:
            del state.impressions[rec_id]
        item, rec_id = items[i], rec_ids[i]
        if etype == IMPRESSION:
            if rec_id not in decoded:
                try:
                    decoded[rec_id] = decode_rec_id(rec_id, user, secret)
                except BadRecId as exc:
                    decoded[rec_id] = exc
            rec = decoded[rec_id]
            if isinstance(rec, BadRecId):
                any_rejected = True
                continue
            _impression(state, result, rec_id, rec, item, positions[i], ts, config)
        else:
            _outcome(state, result, rec_id, item, etype, ts, prices[i], quantities[i], window)
    if any_rejected:
        result.rejections = screen(user, rows if index is None else rows.take(index), secret)[1]
    if not state.impressions:
        result.state = None
    return result


def _impression(state: AttributionState, result: AttributionResult, rec_id: str, rec: Any, item: str, position: int, ts: int, config: ModelConfig) -> None:
    imp = state.impressions.get(rec_id)
    if imp is None:
        imp = Impression(rec_id, rec.experiment, rec.variant, rec.context, state.next_seq)
        state.next_seq += 1
        state.impressions[rec_id] = imp
    if item in imp.shown:
        result.duplicate_impressions += 1
        return
    imp.show(item, position, ts)
    _count(result, ts, imp, position, "impressions")
    if imp.context == ADS_CONTEXT:
        _add(result.ad_counts, (day_of(ts), item, "impressions"), 1)
    if len(state.impressions) > config.impressions_kept:
        kept = sorted(state.impressions.values(), key=lambda m: (m.last_ms, m.seq))[-config.impressions_kept:]
        state.impressions = {m.rec_id: m for m in sorted(kept, key=lambda m: m.seq)}


def _outcome(state: AttributionState, result: AttributionResult, rec_id: str, item: str, etype: int, ts: int, price: float, quantity: float, window: int) -> None:
    # Live HR@k: a choice of the latest list in reach, once per (list, item).
    latest = max(state.impressions.values(), key=lambda m: (m.last_ms, m.seq), default=None)
    if latest is not None and latest.last_ms <= ts and item not in latest.chosen:
        latest.chosen.add(item)
        _count_all(result, ts, latest, "choices")
        if item in latest.shown:
            _count_all(result, ts, latest, "hits")
    target = state.impressions.get(rec_id) if rec_id else None
    if target is None or item not in target.shown:
        touches = [m for m in state.impressions.values() if item in m.shown and 0 <= ts - m.shown[item][1] <= window]
        target = max(touches, key=lambda m: (m.shown[item][1], m.seq), default=None)
    if target is None:
        result.unattributed += 1
        return
    if (item, etype) in target.counted:
        result.duplicate_outcomes += 1
        return
    target.counted.add((item, etype))
    position = target.shown[item][0]
    _count(result, ts, target, position, OUTCOME_MEASURE[etype])
    if etype == PURCHASE:
        _count(result, ts, target, position, "revenue", revenue_of(price, quantity))
    if etype == CLICK and target.context == ADS_CONTEXT:
        _add(result.ad_counts, (day_of(ts), item, "clicks"), 1)


def _count_all(result: AttributionResult, ts: int, imp: Impression, measure: str) -> None:
    _add(result.counts, (minute_of(ts), imp.experiment, imp.variant, imp.context, ALL, measure), 1)


# -- late feedback: the settled state, the log, and replays ---------------------------------------


def feedback_order(rows: EventBatch) -> np.ndarray:
    """Indices of ``rows`` in the order attribution applies them (see the module doc): not the arrival order's."""
    rank = np.array([TYPE_RANK.get(e, len(TYPE_RANK)) for e in rows.etype.tolist()], dtype=np.int8)
    return np.lexsort((rows.quantity, rows.price, rows.position, rows.rec_id.astype(str), rows.item.astype(str), rank, rows.ts))


def _order_key(rows: EventBatch, i: int) -> tuple:
    """Row ``i``'s place in :func:`feedback_order`, as a tuple (NaN sorts last, as there)."""
    price, quantity = float(rows.price[i]), float(rows.quantity[i])
    return (int(rows.ts[i]), TYPE_RANK.get(int(rows.etype[i]), len(TYPE_RANK)), str(rows.item[i]), str(rows.rec_id[i]), int(rows.position[i]),
            math.inf if price != price else price, math.inf if quantity != quantity else quantity)


def screen(user: str, rows: EventBatch, secret: str) -> tuple[np.ndarray, list[Rejection]]:
    """The rows attribution keeps (outcomes, forgets and impressions whose rec_id decodes for ``user``), and
    one rejection per impression record (rows of one rec_id and time) whose rec_id does not."""
    keep = np.zeros(len(rows), dtype=bool)
    decoded: dict[str, BadRecId | None] = {}
    rejected: dict[tuple[str, int], tuple[str, str, list[str], list[int]]] = {}
    for i, (etype, rec_id) in enumerate(zip(rows.etype.tolist(), rows.rec_id.tolist())):
        if etype != IMPRESSION:
            keep[i] = etype in OUTCOME_MEASURE or etype == FORGET
            continue
        if rec_id not in decoded:
            try:
                decode_rec_id(rec_id, user, secret)
                decoded[rec_id] = None
            except BadRecId as exc:
                decoded[rec_id] = exc
        bad = decoded[rec_id]
        if bad is None:
            keep[i] = True
            continue
        entry = rejected.setdefault((rec_id, int(rows.ts[i])), (bad.reason, bad.detail, [], []))
        entry[2].append(str(rows.item[i]))
        entry[3].append(int(rows.position[i]))
    rejections = [Rejection(reason, detail, impression_record(user, rec_id, ts, items, positions)) for (rec_id, ts), (reason, detail, items, positions) in rejected.items()]
    return keep, rejections


# Before any event time: a new user's bound.
NO_BOUND = -(2**62)


def feedback_columns(rows: EventBatch) -> dict[str, list]:
    """One user's rows as the columns attribution reads, JSON-ready (a missing price or quantity
    is null); no user column (:func:`feedback_rows` fills it with "")."""

    def numbers(column: np.ndarray) -> list:
        return [None if v != v else v for v in column.tolist()]  # NaN -> null

    return dict(
        i=rows.item.tolist(),
        e=rows.etype.tolist(),
        t=rows.ts.tolist(),
        r=rows.rec_id.tolist(),
        o=rows.position.tolist(),
        pr=numbers(rows.price),
        q=numbers(rows.quantity),
    )


def feedback_rows(columns: dict[str, list]) -> EventBatch:
    """Inverse of :func:`feedback_columns`."""

    def numbers(values: list) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    return EventBatch(
        user=np.full(len(columns["t"]), "", dtype=object),
        item=np.array(columns["i"], dtype=object),
        etype=np.array(columns["e"], dtype=np.int8),
        ts=np.array(columns["t"], dtype=np.int64),
        rec_id=np.array(columns["r"], dtype=object),
        position=np.array(columns["o"], dtype=np.int16),
        price=numbers(columns["pr"]),
        quantity=numbers(columns["q"]),
    )


@dataclass
class UserFeedback:
    """A user's attribution: the settled state, and the log of rows since ``settled_ms`` (see the module doc)."""

    settled: AttributionState = field(default_factory=AttributionState)
    settled_ms: int = NO_BOUND  # rows before this time are beyond the user's bound
    log: EventBatch = field(default_factory=EventBatch.empty)  # screened rows at or after settled_ms, in feedback_order
    current: AttributionState | None = None  # settled + log applied; None: not computed yet (replayed when needed)

    @property
    def last_ms(self) -> int:
        """The latest event time the state depends on: its latest shown item or logged row."""
        return max(self.settled.last_ms, int(self.log.ts.max()) if len(self.log) else NO_BOUND)

    def to_state(self) -> dict[str, Any]:
        """A JSON-ready dict (versioned by :func:`state.schemas.encode_attribution`); ``current`` is not kept."""
        log = self.log
        return {
            "settled": self.settled.to_state(),
            "b": self.settled_ms,
            "log": feedback_columns(log),
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> "UserFeedback":
        """Inverse of :meth:`to_state`."""
        return cls(AttributionState.from_state(data["settled"]), int(data["b"]), feedback_rows(data["log"]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserFeedback):
            return NotImplemented
        return self.to_state() == other.to_state()


@dataclass
class FeedResult:
    """What :func:`feed` produced: the user's new state (None: nothing to keep) and the counts it changed."""

    state: UserFeedback | None
    counts: dict[CountKey, float] = field(default_factory=dict)
    ad_counts: dict[AdKey, float] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    duplicates: int = 0
    unattributed: int = 0
    too_late: int = 0  # rows beyond the bound, not attributed
    replayed: bool = False  # a row sorted before one already applied: the log was replayed


def _replay(settled: AttributionState, user: str, rows: EventBatch, config: ModelConfig, secret: str) -> AttributionResult:
    result = attribute(copy.deepcopy(settled), user, rows, config, secret)
    if result.state is None:
        result.state = AttributionState()
    return result


def _difference(new: dict, old: dict) -> dict:
    out = {key: value - old.get(key, 0) for key, value in new.items()}
    out.update({key: -value for key, value in old.items() if key not in new})
    return {key: value for key, value in out.items() if value != 0}


def feed(state: UserFeedback | None, user: str, rows: EventBatch, watermark: int, config: ModelConfig, secret: str) -> FeedResult:
    """Apply one user's newly arrived feedback rows (any order) at ``watermark``: the step the job runs.

    Returns the counts the rows changed (differences when the log was
    replayed), the rejections of their bad impressions, and the new state
    (None when nothing is left that a row within the bound could need).  Takes
    ``state`` over (changes it in place).
    """
    state = state if state is not None else UserFeedback()
    keep, rejections = screen(user, rows, secret)
    if not keep.all():
        rows = rows.take(keep)
    bound = max(state.settled_ms, watermark - config.attribution_window_ms)
    within = rows.ts >= bound
    result = FeedResult(state, rejections=rejections, too_late=int(len(rows) - within.sum()))
    if result.too_late:
        if (rows.etype[~within] == FORGET).any():
            state = result.state = UserFeedback(settled_ms=state.settled_ms)  # forgotten: keep nothing of before
        rows = rows.take(within)
    if len(rows):
        if state.current is None:
            state.current = _replay(state.settled, user, state.log, config, secret).state
        if len(rows) > 1:
            rows = rows.take(feedback_order(rows))
        old = len(state.log)
        if not old or _order_key(rows, 0) >= _order_key(state.log, old - 1):  # in order: extend the log
            step = attribute(state.current, user, rows, config, secret)
            result.counts, result.ad_counts = step.counts, step.ad_counts
            result.duplicates = step.duplicate_impressions + step.duplicate_outcomes
            result.unattributed = step.unattributed
            state.log = EventBatch.concat([state.log, rows])
        else:
            merged = EventBatch.concat([state.log, rows])
            merged = merged.take(feedback_order(merged))
            before = _replay(state.settled, user, state.log, config, secret)
            step = _replay(state.settled, user, merged, config, secret)
            result.counts, result.ad_counts = _difference(step.counts, before.counts), _difference(step.ad_counts, before.ad_counts)
            result.duplicates = step.duplicate_impressions + step.duplicate_outcomes - before.duplicate_impressions - before.duplicate_outcomes
            result.unattributed = step.unattributed - before.unattributed
            result.replayed = True
            state.log = merged
        state.current = step.state if step.state is not None else AttributionState()
    result.state = settle(state, user, bound, config, secret)
    return result


def settle(state: UserFeedback, user: str, bound: int, config: ModelConfig, secret: str) -> UserFeedback | None:
    """Move the log's rows before ``bound`` (and its oldest beyond :data:`LOG_ROWS_MAX`) into the settled state.

    Returns None when nothing is left that a row at or after the bound could
    need: an empty log, and no settled impression in reach of ``bound``.
    """
    log = state.log
    upto = int(np.searchsorted(log.ts, bound, side="left"))  # the log is in time order first
    if len(log) - upto > LOG_ROWS_MAX:
        bound = int(log.ts[len(log) - LOG_ROWS_MAX]) + 1
        upto = int(np.searchsorted(log.ts, bound, side="left"))
    if upto:
        step = attribute(state.settled, user, log.take(slice(0, upto)), config, secret)
        state.settled = step.state if step.state is not None else AttributionState()
        state.log = log.take(slice(upto, None))
    state.settled_ms = max(state.settled_ms, bound)
    if not len(state.log) and (not state.settled.impressions or state.settled.last_ms < state.settled_ms - config.attribution_window_ms):
        return None
    return state


def expired(last_ms: int, now_ms: int, config: ModelConfig) -> bool:
    """Whether a user whose state depends on nothing after ``last_ms`` can be dropped at watermark ``now_ms``.

    Rows still within the bound are at or after ``now_ms - attribution_window_ms``;
    rows and impressions a window before that can no longer touch them.
    """
    return now_ms - last_ms > 2 * config.attribution_window_ms


# -- totals in the layout of the Redis metrics hashes ---------------------------------------------


def experiment_totals(counts: dict[CountKey, float]) -> dict[str, dict[tuple[str, str, str], float]]:
    """Cumulative per-experiment totals of minute counts: ``{experiment: {(variant, context or "all", measure): value}}``.

    Only the ``"all"``-positions counts are summed, per context and over contexts.
    """
    out: dict[str, dict[tuple[str, str, str], float]] = {}
    for (_, experiment, variant, context, position, measure), value in counts.items():
        if position != ALL:
            continue
        totals = out.setdefault(experiment, {})
        _add(totals, (variant, context, measure), value)
        _add(totals, (variant, ALL, measure), value)
    return out


@dataclass
class Recount:
    """An offline count over a whole event log, shaped like the readers of :mod:`state.metrics` return."""

    minutes: dict[int, dict[tuple[str, str, str, Position, str], float]]
    experiments: dict[str, dict[tuple[str, str, str], float]]
    ads: dict[int, dict[tuple[str, str], float]]
    rejections: list[Rejection]


def recount(events: Iterable[Any], config: ModelConfig, secret: str) -> Recount:
    """Count a whole raw event log from scratch, the plain way.

    ``events``: records as producers send them, decoded (dicts) or as JSON
    lines (str or bytes; a line may hold one record or an array of them).

    A reference for the job, written independently of :func:`attribute`: one
    loop over every row in the module doc's order (never the log's), lists
    instead of indexes, every rule spelled out again.  Records that do not
    parse are ignored here (the job dead-letters them before attribution).
    """
    records: list[Any] = []
    for record in events:
        if isinstance(record, (str, bytes)):
            try:
                record = orjson.loads(record)
            except orjson.JSONDecodeError:
                continue  # the job dead-letters it as malformed JSON
        records.extend(record if isinstance(record, list) else [record])
    parsed = parse_records(records).events

    def order_key(i):  # event time, then impressions first, item, rec_id, position, price, quantity (NaN last)
        rank = {IMPRESSION: 0, CLICK: 1, ADD_TO_CART: 2, PURCHASE: 3, FORGET: 4}.get(int(parsed.etype[i]), 5)
        price, quantity = float(parsed.price[i]), float(parsed.quantity[i])
        return (int(parsed.ts[i]), rank, str(parsed.item[i]), str(parsed.rec_id[i]), int(parsed.position[i]),
                math.inf if math.isnan(price) else price, math.inf if math.isnan(quantity) else quantity)

    order = sorted(range(len(parsed)), key=order_key)
    window = config.attribution_window_ms
    shown_lists: dict[str, list[dict]] = {}  # user -> their lists in reach, each a plain dict
    arrivals: dict[str, int] = {}
    counts: dict[CountKey, float] = {}
    ads: dict[int, dict[tuple[str, str], float]] = {}
    bad: dict[tuple[str, str, int], list] = {}

    def bump(ts, lst, position, measure, value=1.0):
        minute = ts - ts % MINUTE_MS
        for pos in (position, ALL):
            if pos is None:
                continue
            key = (minute, lst["experiment"], lst["variant"], lst["context"], pos, measure)
            counts[key] = counts.get(key, 0.0) + value

    for i in order:
        user, item, etype, ts = str(parsed.user[i]), str(parsed.item[i]), int(parsed.etype[i]), int(parsed.ts[i])
        rec_id, position = str(parsed.rec_id[i]), int(parsed.position[i])
        lists = shown_lists.setdefault(user, [])
        if etype == FORGET:
            lists.clear()
            continue
        if etype not in (IMPRESSION, CLICK, ADD_TO_CART, PURCHASE):
            continue
        lists[:] = [lst for lst in lists if ts - max(t for _, t in lst["items"].values()) <= window]
        if etype == IMPRESSION:
            try:
                rec = decode_rec_id(rec_id, user, secret)
            except BadRecId:
                continue  # dead-lettered below
            same = [lst for lst in lists if lst["rec_id"] == rec_id]
            if same:
                lst = same[0]
            else:
                arrivals[user] = arrivals.get(user, -1) + 1
                lst = {"rec_id": rec_id, "experiment": rec.experiment, "variant": rec.variant, "context": rec.context, "arrival": arrivals[user], "items": {}, "done": set(), "chosen": set()}
                lists.append(lst)
            if item in lst["items"]:
                continue
            lst["items"][item] = (position, ts)
            bump(ts, lst, position, "impressions")
            if lst["context"] == ADS_CONTEXT:
                day = ads.setdefault(ts - ts % DAY_MS, {})
                day[(item, "impressions")] = day.get((item, "impressions"), 0.0) + 1
            if len(lists) > config.impressions_kept:
                lists.sort(key=lambda x: (max(t for _, t in x["items"].values()), x["arrival"]))
                del lists[: len(lists) - config.impressions_kept]
                lists.sort(key=lambda x: x["arrival"])
            continue
        # An outcome.  Live HR@k first: the latest list in reach.
        newest = None
        for lst in lists:
            key = (max(t for _, t in lst["items"].values()), lst["arrival"])
            if newest is None or key > newest[0]:
                newest = (key, lst)
        if newest is not None and newest[0][0] <= ts and item not in newest[1]["chosen"]:
            newest[1]["chosen"].add(item)
            bump(ts, newest[1], None, "choices")
            if item in newest[1]["items"]:
                bump(ts, newest[1], None, "hits")
        chosen = None
        for lst in lists:
            if rec_id and lst["rec_id"] == rec_id and item in lst["items"]:
                chosen = lst
        if chosen is None:
            best = None
            for lst in lists:
                if item in lst["items"]:
                    shown_at = lst["items"][item][1]
                    if 0 <= ts - shown_at <= window and (best is None or (shown_at, lst["arrival"]) > best[0]):
                        best = ((shown_at, lst["arrival"]), lst)
            chosen = best[1] if best else None
        if chosen is None or (item, etype) in chosen["done"]:
            continue
        chosen["done"].add((item, etype))
        shown_position = chosen["items"][item][0]
        bump(ts, chosen, shown_position, OUTCOME_MEASURE[etype])
        if etype == PURCHASE:
            price, quantity = float(parsed.price[i]), float(parsed.quantity[i])
            bump(ts, chosen, shown_position, "revenue", (0.0 if math.isnan(price) else price) * (1.0 if math.isnan(quantity) else quantity))
        if etype == CLICK and chosen["context"] == ADS_CONTEXT:
            day = ads.setdefault(ts - ts % DAY_MS, {})
            day[(item, "clicks")] = day.get((item, "clicks"), 0.0) + 1

    # Dead letters: one per impression record (user, rec_id, time) with a bad rec_id, its rows in log order.
    for i in range(len(parsed)):
        if int(parsed.etype[i]) != IMPRESSION:
            continue
        user, rec_id, ts = str(parsed.user[i]), str(parsed.rec_id[i]), int(parsed.ts[i])
        try:
            decode_rec_id(rec_id, user, secret)
        except BadRecId as exc:
            entry = bad.setdefault((user, rec_id, ts), [exc.reason, exc.detail, [], []])
            entry[2].append(str(parsed.item[i]))
            entry[3].append(int(parsed.position[i]))

    minutes: dict[int, dict] = {}
    for (minute, *rest), value in counts.items():
        minutes.setdefault(minute, {})[tuple(rest)] = value
    rejections = [Rejection(reason, detail, impression_record(user, rec_id, ts, items, positions)) for (user, rec_id, ts), (reason, detail, items, positions) in bad.items()]
    return Recount(minutes, experiment_totals(counts), ads, rejections)
