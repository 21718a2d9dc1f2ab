"""Hand records to the live job: one new JSON-lines file per request in the spool directory.

A file is written under a temporary name in ``.staging/`` (next to the
watched folders, on the same file system), flushed to disk, and then renamed
into its folder (an atomic rename on POSIX): the job never sees a half-written
file.  The temporary files stay out of the watched folders because Flink's
file source fails a whole listing of a folder ("Failed to enumerate files")
when a file in it disappears between listing and reading its attributes, as a
temporary file does when it is renamed; under frequent writes new files then
went unnoticed (found by `flowrec simulate`).  Files go to the
subfolder of their stream (``events/`` or ``catalog/``, which
:class:`pipelines.sources.DirectorySource` watches); the name
``<kind>-<ms>-<uuid>.jsonl`` sorts by time of writing.  The last line is the
file's end marker (:mod:`pipelines.spoolfiles`): when the job reads it, the job
has read the whole file, and it deletes the file after its spool retention.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterable

from pipelines.spoolfiles import SPOOL_KINDS, end_marker, spool_file_name

__all__ = ["SPOOL_KINDS", "STAGING", "spool_file_name", "write_spool_file"]

# Where files are written before they are renamed into their watched folder.
STAGING = ".staging"


def write_spool_file(spool_dir: Path, kind: str, lines: Iterable[bytes], now_ms: int) -> Path:
    """Write ``lines`` (each ending in ``\\n``) as a new spool file; returns its final path.

    The data is fsynced before the rename, so a 202 answered after this call
    means the records survive a crash of the API process or the machine.
    """
    name = spool_file_name(kind, now_ms, uuid.uuid4().hex)
    folder = spool_dir / kind
    staging = spool_dir / STAGING
    folder.mkdir(parents=True, exist_ok=True)
    staging.mkdir(parents=True, exist_ok=True)
    final = folder / name
    temporary = staging / f"{name}.tmp"
    data = b"".join(lines) + end_marker(name)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.rename(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return final


def spool_unwritable_reason(spool_dir: Path, min_free_bytes: int) -> str | None:
    """Why a request's records could not be spooled now (one line), or ``None`` when they could.

    Creates and removes a probe file in each stream's folder and in the staging
    folder (the job ignores hidden names), which catches what permission bits do not show to
    root: a read-only mount, a file where a folder should be, no inodes left;
    then checks that ``min_free_bytes`` are free for unprivileged writers.
    """
    for kind in (*SPOOL_KINDS, STAGING):
        folder = spool_dir / kind
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".probe-{uuid.uuid4().hex}"
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(probe)
        except OSError as exc:
            return f"{folder} is not writable ({exc.strerror or type(exc).__name__})"
    stats = os.statvfs(spool_dir)
    free = stats.f_bavail * stats.f_frsize
    if free < min_free_bytes:
        return f"{spool_dir} has {free} bytes free, fewer than the {min_free_bytes} one request may need"
    return None

