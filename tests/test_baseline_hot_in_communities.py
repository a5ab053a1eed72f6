"""The "hot in your groups" baseline: hotness x the user's community weight to a power,
ranked in log space so that the large powers of its tuning grid neither overflow nor
reorder anything."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp

from training.baselines import COLD, hot_in_communities

# posts:            p0   p1   p2     p3   p4   p5
POST_COMMUNITY = [0, 0, 1, 0, 1, 2]
HOT = np.array([2.0, 0.5, 100.0, 0.0, 0.0, 3.0])


def world(weights: list[list[float]]):
    return SimpleNamespace(
        hot=lambda half_life_h: HOT,
        ds=SimpleNamespace(post_community=np.array(POST_COMMUNITY)),
        catalogue=np.arange(len(HOT)),
        state=SimpleNamespace(community_weight=sp.csr_matrix(np.array(weights, dtype=np.float32))),
    )


def order(scores: np.ndarray) -> list[int]:
    return np.lexsort((np.arange(len(scores)), -scores)).tolist()


def test_same_order_as_the_product_it_stands_for():
    weights = [[3.0, 0.0, 1.5], [1.0, 7.0, 0.0]]
    scores = hot_in_communities(world(weights), 1.0, 2.0)(np.array([0, 1]))
    for u, row in enumerate(weights):
        lift = np.where(np.array(row) > 0, np.array(row) ** 2.0, 1e-6)[POST_COMMUNITY]
        assert order(scores[u]) == order(lift * HOT)
    assert order(scores[0]) == [0, 5, 1, 2, 3, 4]  # in my groups by weight^2 x hot, outside after, cold last


def test_a_large_power_puts_the_heaviest_group_first_without_overflow():
    weights = [[2.0, 1000.0, 0.0]]  # 1000^64 overflows float64; its logarithm does not
    scores = hot_in_communities(world(weights), 1.0, 64.0)(np.array([0]))[0]
    assert np.isfinite(scores).all()
    assert order(scores) == [2, 0, 1, 5, 3, 4]  # group 1, then group 0, then outside, then cold
    assert (scores[[3, 4]] == COLD).all()
