"""The automatic replay protocol: at least two split points, more (up to sixteen, while data
remains) until about AUTO_MIN_REQUESTS user-requests would be judged; a point with
nobody to judge is passed over and not counted."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from training.split import AUTO_MAX_POINTS, AUTO_MIN_REQUESTS, TimeSplit, auto_split_points

DAY = 86_400
WEEK = 7 * DAY


def weekly_log(active_per_week: int, weeks: int = 12, every: int = 1):
    """`active_per_week` users each engage once a week (once in `every` weeks) with a post
    made a day before; every user also engaged once before the first week (so each has
    history)."""
    users = np.arange(active_per_week)
    e_user, e_ts, e_post, created = [], [], [], []
    for week in range(0, weeks + 1, every):
        for u in users:
            post = len(created)
            created.append(week * WEEK - DAY)
            e_user.append(u)
            e_ts.append(week * WEEK + 3600 + u)
            e_post.append(post)
    ts = np.array(e_ts, np.int64)
    order = np.argsort(ts, kind="stable")
    ds = SimpleNamespace(
        n_users=active_per_week,
        e_user=np.array(e_user, np.int32)[order],
        e_ts=ts[order],
        e_post=np.array(e_post, np.int32)[order],
        post_created_at=np.array(created, np.int64),
        event_weights=lambda: np.ones(len(ts), np.float32),
    )
    first = WEEK  # week 0 is everyone's history
    split = TimeSplit(first, int(ts.max()) + 1, ds.e_ts < first, ds.e_ts >= first)
    return ds, split


def test_a_big_log_is_judged_at_two_points():
    ds, split = weekly_log(2500)  # capped at max_users=2000 per point: 4000 after two
    assert auto_split_points(ds, split, WEEK, max_users=2000) == [WEEK, 2 * WEEK]


def test_a_middling_log_adds_points_until_enough_requests():
    ds, split = weekly_log(1500)  # 1500, 3000, 4500 >= AUTO_MIN_REQUESTS
    assert AUTO_MIN_REQUESTS == 4000
    assert auto_split_points(ds, split, WEEK, max_users=2000) == [WEEK, 2 * WEEK, 3 * WEEK]


def test_a_small_log_uses_every_point_up_to_the_cap_or_the_data_end():
    ds, split = weekly_log(50, weeks=AUTO_MAX_POINTS + 4)
    assert auto_split_points(ds, split, WEEK, max_users=2000) == [WEEK * (i + 1) for i in range(AUTO_MAX_POINTS)]
    ds, split = weekly_log(50, weeks=4)  # data ends after week 4: points at weeks 1..4
    assert auto_split_points(ds, split, WEEK, max_users=2000) == [WEEK, 2 * WEEK, 3 * WEEK, 4 * WEEK]


def test_weeks_with_nobody_to_judge_are_passed_over_and_not_counted():
    # engagement in one week of four (a log dated by the month): sixteen points with someone
    # to judge, four weeks apart, not sixteen weekly points of which twelve judge nobody
    ds, split = weekly_log(50, weeks=4 * AUTO_MAX_POINTS + 8, every=4)
    split = TimeSplit(4 * WEEK, split.end_ts, ds.e_ts < 4 * WEEK, ds.e_ts >= 4 * WEEK)
    assert auto_split_points(ds, split, WEEK, max_users=2000) == [4 * WEEK * (i + 1) for i in range(AUTO_MAX_POINTS)]
