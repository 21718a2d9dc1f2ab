"""Loaders for the public data sets used in tests and benchmarks.

Each loader returns ``(EventBatch, list[CatalogItem])`` with rows in file order
(call :meth:`EventBatch.sorted_by_time` for a replay).  The data sets are never
copied into the project; :func:`dataset_path` finds them under the configured
datasets folder and raises :class:`DatasetMissing` when they are absent, so
tests can skip cleanly.

* MovieLens 100K: every line of ``u.data`` is a ``rating`` event, ids kept as
  the raw numbers in string form (``"196"``) so results line up with the
  published protocol; ``u.item`` (Latin-1) gives titles, genres and release dates.
* Taobao user behaviour sample: ``pv/cart/fav/buy`` become
  ``view/add_to_cart/favorite/purchase``; category ``123`` becomes ``"c123"``.
  Malformed rows are skipped and counted by reason.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from transforms.catalog import CatalogItem
from transforms.events import EVENT_CODE, MAX_TS_MS, MIN_TS_MS, RATING, EventBatch

log = logging.getLogger(__name__)

# Files each data set needs, relative to its folder.
DATASET_FILES: dict[str, tuple[str, ...]] = {
    "ml-100k": ("u.data", "u.item", "u.genre"),
    "taobao-sample": ("UserBehavior.csv",),
}

TAOBAO_BEHAVIOURS: dict[str, str] = {
    "pv": "view",
    "cart": "add_to_cart",
    "fav": "favorite",
    "buy": "purchase",
}

ML_GENRE_COUNT = 19
# u.item columns before the genre flags: id, title, release date, video release date, IMDb URL.
ML_ITEM_FIXED_COLUMNS = 5


class DatasetMissing(FileNotFoundError):
    """A data set folder or one of its files is absent (tests skip on this)."""


class DatasetError(ValueError):
    """A data set file is present but not in the expected format."""


def dataset_path(settings_or_dir: Any, name: str) -> Path:
    """Folder of data set ``name`` under ``settings.datasets_dir`` (or under a folder given directly).

    Raises :class:`DatasetMissing` naming the folder or files that are absent,
    and ``ValueError`` for an unknown data set name.
    """
    if name not in DATASET_FILES:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASET_FILES)}")
    base = getattr(settings_or_dir, "datasets_dir", settings_or_dir)
    if not isinstance(base, (str, os.PathLike)):
        raise TypeError("expected a Settings object or a folder path")
    folder = Path(base) / name
    if not folder.is_dir():
        raise DatasetMissing(f"data set {name!r} not found: {folder} is not a folder")
    missing = [f for f in DATASET_FILES[name] if not (folder / f).is_file()]
    if missing:
        raise DatasetMissing(f"data set {name!r} in {folder} lacks {', '.join(missing)}")
    return folder


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DatasetMissing(f"{path} not found")
    return path


def _release_ms(dates: pd.Series) -> np.ndarray:
    """``DD-Mon-YYYY`` release dates as epoch ms; unparseable dates and dates before 1970 give 0.

    Catalog timestamps are non-negative epoch ms (``validate_catalog_record``
    rejects negative ones), so pre-1970 releases are clamped to 0, which reads
    as "long before any event" just like an unknown date.
    """
    parsed = pd.to_datetime(dates, format="%d-%b-%Y", errors="coerce", utc=True)
    ms = np.zeros(len(dates), dtype=np.int64)
    known = parsed.notna().to_numpy()
    ms[known] = parsed[known].to_numpy(dtype="datetime64[ms]").astype(np.int64)
    return np.maximum(ms, 0)


def load_movielens_100k(root: Path | str) -> tuple[EventBatch, list[CatalogItem]]:
    """MovieLens 100K as ``rating`` events plus a catalog of movies.

    Events: one per ``u.data`` line, ``user``/``item`` = the raw ids as strings,
    ``rating`` = 1..5, ``ts`` = unix seconds * 1000.  Catalog: one item per
    ``u.item`` line, ``title`` as given (decoded from Latin-1), ``category`` =
    the first flagged genre in ``u.genre`` order, ``tags`` = all flagged genres,
    ``created_at`` = ``ts`` = release date in epoch ms (see :func:`_release_ms`).
    Raises :class:`DatasetMissing` or :class:`DatasetError`.
    """
    root = Path(root)
    data_path, item_path, genre_path = (_require(root / f) for f in DATASET_FILES["ml-100k"])
    try:
        ratings = pd.read_csv(
            data_path, sep="\t", header=None, names=["user", "item", "rating", "ts"],
            dtype={"user": np.int64, "item": np.int64, "rating": np.float64, "ts": np.int64}, engine="c",
        )
        genres = pd.read_csv(genre_path, sep="|", header=None, names=["name", "index"], dtype={"name": str, "index": np.int64}, encoding="latin-1")
        movies = pd.read_csv(
            item_path, sep="|", header=None, encoding="latin-1", dtype=str, keep_default_na=False, quoting=3,
            names=list(range(ML_ITEM_FIXED_COLUMNS + ML_GENRE_COUNT)),
        )
    except (ValueError, pd.errors.ParserError) as exc:
        raise DatasetError(f"MovieLens files in {root} are malformed: {exc}") from exc
    if ratings.isna().any().any() or not ratings["rating"].between(1, 5).all():
        raise DatasetError(f"{data_path}: every line needs user, item, a 1..5 rating and a timestamp")
    genres = genres.dropna().sort_values("index")
    if len(genres) != ML_GENRE_COUNT or genres["index"].tolist() != list(range(ML_GENRE_COUNT)):
        raise DatasetError(f"{genre_path}: expected {ML_GENRE_COUNT} genres numbered 0..{ML_GENRE_COUNT - 1}")

    events = EventBatch(
        user=ratings["user"].astype(str).to_numpy(dtype=object),
        item=ratings["item"].astype(str).to_numpy(dtype=object),
        etype=np.full(len(ratings), RATING, dtype=np.int8),
        ts=ratings["ts"].to_numpy(dtype=np.int64) * 1000,
        rating=ratings["rating"].to_numpy(dtype=np.float64),
    )

    flag_text = movies.iloc[:, ML_ITEM_FIXED_COLUMNS:]
    if not flag_text.isin(["0", "1"]).all().all():
        raise DatasetError(f"{item_path}: genre flags must be 0 or 1")
    flags = (flag_text.to_numpy() == "1")
    names = genres["name"].tolist()
    released = _release_ms(movies[2])
    catalog = []
    for item_id, title, row, created in zip(movies[0].tolist(), movies[1].tolist(), flags, released.tolist()):
        tags = tuple(names[g] for g in np.flatnonzero(row))
        catalog.append(
            CatalogItem(item_id=item_id.strip(), title=title, category=tags[0] if tags else "", tags=tags, created_at=created, ts=created)
        )
    return events, catalog


@dataclass(frozen=True)
class TaobaoLoad:
    """A parsed Taobao behaviour file: events, the catalog of items seen, and skipped rows by reason."""

    events: EventBatch
    catalog: list[CatalogItem]
    skipped: dict[str, int]

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def read_taobao(path: Path | str) -> TaobaoLoad:
    """Parse a Taobao ``UserBehavior.csv`` (no header: user, item, category, behaviour, unix seconds).

    Mapping: behaviour ``pv/cart/fav/buy`` -> ``view/add_to_cart/favorite/purchase``;
    ``ts`` = seconds * 1000; ids stay the raw digit strings; category ``N`` ->
    ``"cN"``.  The catalog holds each distinct item once, with the category of
    its first row and, as ``ts``, the time of its first event.  Rows are skipped and counted under ``"fields"`` (not five
    comma-separated fields), ``"bad_id"`` (an id that is not all digits),
    ``"unknown_behaviour"`` or ``"bad_timestamp"`` (not integral seconds, or
    outside 2000..2100).  ``path`` may be the file or its folder.
    """
    path = Path(path)
    if path.is_dir():
        path = path / DATASET_FILES["taobao-sample"][0]
    text = _require(path).read_bytes().decode("utf-8", errors="replace")
    lines = pd.Series([line for line in text.splitlines() if line.strip()], dtype=object)
    columns = ["user", "item", "category", "behaviour", "ts"]
    five = (lines.str.count(",") == len(columns) - 1).to_numpy(dtype=bool)
    if five.any():
        frame = lines[five].str.split(",", expand=True).apply(lambda c: c.str.strip())
        frame.columns = columns
    else:
        frame = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    skipped: dict[str, int] = {}
    if (~five).any():
        skipped["fields"] = int((~five).sum())
    digits = {c: frame[c].str.fullmatch(r"\d{1,18}").to_numpy(dtype=bool) for c in ("user", "item", "category", "ts")}
    ids_ok = digits["user"] & digits["item"] & digits["category"]
    behaviour = frame["behaviour"].map(TAOBAO_BEHAVIOURS)
    behaviour_ok = behaviour.notna().to_numpy(dtype=bool)
    ts_ms = np.zeros(len(frame), dtype=np.int64)
    ts_ms[digits["ts"]] = frame["ts"][digits["ts"]].astype(np.int64).to_numpy() * 1000
    ts_ok = digits["ts"] & (ts_ms >= MIN_TS_MS) & (ts_ms <= MAX_TS_MS)
    # Each bad row is counted once, under its first problem in this order.
    bad = np.zeros(len(frame), dtype=bool)
    for reason, problem in (("bad_id", ~ids_ok), ("unknown_behaviour", ~behaviour_ok), ("bad_timestamp", ~ts_ok)):
        fresh = problem & ~bad
        if fresh.any():
            skipped[reason] = int(fresh.sum())
        bad |= problem
    good = frame[~bad]
    events = EventBatch(
        user=good["user"].to_numpy(dtype=object),
        item=good["item"].to_numpy(dtype=object),
        etype=behaviour[~bad].map(EVENT_CODE).to_numpy(dtype=np.int8),
        ts=ts_ms[~bad],
    )
    first = good.drop_duplicates("item", keep="first")
    # The sample has no catalog: it is made from the events, so an item enters it at its first
    # event.  Present from the start, it would tell every part which items someone will touch
    # later (content listed the untouched items of a user's small categories: 814 of its 822 hits
    # on items nobody had touched yet), which no shop's catalog knows.
    first_ms = pd.Series(ts_ms[~bad]).groupby(good["item"].to_numpy(dtype=object)).min()
    catalog = [
        CatalogItem(item_id=item, category=f"c{category}", ts=int(first_ms[item]))
        for item, category in zip(first["item"].tolist(), first["category"].tolist())
    ]
    if skipped:
        log.warning("%s: skipped %d of %d rows (%s)", path, sum(skipped.values()), len(lines), skipped)
    return TaobaoLoad(events=events, catalog=catalog, skipped=skipped)


def load_taobao_sample(path: Path | str) -> tuple[EventBatch, list[CatalogItem]]:
    """The Taobao behaviour sample as events and catalog; skipped rows are logged (see :func:`read_taobao`)."""
    loaded = read_taobao(path)
    return loaded.events, loaded.catalog
