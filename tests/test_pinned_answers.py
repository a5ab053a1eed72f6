"""Pinned answers: the ranked ids of a fixed world, so that a hot-path optimisation can be
shown to change nothing a user sees.

The world is generated from fixed seeds (no training: arrays written directly, as in
test_privacy_property), published to a real redis-server with the real publisher, given
live state (seen posts, blocks, live graph entries, a pin, a cap, a live post), and ranked
by the service's own pipeline in process at a fixed `now`, in every mode, with a scorer
that weighs every feature, and again with that scorer blended with 20 lambdarank trees
(tests/data/pinned_trees.txt, fitted once on this world's own feature rows), as training
ships by default. The expected answers are in tests/data/pinned_answers.json and
pinned_answers_blend.json; the blend's were written while LightGBM's predict scored the
trees, before core/tree_ensemble.py took its place.

A change meant to alter rankings (a new feature, a new candidate source) regenerates them,
and says so in its commit:

    NICHEFEED_PIN_REGENERATE=1 .venv/bin/python -m pytest tests/test_pinned_answers.py
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import redis

from core import contract
from core.embedded_redis import EmbeddedRedis, free_port
from core.scoring import FEATURES, BlendScorer, LinearScorer, TreeScorer
from nichefeed.v1 import graph_pb2, writes_pb2
from service.app import Service
from service.pipeline import RankContext, RankQuery
from tests.conftest import service_config
from tests.test_privacy_property import END, SmallWorld, write_world_bundle
from training import publish as publishing

DATA = Path(__file__).parent / "data"
EXPECTED = {"linear": DATA / "pinned_answers.json", "blend": DATA / "pinned_answers_blend.json"}
N_COMM, N_USERS, N_POSTS = 8, 40, 600


def fixed_world() -> SmallWorld:
    rng = np.random.default_rng(2026)
    private = [c in (2, 5) for c in range(N_COMM)]
    members = [set(rng.choice(N_COMM, size=int(rng.integers(1, 4)), replace=False).tolist()) for _ in range(N_USERS)]
    return SmallWorld(
        private=private,
        members=members,
        post_community=rng.integers(0, N_COMM, N_POSTS).tolist(),
        post_author=rng.integers(0, N_USERS, N_POSTS).tolist(),
        post_deleted=(rng.random(N_POSTS) < 0.03).tolist(),
        post_old=(rng.random(N_POSTS) < 0.1).tolist(),
        blocked=[
            set(rng.choice(N_USERS, size=int(rng.integers(0, 2)), replace=False).tolist()) for _ in range(N_USERS)
        ],
        seen=[set(rng.choice(N_POSTS, size=int(rng.integers(0, 4)), replace=False).tolist()) for _ in range(N_USERS)],
    )


def fixed_scorer() -> LinearScorer:
    rng = np.random.default_rng(7)
    n = len(FEATURES)
    w = rng.normal(size=n).astype(np.float32)
    w[FEATURES.index("affinity")] = 2.0
    return LinearScorer(w, np.zeros(n, np.float32), np.ones(n, np.float32), 0.0, "linear")


def fixed_blend() -> BlendScorer:
    trees = TreeScorer((DATA / "pinned_trees.txt").read_text(), FEATURES)
    return BlendScorer(fixed_scorer(), trees, (3.0, 0.3))


@pytest.fixture(scope="module", params=["linear", "blend"])
def pinned_service(request, tmp_path_factory):
    models = tmp_path_factory.mktemp("pinned-models")
    server = EmbeddedRedis(tmp_path_factory.mktemp("pinned-redis"), port=free_port()).start()
    client = redis.Redis.from_url(server.url)
    world = fixed_world()
    scorer = fixed_scorer() if request.param == "linear" else fixed_blend()
    version = write_world_bundle(world, models, seed=11, scorer=scorer)
    publishing.publish(models / version, client, progress=False)
    pipe = client.pipeline()
    for u in range(N_USERS):
        if world.seen[u]:
            pipe.zadd(contract.seen_key(f"u{u}"), {f"p{p}": END for p in world.seen[u]})
        if world.blocked[u]:
            pipe.sadd(contract.blocked_key(f"u{u}"), *[f"u{a}" for a in world.blocked[u]])
    pipe.execute()
    cfg = dataclasses.replace(service_config(models / version), small_group_members=60)
    svc = Service(cfg, server.url)  # not started: the pipeline runs in process
    applier = svc.writer.applier
    now = END + 3600
    applier.write_posts(
        [
            writes_pb2.PostEvent(
                event_id="pin-live-1", op=writes_pb2.POST_OP_CREATE, post_id="live1", author_id="u3", community_id="c1"
            )
        ],
        now,
    )
    graph = [
        graph_pb2.GraphEvent(event_id="pin-g1", op=graph_pb2.GRAPH_OP_JOIN, user_id="u1", community_id="c2"),
        graph_pb2.GraphEvent(event_id="pin-g2", op=graph_pb2.GRAPH_OP_LEAVE, user_id="u2", community_id="c0"),
        graph_pb2.GraphEvent(event_id="pin-g3", op=graph_pb2.GRAPH_OP_MUTE, user_id="u3", community_id="c4"),
        graph_pb2.GraphEvent(
            event_id="pin-g4", op=graph_pb2.GRAPH_OP_CREATE_USER, user_id="fresh", community_ids=["c1", "c6"]
        ),
        graph_pb2.GraphEvent(event_id="pin-g5", op=graph_pb2.GRAPH_OP_CREATE_USER, user_id="alone"),
        graph_pb2.GraphEvent(
            event_id="pin-g6",
            op=graph_pb2.GRAPH_OP_SET_ROLE,
            user_id="u5",
            community_id=f"c{sorted(world.members[5])[0]}",
            role=graph_pb2.ROLE_MODERATOR,
        ),
    ]
    applier.write_graph(graph, now)
    c5 = f"c{sorted(world.members[5])[0]}"
    pin = next(f"p{p}" for p, c in enumerate(world.post_community) if f"c{c}" == c5 and not world.post_deleted[p])
    applier.write_rules(
        [
            graph_pb2.RuleEvent(
                event_id="pin-r1",
                op=graph_pb2.RULE_OP_PIN,
                moderator_id="u5",
                community_id=c5,
                post_id=pin,
                until=int(now) + 86_400,
            ),
            graph_pb2.RuleEvent(
                event_id="pin-r2",
                op=graph_pb2.RULE_OP_CAP_NON_MEMBER_SHARE,
                moderator_id="u5",
                community_id=c5,
                max_share=0.1,
            ),
        ],
        now,
    )
    svc.live.poll_once()  # the live post and the moderator's rules, in this process's live index
    yield svc, world, now, EXPECTED[request.param]
    svc.store.close()
    svc.write_client.close()
    client.close()
    server.stop()


def answers(svc, world: SmallWorld, now: float) -> dict[str, list]:
    b = svc.holder.current
    live = svc.live.index_for(b.version)
    users = [f"u{u}" for u in range(N_USERS)] + ["fresh", "alone"]
    queries = {}
    for u in users:
        queries[f"home {u}"] = RankQuery(user_id=u, limit=30, explain=True)
    for u in users[:12]:
        queries[f"community {u} c1"] = RankQuery(user_id=u, limit=20, community_id="c1")
        queries[f"rerank {u}"] = RankQuery(
            user_id=u, limit=50, candidate_post_ids=[f"p{p}" for p in range(0, N_POSTS, 7)] + ["live1"]
        )
    out = {}
    for name, q in queries.items():
        ctx = svc.pipeline.run(RankContext(query=q, bundle=b, now=now, live=live))
        out[name] = [[i.post_id, i.reasons] for i in ctx.items]
    return out


def test_ranked_answers_of_a_fixed_world_are_unchanged(pinned_service):
    svc, world, now, path = pinned_service
    scorer = svc.holder.current.scorer
    if isinstance(scorer, BlendScorer):  # the trees are scored by core/tree_ensemble.py, compiled
        assert scorer.trees.evaluator == "c"
    got = answers(svc, world, now)
    if os.environ.get("NICHEFEED_PIN_REGENERATE"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=0, sort_keys=True) + "\n")
    expected = json.loads(path.read_text())
    assert sum(len(v) for v in got.values()) > 1000  # a world that ranks plenty
    differ = [k for k in expected if got.get(k) != expected[k]]
    assert not differ, (
        f"{len(differ)} answers changed, first: {differ[0]}: {got.get(differ[0])} != {expected[differ[0]]}"
    )
    assert set(got) == set(expected)
