"""The shop window: a catalog file loaded once at start, for browsing (demo page, /v1/catalog).

Single-item lookups read the ``item:{id}`` keys in Redis, which the job and
``POST /v1/items`` keep current; this in-memory copy only lists items by
category for browsing, and takes the upserts this process receives.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

from transforms.catalog import CatalogItem, parse_catalog_lines

log = logging.getLogger(__name__)


class BrowseCatalog:
    """Items in file order (upserts of new items go last), with per-top-category listings."""

    def __init__(self, items: Iterable[CatalogItem] = ()) -> None:
        self._items: dict[str, CatalogItem] = {}
        for item in items:
            self.upsert(item)

    @classmethod
    def from_file(cls, path: Path) -> "BrowseCatalog":
        """Load catalog JSON lines; bad lines are logged and skipped (the count is reported)."""
        with open(path, "rb") as lines:
            items, rejections = parse_catalog_lines(lines)
        if rejections:
            log.warning("catalog %s: %d bad lines skipped (first: %s: %s)", path, len(rejections), rejections[0].reason, rejections[0].detail)
        log.info("catalog %s: %d items", path, len(items))
        return cls(items)

    def upsert(self, item: CatalogItem) -> None:
        self._items[item.item_id] = item

    def __len__(self) -> int:
        return len(self._items)

    def get(self, item_id: str) -> CatalogItem | None:
        return self._items.get(item_id)

    def categories(self) -> list[dict[str, Any]]:
        """Top-level categories with their item counts, most items first (ties by name)."""
        counts: dict[str, int] = {}
        for item in self._items.values():
            top = item.top_category
            if top:
                counts[top] = counts.get(top, 0) + 1
        return [{"category": c, "items": k} for c, k in sorted(counts.items(), key=lambda ck: (-ck[1], ck[0]))]

    def page(self, category: str | None, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """``(total matching, items[offset:offset+limit])``; ``category`` matches the item's category or a parent of it."""
        if category:
            prefix = category + "/"
            matching = [i for i in self._items.values() if i.category == category or i.category.startswith(prefix)]
        else:
            matching = list(self._items.values())
        return len(matching), [i.to_dict() for i in matching[offset : offset + limit]]
