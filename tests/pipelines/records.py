"""An operator's outputs as the tests read them."""

from __future__ import annotations

from pyflink.common import Row
from pyflink.datastream import OutputTag


def tagged(out) -> tuple[OutputTag | None, object]:
    """One output of an operator call as ``(side-output tag, or None for the main output, value)``.

    A keyed record (``Row(key, value)``, :func:`pipelines.operators.keyed`) is
    unwrapped after checking its key: the value's shard (0 for a value without one).
    """
    tag, record = (out[0], out[1]) if isinstance(out, tuple) and isinstance(out[0], OutputTag) else (None, out)
    if isinstance(record, Row):
        key, record = record[0], record[1]
        assert key == getattr(record, "shard", 0), (key, record)
    return tag, record
