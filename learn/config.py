"""The trainer's one frozen configuration (hyper-parameters of both models, validation, export)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from transforms.config import reject_unknown_fields

LOSSES = ("auto", "softmax", "sampled_softmax", "bpr")
USER_VECTORS = ("mean", "fold_in")
OBJECTIVES = ("holdout", "leave_one_out")


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of ``flowrec train``; defaults are the values tuned on ML-100K (msr, validation part).

    The embedding model is item towers read by a user-vector rule (see
    :mod:`learn.models`): ``dim`` is the size of the learned space; exported
    vectors have ``dim + 1`` entries (under the mean rule the last carries the
    item bias, see :mod:`transforms.embedding`).
    """

    seed: int = 42
    dim: int = 64
    epochs: int = 100
    batch_users: int = 128
    learning_rate: float = 5e-3
    weight_decay: float = 0.0
    # Share of a user's interests used as prediction targets in each step (the
    # rest build the user vector): history dropout, as in Mult-VAE / FISM.
    target_fraction: float = 0.5
    # "holdout": the user vector is built from the other (1 - target_fraction)
    # of the interests; "leave_one_out": each target's user vector is built from
    # all the user's other interests (FISM's rule; mean user vectors only).
    # Either way the user's input items are removed from the softmax, so an
    # item never explains itself.
    objective: str = "holdout"
    # How a user's vector is built from their interests, in training and in
    # serving (see transforms.embedding): the implicit-ALS "fold_in" on the
    # candidate vectors, or the "mean" of query vectors (FISM).  On ML-100K
    # (msr, validation part) fold_in reached nDCG@10 0.184 against 0.178 for
    # the mean (whose best objective is leave_one_out), and trains ~4x faster.
    user_vector: str = "fold_in"
    # Tuned on the same validation part over regularization 0.1-1000,
    # confidence 0.3-3 (four seeds for the final pair).
    fold_in_confidence: float = 1.0
    fold_in_regularization: float = 50.0
    # Probability that an item's id embedding is dropped in a step, so the
    # side-feature encoder alone learns to place items (new items have only it).
    id_dropout: float = 0.1
    # "auto": full softmax up to ``full_softmax_max_items`` items, sampled softmax above.
    loss: str = "auto"
    full_softmax_max_items: int = 20_000
    negatives: int = 1000  # sampled softmax: shared uniform negatives per step; bpr: 1 per target
    # Side features: tokens (title words, category path, brand, tags) seen in at
    # least this many items; price buckets per top category.
    min_feature_items: int = 2
    price_buckets: int = 5
    use_features: bool = True
    # Early stopping on validation nDCG@k.
    patience: int = 10
    validation_fraction: float = 0.1
    k: int = 10
    # After early stopping, retrain on all data (validation part included) for the best epoch count.
    refit_full: bool = True
    # Sequence model (SASRec-style self-attention over the recent items).
    sequence: bool = True
    sequence_length: int = 0  # 0: the model config's history_length (what the job keeps per user)
    sequence_hidden: int = 64
    sequence_blocks: int = 2
    sequence_heads: int = 2
    sequence_dropout: float = 0.2
    sequence_epochs: int = 20
    # Examples drawn (without replacement) per sequence epoch; 0 = all.  Bounds
    # an epoch's time on long logs (ML-100K has 66k examples).
    sequence_examples_per_epoch: int = 20_000
    sequence_batch: int = 512
    sequence_learning_rate: float = 1e-3
    # Item-to-item neighbours from the ANN index (faiss HNSW, cosine over candidate vectors).
    neighbours: int = 20
    ann_m: int = 32
    ann_ef_construction: int = 200
    ann_ef_search: int = 128
    threads: int = 1

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.user_vector not in USER_VECTORS:
            raise ValueError(f"user_vector must be one of {USER_VECTORS}, got {self.user_vector!r}")
        if self.user_vector == "fold_in" and self.objective != "holdout":
            raise ValueError("user_vector 'fold_in' trains with objective 'holdout' (a fold-in per left-out item would be one solve per target)")
        positive = (
            "dim", "epochs", "batch_users", "learning_rate", "negatives", "price_buckets", "patience", "k",
            "sequence_hidden", "sequence_blocks", "sequence_heads", "sequence_epochs", "sequence_batch",
            "sequence_learning_rate", "neighbours", "ann_m", "ann_ef_construction", "ann_ef_search", "threads",
            "min_feature_items", "full_softmax_max_items", "fold_in_confidence", "fold_in_regularization",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("target_fraction", "validation_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be strictly between 0 and 1, got {getattr(self, name)}")
        for name in ("id_dropout", "sequence_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.sequence_length < 0 or self.sequence_examples_per_epoch < 0:
            raise ValueError("sequence_length and sequence_examples_per_epoch must be >= 0")
        if self.sequence_hidden % self.sequence_heads:
            raise ValueError("sequence_hidden must be a multiple of sequence_heads")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        reject_unknown_fields(cls, data, "train settings")
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def resolved_loss(self, items: int) -> str:
        """The loss actually used for a catalog of ``items`` items."""
        if self.loss != "auto":
            return self.loss
        return "softmax" if items <= self.full_softmax_max_items else "sampled_softmax"
