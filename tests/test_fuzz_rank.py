"""Bad input from a generated set: the server never crashes and always answers with a
status; INVALID_ARGUMENT names the field; a bounded request is never an internal error."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.contract import MAX_ID_BYTES
from nichefeed.v1 import ranking_pb2
from service.stages.validate import MAX_LIST

FIELDS = ("user_id", "limit", "candidate_post_ids", "community_id", "exclude_post_ids", "request")
EXPECTED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}

ids = st.one_of(
    st.sampled_from(
        ["u1", "u7", "p1", "p42", "c3", "", " u1", "u1\n", "\x00", "é" * 65, "x" * 129, "x" * MAX_ID_BYTES]
    ),
    st.text(max_size=140),
)
id_lists = st.one_of(
    st.lists(ids, max_size=20),
    st.integers(MAX_LIST - 1, MAX_LIST + 2).map(lambda n: [f"p{i}" for i in range(n)]),
)
requests = st.builds(
    ranking_pb2.RankRequest,
    user_id=ids,
    limit=st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(-2, 205)),
    candidate_post_ids=id_lists,
    community_id=ids,
    exclude_post_ids=id_lists,
    explain=st.booleans(),
)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(request=requests)
def test_generated_requests_get_an_answer_or_a_clear_status(ranker, request):
    try:
        resp = ranker.Rank(request, timeout=10)
    except grpc.RpcError as err:
        assert err.code() in EXPECTED, (err.code(), err.details())
        field = err.details().split(":", 1)[0].split("[", 1)[0]
        assert field in FIELDS, err.details()
        return
    assert 0 <= len(resp.items) <= request.limit
    assert len({i.post_id for i in resp.items}) == len(resp.items)
    assert not set(request.exclude_post_ids) & {i.post_id for i in resp.items}
    if request.candidate_post_ids:
        assert {i.post_id for i in resp.items} <= set(request.candidate_post_ids)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(payload=st.binary(max_size=300))
def test_undecodable_bytes_get_a_status(channel, payload):
    raw = channel.unary_unary("/nichefeed.v1.FeedRanker/Rank", request_serializer=None, response_deserializer=None)
    try:
        raw(payload, timeout=10)  # some byte strings are valid (empty) requests
    except grpc.RpcError as err:
        assert err.code() in EXPECTED, (err.code(), err.details())


def test_an_oversized_message_is_refused_and_the_server_lives_on(ranker, channel):
    huge = ranking_pb2.RankRequest(user_id="u1", limit=5, candidate_post_ids=["p" * 120] * 10_000)
    with pytest.raises(grpc.RpcError) as err:
        ranker.Rank(huge, timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert len(ranker.Rank(ranking_pb2.RankRequest(user_id="u1", limit=5), timeout=10).items) == 5
