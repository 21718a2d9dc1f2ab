"""The reference engine: an in-process, event-time replay of exactly what the Flink job computes.

Semantics (shared by every engine; the Flink job is tested against this):

1. Event time is cut into windows ``[k*W, (k+1)*W)`` with ``W = window_ms``;
   the model refreshes in slots of ``R = model_refresh_ms``.
2. Each user's events are applied in event-time order to the user's profile
   (:func:`transforms.profile.apply_window`, one user at a time) as they arrive; this yields
   the window's item-model deltas.
3. When window ``k`` closes (at ``T = (k+1)*W``): catalog upserts with
   ``ts < T`` take effect (content neighbours of the changed items are
   recomputed); the window's summed co-occurrence deltas and trending weights
   are applied; if ``T`` is in a later refresh slot (``(T-1)//R``) than the
   last refresh, the neighbours of every item whose row changed since then
   are recomputed and trending is recomputed at ``T``; then every user with
   events in the window is scored at ``T`` (so a list is recomputed at most
   once per window: the debounce).  At the end of a bounded input a last
   refresh runs without scoring.
4. Outputs carry ``T`` as their timestamp; a key's final value is the one from
   the last window that produced it.
5. With ``blend_learning`` the blend weights are learned per user shard
   (:mod:`transforms.blend`): a window's users of one shard are scored with
   their shard's learner as it was before the window, then the window's
   credit steps the learner.  The shards are the job's user shards
   (``user_shards``), so the job equals the engine at any parallelism.
6. Learned embeddings (:meth:`ReferenceEngine.set_embeddings`) come in
   versions, each with an event time ``effective_ms``; like a catalog upsert
   it takes effect when the window holding that time closes: a list scored at
   ``T`` uses the newest version with ``effective_ms < T``.  Every list of one
   window is scored with one version (the switch is atomic for readers), and
   a version set after its window closed is used from the next window that
   closes.
7. Online item vectors (``online_item_vectors``, while a version is in
   effect): the co-occurrence weights since
   the version took effect are kept as a second item model (its *evidence*),
   reset when the window holding a switch closes (before that window's
   deltas); at the first refresh of each ``online_vector_refresh_ms`` slot
   (and at the end of a bounded input) the evidence rows of the items changed
   since move their vectors (:class:`transforms.embedding.OnlineItemVectors`), which
   every list scored from then on uses.  An item the version lacks starts
   from its *cold prior*, the vector the version's feature towers give its
   catalog record (set when the version takes effect, and at each upsert).
6. Experiment controls (:meth:`ReferenceEngine.control_experiment`, see
   :mod:`transforms.experiments`) take effect like a catalog upsert: at the
   close of the window holding their ``ts`` (controls of one window by
   ``ts``, then arrival; the stored record carries that window's end).  Every
   list scored at ``T`` is computed with its user's variant of the experiment
   running at ``T`` (:func:`transforms.experiments.score_by_variant`).

The engine is also the model behind offline evaluation (:meth:`recommend`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from transforms.ads import sponsored_bids
from transforms.catalog import CatalogItem
from transforms.blend import CONTEXTS, DEFAULT_USER_SHARDS, ShardBlend, memo_key, score_and_learn, served_config, served_weights, user_shard
from transforms.config import ModelConfig, event_weights
from transforms.content import ContentIndex
from transforms.cooccurrence import ItemModel
from transforms.embedding import EmbeddingModel, OnlineItemVectors
from transforms.events import EventBatch, Rejection, split_feedback
from transforms.experiments import ExperimentControl, ExperimentRecord, apply_control, control_order, score_by_variant
from transforms.profile import ItemContribution, UserProfile, apply_window, scorable
from transforms.scoring import Neighbours, ScoredItem, ScoringModel, UserLists, score_users
from transforms.trending import TrendingModel
from transforms.windows import WindowClock

log = logging.getLogger(__name__)

# ``effective_ms`` of an embedding version in effect from the start (before any event time).
FROM_START_MS = -(2**63)


@dataclass
class WindowOutput:
    """What one closed window changes; ``users[u] is None`` means the user was forgotten."""

    window_end_ms: int
    neighbours: dict[str, Neighbours] = field(default_factory=dict)
    # Online item vectors' evidence rows that changed at this window's refresh (see item 7 above).
    evidence: dict[str, Neighbours] = field(default_factory=dict)
    content: dict[str, Neighbours] = field(default_factory=dict)
    catalog: list[CatalogItem] = field(default_factory=list)
    trending_global: Neighbours | None = None
    trending_by_category: dict[str, Neighbours] = field(default_factory=dict)
    users: dict[str, UserLists | None] = field(default_factory=dict)
    events: int = 0
    # The embedding version this window's lists are scored with, set only when it
    # changed at this window ("" when embeddings were switched off).
    embeddings_version: str | None = None
    # Experiments started, changed or stopped at this window, and refused controls.
    experiments: list[ExperimentRecord] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


@dataclass
class FinalState:
    """The last value of every output key, with the window end that produced it."""

    neighbours: dict[str, tuple[int, Neighbours]] = field(default_factory=dict)
    content: dict[str, tuple[int, Neighbours]] = field(default_factory=dict)
    catalog: dict[str, CatalogItem] = field(default_factory=dict)
    trending_global: tuple[int, Neighbours] | None = None
    trending_by_category: dict[str, tuple[int, Neighbours]] = field(default_factory=dict)
    users: dict[str, tuple[int, UserLists | None]] = field(default_factory=dict)
    experiments: dict[str, ExperimentRecord] = field(default_factory=dict)

    def merge(self, out: WindowOutput) -> None:
        t = out.window_end_ms
        self.neighbours.update((k, (t, v)) for k, v in out.neighbours.items())
        self.content.update((k, (t, v)) for k, v in out.content.items())
        self.catalog.update((c.item_id, c) for c in out.catalog)
        if out.trending_global is not None:
            self.trending_global = (t, out.trending_global)
        self.trending_by_category.update((k, (t, v)) for k, v in out.trending_by_category.items())
        self.users.update((k, (t, v)) for k, v in out.users.items())
        self.experiments.update((r.experiment.id, r) for r in out.experiments)


def content_neighbours(index: ContentIndex, items: Iterable[str] | None, k: int) -> dict[str, Neighbours]:
    """Content neighbours as (ids, similarities) arrays, for ``items`` or (None) every item."""
    raw = index.neighbours_all(k) if items is None else index.neighbours(list(items), k)
    return {
        item: (np.array([j for j, _ in lst], dtype=object), np.array([s for _, s in lst], dtype=np.float64))
        for item, lst in raw.items()
    }


class ReferenceEngine:
    """Replays events in event-time order, window by window, exactly as the job does.

    ``on_window`` receives every :class:`WindowOutput`; ``score_users`` may be
    ``False`` to only build state (offline training), or a mapping user ->
    last window index to score each user only in its last active window
    (same final lists, much less work; see :func:`replay`).  With
    ``score_users=False`` the model is refreshed only at :meth:`finish`, since
    nothing observes it in between (offline training: the fast path).
    ``embeddings`` is the learned-embedding version in effect from the start
    (see :meth:`set_embeddings`).
    """

    def __init__(
        self,
        config: ModelConfig,
        catalog: Sequence[CatalogItem] = (),
        on_window: Callable[[WindowOutput], None] | None = None,
        score_users: bool | Mapping[str, int] = True,
        embeddings: EmbeddingModel | None = None,
        user_shards: int = DEFAULT_USER_SHARDS,
    ) -> None:
        self.config = config
        # Blend learning (config.blend_learning): per user shard, as the job's scorer keeps it.
        self.user_shards = user_shards
        self.blend: dict[int, ShardBlend] = {}
        self.on_window = on_window
        self.score_users = score_users
        self.weights_table = config.weight_table()
        self.clock = WindowClock.of(config)
        self.profiles: dict[str, UserProfile] = {}
        self.items = ItemModel(config)
        self.trending = TrendingModel(config)
        self.catalog: dict[str, CatalogItem] = {}
        self.content_index: ContentIndex | None = None
        self.model = ScoringModel(neighbours=self.items.neighbours, content={}, facts={}, embeddings=embeddings, variant_neighbours=self.items.variant_neighbours)
        # (effective from, version), oldest first; the first entry is in effect from the start.
        self._embedding_versions: list[tuple[int, EmbeddingModel | None]] = [(FROM_START_MS, embeddings)]
        # Online item vectors: the evidence (co-occurrence since the version in effect took
        # effect) and the vectors it moved, for that version (None: no evidence is kept).
        self.evidence: ItemModel | None = None
        self.online: OnlineItemVectors | None = None
        self._evidence_for: EmbeddingModel | None = None
        self._evidence_tracked = False
        self._vector_slot: int | None = None
        self._window: int | None = None
        self._contribution = ItemContribution()
        self._dirty: dict[str, None] = {}
        # Users active since their last lists, waiting for their scoring window (see transforms.windows).
        self._unscored: dict[str, None] = {}
        self._closed_window: int | None = None
        self._events_in_window = 0
        self._events_since_refresh = 0
        self._refresh_slot: int | None = None
        self._pending_catalog: list[CatalogItem] = []
        # Experiment controls not yet in effect (arrival order), and the experiment running.
        self._pending_controls: list[ExperimentControl] = []
        self.experiment: ExperimentRecord | None = None
        self.events_applied = 0
        self._last_end = 0
        self.upsert_catalog(list(catalog))

    # -- input -------------------------------------------------------------
    def process(self, events: EventBatch) -> None:
        """Apply events (any order within the call; sorted by time here), closing windows as time passes."""
        events = split_feedback(events)[0]
        if len(events) == 0:
            return
        events = events.sorted_by_time()
        weights = event_weights(events.etype, events.rating, self.config)
        if self.score_users is False:
            # Nothing observes the windows in between: apply the whole call as
            # one window (same per-user state; item sums are order-free).
            last = int(self.clock.window_of(events.ts[-1]))
            self._window = last if self._window is None else max(self._window, last)
            self._apply(events, weights)
            return
        windows = self.clock.window_of(events.ts)
        bounds = np.flatnonzero(np.r_[True, windows[1:] != windows[:-1], True])
        for start, end in zip(bounds[:-1], bounds[1:]):
            window = int(windows[start])
            if self._window is not None and window > self._window:
                self._close()
                self._score_pending(before_window=window)
            if self._window is None or window > self._window:
                self._window = window
            self._apply(events.take(slice(start, end)), weights[start:end])

    def close_catalog(self) -> None:
        """Apply every pending catalog upsert (their windows close in order): the end of a bounded input."""
        self._close_catalog_windows(None)

    def upsert_catalog(self, items: Sequence[CatalogItem]) -> None:
        """Catalog changes take effect when the window holding their ``ts`` closes.

        A window with catalog changes but no events still closes (its output
        holds only catalog and content changes), exactly as in the job.
        """
        self._pending_catalog.extend(items)
        self._pending_catalog.sort(key=lambda c: c.ts)

    def finish(self) -> None:
        """Close the open window (end of a bounded input)."""
        if self.score_users is False:
            # Offline training: the whole catalog at once, then one window.
            if self._pending_catalog:
                self._apply_catalog(self._pending_catalog, WindowOutput(window_end_ms=0))
                self._pending_catalog = []
            if self._window is not None:
                self._close()
                self._window = None
            self.items.refresh()
            self.model.trending_global, by_category = self.trending.lists(self._last_end, self.model.top_category)
            self.model.trending_by_category.update(by_category)
            return
        if self._window is not None:
            self._close()
            self._window = None
        # Lists still waiting for their scoring window see the catalog up to it and the
        # last refresh, as the job's scorer does when the end of input closes that window.
        waiting = self.clock.score_window(self._closed_window) if self._unscored and self._closed_window is not None else None
        if waiting is not None:
            self._close_catalog_windows(waiting + 1)
        else:
            self._close_catalog_windows(None)
        if self._last_end:
            out = WindowOutput(window_end_ms=self._last_end)
            self._refresh(out, self._last_end, final=True)
            if self.on_window is not None and (out.neighbours or out.evidence or out.trending_global is not None):
                self.on_window(out)
        if waiting is not None:
            self._close_scoring(waiting)
            self._close_catalog_windows(None)
        self._apply_controls(None)

    def control_experiment(self, control: ExperimentControl) -> None:
        """Start, change or stop an experiment at ``control.ts``: as the job does with a control
        record on its catalog input, it takes effect when the window holding ``ts`` closes."""
        self._pending_controls.append(control)

    def set_embeddings(self, embeddings: EmbeddingModel | None, effective_ms: int) -> None:
        """Use ``embeddings`` (None: none) for every list scored at ``T > effective_ms``.

        This is what the job's scorer does with a version announced on its
        broadcast stream with event time ``effective_ms`` (as a catalog upsert
        with ``ts = effective_ms``): it switches when the window holding
        ``effective_ms`` closes.  Versions with equal times: the one set last wins.
        """
        versions = [v for v in self._embedding_versions if v[0] <= effective_ms]
        versions.append((effective_ms, embeddings))
        self._embedding_versions = versions + [v for v in self._embedding_versions if v[0] > effective_ms]

    def embeddings_at(self, time_ms: int) -> EmbeddingModel | None:
        """The embedding version in effect for a list scored at ``time_ms`` (the newest with ``effective_ms < time_ms``)."""
        current = self._embedding_versions[0][1]
        for effective, embeddings in self._embedding_versions:
            if effective >= time_ms:
                break
            current = embeddings
        return current

    def _switch_embeddings(self, time_ms: int) -> bool:
        """Make the version in effect at ``time_ms`` current (dropping older ones); True if it changed."""
        current = self.embeddings_at(time_ms)
        self._embedding_versions = [(e, m) for e, m in self._embedding_versions if e >= time_ms]
        self._embedding_versions.insert(0, (FROM_START_MS, current))
        previous = self.model.embeddings
        changed = (previous.export if previous is not None else None) is not (current.export if current is not None else None)
        self.model.embeddings = self._served(current)
        return changed

    def served_embeddings(self, time_ms: int) -> EmbeddingModel | None:
        """The version in effect at ``time_ms`` as lists use it: with its online item vectors, when kept."""
        return self._served(self.embeddings_at(time_ms))

    def _served(self, embeddings: EmbeddingModel | None) -> EmbeddingModel | None:
        """``embeddings`` with its online item vectors, when they are kept for it."""
        if embeddings is not None and self.online is not None and self._evidence_for is embeddings:
            return self.online.model()
        return embeddings

    def _track_evidence(self, end: int) -> None:
        """Before window ending at ``end`` applies its deltas: evidence for the version in effect then (reset on a switch)."""
        current = self.embeddings_at(end)
        if self._evidence_tracked and current is self._evidence_for:
            return
        self._evidence_tracked = True
        self._evidence_for = current
        self._vector_slot = None
        keep = current is not None and self.config.online_item_vectors
        self.evidence = ItemModel(self.config) if keep else None
        self.online = OnlineItemVectors.of(current, self.config) if keep else None
        if self.online is not None:
            self.online.set_priors(self.online.cold_priors(list(self.catalog.values())))

    def close_replayed_window(self, window: int, contribution: ItemContribution, events: int, profiles: Mapping[str, UserProfile | None]) -> None:
        """Close ``window`` for a caller that replays users itself (the backfill, in parallel):
        ``contribution`` is the window's summed item-model deltas, ``events`` its event count and
        ``profiles`` the users to list from this window on (their final profiles; None: forgotten).

        The engine keeps such a user's profile only until the user is scored (the caller holds
        them all); scoring windows without events are closed on the way, as in :meth:`process`.
        """
        self._score_pending(before_window=window)
        self._window = window
        self._contribution = contribution
        self._events_in_window = events
        self.events_applied += events
        self._dirty = dict.fromkeys(profiles)
        self.profiles.update((user, profile) for user, profile in profiles.items() if profile is not None)
        self._close()
        self._window = None
        for user in [u for u in self.profiles if u not in self._unscored]:
            del self.profiles[user]

    # -- output ------------------------------------------------------------
    def recommend(
        self,
        user_ids: Sequence[str],
        n: int,
        now_ms: int,
        exclude: Mapping[str, set[str]] | None = None,
    ) -> dict[str, list[ScoredItem]]:
        """Score users against the current state (call :meth:`finish` first for a closed model).

        The embedding version is the one in effect at ``now_ms``.
        """
        model = self.model
        embeddings = self.served_embeddings(now_ms)
        if embeddings is not model.embeddings:
            model = dataclasses.replace(model, embeddings=embeddings)
        exclude = exclude or {}
        out: dict[str, list[ScoredItem]] = {}
        for config, users in self._by_served_config(user_ids):
            lists = score_users([scorable(self.profiles.get(u)) for u in users], now_ms, model, config, [exclude.get(u, ()) for u in users], n)
            out.update((user, user_lists.home) for user, user_lists in zip(users, lists))
        return out

    def blend_weights(self, context: str = "home") -> dict[int, dict[str, float | str]]:
        """Per user shard with a learner: the setting served in ``context`` and its weights (``{}`` without blend learning)."""
        out: dict[int, dict[str, float | str]] = {}
        for shard in sorted(self.blend):
            name, weights = served_weights(self.blend[shard].learners.get(context), self.config, context)
            out[shard] = {"setting": name, **weights}
        return out

    def _by_served_config(self, user_ids: Sequence[str]) -> list[tuple[ModelConfig, list[str]]]:
        """Users grouped by the config their lists are scored with (one group without blend learning)."""
        if not self.config.blend_learning:
            return [(self.config, list(user_ids))]
        groups: dict[int, list[str]] = {}
        for user in user_ids:
            groups.setdefault(user_shard(user, self.user_shards), []).append(user)
        out = []
        for shard, users in sorted(groups.items()):
            state = self.blend.get(shard)
            out.append((served_config(state.learners.get("home") if state else None, self.config), users))
        return out

    # -- internals -----------------------------------------------------------
    def _apply(self, events: EventBatch, weights: np.ndarray) -> None:
        changed = apply_window(self.profiles.get, events.user, events.item, events.etype, events.ts, weights, self.config, self._contribution)
        for user, profile, _ in changed:
            if profile is None:
                self.profiles.pop(user, None)
            else:
                self.profiles[user] = profile
            self._dirty[user] = None
        self._events_in_window += len(events)
        self.events_applied += len(events)

    def _apply_catalog(self, items: list[CatalogItem], out: WindowOutput) -> None:
        """Upsert items into the catalog and the content index, recompute the changed items' content neighbours."""
        sponsored = dict(self.model.sponsored)
        for item in items:
            self.catalog[item.item_id] = item
            self.model.facts[item.item_id] = (item.top_category, item.in_stock)
            sponsored.pop(item.item_id, None)
            sponsored.update(sponsored_bids([item]))
        # A new mapping, not an update in place: lists already handed out keep the bids they were scored with.
        self.model.sponsored = sponsored
        # Incremental: only the upserted items are tokenised (equal to a rebuild of the whole catalog).
        self.content_index = ContentIndex.build(list(self.catalog.values())) if self.content_index is None else self.content_index.upsert(items)
        content = content_neighbours(self.content_index, sorted({i.item_id for i in items}), self.config.content_neighbours)
        self.model.content.update(content)
        out.content.update(content)
        out.catalog.extend(items)
        if self.online is not None:
            # Items the export lacks start from what their features say (item 7 of the module doc).
            self.online.set_priors(self.online.cold_priors(items))

    def _apply_controls(self, before_ms: int | None) -> None:
        """Apply the experiment controls stamped before ``before_ms`` (all when None), window by window.

        Each window's controls go out in a window output of their own (ending where
        the job's content operator stores them), so the final state holds each
        experiment's latest record.
        """
        due = [c for c in self._pending_controls if before_ms is None or c.ts < before_ms]
        if not due:
            return
        self._pending_controls = [c for c in self._pending_controls if c not in due]
        by_window: dict[int, list[ExperimentControl]] = {}
        for control in due:
            by_window.setdefault(int(self.clock.window_of(control.ts)), []).append(control)
        for window in sorted(by_window):
            out = WindowOutput(window_end_ms=self.clock.end(window))
            for control in control_order(by_window[window]):
                outcome = apply_control(self.experiment, control, out.window_end_ms, self.config)
                self.experiment = outcome.running
                if outcome.stored is not None:
                    out.experiments.append(outcome.stored)
                if outcome.rejection is not None:
                    log.warning("experiment control refused: %s", outcome.rejection.detail)
                    out.rejections.append(outcome.rejection)
            if self.on_window is not None:
                self.on_window(out)

    def _close_catalog_windows(self, before_window: int | None) -> None:
        """Close the catalog-only windows before ``before_window`` (all when None), oldest first."""
        clock = self.clock
        while self._pending_catalog:
            window = clock.window_of(self._pending_catalog[0].ts)
            if before_window is not None and window >= before_window:
                return
            # The pending upserts are in ts order: the window's are a prefix (scanning them all
            # for every window cost O(pending^2) on a catalog that grows all day).
            count = 0
            while count < len(self._pending_catalog) and clock.window_of(self._pending_catalog[count].ts) == window:
                count += 1
            due = self._pending_catalog[:count]
            self._pending_catalog = self._pending_catalog[count:]
            out = WindowOutput(window_end_ms=clock.end(window))
            self._apply_catalog(due, out)
            if self.on_window is not None:
                self.on_window(out)

    def _refresh(self, out: WindowOutput, end: int, final: bool = False) -> None:
        """Recompute changed neighbours, online item vectors (first refresh of their slot, or ``final``)
        and (after new events) trending as of ``end``."""
        out.neighbours = self.items.refresh()
        slot = self.clock.vector_slot(end)
        if self.evidence is not None and (final or slot != self._vector_slot):
            self._vector_slot = slot
            out.evidence = self.evidence.refresh_rows(self.config.online_vector_evidence)
            self.online.update(out.evidence)
        if self._events_since_refresh:
            out.trending_global, out.trending_by_category = self.trending.lists(end, self.model.top_category)
            self.model.trending_global = out.trending_global
            self.model.trending_by_category.update(out.trending_by_category)
            self._events_since_refresh = 0

    def _close(self) -> None:
        window = self._window
        end = self.clock.end(window)
        out = WindowOutput(window_end_ms=end, events=self._events_in_window)
        self._close_catalog_windows(window)
        due = [c for c in self._pending_catalog if c.ts < end]
        if due:
            self._pending_catalog = self._pending_catalog[len(due):]
            self._apply_catalog(due, out)
        c = self._contribution
        self.items.apply_window(c.items, c.item_weights, c.pair_a, c.pair_b, c.pair_weights)
        if self.score_users is not False:
            self._track_evidence(end)
            if self.evidence is not None:
                self.evidence.apply_window(c.items, c.item_weights, c.pair_a, c.pair_b, c.pair_weights)
        self.trending.add(c.trend_items, c.trend_ts, c.trend_weights)
        self._events_since_refresh += self._events_in_window
        slot = self.clock.refresh_slot(end)
        if slot != self._refresh_slot and self.score_users is not False:
            self._refresh_slot = slot
            self._refresh(out, end)
        self._last_end = end
        self._closed_window = window
        if self.score_users is not False:
            if self._switch_embeddings(end):
                out.embeddings_version = "" if self.model.embeddings is None else self.model.embeddings.version
            self._unscored.update(self._dirty)
            if self.clock.score_window(window) == window:
                self._score(out, window)
        self._contribution = ItemContribution()
        self._dirty = {}
        self._events_in_window = 0
        if self.on_window is not None:
            self.on_window(out)

    def _score(self, out: WindowOutput, window: int) -> None:
        """Lists of the users waiting for scoring window ``window`` (in ``score_users`` mapping mode:
        those whose last active window is scored here), at the window's end."""
        last = self.score_users if isinstance(self.score_users, Mapping) else None
        due = [u for u in sorted(self._unscored) if last is None or self.clock.score_window(last.get(u, -1)) == window]
        profiles = {u: scorable(self.profiles.get(u)) for u in due}  # None: forgotten, the keys are deleted
        kept = [u for u in due if profiles[u] is not None]
        self._apply_controls(out.window_end_ms)
        experiment = self.experiment.experiment if self.experiment is not None else None
        if self.config.blend_learning and experiment is None:
            scored = self._score_learning(kept, profiles, out.window_end_ms)
        else:
            scored = dict(zip(kept, score_by_variant(kept, [profiles[u] for u in kept], out.window_end_ms, self.model, self.config, experiment)))
        if self.config.blend_learning:
            # Forgotten users leave no memo; lists an experiment scored teach the blend nothing.
            for user in due if experiment is not None else [u for u in due if profiles[u] is None]:
                for context in CONTEXTS:
                    self.blend.get(user_shard(user, self.user_shards), ShardBlend()).memos.pop(memo_key(context, user), None)
        out.users.update((user, scored.get(user)) for user in due)
        self._unscored = {}

    def _score_learning(self, users: list[str], profiles: Mapping[str, UserProfile | None], now_ms: int) -> dict[str, UserLists]:
        """Each shard's users scored with its learner, which then learns from them (see :mod:`transforms.blend`)."""
        groups: dict[int, list[str]] = {}
        for user in users:
            groups.setdefault(user_shard(user, self.user_shards), []).append(user)
        scored: dict[str, UserLists] = {}
        for shard, members in sorted(groups.items()):
            state = self.blend.setdefault(shard, ShardBlend())
            keys = [memo_key(c, u) for u in members for c in CONTEXTS]
            previous = {k: state.memos[k] for k in keys if k in state.memos}
            lists, state.learners, memos = score_and_learn(members, [profiles[u] for u in members], now_ms, self.model, self.config, state.learners, previous)
            scored.update(zip(members, lists))
            for user, memo in memos.items():
                if memo is None:
                    state.memos.pop(user, None)
                else:
                    state.memos[user] = memo
        return scored

    def _score_pending(self, before_window: int) -> None:
        """Close the scoring window of waiting users if it ends before ``before_window`` (it holds no events)."""
        if not self._unscored or self._closed_window is None or self.score_users is False:
            return
        window = self.clock.score_window(self._closed_window)
        if window < before_window:
            self._close_catalog_windows(window + 1)
            self._close_scoring(window)

    def _close_scoring(self, window: int) -> None:
        """A window with no events of its own that closes an interval: only lists change."""
        end = self.clock.end(window)
        out = WindowOutput(window_end_ms=end)
        self._track_evidence(end)
        if self._switch_embeddings(end):
            out.embeddings_version = "" if self.model.embeddings is None else self.model.embeddings.version
        self._score(out, window)
        if self.on_window is not None:
            self.on_window(out)


def last_windows(events: EventBatch, window_ms: int) -> dict[str, int]:
    """Each user's last window index in a bounded input."""
    windows = events.ts // window_ms
    out: dict[str, int] = {}
    for user, window in zip(events.user.tolist(), windows.tolist()):
        if window > out.get(user, -1):
            out[user] = window
    return out


def replay(
    events: EventBatch,
    config: ModelConfig,
    catalog: Sequence[CatalogItem] = (),
    catalog_updates: Sequence[CatalogItem] = (),
    chunk: int = 50_000,
    embeddings: Sequence[tuple[int, EmbeddingModel | None]] = (),
    user_shards: int = DEFAULT_USER_SHARDS,
    experiments: Sequence[ExperimentControl] = (),
) -> tuple[ReferenceEngine, FinalState]:
    """Replay a bounded input and return the engine and the final value of every output key.

    ``catalog`` and ``catalog_updates`` are both upserts applied at their ``ts``;
    ``embeddings`` are ``(effective_ms, version)`` switches (see
    :meth:`ReferenceEngine.set_embeddings`); ``experiments`` are experiment
    controls (see :meth:`ReferenceEngine.control_experiment`).

    Users are scored only in their last active window, which gives the same
    final lists as scoring them in every window - unless the blend is learned
    (``blend_learning``): every scoring is then a step of the learners, so
    every window is scored, with the job's ``user_shards``.
    """
    final = FinalState()
    score = True if config.blend_learning else last_windows(events, config.window_ms)
    engine = ReferenceEngine(config, list(catalog) + list(catalog_updates), on_window=final.merge, score_users=score, user_shards=user_shards)
    for effective_ms, version in embeddings:
        engine.set_embeddings(version, effective_ms)
    for control in experiments:
        engine.control_experiment(control)
    events = events.sorted_by_time()
    for start in range(0, len(events), chunk):
        engine.process(events.take(slice(start, start + chunk)))
    engine.finish()
    return engine, final
