"""Settings from flags, environment and defaults (flag > env > default)."""

from __future__ import annotations

import argparse
import json
import re
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
        ({"FLOWREC_NATIVE_ALLOCATOR": "tcmalloc"}, "native allocator must be one of auto, jemalloc, glibc, system"),
    ],
)
def test_bad_choices_in_the_environment_are_usage_errors(env, message):
    with pytest.raises(UsageError, match=message):
        load_settings(parse([]), env=env)


@pytest.mark.parametrize(
    "flag, value, message",
    [
        # Flink refused these only after the JVM had started, with a Java stack trace.
        ("checkpoint-interval-ms", "0", ">= 10 \\(Flink's shortest checkpoint interval\\), got '0'"),
        ("checkpoint-interval-ms", "5", ">= 10"),
        ("max-out-of-orderness-ms", "-1", ">= 0"),
        # A TTL of zero or less would have Redis drop each list as it is written.
        ("user-ttl-s", "0", ">= 1"),
        ("item-ttl-s", "-5", ">= 1"),
        ("user-state-ttl-ms", "0", ">= 1"),
        ("heartbeat-ms", "-10", ">= 0"),
        ("restart-attempts", "-1", ">= 0"),
        ("spool-retention-s", "-600", ">= 0"),
    ],
)
def test_numbers_out_of_range_are_refused_as_flags_and_in_the_environment(flag, value, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse([f"--{flag}", value])
    assert exc.value.code == 2
    assert re.search(f"--{flag}: expected a whole number {message}", capsys.readouterr().err)
    env_name = "FLOWREC_" + flag.upper().replace("-", "_")
    with pytest.raises(UsageError, match=f"{env_name}='{value}' is not valid: expected a whole number {message}"):
        load_settings(parse([]), env={env_name: value})


def test_the_bounds_admit_every_default_and_the_documented_zeroes():
    defaults = Settings()
    assert load_settings(parse([]), env={}) == defaults
    settings = load_settings(parse(["--checkpoint-interval-ms", "10", "--heartbeat-ms", "0", "--spool-retention-s", "0", "--restart-attempts", "0"]), env={})
    assert (settings.checkpoint_interval_ms, settings.heartbeat_ms, settings.spool_retention_s, settings.restart_attempts) == (10, 0, 0, 0)


@pytest.mark.parametrize("argv", [["--execution-mode", "fork"], ["--state-backend", "memory"], ["--native-allocator", "tcmalloc"], ["--redis-url", "localhost:6391"]])
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


# -- secrets from files (a flag's value shows in `ps`) -------------------------------------------


def test_secrets_read_from_files_given_as_flags(tmp_path):
    url_file, keys_file = tmp_path / "redis-url", tmp_path / "api-keys"
    url_file.write_text("rediss://:pw@redis.example:6380/0\n")
    keys_file.write_text("# write keys\nk1\n\n k2 , k3\n")
    settings = load_settings(parse(["--redis-url-file", str(url_file), "--api-keys-file", str(keys_file)]), env={"REDIS_URL": "redis://env:1/0"})
    assert settings.redis_url == "rediss://:pw@redis.example:6380/0"
    assert settings.api_keys == ("k1", "k2", "k3")
    # Every command offering a secret's flag offers its file form too.
    only = parse(["--redis-url-file", str(url_file)], only=("redis-url",))
    assert only.redis_url == "rediss://:pw@redis.example:6380/0" and not hasattr(only, "api_keys")


def test_secrets_read_from_files_named_in_the_environment(tmp_path):
    url_file, keys_file = tmp_path / "redis-url", tmp_path / "api-keys"
    url_file.write_text("redis://:pw@r:6379/0")
    keys_file.write_text("k1,k2")
    env = {"FLOWREC_REDIS_URL_FILE": str(url_file), "FLOWREC_API_KEYS_FILE": str(keys_file)}
    settings = load_settings(parse([]), env=env)
    assert (settings.redis_url, settings.api_keys) == ("redis://:pw@r:6379/0", ("k1", "k2"))
    # A value set directly wins over a file.
    assert load_settings(parse(["--api-keys", "flag"]), env={**env, "REDIS_URL": "redis://direct:1/0"}) == Settings(redis_url="redis://direct:1/0", api_keys=("flag",))


@pytest.mark.parametrize(
    "content, message",
    [
        (None, r"cannot read .*missing: No such file or directory"),
        ("", "no API key"),
        ("# only a comment\n", "no API key"),
    ],
)
def test_bad_api_keys_file_is_a_one_line_usage_error(tmp_path, capsys, content, message):
    path = tmp_path / "missing"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as exc:
        parse(["--api-keys-file", str(path)])
    assert exc.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("test: error: argument --api-keys-file: ")
    assert re.search(message, error), error


def test_bad_redis_url_file_never_echoes_its_content(tmp_path, capsys):
    path = tmp_path / "redis-url"
    path.write_text("hunter2-not-a-url\n")
    with pytest.raises(SystemExit) as exc:
        parse(["--redis-url-file", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "does not hold a Redis URL" in err and "hunter2" not in err
    with pytest.raises(ValueError, match=r"^FLOWREC_REDIS_URL_FILE: .*does not hold a Redis URL[^\n]*$") as raised:
        load_settings(parse([]), env={"FLOWREC_REDIS_URL_FILE": str(path)})
    assert "hunter2" not in str(raised.value)
    with pytest.raises(ValueError, match=r"^FLOWREC_API_KEYS_FILE: cannot read .*: No such file or directory$"):
        load_settings(parse([]), env={"FLOWREC_API_KEYS_FILE": str(tmp_path / "nope")})


def test_a_secret_flag_and_its_file_form_exclude_each_other(tmp_path, capsys):
    path = tmp_path / "api-keys"
    path.write_text("k1")
    with pytest.raises(SystemExit) as exc:
        parse(["--api-keys", "k0", "--api-keys-file", str(path)])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
