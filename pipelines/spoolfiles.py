"""Spool files: how the API names them, how each one ends, and how the job retires them.

A spool file is ``<spool>/<kind>/<kind>-<ms>-<hex>.jsonl`` (``kind``: ``events``
or ``catalog``).  Its last line is an *end marker*, ``\\x00spool-end:<name>``:
not JSON, so no producer's record can look like one, and read only by the
job's parsers.  When a parser meets the marker, the job has read the whole
file; the job's spool retention (:class:`pipelines.spool_retention.SpoolRetention`)
deletes it once the job has had time to checkpoint past it.  Files without a
marker (written by hand or by an older release) are never deleted by the job.

No heavy imports here: the API uses this module too.
"""

from __future__ import annotations

import re
from pathlib import Path

SPOOL_KINDS = ("events", "catalog")
END_PREFIX = "\x00spool-end:"
_NAME = re.compile(r"(events|catalog)-[0-9]{1,19}-[0-9a-f]{32}\.jsonl")


def spool_file_name(kind: str, now_ms: int, unique: str) -> str:
    """``events-1700000000000-<hex>.jsonl``: stream kind, writer's clock (epoch ms), a unique tag."""
    if kind not in SPOOL_KINDS:
        raise ValueError(f"spool kind must be one of {SPOOL_KINDS}, not {kind!r}")
    return f"{kind}-{int(now_ms)}-{unique}.jsonl"


def end_marker(name: str) -> bytes:
    """The last line of spool file ``name``."""
    return f"{END_PREFIX}{name}\n".encode()


def ended_file(line: str) -> str | None:
    """The file name an end-marker line names, or None (not a marker, or a name the API never writes)."""
    if not line.startswith(END_PREFIX):
        return None
    name = line[len(END_PREFIX):].strip()
    return name if _NAME.fullmatch(name) else None


def spool_path(spool_dir: Path, name: str) -> Path:
    """Where spool file ``name`` (a name :func:`ended_file` accepted) lives."""
    return Path(spool_dir) / name.split("-", 1)[0] / name
