"""The `flowrec` command line: help, dispatch and errors."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import flowrec
from flowrec import cli
from flowrec.config import Settings
from flowrec.localredis import free_port
from tests.envkit import clean_environment

REPO = Path(__file__).resolve().parents[2]

FLOWREC = Path(sys.executable).parent / "flowrec"


def present_commands() -> list[str]:
    return [name for name, path in cli.COMMANDS.items() if importlib.util.find_spec(path) is not None]


def test_command_table_points_into_flowrec_commands():
    assert all(path == f"flowrec.commands.{name}" for name, path in cli.COMMANDS.items())
    assert "generate" in present_commands()


def test_console_script_help_lists_every_present_command():
    assert FLOWREC.exists(), "the project is installed editable with its console script"
    done = subprocess.run([str(FLOWREC), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: flowrec" in done.stdout
    for name in present_commands():
        assert f"    {name} " in done.stdout, name
        assert importlib.import_module(cli.COMMANDS[name]).HELP.split()[0] in done.stdout


def test_unknown_command_exits_2():
    done = subprocess.run([str(FLOWREC), "no-such-command"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "invalid choice: 'no-such-command'" in done.stderr


def test_missing_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_subcommand_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["generate", "--help"])
    assert exc.value.code == 0
    assert "--users" in capsys.readouterr().out


def test_dispatch_returns_the_command_exit_code():
    seen = {}

    def main(args):
        seen["value"] = args.value
        return 3

    module = types.SimpleNamespace(HELP="a test command", add_arguments=lambda p: p.add_argument("--value", type=int), main=main)
    parser = cli.build_parser({"fake": module})
    args = parser.parse_args(["fake", "--value", "9"])
    assert args.command == "fake" and args._main(args) == 3 and seen == {"value": 9}


def test_generate_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "shop"
    assert cli.main(["generate", "--users", "5", "--items", "6", "--events", "30", "--seed", "1", "--out", str(out)]) == 0
    assert (out / "events.jsonl").read_bytes().count(b"\n") == 30
    assert "wrote 30 events" in capsys.readouterr().out
    # A bad size is reported, not raised.
    assert cli.main(["generate", "--users", "0", "--items", "6", "--events", "3", "--out", str(out)]) == 2


def test_missing_command_modules_are_skipped_but_broken_ones_raise(tmp_path, monkeypatch):
    (tmp_path / "flowrec_broken_cmd.py").write_text("import flowrec_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "COMMANDS", {"gone": "flowrec.commands.flowrec_not_written_yet"})
    assert cli._available() == {}
    monkeypatch.setattr(cli, "COMMANDS", {"broken": "flowrec_broken_cmd"})
    with pytest.raises(ModuleNotFoundError, match="flowrec_no_such_dependency"):
        cli._available()


# -- bad usage: one line, exit status 2, no traceback --------------------------------------------------------------
# The table runs each case through cli.main in this process (the flowrec_call fixture: same environment,
# working directory and stderr as the process); the tests below that start `python -m flowrec.cli` show
# that the process exits with what main returns.


def flowrec_process(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowrec.cli", *argv], capture_output=True, text=True, timeout=120,
                          env=clean_environment(**(env or {})), stdin=subprocess.DEVNULL, cwd=REPO)


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["replay", "--events", "{tmp}/missing.jsonl", "--redis-url", "redis://127.0.0.1:1/0"], {}, "input file not found: .*missing.jsonl"),
        (["replay", "--events", "{events}", "--redis-url", "localhost:6391"], {}, "--redis-url: a Redis URL starts with redis://"),
        (["replay", "--events", "{events}"], {"REDIS_URL": "localhost:6391"}, r"REDIS_URL=\(hidden\) is not valid: a Redis URL starts with redis://"),
        (["run", "--events", "{events}", "--state-backend", "foo"], {}, "--state-backend: invalid choice: 'foo' \\(choose from 'hashmap', 'rocksdb'\\)"),
        (["run", "--events", "{events}"], {"FLOWREC_PARALLELISM": "two"}, "FLOWREC_PARALLELISM='two' is not valid: expected a whole number"),
        (["run", "--socket", "127.0.0.1"], {}, "--socket: expected HOST:PORT"),
        (["run", "--events", "{events}", "--model-config", "{tmp}/missing.json"], {}, "model config file not found: .*missing.json"),
        (["run", "--events", "{tmp}/missing.jsonl"], {}, "input file not found"),
        (["run", "--events", "{events}", "--restore", "{tmp}/no-savepoint"], {}, "savepoint or checkpoint not found"),
        (["run", "--socket-catalog", "127.0.0.1:1", "--events", "{events}"], {}, "--socket-catalog goes with --socket"),
        (["run", "--events", "{events}", "--parallelism", "0"], {}, "--parallelism: expected a whole number >= 1"),
        (["replay", "--events", "{events}", "--redis-url", "redis://127.0.0.1:1/0", "--namespace", "shop 1"], {}, "--namespace: namespace must match"),
        (["demo", "--model-config", "{tmp}/missing.json"], {}, "model config file not found"),
        (["demo", "--out", "{events}/demo"], {}, "cannot create the demo folder"),
        (["generate", "--out", "{events}/shop", "--users", "2", "--items", "2", "--events", "2"], {}, "cannot write the shop to"),
        (["backfill", "--input", "{tmp}/missing.jsonl", "--snapshot", "{tmp}/snap"], {}, "no input file matches"),
        (["run", "--events", "{events}", "--embeddings", "{tmp}/no-exports"], {}, "no embedding export in"),
        (["cluster", "cancel", "not-a-job-id"], {}, "not a Flink job id"),
        (["submit", "--events", "{events}", "--redis-url", "redis://127.0.0.1:1/0", "--restore", "/a", "--savepoint", "/b"], {}, "give the path once"),
        # Input files the job could not read are refused before the JVM starts (it read them when built, with a traceback).
        (["run", "--events", "{tmp}/events.txt"], {}, r"events\.txt: unsupported event file type '\.txt'"),
        (["run", "--events", "{tmp}/garbage.parquet"], {}, r"garbage\.parquet is not a readable Parquet file"),
        (["run", "--events", "{events}", "--model-config", "{tmp}/string-list.json"], {}, "allow_categories must be a list, got 'fashion'"),
        (["run", "--events", "{events}", "--model-config", "{tmp}/bad-category.json"], {}, r"deny_categories must be a list of categories .*got '\*'"),
        (["run", "--events", "{events}", "--model-config", "{tmp}/array.json"], {}, "model settings are a JSON object"),
        (["demo", "--users", "0"], {}, "--users: expected a whole number >= 1, not '0'"),
        (["demo", "--events", "-5"], {}, "--events: expected a whole number >= 1, not '-5'"),
        (["demo", "--rate", "0"], {}, "--rate: expected a number > 0, not '0'"),
        (["demo", "--duration", "nan"], {}, "--duration: expected a number of seconds >= 0, not 'nan'"),
        (["serve", "--catalog", "{tmp}/missing.jsonl"], {}, "catalog file not found: .*missing.jsonl"),
        (["serve", "--catalog", "{tmp}"], {}, "catalog file not found"),
        (["serve", "--spool-dir", "{events}/spool"], {}, "cannot create the spool directory .*events.jsonl/spool"),
        (["serve", "--workers", "0"], {}, "--workers: must be above 0"),
        (["serve", "--max-body-bytes", "-5"], {}, "--max-body-bytes: must be above 0"),
        (["bench", "stream", "--events", "-5"], {}, "--events: expected a whole number >= 1, not '-5'"),
        (["bench", "stream", "--low-rate", "nan"], {}, "--low-rate: expected a number > 0, not 'nan'"),
        (["bench", "stream", "--repeats", "0"], {}, "--repeats: expected a whole number >= 1, not '0'"),
    ],
)
def test_bad_usage_is_one_line_and_exit_status_2(tmp_path: Path, flowrec_call, argv, env, message):
    events = tmp_path / "events.jsonl"
    events.write_text('{"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": 1700000000000}\n')
    (tmp_path / "events.txt").write_text(events.read_text())
    (tmp_path / "garbage.parquet").write_bytes(b"not a parquet file\n" * 50)
    (tmp_path / "string-list.json").write_text('{"allow_categories": "fashion"}')
    (tmp_path / "bad-category.json").write_text('{"deny_categories": ["*"]}')
    (tmp_path / "array.json").write_text('[{"top_n": 5}]')
    done = flowrec_call(*(a.format(tmp=tmp_path, events=events) for a in argv), env=env)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert re.match(r"flowrec( [a-z]+){0,2}: error: ", last) and re.search(message, last), done.stderr


def test_replay_checks_redis_before_the_work(tmp_path: Path):
    events = tmp_path / "events.jsonl"
    events.write_text("".join(f'{{"user_id": "u{i % 7}", "item_id": "i{i % 5}", "event_type": "view", "ts": {1700000000000 + i}}}\n' for i in range(500)))
    done = flowrec_process("replay", "--events", str(events), "--redis-url", f"redis://:secret-pw@127.0.0.1:{free_port()}/0")
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip().splitlines()[-1]], "one line"
    assert re.match(r"flowrec replay: error: cannot reach Redis at redis://:\*\*\*@127\.0\.0\.1:\d+/0: .*Connection refused", done.stderr)
    # Refused up front: no write was tried (the store would log every retry) and nothing was computed.
    assert "retry" not in done.stderr and done.stdout == ""


def test_demo_checks_the_given_redis_before_the_work(tmp_path: Path):
    # It used to generate the shop, start the API and the job against it and fail in a loop of tracebacks.
    done = flowrec_process("demo", "--out", str(tmp_path / "demo"), "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert re.match(r"flowrec demo: error: cannot reach Redis at redis://127\.0\.0\.1:\d+/0: .*Connection refused", done.stderr)
    assert done.stdout == "" and not (tmp_path / "demo").exists(), "nothing was generated"


# -- help, version, the flags each command offers ----------------------------------------------------------------------


def every_parser() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every command's parser, nested ones (`bench engine`, `cluster savepoint`) included."""
    found = []

    def walk(name: str, parser: argparse.ArgumentParser) -> None:
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(f"{name} {sub_name}".strip(), sub)

    walk("", cli.build_parser(cli._available()))
    return found


def option_help(help_text: str) -> dict[str, str]:
    """Option string -> its help entry (whitespace collapsed), from a --help text."""
    entries: dict[str, str] = {}
    current: list[str] = []
    for line in help_text.splitlines():
        if re.match(r"^  -", line):
            current = [line]
            for option in re.findall(r"(?:^|, )(--?[\w-]+)", line.strip()):
                entries[option] = current  # type: ignore[assignment]
        elif line.startswith("      ") and current:
            current.append(line)
        else:
            current = []
    return {option: " ".join(" ".join(lines).split()) for option, lines in entries.items()}


def shown_default(action: argparse.Action) -> tuple[str, ...]:
    """How --help may show ``action``'s default (settings flags: the Settings default); () when it has none."""
    is_setting = action.default is None and "env FLOWREC_" in (action.help or "") and hasattr(Settings(), action.dest)
    value = getattr(Settings(), action.dest) if is_setting else action.default
    if value in (None, False, [], (), argparse.SUPPRESS) or action.help == argparse.SUPPRESS or isinstance(action, argparse._StoreConstAction):
        return ()
    if isinstance(value, list):  # shown in words ("default: all"), every value being among the choices
        return tuple(str(v) for v in value) if set(value) <= set(action.choices or ()) else (str(value),)
    if isinstance(value, bool):
        return (str(value).lower(),)
    if isinstance(value, float) and value.is_integer():
        return (str(value), str(int(value)))
    return (str(value), f"{value:,}") if isinstance(value, int) else (str(value),)


def test_help_shows_every_default_and_every_choice():
    missing = []
    for name, parser in every_parser():
        entries = option_help(parser.format_help())
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            entry = entries[action.option_strings[-1]]
            default = shown_default(action)
            if default and not ("default" in entry and any(text in entry for text in default)):
                missing.append(f"flowrec {name} {action.option_strings[-1]}: {entry}")
            if not isinstance(action, argparse._SubParsersAction):
                missing += [f"flowrec {name} {action.option_strings[-1]}: no {choice}" for choice in action.choices or () if str(choice) not in entry]
    assert not missing, "\n".join(missing)


def test_help_and_version_as_the_user_sees_them():
    done = flowrec_process("run", "--help")
    assert done.returncode == 0
    entries = option_help(done.stdout)
    assert "default: 5.0" in entries["--progress-interval"]
    assert "{hashmap,rocksdb}" in entries["--state-backend"] and "default: hashmap" in entries["--state-backend"]
    assert "default: earliest" in entries["--kafka-starting-offsets"] and "latest" in entries["--kafka-starting-offsets"]
    assert "env FLOWREC_PARALLELISM; default: 1" in entries["--parallelism"]
    version = flowrec_process("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"flowrec {flowrec.__version__}"


def test_run_offers_no_flags_it_ignores():
    for command in ("run", "submit"):
        options = {o for a in dict(every_parser())[command]._actions for o in a.option_strings}
        assert not {"--api-keys", "--datasets-dir", "--batch-timeout-ms"} & options, command
    done = flowrec_process("run", "--events", "x.jsonl", "--api-keys", "k")
    assert done.returncode == 2 and "unrecognized arguments: --api-keys k" in done.stderr


def test_submit_restores_with_restore_and_the_old_savepoint_name_warns():
    submit_parser = dict(every_parser())["submit"]
    assert "--restore" in option_help(submit_parser.format_help()) and "--savepoint" not in submit_parser.format_help()
    args = submit_parser.parse_args(["--spool-dir", "/s", "--savepoint", "/sp/1"])
    from flowrec.commands import submit

    warned = io.StringIO()
    with contextlib.redirect_stderr(warned):
        assert submit.restore_path(args) == "/sp/1"
    assert "--savepoint is deprecated, use --restore" in warned.getvalue()
    assert submit.restore_path(submit_parser.parse_args(["--spool-dir", "/s", "--restore", "/sp/2"])) == "/sp/2"
