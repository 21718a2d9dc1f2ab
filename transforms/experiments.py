"""A/B experiments inside the one job: declarations, assignment, per-variant scoring and the statistics.

A declaration (JSON) names an experiment and its variants::

    {"id": "ranker-1", "salt": "s1",                       # salt optional (default: the id)
     "contexts": ["home", "cart"],                         # optional (default: every context)
     "variants": {"control":   {"share": 0.5, "preset": "popularity"},
                  "treatment": {"share": 0.5, "config": {"weight_content": 0.6}}}}

Each variant is the job's model configuration with overrides: a ``preset``
(``default``: none; ``popularity``: only the popularity weight) and/or
``config`` (ModelConfig fields, applied after the preset).  A user's variant
is a stable hash of ``salt:user`` mapped to ``[0, 1)`` and cut by the
cumulative shares (:func:`assign`): the same user gets the same variant in
every process and release, and changing the salt reshuffles everyone.

Settings that act when a list is *scored* can differ per variant
(:data:`SCORING_FIELDS`): the blend weights, the list length, the interests
used, exclusions, filters and diversity.  Two settings that shape state can
too, among the values the job keeps state for (:data:`KEPT_FIELDS`):

* ``half_life_ms``: a profile keeps each interest as one forward-decayed sum
  against a landmark (:mod:`transforms.decay`), in which every past event is
  already weighted by the job's half-life; re-decaying it with another
  half-life would only scale all of a user's interests by one factor (which no
  normalised component sees).  So profiles keep one more sum per half-life of
  ``ModelConfig.variant_half_lives_ms``, and a variant may use any of those
  (:func:`transforms.profile.with_half_life`).
* ``similarity``: the item model keeps a neighbour list per measure of
  ``ModelConfig.variant_similarities`` next to the main one, from the same
  co-occurrence rows, and a variant may use any of those.

A declaration is checked on its own (:func:`parse_experiment`); whether the
job keeps what it asks for is checked against the job's configuration when it
is applied (:func:`unsupported`, by :func:`apply_control`; the API checks it
too when it knows the job's settings).  Everything else (event weights,
windows, neighbour counts, ...) shapes state the job keeps once for all
variants and is refused at declaration time, naming the fields.

The job's catalog input carries the control records
``{"experiment": DECLARATION, "ts": T}`` (start, or change of a running
experiment) and ``{"experiment_stop": ID, "ts": T}``; like an embedding
switch they take effect when the window holding ``T`` closes
(:func:`apply_control`).  One experiment runs at a time: starting another
while one runs is refused (dead-lettered) and the running one stays.

Statistics (:func:`compare`): per-variant click-through rate
(clicks / impressions) and conversion (purchases / impressions) with Wilson
95% intervals, and for each variant against the control (the variant named
``control``, else the first) the relative lift of CTR and the two-sided
p-value of the pooled two-proportion z-test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from transforms.config import ModelConfig, reject_unknown_fields
from transforms.events import MAX_TS_MS, Rejection, _as_int_ts, _reject
from transforms.profile import UserProfile, with_half_life
from transforms.recid import CONTEXTS, NAME_PATTERN
from transforms.scoring import ScoringModel, UserLists, score_users
from transforms.similarity import COUNT_MEASURES

SHARE_TOLERANCE = 1e-9
MAX_VARIANTS = 16
MAX_SALT_LENGTH = 128
CONTROL = "control"

# ModelConfig fields a variant may override: each acts only when a list is scored
# (transforms.scoring), never on the state the job shares between variants.
SCORING_FIELDS: frozenset[str] = frozenset(
    {
        "weight_cf",
        "weight_content",
        "weight_category",
        "weight_popularity",
        "weight_recent",
        "weight_embedding",
        "weight_sequence",
        "embedding_candidates",
        "top_n",
        "interest_items",
        "exclude_purchased",
        "repeat_purchase_categories",
        "exclude_seen",
        "max_per_category",
        "allow_categories",
        "deny_categories",
        "exclude_out_of_stock",
    }
)
# State-shaping settings a variant may set to a value the job keeps state for:
# the setting -> the ModelConfig list of the values kept (see the module doc).
KEPT_FIELDS: dict[str, str] = {"half_life_ms": "variant_half_lives_ms", "similarity": "variant_similarities"}
# Why the most asked-for state settings cannot vary (the message names them).
_STATE_REASONS = {
    "event_weights": "profiles store interests already weighted by the job's event weights",
    "neighbours": "item neighbours are computed once for all variants",
    "window_ms": "windows are the job's clock, shared by all variants",
    "max_user_items": "profiles are pruned to the job's max_user_items",
}
_WEIGHTS = ("weight_cf", "weight_content", "weight_category", "weight_popularity", "weight_recent", "weight_embedding", "weight_sequence")
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "popularity": {**{name: 0.0 for name in _WEIGHTS}, "weight_popularity": 1.0},
}


class ExperimentError(ValueError):
    """A declaration or control record that cannot be used; the message names the problem."""


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment: its traffic share and its overrides of the job's model settings."""

    name: str
    share: float
    preset: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)

    def overrides(self) -> dict[str, Any]:
        """The ModelConfig fields this variant sets: the preset's, then its own config's."""
        values = dict(PRESETS[self.preset or "default"])
        values.update(_typed_overrides(self.config))
        return values

    def model_config(self, base: ModelConfig) -> ModelConfig:
        """The job's configuration with this variant's overrides."""
        return base.replace(**self.overrides())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"share": self.share}
        if self.preset is not None:
            out["preset"] = self.preset
        if self.config:
            out["config"] = dict(self.config)
        return out


@dataclass(frozen=True)
class Experiment:
    """A validated declaration (see the module docstring); build it with :func:`parse_experiment`."""

    id: str
    salt: str
    variants: tuple[Variant, ...]
    contexts: tuple[str, ...] = CONTEXTS

    @property
    def control(self) -> str:
        """The variant others are compared with: the one named ``control``, else the first declared."""
        names = [v.name for v in self.variants]
        return CONTROL if CONTROL in names else names[0]

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(name)

    def configs(self, base: ModelConfig) -> dict[str, ModelConfig]:
        """Each variant's model configuration, in declaration order."""
        return {v.name: v.model_config(base) for v in self.variants}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "salt": self.salt, "variants": {v.name: v.to_dict() for v in self.variants}}
        if self.contexts != CONTEXTS:
            out["contexts"] = list(self.contexts)
        return out


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ExperimentError(f"{what} must be 1-32 characters of [A-Za-z0-9_-], got {value!r}")
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _typed_overrides(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with list values as the tuples ModelConfig holds."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


def check_overrides(config: object, where: str) -> dict[str, Any]:
    """Validate a variant's ``config`` overrides; returns them (JSON types) or raises ExperimentError.

    Unknown keys and keys that shape shared state are refused by name; values
    must have the field's type (numbers finite; weights, counts >= 0).
    """
    if not isinstance(config, Mapping):
        raise ExperimentError(f"{where}: config must be an object of model settings")
    try:
        reject_unknown_fields(ModelConfig, config, "model settings")
    except ValueError as exc:
        raise ExperimentError(f"{where}: {exc}") from None
    shared = sorted(set(config) - SCORING_FIELDS - set(KEPT_FIELDS))
    if shared:
        why = "; ".join(f"{name}: {_STATE_REASONS[name]}" for name in shared if name in _STATE_REASONS)
        raise ExperimentError(
            f"{where}: {shared} cannot differ between variants: they shape state the job keeps once for all variants"
            + (f" ({why})" if why else "")
            + f"; a variant may set only {sorted(SCORING_FIELDS | set(KEPT_FIELDS))}"
        )
    defaults = ModelConfig()
    out: dict[str, Any] = {}
    for name, value in config.items():
        default = getattr(defaults, name)
        if name == "similarity":
            ok = value in COUNT_MEASURES
            rule = f"one of {list(COUNT_MEASURES)}"
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
            rule = "true or false"
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            rule = "an integer >= 0"
        elif isinstance(default, float):
            ok = _is_number(value) and math.isfinite(value) and value >= 0
            rule = "a finite number >= 0"
        else:  # the category lists
            ok = isinstance(value, list) and all(isinstance(c, str) and 0 < len(c) <= 128 for c in value)
            rule = "a list of category names"
        if not ok:
            raise ExperimentError(f"{where}: {name} must be {rule}, got {value!r}")
        out[name] = float(value) if isinstance(default, float) and not isinstance(default, bool) else value
    try:
        defaults.replace(**_typed_overrides(out))  # the config's own rules (top_n > 0, ...)
    except ValueError as exc:
        raise ExperimentError(f"{where}: {exc}") from None
    return out


def parse_experiment(data: object) -> Experiment:
    """The declaration ``data`` (decoded JSON), checked strictly; raises :class:`ExperimentError`.

    Refused: unknown fields (at any level), a bad id, salt or variant name,
    fewer than 2 or more than :data:`MAX_VARIANTS` variants, shares outside
    ``(0, 1]`` or not summing to 1 (within :data:`SHARE_TOLERANCE`), an
    unknown preset, an unknown context, and config overrides that
    :func:`check_overrides` refuses.
    """
    if not isinstance(data, Mapping):
        raise ExperimentError("an experiment must be a JSON object")
    unknown = sorted(set(data) - {"id", "salt", "variants", "contexts"})
    if unknown:
        raise ExperimentError(f"unknown experiment fields: {unknown} (allowed: id, salt, variants, contexts)")
    experiment_id = _check_name(data.get("id"), "id")
    salt = data.get("salt", experiment_id)
    if not isinstance(salt, str) or not 0 < len(salt) <= MAX_SALT_LENGTH:
        raise ExperimentError(f"salt must be a string of 1-{MAX_SALT_LENGTH} characters")
    contexts: tuple[str, ...] = CONTEXTS
    if "contexts" in data:
        given = data["contexts"]
        if not isinstance(given, list) or not given or not all(isinstance(c, str) for c in given):
            raise ExperimentError(f"contexts must be a non-empty list of {list(CONTEXTS)}")
        bad = sorted(set(given) - set(CONTEXTS))
        if bad:
            raise ExperimentError(f"unknown contexts: {bad} (known: {list(CONTEXTS)})")
        contexts = tuple(c for c in CONTEXTS if c in given)
    raw_variants = data.get("variants")
    if not isinstance(raw_variants, Mapping):
        raise ExperimentError("variants must be an object: {name: {share, preset?, config?}}")
    if not 2 <= len(raw_variants) <= MAX_VARIANTS:
        raise ExperimentError(f"an experiment needs 2-{MAX_VARIANTS} variants, got {len(raw_variants)}")
    variants = []
    for name, spec in raw_variants.items():
        _check_name(name, "variant name")
        where = f"variant {name!r}"
        if not isinstance(spec, Mapping):
            raise ExperimentError(f"{where} must be an object: {{share, preset?, config?}}")
        unknown = sorted(set(spec) - {"share", "preset", "config"})
        if unknown:
            raise ExperimentError(f"{where}: unknown fields {unknown} (allowed: share, preset, config)")
        share = spec.get("share")
        if not _is_number(share) or not math.isfinite(share) or not 0 < share <= 1:
            raise ExperimentError(f"{where}: share must be a number in (0, 1], got {share!r}")
        preset = spec.get("preset")
        if preset is not None and preset not in PRESETS:
            raise ExperimentError(f"{where}: unknown preset {preset!r} (known: {sorted(PRESETS)})")
        config = check_overrides(spec.get("config", {}), where)
        variants.append(Variant(name=name, share=float(share), preset=preset, config=config))
    total = math.fsum(v.share for v in variants)
    if abs(total - 1.0) > SHARE_TOLERANCE:
        raise ExperimentError(f"variant shares must sum to 1, they sum to {total!r}")
    return Experiment(id=experiment_id, salt=salt, variants=tuple(variants), contexts=contexts)


def unsupported(experiment: Experiment, config: ModelConfig) -> str | None:
    """Why a job with ``config`` cannot run ``experiment`` (None: it can).

    A variant's ``half_life_ms`` or ``similarity`` other than the job's own
    must be among the values the job keeps state for (:data:`KEPT_FIELDS`).
    """
    for variant in experiment.variants:
        overrides = variant.overrides()
        for name, kept_in in KEPT_FIELDS.items():
            value = overrides.get(name, getattr(config, name))
            kept = getattr(config, kept_in)
            if value != getattr(config, name) and value not in kept:
                return (
                    f"variant {variant.name!r}: {name} {value!r} is not kept by the job "
                    f"(its {name} is {getattr(config, name)!r}, {kept_in} {list(kept)}); "
                    f"list it in the job's model setting {kept_in} (a restart) to experiment with it"
                )
    return None


# -- assignment ---------------------------------------------------------------------------


def assignment_point(salt: str, user: str) -> float:
    """``user``'s stable point in ``[0, 1)`` for ``salt``: BLAKE2b of ``salt:user``, 53 bits."""
    digest = hashlib.blake2b(f"{salt}:{user}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) / float(1 << 53)


def assign(experiment: Experiment, user: str) -> str:
    """The variant of ``user``: the first whose cumulative share exceeds the user's point."""
    point = assignment_point(experiment.salt, user)
    cumulative = 0.0
    for variant in experiment.variants:
        cumulative += variant.share
        if point < cumulative:
            return variant.name
    return experiment.variants[-1].name  # shares sum to 1 within rounding


# -- control records and the running experiment --------------------------------------------


@dataclass(frozen=True)
class ExperimentStart:
    """Start ``experiment`` (or change it, if it is the one running) from ``ts`` on."""

    experiment: Experiment
    ts: int

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment.to_dict(), "ts": self.ts}


@dataclass(frozen=True)
class ExperimentStop:
    """Stop experiment ``experiment_id`` from ``ts`` on."""

    experiment_id: str
    ts: int

    def to_dict(self) -> dict[str, Any]:
        return {"experiment_stop": self.experiment_id, "ts": self.ts}


ExperimentControl = ExperimentStart | ExperimentStop


def is_experiment_control(rec: object) -> bool:
    """True for a record meant as an experiment control (it has ``experiment`` or ``experiment_stop``)."""
    return isinstance(rec, Mapping) and ("experiment" in rec or "experiment_stop" in rec)


def validate_experiment_control(rec: Mapping[str, Any], raw: Any = None) -> tuple[ExperimentControl | None, Rejection | None]:
    """Check a control record; a bad one is rejected with reason ``bad_experiment`` and the problem."""
    raw = rec if raw is None else raw
    kind = "experiment" if "experiment" in rec else "experiment_stop"
    if set(rec) - {kind, "ts"}:
        return None, _reject("bad_experiment", f"an {kind} record has only the fields {kind} and ts", raw)
    ts = _as_int_ts(rec.get("ts"))
    if ts is None or not 0 <= ts <= MAX_TS_MS:
        return None, _reject("bad_timestamp", "ts must be epoch milliseconds before 2100-01-01", raw)
    try:
        if kind == "experiment":
            return ExperimentStart(parse_experiment(rec["experiment"]), ts), None
        return ExperimentStop(_check_name(rec["experiment_stop"], "experiment_stop"), ts), None
    except ExperimentError as exc:
        return None, _reject("bad_experiment", str(exc), raw)


@dataclass(frozen=True)
class ExperimentRecord:
    """An experiment as applied: the declaration and when it started, last changed and stopped (window ends, ms)."""

    experiment: Experiment
    started_ms: int
    updated_ms: int
    stopped_ms: int | None = None

    @property
    def running(self) -> bool:
        return self.stopped_ms is None

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, "experiment": self.experiment.to_dict(), "started_ms": self.started_ms, "updated_ms": self.updated_ms, "stopped_ms": self.stopped_ms}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> "ExperimentRecord":
        if data.get("v") != 1:
            raise ExperimentError(f"unsupported experiment record version {data.get('v')!r}")
        return ExperimentRecord(parse_experiment(data["experiment"]), int(data["started_ms"]), int(data["updated_ms"]), data.get("stopped_ms"))


@dataclass(frozen=True)
class ControlOutcome:
    """What a control does: the running experiment after it, the record to store, or why it was refused."""

    running: ExperimentRecord | None
    stored: ExperimentRecord | None = None
    rejection: Rejection | None = None


def apply_control(running: ExperimentRecord | None, control: ExperimentControl, at_ms: int, config: ModelConfig) -> ControlOutcome:
    """Apply ``control`` at ``at_ms`` (the end of the window it takes effect in) to the running experiment.

    Start: when none runs, or to change the running one (same id; start time kept).
    Stop: only the running one.  Anything else is refused (reason
    ``experiment_conflict``), and so is a start the job with ``config`` cannot
    run (reason ``experiment_unsupported``, see :func:`unsupported`); the
    running experiment stays as it was.
    """
    if isinstance(control, ExperimentStart):
        experiment = control.experiment
        why = unsupported(experiment, config)
        if why is not None:
            return ControlOutcome(running, rejection=_reject("experiment_unsupported", why, control.to_dict()))
        if running is None:
            record = ExperimentRecord(experiment, at_ms, at_ms)
            return ControlOutcome(record, record)
        if running.experiment.id == experiment.id:
            record = dataclasses.replace(running, experiment=experiment, updated_ms=at_ms)
            return ControlOutcome(record, record)
        detail = f"experiment {running.experiment.id!r} is running: stop it before starting {experiment.id!r}"
        return ControlOutcome(running, rejection=_reject("experiment_conflict", detail, control.to_dict()))
    if running is not None and running.experiment.id == control.experiment_id:
        record = dataclasses.replace(running, stopped_ms=at_ms)
        return ControlOutcome(None, record)
    detail = f"experiment {control.experiment_id!r} is not running" + (f" (running: {running.experiment.id!r})" if running else "")
    return ControlOutcome(running, rejection=_reject("experiment_conflict", detail, control.to_dict()))


def control_order(controls: Sequence[ExperimentControl]) -> list[ExperimentControl]:
    """The order controls of one window are applied in: by ``ts``, then arrival."""
    return [c for _, c in sorted(enumerate(controls), key=lambda ic: (ic[1].ts, ic[0]))]


# -- scoring by variant -----------------------------------------------------------------------

# The contexts of the lists the job computes (home list, cart complements).
HOME, CART = "home", "cart"


def score_by_variant(
    users: Sequence[str],
    profiles: Sequence[UserProfile | None],
    now_ms: int,
    model: ScoringModel,
    config: ModelConfig,
    experiment: Experiment | None,
) -> list[UserLists]:
    """:func:`transforms.scoring.score_users` with each user's variant configuration, labelled.

    Users are grouped by variant and each group is scored in one batch with
    its variant's configuration (a user's lists never depend on the rest of
    the batch, so grouping changes nothing else).  A job list whose context is
    not among the experiment's contexts is scored with ``config`` and labelled
    with no experiment.  Without an experiment: one batch, labelled ``~``.
    """
    if not users:
        return []
    if experiment is None:
        return score_users(profiles, now_ms, model, config)
    groups: dict[str, list[int]] = {v.name: [] for v in experiment.variants}
    for row, user in enumerate(users):
        groups[assign(experiment, user)].append(row)
    out: list[UserLists | None] = [None] * len(users)
    home_in, cart_in = HOME in experiment.contexts, CART in experiment.contexts
    base_rows = [] if home_in and cart_in else list(range(len(users)))
    base = dict(zip(base_rows, score_users([profiles[r] for r in base_rows], now_ms, model, config))) if base_rows else {}
    for variant in experiment.variants:
        rows = groups[variant.name]
        if not rows or not (home_in or cart_in):
            continue
        label = (experiment.id, variant.name)
        variant_config = variant.model_config(config)
        variant_profiles = [with_half_life(profiles[r], variant_config.half_life_ms, config.half_life_ms, now_ms) for r in rows]
        scored = score_users(variant_profiles, now_ms, model.with_similarity(variant_config.similarity, config.similarity), variant_config)
        for row, lists in zip(rows, scored):
            if home_in and cart_in:
                out[row] = dataclasses.replace(lists, home_from=label, cart_from=label)
            elif home_in:
                out[row] = dataclasses.replace(lists, cart=base[row].cart, home_from=label)
            else:
                out[row] = dataclasses.replace(base[row], cart=lists.cart, cart_from=label)
    return [lists if lists is not None else base[row] for row, lists in enumerate(out)]


# -- statistics ----------------------------------------------------------------------------

Z_95 = 1.959963984540054
TEST_NAME = "two-sided two-proportion z-test (pooled), CTR of each variant vs the control"
INTERVAL_NAME = "Wilson score interval, 95%"


def wilson_interval(successes: float, trials: float, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (``(0, 0)`` without trials); clamps successes to trials."""
    if trials <= 0:
        return 0.0, 0.0
    p = min(max(successes, 0.0), trials) / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_p_value(x1: float, n1: float, x2: float, n2: float) -> float | None:
    """Two-sided p-value of H0 ``p1 == p2`` by the pooled two-proportion z-test (None without data or variance)."""
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if not variance > 0:
        return None
    z = (x1 / n1 - x2 / n2) / math.sqrt(variance)
    return math.erfc(abs(z) / math.sqrt(2))


@dataclass(frozen=True)
class VariantCounts:
    """Attributed outcomes of one variant (all contexts)."""

    impressions: int = 0
    clicks: int = 0
    carts: int = 0
    purchases: int = 0
    revenue: float = 0.0


@dataclass(frozen=True)
class VariantResult:
    name: str
    counts: VariantCounts
    ctr: float
    ctr_ci: tuple[float, float]
    conversion: float
    conversion_ci: tuple[float, float]
    lift: float | None  # relative CTR lift vs the control (None: the control, or a control CTR of 0)
    p_value: float | None  # vs the control (None: the control, or not computable yet)
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "impressions": self.counts.impressions,
            "clicks": self.counts.clicks,
            "carts": self.counts.carts,
            "purchases": self.counts.purchases,
            "revenue": self.counts.revenue,
            "ctr": self.ctr,
            "ctr_ci": list(self.ctr_ci),
            "conversion": self.conversion,
            "conversion_ci": list(self.conversion_ci),
            "lift": self.lift,
            "p_value": self.p_value,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class ExperimentResult:
    control: str
    variants: tuple[VariantResult, ...]
    winner: str | None
    verdict: str
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "control": self.control,
            "test": TEST_NAME,
            "interval": INTERVAL_NAME,
            "alpha": self.alpha,
            "variants": {v.name: v.to_dict() for v in self.variants},
            "winner": self.winner,
            "verdict": self.verdict,
        }


def _rate(x: float, n: float) -> float:
    return x / n if n > 0 else 0.0


def compare(variants: Iterable[str], control: str, counts: Mapping[str, VariantCounts], alpha: float = 0.05) -> ExperimentResult:
    """Rates with intervals, lift and p-value of each variant's CTR vs ``control``, and a plain verdict.

    ``winner`` is the variant with the highest CTR among those significantly
    different from the control at ``alpha`` (the control itself when every such
    variant is significantly worse); None while nothing is significant.
    """
    names = list(variants)
    level = f"{1 - alpha:.0%}"
    base = counts.get(control, VariantCounts())
    base_ctr = _rate(base.clicks, base.impressions)
    rows = []
    significant: list[tuple[str, float]] = []
    for name in names:
        c = counts.get(name, VariantCounts())
        ctr = _rate(c.clicks, c.impressions)
        lift = p = None
        if name == control:
            verdict = "control"
        else:
            lift = (ctr - base_ctr) / base_ctr if base_ctr > 0 else None
            p = two_proportion_p_value(c.clicks, c.impressions, base.clicks, base.impressions)
            if c.impressions <= 0 or base.impressions <= 0:
                verdict = "no impressions yet"
            elif p is None:
                verdict = "no clicks yet: not yet significant"
            elif p < alpha:
                direction = "higher" if ctr > base_ctr else "lower"
                verdict = f"CTR {direction} than {control}, significant at {level} (p = {p:.2g})"
                significant.append((name, ctr))
            else:
                verdict = f"not yet significant at {level} (p = {p:.2g})"
        rows.append(
            VariantResult(
                name=name,
                counts=c,
                ctr=ctr,
                ctr_ci=wilson_interval(c.clicks, c.impressions),
                conversion=_rate(c.purchases, c.impressions),
                conversion_ci=wilson_interval(c.purchases, c.impressions),
                lift=lift,
                p_value=p,
                verdict=verdict,
            )
        )
    winner = None
    if significant:
        best, best_ctr = max(significant, key=lambda s: (s[1], s[0]))
        winner = best if best_ctr > base_ctr else control
    if winner is None:
        verdict = f"not yet significant at {level}: no variant's CTR differs from {control}'s beyond chance"
    elif winner == control:
        verdict = f"{control} wins: every significant difference at {level} is a lower CTR than {control}'s"
    else:
        lift = next(r.lift for r in rows if r.name == winner)
        verdict = f"{winner} wins: CTR {'' if lift is None else f'{lift:+.1%} '}vs {control}, significant at {level}"
    return ExperimentResult(control=control, variants=tuple(rows), winner=winner, verdict=verdict, alpha=alpha)


def experiment_report(record: ExperimentRecord, totals: Mapping[str, VariantCounts], by_context: Mapping[str, Mapping[str, VariantCounts]] | None = None, alpha: float = 0.05) -> dict[str, Any]:
    """What ``GET /v1/experiments/{id}`` and ``flowrec experiment show`` say about an experiment.

    ``totals`` are each variant's counts over all contexts, ``by_context`` per
    context.  Variants counted but no longer declared (removed by a change)
    are listed after the declared ones, so no count is hidden.
    """
    experiment = record.experiment
    names = [v.name for v in experiment.variants] + sorted(set(totals) - {v.name for v in experiment.variants})
    result = compare(names, experiment.control, totals, alpha)
    shares = {v.name: v.share for v in experiment.variants}
    variants = {}
    for row in result.variants:
        entry: dict[str, Any] = {"share": shares.get(row.name, 0.0), **row.to_dict()}
        contexts = (by_context or {}).get(row.name, {})
        entry["contexts"] = {
            context: {**dataclasses.asdict(c), "ctr": _rate(c.clicks, c.impressions), "conversion": _rate(c.purchases, c.impressions)} for context, c in sorted(contexts.items())
        }
        variants[row.name] = entry
    out = result.to_dict()
    out["variants"] = variants
    return {
        "id": experiment.id,
        "status": "running" if record.running else "stopped",
        "experiment": experiment.to_dict(),
        "started_ms": record.started_ms,
        "updated_ms": record.updated_ms,
        "stopped_ms": record.stopped_ms,
        **out,
    }
