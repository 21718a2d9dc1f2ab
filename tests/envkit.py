"""Environments for the flowrec processes tests start."""

from __future__ import annotations

import os


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without flowrec's, Flink's and Redis settings (so only flags count), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWREC_", "FLINK_")) and k != "REDIS_URL"}
    return {**env, **extra}
