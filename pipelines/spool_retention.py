"""Retiring spool files the job has read: raw events (free-text queries included) do not stay on disk.

The parsers report each spool file whose end marker they read
(:mod:`pipelines.spoolfiles`), i.e. files the source has read to the end.
:class:`SpoolRetention` remembers each one in managed state with the
processing time it was reported and deletes it ``delay_ms`` later.  The
delay is the spool retention setting, but never less than two checkpoint
intervals: by then a checkpoint taken after the file was read has completed,
so no restore rewinds the source to a point before the file's end (Flink's
file source keeps the paths it has read in its own checkpointed state, so it
does not look for the deleted file again).  A restore from an older savepoint
than that may miss deleted files; keep the retention above how far back you
would restore.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

from pyflink.common import Types
from pyflink.datastream import OutputTag
from pyflink.datastream.functions import KeyedProcessFunction
from pyflink.datastream.state import MapStateDescriptor

from pipelines.spoolfiles import spool_path

log = logging.getLogger(__name__)

# Side output of the parsers: names of spool files read to their end marker.
SPOOL_FILES_READ = OutputTag("spool-files-read", Types.STRING())


def retention_delay_ms(retention_s: int, checkpoint_interval_ms: int) -> int:
    """How long after reading a file the job deletes it: the retention, at least two checkpoint intervals."""
    return max(retention_s * 1000, 2 * checkpoint_interval_ms)


class SpoolRetention(KeyedProcessFunction):
    """Single key: deletes spool files ``delay_ms`` of processing time after they were read."""

    def __init__(self, spool_dir: str, delay_ms: int) -> None:
        self.spool_dir = spool_dir
        self.delay_ms = delay_ms

    def open(self, runtime_context) -> None:
        self.read_at = runtime_context.get_map_state(MapStateDescriptor("spool-read-at", Types.STRING(), Types.LONG()))
        self.retired = runtime_context.get_metrics_group().counter("spool_files_deleted")

    def process_element(self, name: str, ctx) -> Iterable:
        now = ctx.timer_service().current_processing_time()
        self.read_at.put(name, now)
        ctx.timer_service().register_processing_time_timer(now + self.delay_ms)
        return ()

    def on_timer(self, timestamp: int, ctx) -> Iterable:
        due = [name for name, read in self.read_at.items() if read + self.delay_ms <= timestamp]
        for name in due:
            path = spool_path(Path(self.spool_dir), name)
            try:
                os.unlink(path)
                self.retired.inc()
            except FileNotFoundError:
                pass
            except OSError as exc:  # a file we cannot delete stays; the job goes on
                log.warning("cannot delete spool file %s: %s", path, exc)
            self.read_at.remove(name)
        return ()
