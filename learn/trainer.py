"""Seeded training loops with per-epoch validation, checkpoints and early stopping.

Both models share :func:`train_loop`: an epoch runs, the validation metrics
(nDCG@k, HR@k on held-out items, ranked as the job ranks) are logged, the
state is checkpointed (``<stage>.pt``: model, optimiser, epoch, the best state
so far and the log), and training stops after ``patience`` epochs without a
better validation nDCG; the best state is restored.  Randomness per epoch is
derived from ``(seed, epoch)``, so a run resumed from a checkpoint continues
exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from tqdm import tqdm

from learn.config import TrainConfig
from learn.data import PAD, TrainingData, UserInterests, pad_windows
from learn.evaluation import quality, top_lists
from learn.models import ItemTowers, SequenceEncoder, fold_in_user_vectors, ranking_loss, user_vectors
from transforms.embedding import fold_in

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 1-based
    loss: float
    ndcg: float | None
    hr: float | None
    seconds: float


@dataclass(frozen=True)
class Validation:
    """Held-out relevant items per user and the item rows each user already has (excluded from lists)."""

    relevant: Mapping[str, set[str]]
    exclude_rows: Mapping[str, np.ndarray]

    @property
    def users(self) -> list[str]:
        return sorted(self.relevant)


@dataclass(frozen=True)
class LoopResult:
    records: list[EpochRecord]
    best_epoch: int  # epochs of the kept state (all of them without validation)

    @property
    def best(self) -> EpochRecord | None:
        return next((r for r in self.records if r.epoch == self.best_epoch), None)


def fingerprint(*parts: object) -> str:
    """A short hash naming what a checkpoint was trained on (config, data sizes...)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def train_loop(
    name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    run_epoch: Callable[[int], float],
    validate: Callable[[], dict[str, float]] | None,
    patience: int,
    checkpoint: Path | None = None,
    resume_key: str | None = None,
    progress: bool = False,
) -> LoopResult:
    """Run up to ``epochs`` epochs of ``run_epoch(epoch) -> mean loss``; see the module doc.

    With ``checkpoint`` and ``resume_key``, an existing checkpoint written
    under the same key is resumed (a different key starts afresh).
    """
    records: list[EpochRecord] = []
    best_ndcg, best_epoch, best_state = -1.0, 0, None
    start = 0
    if checkpoint is not None and resume_key is not None and checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=True)
        if saved.get("key") == resume_key:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            records = [EpochRecord(**r) for r in saved["records"]]
            start, best_ndcg, best_epoch, best_state = saved["epoch"], saved["best_ndcg"], saved["best_epoch"], saved["best_model"]
            log.info("%s: resumed from %s after epoch %d", name, checkpoint, start)
        else:
            log.info("%s: %s belongs to another run; starting afresh", name, checkpoint)
    bar = tqdm(range(start, epochs), desc=f"train {name}", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        if validate is not None and best_epoch and epoch - best_epoch >= patience:
            break
        began = time.perf_counter()
        model.train()
        loss = run_epoch(epoch)
        model.eval()
        metrics = validate() if validate is not None else None
        record = EpochRecord(
            epoch=epoch + 1,
            loss=float(loss),
            ndcg=None if metrics is None else float(metrics["ndcg"]),
            hr=None if metrics is None else float(metrics["hr"]),
            seconds=time.perf_counter() - began,
        )
        records.append(record)
        if metrics is None or record.ndcg > best_ndcg:
            best_ndcg = -1.0 if metrics is None else record.ndcg
            best_epoch, best_state = record.epoch, copy.deepcopy(model.state_dict())
        log.info(
            "%s epoch %d: loss %.4f%s (%.1f s)", name, record.epoch, record.loss,
            "" if metrics is None else f", val nDCG {record.ndcg:.4f} HR {record.hr:.4f}", record.seconds,
        )
        bar.set_postfix(loss=f"{record.loss:.4f}", ndcg="-" if record.ndcg is None else f"{record.ndcg:.4f}")
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            torch.save(
                {
                    "key": resume_key or "", "epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "best_ndcg": best_ndcg, "best_epoch": best_epoch, "best_model": best_state, "records": [asdict(r) for r in records],
                },
                checkpoint,
            )
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return LoopResult(records=records, best_epoch=best_epoch)


def _epoch_random(seed: int, epoch: int, stage: int) -> tuple[np.random.Generator, torch.Generator]:
    """Generators for one epoch of one stage, derived from the seed alone (so resuming is exact)."""
    torch.manual_seed(hash((seed, epoch, stage)) & 0x7FFF_FFFF)  # dropout draws
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 101 + stage)
    return np.random.default_rng([seed, epoch, stage]), generator


def mean_query_vectors(query: np.ndarray, interests: UserInterests) -> np.ndarray:
    """``sum v_i q_i / sum v_i`` for every user of ``interests`` (rows in ``interests.users`` order)."""
    weighted = query[interests.rows].astype(np.float64) * interests.weights[:, None]
    starts = interests.indptr[:-1]
    sums = np.add.reduceat(weighted, starts, axis=0) if len(weighted) else np.zeros((0, query.shape[1]))
    totals = np.add.reduceat(interests.weights, starts) if len(weighted) else np.zeros(0)
    return sums / totals[:, None]


def fold_in_vectors(candidate: np.ndarray, interests: UserInterests, picked: np.ndarray, confidence: float, regularization: float) -> np.ndarray:
    """The served ``fold_in`` vector (:func:`transforms.embedding.fold_in`) of each user ``picked`` (indices into ``interests.users``)."""
    gram = candidate.astype(np.float64).T @ candidate.astype(np.float64)
    out = np.zeros((len(picked), candidate.shape[1]))
    for n, k in enumerate(picked.tolist()):
        rows, weights = interests.of(k)
        out[n] = fold_in(gram, candidate[rows], weights, confidence, regularization)
    return out


def _validate_vectors(users: list[str], vectors: np.ndarray, candidate: np.ndarray, data: TrainingData, validation: Validation, k: int) -> dict[str, float]:
    lists = top_lists(users, vectors, candidate, data.item_ids, validation.exclude_rows, k)
    return quality(lists, validation.relevant, k)


def _interest_batch(interests: UserInterests, users: np.ndarray, rng: np.random.Generator, target_fraction: float):
    """Entries of ``users``' interests split into inputs and targets (each user keeps >= 1 of both)."""
    owners, rows, weights, targets = [], [], [], []
    for b, k in enumerate(users.tolist()):
        item_rows, item_weights = interests.of(k)
        draw = rng.random(len(item_rows))
        is_target = draw < target_fraction
        if not is_target.any():
            is_target[np.argmin(draw)] = True
        if is_target.all():
            is_target[np.argmax(draw)] = False
        owners.append(np.full(len(item_rows), b))
        rows.append(item_rows)
        weights.append(item_weights)
        targets.append(is_target)
    return np.concatenate(owners), np.concatenate(rows), np.concatenate(weights), np.concatenate(targets)


def leave_one_out_pairs(owner: np.ndarray, is_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each target entry ``p`` (in order), the entries of the same user except itself: ``(pair, entry)`` arrays.

    ``owner`` must be grouped (each user's entries contiguous), as
    :func:`_interest_batch` builds it.
    """
    targets = np.flatnonzero(is_target)
    starts = np.r_[0, np.flatnonzero(np.diff(owner)) + 1]
    sizes = np.diff(np.r_[starts, len(owner)])
    group = np.cumsum(np.r_[0, np.diff(owner) != 0])  # group index of every entry
    counts = sizes[group[targets]]
    pair = np.repeat(np.arange(len(targets)), counts)
    offset = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    entry = starts[group[targets]][pair] + offset
    keep = entry != targets[pair]
    return pair[keep], entry[keep]


def _leave_one_out(
    query: torch.Tensor, owner: np.ndarray, rows: np.ndarray, weights: np.ndarray, is_target: np.ndarray, n_items: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per target entry, its user's vector from every other interest, and the (pair, row) entries to mask.

    A sparse (targets x items) weight matrix times the query matrix, rather
    than ``S_u - v_t q_t``: with decayed weights the target can outweigh the
    rest by many orders of magnitude, and the subtraction would leave only
    rounding error.
    """
    pair, entry = leave_one_out_pairs(owner, is_target)
    n_pairs = int(is_target.sum())
    index = torch.as_tensor(np.vstack([pair, rows[entry]]))
    values = torch.as_tensor(weights[entry], dtype=query.dtype)
    mixing = torch.sparse_coo_tensor(index, values, (n_pairs, n_items), check_invariants=False).coalesce()
    totals = torch.zeros(n_pairs, dtype=query.dtype).index_add_(0, index[0], values)
    users = torch.sparse.mm(mixing, query) / totals.clamp_min(torch.finfo(query.dtype).tiny)[:, None]
    return users, index[0], index[1]


def fit_towers(
    data: TrainingData,
    config: TrainConfig,
    epochs: int,
    validation: Validation | None = None,
    checkpoint: Path | None = None,
    resume_key: str | None = None,
    progress: bool = False,
) -> tuple[ItemTowers, LoopResult]:
    """Train the item towers on ``data`` (see :mod:`learn.models`); early-stopped on ``validation`` when given."""
    torch.manual_seed(config.seed)
    folded = config.user_vector == "fold_in"
    towers = ItemTowers(data.n_items, config.dim, data.features, data.has_id, config.use_features, shared=folded)
    optimizer = torch.optim.AdamW(towers.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    interests = data.interests
    trainable = np.flatnonzero(np.diff(interests.indptr) >= 2)  # one input and one target at least
    loss_kind = config.resolved_loss(data.n_items)
    log.info("embedding: %d users, %d items (%d with ids, %d features), loss %s", len(trainable), data.n_items, int(data.has_id.sum()), len(data.features.names), loss_kind)

    def run_epoch(epoch: int) -> float:
        rng, generator = _epoch_random(config.seed, epoch, 1)
        order = rng.permutation(trainable)
        total, count = 0.0, 0
        for start in range(0, len(order), config.batch_users):
            batch = order[start:start + config.batch_users]
            owner, rows, weights, is_target = _interest_batch(interests, batch, rng, config.target_fraction)
            keep = torch.as_tensor(rng.random(data.n_items) >= config.id_dropout, dtype=torch.float32) if config.id_dropout else None
            query, candidate = towers(keep)
            owner_t, rows_t = torch.as_tensor(owner), torch.as_tensor(rows)
            inputs, targets = torch.as_tensor(~is_target), torch.as_tensor(is_target)
            weights_t = torch.as_tensor(weights, dtype=torch.float32)
            if config.objective == "leave_one_out":
                users, masked_pairs, masked_rows = _leave_one_out(query, owner, rows, weights, is_target, data.n_items)
                pairs = torch.arange(len(users))
                loss = ranking_loss(loss_kind, users, candidate, pairs, rows_t[targets], masked_pairs, masked_rows, config.negatives, generator)
            else:
                if folded:
                    # The fold-in scores regress towards 0/1, so the softmax sees flat logits; a learned
                    # temperature sharpening them was measured to cost ~0.04 nDCG@10 on ML-100K (msr).
                    users = fold_in_user_vectors(
                        candidate, owner_t[inputs], rows_t[inputs], weights_t[inputs], len(batch), config.fold_in_confidence, config.fold_in_regularization
                    )
                else:
                    users = user_vectors(query, owner_t[inputs], rows_t[inputs], weights_t[inputs], len(batch))
                loss = ranking_loss(loss_kind, users, candidate, owner_t[targets], rows_t[targets], owner_t[inputs], rows_t[inputs], config.negatives, generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * int(targets.sum())
            count += int(targets.sum())
        return total / max(count, 1)

    validate = None
    if validation is not None:
        user_index = {user: k for k, user in enumerate(interests.users.tolist())}
        users = [u for u in validation.users if u in user_index]
        picked = np.array([user_index[u] for u in users], dtype=np.int64)

        def validate() -> dict[str, float]:
            query, candidate = vectors(towers)
            if folded:
                served = fold_in_vectors(candidate, interests, picked, config.fold_in_confidence, config.fold_in_regularization)
            else:
                served = mean_query_vectors(query, interests)[picked]
            return _validate_vectors(users, served, candidate, data, validation, config.k)

    result = train_loop("embedding", towers, optimizer, epochs, run_epoch, validate, config.patience, checkpoint, resume_key, progress)
    return towers, result


def vectors(towers: ItemTowers) -> tuple[np.ndarray, np.ndarray]:
    """The towers' query and candidate matrices (float32 NumPy, no dropout)."""
    with torch.no_grad():
        query, candidate = towers(None)
    return query.numpy().astype(np.float32), candidate.numpy().astype(np.float32)


def encode_windows(encoder: SequenceEncoder, query: torch.Tensor, windows: np.ndarray) -> torch.Tensor:
    """User vectors of left-padded windows of item rows."""
    index = torch.as_tensor(windows)
    valid = index != PAD
    return encoder(query[index.clamp(min=0)], valid)


def fit_encoder(
    data: TrainingData,
    query: np.ndarray,
    candidate: np.ndarray,
    config: TrainConfig,
    epochs: int,
    validation: Validation | None = None,
    checkpoint: Path | None = None,
    resume_key: str | None = None,
    progress: bool = False,
) -> tuple[SequenceEncoder, LoopResult]:
    """Train the sequence encoder on ``data.examples`` against the frozen item vectors."""
    torch.manual_seed(config.seed + 1)
    length = data.sequence_length
    encoder = SequenceEncoder(query.shape[1], config.sequence_hidden, length, config.sequence_blocks, config.sequence_heads, config.sequence_dropout)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=config.sequence_learning_rate, weight_decay=config.weight_decay)
    query_t, candidate_t = torch.as_tensor(query), torch.as_tensor(candidate)
    examples = data.examples
    loss_kind = config.resolved_loss(data.n_items)
    log.info("sequence: %d examples, window %d, loss %s", len(examples), length, loss_kind)

    def run_epoch(epoch: int) -> float:
        rng, generator = _epoch_random(config.seed, epoch, 2)
        order = rng.permutation(len(examples))
        if config.sequence_examples_per_epoch:
            order = order[:config.sequence_examples_per_epoch]
        total = 0.0
        for start in range(0, len(order), config.sequence_batch):
            batch = order[start:start + config.sequence_batch]
            windows = examples.inputs[batch]
            users = encode_windows(encoder, query_t, windows)
            owner, slot = np.nonzero(windows != PAD)
            loss = ranking_loss(
                loss_kind, users, candidate_t, torch.arange(len(batch)), torch.as_tensor(examples.targets[batch]),
                torch.as_tensor(owner), torch.as_tensor(windows[owner, slot]), config.negatives, generator,
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        return total / max(len(order), 1)

    validate = None
    if validation is not None:
        users = [u for u in validation.users if u in data.recent]
        windows = pad_windows([data.recent[u] for u in users], length)

        def validate() -> dict[str, float]:
            with torch.no_grad():
                found = encode_windows(encoder, query_t, windows).numpy() if users else np.zeros((0, query.shape[1]))
            return _validate_vectors(users, found, candidate, data, validation, config.k)

    result = train_loop("sequence", encoder, optimizer, epochs, run_epoch, validate, config.patience, checkpoint, resume_key, progress)
    return encoder, result
