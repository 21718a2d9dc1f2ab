"""Fixtures for the command tests."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Callable

import pytest

from flowrec import cli

REPO = Path(__file__).resolve().parents[2]

# What a Python process started without -W flags does not print (its default warning filters).
SILENT_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Where a plain interpreter prints a warning: on stderr, when it is raised."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@pytest.fixture
def flowrec_call(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> Callable[..., subprocess.CompletedProcess]:
    """``flowrec ARGV`` as ``python -m flowrec.cli`` runs it (``sys.exit(cli.main())``), but in this process.

    For the many bad-usage cases: a process each cost an interpreter start and the command table's
    imports (seconds under load), to check what :func:`flowrec.cli.main` decides.  The process's
    conditions are reproduced: the clean environment of :func:`tests.envkit.clean_environment` plus
    ``env``, the repository as working directory, argparse's exits as exit statuses, and on stderr what
    the process would print there: the log lines (root logging configured afresh by ``main``, as in a
    new process) and the warnings a default-filtered interpreter shows.  (That a process exits with
    the status ``main`` returns is checked by the tests that do start one.)
    """

    def call(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        for name in [k for k in os.environ if k.startswith(("FLOWREC_", "FLINK_")) or k == "REDIS_URL"]:
            monkeypatch.delenv(name)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(REPO)
        capsys.readouterr()
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        # Emptied in place (pytest's own capture handlers are restored after): main's basicConfig then
        # logs to this stderr, as it would in a fresh process.
        root.handlers.clear()
        try:
            with warnings.catch_warnings():
                warnings.resetwarnings()
                warnings.simplefilter("default")
                for category in SILENT_WARNINGS:
                    warnings.simplefilter("ignore", category)
                warnings.showwarning = _print_warning
                try:
                    status = cli.main(list(argv))
                except SystemExit as exc:  # argparse's errors (and --help, --version)
                    status = exc.code if isinstance(exc.code, int) else 1
        finally:
            for handler in root.handlers:
                handler.flush()
            root.handlers[:] = handlers
            root.setLevel(level)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["flowrec", *argv], status, out, err)

    return call
