"""The scorer cost benchmark runs end to end on a tiny catalog and reports every part (no timing asserted)."""

from __future__ import annotations

import json

from bench import scoring_cost


def test_reports_every_setting_per_catalog_size(capsys):
    assert scoring_cost.main(["--items", "300,400", "--users", "5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["items"] for row in rows] == [300, 400]
    expected = {
        "hybrid ms", "+embedding (fold-in) ms", "+embedding (mean) ms", "+sequence ms", "+both (fold-in) ms",
        "user vector (fold-in) ms", "user vector (mean) ms", "scan ms", "top-100 ms", "sequence forward ms",
    }
    for row in rows:
        assert expected <= set(row) and all(row[key] >= 0 for key in expected)


def test_random_export_matches_the_served_layout():
    model, profiles = scoring_cost.build(items=100, dim=8, sequence_hidden=4, neighbours=5, seed=1)
    export = model.embeddings.export
    assert export.query.shape == (100, 9) and (export.query[:, -1] == 1.0).all()  # the trainer's bias column
    vector = model.embeddings.sequence_vector([item for item, _, _ in profiles[0].history])
    assert vector.shape == (9,) and vector[-1] == 1.0
