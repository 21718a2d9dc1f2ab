"""The `flowrec` command: one subcommand per module in :mod:`flowrec.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``main(args) -> int``.  Command modules keep heavy imports (PyFlink, Beam,
torch) inside ``main``, so building the parser stays cheap; a command whose
module is absent (an optional part) is simply not offered.

A command that cannot go on raises :class:`flowrec.config.CommandError`
(:class:`~flowrec.config.UsageError` for bad usage): it is printed as one
line, and the exit status is 2 for bad usage, as for argparse's own errors.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import logging
import signal
import sys
import threading

from flowrec import __version__
from flowrec.config import CommandError

COMMANDS: dict[str, str] = {
    "generate": "flowrec.commands.generate",
    "replay": "flowrec.commands.replay",
    "run": "flowrec.commands.run",
    "submit": "flowrec.commands.submit",
    "cluster": "flowrec.commands.cluster",
    "demo": "flowrec.commands.demo",
    "serve": "flowrec.commands.serve",
    "evaluate": "flowrec.commands.evaluate",
    "tune": "flowrec.commands.tune",
    "bench": "flowrec.commands.bench",
    "backfill": "flowrec.commands.backfill",
    "train": "flowrec.commands.train",
    "experiment": "flowrec.commands.experiment",
    "simulate": "flowrec.commands.simulate",
}


def _available() -> dict[str, object]:
    modules = {}
    for name, path in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(path)
        except ModuleNotFoundError as exc:
            if exc.name != path:
                raise
    return modules


class HelpFormatter(argparse.HelpFormatter):
    """Shows every flag's default (when it has one and its help does not already say it)."""

    def _format_action(self, action: argparse.Action) -> str:
        if _has_default(action) and "default" not in (action.help or ""):
            action = copy.copy(action)
            action.help = f"{action.help or ''} (default: %(default)s)".lstrip()
        return super()._format_action(action)


def _has_default(action: argparse.Action) -> bool:
    if not action.option_strings or action.help == argparse.SUPPRESS or isinstance(action, argparse._StoreConstAction):
        return False
    return action.default not in (None, argparse.SUPPRESS) and action.default != [] and not isinstance(action.default, bool)


class OneLineErrors(argparse.ArgumentParser):
    """Bad usage is one line (``flowrec CMD: error: ...``) and exit status 2, without the usage block."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(modules: dict[str, object]) -> argparse.ArgumentParser:
    parser = OneLineErrors(prog="flowrec", description="Real-time recommendations for online shops on Apache Flink.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"flowrec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in modules.items():
        command = sub.add_parser(name, help=module.HELP, description=module.HELP, formatter_class=HelpFormatter)
        module.add_arguments(command)
        command.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(_available())
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # SIGTERM (kill, timeout, docker stop, systemd) ends a command like Ctrl-C does: as an
    # exception, so its cleanup runs - the default action would kill the process at once and
    # orphan what it started (a private redis-server, the demo's API process, a mini-cluster job).
    # (uvicorn restores this handler and re-raises SIGTERM after its graceful shutdown.)
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if threading.current_thread() is threading.main_thread() else None
    try:
        return int(args._main(args) or 0)
    except CommandError as exc:
        print(f"flowrec {args.command}: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_status
    except KeyboardInterrupt:  # Ctrl-C: the command's cleanup has run; a traceback would say nothing
        print(f"flowrec {args.command}: interrupted", file=sys.stderr, flush=True)
        return 128 + signal.SIGINT
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """Exit with the conventional ``128 + signal`` status, through every ``finally`` on the way."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
