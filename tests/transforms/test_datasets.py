"""Data set loaders: mapping rules on small hand-written files, and the real files when present."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from flowrec.config import load_settings
from transforms.events import EVENT_CODE, EVENT_TYPES, RATING, parse_records
from transforms.datasets import (
    DatasetError,
    DatasetMissing,
    dataset_path,
    load_movielens_100k,
    load_taobao_sample,
    read_taobao,
)

GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]


def _flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in GENRES)


def _write_movielens(root: Path, data: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "u.data").write_text(data if data is not None else "196\t242\t3\t881250949\n22\t377\t1\t878887116\n196\t51\t5\t881251000\n")
    (root / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n")
    lines = [
        f"242|Kolya (1996)|24-Jan-1997||http://x|{_flags('Comedy')}",
        f"377|Misérables, Les (1995)|01-Jan-1995||http://x|{_flags('Drama', 'Musical', 'War')}",
        f"51|Old Film (1931)|01-Jan-1931||http://x|{_flags('Western')}",
        f"267|unknown||||{_flags('unknown')}",
        f"99|No Genre (1990)|not a date||http://x|{_flags()}",
    ]
    (root / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return root


def test_movielens_mapping(tmp_path: Path):
    events, catalog = load_movielens_100k(_write_movielens(tmp_path / "ml"))
    assert events.user.tolist() == ["196", "22", "196"]
    assert events.item.tolist() == ["242", "377", "51"]
    assert events.rating.tolist() == [3.0, 1.0, 5.0]
    assert events.ts.tolist() == [881_250_949_000, 878_887_116_000, 881_251_000_000]
    assert set(events.etype.tolist()) == {RATING}
    by_id = {item.item_id: item for item in catalog}
    assert list(by_id) == ["242", "377", "51", "267", "99"]
    kolya = by_id["242"]
    assert (kolya.title, kolya.category, kolya.tags) == ("Kolya (1996)", "Comedy", ("Comedy",))
    assert kolya.created_at == kolya.ts == 854_064_000_000  # 1997-01-24T00:00:00Z
    mis = by_id["377"]
    assert mis.title == "Misérables, Les (1995)"  # decoded from Latin-1
    assert (mis.category, mis.tags) == ("Drama", ("Drama", "Musical", "War"))
    assert by_id["51"].created_at == 0  # before 1970: clamped
    assert (by_id["267"].category, by_id["267"].created_at) == ("unknown", 0)
    assert (by_id["99"].category, by_id["99"].tags, by_id["99"].created_at) == ("", (), 0)


def test_movielens_bad_rating_is_a_clear_error(tmp_path: Path):
    root = _write_movielens(tmp_path / "ml", data="1\t2\t7\t881250949\n")
    with pytest.raises(DatasetError, match="1..5 rating"):
        load_movielens_100k(root)
    root = _write_movielens(tmp_path / "ml2", data="1\tx\t3\t881250949\n")
    with pytest.raises(DatasetError):
        load_movielens_100k(root)


def test_movielens_missing_file(tmp_path: Path):
    root = _write_movielens(tmp_path / "ml")
    (root / "u.genre").unlink()
    with pytest.raises(DatasetMissing):
        load_movielens_100k(root)


TAOBAO_ROWS = """\
1,10,100,pv,1511848894
1,11,100,cart,1511848951
2,10,100,fav,1511848960
2,12,200,buy,1511849000

user_id,item_id,category_id,behavior,timestamp
3,13,300,click,1511849100
3,13,300,pv,1511849100,extra
3,13,300,pv
x3,13,300,pv,1511849200
3,14,300,pv,notatime
3,15,300,pv,1000
3,16,300,pv,-5
3,11,999,pv,1511849300
"""


def test_taobao_mapping_and_skipped_rows(tmp_path: Path):
    path = tmp_path / "UserBehavior.csv"
    path.write_text(TAOBAO_ROWS)
    loaded = read_taobao(path)
    events = loaded.events
    assert events.user.tolist() == ["1", "1", "2", "2", "3"]
    assert events.item.tolist() == ["10", "11", "10", "12", "11"]
    assert [EVENT_TYPES[c] for c in events.etype] == ["view", "add_to_cart", "favorite", "purchase", "view"]
    assert events.ts.tolist() == [1_511_848_894_000, 1_511_848_951_000, 1_511_848_960_000, 1_511_849_000_000, 1_511_849_300_000]
    # Header, "click", x3 -> by reason; extra/missing field -> "fields"; 3 bad times.
    assert loaded.skipped == {"fields": 2, "bad_id": 2, "unknown_behaviour": 1, "bad_timestamp": 3}
    assert loaded.skipped_total == 8
    # One catalog entry per distinct item, category of its first row, entering at its first event
    # (a catalog made from the events must not hold items before anyone touches them).
    assert [(c.item_id, c.category, c.ts) for c in loaded.catalog] == [
        ("10", "c100", 1_511_848_894_000),
        ("11", "c100", 1_511_848_951_000),
        ("12", "c200", 1_511_849_000_000),
    ]
    # Every loaded event passes the event validator.
    assert parse_records(events.to_records()).rejections == []
    # The folder works as well as the file, and the 2-tuple API gives the same data.
    events2, catalog2 = load_taobao_sample(tmp_path)
    assert events2.item.tolist() == events.item.tolist() and catalog2 == loaded.catalog


def test_taobao_empty_and_all_bad_files(tmp_path: Path):
    path = tmp_path / "UserBehavior.csv"
    path.write_text("")
    loaded = read_taobao(path)
    assert len(loaded.events) == 0 and loaded.catalog == [] and loaded.skipped == {}
    path.write_text("a,b\nc\n")
    loaded = read_taobao(path)
    assert len(loaded.events) == 0 and loaded.skipped == {"fields": 2}


def test_dataset_path(tmp_path: Path):
    with pytest.raises(DatasetMissing, match="not a folder"):
        dataset_path(tmp_path, "ml-100k")
    (tmp_path / "taobao-sample").mkdir()
    with pytest.raises(DatasetMissing, match="UserBehavior.csv"):
        dataset_path(tmp_path, "taobao-sample")
    (tmp_path / "taobao-sample" / "UserBehavior.csv").write_text("1,2,3,pv,1511848894\n")
    assert dataset_path(tmp_path, "taobao-sample") == tmp_path / "taobao-sample"
    assert dataset_path(SimpleNamespace(datasets_dir=tmp_path), "taobao-sample") == tmp_path / "taobao-sample"
    assert dataset_path(str(tmp_path), "taobao-sample") == tmp_path / "taobao-sample"
    with pytest.raises(ValueError, match="unknown data set"):
        dataset_path(tmp_path, "netflix")


def _real(name: str) -> Path:
    try:
        return dataset_path(load_settings(), name)
    except DatasetMissing as exc:
        pytest.skip(str(exc))


@pytest.mark.datasets
def test_real_movielens_100k():
    events, catalog = load_movielens_100k(_real("ml-100k"))
    assert len(events) == 100_000
    assert len(set(events.user)) == 943 and len(set(events.item)) == 1_682
    assert set(np.unique(events.rating).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert (events.user[0], events.item[0], events.rating[0], events.ts[0]) == ("196", "242", 3.0, 881_250_949_000)
    assert len(catalog) == 1_682 and {c.item_id for c in catalog} == set(events.item)
    toy = catalog[0]
    assert (toy.item_id, toy.title, toy.category) == ("1", "Toy Story (1995)", "Animation")
    assert toy.tags == ("Animation", "Children's", "Comedy")
    assert toy.created_at == 788_918_400_000  # 1995-01-01T00:00:00Z
    assert any(c.title == "Misérables, Les (1995)" for c in catalog)


@pytest.mark.datasets
def test_real_taobao_sample():
    loaded = read_taobao(_real("taobao-sample"))
    events = loaded.events
    assert loaded.skipped == {}
    assert len(events) == 10_000
    assert len(set(events.user)) == 114 and len(set(events.item)) == 7_623
    assert len(loaded.catalog) == 7_623 and len({c.category for c in loaded.catalog}) == 1_096
    counts = np.bincount(events.etype, minlength=len(EVENT_TYPES))
    assert counts.sum() == 10_000
    assert (counts[EVENT_CODE["view"]], counts[EVENT_CODE["add_to_cart"]], counts[EVENT_CODE["favorite"]], counts[EVENT_CODE["purchase"]]) == (9_046, 536, 212, 206)
    assert parse_records(events.to_records()).rejections == []
