"""Plain ALS's matrix (training/baselines.py `plain_als_matrix`): a pair's value is log(1 +
its summed positive weight), as the ALS stage compresses its confidence. Raw play counts
let one heavy pair outweigh a hundred light ones; on Last.fm that held the baseline to
0.045 NDCG@10 where, compressed, it scores 0.053."""

from __future__ import annotations

import numpy as np

from training.baselines import plain_als_matrix
from training.schema import KIND_CODE, Dataset

LIKE, COMMENT, HIDE = KIND_CODE["like"], KIND_CODE["comment"], KIND_CODE["hide"]


def dataset(e_user, e_post, e_kind, e_count) -> Dataset:
    return Dataset(
        user_ids=np.array(["u0", "u1"]),
        community_ids=np.array(["c0"]),
        community_private=np.zeros(1, bool),
        m_user=np.empty(0, np.int32),
        m_community=np.empty(0, np.int32),
        m_role=np.empty(0, np.uint8),
        m_joined_at=np.empty(0, np.int64),
        post_ids=np.array(["p0", "p1", "p2"]),
        post_author=np.full(3, -1, np.int32),
        post_community=np.zeros(3, np.int32),
        post_created_at=np.zeros(3, np.int64),
        post_deleted=np.zeros(3, bool),
        e_user=np.array(e_user, np.int32),
        e_post=np.array(e_post, np.int32),
        e_kind=np.array(e_kind, np.uint8),
        e_ts=np.arange(len(e_user), dtype=np.int64),
        e_count=np.array(e_count, np.float32),
    )


def test_summed_positive_weights_are_compressed_and_the_rest_left_out():
    ds = dataset(
        e_user=[0, 0, 0, 1, 1, 1],
        e_post=[0, 0, 1, 1, 2, 2],
        e_kind=[LIKE, LIKE, COMMENT, LIKE, LIKE, HIDE],
        e_count=[9999, 1, 1, 3, 1, 1],
    )
    train = np.array([True, True, True, True, True, False])  # the hide is after the split
    m = plain_als_matrix(ds, train).toarray()
    comment = float(ds.kind_weight[COMMENT])
    expected = np.log1p(np.array([[10000.0, comment, 0.0], [0.0, 3.0, 1.0]], np.float32))
    np.testing.assert_allclose(m, expected, rtol=1e-6)
    # 10,000 plays weigh about eight times one comment, not 5,000 times
    assert m[0, 0] / m[0, 1] < 10


def test_negative_events_are_not_engagement():
    ds = dataset(e_user=[0, 1], e_post=[0, 0], e_kind=[HIDE, LIKE], e_count=[1, 1])
    m = plain_als_matrix(ds, np.ones(2, bool))
    assert m.nnz == 1 and m[1, 0] == np.float32(np.log1p(1.0))
