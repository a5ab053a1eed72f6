"""CoEngaged.nearest: the most co-engaged rows, history excluded, ties by lower row: the
binary search and stable sort give exactly the np.isin + lexsort answer, ties included."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core.neighbours import co_engaged


def reference(co, limit: int) -> np.ndarray:
    if len(co.rows) == 0 or limit <= 0:
        return np.empty(0, dtype=np.int64)
    keep = ~np.isin(co.rows, co.history)
    rows, totals = co.rows[keep], co.totals[keep]
    return rows[np.lexsort((rows, -totals))[:limit]]


@settings(max_examples=300, deadline=None)
@given(
    history=st.lists(st.integers(-1, 30), max_size=12),
    seed=st.integers(0, 2**16),
    levels=st.integers(1, 4),  # few distinct similarities: many tied totals
    limit=st.integers(0, 40),
)
def test_nearest_equals_the_isin_lexsort_rule(history, seed, levels, limit):
    rng = np.random.default_rng(seed)
    neighbours = rng.integers(-1, 31, size=(31, 5)).astype(np.int32)
    sims = (rng.integers(1, levels + 1, size=(31, 5)) / levels).astype(np.float32)
    co = co_engaged(np.asarray(history, dtype=np.int32), neighbours, sims)
    assert np.array_equal(co.nearest(limit), reference(co, limit))
