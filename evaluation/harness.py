"""The evaluation harness behind ``flowrec evaluate``: every algorithm, one split, one table.

Protocols (see :func:`evaluate`):

* ``msr`` - Microsoft Recommenders' MovieLens-100K protocol: a 75/25 per-user
  stratified random split (seed 42), top-k without items seen in training,
  every test interaction relevant, metrics as in :mod:`transforms.metrics`.
* ``temporal`` - a global time cut: the first 80 % of events (by time) train,
  the rest test.  Only users with training history are evaluated (cold-start
  users cannot be told apart by any personalised model), and their relevant
  items are the test items they had not touched in training.
* ``prequential`` - a replay in time order (as in Alpenglow and StreamingRec):
  before each event the user's top-k list is requested, then the event is
  applied.  An event is evaluated when it is a positive interaction with an
  item the user has not touched before (seen items are excluded from lists,
  so re-interactions can never hit).  Streaming algorithms (the engine and
  its parts) learn from every event as it happens; batch baselines are
  retrained at the start of each UTC day on all earlier events, so the value
  of real-time updates shows up as the gap between them.

``fixed`` (train/test files from another tool) is evaluated like ``msr``.

Algorithms: ``flowrec`` (the reference engine, i.e. exactly what the job
computes), its parts alone (``flowrec-cf``, ``flowrec-content``,
``flowrec-usercf``, ``flowrec-trending``, ``flowrec-embedding``: the learned
user vector alone, ``flowrec-sequence``: the sequence model alone), the hybrid
without the two learned components (``flowrec-no-embeddings``), and the
baselines of :mod:`evaluation.baselines`.  The engine is imported only when an
engine algorithm runs, so the harness works with the baselines alone.

Settings the config asks to derive from history (``derive_from_history``,
see :mod:`transforms.derive`) are measured on the training part in the static
protocols, as a deployment measures them on its backfill; a prequential
replay starts without history, so it keeps the configured values.  Every
report records the config the engine rows ran with.

Learned embeddings (:class:`EmbeddingSource`) are trained within the harness
on the protocol's training data only (:mod:`learn`, needs PyTorch), or read
from a pre-trained export (``--embeddings DIR``).  In ``prequential`` they
are retrained on the batch baselines' schedule - at the start of each UTC day
on all earlier events - and switched in at the day's start
(:meth:`transforms.engine.ReferenceEngine.set_embeddings`), as a nightly
training job feeding the streaming job would; a pre-trained export is used
for the whole replay.  Without PyTorch the rows that need embeddings report
the reason and the others run.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from evaluation.baselines import BASELINES, Interactions, MatrixRecommender, make_baseline
from transforms import metrics as M
from transforms.catalog import CatalogItem, parse_catalog_lines
from transforms.config import ModelConfig
from transforms.derive import Derivation, derive_config
from transforms.events import FORGET, REMOVE_FROM_CART, EventBatch, parse_csv, parse_json_lines, parse_records
from transforms.splits import stratified_random_split, temporal_cut_time

log = logging.getLogger(__name__)

PROTOCOLS = ("msr", "temporal", "prequential")
ENGINE_PARTS = (
    "flowrec",
    "flowrec-cf",
    "flowrec-content",
    "flowrec-trending",
    "flowrec-embedding",
    "flowrec-sequence",
    "flowrec-no-embeddings",
)
ALGORITHMS: tuple[str, ...] = ENGINE_PARTS + ("flowrec-usercf",) + tuple(BASELINES)
DAY_MS = 24 * 3600 * 1000
# Cut-offs for the metrics-vs-k plot (the requested k is always added).
PLOT_KS = (1, 5, 10, 20)
# Metrics plotted against k, with bootstrap intervals of their means.
PLOT_METRICS = ("precision", "recall", "ndcg", "hr")
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 1000
MSR_RATIO = 0.75
TEMPORAL_RATIO = 0.8
# Events handed to the engine per process() call when building a model (progress granularity only).
ENGINE_CHUNK = 5000
USERCF_NEIGHBOURS = 50
RESULT_METRICS = M.ALL_METRICS
# Reported only by the prequential protocol: the share of hits on items first touched that day.
PREQUENTIAL_METRICS = ("new_item_hit_share",)


class EvaluationError(ValueError):
    """Input the harness cannot evaluate (empty split, unreadable file...), with the reason."""


# ---------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Dataset:
    """Events (any order) plus the catalog used for content features and categories."""

    name: str
    events: EventBatch
    catalog: list[CatalogItem] = field(default_factory=list)


def load_dataset(spec: str, datasets_dir: Path, catalog_path: Path | None = None) -> Dataset:
    """``ml-100k``, ``taobao`` or a path to a CSV/JSON-lines event file (see :func:`read_event_file`).

    Raises ``transforms.datasets.DatasetMissing`` when a named data set is absent.
    """
    from transforms import datasets

    if spec == "ml-100k":
        events, catalog = datasets.load_movielens_100k(datasets.dataset_path(datasets_dir, "ml-100k"))
    elif spec in ("taobao", "taobao-sample"):
        events, catalog = datasets.load_taobao_sample(datasets.dataset_path(datasets_dir, "taobao-sample"))
        spec = "taobao"
    else:
        path = Path(spec)
        if not path.is_file():
            raise EvaluationError(f"--dataset {spec!r} is neither ml-100k, taobao nor an existing file")
        events, catalog = read_event_file(path), []
    if catalog_path is not None:
        catalog = read_catalog_file(catalog_path)
    return Dataset(name=spec, events=events, catalog=list(catalog))


def read_catalog_file(path: Path) -> list[CatalogItem]:
    """Catalog items from a JSON-lines file; bad lines are logged and skipped."""
    with open(path, "rb") as handle:
        items, rejections = parse_catalog_lines(handle)
    if rejections:
        log.warning("%s: skipped %d catalog lines (first: %s)", path, len(rejections), rejections[0].reason)
    return items


# Header aliases for interaction tables written by other tools (case-insensitive).
_USER_COLUMNS = ("user_id", "user", "userid")
_ITEM_COLUMNS = ("item_id", "item", "itemid")
_WEIGHT_COLUMNS = ("rating", "weight", "score")
_TIME_COLUMNS = ("ts", "timestamp", "time")
# Timestamps below this are taken as epoch seconds (1e11 s is the year 5138; 1e11 ms is 1973).
_SECONDS_LIMIT = 100_000_000_000


def read_event_file(path: Path) -> EventBatch:
    """Events from a file: flowrec JSON lines, flowrec event CSV, or an interaction table.

    * ``.jsonl``/``.json``/``.ndjson``: one flowrec event object per line;
    * CSV whose header has ``event_type``: flowrec event CSV;
    * otherwise CSV (comma, tab or semicolon) with a header naming a user
      column (user_id/user/userID), an item column (item_id/item/itemID), an
      optional rating/weight column and a timestamp column (ts/timestamp; epoch
      seconds or milliseconds): every row becomes a ``rating`` event with the
      rating (default 1.0).
    Invalid rows are rejected with their reason (logged); a file without any
    valid row raises :class:`EvaluationError`.
    """
    data = path.read_bytes()
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        result = parse_json_lines(data.splitlines())
    else:
        text = data.decode("utf-8", errors="replace")
        first_line = text.split("\n", 1)[0]
        dialect_delimiter = "\t" if "\t" in first_line else (";" if ";" in first_line and "," not in first_line else ",")
        header = [h.strip().lower() for h in first_line.split(dialect_delimiter)]
        if "event_type" in header and dialect_delimiter == ",":
            result = parse_csv(text)
        else:
            result = parse_records(_interaction_rows(text, dialect_delimiter, path))
    if result.rejections:
        reasons: dict[str, int] = defaultdict(int)
        for rejection in result.rejections:
            reasons[rejection.reason] += 1
        log.warning("%s: rejected %d rows %s", path, len(result.rejections), dict(reasons))
    if len(result.events) == 0:
        raise EvaluationError(f"{path}: no valid event in the file")
    return result.events


def _interaction_rows(text: str, delimiter: str, path: Path) -> Iterable[dict[str, Any]]:
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [h.strip().lower() for h in next(reader, [])]

    def find(names: tuple[str, ...], required: bool) -> int | None:
        for name in names:
            if name in header:
                return header.index(name)
        if required:
            raise EvaluationError(f"{path}: header {header} lacks a column named one of {names}")
        return None

    user_col, item_col = find(_USER_COLUMNS, True), find(_ITEM_COLUMNS, True)
    weight_col, time_col = find(_WEIGHT_COLUMNS, False), find(_TIME_COLUMNS, True)
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue
        record: dict[str, Any] = {"event_type": "rating", "rating": 1.0}
        try:
            record["user_id"] = row[user_col].strip()
            record["item_id"] = row[item_col].strip()
            raw_ts = row[time_col].strip()
            if weight_col is not None:
                record["rating"] = row[weight_col].strip()
        except IndexError:
            yield {"row": row}  # rejected by validation as missing fields
            continue
        try:
            ts = float(raw_ts)
            ts_ms = int(ts * 1000) if abs(ts) < _SECONDS_LIMIT else int(ts)
            record["ts"] = ts_ms
        except (ValueError, OverflowError):  # not a number, or inf/nan
            record["ts"] = raw_ts  # rejected with bad_timestamp
        yield record


# ---------------------------------------------------------------------------
# Algorithms


def engine_part_config(name: str, config: ModelConfig) -> ModelConfig:
    """The model config of an engine algorithm: the hybrid, or one part with the other blend weights at 0.

    ``flowrec-trending`` keeps the two trending components (global and in the
    user's categories) at their configured weights.
    """
    zero = dict.fromkeys(BLEND_FIELDS, 0.0)
    if name == "flowrec":
        return config
    if name == "flowrec-no-embeddings":
        return config.replace(weight_embedding=0.0, weight_sequence=0.0)
    if name == "flowrec-embedding":
        return config.replace(**{**zero, "weight_embedding": 1.0})
    if name == "flowrec-sequence":
        return config.replace(**{**zero, "weight_sequence": 1.0})
    if name == "flowrec-cf":
        return config.replace(**{**zero, "weight_cf": 1.0})
    if name == "flowrec-content":
        return config.replace(**{**zero, "weight_content": 1.0})
    if name == "flowrec-trending":
        trending = {"weight_category": config.weight_category, "weight_popularity": config.weight_popularity}
        if trending["weight_category"] <= 0 and trending["weight_popularity"] <= 0:
            trending["weight_popularity"] = 1.0
        return config.replace(**{**zero, **trending})
    raise ValueError(f"{name!r} is not an engine algorithm")


# Settings read only when a list is scored, never while learning the state
# (profiles, co-occurrence, content, trending): configs that differ only in
# these share one replay (the hybrid and its parts, tuning trials).
BLEND_FIELDS = ("weight_cf", "weight_content", "weight_category", "weight_popularity", "weight_recent", "weight_embedding", "weight_sequence")
SCORING_FIELDS = BLEND_FIELDS + ("interest_items", "max_per_category", "exclude_seen", "top_n", "embedding_candidates")


def uses_embeddings(config: ModelConfig) -> bool:
    """Whether lists scored with ``config`` read learned embeddings."""
    return config.weight_embedding > 0 or config.weight_sequence > 0


def _state_view(config: ModelConfig) -> dict[str, Any]:
    return {key: value for key, value in config.to_dict().items() if key not in SCORING_FIELDS}


def _state_key(config: ModelConfig) -> str:
    import orjson

    return orjson.dumps(_state_view(config), option=orjson.OPT_SORT_KEYS).decode()


class EmbeddingUnavailable(RuntimeError):
    """No learned embeddings could be had (no PyTorch, no readable export, training failed)."""


class EmbeddingSource:
    """Where the engine rows' learned embeddings come from: trained on the training part, or a given export."""

    # Whether the prequential replay retrains it daily (a fixed export is not).
    retrains: bool = False

    def model_for(self, train: EventBatch, config: ModelConfig):
        """The :class:`transforms.embedding.EmbeddingModel` for training events ``train`` (None: none to learn).

        ``config`` is the model config the engine serves with (derived settings included).
        """
        raise NotImplementedError


class PretrainedEmbeddings(EmbeddingSource):
    """A pre-trained export (``--embeddings DIR``: a version directory, or a root whose newest version is used).

    The harness cannot check what the export was trained on: it must not have
    seen the protocol's test part.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._model = None

    def model_for(self, train: EventBatch, config: ModelConfig):
        if self._model is None:
            from state.embeddings import ExportError, latest_version, read_export
            from transforms.embedding import EmbeddingModel

            version = latest_version(self.path)
            if version is None:
                raise EmbeddingUnavailable(f"{self.path}: no embedding export found")
            try:
                self._model = EmbeddingModel(read_export(version))
            except ExportError as exc:
                raise EmbeddingUnavailable(str(exc)) from exc
            log.info("embeddings: export %s (%d items, dim %d)", version, len(self._model.export.item_ids), self._model.export.dim)
        return self._model


class TrainedEmbeddings(EmbeddingSource):
    """Embeddings trained by :mod:`learn` (PyTorch) on exactly the training events it is given.

    The model config passed to :meth:`model_for` supplies what the job
    serves with (event weights, half-life, history length); ``train_config`` is a ``learn.TrainConfig``
    (default: the trainer's defaults).  The last training is kept, so
    learners that share one training part (tuning replays) train once.
    ``keep_dir`` keeps the exports there (else they are temporary), so a
    later run can reuse one with ``--embeddings``.
    """

    retrains = True

    def __init__(
        self,
        catalog: Sequence[CatalogItem],
        seed: int = 42,
        train_config: Any = None,
        keep_dir: Path | None = None,
    ) -> None:
        self.catalog = list(catalog)
        self.seed = seed
        self.train_config = train_config
        self.keep_dir = keep_dir
        self._trained: dict[tuple[int, ...], Any] = {}

    def model_for(self, train: EventBatch, config: ModelConfig):
        if len(train) == 0:
            return None
        # Same events, same model: tuning replays share one training part (or
        # one prefix per replayed day), so each is trained once.
        key = (
            len(train), int(train.ts.min()), int(train.ts.max()), int(train.ts.sum()),
            hash(tuple(train.user[:: max(1, len(train) // 64)].tolist())), _state_key(config),
        )
        if key not in self._trained:
            # The catalog as of the last training event: an item added later is not in the
            # export (it is what a shop's training job would have seen).
            cutoff = int(train.ts.max())
            catalog = [c for c in self.catalog if c.ts <= cutoff]
            self._trained[key] = train_embedding_model(train, catalog, config, self.seed, self.train_config, self.keep_dir)
        return self._trained[key]


def train_embedding_model(
    train: EventBatch,
    catalog: Sequence[CatalogItem],
    config: ModelConfig,
    seed: int,
    train_config: Any = None,
    keep_dir: Path | None = None,
):
    """Train with :mod:`learn` on ``train`` only and return the served model (an ``EmbeddingModel``).

    The trainer writes a real export (into a temporary directory) and the
    model is read back from it, so the evaluation scores exactly what a job
    would load.  The trainer carves its own early-stopping validation from
    ``train``; nothing else is seen.  The export goes to ``keep_dir`` when
    given (named by the last training event's time), else to a temporary
    directory.
    """
    import tempfile

    try:
        import faiss  # noqa: F401 - the trainer's neighbour index
        import torch  # noqa: F401
        from learn import TrainConfig
        from learn.train import train_and_export
    except ImportError as exc:
        raise EmbeddingUnavailable(
            f"training embeddings needs PyTorch and faiss (the learn extra: pip install '.[learn]'), or pass --embeddings DIR ({exc})"
        ) from exc
    from state.embeddings import read_export
    from transforms.embedding import EmbeddingModel

    settings = (train_config or TrainConfig()).replace(seed=seed)
    with tempfile.TemporaryDirectory(prefix="flowrec-evaluate-") as scratch:
        out = Path(keep_dir) if keep_dir is not None else Path(scratch)
        result = train_and_export(train, catalog, out, now_ms=int(train.ts.max()), config=settings, model_config=config, checkpoint_dir=Path(scratch) / "checkpoints")
        model = EmbeddingModel(read_export(result.path))
    log.info("embeddings: trained on %d events in %.1f s (%s)", len(train), result.summary["train_seconds"], result.summary.get("validation"))
    return model


class Learner:
    """One learned state behind one or more table rows (``names``).

    ``streaming`` learners learn event by event (:meth:`observe`); batch ones
    are (re)fitted with :meth:`fit`.  Lists are item ids, best first.
    """

    names: list[str]
    streaming: bool = False

    def fit(self, train: EventBatch) -> None:
        raise NotImplementedError

    def observe(self, events: EventBatch) -> None:
        raise NotImplementedError(f"{self.names} learn in batches")

    def new_day(self, history: EventBatch, day_start_ms: int) -> None:
        """A streaming learner's daily batch step (prequential replay): ``history`` is every earlier event."""

    def recommend(self, name: str, user_ids: Sequence[str], n: int, now_ms: int, exclude: Mapping[str, set[str]]) -> dict[str, list[str]]:
        raise NotImplementedError


class EngineLearner(Learner):
    """One reference-engine replay serving several table rows that differ only in scoring settings.

    ``scoring`` maps each row name to its config; every config must equal
    ``config`` (the one the state is learned with) except in
    :data:`SCORING_FIELDS`, which act only when a list is scored.  A row whose
    config is ``config`` itself is served by ``ReferenceEngine.recommend``; the
    others by the same scorer (:func:`transforms.scoring.score_users`) on the
    same state, which is what the job computes when configured with them.
    """

    streaming = True

    def __init__(
        self,
        scoring: Mapping[str, ModelConfig],
        config: ModelConfig,
        catalog: Sequence[CatalogItem],
        progress: bool = False,
        embeddings: EmbeddingSource | None = None,
    ) -> None:
        state = _state_view(config)
        for name, candidate in scoring.items():
            if _state_view(candidate) != state:
                raise ValueError(f"{name}: differs from the replayed config outside the scoring fields {SCORING_FIELDS}")
        self.names = list(scoring)
        # As given; fit() derives the settings named in derive_from_history from
        # its training events (a streaming replay starts without history and
        # keeps the given values).
        self.given_config = config
        self.given_configs = dict(scoring)
        self.config = config
        self.configs = dict(scoring)
        self.derivation: Derivation | None = None
        self.catalog = list(catalog)
        self.progress = progress
        self.engine = None
        # Embeddings are learned only when a row reads them; a failure to get
        # them fails those rows alone (see recommend).
        self.embeddings = embeddings if any(uses_embeddings(c) for c in self.configs.values()) else None
        self.embedding_error: EmbeddingUnavailable | None = None
        self.embeddings_days = 0  # prequential: daily embedding steps taken

    def _new_engine(self, streaming: bool):
        from transforms.engine import ReferenceEngine  # lazily: optional for baseline-only runs

        # score_users=False builds state only and refreshes the item model once,
        # in finish(); an empty mapping scores nobody but keeps the job's
        # refresh schedule, which a replay that asks for lists midway needs.
        # A learned blend learns from the lists the job writes at every window
        # close, so a streaming replay then scores them as the job does.
        if streaming and self.config.blend_learning:
            return ReferenceEngine(self.config, self.catalog, score_users=True)
        return ReferenceEngine(self.config, self.catalog, score_users={} if streaming else False)

    def blend_weights(self) -> dict[str, Any] | None:
        """The learned blend now: each weight's mean over the user shards with a learner and how many
        shards serve each setting (None without blend learning or before any learner)."""
        if self.engine is None or not self.config.blend_learning:
            return None
        shards = self.engine.blend_weights()
        if not shards:
            return None
        settings: dict[str, int] = {}
        for entry in shards.values():
            settings[str(entry["setting"])] = settings.get(str(entry["setting"]), 0) + 1
        names = [k for k in next(iter(shards.values())) if k != "setting"]
        weights = {name: sum(float(e[name]) for e in shards.values()) / len(shards) for name in names}
        return {"weights": weights, "settings": dict(sorted(settings.items()))}

    def _embeddings_for(self, train: EventBatch):
        """The embedding model for ``train``, or None with the reason kept for the rows that need it."""
        if self.embeddings is None:
            return None
        try:
            model = self.embeddings.model_for(train, self.config)
        except Exception as exc:  # noqa: BLE001 - only the embedding rows fail, with this reason
            log.error("embeddings unavailable: %s", exc)
            self.embedding_error = exc if isinstance(exc, EmbeddingUnavailable) else EmbeddingUnavailable(f"{type(exc).__name__}: {exc}")
            return None
        self.embedding_error = None
        return model

    def fit(self, train: EventBatch) -> None:
        from tqdm import tqdm

        self._derive(train)
        self.engine = self._new_engine(streaming=False)
        ordered = train.sorted_by_time()
        with tqdm(total=len(ordered), desc="flowrec: replay", unit="ev", disable=not self.progress, leave=False) as bar:
            for start in range(0, len(ordered), ENGINE_CHUNK):
                part = ordered.take(slice(start, start + ENGINE_CHUNK))
                self.engine.process(part)
                bar.update(len(part))
        self.engine.finish()
        from transforms.engine import FROM_START_MS

        self.engine.set_embeddings(self._embeddings_for(train), effective_ms=FROM_START_MS)

    def _derive(self, train: EventBatch) -> None:
        """Measure the derivable settings from ``train``; every row's config gets the same values."""
        self.derivation = derive_config(train, self.given_config)
        derived = self.derivation.config
        final = {name: getattr(derived, name) for name in self.given_config.derive_from_history}
        self.config = derived
        self.configs = {
            name: derived if candidate is self.given_config else candidate.replace(derive_from_history=(), **final)
            for name, candidate in self.given_configs.items()
        }

    def new_day(self, history: EventBatch, day_start_ms: int) -> None:
        """Retrain the embeddings on ``history`` and switch them in at the day's start (a fixed export: once)."""
        if self.embeddings is None or (self.embeddings_days and not self.embeddings.retrains):
            return
        if self.engine is None:
            self.engine = self._new_engine(streaming=True)
        # Trained on the events before the day: in effect for every list asked at or after its start.
        self.engine.set_embeddings(self._embeddings_for(history), effective_ms=day_start_ms - 1)
        self.embeddings_days += 1

    def observe(self, events: EventBatch) -> None:
        if self.engine is None:
            self.engine = self._new_engine(streaming=True)
        self.engine.process(events)

    def recommend(self, name, user_ids, n, now_ms, exclude):
        if self.engine is None:
            self.engine = self._new_engine(streaming=True)
        config = self.configs[name]
        if self.embedding_error is not None and uses_embeddings(config):
            raise EmbeddingUnavailable(str(self.embedding_error))  # a fresh one: no traceback piling up per call
        # One BLAS thread, as the job's Python workers run: the scorer's small
        # matrix-vector products stall for 10-30 ms when a second BLAS thread
        # waits for a busy core (measured on a shared 2-core box).
        with _blas_controller().limit(limits=1, user_api="blas"):
            return self._recommend(config, user_ids, n, now_ms, exclude)

    def _recommend(self, config, user_ids, n, now_ms, exclude):
        if config is self.config:
            lists = self.engine.recommend(list(user_ids), n, now_ms, exclude)
            return {user: [entry.item for entry in lists.get(user, [])] for user in user_ids}
        import dataclasses

        from transforms.profile import scorable
        from transforms.scoring import score_users

        model = dataclasses.replace(self.engine.model, embeddings=self.engine.served_embeddings(now_ms))
        users = list(user_ids)
        lists = score_users([scorable(self.engine.profiles.get(u)) for u in users], now_ms, model, config, [exclude.get(u, frozenset()) for u in users], n)
        return {user: [entry.item for entry in user_lists.home] for user, user_lists in zip(users, lists)}


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # built once: limiting through it then costs ~16 us


class BaselineLearner(Learner):
    """A :mod:`evaluation.baselines` model: fitted on weighted interactions, training-seen items excluded."""

    def __init__(self, name: str, make: Callable[[], MatrixRecommender], config: ModelConfig) -> None:
        self.names = [name]
        self.make = make
        self.config = config
        self.model: MatrixRecommender | None = None

    def fit(self, train: EventBatch) -> None:
        data = Interactions.from_events(train, self.config)
        self.model = self.make().fit(data) if len(data) and (data.weight > 0).any() else None

    def recommend(self, name, user_ids, n, now_ms, exclude):
        if self.model is None:
            return {user: [] for user in user_ids}
        return self.model.recommend(list(user_ids), n, exclude_seen=True, exclude=exclude)


class UserKNNLearner(Learner):
    """flowrec's user-based CF (:class:`transforms.usercf.UserKNN`) on the configured event weights."""

    def __init__(self, config: ModelConfig, k_neighbours: int = USERCF_NEIGHBOURS) -> None:
        self.names = ["flowrec-usercf"]
        self.config = config
        self.k_neighbours = k_neighbours
        self.model = None

    def fit(self, train: EventBatch) -> None:
        from transforms.usercf import UserKNN

        data = Interactions.from_events(train, self.config)
        keep = data.weight != 0
        self.model = UserKNN.fit(data.user[keep], data.item[keep], data.weight[keep]) if keep.any() else None

    def recommend(self, name, user_ids, n, now_ms, exclude):
        if self.model is None:
            return {user: [] for user in user_ids}
        out = {}
        for user in user_ids:
            banned = exclude.get(user, set())
            # Ask for enough extra items that dropping the excluded ones still leaves n.
            found = self.model.recommend([user], n + len(banned), k_neighbours=self.k_neighbours, exclude_seen=True)
            out[user] = [item for item, _ in found.get(user, []) if item not in banned][:n]
        return out


def make_learners(
    algorithms: Sequence[str],
    config: ModelConfig,
    catalog: Sequence[CatalogItem],
    seed: int = 42,
    progress: bool = False,
    embeddings: EmbeddingSource | None = None,
) -> list[Learner]:
    """The learners behind the named table rows; all engine parts share one :class:`EngineLearner`.

    ``embeddings`` defaults to training them on the training part (:class:`TrainedEmbeddings`).
    """
    learners: list[Learner] = []
    engine_names = [name for name in algorithms if name in ENGINE_PARTS]
    if engine_names:
        scoring = {name: engine_part_config(name, config) for name in engine_names}
        source = embeddings if embeddings is not None else TrainedEmbeddings(catalog, seed=seed)
        learners.append(EngineLearner(scoring, config, catalog, progress=progress, embeddings=source))
    for name in algorithms:
        if name in ENGINE_PARTS:
            continue
        if name == "flowrec-usercf":
            learners.append(UserKNNLearner(config))
        elif name in BASELINES:
            learners.append(BaselineLearner(name, lambda name=name: make_baseline(name, seed=seed), config))
        else:
            raise EvaluationError(f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}")
    return learners


def parse_algorithms(text: str | None) -> list[str]:
    """Comma-separated algorithm names (default: all), validated, in the given order."""
    if not text:
        return list(ALGORITHMS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALGORITHMS]
    if unknown:
        raise EvaluationError(f"unknown algorithms {unknown}; known: {', '.join(ALGORITHMS)}")
    if not names:
        raise EvaluationError("--algorithms names no algorithm")
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------
# Results


@dataclass
class AlgorithmResult:
    """One algorithm's numbers: metrics at k, metrics at every plotted k, timings."""

    metrics: dict[str, float | None]
    at_k: dict[int, dict[str, float]]
    latency_ms: dict[str, float | None]
    fit_s: float
    evaluated: int
    windows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    # 95 % bootstrap intervals of the means in at_k (PLOT_METRICS), per k.
    intervals: dict[int, dict[str, tuple[float, float]]] = field(default_factory=dict)

    @classmethod
    def failed(cls, error: str) -> "AlgorithmResult":
        """The row of an algorithm that raised: no numbers, the error kept for the table and JSON."""
        return cls(metrics={}, at_k={}, latency_ms={}, fit_s=0.0, evaluated=0, error=error)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: _finite(self.metrics.get(name)) for name in RESULT_METRICS}
        out.update((name, _finite(self.metrics[name])) for name in PREQUENTIAL_METRICS if name in self.metrics)
        if self.error is not None:
            out["error"] = self.error
        out["latency_ms"] = {q: _finite(v) for q, v in self.latency_ms.items()}
        out["fit_s"] = round(self.fit_s, 3)
        out["evaluated"] = self.evaluated
        out["at_k"] = {str(k): {m: _finite(v) for m, v in values.items()} for k, values in sorted(self.at_k.items())}
        if self.intervals:
            out["intervals"] = {
                str(k): {m: [_finite(low), _finite(high)] for m, (low, high) in values.items()} for k, values in sorted(self.intervals.items())
            }
        if self.windows:
            out["windows"] = self.windows
        return out


def _finite(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return float(value)


@dataclass
class Report:
    dataset: str
    protocol: str
    k: int
    results: dict[str, AlgorithmResult]
    info: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        # "flowrec" first when present, so the hybrid leads every listing.
        names = sorted(self.results, key=lambda n: (n != "flowrec", ALGORITHMS.index(n) if n in ALGORITHMS else len(ALGORITHMS)))
        return {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "k": self.k,
            "results": {name: self.results[name].to_json() for name in names},
            **self.info,
        }


# ---------------------------------------------------------------------------
# Shared pieces


def positive_mask(events: EventBatch) -> np.ndarray:
    """Events that express interest in their item (everything but remove_from_cart and forget)."""
    return (events.etype != REMOVE_FROM_CART) & (events.etype != FORGET)


def items_by_user(events: EventBatch, mask: np.ndarray | None = None) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    users, items = events.user, events.item
    rows = range(len(events)) if mask is None else np.flatnonzero(mask)
    for row in rows:
        out[users[row]].add(items[row])
    return dict(out)


def users_per_item(events: EventBatch) -> dict[str, int]:
    """Distinct users per item among positive events (the novelty popularity counts)."""
    pairs = {(u, i) for u, i, keep in zip(events.user.tolist(), events.item.tolist(), positive_mask(events).tolist()) if keep}
    counts: dict[str, int] = defaultdict(int)
    for _, item in pairs:
        counts[item] += 1
    return dict(counts)


def metric_intervals(per_list: Mapping[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """95 % bootstrap intervals of the mean of each metric's per-list values (users, or replayed events)."""
    names = list(per_list)
    if not names:
        return {}
    low, high = M.bootstrap_intervals(np.column_stack([per_list[m] for m in names]), level=CONFIDENCE, resamples=BOOTSTRAP_RESAMPLES)
    return {m: (float(lo), float(hi)) for m, lo, hi in zip(names, low.tolist(), high.tolist())}


def _plot_ks(k: int) -> list[int]:
    return sorted({*PLOT_KS, k})


def _category_map(catalog: Sequence[CatalogItem]) -> dict[str, str]:
    return {c.item_id: c.top_category for c in catalog if c.top_category}


# ---------------------------------------------------------------------------
# Static protocols (msr, temporal, fixed files)


@dataclass(frozen=True)
class StaticSplit:
    """Training events, the users to evaluate with their relevant items, and what each user saw."""

    train: EventBatch
    test: EventBatch
    relevant: dict[str, set[str]]
    seen: dict[str, set[str]]
    now_ms: int


def make_static_split(train: EventBatch, test: EventBatch, warm_only: bool) -> StaticSplit:
    """Relevant items = positive test items the user did not touch in training; users without any are dropped."""
    if len(train) == 0 or len(test) == 0:
        raise EvaluationError(f"split has {len(train)} training and {len(test)} test events; both must be non-empty")
    seen = items_by_user(train, train.etype != FORGET)
    relevant = {}
    for user, items in items_by_user(test, positive_mask(test)).items():
        if warm_only and user not in seen:
            continue
        fresh = items - seen.get(user, set())
        if fresh:
            relevant[user] = fresh
    if not relevant:
        raise EvaluationError("no test user has a relevant item that is not already in their training data")
    return StaticSplit(train=train, test=test, relevant=relevant, seen=seen, now_ms=int(train.ts.max()))


def split_for_protocol(events: EventBatch, protocol: str, seed: int = 42) -> StaticSplit:
    """The msr (per-user 75/25 random, seeded) or temporal (first 80 % of time) split of ``events``."""
    if protocol == "msr":
        parts = stratified_random_split(events.user, events.item, ratio=MSR_RATIO, seed=seed)
        return make_static_split(events.take(parts.train), events.take(parts.test), warm_only=False)
    if protocol == "temporal":
        cut = temporal_cut_time(events.ts, TEMPORAL_RATIO)
        return make_static_split(events.take(events.ts < cut), events.take(events.ts >= cut), warm_only=True)
    raise EvaluationError(f"protocol {protocol!r} has no static split")


def evaluate_static(
    split: StaticSplit,
    learners: Sequence[Learner],
    k: int,
    catalog: Sequence[CatalogItem],
    all_items: set[str],
    progress: bool = False,
) -> dict[str, AlgorithmResult]:
    """Fit every learner on the training part once and score each named algorithm's lists for the test users.

    Each user's list is requested alone, so the latency percentiles are per
    request.  ``fit_s`` is the learner's fit time (shared by the engine parts).
    An algorithm that raises gets a row carrying the error (see
    :meth:`AlgorithmResult.failed`); the others still run.
    """
    from tqdm import tqdm

    ks = _plot_ks(k)
    n = max(ks)
    users = sorted(split.relevant)
    category_of = _category_map(catalog)
    popularity = users_per_item(split.train)
    n_train_users = len(set(split.train.user.tolist()))
    results: dict[str, AlgorithmResult] = {}
    for learner in learners:
        started = time.perf_counter()
        try:
            learner.fit(split.train)
        except Exception as exc:  # noqa: BLE001 - one failing algorithm must not lose the whole table
            results.update({name: _failure(name, exc) for name in learner.names})
            continue
        fit_s = time.perf_counter() - started
        for name in learner.names:
            lists: dict[str, list[str]] = {}
            latencies = []
            try:
                for user in tqdm(users, desc=f"{name}: recommend", unit="user", disable=not progress, leave=False):
                    started = time.perf_counter()
                    found = learner.recommend(name, [user], n, split.now_ms, {user: split.seen.get(user, set())})
                    latencies.append((time.perf_counter() - started) * 1000.0)
                    lists[user] = found.get(user, [])
            except Exception as exc:  # noqa: BLE001
                results[name] = _failure(name, exc)
                continue
            at_k = {cut: M.ranking_metrics(lists, split.relevant, cut) for cut in ks}
            intervals = {}
            for cut in ks:
                per_user = M.per_user_metrics(lists, split.relevant, cut)
                intervals[cut] = metric_intervals({m: per_user[m] for m in PLOT_METRICS})
            metrics: dict[str, float | None] = {m: v for m, v in at_k[k].items() if m != "users"}
            metrics.update(M.beyond_accuracy_metrics(lists, k, all_items, category_of, popularity, n_train_users))
            results[name] = AlgorithmResult(
                metrics=metrics,
                at_k={cut: {m: v for m, v in values.items() if m != "users"} for cut, values in at_k.items()},
                intervals=intervals,
                latency_ms=M.percentiles(latencies),
                fit_s=fit_s,
                evaluated=len(users),
            )
            log.info("%s: nDCG@%d %.4f, P@%d %.4f (fit %.1f s)", name, k, metrics["ndcg"], k, metrics["precision"], fit_s)
    return results


def _failure(name: str, exc: Exception) -> AlgorithmResult:
    log.error("%s failed", name, exc_info=exc)
    return AlgorithmResult.failed(f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------
# Prequential protocol


@dataclass
class _Accumulator:
    """Per-list metric values for one time window (or overall): their means, and the intervals of the means."""

    ks: Sequence[int]
    count: int = 0
    values: dict[int, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, recommended: Sequence[str], relevant: set[str]) -> None:
        self.count += 1
        for cut in self.ks:
            row = self.values.setdefault(cut, {m: [] for m in M.ACCURACY_METRICS})
            for name, metric in M.PER_LIST.items():
                row[name].append(metric(recommended, relevant, cut))

    def means(self, cut: int) -> dict[str, float]:
        row = self.values.get(cut, {m: [] for m in M.ACCURACY_METRICS})
        return {m: (sum(v) / self.count if self.count else 0.0) for m, v in row.items()}

    def intervals(self, cut: int) -> dict[str, tuple[float, float]]:
        row = self.values.get(cut, {m: [] for m in M.ACCURACY_METRICS})
        return metric_intervals({m: np.asarray(row[m]) for m in PLOT_METRICS})


def evaluable_events(events: EventBatch) -> np.ndarray:
    """Mask of time-ordered events to evaluate: positive, and the user's first touch of the item.

    A ``forget`` event clears what its user has touched.
    """
    touched: dict[str, set[str]] = defaultdict(set)
    out = np.zeros(len(events), dtype=bool)
    positive = positive_mask(events)
    for row, (user, item, etype) in enumerate(zip(events.user.tolist(), events.item.tolist(), events.etype.tolist())):
        if etype == FORGET:
            touched.pop(user, None)
            continue
        if positive[row] and item not in touched[user]:
            out[row] = True
        touched[user].add(item)
    return out


@dataclass
class _PrequentialStats:
    """What one algorithm accumulates during a replay."""

    ks: Sequence[int]
    k: int
    overall: _Accumulator = field(init=False)
    windows: dict[int, _Accumulator] = field(default_factory=dict)
    shown: set[str] = field(default_factory=set)
    diversities: list[float] = field(default_factory=list)
    novelties: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    # Hits at k, and those on items first touched since the day's training (no batch model,
    # no trained embedding has seen them: only what learns in the stream can list them).
    hits: int = 0
    new_item_hits: int = 0

    def __post_init__(self) -> None:
        self.overall = _Accumulator(self.ks)

    def add(self, recommended: list[str], target: str, window: int, latency_ms: float, category_of, popularity, n_users, target_is_new: bool = False) -> None:
        relevant = {target}
        if target in recommended[: self.k]:
            self.hits += 1
            self.new_item_hits += target_is_new
        self.latencies.append(latency_ms)
        self.overall.add(recommended, relevant)
        self.windows.setdefault(window, _Accumulator([self.k])).add(recommended, relevant)
        self.shown.update(recommended[: self.k])
        diversity = M.intra_list_diversity(recommended, category_of, self.k)
        if diversity is not None:
            self.diversities.append(diversity)
        novelty = M.novelty(recommended, popularity, n_users, self.k)
        if novelty is not None:
            self.novelties.append(novelty)

    def result(self, all_items: set[str], fit_s: float, origin: int, window_ms: int) -> AlgorithmResult:
        k = self.k
        metrics: dict[str, float | None] = dict(self.overall.means(k))
        metrics["coverage"] = len(self.shown & all_items) / len(all_items) if all_items else 0.0
        metrics["diversity"] = sum(self.diversities) / len(self.diversities) if self.diversities else None
        metrics["novelty"] = sum(self.novelties) / len(self.novelties) if self.novelties else None
        metrics["new_item_hit_share"] = self.new_item_hits / self.hits if self.hits else None
        rows = []
        for index in sorted(self.windows):
            acc = self.windows[index]
            start = origin + index * window_ms
            rows.append({"start_ms": int(start), "end_ms": int(start + window_ms), "evaluated": acc.count, **acc.means(k)})
        return AlgorithmResult(
            metrics=metrics,
            at_k={cut: self.overall.means(cut) for cut in self.ks},
            intervals={cut: self.overall.intervals(cut) for cut in self.ks},
            latency_ms=M.percentiles(self.latencies),
            fit_s=fit_s,
            evaluated=self.overall.count,
            windows=rows,
        )


def evaluate_prequential(
    events: EventBatch,
    learners: Sequence[Learner],
    k: int,
    catalog: Sequence[CatalogItem],
    window_ms: int = DAY_MS,
    progress: bool = False,
    max_events: int | None = None,
    evaluate_from_ms: int | None = None,
) -> tuple[dict[str, AlgorithmResult], dict[str, Any]]:
    """Replay ``events`` in time order, asking each algorithm for the user's top list before each event.

    Streaming learners receive every event before the next list is asked
    for (and their daily batch step, :meth:`Learner.new_day`); batch learners
    are refitted on all earlier events whenever a new UTC day starts.  Events
    before ``evaluate_from_ms`` are learned from but not evaluated (a warm-up).
    Returns per-algorithm results (with ``windows``: metrics at k per time
    window of ``window_ms``) and run information.
    """
    from tqdm import tqdm

    ordered = events.sorted_by_time()
    if max_events is not None:
        ordered = ordered.take(slice(0, max_events))
    if len(ordered) == 0:
        raise EvaluationError("no events to replay")
    ks = _plot_ks(k)
    n = max(ks)
    to_evaluate = evaluable_events(ordered)
    if evaluate_from_ms is not None:
        to_evaluate &= ordered.ts >= evaluate_from_ms
    users, items, ts, etypes = ordered.user.tolist(), ordered.item.tolist(), ordered.ts.tolist(), ordered.etype.tolist()
    all_items = set(items) | {c.item_id for c in catalog}
    category_of = _category_map(catalog)
    popularity = users_per_item(ordered)
    n_users = len(set(users))
    origin = (ts[0] // window_ms) * window_ms
    # The UTC day of each event's item's first event: a target first touched on its own day is
    # newer than the day's training (every learner here retrains or refits at each day's start).
    first_day: dict[str, int] = {}
    for item, t in zip(items, ts):
        first_day.setdefault(item, t // DAY_MS)
    results = {}
    blend_windows: dict[int, dict[str, Any]] = {}  # report window -> learned blend at its last evaluated event
    for learner in learners:
        stats = {name: _PrequentialStats(ks, k) for name in learner.names}
        failed: dict[str, AlgorithmResult] = {}
        touched: dict[str, set[str]] = defaultdict(set)
        fit_s = 0.0
        applied = 0  # ordered[:applied] has been given to a streaming learner
        trained_day: int | None = None
        label = ",".join(learner.names)
        try:
            for row in tqdm(range(len(ordered)), desc=f"{label}: replay", unit="ev", disable=not progress, leave=False):
                user, item = users[row], items[row]
                if ts[row] // DAY_MS != trained_day:
                    started = time.perf_counter()
                    if learner.streaming:
                        learner.new_day(ordered.take(slice(0, row)), (ts[row] // DAY_MS) * DAY_MS)
                    else:
                        learner.fit(ordered.take(slice(0, row)))
                    fit_s += time.perf_counter() - started
                    trained_day = ts[row] // DAY_MS
                if to_evaluate[row]:
                    if learner.streaming and applied < row:
                        started = time.perf_counter()
                        learner.observe(ordered.take(slice(applied, row)))
                        fit_s += time.perf_counter() - started
                        applied = row
                    window = (ts[row] - origin) // window_ms
                    if isinstance(learner, EngineLearner):
                        learned = learner.blend_weights()
                        if learned is not None:
                            blend_windows[window] = learned
                    for name in learner.names:
                        if name in failed:
                            continue
                        started = time.perf_counter()
                        try:
                            found = learner.recommend(name, [user], n, ts[row], {user: touched[user]})
                        except Exception as exc:  # noqa: BLE001 - the learner's other rows go on
                            failed[name] = _failure(name, exc)
                            continue
                        latency = (time.perf_counter() - started) * 1000.0
                        stats[name].add(found.get(user, []), item, window, latency, category_of, popularity, n_users, first_day[item] == ts[row] // DAY_MS)
                if etypes[row] == FORGET:
                    touched.pop(user, None)
                else:
                    touched[user].add(item)
        except Exception as exc:  # noqa: BLE001 - learning failed: every row of this learner
            failed.update({name: _failure(name, exc) for name in learner.names if name not in failed})
        for name in learner.names:
            if name in failed:
                results[name] = failed[name]
                continue
            results[name] = stats[name].result(all_items, fit_s, origin, window_ms)
            log.info(
                "%s: HR@%d %.4f over %d events (%s)",
                name, k, results[name].metrics["hr"], results[name].evaluated, "streaming" if learner.streaming else "retrained daily",
            )
    info = {
        "events": len(ordered),
        "evaluated_events": int(to_evaluate.sum()),
        "window_ms": window_ms,
        "retrain": {name: _retrain_schedule(learner, name) for learner in learners for name in learner.names},
    }
    if blend_windows:
        # The learned blend (blend_learning) over time: mean weights over user shards, shards per setting.
        info["blend_weights"] = [
            {"start_ms": int(origin + w * window_ms), "end_ms": int(origin + (w + 1) * window_ms), **blend_windows[w]} for w in sorted(blend_windows)
        ]
    return results, info


def _retrain_schedule(learner: Learner, name: str) -> str:
    if not learner.streaming:
        return "daily"
    if isinstance(learner, EngineLearner) and learner.embeddings is not None and uses_embeddings(learner.configs[name]):
        return "every event; embeddings " + ("daily" if learner.embeddings.retrains else "fixed export")
    return "every event"


# ---------------------------------------------------------------------------
# Entry point


def evaluate(
    dataset: Dataset,
    protocol: str,
    k: int = 10,
    algorithms: Sequence[str] = ALGORITHMS,
    config: ModelConfig | None = None,
    seed: int = 42,
    progress: bool = False,
    window_ms: int = DAY_MS,
    max_events: int | None = None,
    fixed_split: tuple[EventBatch, EventBatch] | None = None,
    embeddings: EmbeddingSource | None = None,
) -> Report:
    """Run one protocol on one data set for every named algorithm and collect a :class:`Report`.

    ``embeddings``: where the engine rows' learned embeddings come from
    (default: trained on the protocol's training part, see :class:`TrainedEmbeddings`).
    """
    if not isinstance(k, int) or k <= 0:
        raise EvaluationError("k must be a positive integer")
    config = config or ModelConfig()
    started = time.perf_counter()
    learners = make_learners(algorithms, config, dataset.catalog, seed=seed, progress=progress, embeddings=embeddings)
    if fixed_split is not None:
        split = make_static_split(*fixed_split, warm_only=False)
        all_items = set(split.train.item.tolist()) | set(split.test.item.tolist()) | {c.item_id for c in dataset.catalog}
        results = evaluate_static(split, learners, k, dataset.catalog, all_items, progress)
        info = _static_info(split)
        protocol = "fixed"
    elif protocol in ("msr", "temporal"):
        split = split_for_protocol(dataset.events, protocol, seed)
        all_items = set(dataset.events.item.tolist()) | {c.item_id for c in dataset.catalog}
        results = evaluate_static(split, learners, k, dataset.catalog, all_items, progress)
        info = _static_info(split)
    elif protocol == "prequential":
        results, info = evaluate_prequential(dataset.events, learners, k, dataset.catalog, window_ms, progress, max_events)
    else:
        raise EvaluationError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    results = {name: results[name] for name in algorithms}
    info["runtime_s"] = round(time.perf_counter() - started, 2)
    info["seed"] = seed
    info.update(_config_info(learners, config))
    return Report(dataset=dataset.name, protocol=protocol, k=k, results=results, info=info)


def _config_info(learners: Sequence[Learner], config: ModelConfig) -> dict[str, Any]:
    """The model config the flowrec rows ran with (settings derived from the training part included)
    and the evidence of each derived setting, so a results.json says exactly what produced it."""
    engine = next((learner for learner in learners if isinstance(learner, EngineLearner)), None)
    if engine is None:
        return {"model_config": config.to_dict()}
    derived = engine.derivation.to_json() if engine.derivation is not None else {}
    return {"model_config": engine.config.to_dict(), "derived": derived}


def _static_info(split: StaticSplit) -> dict[str, Any]:
    return {
        "train_events": len(split.train),
        "test_events": len(split.test),
        "users": len(split.relevant),
        "relevant": int(sum(len(v) for v in split.relevant.values())),
    }


# ---------------------------------------------------------------------------
# Output: terminal table, markdown, plots

_TABLE_COLUMNS = (
    ("precision", "P@{k}"),
    ("recall", "R@{k}"),
    ("f1", "F1@{k}"),
    ("ndcg", "nDCG@{k}"),
    ("map", "MAP"),
    ("hr", "HR@{k}"),
    ("mrr", "MRR"),
    ("coverage", "Cov"),
    ("diversity", "ILD"),
    ("novelty", "Nov"),
    # Prequential: the share of hits on items first touched that day (newer than the day's training).
    ("new_item_hit_share", "New"),
)


def table_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings) of the results table, hybrid first."""
    header = ["algorithm"] + [label.format(k=report.k) for _, label in _TABLE_COLUMNS] + ["p50 ms", "p95 ms", "fit s"]
    rows = []
    for name, result in report.to_json()["results"].items():
        cells = [name]
        if "error" in result:
            rows.append(cells + ["-"] * (len(header) - 1))
            continue
        for metric, _ in _TABLE_COLUMNS:
            value = result.get(metric)
            cells.append("-" if value is None else (f"{value:.2f}" if metric == "novelty" else f"{value:.4f}"))
        latency = result["latency_ms"]
        cells += ["-" if latency.get(q) is None else f"{latency[q]:.2f}" for q in ("p50", "p95")]
        cells.append(f"{result['fit_s']:.1f}")
        rows.append(cells)
    return header, rows


def window_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and rows of HR@k per time window (rows) and algorithm (columns), prequential only."""
    names = [name for name in report.to_json()["results"] if report.results[name].error is None]
    by_alg = {name: {w["start_ms"]: w for w in report.results[name].windows} for name in names}
    starts = sorted({start for windows in by_alg.values() for start in windows})
    header = ["window (UTC)", "evaluated"] + names
    rows = []
    for start in starts:
        stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(start / 1000))
        evaluated = max((by_alg[n][start]["evaluated"] for n in names if start in by_alg[n]), default=0)
        rows.append([stamp, str(evaluated)] + [f"{by_alg[n][start]['hr']:.4f}" if start in by_alg[n] else "-" for n in names])
    return header, rows


def blend_rows(report: Report) -> tuple[list[str], list[list[str]]] | None:
    """Header and rows of the learned blend weights per time window (prequential with blend_learning), or None."""
    windows = report.info.get("blend_weights")
    if not windows:
        return None
    names = [n for n in windows[-1]["weights"] if any(w["weights"].get(n) for w in windows)]
    header = ["window (UTC)", *names, "shards per setting"]
    rows = []
    for entry in windows:
        stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(entry["start_ms"] / 1000))
        settings = " ".join(f"{k}:{v}" for k, v in entry["settings"].items())
        rows.append([stamp, *(f"{entry['weights'].get(n, 0.0):.3f}" for n in names), settings])
    return header, rows


def _render_text(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def _render_markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def format_table(report: Report) -> str:
    """The results as aligned plain text under a one-line heading (plus HR per window for prequential)."""
    lines = [_heading(report), "", *_render_text(*table_rows(report)), *_failures(report)]
    if report.protocol == "prequential":
        lines += ["", f"HR@{report.k} per window", *_render_text(*window_rows(report))]
        blend = blend_rows(report)
        if blend is not None:
            lines += ["", "learned blend weights at the end of each window (mean over user shards)", *_render_text(*blend)]
    return "\n".join(lines)


def _failures(report: Report) -> list[str]:
    failed = [(name, r.error) for name, r in report.results.items() if r.error is not None]
    return ["", *(f"{name} FAILED: {error}" for name, error in failed)] if failed else []


def _heading(report: Report) -> str:
    info = report.info
    if report.protocol == "prequential":
        detail = f"{info['events']} events, {info['evaluated_events']} evaluated; batch algorithms retrained daily"
    else:
        detail = f"{info['train_events']} train / {info['test_events']} test events, {info['users']} users"
    return f"{report.dataset} · {report.protocol} · k={report.k} · {detail} · {info['runtime_s']:.0f} s"


def format_markdown(report: Report) -> str:
    """The results table (and HR per window for prequential) as GitHub markdown."""
    lines = [f"# {report.dataset}, {report.protocol} protocol, k = {report.k}", "", _heading(report), ""]
    lines += _render_markdown(*table_rows(report))
    lines += _failures(report)
    if report.protocol == "prequential":
        lines += ["", f"## HR@{report.k} per window", "", *_render_markdown(*window_rows(report))]
        blend = blend_rows(report)
        if blend is not None:
            lines += ["", "## Learned blend weights at the end of each window (mean over user shards)", "", *_render_markdown(*blend)]
    return "\n".join(lines) + "\n"


def metrics_figure(report: Report):
    """The metrics-vs-k figure: P, R, nDCG and HR against integer k with 95 % bootstrap bands,
    and a panel of catalog coverage and intra-list diversity at the report's k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = {name: result for name, result in report.to_json()["results"].items() if "error" not in result}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    panels = axes.ravel()
    for ax, metric in zip(panels, PLOT_METRICS):
        all_ks: set[int] = set()
        for name, result in data.items():
            ks = sorted(int(c) for c in result["at_k"])
            all_ks.update(ks)
            (line,) = ax.plot(ks, [result["at_k"][str(c)][metric] for c in ks], marker="o", label=name)
            bands = result.get("intervals", {})
            if all(str(c) in bands and None not in bands[str(c)].get(metric, [None]) for c in ks):
                ax.fill_between(ks, [bands[str(c)][metric][0] for c in ks], [bands[str(c)][metric][1] for c in ks], color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_xticks(sorted(all_ks))
        ax.set_xlabel("k")
        ax.set_ylabel(f"{metric}@k")
        ax.grid(alpha=0.3)
    ax = panels[len(PLOT_METRICS)]
    names = list(data)
    x = np.arange(len(names))
    for offset, (metric, label) in zip((-0.2, 0.2), (("coverage", "catalog coverage"), ("diversity", "intra-list diversity"))):
        ax.bar(x + offset, [data[n][metric] if data[n][metric] is not None else 0.0 for n in names], width=0.4, label=label)
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"at k = {report.k}")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    legend = panels[len(PLOT_METRICS) + 1]
    legend.axis("off")
    handles, labels = panels[0].get_legend_handles_labels()
    legend.legend(handles, labels, loc="center", fontsize=9, title=f"bands: {CONFIDENCE:.0%} bootstrap intervals")
    fig.suptitle(f"{report.dataset}, {report.protocol}: metrics vs k")
    fig.tight_layout()
    return fig


def write_plots(report: Report, out_dir: Path) -> list[Path]:
    """PNG plots: metrics vs k (always) and HR over time per algorithm (prequential)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    data = {name: result for name, result in report.to_json()["results"].items() if "error" not in result}
    fig = metrics_figure(report)
    path = out_dir / "metrics_vs_k.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    if report.protocol == "prequential":
        fig, ax = plt.subplots(figsize=(11, 5))
        for name, result in data.items():
            windows = result.get("windows", [])
            if not windows:
                continue
            x = [np.datetime64(int(w["start_ms"]), "ms") for w in windows]
            ax.plot(x, [w["hr"] for w in windows], marker=".", label=name + ("" if name in ENGINE_PARTS else " (daily)"))
        ax.set_ylabel(f"HR@{report.k}")
        ax.set_title(f"{report.dataset}: prequential HR@{report.k} per window")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.autofmt_xdate()
        fig.tight_layout()
        path = out_dir / "hr_over_time.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write_outputs(report: Report, out_dir: Path) -> list[Path]:
    """results.json, results.md and the PNG plots into ``out_dir`` (created)."""
    import orjson

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    json_path.write_bytes(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    md_path = out_dir / "results.md"
    md_path.write_text(format_markdown(report))
    return [json_path, md_path, *write_plots(report, out_dir)]
