"""Ranking slots (--rank-slots): at most that many Rank calls run their pipeline at once in
a worker; the others wait in the order they came, no longer than their deadline; other
RPCs never wait. Over a real gRPC server and a real redis-server, and service/rank_slots.py
alone."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc
from service.app import Service
from service.config import load_config
from service.pipeline import RankPipeline
from service.rank_slots import RankSlots
from tests.conftest import service_config

WAIT_COUNT = "nichefeed_rank_slot_wait_seconds_count"


class Gate:
    """A first stage that holds its call until released (or fails it, when told to)."""

    name = "gate"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail = False
        self.users: list[str] = []  # the calls that got past the slot, in order

    def run(self, ctx) -> None:
        self.users.append(ctx.query.user_id)
        self.entered.set()
        assert self.release.wait(10), "the test never released the gate"
        if self.fail:
            raise RuntimeError("a stage failed")


@pytest.fixture(scope="module")
def one_slot(published, redis_server):
    svc = Service(service_config(published, rank_slots=1), redis_server.url).start(metrics=False)
    gate = Gate()
    svc.servicer.pipeline = RankPipeline([gate, *svc.pipeline.stages])
    ch = grpc.insecure_channel(f"127.0.0.1:{svc.port}")
    grpc.channel_ready_future(ch).result(timeout=10)
    yield svc, gate, ranking_pb2_grpc.FeedRankerStub(ch), health_pb2_grpc.HealthStub(ch)
    ch.close()
    svc.stop(grace=1)


def hold_the_slot(ranker, gate: Gate) -> tuple[threading.Thread, list]:
    """A Rank call that takes the one slot and stays in the pipeline until released."""
    gate.entered.clear()
    gate.release.clear()
    result: list = []

    def call():
        try:
            result.append(ranker.Rank(ranking_pb2.RankRequest(user_id="u8", limit=5), timeout=15))
        except grpc.RpcError as exc:
            result.append(exc)

    t = threading.Thread(target=call)
    t.start()
    assert gate.entered.wait(10)
    return t, result


def test_a_second_call_waits_for_the_slot_no_longer_than_its_deadline(one_slot):
    svc, gate, ranker, health = one_slot
    waited = REGISTRY.get_sample_value(WAIT_COUNT) or 0
    holder, result = hold_the_slot(ranker, gate)
    with pytest.raises(grpc.RpcError) as err:
        ranker.Rank(ranking_pb2.RankRequest(user_id="u9", limit=5), timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # other RPCs are answered while Rank's slot is taken
    assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == 1  # SERVING
    gate.release.set()
    holder.join(10)
    assert isinstance(result[0], ranking_pb2.RankResponse) and len(result[0].items) > 0
    # the slot was given back: the next call ranks at once
    assert len(ranker.Rank(ranking_pb2.RankRequest(user_id="u9", limit=5), timeout=10).items) > 0
    assert REGISTRY.get_sample_value(WAIT_COUNT) == waited + 3  # every call that asked for the slot


def test_a_waiting_call_ranks_once_the_slot_is_free(one_slot):
    svc, gate, ranker, _ = one_slot
    holder, _ = hold_the_slot(ranker, gate)
    waiting = ranker.Rank.future(ranking_pb2.RankRequest(user_id="u9", limit=5), timeout=10)
    threading.Timer(0.2, gate.release.set).start()
    assert len(waiting.result().items) > 0
    holder.join(10)


def test_a_failed_call_gives_its_slot_back(one_slot):
    svc, gate, ranker, _ = one_slot
    gate.fail = True
    try:
        holder, result = hold_the_slot(ranker, gate)
        gate.release.set()
        holder.join(10)
        assert result[0].code() == grpc.StatusCode.INTERNAL
    finally:
        gate.fail = False
    gate.release.set()
    assert len(ranker.Rank(ranking_pb2.RankRequest(user_id="u9", limit=5), timeout=5).items) > 0


def test_a_negative_rank_slots_is_refused_and_more_slots_than_threads_mean_threads(capsys, published, redis_server):
    with pytest.raises(SystemExit):
        load_config(["--rank-slots", "-1"], environ={})
    assert "--rank-slots must be 0 (no limit) or more" in capsys.readouterr().err
    assert load_config(["--rank-slots", "0"], environ={}).rank_slots == 0  # 0: no limit
    # --threads 1 alone (the default 2 slots) starts: one thread can hold one slot
    cfg = load_config(["--threads", "1"], environ={})
    svc = Service(service_config(published, threads=cfg.threads, rank_slots=cfg.rank_slots), redis_server.url)
    try:
        slots = svc.servicer._slots
        assert slots.acquire(timeout=0) and not slots.acquire(timeout=0)  # exactly one slot
        slots.release()
    finally:
        svc.store.close()
        svc.write_client.close()


def wait_until(condition, seconds: float = 10.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_waiting_calls_rank_in_the_order_they_came(one_slot):
    svc, gate, ranker, _ = one_slot
    slots = svc.servicer._slots
    holder, _ = hold_the_slot(ranker, gate)
    gate.users.clear()
    waiting = []
    for n, user in enumerate(("u1", "u2", "u3", "u4"), start=1):
        waiting.append(ranker.Rank.future(ranking_pb2.RankRequest(user_id=user, limit=5), timeout=10))
        wait_until(lambda n=n: slots.waiting() == n)  # queued before the next one comes
    gate.release.set()
    assert all(len(f.result().items) > 0 for f in waiting)
    holder.join(10)
    assert gate.users == ["u1", "u2", "u3", "u4"]


def in_thread(fn):
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    return t, out


def test_a_freed_slot_goes_to_the_longest_waiter_never_to_a_newcomer():
    slots = RankSlots(1)
    assert slots.acquire(timeout=0)
    first, got_first = in_thread(lambda: slots.acquire(timeout=10))
    wait_until(lambda: slots.waiting() == 1)
    second, got_second = in_thread(lambda: slots.acquire(timeout=10))
    wait_until(lambda: slots.waiting() == 2)
    slots.release()  # handed to the first waiter at once, whether or not it has run yet
    assert not slots.acquire(timeout=0)  # a newcomer does not take it
    first.join(10)
    assert got_first == [True] and slots.waiting() == 1
    slots.release()
    second.join(10)
    assert got_second == [True] and slots.waiting() == 0
    slots.release()
    assert slots.acquire(timeout=0)  # free again
    slots.release()


def test_a_waiter_that_times_out_leaves_the_queue_and_takes_no_slot():
    slots = RankSlots(2)
    assert slots.acquire(timeout=0) and slots.acquire(timeout=0)
    t0 = time.monotonic()
    assert not slots.acquire(timeout=0.05)
    assert time.monotonic() - t0 >= 0.05 and slots.waiting() == 0
    slots.release()
    assert slots.acquire(timeout=0)  # the slot given back went to no one else
    assert not slots.acquire(timeout=0)
    slots.release()
    slots.release()
    with pytest.raises(ValueError, match="released more slots than were taken"):
        slots.release()
    with pytest.raises(ValueError):
        RankSlots(0)
