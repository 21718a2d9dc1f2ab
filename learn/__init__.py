"""Offline training of learned item embeddings and a sequence model (the optional ``learn`` extra).

PyTorch lives only in this package.  The entry point is
:func:`learn.train.train_and_export` (events + catalog in, an embedding export
of :mod:`state.embeddings` out); ``flowrec train`` is its command line.
Importing :mod:`learn` itself needs no PyTorch, so callers can check
:func:`require_torch` first and show how to install it.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path

from learn.config import TrainConfig


class TorchMissing(ImportError):
    """PyTorch (or faiss) is not installed; the message says how to install the extra."""


def install_command() -> str:
    """The one command that installs the ``learn`` extra where this flowrec runs (its interpreter; its checkout, if any)."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file():
        return f"{shlex.quote(sys.executable)} -m pip install -e {shlex.quote(f'{root}[learn]')}"
    return f"{shlex.quote(sys.executable)} -m pip install 'flowrec[learn]'"


def require_torch() -> None:
    """Raise :class:`TorchMissing` naming :func:`install_command` unless torch and faiss can be imported."""
    missing = [name for name in ("torch", "faiss") if importlib.util.find_spec(name) is None]
    if missing:
        raise TorchMissing(f"flowrec train needs {' and '.join(missing)} (the learn extra, ~2 GB); install it with: {install_command()}")


__all__ = ["TorchMissing", "TrainConfig", "install_command", "require_torch"]
