"""The experiment cost benchmark runs end to end on a tiny shop (no timing asserted)."""

from __future__ import annotations

import json

from bench import experiment_cost


def test_reports_both_replays_and_their_ratio(capsys):
    assert experiment_cost.main(["--users", "30", "--items", "20", "--events", "300", "--runs", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["events"] == 300
    assert result["replay_cpu_s_without"] > 0 and result["replay_cpu_s_with_two_variants"] > 0
    assert abs(result["ratio"] - result["replay_cpu_s_with_two_variants"] / result["replay_cpu_s_without"]) < 0.01  # rounded values
    assert abs(result["state_ratio"] - result["replay_cpu_s_with_state_variants"] / result["replay_cpu_s_without"]) < 0.01
    # The second half-life's sums make every profile larger.
    assert result["profile_bytes_with_state_variants"] > result["profile_bytes_without"] > 0
