"""`flowrec experiment`: start/stop write control records the job reads (spool) or go through the API;
list/show read what the job applied from Redis or the API; bad files and flags are one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from api.app import create_app
from flowrec.cli import main
from flowrec.config import Settings
from pipelines.spoolfiles import ended_file
from state.keys import KeyKind
from state.metrics import experiment_field
from state.store import HashWrite, RedisStore
from state.writes import experiment_writes
from tests.api.conftest import API_KEY, FakeClock, running
from transforms.catalog import parse_catalog_lines
from transforms.experiments import ExperimentRecord, ExperimentStart, ExperimentStop, parse_experiment

DECLARATION = {"id": "ranker-1", "variants": {"control": {"share": 0.5, "preset": "popularity"}, "treatment": {"share": 0.5}}}
NOW_MS = 1_700_000_000_000


def declaration_file(tmp_path: Path, data=DECLARATION) -> Path:
    path = tmp_path / "experiment.json"
    path.write_bytes(orjson.dumps(data))
    return path


def spooled_controls(spool: Path) -> list:
    """The control records of the spool's catalog files, as the job's catalog parser reads them."""
    controls: list = []
    for path in sorted((spool / "catalog").iterdir()):
        *records, marker = path.read_text().splitlines()
        assert ended_file(marker) == path.name
        items, rejections = parse_catalog_lines(records, controls)
        assert items == [] and rejections == []
    return controls


def job_applied(redis_url: str, stopped_ms=None) -> None:
    store = RedisStore.from_url(redis_url)
    store.write(experiment_writes(ExperimentRecord(parse_experiment(DECLARATION), NOW_MS, NOW_MS, stopped_ms)))
    fields = {("control", "all", "impressions"): "2000", ("control", "all", "clicks"): "40", ("treatment", "all", "impressions"): "2000", ("treatment", "all", "clicks"): "52"}
    store.write([HashWrite(KeyKind.METRICS_EXPERIMENT, "ranker-1", {experiment_field(*k): v for k, v in fields.items()})])
    store.client.close()


def test_start_and_stop_through_the_spool(tmp_path: Path, capsys):
    spool = tmp_path / "spool"
    assert main(["experiment", "start", str(declaration_file(tmp_path)), "--spool-dir", str(spool)]) == 0
    assert "queued start of experiment ranker-1" in capsys.readouterr().out
    assert main(["experiment", "stop", "ranker-1", "--spool-dir", str(spool), "--json"]) == 0
    stopped = orjson.loads(capsys.readouterr().out)
    assert stopped["experiment_stop"] == "ranker-1"
    start, stop = spooled_controls(spool)
    assert isinstance(start, ExperimentStart) and start.experiment == parse_experiment(DECLARATION)
    assert stop == ExperimentStop("ranker-1", stopped["ts"]) and stop.ts >= start.ts


def test_show_and_list_from_redis(redis_url, capsys):
    assert main(["experiment", "list", "--redis-url", redis_url]) == 0
    assert capsys.readouterr().out.strip() == "no experiments"
    job_applied(redis_url)
    assert main(["experiment", "show", "ranker-1", "--redis-url", redis_url, "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["variants"]["treatment"]["clicks"] == 52 and report["variants"]["treatment"]["lift"] == pytest.approx(0.3)
    assert report["winner"] is None
    assert main(["experiment", "show", "ranker-1", "--redis-url", redis_url]) == 0
    text = capsys.readouterr().out
    assert "treatment (share 50%): 2000 impressions, 52 clicks, CTR 2.60%" in text
    assert "verdict: not yet significant at 95%" in text and "z-test" in text
    assert main(["experiment", "list", "--redis-url", redis_url]) == 0
    assert capsys.readouterr().out.startswith("ranker-1\trunning")
    assert main(["experiment", "show", "nope", "--redis-url", redis_url]) == 1
    assert capsys.readouterr().err.strip() == "flowrec experiment: error: the job has not applied an experiment 'nope'"


def test_start_show_and_refusals_through_the_api(tmp_path: Path, redis_url, capsys):
    spool = tmp_path / "spool"
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY + "\n")
    app = create_app(Settings(redis_url=redis_url, spool_dir=spool, api_keys=(API_KEY,)), clock_ms=FakeClock(NOW_MS))
    with running(app) as url:
        assert main(["experiment", "start", str(declaration_file(tmp_path)), "--api", url, "--api-key-file", str(key_file), "--json"]) == 0
        assert orjson.loads(capsys.readouterr().out)["queued"] == "start"
        [start] = spooled_controls(spool)
        assert start == ExperimentStart(parse_experiment(DECLARATION), NOW_MS)
        # The API refuses a stop of an experiment the job has not applied: one line, exit status 1.
        assert main(["experiment", "stop", "ranker-1", "--api", url, "--api-key-file", str(key_file)]) == 1
        assert re.fullmatch(r"flowrec experiment: error: the API answered 404: the job has not applied an experiment 'ranker-1'.*\n", capsys.readouterr().err)
        job_applied(redis_url)
        assert main(["experiment", "show", "ranker-1", "--api", url, "--json"]) == 0
        assert orjson.loads(capsys.readouterr().out)["variants"]["control"]["impressions"] == 2000
        assert main(["experiment", "start", str(declaration_file(tmp_path)), "--api", url]) == 2
        assert "--api needs a write key" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["experiment", "start", "{tmp}/missing.json", "--spool-dir", "{tmp}/spool"], "cannot read .*missing.json: No such file or directory"),
        (["experiment", "start", "{bad_json}", "--spool-dir", "{tmp}/spool"], "is not JSON"),
        (["experiment", "start", "{bad_shares}", "--spool-dir", "{tmp}/spool"], "variant shares must sum to 1, they sum to 0.9"),
        (["experiment", "start", "{bad_key}", "--spool-dir", "{tmp}/spool"], r"\['neighbours'\] cannot differ between variants"),
        (["experiment", "start", "{good}"], "give the job's spool directory"),
        (["experiment", "stop", "a.b", "--spool-dir", "{tmp}/spool"], "experiment id must be"),
        (["experiment", "show", "ranker-1"], "give the job's Redis"),
        (["experiment", "frob"], "invalid choice: 'frob'"),
        (["experiment", "start"], "the following arguments are required: FILE"),
    ],
)
def test_bad_files_and_flags_are_one_line_errors(tmp_path: Path, flowrec_call, argv, message):
    files = {
        "good": DECLARATION,
        "bad_shares": {**DECLARATION, "variants": {"a": {"share": 0.5}, "b": {"share": 0.4}}},
        "bad_key": {**DECLARATION, "variants": {"a": {"share": 0.5}, "b": {"share": 0.5, "config": {"neighbours": 10}}}},
    }
    names = {}
    for name, data in files.items():
        names[name] = tmp_path / f"{name}.json"
        names[name].write_bytes(orjson.dumps(data))
    names["bad_json"] = tmp_path / "bad.json"
    names["bad_json"].write_text("{nope")
    done = flowrec_call(*(a.format(tmp=tmp_path, **names) for a in argv))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert re.match(r"flowrec experiment( [a-z]+)?: error: ", line) and re.search(message, line), line
    assert not (tmp_path / "spool" / "catalog").exists() or not list((tmp_path / "spool" / "catalog").iterdir())
