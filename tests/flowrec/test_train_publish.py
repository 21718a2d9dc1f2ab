"""`flowrec train --publish`: the switch it writes is one the job's catalog parser accepts."""

from __future__ import annotations

from pathlib import Path

from flowrec.commands.train import publish
from pipelines.spoolfiles import ended_file
from transforms.catalog import EmbeddingSwitch, parse_catalog_lines


def test_publish_writes_a_switch_the_job_reads(tmp_path: Path):
    version = tmp_path / "exports" / "20261130T000000Z"
    version.mkdir(parents=True)
    written = publish(tmp_path / "spool", version, now_ms=1_700_000_000_123)
    assert written.parent == tmp_path / "spool" / "catalog" and not written.name.startswith(".")
    switches: list = []
    *records, marker = written.read_text().splitlines()
    assert ended_file(marker) == written.name  # the job retires the file once it has read it
    items, rejections = parse_catalog_lines(records, switches)
    assert items == [] and rejections == []
    assert switches == [EmbeddingSwitch(str(version.resolve()), 1_700_000_000_123)]
