"""The scorer's embedding cache: read once per version; an unreadable version keeps the last good one."""

from __future__ import annotations

from pathlib import Path

from pipelines.operators import Scorer
from state.embeddings import write_export
from state.writes import Ttls
from tests.pipelines.jobkit import random_export
from transforms.config import ModelConfig


class _Counter:
    def __init__(self) -> None:
        self.count = 0

    def inc(self, n: int = 1) -> None:
        self.count += n


def _scorer(initial: str | None) -> Scorer:
    scorer = Scorer(ModelConfig(), Ttls(60, 60), record_freshness=False, embeddings=initial)
    scorer.embedding_failures = _Counter()
    scorer.embeddings_path = None
    scorer.embeddings = None
    return scorer


def test_versions_are_read_once_and_a_bad_one_keeps_the_last_good(tmp_path: Path):
    good = str(write_export(tmp_path, random_export(["a", "b", "c"], "20261130T000000Z", seed=1)))
    scorer = _scorer(good)
    model = scorer._embeddings(good)
    assert model is not None and model.version == "20261130T000000Z"
    assert scorer._embeddings(good) is model  # cached
    assert scorer._embeddings(str(tmp_path / "missing")) is model
    assert scorer.embedding_failures.count == 1
    assert scorer._embeddings(str(tmp_path / "missing")) is model and scorer.embedding_failures.count == 1  # logged once
    assert scorer._embeddings(None) is None
