"""Why an item is in a list, as data a shop can translate: a code, the item or category it names, English text.

Every list entry flowrec writes (Redis values) or serves (API responses)
carries its reason twice: ``"reason"``, the English sentence (what readers of
the first value schema read), and ``"why"``, the structured form::

    {"code": "because_you_viewed", "item": "i42"}                 -> "because you viewed i42"
    {"code": "trending_in", "category": "fashion", "note": "no_history"}
                                                                  -> "trending in fashion (no history yet)"

A shop localises by keeping its own template per ``code`` (and per ``note``)
and filling in ``item`` / ``category``.  :data:`TEMPLATES` and :data:`NOTES`
are the English ones; codes are part of the value schema: add, never rename.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping, NamedTuple

# Event type -> (code word, English verb) of the reasons that name a user's action.
ACTIONS: dict[str, tuple[str, str]] = {
    "view": ("viewed", "viewed"),
    "click": ("clicked", "clicked"),
    "add_to_cart": ("added_to_cart", "added to cart"),
    "favorite": ("saved", "saved"),
    "purchase": ("bought", "bought"),
    "rating": ("rated", "rated"),
}

TEMPLATES: dict[str, str] = {
    **{f"because_you_{word}": f"because you {verb} {{item}}" for word, verb in ACTIONS.values()},
    **{f"you_{word}_recently": f"you {verb} this recently" for word, verb in ACTIONS.values()},
    "similar_to": "similar to {item}",
    "often_together_with": "often together with {item}",
    "similar_and_often_together_with": "similar to and often together with {item}",
    "goes_with": "goes with {item} in your cart",
    "trending_in": "trending in {category}",
    "trending_now": "trending now",
    "popular_now": "popular now",
    "picked_for_you": "picked for you",
    "interest_in_item": "you showed interest in this item",
    "matches_interest_in": "matches your interest in {category}",
    "in_your_recommendations": "also in your recommendations",
    "search_order": "search order",
    "sponsored": "sponsored",
}
NOTES: dict[str, str] = {
    "no_history": " (no history yet)",
    "new_item": " (new item: no neighbours yet)",
    "cart_empty": " (your cart is empty)",
    "nothing_similar": " (no items like {item} yet)",
    "matches_interest_in": ", matches your interest in {category}",
}
# The code of a reason read from a value written before reasons had codes: only its text is known.
UNSTRUCTURED = "unstructured"


class Reason(NamedTuple):
    """One reason; build it with :func:`reason` (which renders ``text``)."""

    code: str
    item: str = ""
    category: str = ""
    note: str = ""
    text: str = ""

    def fields(self) -> dict[str, str]:
        """The structured form written as ``"why"`` (empty fields left out)."""
        out = {"code": self.code}
        for name in ("item", "category", "note"):
            value = getattr(self, name)
            if value:
                out[name] = value
        return out


@lru_cache(maxsize=1 << 16)
def written_fields(found: Reason) -> dict[str, Any]:
    """The fields a list entry carries for ``found``: ``"reason"`` (the text) and, unless it is
    :data:`UNSTRUCTURED`, ``"why"`` (:meth:`Reason.fields`).

    Cached per distinct reason (a list's reasons repeat across its entries and
    across users): the returned dict and its ``"why"`` are shared, so merge
    them into a new entry and never change them.
    """
    if found.code == UNSTRUCTURED:
        return {"reason": found.text}
    return {"reason": found.text, "why": found.fields()}


def reason(code: str, item: str = "", category: str = "", note: str = "") -> Reason:
    """A reason with its English text (``code`` in :data:`TEMPLATES`, ``note`` in :data:`NOTES` or "")."""
    text = TEMPLATES[code].format(item=item, category=category)
    if note:
        text += NOTES[note].format(item=item, category=category)
    return Reason(code, item, category, note, text)


def with_note(base: Reason, note: str, item: str = "", category: str = "") -> Reason:
    """``base`` with a note added (its ``item``/``category`` fill the note when given)."""
    if base.code not in TEMPLATES:  # read from an old value: only its text is known
        return Reason(base.code, base.item or item, base.category or category, note, base.text + NOTES[note].format(item=item, category=category))
    return reason(base.code, base.item or item, base.category or category, note)


def because_you(event_type: str, item: str) -> Reason:
    """"because you viewed X" (the verb of the user's latest positive event on ``item``)."""
    return reason(f"because_you_{ACTIONS.get(event_type, ACTIONS['view'])[0]}", item=item)


def you_did_recently(event_type: str, item: str) -> Reason:
    """"you viewed this recently" (``item`` is the listed item itself)."""
    return reason(f"you_{ACTIONS.get(event_type, ACTIONS['view'])[0]}_recently", item=item)


def read_reason(entry: Mapping[str, Any]) -> Reason | None:
    """The reason of a stored or served list entry: ``why`` plus ``reason`` text; text alone for old values."""
    text = entry.get("reason")
    why = entry.get("why")
    if isinstance(why, Mapping) and isinstance(why.get("code"), str):
        fields = {name: why.get(name) if isinstance(why.get(name), str) else "" for name in ("item", "category", "note")}
        return Reason(why["code"], text=text if isinstance(text, str) else "", **fields)
    if isinstance(text, str) and text:
        return Reason(UNSTRUCTURED, text=text)
    return None
