"""The `flowrec` command line: help, dispatch and errors."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest

from flowrec import cli

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
