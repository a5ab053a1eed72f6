import numpy as np
import pytest

from core import contract


def test_user_record_round_trip():
    vec = np.arange(8, dtype=np.float32) / 3
    raw = contract.encode_user(vec, np.array([4, 9]), np.array([contract.ROLE_MEMBER, contract.ROLE_MODERATOR]))
    rec = contract.decode_user(raw)
    assert rec.vector.tolist() == vec.tolist()
    assert rec.communities.tolist() == [4, 9]
    assert rec.roles.tolist() == [contract.ROLE_MEMBER, contract.ROLE_MODERATOR]


@pytest.mark.parametrize("raw", [b"", b"\x01\x02", b"\x01" + b"\x00" * 20])
def test_malformed_user_record_is_refused(raw):
    with pytest.raises(contract.ContractError):
        contract.decode_user(raw)


def test_post_records_round_trip_and_missing_values_fail_closed():
    rec = np.zeros(2, dtype=contract.POST_DTYPE)
    rec["row"] = [5, 6]
    rec["community"] = [1, 2]
    rec["flags"] = [0, contract.FLAG_PRIVATE]
    rec["created_at"] = [100, 200]
    values = contract.encode_posts(rec)
    assert all(len(v) == contract.POST_RECORD_SIZE for v in values)
    decoded = contract.decode_posts([values[0], None, values[1], b"short"])
    assert decoded["row"].tolist() == [5, 0, 6, 0]
    present = (decoded["flags"] & contract.FLAG_PRESENT) != 0
    assert present.tolist() == [True, False, True, False]
    assert decoded["flags"][2] & contract.FLAG_PRIVATE


def test_keys_are_versioned_and_namespaced():
    assert contract.user_key("v1", "u7") == "nf:3:m:v1:u:{u:u7}"
    assert contract.post_key("v1", "p3") == contract.post_key_prefix("v1") + "p3" + contract.POST_KEY_SUFFIX
    assert contract.post_key("v2", "p3") != contract.post_key("v1", "p3")
    assert contract.CURRENT_KEY == "nf:3:{g}:current"
