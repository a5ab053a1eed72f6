"""The vectorised helpers of the filter, score and diversify stages, on hand-made inputs
with exact expected outcomes (the pinned-answers test checks them on a whole world)."""

from __future__ import annotations

import numpy as np

from core import contract
from service.pipeline import RankContext, RankQuery
from service.stages.diversify import _Caps
from service.stages.filters import FilterCandidates, member_of
from service.stages.score import lookup


def test_member_of_matches_isin_for_any_members():
    values = np.array([5, -1, 3, 7, 3, 0, 12], dtype=np.int32)
    assert member_of(values, {3, 12}).tolist() == [False, False, True, False, True, False, True]
    assert member_of(values, [0, 5, 5, 99]).tolist() == [True, False, False, False, False, True, False]
    assert member_of(values, iter(())).tolist() == [False] * 7
    rng = np.random.default_rng(1)
    for _ in range(50):
        v = rng.integers(-3, 40, 200)
        m = rng.integers(-3, 40, int(rng.integers(0, 12)))
        assert (member_of(v, m.tolist()) == np.isin(v, m)).all()


def test_lookup_scatters_the_table_and_gathers_per_candidate():
    communities = np.array([2, 0, 2, 5, 1], dtype=np.int32)
    assert lookup({2: 3, 5: 1}, communities, np.uint8, 6).tolist() == [3, 0, 3, 1, 0]
    weights = lookup({0: 0.5, 1: 2.25}, communities, np.float32, 6)
    assert weights.dtype == np.float32 and weights.tolist() == [0.0, 0.5, 0.0, 0.0, 2.25]
    assert lookup({}, communities, np.float32, 6).tolist() == [0.0] * 5


def _reference_greedy(caps: _Caps, order, comm, author, taken, skip, limit):
    """The walk as it was written before greedy(): allows/add one call at a time."""
    deferred = []
    for pos in order:
        if len(taken) == limit:
            break
        if pos in skip or caps.hard_capped(comm[pos]):
            continue
        if caps.allows(comm[pos], author[pos]):
            taken.append(pos)
            caps.add(comm[pos], author[pos])
        else:
            deferred.append(pos)
    return deferred


def test_greedy_caps_walk_takes_and_defers_exactly():
    comm = [0, 0, 0, 1, 1, 2, 0, 1]
    author = [7, 7, 8, 9, -1, -1, 8, 9]
    caps = _Caps(per_community=2, per_author=1, hard={2: 0})
    taken = [6]  # a pin, already counted
    caps.add(comm[6], author[6])
    deferred = caps.greedy([0, 1, 2, 3, 4, 5, 6, 7], comm, author, taken, {6}, limit=4)
    # 0: community 0 has 1 (the pin), author 7 none: taken. 1: author 7 at its cap: deferred.
    # 2: community 0 at 2: deferred. 3: taken. 4: unknown author (-1) is never capped: taken.
    assert taken == [6, 0, 3, 4]
    assert deferred == [1, 2]
    assert caps.communities == {0: 2, 1: 2} and caps.authors == {8: 1, 7: 1, 9: 1, -1: 1}


def test_greedy_equals_the_call_by_call_walk_on_random_feeds():
    rng = np.random.default_rng(4)
    for _ in range(200):
        n = int(rng.integers(1, 80))
        comm = rng.integers(0, 6, n).tolist()
        author = rng.integers(-1, 10, n).tolist()
        order = rng.permutation(n).tolist()
        skip = set(rng.choice(n, size=min(n, int(rng.integers(0, 3))), replace=False).tolist())
        hard = {int(c): int(rng.integers(0, 3)) for c in rng.choice(6, size=int(rng.integers(0, 3)), replace=False)}
        limit = int(rng.integers(1, 25))
        args = (int(rng.integers(0, 4)), int(rng.integers(0, 3)), hard)
        a, b = _Caps(*args), _Caps(*args)
        taken_a, taken_b = list(skip), list(skip)
        got = a.greedy(order, comm, author, taken_a, skip, limit)
        want = _reference_greedy(b, order, comm, author, taken_b, skip, limit)
        assert (got, taken_a, a.communities, a.authors) == (want, taken_b, b.communities, b.authors)


class _Rule:
    def __init__(self, reason: str, mask):
        self.reason = reason
        self.mask = mask

    def keep(self, ctx):
        return None if self.mask is None else np.array(self.mask, dtype=bool)


def test_filters_count_what_each_removed_after_the_ones_before_and_take_once():
    ctx = RankContext(query=RankQuery(user_id="u", limit=5), bundle=None, now=0.0)
    ctx.post_ids = ["a", "b", "c", "d", "e"]
    ctx.rows = np.arange(5, dtype=np.int64)
    ctx.posts = np.zeros(5, dtype=contract.POST_DTYPE)
    ctx.posts["community"] = [10, 11, 12, 13, 14]
    rules = [
        _Rule("first", [True, False, True, True, True]),
        _Rule("none applies", None),
        _Rule("second", [True, False, False, True, True]),  # b was removed already: c only
        _Rule("third", [True, True, True, True, True]),
    ]
    FilterCandidates(rules).run(ctx)
    assert ctx.post_ids == ["a", "d", "e"]
    assert ctx.rows.tolist() == [0, 3, 4] and ctx.posts["community"].tolist() == [10, 13, 14]
    assert dict(ctx.removed) == {"first": 1, "second": 1}


def test_filters_stop_once_nothing_is_left():
    ctx = RankContext(query=RankQuery(user_id="u", limit=5), bundle=None, now=0.0)
    ctx.post_ids = ["a", "b"]
    ctx.rows = np.arange(2, dtype=np.int64)
    ctx.posts = np.zeros(2, dtype=contract.POST_DTYPE)

    class Boom:
        reason = "never"

        def keep(self, ctx):
            raise AssertionError("a filter ran with no candidate left")

    FilterCandidates([_Rule("all", [False, False]), Boom()]).run(ctx)
    assert ctx.post_ids == [] and dict(ctx.removed) == {"all": 2}
