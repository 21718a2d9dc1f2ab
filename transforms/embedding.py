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

from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np

from state.embeddings import EmbeddingExport
from transforms.similarity import top_k

if TYPE_CHECKING:  # the catalog module imports the scorer (through experiments), which imports this one
    from transforms.catalog import CatalogItem
    from transforms.config import ModelConfig

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


class EmbeddingModel:
    """An export made ready for scoring: an id -> row index and the matrices.

    ``with_item_vectors`` gives the same export with some candidate vectors
    learned in the stream (:class:`OnlineItemVectors`): rows of known items
    replaced, items the export does not know appended (sorted by id, so the
    row order is the same in every engine that sees the same vectors).  The
    Gramian of the ``fold_in`` rule stays the export's: it stands for "every
    other item is a negative", which a few moved vectors barely change, and
    keeping it makes a model a pure function of the export and the vectors.
    Query vectors (the ``mean`` rule, the sequence model) stay the export's,
    except under ``fold_in``, where they are the candidate vectors by
    definition.
    """

    def __init__(self, export: EmbeddingExport) -> None:
        self.export = export
        self.rows: dict[str, int] = {item: k for k, item in enumerate(export.item_ids.tolist())}
        self.ids: np.ndarray = export.item_ids
        self.candidate: np.ndarray = export.candidate
        # ``C^T C`` (float64) under the fold_in rule, else None.
        self.gram: np.ndarray | None = None
        if export.user_vector.kind == "fold_in":
            candidate = export.candidate.astype(np.float64)
            self.gram = candidate.T @ candidate
        # feature token -> row of ``export.features`` (empty without them).
        features = export.features
        self.feature_rows: dict[str, int] = {} if features is None else {name: k for k, name in enumerate(features.names.tolist())}
        # Items whose candidate vector was learned in the stream (see with_item_vectors).
        self.online_items = 0

    @property
    def version(self) -> str:
        return self.export.version

    @property
    def shared_towers(self) -> bool:
        """Whether query vectors are the candidate vectors (the ``fold_in`` rule)."""
        return self.export.user_vector.kind == "fold_in"

    def with_item_vectors(self, vectors: Mapping[str, np.ndarray]) -> "EmbeddingModel":
        """This export with ``vectors`` (item -> candidate vector, ``dim`` floats) in place of, or added to, its own."""
        model = object.__new__(EmbeddingModel)
        model.export = self.export
        model.gram = self.gram
        model.feature_rows = self.feature_rows
        base = self.export.item_ids
        known = sorted(item for item in vectors if item in self.rows and self.rows[item] < len(base))
        new = sorted(item for item in vectors if item not in self.rows or self.rows[item] >= len(base))
        base_rows = {item: k for k, item in enumerate(base.tolist())} if len(self.ids) != len(base) else self.rows
        candidate = np.empty((len(base) + len(new), self.export.dim), dtype=np.float32)
        candidate[: len(base)] = self.export.candidate
        for item in known:
            candidate[base_rows[item]] = vectors[item]
        for k, item in enumerate(new):
            candidate[len(base) + k] = vectors[item]
        model.candidate = candidate
        model.rows = dict(base_rows)
        model.rows.update((item, len(base) + k) for k, item in enumerate(new))
        model.ids = np.concatenate([base, np.array(new, dtype=object)]) if new else base
        model.online_items = len(known) + len(new)
        return model

    def _query(self, rows: np.ndarray) -> np.ndarray:
        return (self.candidate if self.shared_towers else self.export.query)[rows]

    def _query_rows(self) -> Mapping[str, int]:
        """Items with a query vector: every row under shared towers, else the export's own items."""
        if self.shared_towers or len(self.ids) == len(self.export.item_ids):
            return self.rows
        return {item: k for item, k in self.rows.items() if k < len(self.export.item_ids)}

    def query_vectors(self, items: Sequence[str]) -> tuple[list[int], np.ndarray]:
        """(positions in ``items`` that have a query vector, those vectors as float64 rows)."""
        index = self._query_rows()
        keep = [k for k, item in enumerate(items) if item in index]
        rows = np.fromiter((index[items[k]] for k in keep), dtype=np.intp, count=len(keep))
        return keep, self._query(rows).astype(np.float64)

    def candidate_vectors(self, items: Sequence[str]) -> np.ndarray:
        """The candidate vectors (float64 rows) of ``items``, every one of which must be known (``in rows``)."""
        return self.candidate[[self.rows[j] for j in items]].astype(np.float64)

    def user_vector(self, interests: Sequence[tuple[str, float]]) -> np.ndarray | None:
        """The user vector (by the export's rule, module doc) of the positive interests the model knows; None if none."""
        rule = self.export.user_vector
        known = self.rows if rule.kind == "fold_in" else self._query_rows()
        index = [(known[item], value) for item, value in interests if value > 0 and item in known]
        if not index:
            return None
        rows = np.fromiter((k for k, _ in index), dtype=np.intp, count=len(index))
        weights = np.fromiter((v for _, v in index), dtype=np.float64, count=len(index))
        if rule.kind == "fold_in":
            return fold_in(self.gram, self.candidate[rows], weights, rule.confidence, rule.regularization)
        return (weights @ self._query(rows).astype(np.float64)) / weights.sum()

    def sequence_vector(self, recent_items: Sequence[str]) -> np.ndarray | None:
        """The sequence model's user vector from the recent items (oldest first; unknown ones skipped).

        Only the last ``L`` known items are read (``L`` = the export's window
        length).  None when the export has no sequence model or no item is known.
        """
        weights = self.export.sequence
        if weights is None:
            return None
        known = self._query_rows()
        rows = [known[item] for item in recent_items if item in known]
        if not rows:
            return None
        rows = rows[-weights["position"].shape[0]:]
        return sequence_forward(weights, self._query(np.array(rows, dtype=np.intp)))

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
        """``vector . c_j`` for every item of the model, in its row order (:attr:`ids`).

        A float32 matrix-vector product widened to float64: on 50k items x 65 it
        takes 0.4-0.8 ms where the float64 product takes 6-10 ms (one BLAS thread;
        float32 halves the bytes read and needs no converted copy of the matrix),
        and float32 logits are ample for ranking.  Every engine and the offline
        measures call this same method, so the results are bit-identical across them.
        """
        return (self.candidate @ np.asarray(vector, dtype=np.float32)).astype(np.float64)

    def best(self, scores: np.ndarray, k: int, exclude: set[str] | frozenset[str] = frozenset()) -> Neighbours:
        """The ``k`` highest of ``scores`` (one per row, as :meth:`scan` gives) not in ``exclude``; id tie-break."""
        ids = self.ids
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


# -- item vectors learned in the stream --------------------------------------------------------
#
# Between trainings an item added to the catalog has no vector, and the export's vectors stay as
# trained.  The stream knows, for every item, which items it co-occurs with (the item model's
# rows).  An item is like the items it is touched with, so an item ``j`` takes the
# co-occurrence-weighted mean of its partners' candidate vectors, held to its prior:
#
#     c_j = (p prior_j + sum_i w_ji c_i) / (p + sum_i w_ji)
#
# with ``w_ji`` the co-occurrence weight of ``j`` with ``i`` since the export took effect (the
# ``online_vector_evidence`` heaviest partners the export knows), ``c_i`` their exported vectors.
# Under the fold-in rule query vectors are the candidate vectors, so ``j`` then scores like its
# partners for the users whose interests lie near them, on the export's own scale.  An item the
# export lacks starts from its cold prior (the feature towers' vector of its catalog record, or
# zero) with ``p`` = ``online_vector_prior``; an item the export has keeps its trained vector
# unless ``online_vector_known_prior`` > 0, which moves it the same way held by that much weight.
#
# Measured (prequential on a generated shop, export trained on its first 3 days, HR@10 of the
# embedding component alone over the next 4: without online vectors 0.3225): this rule for new
# items 0.3554; also moving known items 0.3374 (known prior 100) and 0.2949 (20).  A ridge step
# toward "the user of one partner scores j at 1" did worse: new items only 0.3322, all items
# 0.0889-0.3004 over prior strengths 10-1000 (with the negatives of every item as curvature or
# not): its target is not on the trained scores' scale.  Hence new items only, by default.


def online_item_vector(prior: np.ndarray, partners: np.ndarray, weights: np.ndarray, strength: float) -> np.ndarray:
    """``(strength * prior + sum_k weights_k partners_k) / (strength + sum weights)``, float64 (``D``).

    Summed in partner order, so the same evidence gives the same bits in every engine.
    """
    weights = np.asarray(weights, dtype=np.float64)
    total = (np.asarray(partners, dtype=np.float64) * weights[:, None]).sum(axis=0)
    return (strength * np.asarray(prior, dtype=np.float64) + total) / (strength + float(weights.sum()))


class OnlineItemVectors:
    """The candidate vectors of one export as moved by co-occurrence evidence (see the comment above).

    An item's vector is a function of its latest evidence and, for an item
    the export lacks, its latest *cold prior* alone (:meth:`vector_of`; the
    evidence is the item model's heaviest entries since the export took
    effect, the prior the vector the export's feature towers give its catalog
    record, :meth:`EmbeddingModel.cold_vectors`), so engines that see the same
    inputs hold the same vectors whatever batches they apply them in.
    :meth:`update`, :meth:`set_priors` then :meth:`model` keep the current
    vectors of an engine that moves forward in time (the reference engine);
    the job's scorer, which may score earlier windows after later ones within
    one watermark step, calls :meth:`vector_of` per version of the inputs and
    builds models with :meth:`EmbeddingModel.with_item_vectors`.
    """

    def __init__(self, base: EmbeddingModel, prior_strength: float, known_prior_strength: float = 0.0) -> None:
        self.base = base
        self.prior_strength = prior_strength
        # 0: items the export has keep their trained vectors.
        self.known_prior_strength = known_prior_strength
        self.evidence: dict[str, tuple[Sequence[str], Sequence[float]]] = {}
        self.priors: dict[str, np.ndarray] = {}
        self.vectors: dict[str, np.ndarray] = {}
        # Items whose vector changed since the last model() (applied to it then).
        self._changed: set[str] = set()
        self._model: EmbeddingModel | None = base

    @classmethod
    def of(cls, base: EmbeddingModel, config: "ModelConfig") -> "OnlineItemVectors":
        """The online vectors of ``base`` with ``config``'s prior strengths."""
        return cls(base, config.online_vector_prior, config.online_vector_known_prior)

    def knows(self, item: str) -> bool:
        """Whether the export has its own vector for ``item``."""
        row = self.base.rows.get(item)
        return row is not None and row < len(self.base.export.item_ids)

    def cold_priors(self, records: Sequence["CatalogItem"]) -> dict[str, np.ndarray]:
        """Cold priors of the catalog records of items the export lacks (those with a known feature; latest record wins)."""
        latest = {record.item_id: record for record in records if not self.knows(record.item_id)}
        if not latest:
            return {}
        items = sorted(latest)
        candidate, _, known = self.base.cold_vectors([latest[item] for item in items])
        return {item: candidate[k] for k, item in enumerate(items) if known[k]}

    def vector_of(
        self, item: str, partners: Sequence[str] = (), weights: Sequence[float] = (), cold_prior: np.ndarray | None = None
    ) -> np.ndarray | None:
        """``item``'s vector (float32) from its evidence and its prior (see the comment above).

        None when the item keeps the export's vector (it has one, and known items do not
        move or no partner is usable), or when an item the export lacks has neither a
        usable partner nor a cold prior.
        """
        known = self.knows(item)
        if known and self.known_prior_strength <= 0:
            return None
        rows = self.base.rows
        base_size = len(self.base.export.item_ids)
        keep = [(rows[i], float(w)) for i, w in zip(partners, weights) if w > 0 and i != item and i in rows and rows[i] < base_size]
        prior = self.base.export.candidate[rows[item]] if known else cold_prior
        if not keep:
            return None if known or prior is None else np.asarray(prior, dtype=np.float32)
        prior = np.zeros(self.base.export.dim) if prior is None else prior
        index = np.fromiter((k for k, _ in keep), dtype=np.intp, count=len(keep))
        w = np.fromiter((v for _, v in keep), dtype=np.float64, count=len(keep))
        strength = self.known_prior_strength if known else self.prior_strength
        return online_item_vector(prior, self.base.export.candidate[index], w, strength).astype(np.float32)

    def update(self, evidence: Mapping[str, tuple[Sequence[str], Sequence[float]]]) -> None:
        """New evidence of some items (their latest; the mapping's order plays no part)."""
        self.evidence.update(evidence)
        self._recompute(evidence)

    def set_priors(self, priors: Mapping[str, np.ndarray]) -> None:
        """New cold priors of some items the export lacks (see :meth:`cold_priors`)."""
        self.priors.update(priors)
        self._recompute(priors)

    def _recompute(self, items: Iterable[str]) -> None:
        for item in sorted(items):
            vector = self.vector_of(item, *self.evidence.get(item, ((), ())), cold_prior=self.priors.get(item))
            if vector is None:
                if self.vectors.pop(item, None) is not None:
                    self._changed.add(item)
            else:
                self.vectors[item] = vector
                self._changed.add(item)

    def model(self) -> EmbeddingModel:
        """The export with the current online vectors.

        The same rows as :meth:`EmbeddingModel.with_item_vectors` of all of
        them, kept up to date in place: a change of an item that has a row
        rewrites that row; only an item gaining or losing a row of its own
        (one the export lacks) rebuilds the model.  So a model handed out
        earlier changes with it: score with it before the next update.
        """
        changed, self._changed = self._changed, set()
        model = self._model
        if model is None or model is self.base:
            if self.vectors:
                self._model = self.base.with_item_vectors(self.vectors)
            return self._model if self._model is not None else self.base
        if any(not self.knows(item) and ((item in self.vectors) != (item in model.rows)) for item in changed):
            self._model = self.base.with_item_vectors(self.vectors) if self.vectors else self.base
            return self._model
        for item in changed:
            row = model.rows[item]
            vector = self.vectors.get(item)
            model.candidate[row] = vector if vector is not None else self.base.export.candidate[row]
        model.online_items = len(self.vectors)
        return model
