"""The shipped model configs load and keep the blend they document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transforms.config import ModelConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "bench" / "configs").glob("*.json"))


def test_there_are_shipped_configs():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads(path: Path):
    config = ModelConfig.from_dict(json.loads(path.read_text()))
    assert config.to_dict() == ModelConfig.from_dict(config.to_dict()).to_dict()
    if "blend" in path.name:
        assert config.weight_embedding > 0
