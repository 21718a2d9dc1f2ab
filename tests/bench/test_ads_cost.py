"""bench.ads_cost runs end to end on a tiny shop and reports both timings."""

from __future__ import annotations

import orjson
import pytest

from bench.ads_cost import main


def test_tiny_run_reports_both_timings(capsys):
    assert main(["--users", "30", "--items", "40", "--events", "600", "--share", "0.25", "--runs", "1", "--json"]) == 0
    result = orjson.loads(capsys.readouterr().out)
    assert (result["items"], result["sponsored"]) == (40, 10)
    assert result["no_ads_ms"] > 0 and result["with_ads_ms"] > 0 and result["ratio"] == result["with_ads_ms"] / result["no_ads_ms"]


def test_bad_share_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--share", "0"])
    assert exit_info.value.code == 2 and "--share must be in (0, 1]" in capsys.readouterr().err
