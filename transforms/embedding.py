"""Learned item embeddings at serving time: user vectors and dot-product scores, in NumPy.

A trained export (:mod:`state.embeddings`) gives every item a *query* vector
``q_i`` (the item as part of a user's history) and a *candidate* vector ``c_j``
(the item as a recommendation); item ``j`` scores ``u . c_j``.  The user
vector ``u`` is built from the user's positive decayed interests ``v_i`` by
the export's rule (:class:`state.embeddings.UserVectorRule`):

* ``mean``: the interest-weighted mean of the query vectors,
  ``u = sum_i v_i q_i / sum_i v_i``;
* ``fold_in``: the implicit-ALS fold-in (Hu, Koren, Volinsky 2008) against
  the candidate vectors, ``u = (G + sum_i a v_i c_i c_i^T + l I)^-1
  sum_i (1 + a v_i) c_i`` with the Gramian ``G = sum_j c_j c_j^T`` over the
  whole catalog (computed once per export), ``a`` the confidence and ``l``
  the regularization.  It is the user vector minimising
  ``sum_j w_j (u . c_j - p_j)^2 + l |u|^2`` (``p_j`` = 1 for an interest,
  weight ``1 + a v_i``; 0 and weight 1 for every other item), so it
  discounts what the user's items share with every item (popularity,
  common taste) where a mean keeps it.  A solve of ``D x D`` per user:
  the cost does not grow with the catalog.

Either way the trainer optimises exactly the served form, so the vector
moves with every event (through the decayed interests) without any
retraining.  Items unknown to the export are skipped.  Nothing here imports
PyTorch.

The trainer folds an item bias into the dot product: under the ``mean``
rule every query vector ends in a constant 1 and every candidate vector in
the item's bias, so the user vector's last entry is 1 and ``u . c_j``
includes ``b_j``.  Under ``fold_in`` the last entry is learned like the
others, and the export's query vectors are its candidate vectors.

**Cold items.**  An item without an id embedding (one that joined the
catalog after training, or had no positive interest in it) gets the vectors
the trained towers give it from its side features alone: the bag of its
distinct :func:`transforms.content.feature_tokens` (price bucketed with the
export's edges), of which the tokens the export knows are averaged
(:meth:`EmbeddingModel.cold_vectors`, layout in :mod:`state.embeddings`).
An item none of whose tokens is known gets what the towers give an empty
bag: a zero candidate vector, and a zero query vector whose last entry is the
constant 1 under the ``mean`` rule.

**Sequence model.**  ``export.sequence`` (when present) holds the weights of a
SASRec-style encoder that turns the user's recent items (oldest first) into a
user vector in the same space; :func:`sequence_forward` is its forward pass.
Array layout (float32; matrices are ``(in, out)``, applied as ``x @ W + b``;
``D`` = export dim, ``h`` = hidden size, ``L`` = window length):

=================================  ==========  =============================================
name                               shape       role
=================================  ==========  =============================================
``heads``                          ``(1,)``    number of attention heads (``h`` divisible by it)
``input.weight`` / ``.bias``       ``(D, h)``  query vector of an item -> hidden
``position``                       ``(L, h)``  recency embedding; row 0 = the most recent item
``blocks.<b>.norm1.weight/.bias``  ``(h,)``    pre-attention layer norm (eps 1e-5), blocks b = 0, 1, ...
``blocks.<b>.query/key/value``     ``(h, h)``  attention projections (``.weight``, ``.bias``)
``blocks.<b>.attention_out``       ``(h, h)``  attention output projection
``blocks.<b>.norm2.weight/.bias``  ``(h,)``    pre-feed-forward layer norm
``blocks.<b>.ff1`` / ``.ff2``      ``(h, h)``  feed-forward ``ff2(relu(ff1(x)))``
``final_norm.weight/.bias``        ``(h,)``    layer norm of the most recent item's output
``output.weight`` / ``.bias``      ``(h, D-1)`` hidden -> user vector (a constant 1 is appended)
=================================  ==========  =============================================

Each block is ``x += attn(norm1(x)); x += ff2(relu(ff1(norm2(x))))`` with
multi-head scaled dot-product attention of every item over every item of the
window (the window holds only the past, so no causal mask is needed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from state.embeddings import EmbeddingExport
from transforms.similarity import top_k

if TYPE_CHECKING:  # the catalog module imports the scorer (through experiments), which imports this one
    from transforms.catalog import CatalogItem

Neighbours = tuple[np.ndarray, np.ndarray]
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which the trainer uses


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = LAYER_NORM_EPS) -> np.ndarray:
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last axis (biased variance, as torch)."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _linear(weights: Mapping[str, np.ndarray], name: str, x: np.ndarray) -> np.ndarray:
    return x @ weights[f"{name}.weight"].astype(np.float64) + weights[f"{name}.bias"].astype(np.float64)


def _norm(weights: Mapping[str, np.ndarray], name: str, x: np.ndarray) -> np.ndarray:
    return layer_norm(x, weights[f"{name}.weight"].astype(np.float64), weights[f"{name}.bias"].astype(np.float64))


def sequence_forward(weights: Mapping[str, np.ndarray], items: np.ndarray) -> np.ndarray:
    """The sequence encoder's user vector for ``items``: query vectors of the recent items, oldest first, ``(n, D)``.

    ``n`` must be between 1 and the window length ``L``.  Returns the ``D``
    vector (float64) whose last entry is 1, per the layout in the module doc.
    """
    n = items.shape[0]
    position = weights["position"].astype(np.float64)
    if not 1 <= n <= position.shape[0]:
        raise ValueError(f"the sequence model reads 1..{position.shape[0]} items, got {n}")
    heads = int(weights["heads"][0])
    x = _linear(weights, "input", items.astype(np.float64)) + position[:n][::-1]
    hidden = x.shape[1]
    per_head = hidden // heads
    block = 0
    while f"blocks.{block}.query.weight" in weights:
        prefix = f"blocks.{block}"
        a = _norm(weights, f"{prefix}.norm1", x)

        def split(t: np.ndarray) -> np.ndarray:
            return t.reshape(n, heads, per_head).transpose(1, 0, 2)  # (heads, n, per_head)

        q, k, v = (split(_linear(weights, f"{prefix}.{part}", a)) for part in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(per_head)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        attention = scores / scores.sum(axis=-1, keepdims=True)
        context = (attention @ v).transpose(1, 0, 2).reshape(n, hidden)
        x = x + _linear(weights, f"{prefix}.attention_out", context)
        x = x + _linear(weights, f"{prefix}.ff2", np.maximum(_linear(weights, f"{prefix}.ff1", _norm(weights, f"{prefix}.norm2", x)), 0.0))
        block += 1
    out = _linear(weights, "output", _norm(weights, "final_norm", x[-1]))
    return np.append(out, 1.0)


def fold_in(gram: np.ndarray, candidates: np.ndarray, weights: np.ndarray, confidence: float, regularization: float) -> np.ndarray:
    """The ``fold_in`` user vector (module doc) of interests ``weights`` (> 0) on the rows ``candidates``.

    ``gram`` is ``C^T C`` over every candidate vector (float64, ``D x D``).
    """
    rows = np.asarray(candidates, dtype=np.float64)
    positive = 1.0 + confidence * np.asarray(weights, dtype=np.float64)
    system = gram + (rows.T * (positive - 1.0)) @ rows
    system[np.diag_indices_from(system)] += regularization
    return np.linalg.solve(system, rows.T @ positive)


def bag_means(vectors: np.ndarray, bags: Sequence[Sequence[int]]) -> np.ndarray:
    """``mean(vectors[bag])`` for every bag of row indices, float32 ``(len(bags), D)``; an empty bag gives a zero row.

    Sums in float64, so the result does not depend on the order of a bag.
    """
    out = np.zeros((len(bags), vectors.shape[1]), dtype=np.float32)
    sizes = np.fromiter((len(bag) for bag in bags), dtype=np.int64, count=len(bags))
    filled = np.flatnonzero(sizes)
    if not filled.size:
        return out
    rows = np.fromiter((k for bag in bags for k in bag), dtype=np.intp, count=int(sizes.sum()))
    starts = np.cumsum(sizes) - sizes
    sums = np.add.reduceat(vectors[rows].astype(np.float64), starts[filled], axis=0)
    out[filled] = (sums / sizes[filled, None]).astype(np.float32)
    return out


@dataclass(frozen=True)
class EmbeddingModel:
    """An export made ready for scoring: an id -> row index and the matrices."""

    export: EmbeddingExport
    rows: dict[str, int] = field(init=False, repr=False)
    # ``C^T C`` (float64) under the fold_in rule, else None.
    gram: np.ndarray | None = field(init=False, repr=False)
    # feature token -> row of ``export.features`` (empty without them).
    feature_rows: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", {item: k for k, item in enumerate(self.export.item_ids.tolist())})
        features = self.export.features
        object.__setattr__(self, "feature_rows", {} if features is None else {name: k for k, name in enumerate(features.names.tolist())})
        gram = None
        if self.export.user_vector.kind == "fold_in":
            candidate = self.export.candidate.astype(np.float64)
            gram = candidate.T @ candidate
        object.__setattr__(self, "gram", gram)

    @property
    def version(self) -> str:
        return self.export.version

    def user_vector(self, interests: Sequence[tuple[str, float]]) -> np.ndarray | None:
        """The user vector (by the export's rule, module doc) of the positive interests the export knows; None if none."""
        index = [(self.rows[item], value) for item, value in interests if value > 0 and item in self.rows]
        if not index:
            return None
        rows = np.fromiter((k for k, _ in index), dtype=np.intp, count=len(index))
        weights = np.fromiter((v for _, v in index), dtype=np.float64, count=len(index))
        rule = self.export.user_vector
        if rule.kind == "fold_in":
            return fold_in(self.gram, self.export.candidate[rows], weights, rule.confidence, rule.regularization)
        return (weights @ self.export.query[rows].astype(np.float64)) / weights.sum()

    def sequence_vector(self, recent_items: Sequence[str]) -> np.ndarray | None:
        """The sequence model's user vector from the recent items (oldest first; unknown ones skipped).

        Only the last ``L`` known items are read (``L`` = the export's window
        length).  None when the export has no sequence model or no item is known.
        """
        weights = self.export.sequence
        if weights is None:
            return None
        rows = [self.rows[item] for item in recent_items if item in self.rows]
        if not rows:
            return None
        rows = rows[-weights["position"].shape[0]:]
        return sequence_forward(weights, self.export.query[np.array(rows, dtype=np.intp)])

    def cold_vectors(self, items: Sequence[CatalogItem]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(candidate, query, known)`` of catalog records placed by their side features alone (module doc).

        Row ``k`` holds the vectors the trained towers give an item without an
        id embedding whose catalog record is ``items[k]``, in the export's
        layout (float32, ``(len(items), dim)``); ``known[k]`` is True when at
        least one of its feature tokens is known to the export (otherwise the
        row is the empty bag's: zero, apart from the ``mean`` rule's constant
        query entry).  An export without feature vectors knows no token.  The
        ids of ``items`` play no part: an item the export has a vector for is
        placed by its features all the same.
        """
        # Imported here: transforms.content needs transforms.catalog, which imports this module (through the scorer).
        from transforms.content import feature_bag

        features = self.export.features
        bags: list[list[int]] = [[] for _ in items]
        if features is not None:
            known_rows = self.feature_rows
            bags = [[known_rows[t] for t in feature_bag(item, features.price_edges) if t in known_rows] for item in items]
            candidate, query = bag_means(features.candidate, bags), bag_means(features.query, bags)
        else:
            candidate = np.zeros((len(items), self.export.dim), dtype=np.float32)
            query = candidate.copy()
        known = np.fromiter((bool(bag) for bag in bags), dtype=bool, count=len(bags))
        if self.export.user_vector.kind == "mean":
            query[~known, -1] = 1.0
        return candidate, query, known

    def scan(self, vector: np.ndarray) -> np.ndarray:
        """``vector . c_j`` for every item of the export, in its row order.

        A float32 matrix-vector product widened to float64: on 50k items x 65 it
        takes 0.4-0.8 ms where the float64 product takes 6-10 ms (one BLAS thread;
        float32 halves the bytes read and needs no converted copy of the matrix),
        and float32 logits are ample for ranking.  Every engine and the offline
        measures call this same method, so the results are bit-identical across them.
        """
        return (self.export.candidate @ np.asarray(vector, dtype=np.float32)).astype(np.float64)

    def best(self, scores: np.ndarray, k: int, exclude: set[str] | frozenset[str] = frozenset()) -> Neighbours:
        """The ``k`` highest of ``scores`` (one per export row, as :meth:`scan` gives) not in ``exclude``; id tie-break."""
        ids = self.export.item_ids
        if k <= 0:
            return ids[:0], scores[:0]
        masked = scores
        rows = [self.rows[i] for i in exclude if i in self.rows]
        if rows:
            masked = scores.copy()
            masked[rows] = -np.inf
        idx = top_k(masked, ids, k)
        idx = idx[masked[idx] > -np.inf]
        return ids[idx], scores[idx]

    def top(self, vector: np.ndarray, k: int, exclude: set[str] | frozenset[str] = frozenset()) -> Neighbours:
        """The ``k`` best items by dot product with ``vector`` (exact scan; id tie-break), skipping ``exclude``."""
        return self.best(self.scan(vector), k, exclude)

    def neighbours(self, item: str) -> Neighbours | None:
        """The export's item-to-item neighbours of ``item`` (best first), if any."""
        return self.export.neighbours.get(item)
