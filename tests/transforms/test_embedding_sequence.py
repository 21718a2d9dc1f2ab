"""The NumPy sequence forward pass at serving time (its equality with the torch model is in tests/learn)."""

from __future__ import annotations

import numpy as np
import pytest

from state.embeddings import EmbeddingExport
from transforms.embedding import EmbeddingModel, layer_norm, sequence_forward

D, H, L = 5, 4, 3


def _weights(rng: np.random.Generator, blocks: int = 1) -> dict[str, np.ndarray]:
    def linear(name: str, n_in: int, n_out: int) -> dict[str, np.ndarray]:
        return {f"{name}.weight": rng.normal(size=(n_in, n_out)).astype(np.float32), f"{name}.bias": rng.normal(size=n_out).astype(np.float32)}

    def norm(name: str) -> dict[str, np.ndarray]:
        return {f"{name}.weight": np.ones(H, np.float32), f"{name}.bias": np.zeros(H, np.float32)}

    out = {"heads": np.array([2.0], np.float32), "position": rng.normal(size=(L, H)).astype(np.float32), **linear("input", D, H), **linear("output", H, D - 1), **norm("final_norm")}
    for b in range(blocks):
        for part in ("query", "key", "value", "attention_out", "ff1", "ff2"):
            out.update(linear(f"blocks.{b}.{part}", H, H))
        out.update(norm(f"blocks.{b}.norm1"))
        out.update(norm(f"blocks.{b}.norm2"))
    return out


def test_one_item_without_blocks_is_input_position_norm_output():
    rng = np.random.default_rng(1)
    weights = {k: v for k, v in _weights(rng, blocks=0).items()}
    item = rng.normal(size=(1, D))
    hidden = item[0] @ weights["input.weight"] + weights["input.bias"] + weights["position"][0]
    expected = layer_norm(hidden, np.ones(H), np.zeros(H)) @ weights["output.weight"] + weights["output.bias"]
    np.testing.assert_allclose(sequence_forward(weights, item), np.append(expected, 1.0), rtol=1e-6)


def test_attention_makes_the_vector_depend_on_older_items_and_their_order():
    rng = np.random.default_rng(2)
    weights = _weights(rng)
    a, b, c = rng.normal(size=(3, D))
    base = sequence_forward(weights, np.array([a, c]))
    assert not np.allclose(base, sequence_forward(weights, np.array([b, c])))
    assert not np.allclose(sequence_forward(weights, np.array([a, b, c])), sequence_forward(weights, np.array([b, a, c])))
    with pytest.raises(ValueError, match="1..3 items"):
        sequence_forward(weights, np.zeros((4, D)))


def test_sequence_vector_skips_unknown_items_and_reads_the_last_window():
    rng = np.random.default_rng(3)
    weights = _weights(rng)
    ids = np.array(["a", "b", "c", "d"], dtype=object)
    query = rng.normal(size=(4, D)).astype(np.float32)
    model = EmbeddingModel(EmbeddingExport("v1", ids, query, query.copy(), sequence=weights))
    np.testing.assert_allclose(model.sequence_vector(["a", "x", "b", "c", "d"]), sequence_forward(weights, query[[1, 2, 3]]))
    assert model.sequence_vector(["x"]) is None
    assert EmbeddingModel(EmbeddingExport("v1", ids, query, query.copy())).sequence_vector(["a"]) is None
