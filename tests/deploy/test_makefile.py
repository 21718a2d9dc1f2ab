"""What `make demo` and `make test` install on a fresh clone (make -n: the commands, nothing run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def planned(target: str) -> list[str]:
    """The commands ``make TARGET`` runs from scratch (-B: as if nothing were installed yet)."""
    done = subprocess.run(["make", "-n", "-B", target], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.splitlines()


def test_demo_installs_the_package_without_the_learning_extra():
    installs = [line for line in planned("demo") if "pip install" in line and "--upgrade pip" not in line]
    assert installs == [".venv/bin/python -m pip install -q -e ."], installs
    assert not any("learn" in line or "test" in line for line in installs)


def test_the_tests_install_the_test_tools_and_the_learning_extra():
    installs = [line for line in planned("test") if "pip install" in line and "--upgrade pip" not in line]
    assert installs == [".venv/bin/python -m pip install -q -e '.[test,learn]'"], installs
    assert any(line.startswith("deploy/bootstrap.sh") and "chromium" in line for line in planned("test"))
