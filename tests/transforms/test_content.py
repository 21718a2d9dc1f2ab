"""ContentIndex: TF-IDF cosine neighbours checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transforms.catalog import CatalogItem
from transforms.content import ContentIndex, feature_bag, feature_tokens, item_tokens, price_bucket_edges, top_k_positions

# The board.  Tokens per item (N = 5 items):
#   a: red, shoe, cat:fashion, cat:fashion/shoes, brand:acme
#   b: blue, shoe, cat:fashion, cat:fashion/shoes, brand:acme
#   c: red, hat, cat:fashion, cat:fashion/hats, brand:zeta
#   d: kettle, cat:home, brand:zeta
#   e: (nothing)
# Document frequencies: cat:fashion 3; red, shoe, cat:fashion/shoes, brand:acme, brand:zeta 2;
# blue, hat, kettle, cat:fashion/hats, cat:home 1.
# Smooth idf = ln((1 + 5) / (1 + df)) + 1:
IDF1 = math.log(6 / 2) + 1  # 2.098612  (df = 1), squared 4.404174
IDF2 = math.log(6 / 3) + 1  # 1.693147  (df = 2), squared 2.866747
IDF3 = math.log(6 / 4) + 1  # 1.405465  (df = 3), squared 1.975332
# Every tf is 1, so a row is its idfs divided by their L2 norm.  Squared norms:
#   |a|^2 = 4*IDF2^2 + IDF3^2            = 4*2.866747 + 1.975332             = 13.442322
#   |b|^2 = IDF1^2 + 3*IDF2^2 + IDF3^2   = 4.404174 + 3*2.866747 + 1.975332  = 14.979748
#   |c|^2 = 2*IDF2^2 + 2*IDF1^2 + IDF3^2 = 5.733495 + 8.808347 + 1.975332    = 16.517174
#   |d|^2 = 2*IDF1^2 + IDF2^2            = 8.808347 + 2.866747               = 11.675094
# Shared tokens and raw dot products:
#   a.b: shoe, cat:fashion, cat:fashion/shoes, brand:acme = 3*2.866747 + 1.975332 = 10.575574
#   a.c: red, cat:fashion                                 = 2.866747 + 1.975332   = 4.842080
#   b.c: cat:fashion                                      = 1.975332
#   c.d: brand:zeta                                       = 2.866747
#   a.d = b.d = 0; e shares nothing.
# Cosines:
COS_AB = 0.745272  # 10.575574 / sqrt(13.442322 * 14.979748) = 10.575574 / 14.190248
COS_AC = 0.324958  # 4.842080 / sqrt(13.442322 * 16.517174)  = 4.842080 / 14.900658
COS_BC = 0.125580  # 1.975332 / sqrt(14.979748 * 16.517174)  = 1.975332 / 15.729817
COS_CD = 0.206439  # 2.866747 / sqrt(16.517174 * 11.675094)  = 2.866747 / 13.886699


def board() -> list[CatalogItem]:
    # Deliberately not in id order: the index must not depend on arrival order.
    return [
        CatalogItem("d", title="Kettle", category="home", brand="Zeta"),
        CatalogItem("b", title="Blue Shoe", category="Fashion/Shoes", brand="Acme"),
        CatalogItem("e"),
        CatalogItem("a", title="Red shoe", category="fashion/shoes", brand="ACME"),
        CatalogItem("c", title="Red Hat", category="fashion/hats", brand="Zeta"),
    ]


def test_hand_computed_numbers_agree_with_the_formula():
    norm_a = math.sqrt(4 * IDF2**2 + IDF3**2)
    norm_b = math.sqrt(IDF1**2 + 3 * IDF2**2 + IDF3**2)
    norm_c = math.sqrt(2 * IDF2**2 + 2 * IDF1**2 + IDF3**2)
    norm_d = math.sqrt(2 * IDF1**2 + IDF2**2)
    assert (3 * IDF2**2 + IDF3**2) / (norm_a * norm_b) == pytest.approx(COS_AB, abs=1e-6)
    assert (IDF2**2 + IDF3**2) / (norm_a * norm_c) == pytest.approx(COS_AC, abs=1e-6)
    assert IDF3**2 / (norm_b * norm_c) == pytest.approx(COS_BC, abs=1e-6)
    assert IDF2**2 / (norm_c * norm_d) == pytest.approx(COS_CD, abs=1e-6)


def test_tokens_cover_title_category_prefixes_brand_and_tags():
    item = CatalogItem("x", title="Trail-Runner 2, blue!", category="Fashion/ Shoes /Running",
                       brand=" Acme ", tags=("Summer", ""))
    assert item_tokens(item) == [
        "trail", "runner", "2", "blue",
        "cat:fashion", "cat:fashion/shoes", "cat:fashion/shoes/running",
        "brand:acme", "tag:summer",
    ]


def test_vocabulary_idf_and_unit_rows():
    index = ContentIndex.build(board())
    assert list(index.item_ids) == ["a", "b", "c", "d", "e"]
    assert index.idf[index.vocabulary["cat:fashion"]] == pytest.approx(IDF3)
    assert index.idf[index.vocabulary["shoe"]] == pytest.approx(IDF2)
    assert index.idf[index.vocabulary["kettle"]] == pytest.approx(IDF1)
    norms = np.sqrt(np.asarray(index.matrix.multiply(index.matrix).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms, [1, 1, 1, 1, 0])  # e has no tokens: zero row
    # Row a: shoe weight = IDF2 / |a|.
    row_a = index.matrix[0].toarray().ravel()
    assert row_a[index.vocabulary["shoe"]] == pytest.approx(IDF2 / math.sqrt(4 * IDF2**2 + IDF3**2))


def test_neighbours_all_matches_hand_computed_cosines_and_order():
    result = ContentIndex.build(board()).neighbours_all(k=10)
    expected = {
        "a": [("b", COS_AB), ("c", COS_AC)],
        "b": [("a", COS_AB), ("c", COS_BC)],
        "c": [("a", COS_AC), ("d", COS_CD), ("b", COS_BC)],
        "d": [("c", COS_CD)],
        "e": [],  # no tokens: no neighbours, and never anyone's neighbour
    }
    assert [key for key in result] == list(expected)
    for item_id, neighbours in expected.items():
        assert [n for n, _ in result[item_id]] == [n for n, _ in neighbours], item_id
        for (_, got), (_, want) in zip(result[item_id], neighbours):
            assert got == pytest.approx(want, abs=1e-6)


def test_k_bounds():
    index = ContentIndex.build(board())
    assert index.neighbours(["c"], k=1) == {"c": [("a", pytest.approx(COS_AC, abs=1e-6))]}
    assert [n for n, _ in index.neighbours(["c"], k=2)["c"]] == ["a", "d"]
    assert index.neighbours(["c"], k=0) == {"c": []}
    assert len(index.neighbours(["c"], k=1000)["c"]) == 3  # only cosine > 0, never itself
    with pytest.raises(ValueError, match="k must be"):
        index.neighbours(["c"], k=-1)
    with pytest.raises(ValueError, match="k must be"):
        index.neighbours_all(k=2.5)


def test_unknown_and_non_string_ids_get_empty_lists():
    index = ContentIndex.build(board())
    assert index.neighbours(["zzz", "d"], k=3) == {"zzz": [], "d": [("c", pytest.approx(COS_CD, abs=1e-6))]}
    assert index.neighbours([42], k=3) == {42: []}


def test_ties_break_by_item_id_even_at_the_cut():
    # p = {alpha, beta}, q = {alpha}, r = {beta}; N = 3, df(alpha) = df(beta) = 2, so both
    # idfs are ln(4/3) + 1 = 1.287682 and cos(p, q) = cos(p, r) = idf^2 / (sqrt(2) idf * idf)
    # = 1/sqrt(2) = 0.707107 exactly the same way.  q sorts before r.
    items = [CatalogItem("r", title="beta"), CatalogItem("p", title="alpha beta"), CatalogItem("q", title="alpha")]
    index = ContentIndex.build(items)
    assert index.neighbours(["p"], k=2) == {"p": [("q", pytest.approx(0.707107, abs=1e-6)),
                                                  ("r", pytest.approx(0.707107, abs=1e-6))]}
    assert [n for n, _ in index.neighbours(["p"], k=1)["p"]] == ["q"]


def test_blocks_do_not_change_results():
    index = ContentIndex.build(board())
    assert index.neighbours_all(k=2, block_entries=1) == index.neighbours_all(k=2)
    assert index.neighbours(["c", "a"], k=2, block_entries=1) == {
        "c": index.neighbours_all(k=2)["c"], "a": index.neighbours_all(k=2)["a"]}
    with pytest.raises(ValueError, match="block_entries"):
        index.neighbours_all(k=2, block_entries=0)


def test_empty_catalog():
    index = ContentIndex.build([])
    assert len(index) == 0
    assert index.neighbours_all(k=5) == {}
    assert index.neighbours(["a"], k=5) == {"a": []}


def test_upsert_returns_a_new_index_and_later_versions_win():
    index = ContentIndex.build(board())
    # d becomes an Acme item: d = {kettle, cat:home, brand:acme}.  N stays 5; brand:acme now
    # has df 3 (idf IDF3) and brand:zeta df 1.  Squared norms after the update:
    #   |a|^2 = 3*IDF2^2 + 2*IDF3^2          = 8.600242 + 3.950664            = 12.550906
    #   |b|^2 = IDF1^2 + 2*IDF2^2 + 2*IDF3^2 = 4.404174 + 5.733495 + 3.950664 = 14.088333
    #   |d|^2 = 2*IDF1^2 + IDF3^2            = 8.808347 + 1.975332            = 10.783679
    # d shares only brand:acme with a and b (dot IDF3^2 = 1.975332):
    #   cos(a, d) = 1.975332 / sqrt(12.550906 * 10.783679) = 1.975332 / 11.633785 = 0.169793
    #   cos(b, d) = 1.975332 / sqrt(14.088333 * 10.783679) = 1.975332 / 12.325748 = 0.160261
    updated = index.upsert([CatalogItem("d", title="Kettle", category="home", brand="Acme")])
    assert [n for n, _ in index.neighbours(["d"], k=5)["d"]] == ["c"]  # the original is unchanged
    neighbours = updated.neighbours(["d"], k=5)["d"]
    assert [n for n, _ in neighbours] == ["a", "b"]
    assert [v for _, v in neighbours] == [pytest.approx(0.169793, abs=1e-6), pytest.approx(0.160261, abs=1e-6)]
    assert updated.cosine("a", "d") == pytest.approx(
        IDF3**2 / math.sqrt((3 * IDF2**2 + 2 * IDF3**2) * (2 * IDF1**2 + IDF3**2)))
    # Building with a repeated id keeps its last version too.
    rebuilt = ContentIndex.build(board() + [CatalogItem("d", title="Kettle", category="home", brand="Acme")])
    assert rebuilt.neighbours_all(k=5) == updated.neighbours_all(k=5)
    with pytest.raises(TypeError):
        index.upsert([{"item_id": "x"}])


def test_sublinear_tf():
    # "shoe shoe" has tf 2 -> 1 + ln 2 under sublinear tf.
    items = [CatalogItem("a", title="shoe shoe red"), CatalogItem("b", title="shoe")]
    linear = ContentIndex.build(items)
    sub = ContentIndex.build(items, sublinear_tf=True)
    idf_shoe = math.log(3 / 3) + 1  # df 2 of N 2 -> 1.0
    idf_red = math.log(3 / 2) + 1  # df 1 -> 1.405465
    # b = (shoe) -> unit vector on shoe; a = (2*1.0, 1.405465): cos = 2 / hypot(2, 1.405465) = 0.818180
    assert linear.cosine("a", "b") == pytest.approx(0.818180, abs=1e-6)
    assert linear.cosine("a", "b") == pytest.approx(2 * idf_shoe / math.hypot(2 * idf_shoe, idf_red))
    tf = 1 + math.log(2)
    assert sub.cosine("a", "b") == pytest.approx(tf * idf_shoe / math.hypot(tf * idf_shoe, idf_red))


def test_top_k_positions():
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.9, 0.5])
    assert top_k_positions(scores, 2).tolist() == [1, 4]
    assert top_k_positions(scores, 3).tolist() == [1, 4, 0]
    assert top_k_positions(scores, 4).tolist() == [1, 4, 0, 2]
    assert top_k_positions(scores, 10).tolist() == [1, 4, 0, 2, 5, 3]
    assert top_k_positions(scores, 0).tolist() == []
    assert top_k_positions(np.array([]), 3).tolist() == []


def test_top_k_positions_with_tie_keys():
    # Equal scores ordered by the key, not the position, also when the tie straddles the cut.
    scores = np.array([0.5, 0.9, 0.5, 0.5])
    keys = np.array([30, 7, 10, 20])
    assert top_k_positions(scores, 2, tie_keys=keys).tolist() == [1, 2]
    assert top_k_positions(scores, 3, tie_keys=keys).tolist() == [1, 2, 3]
    assert top_k_positions(scores, 4, tie_keys=keys).tolist() == [1, 2, 3, 0]


def test_feature_tokens_add_a_price_bucket_within_the_top_category():
    # log(1 + price) of 0, 1, 3, 7 is 0, ln 2, 2 ln 2, 3 ln 2: two buckets split at the median 1.5 ln 2.
    shop = [CatalogItem(item_id=f"s{k}", category="shop/sub", price=float(2**k - 1)) for k in range(4)]
    edges = price_bucket_edges(shop + [CatalogItem(item_id="free", category="other")], buckets=2)
    assert list(edges) == ["shop"]  # a top category without a priced item has no edges
    np.testing.assert_allclose(edges["shop"], [1.5 * math.log(2)])
    assert [feature_tokens(item, edges)[-1] for item in shop] == ["price:shop:0", "price:shop:0", "price:shop:1", "price:shop:1"]
    at_edge = CatalogItem(item_id="e", category="shop", price=2 ** 1.5 - 1)  # exactly on the edge: the upper bucket
    assert feature_tokens(at_edge, {"shop": np.array([math.log1p(at_edge.price)])}) == ["cat:shop", "price:shop:1"]
    unpriced = CatalogItem(item_id="u", title="Red red", category="shop")
    assert feature_tokens(unpriced, edges) == ["red", "red", "cat:shop"]
    assert feature_bag(unpriced, edges) == ["cat:shop", "red"]
    assert feature_tokens(CatalogItem(item_id="o", category="other", price=5.0), edges) == ["cat:other"]


@pytest.mark.parametrize("sublinear", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_upserts_one_at_a_time_equal_a_build_of_the_merged_catalog_bit_for_bit(seed, sublinear):
    """upsert keeps the term counts and tokenises only the upserted items: after any sequence
    (new ids in and out of order, replaced items gaining and losing tokens, a token's last
    holder replaced, repeated ids in one call, items with no tokens) every array equals build's."""
    rng = np.random.default_rng(seed)
    words = ["red", "blue", "shoe", "hat", "kettle", "green", "lamp", "42", "x"]

    def item(k: int) -> CatalogItem:
        title = " ".join(rng.choice(words, size=int(rng.integers(0, 5))))
        category = "/".join(rng.choice(["home", "fashion", "shoes", "garden"], size=int(rng.integers(0, 3))))
        brand = str(rng.choice(["", "acme", "zeta", f"only{k}"]))
        return CatalogItem(f"i{int(rng.integers(0, 30)):02d}", title=title, category=category, brand=brand)

    catalog: list[CatalogItem] = []
    index = ContentIndex.build([], sublinear_tf=sublinear)
    for step in range(40):
        batch = [item(step * 10 + j) for j in range(int(rng.integers(1, 4)))]
        catalog += batch
        index = index.upsert(batch)
        built = ContentIndex.build(catalog, sublinear_tf=sublinear)
        assert index.item_ids.tolist() == built.item_ids.tolist()
        assert dict(index.vocabulary) == dict(built.vocabulary) and index.terms.tolist() == built.terms.tolist()
        assert np.array_equal(index.idf, built.idf)
        for name in ("data", "indices", "indptr"):
            assert np.array_equal(getattr(index.matrix, name), getattr(built.matrix, name)), name
            assert np.array_equal(getattr(index.counts, name), getattr(built.counts, name)), name
        assert dict(index.items) == dict(built.items)
    assert index.neighbours_all(k=5) == ContentIndex.build(catalog, sublinear_tf=sublinear).neighbours_all(k=5)
