"""The scorer's inner windows: the evaluation's own window length, back to back before the
split, newest first, while the fit before each keeps enough of the training events."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from training.split import SCORER_MIN_FIT_SHARE, TimeSplit, scorer_windows

DAY = 86_400
WEEK = 7 * DAY


def uniform_log(days: int, per_day: int = 10):
    """One event every 1/per_day of a day for `days` days, and the split at its last 20%."""
    e_ts = np.arange(days * per_day, dtype=np.int64) * (DAY // per_day)
    split_ts = int(0.8 * days) * DAY
    train = e_ts < split_ts
    ds = SimpleNamespace(e_ts=e_ts, event_weights=lambda: np.ones(len(e_ts), np.float32))
    return ds, TimeSplit(split_ts, int(e_ts[-1]) + 1, train, ~train)


def test_windows_are_back_to_back_weeks_before_the_split_newest_first():
    ds, split = uniform_log(200)
    windows = scorer_windows(ds, split, WEEK, count=4)
    assert [(w.split_ts, w.end_ts) for w in windows] == [
        (split.split_ts - (i + 1) * WEEK, split.split_ts - i * WEEK) for i in range(4)
    ]
    for w in windows:
        # fitted on what came before the window, judged on the window itself
        assert np.array_equal(w.train, ds.e_ts < w.split_ts)
        assert np.array_equal(w.test, (ds.e_ts >= w.split_ts) & (ds.e_ts < w.end_ts))


def test_windows_stop_where_the_fit_before_them_would_see_too_little():
    ds, split = uniform_log(200)  # split on day 160
    windows = scorer_windows(ds, split, WEEK, count=100)
    # a window may start no earlier than where SCORER_MIN_FIT_SHARE of the training events lie
    earliest = SCORER_MIN_FIT_SHARE * 160 * DAY
    assert windows[-1].split_ts >= earliest > windows[-1].split_ts - WEEK
    assert len(windows) == int((160 * DAY - earliest) // WEEK)


def test_a_log_shorter_than_one_window_gives_none():
    ds, split = uniform_log(5)  # split on day 4: no full week before it
    assert scorer_windows(ds, split, WEEK, count=8) == []


def test_a_window_nobody_engaged_in_is_passed_over_and_not_counted():
    ds, split = uniform_log(200)  # split on day 160
    quiet = (ds.e_ts >= split.split_ts - 2 * WEEK) & (ds.e_ts < split.split_ts - WEEK)
    weights = np.where(quiet, 0.0, 1.0).astype(np.float32)  # only views in the second week back
    ds.event_weights = lambda: weights
    windows = scorer_windows(ds, split, WEEK, count=3)
    assert [w.end_ts for w in windows] == [split.split_ts - i * WEEK for i in (0, 2, 3)]


def test_a_log_dated_by_the_month_gets_its_count_of_engaged_windows():
    """Every event on the first of a 28-day month: three weekly windows in four are empty,
    and `count` windows still reach back over `count` months."""
    month = 4 * WEEK
    e_ts = np.repeat(np.arange(40, dtype=np.int64) * month, 5)
    split_ts = 30 * month
    ds = SimpleNamespace(e_ts=e_ts, event_weights=lambda: np.ones(len(e_ts), np.float32))
    split = TimeSplit(split_ts, int(e_ts[-1]) + 1, e_ts < split_ts, e_ts >= split_ts)
    windows = scorer_windows(ds, split, WEEK, count=4)
    # each window holds one month's first day: the week that ends a week after it
    assert [w.split_ts for w in windows] == [(30 - m) * month for m in (1, 2, 3, 4)]
