"""The id of a served list (``rec_id``): what was shown, under which experiment variant, to whom.

Every list the API returns carries a ``rec_id``; frontends send it back with
``impression`` events (the items shown and their positions) and may send it
with the clicks, carts and purchases that follow, so the job can attribute
them to the list that caused them.  A rec_id is printable and URL-safe::

    r1.{experiment}.{variant}.{context}.{served_ms base 36}.{nonce}.{mac}

``experiment`` and ``variant`` are ``~`` when the user is in no experiment.
``mac`` is a keyed BLAKE2b digest over every other part *and the user id*, with
the deployment's secret (``FLOWREC_REC_ID_SECRET``; the API and the job must
share it).  So the job can tell a rec_id the API issued to this user from a
garbled, forged or borrowed one (dead-lettered as ``unknown_rec_id``) without
any lookup: the rec_id refers to its list by ``served_ms`` and ``nonce``, and
the impression carries the items with their positions.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

VERSION = "r1"
NO_EXPERIMENT = "~"
# Contexts a list can be served in (codes of the API's list endpoints).
CONTEXTS: tuple[str, ...] = ("home", "cart", "item", "search", "similar", "trending", "ads")
# Experiment and variant names: they become parts of rec_ids and of metric fields.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_\-]{1,32}")
_NONCE = re.compile(r"[0-9a-f]{8}")
_MAC = re.compile(r"[0-9a-f]{16}")
_BASE36 = re.compile(r"[0-9a-z]{1,13}")
DEFAULT_SECRET = "flowrec-insecure-default-rec-id-secret"


class BadRecId(ValueError):
    """A rec_id that does not decode, or was not issued to this user (``reason`` is the dead-letter reason)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class RecId:
    """The decoded parts of a rec_id."""

    experiment: str  # NO_EXPERIMENT when none
    variant: str  # NO_EXPERIMENT when none
    context: str
    served_ms: int
    nonce: str

    def __post_init__(self) -> None:
        for name in ("experiment", "variant"):
            value = getattr(self, name)
            if value != NO_EXPERIMENT and not NAME_PATTERN.fullmatch(value):
                raise ValueError(f"{name} must be 1-32 chars of [A-Za-z0-9_-] or {NO_EXPERIMENT!r}, got {value!r}")
        if self.context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {self.context!r}")
        if self.served_ms < 0:
            raise ValueError("served_ms must be >= 0")
        if not _NONCE.fullmatch(self.nonce):
            raise ValueError("nonce must be 8 lowercase hex digits")


def _base36(value: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        value, rest = divmod(value, 36)
        out = digits[rest] + out
        if value == 0:
            return out


def _mac(body: str, user: str, secret: str) -> str:
    return hashlib.blake2b(f"{body}|{user}".encode(), key=secret.encode()[:64], digest_size=8).hexdigest()


def encode_rec_id(rec: RecId, user: str, secret: str = DEFAULT_SECRET) -> str:
    """The rec_id of ``rec`` served to ``user``."""
    body = ".".join((VERSION, rec.experiment, rec.variant, rec.context, _base36(rec.served_ms), rec.nonce))
    return f"{body}.{_mac(body, user, secret)}"


def decode_rec_id(token: str, user: str, secret: str = DEFAULT_SECRET) -> RecId:
    """The parts of ``token``; raises :class:`BadRecId` (``bad_rec_id``: malformed, ``unknown_rec_id``: not issued to ``user``)."""
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 7 or parts[0] != VERSION:
        raise BadRecId("bad_rec_id", f"a rec_id has 7 dot-separated parts starting with {VERSION!r}")
    _, experiment, variant, context, served, nonce, mac = parts
    if not (_BASE36.fullmatch(served) and _MAC.fullmatch(mac)):
        raise BadRecId("bad_rec_id", "a rec_id's time is base 36 and its check 16 hex digits")
    try:
        rec = RecId(experiment, variant, context, int(served, 36), nonce)
    except ValueError as exc:
        raise BadRecId("bad_rec_id", str(exc)) from None
    body = token[: -len(mac) - 1]
    if not hmac.compare_digest(mac, _mac(body, user, secret)):
        raise BadRecId("unknown_rec_id", "the rec_id was not issued to this user (or by an API with this job's secret)")
    return rec
