"""The two trainable models and their ranking losses (PyTorch; nothing else in flowrec imports this).

**Item towers (FISM / YouTube-DNN shape).**  Item ``i`` has a query vector
``q_i`` (as part of a user's history) and a candidate vector ``c_i`` (as a
recommendation), each the sum of an id embedding (items with training data
only) and the mean of its side-feature embeddings (:meth:`ItemTowers.feature_vectors`
exports the latter, so serving places new items the same way).  ``q_i`` ends in a
constant 1 and ``c_i`` in the item's bias ``b_i``, so for the served user
vector ``u = sum v_i q_i / sum v_i`` (whose last entry is then 1),
``u . c_j = u' . c'_j + b_j``: a popularity bias inside a plain dot product.

**Fold-in (the default rule).**  With ``shared`` towers an item has one
vector ``c_i`` (its query vector is the same), and the user vector is the
implicit-ALS fold-in of the user's interests on the candidate vectors
(:func:`fold_in_user_vectors`, the batched twin of
:func:`transforms.embedding.fold_in`), solved inside the training graph so
the softmax trains the vectors the served solve will read.  Only the
``holdout`` objective is offered (one solve per user and step).

**Sequence encoder (SASRec-style).**  The recent items (oldest first, at most
``length``) enter as their frozen query vectors through a linear map, plus a
learned embedding of recency (position 0 = most recent); pre-norm transformer
blocks (multi-head self-attention over the valid items, then a ReLU
feed-forward, each residual) follow; the most recent item's output, after a
final layer norm and a linear map, is the user vector (with the constant 1
appended), scored against the same candidate vectors.  Its NumPy twin is
:func:`transforms.embedding.sequence_forward`; :func:`sequence_arrays`
exports the weights in that function's layout.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from learn.data import ItemFeatures

INIT_STD = 0.05


class ItemTowers(nn.Module):
    """Query and candidate vectors of every item (see the module doc)."""

    def __init__(self, n_items: int, dim: int, features: ItemFeatures, has_id: np.ndarray, use_features: bool = True, shared: bool = False) -> None:
        """``shared``: no query tower; the query vectors are the candidate vectors (the fold_in rule reads only those)."""
        super().__init__()
        self.dim = dim
        self.shared = shared
        # (Creation and initialisation order kept as before the shared form existed: same seed, same vectors.)
        if not shared:
            self.query_id = nn.Embedding(n_items, dim)
        self.candidate_id = nn.Embedding(n_items, dim + 1)
        if not shared:
            nn.init.normal_(self.query_id.weight, std=INIT_STD)
        nn.init.normal_(self.candidate_id.weight, std=INIT_STD)
        if not shared:  # the last entry is the item bias (module doc): it starts at 0
            with torch.no_grad():
                self.candidate_id.weight[:, -1] = 0.0
        self.register_buffer("has_id", torch.as_tensor(has_id, dtype=torch.float32))
        self.use_features = bool(use_features and len(features.names))
        if self.use_features:
            if not shared:
                self.query_features = nn.EmbeddingBag(len(features.names), dim, mode="mean")
            self.candidate_features = nn.EmbeddingBag(len(features.names), dim + 1, mode="mean")
            if not shared:
                nn.init.normal_(self.query_features.weight, std=INIT_STD)
            nn.init.normal_(self.candidate_features.weight, std=INIT_STD)
            if not shared:
                with torch.no_grad():
                    self.candidate_features.weight[:, -1] = 0.0
            self.register_buffer("feature_indices", torch.as_tensor(features.indices, dtype=torch.long))
            self.register_buffer("feature_offsets", torch.as_tensor(features.indptr[:-1], dtype=torch.long))

    def forward(self, id_keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Q, C)``, both ``(items, dim + 1)``; ``id_keep`` (0/1 per item) drops id embeddings (training)."""
        keep = self.has_id if id_keep is None else self.has_id * id_keep
        candidate = self.candidate_id.weight * keep[:, None]
        if self.use_features:
            # An item without features has an empty bag, which EmbeddingBag maps to zeros.
            candidate = candidate + self.candidate_features(self.feature_indices, self.feature_offsets)
        if self.shared:
            return candidate, candidate
        query = self.query_id.weight * keep[:, None]
        if self.use_features:
            query = query + self.query_features(self.feature_indices, self.feature_offsets)
        ones = torch.ones(query.shape[0], 1, dtype=query.dtype)
        return torch.cat([query, ones], dim=1), candidate

    def feature_vectors(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Per feature, its ``(query, candidate)`` rows (float32, ``(features, dim + 1)``); None without features.

        An item without an id embedding gets the mean of its features' rows,
        as :meth:`forward` computes it: every query row carries the constant 1
        (so their mean does), and with ``shared`` towers the query rows are the
        candidate rows.  This is the export's ``features.parquet``
        (:mod:`state.embeddings`), read by
        :meth:`transforms.embedding.EmbeddingModel.cold_vectors`.
        """
        if not self.use_features:
            return None
        with torch.no_grad():
            candidate = self.candidate_features.weight.detach().cpu().numpy().astype(np.float32)
            if self.shared:
                return candidate.copy(), candidate
            query = self.query_features.weight.detach().cpu().numpy().astype(np.float32)
        return np.hstack([query, np.ones((query.shape[0], 1), dtype=np.float32)]), candidate


def user_vectors(query: torch.Tensor, owner: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor, n_users: int) -> torch.Tensor:
    """``u_b = sum_i v_i q_i / sum_i v_i`` over the entries with ``owner == b`` (the served form)."""
    sums = torch.zeros(n_users, query.shape[1], dtype=query.dtype).index_add_(0, owner, weights[:, None] * query[rows])
    totals = torch.zeros(n_users, dtype=query.dtype).index_add_(0, owner, weights)
    return sums / totals[:, None]


def fold_in_user_vectors(
    candidate: torch.Tensor, owner: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor, n_users: int, confidence: float, regularization: float
) -> torch.Tensor:
    """The ``fold_in`` user vector (see :func:`transforms.embedding.fold_in`) of each user ``b`` from the entries with ``owner == b``.

    Differentiable in ``candidate``: the trainer optimises the served solve.
    The per-user systems are built from a padded ``(users, longest, D)``
    block, so memory grows with the longest interest list, not with their
    total times ``D``.
    """
    dim = candidate.shape[1]
    counts = torch.bincount(owner, minlength=n_users)
    longest = int(counts.max()) if len(owner) else 0
    order = torch.argsort(owner, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(owner)) - starts[owner[order]]
    where = (owner[order], slot)
    shape = (n_users, max(longest, 1))
    padded = torch.zeros(*shape, dim, dtype=candidate.dtype).index_put(where, candidate[rows[order]])
    extra = torch.zeros(shape, dtype=candidate.dtype).index_put(where, confidence * weights[order])  # a v_i
    positive = torch.zeros(shape, dtype=candidate.dtype).index_put(where, 1.0 + confidence * weights[order])  # 1 + a v_i; 0 = padding
    system = candidate.T @ candidate + (padded * extra[..., None]).transpose(1, 2) @ padded + regularization * torch.eye(dim, dtype=candidate.dtype)
    rhs = (padded * positive[..., None]).sum(dim=1)
    return torch.linalg.solve(system, rhs)


def ranking_loss(
    kind: str,
    users: torch.Tensor,
    candidate: torch.Tensor,
    target_owner: torch.Tensor,
    target_rows: torch.Tensor,
    masked_owner: torch.Tensor,
    masked_rows: torch.Tensor,
    negatives: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Mean loss over the targets ``(user target_owner[t], item target_rows[t])``.

    * ``softmax``: ``-log softmax(u . C)[target]`` over every item, with the
      user's input items (``masked_*``) removed from the normaliser;
    * ``sampled_softmax``: the same over the target and ``negatives`` shared
      uniform items (a uniform proposal needs no log-Q correction; a sampled
      item equal to the target is removed);
    * ``bpr``: ``-log sigmoid(u . c_target - u . c_neg)`` with one uniform negative per target.
    """
    n_items = candidate.shape[0]
    if kind == "softmax":
        logits = users @ candidate.T
        mask = torch.zeros_like(logits, dtype=torch.bool)
        mask[masked_owner, masked_rows] = True
        logits = logits.masked_fill(mask, float("-inf"))
        return -F.log_softmax(logits, dim=1)[target_owner, target_rows].mean()
    target_users = users[target_owner]
    positive = (target_users * candidate[target_rows]).sum(dim=1)
    if kind == "sampled_softmax":
        sampled = torch.randint(0, n_items, (negatives,), generator=generator)
        negative = (users @ candidate[sampled].T)[target_owner]
        negative = negative.masked_fill(sampled[None, :] == target_rows[:, None], float("-inf"))
        logits = torch.cat([positive[:, None], negative], dim=1)
        return -F.log_softmax(logits, dim=1)[:, 0].mean()
    if kind == "bpr":
        sampled = torch.randint(0, n_items, (len(target_rows),), generator=generator)
        negative = (target_users * candidate[sampled]).sum(dim=1)
        return -F.logsigmoid(positive - negative).mean()
    raise ValueError(f"unknown loss {kind!r}")


class _Block(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden)
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attention_out = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.ff1 = nn.Linear(hidden, hidden)
        self.ff2 = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        per_head = hidden // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, per_head).transpose(1, 2)

        a = self.norm1(x)
        scores = split(self.query(a)) @ split(self.key(a)).transpose(-1, -2) / math.sqrt(per_head)
        scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
        context = (self.dropout(torch.softmax(scores, dim=-1)) @ split(self.value(a))).transpose(1, 2).reshape(batch, length, hidden)
        x = x + self.dropout(self.attention_out(context))
        return x + self.dropout(self.ff2(torch.relu(self.ff1(self.norm2(x)))))


class SequenceEncoder(nn.Module):
    """Recent items' query vectors ``(batch, length, dim + 1)`` (left-padded) -> user vectors ``(batch, dim + 1)``."""

    def __init__(self, vector_dim: int, hidden: int, length: int, blocks: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.length = length
        self.heads = heads
        self.input = nn.Linear(vector_dim, hidden)
        self.position = nn.Parameter(torch.randn(length, hidden) * 0.02)
        self.blocks = nn.ModuleList(_Block(hidden, heads, dropout) for _ in range(blocks))
        self.final_norm = nn.LayerNorm(hidden)
        self.output = nn.Linear(hidden, vector_dim - 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, items: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``valid[b, s]``: slot ``s`` holds an item; the last slot is the most recent item and must be valid."""
        length = items.shape[1]
        # Slot s of a left-padded window of `length` is (length - 1 - s) items before the most recent.
        recency = self.position[:length].flip(0)
        x = self.dropout(self.input(items) + recency) * valid[..., None]
        for block in self.blocks:
            x = block(x, valid)
        out = self.output(self.final_norm(x[:, -1]))
        return torch.cat([out, torch.ones(out.shape[0], 1, dtype=out.dtype)], dim=1)


def sequence_arrays(encoder: SequenceEncoder) -> dict[str, np.ndarray]:
    """The encoder's weights in the layout of :func:`transforms.embedding.sequence_forward` (``x @ W`` matrices)."""
    out: dict[str, np.ndarray] = {"heads": np.array([encoder.heads], dtype=np.float32)}
    for name, tensor in encoder.state_dict().items():
        array = tensor.detach().cpu().numpy().astype(np.float32)
        if name.endswith(".weight") and array.ndim == 2:
            array = array.T  # torch Linear stores (out, in)
        out[name] = np.ascontiguousarray(array)
    return out
