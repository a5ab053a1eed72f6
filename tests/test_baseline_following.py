"""The "following" baseline (newest_from_followed): posts by the authors the user engaged
with, most engaged-with first, newest first among equals; then newest in the user's
communities; then the rest, newest first."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from training.baselines import newest_from_followed
from training.csvio import DataError
from training.evaluate import METHODS, saved_method

# posts:                p0  p1  p2  p3  p4  p5  p6
POST_AUTHOR = np.array([5, 5, 6, 7, 5, -1, 6])
POST_COMMUNITY = np.array([0, 1, 0, 0, 1, 0, 1])
CREATED = np.array([10, 60, 30, 70, 20, 80, 50])


def world(history: list[list[int]], weights: list[list[float]]):
    return SimpleNamespace(
        ds=SimpleNamespace(post_author=POST_AUTHOR, post_community=POST_COMMUNITY, post_created_at=CREATED, n_users=8),
        catalogue=np.arange(len(CREATED)),
        state=SimpleNamespace(
            history=np.array(history, dtype=np.int32),
            community_weight=sp.csr_matrix(np.array(weights, dtype=np.float32)),
        ),
    )


def order(scores: np.ndarray) -> list[int]:
    scores = scores.astype(np.float32)  # as the evaluation ranks them
    return np.lexsort((np.arange(len(scores)), -scores)).tolist()


def test_most_followed_author_first_then_newest_in_my_groups_then_the_rest():
    # user 0 engaged with p0 and p1 (author 5, twice) and p2 (author 6, once); member of group 0 only
    w = world([[0, 1, 2, -1], [-1, -1, -1, -1]], [[1.0, 0.0], [0.0, 1.0]])
    scores = newest_from_followed(w)(np.array([0, 1]))
    # author 5 (tie 2): p1 (60), p4 (20), p0 (10); author 6 (tie 1): p6 (50), p2 (30);
    # then group 0 by recency: p5 (80, no author), p3 (70)
    assert order(scores[0]) == [1, 4, 0, 6, 2, 5, 3]
    # user 1 follows nobody: newest in group 1 (p1, p6, p4), then the rest newest first
    assert order(scores[1]) == [1, 6, 4, 5, 3, 2, 0]


def test_an_unknown_author_is_nobodys_tie():
    w = world([[5, -1]], [[0.0, 0.0]])  # the only history post has no author
    scores = newest_from_followed(w)(np.array([0]))[0]
    assert order(scores) == np.argsort(-CREATED, kind="stable").tolist()  # plain newest first


def test_a_bundle_from_before_the_baseline_still_pairs(tmp_path):
    """make compare and the gate find each bundle's pipeline by its own report's method
    order: an older bundle, without newest_from_followed, has its pipeline one place up."""
    old = [m for m in METHODS if m != "newest_from_followed"]
    (tmp_path / "report.json").write_text(json.dumps({"methods": {m: {} for m in old}}))
    assert saved_method(tmp_path, "pipeline") == len(METHODS) - 2
    with pytest.raises(DataError, match="has no method 'newest_from_followed'"):
        saved_method(tmp_path, "newest_from_followed")  # a clean CLI error, not a traceback
    (tmp_path / "report.json").write_text(json.dumps({"ranking_methods": list(METHODS), "methods": {}}))
    assert saved_method(tmp_path, "pipeline") == METHODS.index("pipeline")
