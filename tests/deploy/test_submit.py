"""`flowrec submit` and `flowrec cluster` without a cluster: the flink command line
they build, the environment, the job arguments passed through, and input checks."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from flowrec import cli
from flowrec.commands import cluster, submit
from flowrec.config import Settings, UsageError
from pipelines.main import add_job_arguments, check_input_flags


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser(cli._available()).parse_args(list(argv))


def main_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_job_arguments(parser)
    return parser


def test_job_arguments_round_trip_through_mains_parser(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = parse(
        "submit", "--events", "a.jsonl", "b.csv", "--catalog", "cat.jsonl", "--parallelism", "2",
        "--jar", "k1.jar", "--jar", "k2.jar", "--record-freshness", "true",
        "--namespace", "shop1", "--redis-url", "redis://:secret@r:6379/0", "--restore", "/sp/1", "--job-name", "recs",
    )
    argv = submit.job_arguments(args)
    assert "--redis-url" not in argv and not any("secret" in a for a in argv), "the URL travels in the environment"
    assert "--restore" not in argv and "/sp/1" not in argv, "the savepoint is flink run -s"
    forwarded = main_parser().parse_args(argv)
    assert forwarded.events == [tmp_path / "a.jsonl", tmp_path / "b.csv"]
    assert forwarded.catalog == tmp_path / "cat.jsonl"
    assert forwarded.jar == [tmp_path / "k1.jar", tmp_path / "k2.jar"]
    assert forwarded.parallelism == 2 and forwarded.namespace == "shop1" and forwarded.job_name == "recs"
    assert forwarded.record_freshness is True
    assert forwarded.redis_url is None and forwarded.restore is None


def test_secrets_read_from_files_stay_off_the_flink_command_line(tmp_path: Path):
    (tmp_path / "url").write_text("redis://:file-secret@r:6379/0\n")
    args = parse("submit", "--spool-dir", "/data/spool", "--redis-url-file", str(tmp_path / "url"))
    assert args.redis_url == "redis://:file-secret@r:6379/0"
    assert submit.job_arguments(args) == ["--spool-dir", "/data/spool"]


def test_job_arguments_leave_out_what_was_not_given():
    assert submit.job_arguments(parse("submit", "--spool-dir", "/data/spool")) == ["--spool-dir", "/data/spool"]


def test_flink_command_restores_only_when_asked(tmp_path: Path):
    plain = submit.flink_command(tmp_path, "jm:8081", ["--spool-dir", "/s"], "/venv/bin/python", None, True)
    assert plain[:6] == [str(tmp_path / "bin" / "flink"), "run", "-m", "jm:8081", "-d", "-pyclientexec"]
    assert "-s" not in plain and "--allowNonRestoredState" not in plain
    assert plain[plain.index("-pyexec") + 1] == "/venv/bin/python"
    script = Path(plain[plain.index("-py") + 1])
    assert script.name == "main.py" and script.parent.name == "pipelines" and script.is_file()
    assert plain[-2:] == ["--spool-dir", "/s"], "job arguments come after the script"
    restored = submit.flink_command(tmp_path, "jm:8081", [], "python", "file:/sp/savepoint-1", True)
    assert restored[restored.index("-s") + 1] == "file:/sp/savepoint-1"
    assert "--allowNonRestoredState" in restored
    local = submit.flink_command(tmp_path, "jm:8081", [], "python", "sp", False)
    assert local[local.index("-s") + 1] == str(Path("sp").resolve())
    assert "--allowNonRestoredState" not in local


def test_client_environment_carries_the_redis_url_and_the_local_conf(tmp_path: Path):
    env = submit.client_environment("redis://r:1/0", tmp_path, {"PATH": "/bin", "FLOWREC_REDIS_URL": "redis://other/0", "FLOWREC_API_KEYS": "k"})
    # Only under a name Flink masks when it logs the driver's environment.
    assert env["FLOWREC_REDIS_URL_SECRET"] == "redis://r:1/0"
    assert not {"REDIS_URL", "FLOWREC_REDIS_URL", "FLOWREC_API_KEYS"} & env.keys() and env["PATH"] == "/bin"
    assert "FLINK_CONF_DIR" not in env, "no local cluster conf: Flink's default"
    assert env["FLINK_LOG_DIR"] == str(tmp_path / "log") and (tmp_path / "log").is_dir()
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("rest:\n  port: 1\n")
    assert submit.client_environment("redis://r:1/0", tmp_path, {})["FLINK_CONF_DIR"] == str(tmp_path / "conf")
    assert submit.client_environment("redis://r:1/0", tmp_path, {"FLINK_CONF_DIR": "/mine"})["FLINK_CONF_DIR"] == "/mine"


def test_the_rec_id_secret_goes_in_the_environment_not_on_the_command_line(tmp_path: Path):
    args = parse("submit", "--spool-dir", "/s", "--rec-id-secret", "s" * 20)
    assert "s" * 20 not in submit.job_arguments(args) and "--rec-id-secret" not in submit.job_arguments(args)
    env = submit.client_environment("redis://r:1/0", tmp_path, {}, "s" * 20)
    assert env["FLOWREC_REC_ID_SECRET"] == "s" * 20


def test_check_inputs_wants_exactly_one_existing_input(tmp_path: Path):
    events = tmp_path / "e.jsonl"
    events.write_text("")
    check_input_flags(parse("submit", "--events", str(events)), Settings())
    check_input_flags(parse("submit", "--spool-dir", str(tmp_path)), Settings(spool_dir=tmp_path))
    with pytest.raises(UsageError, match="exactly one input"):
        check_input_flags(parse("submit"), Settings())
    with pytest.raises(UsageError, match="exactly one input"):
        check_input_flags(parse("submit", "--socket", "h:1", "--kafka-brokers", "k:9092"), Settings())
    with pytest.raises(UsageError, match="not found: .*missing.jsonl"):
        check_input_flags(parse("submit", "--events", str(tmp_path / "missing.jsonl")), Settings())


def test_submit_refuses_to_run_without_redis(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("FLOWREC_REDIS_URL", raising=False)
    events = tmp_path / "e.jsonl"
    events.write_text("")
    assert cli.main(["submit", "--events", str(events), "--jobmanager", "localhost:1"]) == 2
    assert "needs Redis" in capsys.readouterr().err


def test_submit_reports_an_unreachable_cluster(tmp_path: Path, capsys):
    events = tmp_path / "e.jsonl"
    events.write_text("")
    code = cli.main(["submit", "--events", str(events), "--redis-url", "redis://:pw@r:6379/0", "--jobmanager", "127.0.0.1:1", "--timeout", "0"])
    assert code == 1
    err = capsys.readouterr().err
    assert "not ready" in err and "flowrec cluster start" in err
    assert "pw@" not in err


def test_default_jobmanager_prefers_the_started_cluster(tmp_path: Path):
    assert cluster.default_jobmanager({"FLOWREC_CLUSTER_DIR": str(tmp_path)}) == "localhost:8081"
    assert cluster.default_jobmanager({"FLOWREC_CLUSTER_DIR": str(tmp_path), "FLOWREC_FLINK_REST_PORT": "9000"}) == "localhost:9000"
    (tmp_path / "cluster.env").write_text("PYTHON='/v/bin/python'\nREST_PORT='18123'\nBIND_HOST='127.0.0.1'\n")
    assert cluster.default_jobmanager({"FLOWREC_CLUSTER_DIR": str(tmp_path), "FLOWREC_FLINK_REST_PORT": "9000"}) == "127.0.0.1:18123"


def test_job_ids_and_addresses_are_validated():
    assert cluster.valid_job_id("0123456789abcdef0123456789abcdef")
    for bad in ("../overview", "0123456789ABCDEF0123456789ABCDEF", "abc", "0123456789abcdef0123456789abcdef/x", ""):
        with pytest.raises(ValueError):
            cluster.valid_job_id(bad)
    assert cluster.rest_base_url("jm:8081") == "http://jm:8081"
    assert cluster.rest_base_url("https://flink.example/") == "https://flink.example"
    for bad in ("jm", ":8081", "jm:http"):
        with pytest.raises(ValueError):
            cluster.rest_base_url(bad)


def test_cluster_savepoint_drain_needs_stop(capsys):
    code = cli.main(["cluster", "savepoint", "0123456789abcdef0123456789abcdef", "--drain", "--jobmanager", "127.0.0.1:1"])
    assert code == 2
    assert "--drain needs --stop" in capsys.readouterr().err


def test_cluster_jobs_reports_an_unreachable_cluster(capsys):
    assert cli.main(["cluster", "jobs", "--jobmanager", "127.0.0.1:1"]) == 1
    assert "flowrec cluster jobs:" in capsys.readouterr().err


def test_the_rec_id_secret_travels_in_the_environment_not_the_command_line(tmp_path: Path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file-0123456789\n")
    for flags in (["--rec-id-secret", "on-the-line-0123456789"], ["--rec-id-secret-file", str(secret_file)]):
        args = parse("submit", "--spool-dir", "/data/spool", *flags)
        assert submit.job_arguments(args) == ["--spool-dir", "/data/spool"]
    env = submit.client_environment("redis://r:1/0", tmp_path, {}, "on-the-line-0123456789")
    assert env["FLOWREC_REC_ID_SECRET"] == "on-the-line-0123456789"
    assert "FLOWREC_REC_ID_SECRET" not in submit.client_environment("redis://r:1/0", tmp_path, {})
