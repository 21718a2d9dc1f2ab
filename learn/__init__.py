"""Offline training of learned item embeddings and a sequence model (the optional ``learn`` extra).

PyTorch lives only in this package.  The entry point is
:func:`learn.train.train_and_export` (events + catalog in, an embedding export
of :mod:`state.embeddings` out); ``flowrec train`` is its command line.
Importing :mod:`learn` itself needs no PyTorch, so callers can check
:func:`require_torch` first and show how to install it.
"""

from __future__ import annotations

import importlib.util

from learn.config import TrainConfig

INSTALL_HINT = "pip install '.[learn]'"


class TorchMissing(ImportError):
    """PyTorch (or faiss) is not installed; the message says how to install the extra."""


def require_torch() -> None:
    """Raise :class:`TorchMissing` naming ``pip install '.[learn]'`` unless torch and faiss can be imported."""
    missing = [name for name in ("torch", "faiss") if importlib.util.find_spec(name) is None]
    if missing:
        raise TorchMissing(f"flowrec train needs {' and '.join(missing)}: install the learn extra with {INSTALL_HINT}")


__all__ = ["INSTALL_HINT", "TorchMissing", "TrainConfig", "require_torch"]
