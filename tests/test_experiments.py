"""Experiments through the real service, a real redis-server and the real write API:
routing by the salted hash, both versions in answers and metrics, attribution of
engagements to the variant that served the post, stop, promote, the automatic stop,
shadow mode, and the CLI's errors."""

from __future__ import annotations

import json

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from core import contract
from core.embedded_redis import EmbeddedRedis, free_port
from core.experiments import variant_of
from nichefeed.v1 import ranking_pb2, writes_pb2
from service.shadow import compare
from tests.experiment_helpers import Running, clone_bundle
from training import experiment
from training import publish as publishing

USERS = [f"u{i}" for i in range(60)]


@pytest.fixture(scope="module")
def lab(tiny_bundle, learned_bundle, tmp_path_factory):
    """Control `ctl` (affinity scorer) serving, candidate `cand` (learned scorer) staged."""
    models = tmp_path_factory.mktemp("exp-models")
    clone_bundle(tiny_bundle, models, "ctl")
    clone_bundle(learned_bundle, models, "cand")
    server = EmbeddedRedis(tmp_path_factory.mktemp("exp-redis"), port=free_port()).start()
    client = redis.Redis.from_url(server.url)
    publishing.publish(models / "ctl", client, progress=False)
    publishing.publish(models / "cand", client, progress=False, serve=False, force=True)
    running = Running(models, server.url)
    yield running, client, models
    running.stop()
    client.close()
    server.stop()


@pytest.fixture
def exp(lab):
    """An experiment started (grace 0) and seen by the service; stopped afterwards."""
    running, client, models = lab
    started = []

    def start(**kw):
        kw.setdefault("share", 50)
        kw.setdefault("salt", "s1")
        defn = experiment.start(client, models, "cand", grace_s=0, **kw)
        running.poll()
        started.append(defn)
        return defn

    yield start
    client.delete(contract.EXPERIMENT_KEY)
    running.poll()


def rank(running, user, limit=20):
    return running.ranker.Rank(ranking_pb2.RankRequest(user_id=user, limit=limit), timeout=10)


def sample(name, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_users_are_routed_by_the_salted_hash_and_answers_say_which_version(lab, exp):
    running, client, _ = lab
    defn = exp()
    assert running.svc.experiments.running.candidate.version == "cand"
    before = {v: sample("nichefeed_variant_requests_total", variant=v, code="OK") for v in contract.VARIANTS}
    seen = {}
    for user in USERS:
        resp = rank(running, user)
        expected = variant_of(defn, user)
        assert resp.experiment == expected
        assert resp.model_version == ("cand" if expected == contract.VARIANT_CANDIDATE else "ctl")
        seen[user] = resp.experiment
    assert set(seen.values()) == set(contract.VARIANTS)  # 60 users at 50%: both variants serve
    for user in USERS[:10]:  # a user stays in their variant
        assert rank(running, user).experiment == seen[user]
    counts = list(seen.values()) + [seen[u] for u in USERS[:10]]
    for v in contract.VARIANTS:
        got = sample("nichefeed_variant_requests_total", variant=v, code="OK") - before[v]
        assert got == counts.count(v)


def test_without_an_experiment_answers_name_no_variant(lab):
    running, client, _ = lab
    running.poll()
    resp = rank(running, "u1")
    assert resp.experiment == "" and resp.model_version == "ctl"


@settings(max_examples=200, deadline=None)
@given(
    salt=st.text(alphabet="abcdef0123456789", min_size=1, max_size=12),
    user=st.text(min_size=1, max_size=20),
    low=st.floats(0, 99),
    high=st.floats(0, 99),
)
def test_assignment_is_stable_and_a_larger_share_only_adds_users(salt, user, low, high):
    low, high = sorted((low, high))
    base = dict(id="e", candidate="b", control="a", salt=salt, started_at=0)
    small = contract.ExperimentDefinition(share=low, **base)
    large = contract.ExperimentDefinition(share=high, **base)
    assert variant_of(small, user) == variant_of(small, user)
    if variant_of(small, user) == contract.VARIANT_CANDIDATE:
        assert variant_of(large, user) == contract.VARIANT_CANDIDATE


def test_share_is_close_to_the_asked_percent():
    defn = contract.ExperimentDefinition(id="e", candidate="b", control="a", share=10, salt="x", started_at=0)
    n = sum(variant_of(defn, f"user{i}") == contract.VARIANT_CANDIDATE for i in range(20_000))
    assert 1800 <= n <= 2200  # 10% of 20000, binomial sd 42: 5 sd either side


def attributed(client, experiment_id):
    out = []
    for _, fields in client.xrange(contract.EXPERIMENT_LOG_KEY):
        if contract.LOG_ATTRIBUTED.encode() in fields:
            e = contract.decode_log(fields[contract.LOG_ATTRIBUTED.encode()], contract.LOG_ATTRIBUTED_FIELDS)
            if e["experiment"] == experiment_id:
                out.append(e)
    return out


def test_engagements_are_attributed_to_the_variant_that_served_the_post(lab, exp):
    running, client, _ = lab
    defn = exp()
    users = {v: next(u for u in USERS if variant_of(defn, u) == v) for v in contract.VARIANTS}
    served = {v: [i.post_id for i in rank(running, u).items] for v, u in users.items()}
    running.svc.served.flush()
    events = [
        writes_pb2.EngagementEvent(
            event_id=f"{defn.id}-{v}", user_id=users[v], post_id=served[v][0], kind=writes_pb2.LIKE
        )
        for v in contract.VARIANTS
    ]
    # A post the experiment never served to this user: not attributed.
    unserved = next(p for p in running.svc.holder.current.post_ids if p not in served[contract.VARIANT_CONTROL])
    events.append(
        writes_pb2.EngagementEvent(
            event_id=f"{defn.id}-x", user_id=users[contract.VARIANT_CONTROL], post_id=unserved, kind=writes_pb2.LIKE
        )
    )
    request = writes_pb2.WriteEngagementsRequest(events=events)
    assert running.writer.WriteEngagements(request, timeout=10).applied == 3
    assert running.writer.WriteEngagements(request, timeout=10).duplicates == 3  # a retry is attributed once
    got = sorted((e["variant"], e["user_id"], e["post_id"], e["kind"]) for e in attributed(client, defn.id))
    assert got == sorted((v, users[v], served[v][0], "like") for v in contract.VARIANTS)
    # The served memory: a hash per user and window, expiring.
    key = next(
        iter(client.scan_iter(match=contract.served_key(users[contract.VARIANT_CANDIDATE], 0).rsplit(":", 1)[0] + ":*"))
    )
    assert 0 < client.ttl(key) <= 2 * contract.SERVED_WINDOW_S


def test_stop_and_promote(lab, exp):
    running, client, models = lab
    defn = exp()
    user = next(u for u in USERS if variant_of(defn, u) == contract.VARIANT_CANDIDATE)
    assert rank(running, user).model_version == "cand"
    experiment.stop(client)
    running.poll()
    resp = rank(running, user)
    assert (resp.model_version, resp.experiment) == ("ctl", "")
    assert json.loads(client.get(contract.EXPERIMENT_STOPPED_KEY))["reason"] == "stopped by an operator"
    with pytest.raises(experiment.ExperimentError, match="no experiment is running"):
        experiment.stop(client)
    # Promote: the candidate becomes current for everyone, the experiment ends.
    exp()
    experiment.promote(client, models)
    running.poll()
    try:
        assert publishing.current_version(client) == "cand"
        assert all(rank(running, u).model_version == "cand" and rank(running, u).experiment == "" for u in USERS[:5])
    finally:
        publishing.flip(client, "ctl")  # back, for the other tests
        running.poll()
        assert running.svc.holder.current.version == "ctl"


def test_a_candidate_degrading_more_than_control_is_stopped_automatically(lab, exp):
    running, client, models = lab
    defn = exp(min_requests=5, max_excess=0.2)
    # The candidate's user records vanish from Redis: its answers come from memory (degraded).
    saved = {k: client.get(k) for k in client.scan_iter(match=contract.user_key("cand", "*"))}
    client.delete(*saved)
    stops = sample("nichefeed_experiment_auto_stops_total", rate="degraded")
    try:
        for user in USERS:
            resp = rank(running, user)
            assert resp.degraded == (resp.experiment == contract.VARIANT_CANDIDATE)
        running.poll()
        assert client.get(contract.EXPERIMENT_KEY) is None
        stopped = json.loads(client.get(contract.EXPERIMENT_STOPPED_KEY))
        assert stopped["definition"]["id"] == defn.id and stopped["reason"].startswith("degraded: candidate cand")
        assert sample("nichefeed_experiment_auto_stops_total", rate="degraded") == stops + 1
        assert running.svc.experiments.running is None
        assert all(rank(running, u).experiment == "" for u in USERS[:5])
    finally:
        client.mset(saved)


def test_shadow_mode_scores_the_candidate_without_serving_it(lab, exp):
    running, client, _ = lab
    exp(share=0, shadow_rate=1.0)
    scored = sample("nichefeed_shadow_runs_total", outcome="scored")
    overlaps = sample("nichefeed_shadow_overlap_count")
    for user in USERS[:5]:
        resp = rank(running, user)
        assert (resp.model_version, resp.experiment) == ("ctl", contract.VARIANT_CONTROL)
        running.svc.shadow.drain()
    assert sample("nichefeed_shadow_runs_total", outcome="scored") == scored + 5
    assert sample("nichefeed_shadow_overlap_count") == overlaps + 5


def test_compare_measures_overlap_and_rank_correlation():
    a = [f"p{i}" for i in range(20)]
    assert compare(a, a) == (1.0, 1.0)
    assert compare(a, list(reversed(a))) == (1.0, pytest.approx(-1.0))
    assert compare(a, [f"q{i}" for i in range(20)]) == (0.0, None)
    overlap, rho = compare(a, a[:10] + [f"q{i}" for i in range(10)])
    assert (overlap, rho) == (0.5, 1.0)
    assert compare(a[:5], a[:3]) == (1.0, 1.0)  # the shorter list sets k
    assert compare([], a) is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["experiment", "start"], "START: the candidate version is required"),
        (["experiment", "start", "ctl"], "START: ctl is the serving version"),
        (["experiment", "start", "nope"], "START: version nope is not published"),
        (["experiment", "start", "cand", "--share", "150"], "SHARE: must be a percent in [0, 100), got 150.0"),
        (["experiment", "stop"], "no experiment is running"),
        (["experiment", "promote"], "no experiment is running"),
    ],
)
def test_cli_errors_are_one_line_with_exit_status_2(lab, monkeypatch, capsys, argv, message):
    from training.__main__ import main

    running, client, models = lab
    url = client.connection_pool.connection_kwargs
    monkeypatch.setenv("NICHEFEED_REDIS_URL", f"redis://{url['host']}:{url['port']}/0")
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--models", str(models)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def flags(client, version, post_id) -> int:
    return int(contract.decode_posts([client.get(contract.post_key(version, post_id))])["flags"][0])


def test_posts_hidden_during_an_experiment_are_hidden_in_the_candidate_too(lab, exp):
    running, client, models = lab
    # Written before this worker has read the experiment (not kept in step by the script):
    # the replay of the control's live stream catches it up before the candidate serves.
    defn = experiment.start(client, models, "cand", share=50, salt="s2", grace_s=0)
    user = next(u for u in USERS if variant_of(defn, u) == contract.VARIANT_CANDIDATE)
    first, second = [i.post_id for i in rank(running, user).items[:2]]
    delete = writes_pb2.PostEvent(event_id=f"{defn.id}-del1", op=writes_pb2.POST_OP_DELETE, post_id=first)
    assert running.writer.WritePosts(writes_pb2.WritePostsRequest(events=[delete]), timeout=10).applied == 1
    assert not flags(client, "cand", first) & contract.FLAG_DELETED
    running.poll()
    assert flags(client, "cand", first) & contract.FLAG_DELETED
    # Written while it runs: the script applies it to both versions at once.
    hide = writes_pb2.PostEvent(
        event_id=f"{defn.id}-vis2",
        op=writes_pb2.POST_OP_SET_VISIBILITY,
        post_id=second,
        visibility=writes_pb2.VISIBILITY_MEMBERS,
    )
    assert running.writer.WritePosts(writes_pb2.WritePostsRequest(events=[hide]), timeout=10).applied == 1
    assert flags(client, "cand", second) & contract.FLAG_PRIVATE
    resp = rank(running, user)
    assert resp.model_version == "cand" and first not in {i.post_id for i in resp.items}
    client.delete(contract.EXPERIMENT_KEY)
    running.poll()
