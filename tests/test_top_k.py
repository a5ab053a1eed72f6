"""training.features.top_k, the selection every offline ranking goes through: the k best
of each row, best first, and, where items tie at the k-th place, the very items a
selection over the whole row (argpartition) takes, so that a faster selection leaves
every evaluation figure as it was."""

from __future__ import annotations

import numpy as np
import pytest

from training.features import _argpartition_top_k, top_k


def whole_row_selection(scores: np.ndarray, k: int) -> np.ndarray:
    """The reference: argpartition over each whole row (what top_k did before)."""
    k = min(k, scores.shape[1])
    return _argpartition_top_k(scores, k) if len(scores) else np.empty((0, k), np.intp)


def test_a_small_row_with_known_answer():
    scores = np.array([[0.5, 1.0, -np.inf, 1.0, 0.0, 1.0, 0.0, 2.0] * 40], np.float32)
    scores[0, [300, 12, 20]] = [7.0, 5.0, 5.0]
    assert top_k(scores, 3).tolist() == [[300, 12, 20]]  # best first; the tie within the k by lower index
    assert top_k(scores, 330).shape == (1, 320)  # k beyond the row: all of it


@pytest.mark.parametrize("kind", ["continuous", "ties", "ties and hidden", "mostly zeros", "best in one block"])
def test_the_same_items_as_a_selection_over_the_whole_row(kind):
    rng = np.random.default_rng(11)
    for _ in range(60):
        n, rows, k = int(rng.integers(1, 5000)), int(rng.integers(0, 40)), int(rng.integers(1, 80))
        if kind in ("continuous", "best in one block"):
            scores = rng.normal(size=(rows, n)).astype(np.float32)
        elif kind == "mostly zeros":  # a count-based baseline: a few counted posts, zeros elsewhere
            scores = np.zeros((rows, n), np.float32)
            counted = rng.random(scores.shape) < rng.random((rows, 1)) * 4 * k / n
            scores[counted] = rng.integers(1, 6, size=counted.sum())
        else:  # few distinct values: ties at the k-th place in most rows
            scores = rng.integers(0, 4, size=(rows, n)).astype(np.float32)
        if kind == "best in one block":  # a low threshold, no ties: the rows argpartition takes
            scores[:, : k + 3] += 100
        if kind == "ties and hidden":
            scores[rng.random(scores.shape) < 0.6] = -np.inf  # hidden posts, as CandidateSource.hide
        got = top_k(scores, k)
        np.testing.assert_array_equal(got, whole_row_selection(scores, k))
        np.testing.assert_array_equal(top_k(np.asfortranarray(scores), k), got)  # any layout
        if kind in ("continuous", "best in one block") and rows:  # no ties: the k best, best first
            best = np.argsort(-scores, axis=1, kind="stable")[:, : got.shape[1]]
            np.testing.assert_array_equal(got, best)


def test_a_wide_catalogue_with_a_plateau():
    """Many untouched posts share one score (their community's vector): a tie straddles the
    k-th place in every row."""
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(50, 200_000)).astype(np.float32)
    scores[:, ::3] = 2.5  # a third of the catalogue, tied, above most others
    for k in (10, 500):
        np.testing.assert_array_equal(top_k(scores, k), whole_row_selection(scores, k))
