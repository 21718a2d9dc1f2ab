"""Attribution metrics in Redis: the one place their hash fields are built and parsed, and their readers.

The job's attribution writes three kinds of hashes (keys in :mod:`state.keys`),
always with HSET of *absolute* values (the job keeps the running totals in its
managed state), so replaying events after a restore rewrites the same numbers:

``metrics:min:{minute_ms}`` (TTL :data:`MINUTE_TTL_S`), counts of events whose
event time falls in that minute::

    "{experiment}|{variant}|{context}|{position}|{measure}"   measure in MEASURES, position 0-based as shown
    "{experiment}|{variant}|{context}|all|{measure}"          measure in MEASURES + HR_MEASURES

``metrics:exp:{experiment}`` (no TTL), cumulative::

    "{variant}|{context}|{measure}" and "{variant}|all|{measure}"   measure in MEASURES + HR_MEASURES

``metrics:experiments`` (no TTL): one field per experiment that has an
``metrics:exp:`` hash (value ``"1"``), so readers need not scan the keyspace.

``metrics:ads:{day_ms}`` (TTL :data:`ADS_TTL_S`): ``"{item}|impressions"``,
``"{item}|clicks"`` of context ``ads`` (written by attribution) and campaign
fields ``"{campaign}|{measure}"`` for measure in :data:`CAMPAIGN_MEASURES`
(written by the ad slot; sponsored items without a campaign count under
campaign ``~``, :data:`transforms.ads.NO_CAMPAIGN`).

Users in no experiment count under experiment and variant ``~``
(:data:`transforms.recid.NO_EXPERIMENT`).  Counts are integers, revenue a float;
readers return every value as a float.  ``|`` never occurs in ids, names,
contexts or measures, so fields split unambiguously.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Union

from state.keys import KeyKind, redis_key
from transforms.ads import CAMPAIGN_MEASURES as _CAMPAIGN_MEASURES

# Counted per position and summed over positions ("all").
MEASURES: tuple[str, ...] = ("impressions", "clicks", "carts", "purchases", "revenue")
# Live HR@k, only over all positions: outcomes after an impression (choices) and those that chose a shown item (hits).
HR_MEASURES: tuple[str, ...] = ("choices", "hits")
ALL_MEASURES: tuple[str, ...] = MEASURES + HR_MEASURES
ALL_POSITIONS = "all"
ALL_CONTEXTS = "all"
# Per-item measures of context ``ads`` in the daily ads hash.
AD_ITEM_MEASURES: tuple[str, ...] = ("impressions", "clicks")
# Per-campaign measures of the daily ads hash (written by the ad slot; see transforms.ads):
# ad impressions and attributed ad clicks of the campaign's items, and spend = the sum of
# the clicked items' bids at click time.
CAMPAIGN_MEASURES: tuple[str, ...] = _CAMPAIGN_MEASURES

MINUTE_MS = 60_000
DAY_MS = 86_400_000
MINUTE_TTL_S = 7 * 24 * 3600
ADS_TTL_S = 3 * 24 * 3600
# read_minutes refuses longer ranges: minute keys live 7 days, so more can only be empty.
MAX_READ_MINUTES = 8 * 24 * 60

_SEP = "|"

log = logging.getLogger(__name__)

Position = Union[int, str]  # a 0-based position or ALL_POSITIONS
MinuteField = tuple[str, str, str, Position, str]  # (experiment, variant, context, position, measure)
ExperimentField = tuple[str, str, str]  # (variant, context or ALL_CONTEXTS, measure)


class BadMetricField(ValueError):
    """A hash field that is not in the layout above (another writer, or a corrupted key)."""


def minute_start(ts_ms: int) -> int:
    """The epoch-ms start of the minute holding event time ``ts_ms``."""
    return ts_ms - ts_ms % MINUTE_MS


def day_start(ts_ms: int) -> int:
    """The epoch-ms start of the UTC day holding event time ``ts_ms``."""
    return ts_ms - ts_ms % DAY_MS


def _check_part(name: str, value: str) -> None:
    if not isinstance(value, str) or not value or _SEP in value:
        raise BadMetricField(f"{name} must be a non-empty string without {_SEP!r}, got {value!r}")


def _check_measure(measure: str, position: Position) -> None:
    allowed = ALL_MEASURES if position == ALL_POSITIONS else MEASURES
    if measure not in allowed:
        raise BadMetricField(f"measure must be one of {allowed} at position {position!r}, got {measure!r}")


def metric_field(experiment: str, variant: str, context: str, position: Position, measure: str) -> str:
    """The field of a minute hash: ``"{experiment}|{variant}|{context}|{position}|{measure}"``.

    ``position`` is a 0-based shown position or :data:`ALL_POSITIONS`; choices
    and hits exist only for ``"all"``.
    """
    for name, value in (("experiment", experiment), ("variant", variant), ("context", context)):
        _check_part(name, value)
    if position != ALL_POSITIONS and not (isinstance(position, int) and not isinstance(position, bool) and position >= 0):
        raise BadMetricField(f"position must be an int >= 0 or {ALL_POSITIONS!r}, got {position!r}")
    _check_measure(measure, position)
    return _SEP.join((experiment, variant, context, str(position), measure))


def parse_metric_field(field: str | bytes) -> MinuteField:
    """Inverse of :func:`metric_field`: ``(experiment, variant, context, position, measure)`` with an int position or ``"all"``."""
    text = field.decode() if isinstance(field, bytes) else field
    parts = text.split(_SEP)
    if len(parts) != 5:
        raise BadMetricField(f"a minute metric field has 5 {_SEP!r}-separated parts, got {text!r}")
    experiment, variant, context, raw_position, measure = parts
    position: Position
    if raw_position == ALL_POSITIONS:
        position = ALL_POSITIONS
    elif raw_position.isdigit() and raw_position.isascii():
        position = int(raw_position)
    else:
        raise BadMetricField(f"position must be digits or {ALL_POSITIONS!r}, got {raw_position!r}")
    metric_field(experiment, variant, context, position, measure)  # the same checks as writing
    return experiment, variant, context, position, measure


def experiment_field(variant: str, context: str, measure: str) -> str:
    """The field of an experiment hash: ``"{variant}|{context}|{measure}"`` (context may be :data:`ALL_CONTEXTS`)."""
    _check_part("variant", variant)
    _check_part("context", context)
    _check_measure(measure, ALL_POSITIONS)
    return _SEP.join((variant, context, measure))


def parse_experiment_field(field: str | bytes) -> ExperimentField:
    """Inverse of :func:`experiment_field`: ``(variant, context or "all", measure)``."""
    text = field.decode() if isinstance(field, bytes) else field
    parts = text.split(_SEP)
    if len(parts) != 3:
        raise BadMetricField(f"an experiment metric field has 3 {_SEP!r}-separated parts, got {text!r}")
    experiment_field(*parts)
    return parts[0], parts[1], parts[2]


def ads_field(name: str, measure: str) -> str:
    """A field of the daily ads hash: ``"{item or campaign}|{measure}"``."""
    _check_part("name", name)
    _check_part("measure", measure)
    return f"{name}{_SEP}{measure}"


def parse_ads_field(field: str | bytes) -> tuple[str, str]:
    """Inverse of :func:`ads_field`: ``(item or campaign, measure)``."""
    text = field.decode() if isinstance(field, bytes) else field
    name, sep, measure = text.rpartition(_SEP)
    if not sep:
        raise BadMetricField(f"an ads metric field is name{_SEP}measure, got {text!r}")
    ads_field(name, measure)
    return name, measure


def format_value(value: float) -> str:
    """A metric value as stored: integers without a fraction (counts), other floats exactly (``repr``)."""
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def _parse_hash(raw: dict[Any, Any], parse: Callable[[Any], Any], key: str) -> dict[Any, float]:
    """Parsed fields of one hash; fields not in the layout are skipped with a warning (never a crash)."""
    out: dict[Any, float] = {}
    skipped = 0
    for field, value in raw.items():
        try:
            out[parse(field)] = float(value)
        except (BadMetricField, ValueError, UnicodeDecodeError):
            skipped += 1
    if skipped:
        log.warning("skipped %d fields of %s that are not in the metrics layout", skipped, key)
    return out


def _minute_keys(namespace: str, start_ms: int, end_ms: int) -> tuple[list[int], list[str]]:
    """The minutes from ``start_ms``'s minute up to ``end_ms`` (exclusive) and their hash keys."""
    minutes = list(range(minute_start(int(start_ms)), int(end_ms), MINUTE_MS))
    if len(minutes) > MAX_READ_MINUTES:
        raise ValueError(f"read at most {MAX_READ_MINUTES} minutes at once (minute keys expire after 7 days)")
    return minutes, [redis_key(KeyKind.METRICS_MINUTE, str(minute), namespace) for minute in minutes]


def read_minutes(redis_client: Any, namespace: str, start_ms: int, end_ms: int) -> dict[int, dict[MinuteField, float]]:
    """Minute hashes of minutes starting in ``[minute_start(start_ms), end_ms)``, one pipelined round trip.

    Returns ``{minute_ms: {(experiment, variant, context, position, measure): value}}``
    with only the minutes that have counts.  Fields not in the layout are
    skipped.  Raises ValueError for a range longer than :data:`MAX_READ_MINUTES`.
    """
    minutes, keys = _minute_keys(namespace, start_ms, end_ms)
    if not minutes:
        return {}
    pipe = redis_client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    result: dict[int, dict[MinuteField, float]] = {}
    for minute, key, raw in zip(minutes, keys, pipe.execute()):
        if raw:
            parsed = _parse_hash(raw, parse_metric_field, key)
            if parsed:
                result[minute] = parsed
    return result


def read_experiment_totals(redis_client: Any, namespace: str, experiment: str) -> dict[ExperimentField, float]:
    """The cumulative counts of ``experiment`` (``~`` for users in no experiment): ``{(variant, context or "all", measure): value}``."""
    key = redis_key(KeyKind.METRICS_EXPERIMENT, experiment, namespace)
    return _parse_hash(redis_client.hgetall(key) or {}, parse_experiment_field, key)


def read_experiment_names(redis_client: Any, namespace: str) -> list[str]:
    """The experiments that have counts (``~`` included once users in no experiment have some), sorted."""
    raw = redis_client.hkeys(redis_key(KeyKind.METRICS_EXPERIMENTS, None, namespace)) or []
    return sorted(name.decode() if isinstance(name, bytes) else name for name in raw)


def read_all_experiment_totals(redis_client: Any, namespace: str) -> dict[str, dict[ExperimentField, float]]:
    """:func:`read_experiment_totals` of every experiment in the index, in one pipelined round trip after the index."""
    names = read_experiment_names(redis_client, namespace)
    if not names:
        return {}
    keys = [redis_key(KeyKind.METRICS_EXPERIMENT, name, namespace) for name in names]
    pipe = redis_client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    return {name: _parse_hash(raw or {}, parse_experiment_field, key) for name, key, raw in zip(names, keys, pipe.execute())}


def read_ads_day(redis_client: Any, namespace: str, day_ms: int) -> dict[tuple[str, str], float]:
    """The ads hash of the UTC day holding ``day_ms``: ``{(item or campaign, measure): value}``."""
    key = redis_key(KeyKind.METRICS_ADS, str(day_start(int(day_ms))), namespace)
    return _parse_hash(redis_client.hgetall(key) or {}, parse_ads_field, key)


# -- running totals (the job's metrics aggregator) -------------------------------------------

MINUTES, DAYS, EXPERIMENTS = "min", "day", "exp"
# Where each kind of totals goes in Redis, and for how long.
_TOTALS_KEYS: dict[str, tuple[KeyKind, int | None]] = {
    MINUTES: (KeyKind.METRICS_MINUTE, MINUTE_TTL_S),
    DAYS: (KeyKind.METRICS_ADS, ADS_TTL_S),
    EXPERIMENTS: (KeyKind.METRICS_EXPERIMENT, None),
}
_PERIODS = {MINUTES: MINUTE_MS, DAYS: DAY_MS}


class TotalsUpdate:
    """What one :meth:`RunningTotals.add` changed: ``{kind: {part: {field: new total}}}``, and what it could not count."""

    def __init__(self) -> None:
        self.changed: dict[str, dict[str, dict[str, float]]] = {MINUTES: {}, DAYS: {}, EXPERIMENTS: {}}
        self.too_late = 0

    def writes(self) -> list:
        """HSETs of the changed fields' absolute totals (and the experiments index)."""
        from state.store import HashWrite

        out = []
        for kind, parts in self.changed.items():
            key_kind, ttl_s = _TOTALS_KEYS[kind]
            out += [HashWrite(key_kind, part, {f: format_value(v) for f, v in fields.items()}, ttl_s) for part, fields in parts.items()]
        if self.changed[EXPERIMENTS]:
            out.append(HashWrite(KeyKind.METRICS_EXPERIMENTS, None, {name: "1" for name in self.changed[EXPERIMENTS]}))
        return out


class RunningTotals:
    """Sums of attribution counts in the layout of the metrics hashes, for the job's aggregator.

    Totals are kept per part (a minute, a UTC day of ads counts, an
    experiment) as ``{field: value}``; ``load(kind, part)`` supplies a part's
    stored totals the first time it is touched (the aggregator's managed
    state).  Minutes and days stay open while the watermark is less than
    ``horizon_ms`` past their end; counts of an older minute or day go to the
    experiment totals only (:attr:`TotalsUpdate.too_late`), so a written
    minute never goes back to a sum that restarted from zero.
    """

    def __init__(self, load: Callable[[str, str], dict[str, float]], horizon_ms: int) -> None:
        self.load = load
        self.horizon_ms = horizon_ms
        self.cache: dict[tuple[str, str], dict[str, float]] = {}

    def totals(self, kind: str, part: str) -> dict[str, float]:
        """The running totals of one part (loaded on first use)."""
        totals = self.cache.get((kind, part))
        if totals is None:
            totals = self.cache[(kind, part)] = dict(self.load(kind, part))
        return totals

    def closed(self, kind: str, start_ms: int, watermark: int) -> bool:
        """True when the minute or day starting at ``start_ms`` is past the horizon."""
        return start_ms + _PERIODS[kind] + self.horizon_ms <= watermark

    def _bump(self, update: TotalsUpdate, kind: str, part: str, field: str, amount: float) -> None:
        totals = self.totals(kind, part)
        totals[field] = totals.get(field, 0) + amount
        update.changed[kind].setdefault(part, {})[field] = totals[field]

    def add(self, counts: dict, ad_counts: dict, watermark: int) -> TotalsUpdate:
        """Add attribution counts (keys as in :mod:`transforms.attribution`) at ``watermark``."""
        update = TotalsUpdate()
        for (minute, experiment, variant, context, position, measure), amount in counts.items():
            if position == ALL_POSITIONS:  # every count has its "all" twin: experiments sum those
                for where in (context, ALL_CONTEXTS):
                    self._bump(update, EXPERIMENTS, experiment, experiment_field(variant, where, measure), amount)
            if self.closed(MINUTES, minute, watermark):
                update.too_late += 1
            else:
                self._bump(update, MINUTES, str(minute), metric_field(experiment, variant, context, position, measure), amount)
        for (day, item, measure), amount in ad_counts.items():
            if self.closed(DAYS, day, watermark):
                update.too_late += 1
            else:
                self._bump(update, DAYS, str(day), ads_field(item, measure), amount)
        return update

    def expired(self, kind: str, parts: Iterable[str], watermark: int) -> list[str]:
        """The parts (minutes or days) past the horizon: dropped from the cache, to drop from storage."""
        gone = [part for part in parts if self.closed(kind, int(part), watermark)]
        for part in gone:
            self.cache.pop((kind, part), None)
        return gone

# HSCAN asks for this many fields per call: a minute hash's "all" rows come back in one call.
_SCAN_COUNT = 10_000
# Minutes per pipelined round trip: a day in one pipeline kept Redis busy past a reader's socket timeout.
_SCAN_BATCH = 120


def read_minute_sums(redis_client: Any, namespace: str, start_ms: int, end_ms: int) -> dict[int, dict[tuple[str, str, str], dict[str, float]]]:
    """The rows summed over positions of the minute hashes in ``[minute_start(start_ms), end_ms)``.

    Returns ``{minute_ms: {(experiment, variant, context): {measure: value}}}``
    for the minutes with counts.  What a dashboard needs of
    :func:`read_minutes` at a fraction of its cost: Redis filters the fields
    (``HSCAN MATCH *|all|*``, pipelined, a round trip per 120 minutes, more
    only for a hash too large for one scan call), so the per-position rows (most of a hash)
    are neither sent nor parsed, and each distinct field is parsed once
    however many minutes hold it.  Unparseable fields are skipped (warned).
    """
    minutes, keys = _minute_keys(namespace, start_ms, end_ms)
    if not minutes:
        return {}
    pattern = f"*{_SEP}{ALL_POSITIONS}{_SEP}*"
    replies: list[Any] = []
    for at in range(0, len(keys), _SCAN_BATCH):
        pipe = redis_client.pipeline(transaction=False)
        for key in keys[at : at + _SCAN_BATCH]:
            pipe.hscan(key, 0, match=pattern, count=_SCAN_COUNT)
        replies += pipe.execute()
    parsed: dict[Any, MinuteField | None] = {}
    skipped = 0
    result: dict[int, dict[tuple[str, str, str], dict[str, float]]] = {}
    for minute, key, (cursor, fields) in zip(minutes, keys, replies):
        fields = dict(fields)
        while cursor:
            cursor, more = redis_client.hscan(key, cursor, match=pattern, count=_SCAN_COUNT)
            fields.update(more)
        rows: dict[tuple[str, str, str], dict[str, float]] = {}
        for field, value in fields.items():
            if field not in parsed:
                try:
                    parsed[field] = parse_metric_field(field)
                except (BadMetricField, UnicodeDecodeError):
                    parsed[field] = None
            name = parsed[field]
            # (A variant named "all" matches the pattern at another place: its rows per position are dropped here.)
            if name is None or name[3] != ALL_POSITIONS:
                skipped += name is None
                continue
            try:
                rows.setdefault(name[:3], {})[name[4]] = float(value)
            except ValueError:
                skipped += 1
        if rows:
            result[minute] = rows
    if skipped:
        log.warning("skipped %d minute-hash fields that are not in the metrics layout", skipped)
    return result
