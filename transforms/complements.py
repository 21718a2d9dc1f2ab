""""Goes with your cart": the one formula, used by the job's scorer and by the API when no list is stored yet.

For a cart ``C``, each candidate item ``c`` scores

    score(c) = sum over i in C of  w_cf * cf_i(c) / max cf_i  +  w_content * content_i(c) / max content_i

where ``cf_i`` and ``content_i`` are the collaborative and content neighbour
lists of cart item ``i`` (a list missing ``c`` adds 0).  Each list is divided
by its own maximum, so one cart item with strong neighbours cannot drown the
others, and the two kinds of similarity (on different scales) are weighted as
in every other blend (``weight_cf``, ``weight_content`` of the model config).
Cart items themselves are never complements.  The reason names the cart item
whose single term is largest (the first one in cart order on ties); ranking
is by score, ties by item id (as every flowrec list).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from transforms.reasons import Reason, reason

# (item ids, similarities), best first: the shape of every neighbour list.
NeighbourLists = Mapping[str, tuple[Sequence[str], Sequence[float]]]


def cart_complements(
    cart: Sequence[str],
    neighbours: NeighbourLists,
    content: NeighbourLists,
    weight_cf: float,
    weight_content: float,
) -> tuple[dict[str, float], dict[str, str]]:
    """Scores of the cart's complements and, per complement, the cart item that contributes most.

    ``neighbours`` / ``content`` are looked up with ``.get`` (a missing cart
    item adds nothing); summation runs in cart order, CF before content, so
    every caller gets bit-identical scores from the same lists.
    """
    in_cart = set(cart)
    scores: dict[str, float] = {}
    best: dict[str, tuple[float, str]] = {}
    for source in cart:
        for table, weight in ((neighbours, weight_cf), (content, weight_content)):
            entry = table.get(source)
            if entry is None or weight <= 0:
                continue
            ids, sims = entry
            sims = np.asarray(sims, dtype=np.float64)
            if len(sims) == 0:
                continue
            top = float(sims.max())
            if not top > 0:
                continue
            for item, s in zip(list(ids), (weight * sims / top).tolist()):
                if item in in_cart or s <= 0:
                    continue
                scores[item] = scores.get(item, 0.0) + s
                if s > best.get(item, (0.0, ""))[0]:
                    best[item] = (s, source)
    return scores, {item: source for item, (_, source) in best.items()}


def goes_with(source: str) -> Reason:
    """The reason of a complement: "goes with X in your cart"."""
    return reason("goes_with", item=source)


def ranked(scores: Mapping[str, float]) -> list[str]:
    """Items best first, ties by item id."""
    return sorted(scores, key=lambda item: (-scores[item], item))
