"""service/cluster_transport.py against the session's real cluster: a multi-slot MGET is
one MGET per slot, its values back in key order; a slot the client's layout does not
cover fails as a dead node would (NodeFailure: the request degrades), nothing else."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from core.redis_conn import connect
from service.cluster_transport import ClusterTransport, NodeFailure
from service.store import CircuitBreaker


@pytest.fixture
def transport(redis_cluster):
    redis_cluster.flush()
    t = ClusterTransport(connect(redis_cluster.url), CircuitBreaker)
    yield t
    t.close()


def test_a_multi_slot_mget_comes_back_in_key_order(transport):
    keys = [f"{{p:{i}}}" for i in range(200)]
    for i in range(0, 200, 3):  # every third key exists
        transport.client.set(keys[i], f"v{i}")
    per_node, _ = transport.plan([("MGET", *keys)])
    assert len(per_node) == 3  # every master holds some of them
    assert sum(len(cmds) for _, cmds in per_node.values()) == len({key_slot(k.encode()) for k in keys})
    (values,) = transport.round_trip([("MGET", *keys)], timeout=5)
    assert values == [f"v{i}".encode() if i % 3 == 0 else None for i in range(200)]


def test_a_slot_no_known_node_serves_fails_like_a_dead_node(transport):
    key = "{p:7}"
    slots = transport.client.nodes_manager.slots_cache
    saved = slots.pop(key_slot(key.encode()))
    try:
        with pytest.raises(NodeFailure) as failure:
            transport.round_trip([("MGET", key, "{p:8}")], timeout=5)
        assert failure.value.reason == "error"
    finally:
        slots.setdefault(key_slot(key.encode()), saved)  # unless the layout was re-read meanwhile
