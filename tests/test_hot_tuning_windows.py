"""The hot feeds are tuned for the horizon they are judged on (training/train.py
`hot_tuning_worlds`): on a log too sparse for one week to hold enough users, on several
windows of the evaluation's own length pooled, not on the inner split widened to months;
on a busy log, on the inner split itself. The pipeline's own hot half-life stays the
inner split's choice."""

from __future__ import annotations

import numpy as np
import pytest

from training import train as train_module
from training.baselines import HOT_HALF_LIVES_H, hot_global, hot_in_communities, tune
from training.load import load_dataset
from training.params import TrainParams
from training.split import adaptive_inner_split, split_events
from training.synthetic import EPOCH, WorldParams, generate, write_world
from training.train import MIN_INNER_USERS, hot_tuning_worlds, tuning_world

DAY = 86_400


@pytest.fixture(scope="module")
def sparse_data(tmp_path_factory):
    """300 users over half a year: no week holds MIN_INNER_USERS of them."""
    world = WorldParams(users=300, communities=12, posts=2000, events=15000, days=180, seed=5, end=EPOCH + 180 * DAY)
    out = tmp_path_factory.mktemp("sparse_world")
    write_world(generate(world), out, world)
    return out


@pytest.fixture(scope="module")
def setting(sparse_data):
    ds = load_dataset(sparse_data)
    params = TrainParams()
    split = split_events(ds, params.test_fraction, params.split_at)
    longest_s = int(max(params.eval.windows_days) * DAY)
    inner = adaptive_inner_split(ds, split, longest_s, MIN_INNER_USERS)
    tuned = tuning_world(ds, inner, None, params, params.eval.tune_users, params.eval.seed)
    return ds, params, split, longest_s, inner, tuned


def test_a_sparse_log_pools_consecutive_weeks_before_the_split(setting):
    ds, params, split, longest_s, inner, tuned = setting
    assert inner.end_ts - inner.split_ts > longest_s  # the tiny world's inner split was widened
    worlds = hot_tuning_worlds(ds, split, inner, tuned, longest_s, None, params)
    starts = [int(w.as_of) for w, _ in worlds]
    # newest first, one week apart, the first ending at the split point
    assert starts == [split.split_ts - (i + 1) * longest_s for i in range(len(worlds))]
    judged = [len(m.users) for _, m in worlds]
    assert all(n > 0 for n in judged)
    # pooled until enough users are judged: the last week is the one that got there
    assert sum(judged) >= MIN_INNER_USERS and sum(judged[:-1]) < MIN_INNER_USERS


def test_a_busy_week_is_the_inner_split_itself(setting, monkeypatch):
    ds, params, split, longest_s, _, _ = setting
    one_week = adaptive_inner_split(ds, split, longest_s, 1)
    assert one_week.end_ts - one_week.split_ts == longest_s
    tuned = tuning_world(ds, one_week, None, params, params.eval.tune_users, params.eval.seed)
    monkeypatch.setattr(train_module, "MIN_INNER_USERS", len(tuned[1].users))
    assert hot_tuning_worlds(ds, split, one_week, tuned, longest_s, None, params) == [tuned]


def test_the_hot_grids_are_the_pooled_weeks_mean_and_the_pipeline_keeps_the_inner_choice(setting):
    ds, params, split, longest_s, inner, tuned = setting
    worlds = hot_tuning_worlds(ds, split, inner, tuned, longest_s, None, params)
    world, measure = tuned
    p = tune(world, measure, params.als, worlds)
    users = np.array([len(m.users) for _, m in worlds], dtype=np.float64)
    for hl in HOT_HALF_LIVES_H:
        pooled = sum(m(hot_global(w, hl)) * n for (w, m), n in zip(worlds, users, strict=True)) / users.sum()
        assert p.tuning["hot_global"][f"{hl:g}h"] == round(pooled, 5)
    assert p.hot_windows == [[int(w.as_of), len(m.users)] for w, m in worlds]
    inner_grid = p.tuning["hot_in_communities_inner_split"]
    best = max(inner_grid, key=lambda k: (inner_grid[k], -list(inner_grid).index(k)))
    assert p.pipeline_hot_half_life_h == float(best.split("^")[0][:-1])
    for key, value in inner_grid.items():
        half_life, power = key.split("^")
        assert value == round(measure(hot_in_communities(world, float(half_life[:-1]), float(power))), 5)
