"""Rank and writes against a real Redis Cluster of this module's own (3 masters, 3
replicas), one of whose masters is killed under load.

- The cluster answers exactly as one node does (same bundle, same requests).
- A master is SIGKILLed during a burst of Rank and write calls: every Rank answers (degraded
  where its data was on the dead master), no private post ever reaches a non-member; writes
  touching the dead master's slots answer UNAVAILABLE until its replica is promoted and has
  a replica of its own again (the killed node, restarted), then apply; every write acknowledged before, during or after is there afterwards (writes wait
  for a replica's acknowledgement: service/writes/cluster.py).
"""

from __future__ import annotations

import random
import threading
import time

import grpc
import numpy as np
import pytest

from core import contract
from core.bundle import load_bundle
from core.local_cluster import LocalCluster
from core.redis_conn import connect
from nichefeed.v1 import ranking_pb2 as rpb
from nichefeed.v1 import ranking_pb2_grpc, writes_pb2_grpc
from nichefeed.v1 import writes_pb2 as wpb
from service.app import Service
from tests.conftest import service_config
from training import publish as publishing

BURST_S = 12.0  # the load runs this long at most (the failover takes 2-4 s of it)
RANK_DEADLINE_S = 2.0


@pytest.fixture(scope="module")
def cluster_world(tiny_bundle, published, tmp_path_factory):
    cluster = LocalCluster(tmp_path_factory.mktemp("failover-cluster")).start()
    client = connect(cluster.url)
    publishing.publish(tiny_bundle, client, progress=False)
    svc = Service(service_config(tiny_bundle, redis_timeout_ms=300), cluster.url).start(metrics=False)
    ch = grpc.insecure_channel(f"127.0.0.1:{svc.port}")
    yield cluster, client, svc, ch, load_bundle(tiny_bundle)
    ch.close()
    svc.stop(grace=1)
    client.close()
    cluster.stop()


def test_the_cluster_answers_exactly_as_one_node(cluster_world, ranker):
    _, _, _, ch, bundle = cluster_world
    on_cluster = ranking_pb2_grpc.FeedRankerStub(ch)
    users = [str(u) for u in bundle.user_ids[:: max(1, len(bundle.user_ids) // 25)]]
    for user in users:
        for request in (
            rpb.RankRequest(user_id=user, limit=30),
            rpb.RankRequest(user_id=user, limit=10, community_id=str(bundle.community_ids[0])),
        ):
            one, many = ranker.Rank(request, timeout=5), on_cluster.Rank(request, timeout=5)
            assert not one.degraded and not many.degraded
            assert [i.post_id for i in many.items] == [i.post_id for i in one.items]


def _private_posts(bundle) -> dict[str, int]:
    """post id -> community row, for every post only members may see."""
    private = bundle[contract.COMMUNITY_PRIVATE_FILE][bundle[contract.POST_COMMUNITY_FILE]]
    private |= bundle[contract.POST_MEMBERS_ONLY_FILE]
    rows = np.flatnonzero(private)
    return {str(bundle.post_ids[r]): int(bundle[contract.POST_COMMUNITY_FILE][r]) for r in rows}


def _members(bundle) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for u, c in zip(bundle[contract.MEMBERSHIP_USER_FILE].tolist(), bundle[contract.MEMBERSHIP_COMMUNITY_FILE]):
        out.setdefault(str(bundle.user_ids[u]), set()).add(int(c))
    return out


def test_killing_a_master_under_load_leaks_nothing_and_loses_no_acknowledged_write(cluster_world):
    cluster, client, svc, ch, bundle = cluster_world
    ranker, writer = ranking_pb2_grpc.FeedRankerStub(ch), writes_pb2_grpc.FeedWriterStub(ch)
    private, members = _private_posts(bundle), _members(bundle)
    assert private, "the tiny world has private posts"
    users = [str(u) for u in bundle.user_ids]
    public = [str(p) for p in bundle.post_ids if str(p) not in private][:500]
    candidates = list(private)[:150] + public[:150]
    # The victim: a master that does not hold the global {g} slot (the pointer and the event
    # log stay up, so the writes that fail are exactly those touching the dead slots).
    global_master = cluster.master_of(contract.CURRENT_KEY)
    victim = next(p for p in cluster.master_ports() if p != global_master)

    stop = threading.Event()
    problems: list[str] = []
    acked: list[wpb.EngagementEvent] = []
    unavailable = []
    ranks = {"ok": 0, "degraded": 0}
    lock = threading.Lock()

    def rank_loop(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            user = rng.choice(users)
            request = rpb.RankRequest(user_id=user, limit=50, candidate_post_ids=rng.sample(candidates, 100))
            try:
                resp = ranker.Rank(request, timeout=RANK_DEADLINE_S)
            except grpc.RpcError as err:
                with lock:
                    problems.append(f"Rank {user}: {err.code()} {err.details()}")
                continue
            for item in resp.items:
                c = private.get(item.post_id)
                if c is not None and (c not in members.get(user, ()) or resp.degraded):
                    with lock:
                        problems.append(f"private {item.post_id} of c{c} reached {user} (degraded={resp.degraded})")
            with lock:
                ranks["degraded" if resp.degraded else "ok"] += 1

    def write_loop(seed: int) -> None:
        rng = random.Random(seed)
        n = 0
        while not stop.is_set():
            n += 1
            event = wpb.EngagementEvent(
                event_id=f"fo-{seed}-{n}", user_id=rng.choice(users), post_id=rng.choice(public), kind=wpb.VIEW
            )
            try:
                writer.WriteEngagements(wpb.WriteEngagementsRequest(events=[event]), timeout=5)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    with lock:
                        problems.append(f"write {event.event_id}: {err.code()} {err.details()}")
                else:
                    with lock:
                        unavailable.append(event)
                continue
            with lock:
                acked.append(event)

    threads = [threading.Thread(target=rank_loop, args=(s,)) for s in range(3)]
    threads += [threading.Thread(target=write_loop, args=(100 + s,)) for s in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        acked_before = len(acked)
        cluster.kill(victim)
        cluster.wait_healthy(timeout=BURST_S, replicas=0)  # the replica promoted, every slot served
        # The promoted master has no replica yet, so writes to its slots cannot be
        # acknowledged by one (WAIT): they stay UNAVAILABLE until the old master is back,
        # as its replica.
        cluster.restart(victim)
        cluster.wait_healthy(timeout=BURST_S)
        promoted_at = len(acked)
        end = time.monotonic() + BURST_S
        while len(acked) < promoted_at + 20 and time.monotonic() < end:  # writes apply again
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not problems, problems[:5]
    assert acked_before > 0 and ranks["ok"] > 0
    assert unavailable, "no write touched the dead master's slots while it was down"
    assert len(acked) >= promoted_at + 20, "writes did not apply again after the promotion"

    # Nothing acknowledged is lost: every acked event's marker and its effect (the user's
    # seen set) are on the masters now serving, the promoted replica's among them.
    version = svc.holder.current.version
    for event in acked:
        marker = client.get(contract.applied_key(event.event_id))
        assert marker is not None and not marker.endswith(b"|p"), event.event_id
        assert client.zscore(contract.seen_key(event.user_id), event.post_id) is not None, event.event_id
    assert client.exists(contract.published_key(version))
