"""`flowrec simulate`: bad flags are one-line errors; a small simulation runs the real job and API end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from flowrec import cli
from flowrec.commands.simulate import declaration, parse_variants
from flowrec.config import UsageError
from tests.envkit import clean_environment
from transforms.experiments import parse_experiment

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--minutes", "0"], "argument --minutes: expected a number > 0, not '0'"),
        (["--shoppers", "none"], "argument --shoppers: expected a whole number >= 1, not 'none'"),
        (["--variants", "control=popularity"], "--variants needs at least two variants to compare"),
        (["--variants", "control=popularity,treatment"], "--variants takes NAME=PRESET pairs separated by commas, not 'treatment'"),
        (["--variants", "a=default,a=popularity"], "--variants names 'a' twice"),
        (["--variants", "control=popularity,treatment=fancy"], "--variants: variant 'treatment': unknown preset 'fancy'"),
        (["--variants", "control=popularity,bad.name=default"], "--variants: "),
        (["--minutes", "1.5"], "--minutes must be more than 2"),
    ],
)
def test_bad_flags_are_one_line_errors(argv, message, capsys, tmp_path):
    try:
        code = cli.main(["simulate", "--out", str(tmp_path / "sim"), *argv])
    except SystemExit as exc:  # argparse's own errors (flag types) exit from the parser
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("flowrec simulate: error: ") and message in err and err.count("\n") == 1, err


def test_variants_become_an_experiment_with_equal_shares():
    variants = parse_variants("control=popularity, treatment=default,third=default")
    assert variants == {"control": "popularity", "treatment": "default", "third": "default"}
    experiment = parse_experiment(declaration(variants, 7))
    assert [v.name for v in experiment.variants] == ["control", "treatment", "third"]
    assert sum(v.share for v in experiment.variants) == 1.0 and experiment.control == "control"
    with pytest.raises(UsageError):
        parse_variants("=default,b=default")


@pytest.mark.flink
def test_a_small_simulation_through_the_real_job_and_api(tmp_path, redis_url):
    """Few shoppers, few minutes: the JSON result has the documented shape and the job's counts equal the recount."""
    command = [sys.executable, "-m", "flowrec.cli", "simulate", "--shoppers", "40", "--items", "80", "--minutes", "4",
               "--out", str(tmp_path / "sim"), "--redis-url", redis_url, "--namespace", "simtest", "--json"]
    done = subprocess.run(command, cwd=REPO, env=clean_environment(), capture_output=True, timeout=900)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    result = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert set(result) == {"variants", "p_value", "winner", "recount_equal"}
    assert set(result["variants"]) == {"control", "treatment"}
    for row in result["variants"].values():
        assert set(row) == {"impressions", "clicks", "ctr", "ctr_ci", "purchases", "conversion"}
        assert row["impressions"] > 0 and 0 <= row["ctr_ci"][0] <= row["ctr"] <= row["ctr_ci"][1] <= 1
    assert result["recount_equal"] is True
    # The raw log the simulator sent: impressions with rec_ids, and clicks carrying them.
    sent = [orjson.loads(line) for line in (tmp_path / "sim" / "events.jsonl").read_bytes().splitlines()]
    kinds = {e["event_type"] for e in sent}
    assert {"view", "impression", "click"} <= kinds
    assert all(e["rec_id"].startswith("r1.simulation.") for e in sent if e["event_type"] in ("impression", "click"))
    # The namespace now holds this run's data: a second run into it is refused (its counts would mix).
    again = subprocess.run(command, cwd=REPO, env=clean_environment(), capture_output=True, timeout=120)
    assert again.returncode == 2 and b"already holds a job's data" in again.stderr
