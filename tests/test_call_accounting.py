"""Every call counted by its status (nichefeed_requests_total{method, code}): calls denied
UNAUTHENTICATED, messages over the size limit, and the write RPCs; the bearer token's
scheme in any case; a warning when the token would cross the network in clear text.
A real service on the shared Redis, with a token and without TLS, and real channels."""

from __future__ import annotations

import logging

import grpc
import pytest
from prometheus_client import REGISTRY

from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc, writes_pb2, writes_pb2_grpc
from service.api.accounting import MAX_MESSAGE_BYTES
from service.app import Service
from tests.conftest import service_config

TOKEN = "a-token-of-the-accounting-tests"


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def guarded(published, redis_server, tmp_path_factory):
    token = tmp_path_factory.mktemp("token") / "token"
    token.write_text(TOKEN + "\n")
    records = _Records()
    logger = logging.getLogger("nichefeed.security")
    logger.addHandler(records)
    try:
        svc = Service(service_config(published, auth_token_file=str(token)), redis_server.url).start(metrics=False)
    finally:
        logger.removeHandler(records)
    ch = grpc.insecure_channel(f"127.0.0.1:{svc.port}")
    yield ranking_pb2_grpc.FeedRankerStub(ch), writes_pb2_grpc.FeedWriterStub(ch), records.lines
    ch.close()
    svc.stop(grace=1)


def calls(method: str, code: str) -> float:
    return REGISTRY.get_sample_value("nichefeed_requests_total", {"method": method, "code": code}) or 0.0


def test_a_token_over_plaintext_grpc_is_warned_about_once_at_start(guarded):
    _, _, warnings = guarded
    assert len(warnings) == 1 and "without TLS" in warnings[0] and "--tls-cert" in warnings[0]


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_bearer_scheme_is_case_insensitive(guarded, scheme):
    ranker, _, _ = guarded
    before = calls("Rank", "OK")
    resp = ranker.Rank(
        ranking_pb2.RankRequest(user_id="u3", limit=5), metadata=[("authorization", f"{scheme} {TOKEN}")], timeout=10
    )
    assert len(resp.items) == 5
    assert calls("Rank", "OK") == before + 1


@pytest.mark.parametrize("authorization", [None, f"Basic {TOKEN}", "Bearer wrong-token-of-the-same-size!!", TOKEN])
def test_denied_calls_are_counted_unauthenticated(guarded, authorization):
    ranker, writer, _ = guarded
    metadata = [("authorization", authorization)] if authorization else []
    before_rank, before_write = calls("Rank", "UNAUTHENTICATED"), calls("WritePosts", "UNAUTHENTICATED")
    for call, request in ((ranker.Rank, ranking_pb2.RankRequest(user_id="u3", limit=5)), (writer.WritePosts, None)):
        with pytest.raises(grpc.RpcError) as err:
            call(request or writes_pb2.WritePostsRequest(), metadata=metadata, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert calls("Rank", "UNAUTHENTICATED") == before_rank + 1
    assert calls("WritePosts", "UNAUTHENTICATED") == before_write + 1


def test_oversized_messages_are_refused_and_counted(guarded):
    ranker, writer, _ = guarded
    auth = [("authorization", f"Bearer {TOKEN}")]
    huge_rank = ranking_pb2.RankRequest(user_id="u1", limit=5, candidate_post_ids=["p" * 120] * 10_000)
    huge_batch = writes_pb2.WriteEngagementsRequest(
        events=[writes_pb2.EngagementEvent(event_id="e" * 100, user_id="u" * 100, post_id="p" * 100)] * 4_000
    )
    assert huge_rank.ByteSize() > MAX_MESSAGE_BYTES and huge_batch.ByteSize() > MAX_MESSAGE_BYTES
    before = {m: calls(m, "RESOURCE_EXHAUSTED") for m in ("Rank", "WriteEngagements", "StreamEngagementBatches")}
    for call, request in (
        (ranker.Rank, huge_rank),
        (writer.WriteEngagements, huge_batch),
        (writer.StreamEngagementBatches, iter([huge_batch])),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call(request, metadata=auth, timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"at most {MAX_MESSAGE_BYTES}" in err.value.details()
    assert {m: calls(m, "RESOURCE_EXHAUSTED") - before[m] for m in before} == {
        "Rank": 1,
        "WriteEngagements": 1,
        "StreamEngagementBatches": 1,
    }
    assert len(ranker.Rank(ranking_pb2.RankRequest(user_id="u1", limit=5), metadata=auth, timeout=10).items) == 5


def test_write_rpcs_are_counted_by_status_code(guarded):
    _, writer, _ = guarded
    auth = [("authorization", f"Bearer {TOKEN}")]
    ok, bad = calls("WriteEngagements", "OK"), calls("WriteEngagements", "INVALID_ARGUMENT")
    writer.WriteEngagements(writes_pb2.WriteEngagementsRequest(), metadata=auth, timeout=10)  # nothing to apply
    with pytest.raises(grpc.RpcError) as err:
        bad_kind = writes_pb2.EngagementEvent(event_id="acct-1", user_id="u1", post_id="p1")
        writer.WriteEngagements(writes_pb2.WriteEngagementsRequest(events=[bad_kind]), metadata=auth, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert calls("WriteEngagements", "OK") == ok + 1
    assert calls("WriteEngagements", "INVALID_ARGUMENT") == bad + 1


def test_each_methods_wrapper_is_built_once():
    """gRPC asks the interceptor on every call; the wrapper of a method's handler is the
    same object every time (building it per call was ~10 us of every Rank)."""
    from service.api.accounting import CallAccounting

    handlers = {
        "/nichefeed.v1.FeedRanker/Rank": grpc.unary_unary_rpc_method_handler(lambda request, context: request),
        "/grpc.health.v1.Health/Check": grpc.unary_unary_rpc_method_handler(lambda request, context: request),
    }

    class Details:
        def __init__(self, method):
            self.method, self.invocation_metadata = method, ()

    acc = CallAccounting()
    first = acc.intercept_service(lambda d: handlers[d.method], Details("/nichefeed.v1.FeedRanker/Rank"))
    assert first is not handlers["/nichefeed.v1.FeedRanker/Rank"]  # wrapped: counted
    assert acc.intercept_service(lambda d: handlers[d.method], Details("/nichefeed.v1.FeedRanker/Rank")) is first
    health = handlers["/grpc.health.v1.Health/Check"]
    assert acc.intercept_service(lambda d: handlers[d.method], Details("/grpc.health.v1.Health/Check")) is health
    other = grpc.unary_unary_rpc_method_handler(lambda request, context: request)  # another handler, same name
    assert acc.intercept_service(lambda d: other, Details("/nichefeed.v1.FeedRanker/Rank")) is not first
