"""Minting the ``rec_id`` every list response carries (the format and its check are :mod:`transforms.recid`).

A rec_id names what was served (context, experiment and variant, when, a
random nonce) and is bound to the user it was served to by its keyed check,
so the job can attribute that user's impressions, clicks, carts and purchases
to it without a lookup.  Which user a list is bound to:

- ``/v1/users/{user_id}/recommendations``: that user.
- ``/v1/items/{id}/similar`` and ``/v1/trending``: the optional ``user_id``
  query parameter (the shopper looking at the list), else the anonymous user
  :data:`ANONYMOUS` (``~``).  An anonymous rec_id still identifies the list,
  but the job only accepts feedback on it from events whose ``user_id`` it
  was bound to, and ``~`` is no valid user id: a frontend that wants the
  clicks on these lists attributed passes ``user_id``.

Experiment and variant: the stored list's ``experiment``/``variant`` fields
(the variant that really computed it) when the list came from the job, else
the user's current assignment for that context (:attr:`RecIdIssuer.variant_of`,
:meth:`api.experiments.ExperimentDirectory.variant_of` in the app; ``~`` when
the user is in no experiment).  The home path mints straight from the stored
list (:meth:`RecIdIssuer.mint`, no await) when it names its variant, as every
list the job writes does.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Awaitable, Callable

from transforms.recid import NAME_PATTERN, NO_EXPERIMENT, RecId, encode_rec_id

log = logging.getLogger(__name__)

# The user a rec_id is bound to when the request names none (similar items, trending).
ANONYMOUS = NO_EXPERIMENT
Assignment = tuple[str, str]
NO_ASSIGNMENT: Assignment = (NO_EXPERIMENT, NO_EXPERIMENT)
# (user, context) -> the user's (experiment, variant) for a list of that context.
VariantOf = Callable[[str, str], Awaitable[Assignment]]


async def no_experiments(user: str, context: str) -> Assignment:
    """The assignment when no experiment runs: every user is in none."""
    return NO_ASSIGNMENT


def _name(value: Any) -> str | None:
    """``value`` if it can be a rec_id's experiment/variant part, else ``None``."""
    if value == NO_EXPERIMENT or (isinstance(value, str) and NAME_PATTERN.fullmatch(value)):
        return value
    return None


def stored_assignment(fields: Any) -> Assignment | None:
    """``(experiment, variant)`` recorded in a stored list's fields; ``None`` when absent or unusable.

    A list written before experiments existed has neither field; a value that
    cannot be part of a rec_id (a corrupt or hand-written list) is ignored
    (logged) rather than turned into a 500.
    """
    if not isinstance(fields, dict):
        return None
    experiment, variant = fields.get("experiment"), fields.get("variant")
    if experiment is None and variant is None:
        return None
    checked = (_name(experiment), _name(variant))
    if checked[0] is None or checked[1] is None or (checked[0] == NO_EXPERIMENT) != (checked[1] == NO_EXPERIMENT):
        log.warning("ignoring a stored list's unusable experiment/variant %r/%r", str(experiment)[:40], str(variant)[:40])
        return None
    return checked  # type: ignore[return-value]


class RecIdIssuer:
    """Mints rec_ids with the deployment's secret, on the API's clock.

    ``variant_of(user, context)`` is the user's current ``(experiment,
    variant)`` (request-time contexts, and lists the job wrote without the
    fields); the default puts everyone in no experiment.
    """

    def __init__(self, secret: str, clock_ms: Callable[[], int], variant_of: VariantOf = no_experiments) -> None:
        self.secret = secret
        self.clock_ms = clock_ms
        self.variant_of = variant_of

    def mint(self, user: str, context: str, assignment: Assignment) -> str:
        """A fresh rec_id for a list served to ``user`` (:data:`ANONYMOUS` for nobody) in ``context``.

        The nonce is 32 random bits from the OS, so two responses never share
        a rec_id in practice, even within one millisecond.
        """
        experiment, variant = assignment
        return encode_rec_id(RecId(experiment, variant, context, self.clock_ms(), os.urandom(4).hex()), user, self.secret)

    async def issue(self, user: str, context: str, assignment: Assignment | None = None) -> str:
        """:meth:`mint` with ``assignment`` (the stored list's, see :func:`stored_assignment`),
        or when ``None`` the user's current one (the anonymous user is in no experiment)."""
        if assignment is None:
            assignment = NO_ASSIGNMENT if user == ANONYMOUS else await self.variant_of(user, context)
        return self.mint(user, context, assignment)
