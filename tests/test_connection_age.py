"""NICHEFEED_MAX_CONNECTION_AGE_S: the server closes a client's connection once it is that
old (gRPC GOAWAY), so a client balancing over DNS reconnects and re-resolves (how it finds
replicas added since), and the client's calls keep succeeding across the close. Without
the setting a connection stays open."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc
from service.app import Service
from tests.conftest import service_config


def watch(channel: grpc.Channel) -> list[grpc.ChannelConnectivity]:
    seen: list[grpc.ChannelConnectivity] = []
    lock = threading.Lock()

    def record(state):
        with lock:
            seen.append(state)

    channel.subscribe(record, try_to_connect=False)
    return seen


def rank_a_few(stub, user: str, calls: int, pause_s: float) -> int:
    ok = 0
    for _ in range(calls):
        reply = stub.Rank(ranking_pb2.RankRequest(user_id=user, limit=5), timeout=5, wait_for_ready=True)
        ok += bool(reply.items)
        time.sleep(pause_s)
    return ok


@pytest.mark.parametrize("max_age_s", [1.0, 0.0])
def test_connections_are_closed_at_the_max_age_and_calls_carry_on(published, redis_server, max_age_s):
    svc = Service(service_config(published, max_connection_age_s=max_age_s, drain_s=1.0), redis_server.url).start()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{svc.port}")
        states = watch(channel)
        stub = ranking_pb2_grpc.FeedRankerStub(channel)
        # 3.5 s of calls: past 1 s (+-10% jitter) and its grace the server sends GOAWAY and
        # the channel goes IDLE before reconnecting for the next call.
        assert rank_a_few(stub, "u5", calls=7, pause_s=0.5) == 7
        channel.close()
        went_idle = grpc.ChannelConnectivity.IDLE in states[states.index(grpc.ChannelConnectivity.READY) :]
        assert went_idle is (max_age_s > 0), states
    finally:
        svc.stop(grace=1)
