"""rec_ids: they round-trip, and the job can tell one issued to this user from any other."""

from __future__ import annotations

import pytest

from transforms.events import REC_ID_PATTERN
from transforms.recid import NO_EXPERIMENT, BadRecId, RecId, decode_rec_id, encode_rec_id

SECRET = "s3cret"


def test_round_trip_and_shape():
    rec = RecId("exp-1", "treatment", "home", 1_765_000_000_123, "0a1b2c3d")
    token = encode_rec_id(rec, "u1", SECRET)
    assert REC_ID_PATTERN.fullmatch(token)  # what the event parser accepts
    assert decode_rec_id(token, "u1", SECRET) == rec
    none = RecId(NO_EXPERIMENT, NO_EXPERIMENT, "ads", 0, "ffffffff")
    assert decode_rec_id(encode_rec_id(none, "u1", SECRET), "u1", SECRET) == none


@pytest.mark.parametrize("user, secret", [("u2", SECRET), ("u1", "other")])
def test_another_user_or_secret_is_unknown(user, secret):
    token = encode_rec_id(RecId("e", "v", "home", 5, "00000000"), "u1", SECRET)
    with pytest.raises(BadRecId) as err:
        decode_rec_id(token, user, secret)
    assert err.value.reason == "unknown_rec_id"


def test_tampered_part_is_unknown():
    token = encode_rec_id(RecId("e", "control", "home", 5, "00000000"), "u1", SECRET)
    with pytest.raises(BadRecId) as err:
        decode_rec_id(token.replace(".control.", ".treatment."), "u1", SECRET)
    assert err.value.reason == "unknown_rec_id"


@pytest.mark.parametrize("token", ["", "r1", "r2.~.~.home.5.00000000.0123456789abcdef", "r1.~.~.nowhere.5.00000000.0123456789abcdef", "r1.~.~.home.5.0000.0123456789abcdef", "r1.~.~.home.5.00000000.xyz"])
def test_malformed_is_bad(token):
    with pytest.raises(BadRecId) as err:
        decode_rec_id(token, "u1", SECRET)
    assert err.value.reason == "bad_rec_id"


def test_bad_parts_cannot_be_encoded():
    with pytest.raises(ValueError):
        RecId("has.dot", "v", "home", 0, "00000000")
    with pytest.raises(ValueError):
        RecId("e", "v", "home", 0, "XYZ")
