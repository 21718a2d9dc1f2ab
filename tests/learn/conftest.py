"""Small seeded data with planted structure for the trainer's tests (skipped without PyTorch)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("faiss")

from learn.config import TrainConfig  # noqa: E402
from transforms.catalog import CatalogItem  # noqa: E402
from transforms.events import EVENT_CODE, EventBatch  # noqa: E402

CLUSTERS = 4
ITEMS_PER_CLUSTER = 10
USERS = 160
START_MS = 1_700_000_000_000
NOUNS = ("lamp", "boots", "novel", "kettle")


def cluster_of(item: str) -> int:
    return (int(item[1:]) - 1) // ITEMS_PER_CLUSTER


def planted_catalog(extra_new_items: bool = True) -> list[CatalogItem]:
    """Items i001.. in CLUSTERS groups; a group shares its category, brand and title noun.

    With ``extra_new_items``, one more item per group (``n<k>``) that has no events.
    """
    items = []
    for k in range(CLUSTERS * ITEMS_PER_CLUSTER):
        group = k // ITEMS_PER_CLUSTER
        items.append(
            CatalogItem(
                item_id=f"i{k + 1:03d}", title=f"Model {k} {NOUNS[group]}", category=f"top{group}/sub{group}",
                brand=f"brand{group}", price=float(10 + 5 * group + k % 3),
            )
        )
    if extra_new_items:
        for group in range(CLUSTERS):
            items.append(CatalogItem(item_id=f"n{group}", title=f"New {NOUNS[group]}", category=f"top{group}/sub{group}", brand=f"brand{group}", price=float(11 + 5 * group)))
    return items


def planted_events(seed: int = 0, users: int = USERS, per_user: int = 8) -> EventBatch:
    """Each user views and clicks items of one group only (every 15 s), so groups are co-interaction clusters."""
    rng = np.random.default_rng(seed)
    rows_user, rows_item, rows_type, rows_ts = [], [], [], []
    for u in range(users):
        group = u % CLUSTERS
        chosen = rng.choice(ITEMS_PER_CLUSTER, size=per_user, replace=False) + group * ITEMS_PER_CLUSTER + 1
        t = START_MS + u * 60_000
        for j, item in enumerate(chosen.tolist()):
            rows_user.append(f"u{u:03d}")
            rows_item.append(f"i{item:03d}")
            rows_type.append(EVENT_CODE["click"] if j % 3 == 0 else EVENT_CODE["view"])
            rows_ts.append(t + 15_000 * j)
    return EventBatch(
        user=np.array(rows_user, dtype=object),
        item=np.array(rows_item, dtype=object),
        etype=np.array(rows_type, dtype=np.int8),
        ts=np.array(rows_ts, dtype=np.int64),
    )


SMALL = TrainConfig(
    dim=16, epochs=25, batch_users=32, learning_rate=0.02, patience=25, sequence_hidden=16, sequence_epochs=4,
    sequence_batch=64, neighbours=5, ann_m=8, ann_ef_construction=40, ann_ef_search=32, sequence_length=6,
)


@pytest.fixture(scope="session")
def planted():
    return planted_events(), planted_catalog()
