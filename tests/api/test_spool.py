"""A spool directory that refuses writes (a file in a folder's place, a full disk, a read-only mount):
the write endpoints answer 503 naming why, /readyz says not ready, nothing half-written is left, and
everything works again once the disk does."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from api.spool import spool_unwritable_reason, write_spool_file
from state.keys import KeyKind

from .conftest import assert_problem, put_list
from .test_ingest import spool_files

EVENT = {"user_id": "u1", "item_id": "i1", "event_type": "click"}
ITEM = {"item_id": "i9", "title": "A thing", "category": "toys"}


@contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A private tmpfs mounted on ``path`` (we run as root, where permission bits never stop a write)."""
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def assert_writes_refused(api, auth, redis_client, reason: str, not_ready_because: str | None = None) -> None:
    """Every write endpoint answers 503 naming ``reason``, none of them changed anything, and /readyz is 503 too."""
    for method, path, body in (("POST", "/v1/events", EVENT), ("POST", "/v1/items", ITEM), ("DELETE", "/v1/users/u1", None)):
        response = api.request(method, path, headers=auth, **({"json": body} if body is not None else {}))
        doc = assert_problem(response, 503, "spool-unavailable")
        assert reason in doc["detail"] and "retry" in doc["detail"], doc
        assert response.headers["retry-after"].isdigit()
    assert redis_client.get("flowrec:v1:item:i9") is None, "the item upsert stopped before Redis"
    assert redis_client.exists("flowrec:v1:rec:u1"), "the user was not forgotten half-way"
    ready = assert_problem(api.get("/readyz"), 503, "spool-unavailable")
    assert (not_ready_because or reason) in ready["detail"]


def assert_writes_work(api, auth, spool_dir) -> None:
    assert api.get("/readyz").status_code == 200
    assert api.post("/v1/events", json=EVENT, headers=auth).status_code == 202
    assert len(spool_files(spool_dir)) == 1  # and no temporary file left over from the failures


@pytest.fixture
def user_with_a_list(store, redis_client):
    put_list(store, KeyKind.USER_RECS, "u1", 1, [("i1", 1.0)])
    assert redis_client.exists("flowrec:v1:rec:u1")


def test_files_where_the_spool_folders_should_be(api, auth, spool_dir, redis_client, user_with_a_list):
    for kind in ("events", "catalog"):
        (spool_dir / kind).write_text("not a folder")
    assert_writes_refused(api, auth, redis_client, "File exists")
    for kind in ("events", "catalog"):
        (spool_dir / kind).unlink()
    assert_writes_work(api, auth, spool_dir)


def test_a_full_disk(api, auth, spool_dir, redis_client, user_with_a_list):
    with tmpfs(spool_dir, "size=64k"):
        filler = spool_dir / "filler"
        with pytest.raises(OSError):
            filler.write_bytes(b"x" * 128 * 1024)
        # Readiness needs room for one request, long before the disk is completely full.
        assert_writes_refused(api, auth, redis_client, "No space left on device", not_ready_because="bytes free")
        assert list((spool_dir / "events").iterdir()) == [], "no partial spool file is left"
        filler.unlink()
        assert api.post("/v1/events", json=EVENT, headers=auth).status_code == 202  # the disk has room again
        assert len(spool_files(spool_dir)) == 1


def test_a_read_only_spool(api, auth, spool_dir, redis_client, user_with_a_list):
    with tmpfs(spool_dir, "size=4m,ro"):
        assert_writes_refused(api, auth, redis_client, "Read-only file system")
    assert_writes_work(api, auth, spool_dir)


def test_unwritable_reason_is_none_for_a_healthy_spool(tmp_path):
    assert spool_unwritable_reason(tmp_path, min_free_bytes=1) is None
    assert sorted(p.name for p in tmp_path.rglob("*")) == [".staging", "catalog", "events"], "the probe files are removed"
    assert "bytes free" in spool_unwritable_reason(tmp_path, min_free_bytes=1 << 62)


def test_temporary_files_stay_out_of_the_watched_folders(tmp_path, monkeypatch):
    """Flink's file source fails a whole listing when a file vanishes while it lists a folder, as a
    temporary file does when it is renamed: temporaries are written in .staging/, never in events/."""
    seen: list[tuple[str, str]] = []
    real_rename = os.rename

    def watching_rename(source, target):
        seen.append((Path(source).parent.name, Path(target).parent.name))
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", watching_rename)
    final = write_spool_file(tmp_path, "events", [b'{"a": 1}\n'], 1_700_000_000_000)
    assert seen == [(".staging", "events")] and final.parent == tmp_path / "events"
    assert list((tmp_path / ".staging").iterdir()) == []
