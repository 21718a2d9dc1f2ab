"""Batch baselines flowrec is measured against, behind one small interface.

Every baseline is fitted on an :class:`Interactions` table (user, item,
weight, ts) and answers ``recommend(user_ids, n, exclude_seen=True,
exclude=None) -> {user: [item, ...]}`` with the best item first.  Users the
model never saw get an empty list, except from :class:`Popularity`, which
needs no user history.

* :class:`Popularity` - items by number of distinct training users.
* :class:`SAR` - Simple Algorithm for Recommendation from its published
  formulas: item co-occurrence ``C = Bᵀ B`` of the binary user-item matrix,
  Jaccard similarity ``S_ij = C_ij / (C_ii + C_jj - C_ij)``, time-decayed
  user affinity ``a_ui = Σ_events w_e · 2^(-(t0 - t_e) / T)`` with half-life
  ``T`` (30 days) relative to ``t0`` = the latest training timestamp, and
  scores ``A · S``.
* :class:`EASE` - Steck's closed-form shallow autoencoder:
  ``P = (XᵀX + λI)⁻¹``, ``B_ij = -P_ij / P_jj`` (``B_jj = 0``), scores ``X B``.
* :class:`ALS` and :class:`BPR` - matrix factorisation from the ``implicit``
  library (CPU, seeded).

Scores are computed for blocks of users as dense rows; seen items and the
caller's exclusions get ``-inf`` and never appear in a list.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
from scipy import sparse

from transforms.config import ModelConfig, event_weights
from transforms.events import EventBatch, FORGET

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000
# Users scored per dense block: bounds memory at SCORE_BLOCK * n_items floats.
SCORE_BLOCK = 512


@dataclass(frozen=True)
class Interactions:
    """Training rows for batch models: one row per event, weights already applied.

    ``weight`` is in interest points (see :func:`transforms.config.event_weights`),
    ``ts`` in epoch milliseconds.
    """

    user: np.ndarray  # object[str]
    item: np.ndarray  # object[str]
    weight: np.ndarray  # float64
    ts: np.ndarray  # int64, epoch ms

    def __post_init__(self) -> None:
        n = len(self.user)
        for name in ("item", "weight", "ts"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"column {name} has {len(getattr(self, name))} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.user)

    @classmethod
    def from_events(cls, events: EventBatch, config: ModelConfig | None = None) -> "Interactions":
        """Weighted rows from an event batch; ``forget`` events (no item) are dropped."""
        config = config or ModelConfig()
        keep = events.etype != FORGET
        weights = event_weights(events.etype[keep], events.rating[keep], config)
        return cls(
            user=events.user[keep],
            item=events.item[keep],
            weight=np.asarray(weights, dtype=np.float64),
            ts=events.ts[keep].astype(np.int64),
        )

    def take(self, index: np.ndarray | slice) -> "Interactions":
        return Interactions(self.user[index], self.item[index], self.weight[index], self.ts[index])


@dataclass(frozen=True)
class UserItemMatrix:
    """The training data as sparse user x item matrices with id <-> row/column maps.

    ``weights`` holds the summed event weight of each user-item pair and
    ``present`` is 1 where that sum is positive (the pairs that count as an
    interaction); pairs whose weights cancel out or are negative are absent.
    """

    users: np.ndarray  # object[str], row -> user id
    items: np.ndarray  # object[str], column -> item id
    user_row: dict[str, int]
    item_column: dict[str, int]
    weights: sparse.csr_matrix
    present: sparse.csr_matrix

    @classmethod
    def build(cls, data: Interactions) -> "UserItemMatrix":
        users, user_codes = np.unique(data.user.astype(str), return_inverse=True)
        items, item_codes = np.unique(data.item.astype(str), return_inverse=True)
        summed = sparse.coo_matrix(
            (data.weight.astype(np.float64), (user_codes, item_codes)), shape=(len(users), len(items))
        ).tocsr()
        summed.sum_duplicates()
        positive = summed.multiply(summed > 0).tocsr()
        positive.eliminate_zeros()
        present = positive.copy()
        present.data = np.ones_like(present.data)
        return cls(
            users=users.astype(object),
            items=items.astype(object),
            user_row={u: i for i, u in enumerate(users.tolist())},
            item_column={it: j for j, it in enumerate(items.tolist())},
            weights=positive,
            present=present,
        )

    def seen_columns(self, row: int) -> np.ndarray:
        start, end = self.present.indptr[row], self.present.indptr[row + 1]
        return self.present.indices[start:end]


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Column indices of the ``n`` highest finite scores, best first; ties by lower column.

    ``-inf`` marks excluded columns, which are never returned.
    """
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    finite = np.flatnonzero(np.isfinite(scores))
    if len(finite) > n:
        # argpartition alone would break ties at the boundary arbitrarily; a
        # lexsort on (column, -score) over the candidates >= the n-th score is exact.
        threshold = np.partition(scores[finite], len(finite) - n)[len(finite) - n]
        finite = finite[scores[finite] >= threshold]
    order = np.lexsort((finite, -scores[finite]))
    return finite[order[:n]]


class MatrixRecommender:
    """Common fit/recommend plumbing; subclasses implement :meth:`_fit` and :meth:`_score_rows`."""

    name = "matrix"

    def __init__(self) -> None:
        self.matrix: UserItemMatrix | None = None

    def fit(self, train: Interactions) -> "MatrixRecommender":
        if len(train) == 0:
            raise ValueError(f"{self.name}: cannot fit on an empty training set")
        self.matrix = UserItemMatrix.build(train)
        if self.matrix.present.nnz == 0:
            raise ValueError(f"{self.name}: no user-item pair with a positive weight to learn from")
        self._fit(train, self.matrix)
        return self

    def _fit(self, train: Interactions, matrix: UserItemMatrix) -> None:
        raise NotImplementedError

    def _score_rows(self, rows: np.ndarray) -> np.ndarray:
        """Dense scores (len(rows) x n_items) for known user rows."""
        raise NotImplementedError

    def _score_unknown(self, count: int) -> np.ndarray | None:
        """Scores for users absent from training, or None when the model has nothing for them."""
        return None

    def _blocks(self, user_ids: Sequence[str]) -> Iterator[tuple[list[str], np.ndarray]]:
        assert self.matrix is not None
        known = [u for u in user_ids if u in self.matrix.user_row]
        for start in range(0, len(known), SCORE_BLOCK):
            block = known[start : start + SCORE_BLOCK]
            rows = np.array([self.matrix.user_row[u] for u in block], dtype=np.int64)
            yield block, rows

    def item_scores(self, user_id: str) -> dict[str, float]:
        """Every item's raw score for one user, before any exclusion (for inspection and tests)."""
        if self.matrix is None:
            raise RuntimeError(f"{self.name}: call fit() before item_scores()")
        row = self.matrix.user_row.get(user_id)
        if row is None:
            scores = self._score_unknown(1)
            if scores is None:
                return {}
            values = np.asarray(scores, dtype=np.float64)[0]
        else:
            values = np.asarray(self._score_rows(np.array([row])), dtype=np.float64)[0]
        return dict(zip(self.matrix.items.tolist(), values.tolist()))

    def recommend(
        self,
        user_ids: Sequence[str],
        n: int,
        exclude_seen: bool = True,
        exclude: Mapping[str, set[str]] | None = None,
    ) -> dict[str, list[str]]:
        """Top-``n`` items per user, best first, without training-seen items and ``exclude[user]``."""
        if self.matrix is None:
            raise RuntimeError(f"{self.name}: call fit() before recommend()")
        matrix = self.matrix
        out: dict[str, list[str]] = {u: [] for u in user_ids}

        def finish(user: str, scores: np.ndarray, row: int | None) -> None:
            if exclude_seen and row is not None:
                scores[matrix.seen_columns(row)] = -np.inf
            if exclude and exclude.get(user):
                columns = [matrix.item_column[i] for i in exclude[user] if i in matrix.item_column]
                scores[columns] = -np.inf
            out[user] = matrix.items[top_n(scores, n)].tolist()

        for block, rows in self._blocks(user_ids):
            scores = np.asarray(self._score_rows(rows), dtype=np.float64)
            for user, row, row_scores in zip(block, rows, scores):
                finish(user, row_scores, int(row))
        unknown = [u for u in dict.fromkeys(user_ids) if u not in matrix.user_row]
        if unknown:
            fallback = self._score_unknown(len(unknown))
            if fallback is not None:
                for user, row_scores in zip(unknown, np.asarray(fallback, dtype=np.float64)):
                    finish(user, row_scores.copy(), None)
        return out


class Popularity(MatrixRecommender):
    """Items ranked by the number of distinct training users who interacted with them."""

    name = "popularity"

    def _fit(self, train: Interactions, matrix: UserItemMatrix) -> None:
        self.user_counts = np.asarray(matrix.present.sum(axis=0)).ravel().astype(np.float64)

    def _score_rows(self, rows: np.ndarray) -> np.ndarray:
        return np.tile(self.user_counts, (len(rows), 1))

    def _score_unknown(self, count: int) -> np.ndarray:
        return np.tile(self.user_counts, (count, 1))


SAR_SIMILARITIES = ("cooccurrence", "jaccard", "lift")


class SAR(MatrixRecommender):
    """Simple Algorithm for Recommendation (Microsoft Recommenders' SAR), from its formulas.

    ``half_life_days`` is the affinity half-life ``T``; ``time_now_ms`` the
    reference time ``t0`` (default: the latest training timestamp);
    ``threshold`` drops co-occurrence counts below it.
    """

    name = "sar"

    def __init__(
        self,
        similarity: str = "jaccard",
        half_life_days: float = 30.0,
        time_decay: bool = True,
        time_now_ms: int | None = None,
        threshold: int = 1,
    ) -> None:
        super().__init__()
        if similarity not in SAR_SIMILARITIES:
            raise ValueError(f"similarity must be one of {SAR_SIMILARITIES}")
        if half_life_days <= 0:
            raise ValueError("half_life_days must be > 0")
        if threshold < 1:
            raise ValueError("threshold must be >= 1")
        self.similarity = similarity
        self.half_life_ms = half_life_days * DAY_MS
        self.time_decay = time_decay
        self.time_now_ms = time_now_ms
        self.threshold = threshold

    def _fit(self, train: Interactions, matrix: UserItemMatrix) -> None:
        weights = train.weight.astype(np.float64)
        if self.time_decay:
            t0 = int(train.ts.max()) if self.time_now_ms is None else self.time_now_ms
            # 2^(-(t0 - t)/T), capped at 1 for events after t0.
            weights = weights * np.minimum(1.0, np.power(0.5, (t0 - train.ts.astype(np.float64)) / self.half_life_ms))
        rows = np.array([matrix.user_row[u] for u in train.user.astype(str)], dtype=np.int64)
        columns = np.array([matrix.item_column[i] for i in train.item.astype(str)], dtype=np.int64)
        affinity = sparse.coo_matrix((weights, (rows, columns)), shape=matrix.present.shape).tocsr()
        affinity.sum_duplicates()
        # Only pairs that count as interactions carry affinity.
        self.affinity = affinity.multiply(matrix.present).tocsr()
        cooccurrence = (matrix.present.T @ matrix.present).tocsr()
        if self.threshold > 1:
            cooccurrence = cooccurrence.multiply(cooccurrence >= self.threshold).tocsr()
        cooccurrence.eliminate_zeros()
        self.item_similarity = sar_similarity(cooccurrence, self.similarity)

    def _score_rows(self, rows: np.ndarray) -> np.ndarray:
        return (self.affinity[rows] @ self.item_similarity).toarray()


def sar_similarity(cooccurrence: sparse.csr_matrix, measure: str) -> sparse.csr_matrix:
    """Item-item similarity from a symmetric co-occurrence count matrix ``C``.

    jaccard: ``C_ij / (C_ii + C_jj - C_ij)``; lift: ``C_ij / (C_ii C_jj)``;
    cooccurrence: ``C`` itself.  Zero counts stay zero (sparse).
    """
    if measure == "cooccurrence":
        return cooccurrence.astype(np.float64)
    coo = cooccurrence.tocoo()
    diagonal = cooccurrence.diagonal().astype(np.float64)
    counts = coo.data.astype(np.float64)
    if measure == "jaccard":
        values = counts / (diagonal[coo.row] + diagonal[coo.col] - counts)
    elif measure == "lift":
        values = counts / (diagonal[coo.row] * diagonal[coo.col])
    else:
        raise ValueError(f"unknown similarity {measure!r}")
    return sparse.csr_matrix((values, (coo.row, coo.col)), shape=cooccurrence.shape)


class EASE(MatrixRecommender):
    """Embarrassingly Shallow Autoencoder (Steck 2019), closed form on the binary matrix ``X``.

    ``P = (XᵀX + λI)⁻¹``, ``B = I - P · diag(1/P_jj)`` (so ``B_jj = 0``), scores ``x_u B``.
    When there are fewer users than items the same ``P`` is used through the
    Woodbury identity ``P = (I - Xᵀ (λI + X Xᵀ)⁻¹ X) / λ`` without forming the
    items x items matrix; the training users' score rows ``X B`` (users x
    items, smaller than ``B`` then) are kept instead, which keeps shops with
    many items and few users cheap.
    """

    name = "ease"

    # lambda = 400 scored best (tied with 600) on the ML-100K validation split;
    # 250 and 100 were slightly worse.
    def __init__(self, regularization: float = 400.0) -> None:
        super().__init__()
        if regularization <= 0:
            raise ValueError("regularization (lambda) must be > 0")
        self.regularization = regularization

    def _fit(self, train: Interactions, matrix: UserItemMatrix) -> None:
        x = matrix.present.astype(np.float64)
        n_users, n_items = x.shape
        lam = self.regularization
        self.dual = n_users < n_items
        if self.dual:
            gram_users = (x @ x.T).toarray() + lam * np.eye(n_users)
            x_dense = x.toarray()
            k = np.linalg.solve(gram_users, x_dense)  # (λI + X Xᵀ)⁻¹ X, users x items
            # diag(P)_j = (1 - x_jᵀ K_j) / λ, where x_j and K_j are columns j.
            self.p_diagonal = (1.0 - np.einsum("ui,ui->i", x_dense, k)) / lam
            # X P = (X - (X Xᵀ) K) / λ and X B = X - (X P) / diag(P).
            xp = (x_dense - (gram_users - lam * np.eye(n_users)) @ k) / lam
            self.user_scores = x_dense - xp / self.p_diagonal[np.newaxis, :]
            self._k = k
        else:
            gram = (x.T @ x).toarray() + lam * np.eye(n_items)
            p = np.linalg.inv(gram)
            self.b = -p / np.diag(p)[np.newaxis, :]
            np.fill_diagonal(self.b, 0.0)

    def item_weights(self) -> np.ndarray:
        """The dense item-item weight matrix ``B`` (built on demand in the dual case; for tests and inspection)."""
        if not self.dual:
            return self.b
        assert self.matrix is not None
        x = self.matrix.present.astype(np.float64)
        n_items = x.shape[1]
        p = (np.eye(n_items) - x.T @ self._k) / self.regularization
        b = np.eye(n_items) - p / self.p_diagonal[np.newaxis, :]
        np.fill_diagonal(b, 0.0)
        return b

    def _score_rows(self, rows: np.ndarray) -> np.ndarray:
        if self.dual:
            return self.user_scores[rows]
        assert self.matrix is not None
        return np.asarray(self.matrix.present[rows].astype(np.float64) @ self.b)


class _ImplicitFactorModel(MatrixRecommender):
    """Shared plumbing for ``implicit`` CPU models: scores are user factors · item factors."""

    def _make_model(self):
        raise NotImplementedError

    def _training_matrix(self, matrix: UserItemMatrix) -> sparse.csr_matrix:
        raise NotImplementedError

    def _fit(self, train: Interactions, matrix: UserItemMatrix) -> None:
        from threadpoolctl import threadpool_limits

        import implicit.cpu.als  # noqa: F401  (loads its BLAS before the limit below applies to it)
        import implicit.cpu.bpr  # noqa: F401

        # implicit warns (and slows down) when BLAS runs its own threads next to its own.
        with threadpool_limits(1, "blas"):
            model = self._make_model()
            model.fit(self._training_matrix(matrix).astype(np.float32), show_progress=False)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float64)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float64)

    def _score_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.user_factors[rows] @ self.item_factors.T


class ALS(_ImplicitFactorModel):
    """Implicit-feedback ALS (Hu, Koren, Volinsky 2008) from ``implicit``; confidence = summed weight x alpha.

    Defaults were picked by nDCG@10 on a validation split carved from the
    ML-100K msr training part (80/20 per user, seed 7): strong regularisation
    and few factors, as usual on a dataset this small.
    """

    name = "als"

    def __init__(
        self,
        factors: int = 32,
        regularization: float = 20.0,
        alpha: float = 0.5,
        iterations: int = 15,
        seed: int = 42,
        threads: int = 1,
    ) -> None:
        super().__init__()
        self.factors, self.regularization, self.alpha = factors, regularization, alpha
        self.iterations, self.seed, self.threads = iterations, seed, threads

    def _make_model(self):
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            alpha=self.alpha,
            iterations=self.iterations,
            random_state=self.seed,
            num_threads=self.threads,
        )

    def _training_matrix(self, matrix: UserItemMatrix) -> sparse.csr_matrix:
        return matrix.weights


class BPR(_ImplicitFactorModel):
    """Bayesian Personalised Ranking (Rendle et al. 2009) from ``implicit`` on the binary matrix.

    One thread by default: implicit's multi-threaded BPR updates factors
    without locks, so only a single thread is reproducible under a seed.
    Defaults were picked like :class:`ALS`'s (validation carved from training).
    """

    name = "bpr"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.01,
        regularization: float = 0.001,
        iterations: int = 60,
        seed: int = 42,
        threads: int = 1,
    ) -> None:
        super().__init__()
        self.factors, self.learning_rate, self.regularization = factors, learning_rate, regularization
        self.iterations, self.seed, self.threads = iterations, seed, threads

    def _make_model(self):
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            random_state=self.seed,
            num_threads=self.threads,
        )

    def _training_matrix(self, matrix: UserItemMatrix) -> sparse.csr_matrix:
        return matrix.present


BASELINES: dict[str, type[MatrixRecommender]] = {
    "popularity": Popularity,
    "sar": SAR,
    "ease": EASE,
    "als": ALS,
    "bpr": BPR,
}


def make_baseline(name: str, seed: int = 42) -> MatrixRecommender:
    """A baseline with the settings used in the benchmark tables (seeded where random)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    if name in ("als", "bpr"):
        return BASELINES[name](seed=seed)
    return BASELINES[name]()
