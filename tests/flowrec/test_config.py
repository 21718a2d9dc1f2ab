"""Settings from flags, environment and defaults (flag > env > default)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from flowrec.config import Settings, UsageError, add_settings_arguments, load_settings
from transforms.config import ModelConfig


def parse(argv: list[str], only: tuple[str, ...] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="test")
    add_settings_arguments(parser, only=only)
    return parser.parse_args(argv)


def test_defaults_without_flags_or_env():
    settings = load_settings(parse([]), env={})
    assert settings == Settings()
    assert settings.redis_url is None and settings.namespace == "flowrec" and settings.execution_mode == "thread"
    assert load_settings(None, env={}) == Settings()
    # The shared datasets live next to the repository.
    assert settings.datasets_dir == Path(__file__).resolve().parents[3] / "shared" / "datasets"


def test_flag_beats_env_beats_default():
    env = {"FLOWREC_PARALLELISM": "3", "FLOWREC_NAMESPACE": "envns", "FLOWREC_BATCH_SIZE": "77"}
    settings = load_settings(parse(["--parallelism", "5"]), env=env)
    assert settings.parallelism == 5  # flag
    assert settings.namespace == "envns" and settings.batch_size == 77  # env, parsed to its type
    assert settings.user_ttl_s == Settings().user_ttl_s  # default


def test_empty_env_value_is_ignored():
    assert load_settings(parse([]), env={"FLOWREC_PARALLELISM": ""}).parallelism == 1


def test_redis_url_names():
    assert load_settings(parse([]), env={"REDIS_URL": "redis://a:1/0"}).redis_url == "redis://a:1/0"
    both = {"REDIS_URL": "redis://a:1/0", "FLOWREC_REDIS_URL": "redis://b:2/0"}
    assert load_settings(parse([]), env=both).redis_url == "redis://b:2/0"  # the prefixed name wins
    assert load_settings(parse(["--redis-url", "redis://c:3/0"]), env=both).redis_url == "redis://c:3/0"


def test_typed_values():
    env = {
        "FLOWREC_API_KEYS": "k1,,k2",
        "FLOWREC_RECORD_FRESHNESS": "Yes",
        "FLOWREC_SPOOL_DIR": "/tmp/spool",
        "FLOWREC_DATASETS_DIR": "/data/sets",
    }
    settings = load_settings(parse([]), env=env)
    assert settings.api_keys == ("k1", "k2")
    assert settings.record_freshness is True
    assert settings.spool_dir == Path("/tmp/spool") and settings.datasets_dir == Path("/data/sets")
    assert load_settings(parse([]), env={"FLOWREC_RECORD_FRESHNESS": "0"}).record_freshness is False
    flags = load_settings(parse(["--api-keys", "x", "--spool-dir", "/s"]), env=env)
    assert flags.api_keys == ("x",) and flags.spool_dir == Path("/s")


def test_model_config_file_from_flag_or_env(tmp_path):
    flag_file = tmp_path / "flag.json"
    env_file = tmp_path / "env.json"
    flag_file.write_text(json.dumps({"top_n": 7, "similarity": "jaccard"}))
    env_file.write_text(json.dumps({"top_n": 9}))
    env = {"FLOWREC_MODEL_CONFIG": str(env_file)}
    assert load_settings(parse([]), env=env).model == ModelConfig(top_n=9)
    assert load_settings(parse(["--model-config", str(flag_file)]), env=env).model == ModelConfig(top_n=7, similarity="jaccard")
    assert load_settings(parse([]), env={}).model == ModelConfig()
    env_file.write_text(json.dumps({"no_such_knob": 1}))
    with pytest.raises(ValueError, match="no_such_knob"):
        load_settings(parse([]), env=env)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"FLOWREC_EXECUTION_MODE": "cluster"}, "execution mode must be one of thread, process"),
        ({"FLOWREC_STATE_BACKEND": "memory"}, "state backend must be one of hashmap, rocksdb"),
    ],
)
def test_bad_choices_in_the_environment_are_usage_errors(env, message):
    with pytest.raises(UsageError, match=message):
        load_settings(parse([]), env=env)


@pytest.mark.parametrize("argv", [["--execution-mode", "fork"], ["--state-backend", "memory"], ["--redis-url", "localhost:6391"]])
def test_bad_flag_values_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_redis_url_needs_a_scheme_and_is_not_echoed():
    with pytest.raises(UsageError, match="REDIS_URL=\\(hidden\\) is not valid: a Redis URL starts with redis://"):
        load_settings(parse([]), env={"REDIS_URL": "user:pw@localhost:6391"})
    for url in ("redis://localhost:6391/0", "rediss://:pw@h:1/2", "unix:///run/redis.sock"):
        assert load_settings(parse([]), env={"REDIS_URL": url}).redis_url == url


def test_model_config_problems_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="model config file not found: .*nope.json"):
        load_settings(parse(["--model-config", str(tmp_path / "nope.json")]), env={})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UsageError, match="is not valid JSON"):
        load_settings(parse(["--model-config", str(tmp_path / "bad.json")]), env={})


def test_only_adds_the_named_flags():
    parser = argparse.ArgumentParser(prog="test")
    add_settings_arguments(parser, only=("redis-url", "namespace"))
    options = {a.dest for a in parser._actions}
    assert {"redis_url", "namespace"} <= options
    assert "parallelism" not in options and "model_config" not in options
    args = parser.parse_args(["--namespace", "shop1"])
    # Settings whose flags the command lacks still come from the environment.
    settings = load_settings(args, env={"FLOWREC_PARALLELISM": "4"})
    assert (settings.namespace, settings.parallelism) == ("shop1", 4)


def test_bad_integer_flag_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        parse(["--parallelism", "many"])
    assert exc.value.code == 2
    assert "--parallelism" in capsys.readouterr().err


def test_bad_integer_env_names_the_variable():
    with pytest.raises(ValueError, match="FLOWREC_PARALLELISM"):
        load_settings(parse([]), env={"FLOWREC_PARALLELISM": "many"})


def test_redis_deadline_from_flag_or_env_and_positive():
    assert Settings().redis_deadline_ms == 1000
    assert load_settings(parse([]), env={"FLOWREC_REDIS_DEADLINE_MS": "250"}).redis_deadline_ms == 250
    assert load_settings(parse(["--redis-deadline-ms", "40"]), env={"FLOWREC_REDIS_DEADLINE_MS": "250"}).redis_deadline_ms == 40
    for bad in ("0", "-5"):
        with pytest.raises(ValueError, match="REDIS_DEADLINE_MS"):
            load_settings(parse([]), env={"FLOWREC_REDIS_DEADLINE_MS": bad})
