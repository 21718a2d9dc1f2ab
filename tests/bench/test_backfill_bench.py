"""The backfill benchmark runs end to end on a tiny shop: reference, training mode, Beam and the stages (no timing asserted)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import backfill


def test_reports_every_rate_and_an_equal_redis(tmp_path: Path, capsys):
    parser = argparse.ArgumentParser()
    backfill.add_arguments(parser)
    args = parser.parse_args(["--skip", "ml-100k", "--events", "400", "--users", "20", "--items", "15", "--days", "0.1", "--workdir", str(tmp_path), "--json", "--stages"])
    assert backfill.main(args) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["input"] == "shop-400" and row["events"] == 400 and row["redis_equal"] is True
    assert all(row[key] > 0 for key in ("reference_events_per_s", "training_events_per_s", "beam_events_per_s", "peak_rss_mb"))
    assert set(row["stages_cpu_seconds"]) == {"derive", "read_parse", "replay_users", "timeline"}
