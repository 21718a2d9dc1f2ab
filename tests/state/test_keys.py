"""The Redis key layout: every key kind, namespaces, and ids that must never become part of a key."""

from __future__ import annotations

import pytest

from state.keys import DEFAULT_NAMESPACE, LAYOUT_VERSION, InvalidKeyPart, KeyKind, redis_key

EXPECTED = {
    KeyKind.USER_RECS: ("u-1", "flowrec:v1:rec:u-1"),
    KeyKind.COMPLEMENTS: ("u-1", "flowrec:v1:complements:u-1"),
    KeyKind.LEGACY_CART: ("u-1", "flowrec:v1:cart:u-1"),
    KeyKind.PROFILE: ("u-1", "flowrec:v1:profile:u-1"),
    KeyKind.ADS: ("u-1", "flowrec:v1:ads:u-1"),
    KeyKind.ITEM_NEIGHBOURS: ("sku.9", "flowrec:v1:sim:sku.9"),
    KeyKind.CONTENT_NEIGHBOURS: ("sku.9", "flowrec:v1:content:sku.9"),
    KeyKind.ITEM: ("sku.9", "flowrec:v1:item:sku.9"),
    KeyKind.TRENDING_GLOBAL: (None, "flowrec:v1:trend:global"),
    KeyKind.TRENDING_CATEGORY: ("Home Garden", "flowrec:v1:trend:cat:Home Garden"),
    KeyKind.STATS: (None, "flowrec:v1:stats"),
    KeyKind.STATS_MINUTE: ("1700000040000", "flowrec:v1:stats:min:1700000040000"),
    KeyKind.DEAD_LETTER: (None, "flowrec:v1:deadletter"),
    KeyKind.FRESHNESS: (None, "flowrec:v1:freshness"),
    KeyKind.EXPERIMENT: ("ranker-1", "flowrec:v1:experiment:ranker-1"),
    KeyKind.EXPERIMENTS: (None, "flowrec:v1:experiments"),
    KeyKind.METRICS_MINUTE: ("1700000040000", "flowrec:v1:metrics:min:1700000040000"),
    KeyKind.METRICS_EXPERIMENT: ("ranker-2", "flowrec:v1:metrics:exp:ranker-2"),
    KeyKind.METRICS_ADS: ("1699920000000", "flowrec:v1:metrics:ads:1699920000000"),
    KeyKind.METRICS_EXPERIMENTS: (None, "flowrec:v1:metrics:experiments"),
}
USER_KINDS = [KeyKind.USER_RECS, KeyKind.COMPLEMENTS, KeyKind.PROFILE, KeyKind.LEGACY_CART, KeyKind.ADS]
ITEM_KINDS = [KeyKind.ITEM_NEIGHBOURS, KeyKind.CONTENT_NEIGHBOURS, KeyKind.ITEM]
SINGLETONS = [KeyKind.TRENDING_GLOBAL, KeyKind.STATS, KeyKind.DEAD_LETTER, KeyKind.FRESHNESS, KeyKind.EXPERIMENTS, KeyKind.METRICS_EXPERIMENTS]


def test_every_kind_is_covered():
    assert set(EXPECTED) == set(KeyKind)  # a new kind needs a line here
    assert (DEFAULT_NAMESPACE, LAYOUT_VERSION) == ("flowrec", 1)


@pytest.mark.parametrize("kind", list(KeyKind), ids=lambda k: k.name)
def test_key_of_every_kind(kind):
    part, key = EXPECTED[kind]
    assert redis_key(kind, part) == key
    assert redis_key(kind, part, namespace="shop_2-eu") == "shop_2-eu" + key[len("flowrec"):]


@pytest.mark.parametrize("namespace", ["", "a:b", "a b", "ns*", "x" * 33, "ns/1", "é"])
def test_bad_namespace(namespace):
    with pytest.raises(InvalidKeyPart, match="namespace"):
        redis_key(KeyKind.STATS, namespace=namespace)


def test_longest_namespace():
    assert redis_key(KeyKind.STATS, namespace="n" * 32) == "n" * 32 + ":v1:stats"


BAD_IDS = [None, "", "a b", "a*", "u?", "[u]", "x" * 129, "é", "a/b", "\nu", "u\r\n", 5]


@pytest.mark.parametrize("kind", USER_KINDS + ITEM_KINDS, ids=lambda k: k.name)
@pytest.mark.parametrize("part", BAD_IDS, ids=repr)
def test_bad_ids_raise(kind, part):
    what = "user_id" if kind in USER_KINDS else "item_id"
    with pytest.raises(InvalidKeyPart, match=what):
        redis_key(kind, part)


def test_longest_id_and_full_charset():
    assert redis_key(KeyKind.USER_RECS, "x" * 128) == "flowrec:v1:rec:" + "x" * 128
    assert redis_key(KeyKind.ITEM, "aZ09_.:@-") == "flowrec:v1:item:aZ09_.:@-"


@pytest.mark.parametrize("kind", SINGLETONS, ids=lambda k: k.name)
def test_singletons_take_no_id(kind):
    with pytest.raises(InvalidKeyPart, match="takes no id"):
        redis_key(kind, "u1")


@pytest.mark.parametrize("category", [None, "", "a*b", "a?b", "a[b]", "a\\b", "tab\there", "x" * 129, "a/b", "nul\x00"])
def test_bad_categories(category):
    with pytest.raises(InvalidKeyPart, match="category"):
        redis_key(KeyKind.TRENDING_CATEGORY, category)


def test_invalid_key_part_is_a_value_error():
    assert issubclass(InvalidKeyPart, ValueError)


@pytest.mark.parametrize(
    "kind, part, namespace",
    [(KeyKind.USER_RECS, "u1\n", "flowrec"), (KeyKind.TRENDING_CATEGORY, "toys\n", "flowrec"), (KeyKind.STATS, None, "flowrec\n")],
    ids=["id", "category", "namespace"],
)
def test_trailing_newline_never_reaches_a_key(kind, part, namespace):
    with pytest.raises(InvalidKeyPart):
        redis_key(kind, part, namespace=namespace)


@pytest.mark.parametrize("part", [None, "", "1700000040001", "-60000", "6e4", "60000 ", "１２0000", "1" * 17, "*"], ids=repr)
def test_a_minute_key_needs_a_minute_start(part):
    with pytest.raises(InvalidKeyPart, match="epoch-ms start"):
        redis_key(KeyKind.STATS_MINUTE, part)


def test_the_epoch_is_a_minute():
    assert redis_key(KeyKind.STATS_MINUTE, "0") == "flowrec:v1:stats:min:0"


@pytest.mark.parametrize("part", [None, "", "a b", "a.b", "x" * 33, "e:1", 5])
def test_bad_experiment_ids_raise(part):
    with pytest.raises(InvalidKeyPart, match="experiment id"):
        redis_key(KeyKind.EXPERIMENT, part)


def test_metrics_keys_of_no_experiment_and_epoch():
    assert redis_key(KeyKind.METRICS_EXPERIMENT, "~") == "flowrec:v1:metrics:exp:~"
    assert redis_key(KeyKind.METRICS_MINUTE, "0") == "flowrec:v1:metrics:min:0"


@pytest.mark.parametrize(
    "kind, part",
    [
        (KeyKind.METRICS_MINUTE, "1700000040001"),  # not the start of a minute
        (KeyKind.METRICS_MINUTE, 1700000040000),  # not a string
        (KeyKind.METRICS_MINUTE, "-60000"),
        (KeyKind.METRICS_MINUTE, "060000"),
        (KeyKind.METRICS_MINUTE, "*"),
        (KeyKind.METRICS_MINUTE, None),
        (KeyKind.METRICS_ADS, "1700000040000"),  # a minute, not the start of a day
        (KeyKind.METRICS_EXPERIMENT, "a b"),
        (KeyKind.METRICS_EXPERIMENT, "x" * 33),
        (KeyKind.METRICS_EXPERIMENT, "a|b"),
        (KeyKind.METRICS_EXPERIMENT, "*"),
        (KeyKind.METRICS_EXPERIMENT, None),
    ],
    ids=repr,
)
def test_bad_metrics_key_parts(kind, part):
    with pytest.raises(InvalidKeyPart):
        redis_key(kind, part)
