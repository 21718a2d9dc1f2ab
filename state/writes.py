"""Turning engine outputs into Redis writes: the one mapping from results to the key layout.

Shared by the reference replay (`flowrec replay`), the Flink job's sinks and
the Beam backfill, so every engine writes byte-identical values.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from state.keys import USER_KEY_KINDS, InvalidKeyPart, KeyKind, redis_key
from state.store import Write, encode_list
from transforms.ads import SPONSORED, AdPick
from transforms.catalog import CatalogItem
from transforms.events import Rejection, _reject
from transforms.engine import FinalState, WindowOutput
from transforms.experiments import ExperimentRecord
from transforms.recid import NO_EXPERIMENT
from transforms.scoring import Neighbours, ScoredItem, UserLists


@dataclass(frozen=True)
class Ttls:
    """Expiry of per-user and per-item keys, seconds (0 = none)."""

    user_s: int = 30 * 24 * 3600
    item_s: int = 30 * 24 * 3600


def user_writes(user: str, ts: int, lists: UserLists | None, ttls: Ttls) -> list[Write]:
    """The user's home list, complements list, profile and (while the shop has sponsored items) ads list;
    a forgotten user's keys are deleted (the legacy ``cart:`` key too).

    The lists carry ``"experiment"`` and ``"variant"``: the experiment variant whose
    configuration computed them (``"~"`` for none), so the API issues rec_ids naming it.
    The ads list is ranked from the same scoring as the home list and carries its label.
    """
    if lists is None:
        return [Write(kind, user, None) for kind in USER_KEY_KINDS]
    profile = encode_list(
        ts,
        [ScoredItem(item, value) for item, value in lists.interests],
        categories=lists.categories,
        cart=lists.in_cart,
        purchased=lists.purchased,
    )
    home_experiment, home_variant = lists.home_from
    cart_experiment, cart_variant = lists.cart_from
    writes = [
        Write(KeyKind.USER_RECS, user, encode_list(ts, lists.home, experiment=home_experiment, variant=home_variant), ttls.user_s or None),
        Write(KeyKind.COMPLEMENTS, user, encode_list(ts, lists.cart, experiment=cart_experiment, variant=cart_variant), ttls.user_s or None)
        if lists.cart
        else Write(KeyKind.COMPLEMENTS, user, None),
        Write(KeyKind.PROFILE, user, profile, ttls.user_s or None),
    ]
    if lists.ads is not None:
        writes.append(Write(KeyKind.ADS, user, encode_ads(ts, lists.ads, *lists.home_from), ttls.user_s or None))
    return writes


def encode_ads(ts: int, ads: list[AdPick], experiment: str = NO_EXPERIMENT, variant: str = NO_EXPERIMENT) -> bytes:
    """The ads list value: a ranked list (score = relevance x bid at scoring time), each item's
    ``relevance``, and the experiment variant that scored it."""
    return encode_list(ts, [ScoredItem(a.item, a.score, SPONSORED) for a in ads], relevance=[a.relevance for a in ads], experiment=experiment, variant=variant)


def neighbour_write(kind: KeyKind, item: str, ts: int, neighbours: Neighbours, ttl_s: int = 0) -> Write:
    ids, scores = neighbours
    return Write(kind, item, encode_list(ts, [ScoredItem(i, float(s)) for i, s in zip(ids.tolist(), scores.tolist())]), ttl_s or None)


def trending_write(category: str | None, ts: int, trend: Neighbours) -> Write:
    kind = KeyKind.TRENDING_GLOBAL if category is None else KeyKind.TRENDING_CATEGORY
    return neighbour_write(kind, category, ts, trend)  # type: ignore[arg-type]


def catalog_write(item: CatalogItem) -> Write:
    return Write(KeyKind.ITEM, item.item_id, item.to_json())


def experiment_writes(record: ExperimentRecord) -> list[Write]:
    """An experiment as applied (``experiment:{id}``), and its id in the set of experiments."""
    return [Write(KeyKind.EXPERIMENT, record.experiment.id, orjson.dumps(record.to_dict())), Write(KeyKind.EXPERIMENTS, None, record.experiment.id.encode())]


def window_writes(out: WindowOutput, ttls: Ttls) -> list[Write]:
    """Every write one closed window causes."""
    t = out.window_end_ms
    writes = [catalog_write(item) for item in out.catalog]
    writes += [neighbour_write(KeyKind.CONTENT_NEIGHBOURS, i, t, nb, ttls.item_s) for i, nb in out.content.items()]
    writes += [neighbour_write(KeyKind.ITEM_NEIGHBOURS, i, t, nb, ttls.item_s) for i, nb in out.neighbours.items()]
    if out.trending_global is not None:
        writes.append(trending_write(None, t, out.trending_global))
    writes += [trending_write(c, t, tl) for c, tl in out.trending_by_category.items()]
    for user, lists in out.users.items():
        writes += user_writes(user, t, lists, ttls)
    for record in out.experiments:
        writes += experiment_writes(record)
    return writes


def final_writes(final: FinalState, ttls: Ttls) -> list[Write]:
    """The writes that leave Redis holding a bounded replay's final state."""
    writes = [catalog_write(item) for item in final.catalog.values()]
    writes += [neighbour_write(KeyKind.CONTENT_NEIGHBOURS, i, t, nb, ttls.item_s) for i, (t, nb) in final.content.items()]
    writes += [neighbour_write(KeyKind.ITEM_NEIGHBOURS, i, t, nb, ttls.item_s) for i, (t, nb) in final.neighbours.items()]
    if final.trending_global is not None:
        writes.append(trending_write(None, *final.trending_global))
    writes += [trending_write(c, t, tl) for c, (t, tl) in final.trending_by_category.items()]
    for user, (t, lists) in final.users.items():
        writes += user_writes(user, t, lists, ttls)
    for record in final.experiments.values():
        writes += experiment_writes(record)
    return writes


def keyable(writes: list[Write], namespace: str) -> tuple[list[Write], list[Rejection]]:
    """The writes whose key can be built, and a dead letter (reason ``invalid_key``) for each other one.

    Every entry point validates ids and categories, so this drops nothing on
    fresh input; it keeps a sink alive on state restored from a release that
    did not check yet (one bad key would otherwise fail the batch on every retry).
    """
    good: list[Write] = []
    bad: list[Rejection] = []
    for write in writes:
        try:
            redis_key(write.kind, write.part, namespace)
        except InvalidKeyPart as exc:
            bad.append(_reject("invalid_key", str(exc), {"key": write.kind.value, "part": write.part}))
            continue
        good.append(write)
    return good, bad
