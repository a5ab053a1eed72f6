"""core.neighbours.author_ties and the author_tie feature, on known answers (the service's
score stage and training compute it alike: tests/test_training.py, the no-skew test)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from core.neighbours import author_ties
from core.scoring import FEATURES, feature_matrix
from tests.test_scoring_features import inputs
from training.features import author_tie_pairs

# Post rows 0..5 written by users 7, 7, 3, -1 (unknown), 9, 3.
POST_AUTHOR = np.array([7, 7, 3, -1, 9, 3], dtype=np.int32)


def test_counts_history_posts_by_each_candidates_author():
    history = np.array([0, 1, 2, 3, -1, -1], dtype=np.int32)  # two by 7, one by 3, one unknown, pads
    got = author_ties(history, POST_AUTHOR, np.array([7, 3, 9, 4, -1]))
    assert got.tolist() == [2.0, 1.0, 0.0, 0.0, 0.0]  # an unknown author is nobody's tie


def test_no_history_or_no_candidates_give_zeros():
    assert author_ties(np.array([-1, -1]), POST_AUTHOR, np.array([7, 3])).tolist() == [0.0, 0.0]
    assert author_ties(np.array([3]), POST_AUTHOR, np.array([7, -1])).tolist() == [0.0, 0.0]  # only an unknown author
    assert len(author_ties(np.array([0]), POST_AUTHOR, np.array([], dtype=np.int64))) == 0


def test_the_feature_is_log1p_of_the_count():
    f = inputs([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    f.author_tie = np.array([0.0, 1.0, 4.0], np.float32)
    X = feature_matrix(f)
    assert np.allclose(X[:, FEATURES.index("author_tie")], np.log1p([0.0, 1.0, 4.0]))


def test_training_pairs_match_the_per_user_call():
    state = SimpleNamespace(history=np.array([[0, 1, -1], [4, 5, 2]], dtype=np.int32))
    users = np.array([1, 0, 1, 0, 1])
    posts = np.array([0, 5, 2, 4, 3])  # authors 7, 3, 3, 9, unknown
    got = author_tie_pairs(state, POST_AUTHOR, users, posts)
    # user 1's history (4, 5, 2): authors 9, 3, 3; user 0's (0, 1): 7, 7
    assert got.tolist() == [0.0, 0.0, 2.0, 0.0, 0.0]
