"""Training on worlds with known answers: planted groups are recovered, cold posts are
placed by their community, engagers move posts, the service scores exactly what training
evaluated, and the synthetic world is reproducible."""

from __future__ import annotations

import filecmp
import json
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from core import contract, hotness
from core.bundle import load_bundle
from core.scoring import FEATURES
from service.pipeline import RankContext, RankQuery
from service.stages.hydrate import candidate_vectors, records_from_bundle
from service.stages.score import ScoreCandidates
from training import provenance
from training.features import Model, features
from training.load import load_dataset
from training.params import AlsParams, TrainParams
from training.state import state_as_of
from training.synthetic import EPOCH, WorldParams, generate, write_world
from training.train import train

DAY = 86_400


def two_groups(dir_):
    """Group A (a0..a9) lives in community A, group B (b0..b9) in B. 'cold_a' and
    'cold_b' are never engaged with; 'moved' is an A post that only B users engage with."""
    rng = np.random.default_rng(0)
    dir_.mkdir()
    posts = ["post_id,author_id,community_id,created_at"]
    for g in "ab":
        posts += [f"{g}{i}p,{g}{i % 10},{g.upper()},{i * DAY}" for i in range(20)]
    posts += [f"cold_a,a0,A,{15 * DAY}", f"cold_b,b0,B,{15 * DAY}", f"moved,a1,A,{DAY}"]
    (dir_ / "posts.csv").write_text("\n".join(posts) + "\n")
    (dir_ / "memberships.csv").write_text(
        "user_id,community_id,role,joined_at\n"
        + "".join(f"{g}{i},{g.upper()},{'moderator' if i == 0 else 'member'},0\n" for g in "ab" for i in range(10))
    )
    (dir_ / "communities.csv").write_text("community_id,is_private\nA,0\nB,1\n")
    events = ["user_id,post_id,kind,ts"]
    for g in "ab":
        for i in range(10):
            for p in rng.choice(20, 8, replace=False):
                events.append(f"{g}{i},{g}{p}p,like,{int(p) * DAY + 3600 + i}")
    events += [f"b{i},moved,share,{DAY + 7200 + i}" for i in range(10)]
    (dir_ / "events.csv").write_text("\n".join(events) + "\n")
    return dir_


@pytest.fixture(scope="module")
def groups_bundle(tmp_path_factory):
    data = two_groups(tmp_path_factory.mktemp("groups") / "data")
    params = TrainParams(als=AlsParams(factors=8, iterations=20), scorer="affinity", tune_als=False)
    return load_bundle(train(data, tmp_path_factory.mktemp("gm"), params, progress=False, quiet=True))


def test_cold_posts_are_placed_by_their_community(groups_bundle):
    b = groups_bundle
    U = np.asarray(b[contract.USER_FACTORS_FILE])
    V = np.asarray(b[contract.POST_VECTORS_FILE])
    a_users = [b.user_row[f"a{i}"] for i in range(10)]
    b_users = [b.user_row[f"b{i}"] for i in range(10)]
    for post, mine, theirs in (("cold_a", a_users, b_users), ("cold_b", b_users, a_users)):
        aff = U @ V[b.post_row[post]]
        assert aff[mine].min() > aff[theirs].max(), post


def test_engagers_move_a_post(groups_bundle):
    b = groups_bundle
    U = np.asarray(b[contract.USER_FACTORS_FILE])
    V = np.asarray(b[contract.POST_VECTORS_FILE])
    b_users = [b.user_row[f"b{i}"] for i in range(10)]
    a_users = [b.user_row[f"a{i}"] for i in range(10)]
    moved, cold = V[b.post_row["moved"]], V[b.post_row["cold_a"]]
    # An A post engaged only by B users now sits with B: every B user prefers it to a cold
    # A post, and B users as a group like it more than A users do.
    assert (U[b_users] @ moved > U[b_users] @ cold).all()
    assert (U[b_users] @ moved).mean() > (U[a_users] @ moved).mean()


def test_training_recovers_planted_topics(tmp_path):
    """Communities of one hidden topic end up next to each other in the embedding."""
    params = WorldParams(
        users=600, communities=30, posts=3000, events=40000, days=21, topics=3, seed=5, end=EPOCH + 21 * DAY
    )
    world = generate(params)
    write_world(world, tmp_path / "w", params)
    b = load_bundle(train(tmp_path / "w", tmp_path / "m", TrainParams(scorer="affinity"), progress=False, quiet=True))
    C = np.asarray(b[contract.COMMUNITY_FACTORS_FILE])
    C = C / np.linalg.norm(C, axis=1, keepdims=True)
    sim = C @ C.T
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.argmax(axis=1)
    topic = world.community_topic
    agreement = float(np.mean(topic[nearest] == topic))
    assert agreement >= 0.8, agreement  # chance is about 1/3


def test_the_service_scores_exactly_what_training_evaluates(learned_bundle, tiny_data):
    """No train/serve skew: the service's score stage and training's feature builder give
    the same features and scores for the same user, posts and time."""
    b = load_bundle(learned_bundle)
    assert b.scorer.kind == "blend"  # the default learned scorer, not the affinity-only fallback
    ds = load_dataset(tiny_data)
    end = b.data_end_ts
    serving = state_as_of(ds, end, ds.memberships_derived, b.manifest.params["hot_half_life_h"])
    user = b.user_row["u17"]
    members = np.asarray(b[contract.MEMBERSHIP_USER_FILE]) == user
    comms = np.asarray(b[contract.MEMBERSHIP_COMMUNITY_FILE])[members]
    roles = np.asarray(b[contract.MEMBERSHIP_ROLE_FILE])[members]
    assert len(comms) > 0
    rows = np.arange(0, ds.n_posts, 3)
    ctx = RankContext(query=RankQuery(user_id="u17", limit=10), bundle=b, now=end + 3600)
    ctx.user = contract.UserRecord(np.asarray(b[contract.USER_FACTORS_FILE][user]), comms, roles)
    ctx.user_roles = dict(zip(comms.tolist(), roles.tolist()))
    ctx.community_weights = b.community_weights_of(user)  # as hydrate_user sets them
    assert ctx.community_weights
    ctx.rows = rows
    ctx.post_ids = [b.post_ids[r] for r in rows]
    ctx.posts = records_from_bundle(ctx)
    ctx.vectors = candidate_vectors(ctx)
    ScoreCandidates().run(ctx)
    model = Model(
        np.asarray(b[contract.USER_FACTORS_FILE]),
        np.asarray(b[contract.COMMUNITY_FACTORS_FILE]),
        np.asarray(b[contract.POST_VECTORS_FILE]),
        neighbours=np.asarray(b[contract.POST_NEIGHBOURS_FILE]),
        neighbour_sims=np.asarray(b[contract.POST_NEIGHBOUR_SIMS_FILE]),
    )
    X = features(ds, serving, model, np.full(len(rows), user), rows, end + 3600)
    np.testing.assert_allclose(ctx.features, X, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ctx.scores, b.scorer.score(X), rtol=1e-5, atol=1e-5)
    assert (X[:, 2] > 0).sum() > 0 and (X[:, 2] == 0).sum() > 0  # members' and others' posts both scored
    hot, weight, co = FEATURES.index("hot"), FEATURES.index("community_weight"), FEATURES.index("co_engagement")
    assert (X[:, hot] > 0).sum() > 0 and (X[:, weight] > 0).sum() > 0 and (X[:, co] > 0).sum() > 0
    assert (X[:, FEATURES.index("author_tie")] > 0).sum() > 0  # the user's history authors, read alike


def test_learned_pipeline_beats_the_baselines_beyond_noise(learned_bundle):
    report = json.loads((learned_bundle / contract.REPORT_JSON_FILE).read_text())
    vs = report["pipeline_vs"]["ndcg@10"]
    for baseline in ("plain_als", "most_popular", "random"):
        assert vs[baseline]["beyond_noise"], (baseline, vs[baseline])
        assert vs[baseline]["ci95"][0] > 0
    manifest = json.loads((learned_bundle / contract.MANIFEST_FILE).read_text())
    assert manifest["metrics"]["gate_value"] == report["gate"]["value"]
    assert (learned_bundle / contract.REPORT_MD_FILE).read_text().startswith("# Evaluation report")


def test_report_says_where_its_numbers_were_computed(learned_bundle):
    """Another kind of CPU moves a report's last bits (training/provenance.py): each report
    names the libraries, the CPU and the SIMD and BLAS kernels that computed it."""
    import threadpoolctl

    env = json.loads((learned_bundle / contract.REPORT_JSON_FILE).read_text())["training"]["environment"]
    assert env["packages"]["numpy"] == np.__version__
    assert env["packages"]["lightgbm"] == metadata.version("lightgbm")
    assert env["cpu"]["flags"] == [f for f in provenance.CPU_FLAGS if f in Path("/proc/cpuinfo").read_text().split()]
    blas = {(b["version"], b["architecture"]) for b in threadpoolctl.threadpool_info() if b["user_api"] == "blas"}
    assert {(b["version"], b["kernels"]) for b in env["blas"]} <= blas and env["blas"]
    text = (learned_bundle / contract.REPORT_MD_FILE).read_text()
    assert f"- environment: {provenance.describe(env)}" in text.splitlines()
    assert f"numpy {np.__version__}" in text


def test_environment_differences_name_each_field_that_moved():
    here = provenance.numeric_environment()
    assert provenance.differences(here, here) == []
    there = json.loads(json.dumps(here))  # as read back from report.json
    there["packages"]["numpy"] = "2.4.0"
    there["numpy_simd"] = ["X86_V3"]
    assert provenance.differences(there, here) == [
        f"numpy_simd: ['X86_V3'] there, {here['numpy_simd']} here",
        f"numpy: 2.4.0 there, {here['packages']['numpy']} here",
    ]
    assert provenance.differences(None, here) == [
        "the saved report does not record its environment (trained before it was recorded)"
    ]


def test_a_failed_reevaluation_says_how_the_environment_differs(learned_bundle, tmp_path, capsys):
    from training.__main__ import explain_environment

    report = json.loads((learned_bundle / contract.REPORT_JSON_FILE).read_text())
    (tmp_path / contract.REPORT_JSON_FILE).write_text(json.dumps(report))
    explain_environment(tmp_path)
    assert capsys.readouterr().err == (
        "the bundle was trained in this same environment: the difference is not the machine's\n"
    )
    report["training"]["environment"]["packages"]["lightgbm"] = "4.6.0"
    (tmp_path / contract.REPORT_JSON_FILE).write_text(json.dumps(report))
    explain_environment(tmp_path)
    assert capsys.readouterr().err.splitlines() == [
        "the bundle was trained in another environment (last-bit differences are expected):",
        f"  lightgbm: 4.6.0 there, {metadata.version('lightgbm')} here",
    ]


def test_synthetic_world_is_reproducible(tmp_path):
    params = WorldParams(users=200, communities=12, posts=1500, events=8000, days=14, seed=3, end=EPOCH + 14 * DAY)
    for out in ("one", "two"):
        write_world(generate(params), tmp_path / out, params)
    for name in ("communities.csv", "memberships.csv", "posts.csv", "events.csv"):
        assert filecmp.cmp(tmp_path / "one" / name, tmp_path / "two" / name, shallow=False), name
    assert np.array_equal(
        np.load(tmp_path / "one/truth/author_skill.npy"), np.load(tmp_path / "two/truth/author_skill.npy")
    )


def test_world_shape(tmp_path):
    """Power-law group sizes, 1-5 groups per user, every role, private groups and spam."""
    world = generate(WorldParams(users=3000, communities=200, posts=20000, events=50000, seed=9))
    ds = world.dataset
    sizes = np.sort(ds.community_size())[::-1]
    assert sizes[: len(sizes) // 10].sum() > 0.35 * sizes.sum()  # the top 10% of groups hold a big share
    assert np.median(sizes) < sizes.mean()
    per_user = np.bincount(ds.m_user, minlength=ds.n_users)
    assert per_user.max() <= 6 and (per_user >= 1).mean() > 0.99  # founders may add one
    assert set(np.unique(ds.m_role).tolist()) == {contract.ROLE_MEMBER, contract.ROLE_TRUSTED, contract.ROLE_MODERATOR}
    assert 0 < ds.community_private.mean() < 0.5
    assert world.spam_users.any()
    kinds = np.bincount(ds.e_kind, minlength=7)
    assert (kinds > 0).all()  # view, like, comment, share, save, hide, report all occur


def test_later_split_points_rank_with_what_a_retrain_before_them_fits(tiny_data):
    """Replay: each later point gets vectors, neighbours and the world as of it (as the
    baselines are refitted there), so what a user did since the first point counts."""
    from training.evaluate import SplitPoint
    from training.train import replay_points
    from training.world_fits import WorldFits, fit_model

    ds = load_dataset(tiny_data)
    als = AlsParams(factors=8, iterations=5)
    t0 = int(ds.e_ts[len(ds.e_ts) // 100])  # early, while users are still arriving
    t1 = t0 + DAY
    first_seen = np.full(ds.n_users, np.iinfo(np.int64).max)
    np.minimum.at(first_seen, ds.e_user, ds.e_ts)
    newcomers = np.flatnonzero((first_seen >= t0) & (first_seen < t1))
    assert len(newcomers) > 0
    state0, model0 = fit_model(ds, t0, als, 24.0, progress=False)
    points = replay_points(SplitPoint(t0, state0, model0, None), [t1], WorldFits(ds, als, 24.0))
    assert [p.split_ts for p in points] == [t0, t1]
    assert points[0].model is model0 and points[1].scorer is None  # the shipped scorer, whatever it is
    state1, model1 = fit_model(ds, t1, als, 24.0, progress=False)
    np.testing.assert_array_equal(points[1].model.user_factors, model1.user_factors)
    np.testing.assert_array_equal(points[1].model.neighbours, model1.neighbours)
    np.testing.assert_array_equal(points[1].state.history, state1.history)
    assert points[1].state.as_of == t1
    # the newcomers' first engagement moved them (the first point knew their groups only)
    moved = np.linalg.norm(points[1].model.user_factors[newcomers] - model0.user_factors[newcomers], axis=1)
    assert (moved > 1e-3).all(), moved


def test_a_later_points_scorer_builds_only_its_new_window_and_fits_what_a_fresh_run_fits(tiny_data):
    """The scorer at the next split point pools the previous point's windows and one newer
    one. Where every user of a window is taken (no sample drawn), its examples are the
    same whichever point asks: the run builds them once, and the refitted scorer is the
    one a run without the remembered windows fits, to the byte."""
    from training.params import ScorerParams
    from training.split import TimeSplit, adaptive_inner_split, split_events
    from training.train import MIN_INNER_USERS, StageClock, learn_scorer
    from training.world_fits import WorldFits

    ds = load_dataset(tiny_data)
    fit = ScorerParams(windows=2, max_users=ds.n_users, trees=10)  # every window's users taken
    params = TrainParams(als=AlsParams(factors=8, iterations=5), scorer_fit=fit)
    split = split_events(ds, 0.2, None)
    week = 7 * DAY
    inner = adaptive_inner_split(ds, split, week, MIN_INNER_USERS)

    def at(ts: int) -> TimeSplit:
        return TimeSplit(split_ts=ts, end_ts=split.end_ts, train=ds.e_ts < ts, test=ds.e_ts >= ts)

    clock = StageClock(quiet=True)
    shared = WorldFits(ds, params.als, 24.0)
    first = learn_scorer(ds, at(split.split_ts), inner, week, None, params, shared, clock)
    assert [w for w, _ in first.info["windows"]] == [split.split_ts - k * week for k in (1, 2)]
    built = dict(shared._kept)
    later = learn_scorer(ds, at(split.split_ts + week), inner, week, None, params, shared, clock)
    assert [w for w, _ in later.info["windows"]] == [split.split_ts - k * week for k in (0, 1)]
    new = [key for key in shared._kept if key not in built]
    assert len(built) == 2 and [key[1] for key in new] == [split.split_ts]  # one window built
    fresh = learn_scorer(
        ds, at(split.split_ts + week), inner, week, None, params, WorldFits(ds, params.als, 24.0), clock
    )
    assert later.to_json() == fresh.to_json()


def test_a_published_post_record_holds_the_posts_last_activity(learned_bundle, tiny_data):
    """Publish writes hot_at as the post's newest positive engagement before the data end
    (its creation if none), and hot as of then: decayed to any later time, the same
    hotness as the bundle's at the data end. A bundle without the array keeps the data end."""
    b = load_bundle(learned_bundle)
    ds = load_dataset(tiny_data)
    end, half_life = b.data_end_ts, b.hot_half_life_s
    positive = (ds.e_ts < end) & (ds.event_weights() > 0)
    newest = np.zeros(ds.n_posts, np.int64)
    np.maximum.at(newest, ds.e_post[positive], ds.e_ts[positive].astype(np.int64))
    assert (newest > 0).any() and (newest == 0).any()  # engaged posts, and posts nobody engaged with
    rec = b.records_at(np.arange(ds.n_posts))
    np.testing.assert_array_equal(rec["hot_at"], np.maximum(newest, ds.post_created_at))
    later = end + 7200
    np.testing.assert_allclose(
        hotness.decayed(rec["hot"], rec["hot_at"], later, half_life),
        hotness.decayed(b[contract.POST_HOT_FILE], end, later, half_life),
        rtol=1e-5,
        atol=1e-37,  # below float32's normal range the two roundings part (training uses this one)
    )
    del b.arrays[contract.POST_LAST_ACTIVE_FILE]
    assert (b.records_at(np.arange(ds.n_posts))["hot_at"] == end).all()


def test_a_fit_asked_for_again_is_the_remembered_one_within_the_byte_budget(tiny_data):
    """A later point's scorer windows are the earlier point's plus one: WorldFits fits each
    time once, and a remembered fit is what a fresh fit gives."""
    from training.world_fits import WorldFits, fit_model, nbytes

    ds = load_dataset(tiny_data)
    als = AlsParams(factors=8, iterations=5)
    t0, t1 = int(ds.e_ts[len(ds.e_ts) // 2]), int(ds.e_ts[len(ds.e_ts) // 2]) + DAY
    fits = WorldFits(ds, als, 24.0)
    first = fits(t0)
    assert fits(t0)[1] is first[1] and fits.fitted == 1
    fits(t1)
    assert fits(t0)[1] is first[1] and fits.fitted == 2
    fresh_state, fresh = fit_model(ds, t0, als, 24.0, progress=False)
    np.testing.assert_array_equal(first[1].post_vectors, fresh.post_vectors)
    np.testing.assert_array_equal(first[0].hot, fresh_state.hot)
    # A budget of one fit keeps the newest only: asking for the older one fits it again.
    size = nbytes(first[0]) + nbytes(first[1])
    small = WorldFits(ds, als, 24.0, keep_bytes=size + size // 2)
    small(t0), small(t1), small(t1)
    assert small.fitted == 2
    small(t0)
    assert small.fitted == 3
