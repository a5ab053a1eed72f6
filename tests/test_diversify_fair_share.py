"""The diversity re-rank: caps per community and per author, and a fair share for small
active groups. The stage is exercised directly on ranked candidates with known scores."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core import contract
from service.pipeline import RankContext, RankQuery
from service.stages.diversify import DiversifyCandidates

NOW = 1_800_000_000
HOUR = 3600


class SizedCommunities:
    """The one bundle array the stage reads: members per community."""

    def __init__(self, sizes):
        self.sizes = np.asarray(sizes, dtype=np.int32)

    def __getitem__(self, name):
        assert name == contract.COMMUNITY_SIZE_FILE
        return self.sizes


def ranked(sizes, community, author, score, age_h, limit) -> RankContext:
    n = len(score)
    ctx = RankContext(query=RankQuery(user_id="u", limit=limit), bundle=SizedCommunities(sizes), now=NOW)
    ctx.rows = np.arange(n, dtype=np.int64)
    ctx.post_ids = [f"p{i}" for i in range(n)]
    ctx.posts = np.zeros(n, dtype=contract.POST_DTYPE)
    ctx.posts["community"] = community
    ctx.posts["author"] = author
    ctx.posts["created_at"] = NOW - np.asarray(age_h) * HOUR
    ctx.scores = np.asarray(score, dtype=np.float32)
    return ctx


def test_small_active_groups_get_their_share_one_group_at_a_time():
    # community 0: 1000 members, ten strong posts; 1 and 2: ten members each, fresh posts.
    community = [0] * 10 + [1, 1, 1, 2]
    score = [10, 9, 8, 7, 6, 5, 4, 3, 2, 1] + [0.9, 0.8, 0.7, 0.5]
    ctx = ranked([1000, 10, 10], community, list(range(14)), score, [1] * 14, limit=5)
    DiversifyCandidates(community_share=1.0, per_author=0, small_group_members=50, small_group_share=0.4).run(ctx)
    # 40% of 5 = 2 slots: the best post of each small group, not two of group 1.
    assert ctx.post_ids == ["p0", "p1", "p2", "p10", "p13"]


def test_old_posts_of_small_groups_and_big_groups_get_no_share():
    community = [0, 0, 0, 1, 2]
    ctx = ranked([1000, 10, 500], community, [0, 1, 2, 3, 4], [5, 4, 3, 2, 1], [1, 1, 1, 200, 1], limit=3)
    DiversifyCandidates(community_share=1.0, per_author=0, small_group_members=50, small_group_share=0.4).run(ctx)
    assert ctx.post_ids == ["p0", "p1", "p2"]  # p3 is 200 h old, p4's group is big


def test_caps_keep_one_community_and_one_author_from_flooding():
    community = [0, 0, 0, 0, 1, 2]
    author = [7, 7, 7, 8, 9, 10]
    ctx = ranked([100, 100, 100], community, author, [6, 5, 4, 3, 2, 1], [1] * 6, limit=4)
    DiversifyCandidates(community_share=0.5, per_author=2, small_group_share=0).run(ctx)
    # at most 2 of community 0 (50% of 4) and 2 of author 7: the two best of 0, then 1 and 2
    assert ctx.post_ids == ["p0", "p1", "p4", "p5"]


def test_capped_posts_fill_in_when_nothing_else_is_left():
    ctx = ranked([100], [0] * 5, [1, 1, 1, 1, 1], [5, 4, 3, 2, 1], [1] * 5, limit=4)
    DiversifyCandidates(community_share=0.3, per_author=2, small_group_share=0).run(ctx)
    assert ctx.post_ids == ["p0", "p1", "p2", "p3"]


@st.composite
def feeds(draw):
    n = draw(st.integers(1, 40))
    n_comm = draw(st.integers(1, 6))
    sizes = draw(st.lists(st.sampled_from([5, 20, 49, 50, 51, 400, 5000]), min_size=n_comm, max_size=n_comm))
    community = draw(st.lists(st.integers(0, n_comm - 1), min_size=n, max_size=n))
    author = draw(st.lists(st.integers(-1, 8), min_size=n, max_size=n))
    score = draw(st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=n, max_size=n))
    age_h = draw(st.lists(st.sampled_from([1, 30, 71, 73, 300]), min_size=n, max_size=n))
    limit = draw(st.integers(1, 30))
    return sizes, community, author, score, age_h, limit


@settings(max_examples=150, deadline=None, derandomize=True)
@given(feed=feeds(), share=st.sampled_from([0.1, 0.2, 0.5]), community_share=st.sampled_from([0.3, 0.5]))
# Found by this test in a full suite run: the feed is full, and the small group's own
# too-old post is the one its fresh post replaces; that place under the group's cap must
# be given back, or the group's last fresh post is kept out at a cap it is not at.
@example(
    feed=([51, 5], [0] * 22 + [1] * 15, [0] * 37, [0.0] * 34 + [-1.0, -1.0, 0.0], [1] * 36 + [73], 27),
    share=0.5,
    community_share=0.5,
)
def test_diversify_properties(feed, share, community_share):
    sizes, community, author, score, age_h, limit = feed
    ctx = ranked(sizes, community, [-1] * len(score), score, age_h, limit)  # author cap off
    stage = DiversifyCandidates(
        community_share=community_share, per_author=0, small_group_members=50, small_group_share=share
    )
    eligible = {f"p{i}" for i in range(len(score)) if sizes[community[i]] <= 50 and age_h[i] <= 72}
    stage.run(ctx)
    out = ctx.post_ids
    # a full feed when there are enough candidates, no post twice
    assert len(out) == min(limit, len(score)) and len(set(out)) == len(out)
    # a community past its cap only when no left-out post could have taken its place
    cap = max(2, math.ceil(community_share * limit))
    per_comm = Counter(community[int(p[1:])] for p in out)
    left_out = [i for i in range(len(score)) if f"p{i}" not in set(out)]
    if any(n > cap for n in per_comm.values()):
        assert all(per_comm[community[i]] >= cap for i in left_out)
    # small active groups get their share whenever their posts fit under the caps
    want = min(math.ceil(share * limit), len(eligible), limit)
    if len(eligible & set(out)) < want:
        assert all(per_comm[community[int(p[1:])]] >= cap for p in eligible - set(out))
