"""The Spark engine (local[2], one shared session): it loads exactly the Dataset the default
engine loads, from CSV and from a lake's Parquet files (its driver holding only the
positive events), rejects a bad cell in the same words, splits at the same times,
aggregates the ALS matrix and the state's per-post and per-user arrays as the default
engine does, fits two baselines' own models there when its driver holds a sample of the
users (EASE's Gram matrix: equal; plain ALS with MLlib), and trains a bundle of the same format whose pipeline ranks as well as the
default engine's (paired, on the same users)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from core import contract
from core.bundle import load_bundle
from tests.conftest import assert_same_dataset, positive_events
from training import baselines
from training.als import fit_community_als
from training.baselines import RankingWorld
from training.csvio import DataError
from training.evaluate import DAY
from training.event_times import EventTimes
from training.gate import compare_on_candidate
from training.load import load_dataset
from training.params import AlsParams, EvalParams, ScorerParams, TrainParams
from training.reevaluate import reevaluate
from training.spark import baselines as spark_baselines
from training.spark.baselines import plain_als_factors_on_spark
from training.spark.load import load_dataset_on_spark, sampled_users
from training.split import adaptive_inner_split, auto_split_points, scorer_windows, split_events
from training.state import log_aggregates, state_as_of
from training.train import train


@pytest.fixture(scope="module")
def spark_loaded(spark, tiny_data):
    return load_dataset_on_spark(tiny_data)


@pytest.fixture(scope="module")
def default_loaded(tiny_data):
    return load_dataset(tiny_data)


def test_spark_loads_the_same_dataset_from_csv_and_from_parquet(spark, spark_loaded, default_loaded, tiny_parquet):
    """The same Dataset, but for the events on the driver: only the positive ones (every
    event stays on Spark, where the state, the ALS matrix and the split count them)."""
    default = default_loaded
    assert spark_loaded.events_positive_only and 0 < len(spark_loaded.e_ts) < len(default.e_ts) / 2
    assert_same_dataset(positive_events(default), spark_loaded)
    assert_same_dataset(positive_events(default), load_dataset_on_spark(tiny_parquet))
    assert spark_loaded.events_frame.count() == len(default.e_ts)
    with pytest.raises(ValueError, match="needs every event"):
        state_as_of(spark_loaded, int(default.e_ts[-1]), True)  # numpy over the positive events alone: refused


def test_spark_splits_at_the_same_times_from_every_event(spark_loaded, default_loaded):
    """The split's decisions count every event (views too): Spark's answers are the
    event columns' answers, so both engines split, pick split points, size the inner
    split and the scorer windows, and choose the index window alike."""
    here, there = EventTimes(default_loaded), spark_loaded.event_times
    n = here.count
    assert (there.count, there.first_ts, there.end_ts) == (n, here.first_ts, here.end_ts)
    for k in (0, 1, n // 3, int(n * 0.8), n - 2, n - 1):
        assert there.kth(k) == here.kth(k), k
    for ts in (here.first_ts, here.kth(n // 2), here.kth(n // 2) + 1, here.end_ts):
        assert there.count_before(ts) == here.count_before(ts), ts
    np.testing.assert_array_equal(there.first_seen(), here.first_seen())
    assert there.fresh_share(here.kth(int(n * 0.8)), 7.0) == here.fresh_share(here.kth(int(n * 0.8)), 7.0)
    longest = int(7 * DAY)
    splits = [split_events(ds, 0.2) for ds in (default_loaded, spark_loaded)]
    assert (splits[0].split_ts, splits[0].end_ts) == (splits[1].split_ts, splits[1].end_ts)
    assert [auto_split_points(ds, s, longest, 2000) for ds, s in zip((default_loaded, spark_loaded), splits)] == [
        auto_split_points(default_loaded, splits[0], longest, 2000)
    ] * 2
    inner = [adaptive_inner_split(ds, s, longest, 300) for ds, s in zip((default_loaded, spark_loaded), splits)]
    assert (inner[0].split_ts, inner[0].end_ts) == (inner[1].split_ts, inner[1].end_ts)
    windows = [scorer_windows(ds, s, DAY, 8) for ds, s in zip((default_loaded, spark_loaded), splits)]
    assert [(w.split_ts, w.end_ts) for w in windows[0]] == [(w.split_ts, w.end_ts) for w in windows[1]]
    assert len(windows[0]) > 1


def test_spark_rejects_a_bad_cell_in_the_default_readers_words(spark, tiny_parquet, tmp_path):
    import pyarrow.parquet as pq

    data = tmp_path / "lake"
    data.mkdir()
    for table in tiny_parquet.iterdir():
        (data / table.name).mkdir()
        for f in table.iterdir():
            (data / table.name / f.name).write_bytes(f.read_bytes())
    part = data / "events" / "part-00001.parquet"
    events = pq.read_table(part)
    kinds = events.column("kind").to_pylist()
    kinds[5000] = "lik"  # row group 1 (4000 rows a group), its row 1000
    pq.write_table(events.set_column(2, "kind", [kinds]), part, row_group_size=4000)
    expected = (
        f"{part}: row group 1, row 1000, column 'kind': 'lik' is not one of "
        "view, like, comment, share, save, hide, report"
    )
    for load in (load_dataset, load_dataset_on_spark):
        with pytest.raises(DataError) as err:
            load(data)
        assert str(err.value) == expected, load.__name__


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda row: row + ",x", "row 779: 5 fields, header has 4"),
        (lambda row: row.replace(",p", ",zz", 1), "row 779, column 'post_id': unknown post 'zz"),
        (lambda row: ",".join(row.split(",")[:2] + [""] + row.split(",")[3:]), "row 779, column 'kind': empty value"),
    ],
)
def test_spark_names_a_bad_csv_row_as_the_default_reader_does(spark, tiny_data, tmp_path, mutate, message):
    data = tmp_path / "d"
    data.mkdir()
    for f in tiny_data.glob("*.csv"):
        (data / f.name).write_bytes(f.read_bytes())
    lines = (data / "events.csv").read_text().splitlines()
    lines[778] = mutate(lines[778])
    (data / "events.csv").write_text("\n".join(lines) + "\n")
    errors = []
    for load in (load_dataset, load_dataset_on_spark):
        with pytest.raises(DataError) as err:
            load(data)
        errors.append(str(err.value))
    assert errors[0] == errors[1]
    assert errors[1].startswith(f"{data}/events.csv: {message}")


def test_the_als_matrix_is_aggregated_on_spark_as_the_default_engine_does(spark_loaded, default_loaded):
    ds = default_loaded
    state = state_as_of(ds, int(ds.e_ts[int(len(ds.e_ts) * 0.8)]), ds.memberships_derived)
    params = AlsParams(factors=8, iterations=3)
    here = fit_community_als(ds, state, params)
    there = fit_community_als(spark_loaded, state, AlsParams(factors=8, iterations=3, engine="spark"))
    # The same fit from the events sent over from numpy (a Dataset the default loader
    # read): bit for bit, as make evaluate's refit of a later split point must be.
    again = fit_community_als(ds, state, AlsParams(factors=8, iterations=3, engine="spark"))
    np.testing.assert_array_equal(again.user_factors, there.user_factors)
    np.testing.assert_array_equal(again.post_factors, there.post_factors)
    # each post's summed engager confidence comes from the aggregated matrix alone
    np.testing.assert_allclose(there.post_weight, here.post_weight, rtol=1e-5, atol=1e-4)
    for name in ("user_factors", "community_factors", "post_factors"):
        a, b = getattr(here, name), getattr(there, name)
        assert a.shape == b.shape and b.dtype == np.float32, name
        # the same rows are empty (users and posts with nothing before the time)
        assert np.array_equal(np.abs(a).sum(axis=1) == 0, np.abs(b).sum(axis=1) == 0), name


@pytest.mark.parametrize("variant", ["as loaded", "fractional counts, derived memberships"])
def test_the_state_is_aggregated_on_spark_as_numpy_computes_it(spark_loaded, default_loaded, variant):
    """Every per-post and per-user array of the state, and the bundle's member engager
    counts, from Spark aggregations against the numpy ones (training/spark/state.py says
    which may differ in the last float32 bits, and why)."""
    ds, on_spark = default_loaded, spark_loaded
    if variant != "as loaded":  # weights that are not whole numbers; the events sent over from numpy
        counts = np.random.default_rng(7).uniform(0.1, 3.0, len(ds.e_ts)).astype(np.float32)
        ds = on_spark = dataclasses.replace(ds, e_count=counts, memberships_derived=True, events_frame=None)
    as_of = int(ds.e_ts[int(len(ds.e_ts) * 0.8)])
    here = state_as_of(ds, as_of, ds.memberships_derived, 6.0)
    there = state_as_of(on_spark, as_of, ds.memberships_derived, 6.0, engine="spark")
    assert len(here.m_user) > 0 and (here.history >= 0).any() and here.hot.any()
    # Last activity: some posts engaged with since their creation, and some not at all.
    assert (here.last_active > ds.post_created_at).any() and (here.last_active == ds.post_created_at).any()
    for name in ("m_user", "m_community", "m_role", "community_size", "history", "last_active"):
        a, b = getattr(here, name), getattr(there, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    for name in ("positives", "negatives", "views", "hot", "author_trust"):
        a, b = getattr(here, name), getattr(there, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name  # summed in double by both
    W, V = here.community_weight, there.community_weight
    assert V.dtype == np.float32 and np.array_equal(W.indptr, V.indptr) and np.array_equal(W.indices, V.indices)
    if variant == "as loaded":
        np.testing.assert_array_equal(V.data, W.data)
    else:  # numpy sums these in float32
        np.testing.assert_allclose(V.data, W.data, rtol=1e-6)
    engagers = log_aggregates(on_spark, as_of, "spark").member_engagers(there)
    assert engagers.dtype == np.int32 and engagers.any()
    np.testing.assert_array_equal(engagers, log_aggregates(ds, as_of).member_engagers(here))


def test_spark_trains_the_same_bundle_format_and_ranks_within_noise(spark, tiny_data, tmp_path):
    """One split point, the scorer on one window, the shipped ALS settings: the pipeline of
    each engine evaluated on the same users (the publish gate's paired comparison)."""
    base = {"tune_als": False, "scorer_fit": ScorerParams(windows=1), "eval": EvalParams(split_points=1)}
    here = train(tiny_data, tmp_path / "implicit", TrainParams(**base), progress=False, quiet=True)
    there = train(tiny_data, tmp_path / "spark", TrainParams(als=AlsParams(engine="spark"), **base), quiet=True)
    a, b = load_bundle(here, verify=True), load_bundle(there, verify=True)
    assert sorted(p.name for p in here.iterdir()) == sorted(p.name for p in there.iterdir())
    for name in contract.ARRAY_FILES:
        assert np.asarray(a[name]).shape == np.asarray(b[name]).shape, name
        assert np.asarray(a[name]).dtype == np.asarray(b[name]).dtype, name
    assert b.manifest.params["als"]["engine"] == "spark"
    # make evaluate refits on Spark (load, state, ALS) and must reproduce every ranking.
    _, mismatches = reevaluate(there, tiny_data)
    assert mismatches == []
    parity = compare_on_candidate(there, here, tiny_data)
    assert parity.users > 100
    assert parity.verdict == "within noise", parity
    assert abs(parity.candidate - parity.serving) < 0.02, parity
    # Below --driver-users the driver holds every engaged user's positive events, and the
    # baselines' own fits (plain ALS, EASE) are the driver's: the same numbers.
    ra, rb = (json.loads((bundle / "report.json").read_text()) for bundle in (here, there))
    assert ra["baselines"] == rb["baselines"]


@pytest.fixture(scope="module")
def worlds(spark_loaded, default_loaded):
    """The same world as of the 80% event time, for each engine (the inner split's shape)."""
    ds = default_loaded
    as_of = int(ds.e_ts[int(len(ds.e_ts) * 0.8)])
    state = state_as_of(ds, as_of, ds.memberships_derived)
    catalogue = np.flatnonzero(ds.post_created_at < as_of)
    # As a driver holding a sample of the users' events sees it: the fits over every user
    # on Spark (here the sample is every user, so the answers must be numpy's).
    sampled = dataclasses.replace(spark_loaded, events_user_sample=True)
    return (
        RankingWorld(ds, state, ds.e_ts < as_of, catalogue),
        RankingWorld(sampled, state, sampled.e_ts < as_of, catalogue, "spark"),
    )


@pytest.mark.parametrize("max_items", [baselines.EASE_MAX_ITEMS, 7])
def test_eases_gram_is_counted_on_spark_as_numpy_counts_it(worlds, monkeypatch, max_items):
    monkeypatch.setattr(baselines, "EASE_MAX_ITEMS", max_items)  # 7: ties at the cut decided alike
    here, there = (baselines.ease_gram(w) for w in worlds)
    w = worlds[0]
    positive = (w.ds.event_weights() > 0) & w.train
    engaged = np.intersect1d(np.unique(w.ds.e_post[positive]), w.catalogue)
    assert len(here.cols) == min(max_items, len(engaged)) == (7 if max_items == 7 else len(engaged))
    np.testing.assert_array_equal(there.cols, here.cols)
    np.testing.assert_array_equal(there.G, here.G)  # counts: exact in any order
    assert there.G.dtype == np.float64
    assert (there.X != here.X).nnz == 0


def test_plain_als_is_fitted_by_mllib_on_spark(worlds, default_loaded):
    here, there = worlds
    params = AlsParams(factors=8, iterations=3, alpha=1.0)
    users, posts = plain_als_factors_on_spark(there.ds, there.as_of, params)
    # From the events sent over from numpy (a Dataset the default loader read): bit for
    # bit, as make evaluate's refit of a later split point must be.
    again = plain_als_factors_on_spark(default_loaded, there.as_of, params)
    np.testing.assert_array_equal(again[0], users)
    np.testing.assert_array_equal(again[1], posts)
    assert users.shape == (here.ds.n_users, 8) and posts.shape == (here.ds.n_posts, 8) and users.dtype == np.float32
    # The rows with no positive engagement before the time are the empty ones, as in numpy.
    positive = (here.ds.event_weights() > 0) & here.train
    engaged_users, engaged_posts = np.unique(here.ds.e_user[positive]), np.unique(here.ds.e_post[positive])
    assert np.array_equal(np.flatnonzero(np.abs(users).sum(axis=1)), engaged_users)
    assert np.array_equal(np.flatnonzero(np.abs(posts).sum(axis=1)), engaged_posts)


def test_the_driver_holds_the_events_of_a_sample_of_users_and_draws_from_them(
    spark, tiny_data, default_loaded, tmp_path, monkeypatch
):
    """--driver-users: beyond it, the driver collects a seeded sample of the engaged users'
    positive events; training then tunes, fits the scorer and evaluates on those users, and
    fits plain ALS and counts EASE's Gram matrix over every user on Spark."""
    held = load_dataset_on_spark(tiny_data, driver_users=50)
    full = positive_events(default_loaded)
    engaged = np.unique(full.e_user)
    users = np.unique(held.e_user)
    assert len(engaged) > 100 and len(users) == 50 and np.isin(users, engaged).all()
    np.testing.assert_array_equal(users, sampled_users(engaged, 50))  # the same sample on every load
    keep = np.isin(full.e_user, users)
    cut = {name: getattr(full, name)[keep] for name in ("e_user", "e_post", "e_kind", "e_ts", "e_count")}
    note = f"the driver holds the positive events of 50 of the {len(engaged)} users with any"
    assert [n for n in held.notes if n.startswith(note)] and held.events_frame.count() == len(default_loaded.e_ts)
    assert held.events_user_sample
    assert_same_dataset(dataclasses.replace(full, **cut, notes=held.notes, events_user_sample=True), held)
    assert_same_dataset(positive_events(default_loaded), load_dataset_on_spark(tiny_data, driver_users=len(engaged)))
    als = AlsParams(engine="spark", driver_users=50, factors=8, iterations=3)
    fits = []  # the fits over every user go to Spark: counted on their way there

    def counted(name):
        real = getattr(spark_baselines, name)
        monkeypatch.setattr(spark_baselines, name, lambda *a, **k: fits.append(name) or real(*a, **k))

    counted("plain_als_factors_on_spark")
    counted("ease_gram_on_spark")
    bundle = train(
        tiny_data,
        tmp_path,
        TrainParams(als=als, tune_als=False, scorer_fit=ScorerParams(windows=1), eval=EvalParams(split_points=1)),
        quiet=True,
    )
    evaluated = np.load(bundle / contract.EVAL_USERS_FILE)  # [split point, user], -1 past each point's users
    evaluated = evaluated[evaluated >= 0]
    assert len(evaluated) > 10 and np.isin(evaluated, users).all()
    assert json.loads((bundle / "manifest.json").read_text())["params"]["als"]["driver_users"] == 50
    # tuning (EASE's ladder, plain ALS's search) and the split point: each fit on Spark
    assert fits.count("ease_gram_on_spark") == 2 and fits.count("plain_als_factors_on_spark") > 3, fits
