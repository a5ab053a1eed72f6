"""What the split decides from every event, not only the positive ones: how many events
there are before a time, where the newest share begins, when each user was first seen,
and how much of the engagement lands on fresh posts (training/split.py, the index's age
window).

The default engine answers from the event columns it holds (EventTimes below). The
Spark engine's driver holds only the positive events (the only ones its numpy stages
read, training/spark/load.py), so a Dataset it loaded carries its own answers computed
by Spark aggregations over all the events (training/spark/times.py), with the same
results: the split is the same whichever engine loaded the data.
"""

from __future__ import annotations

import numpy as np

DAY = 86_400


class EventTimes:
    """The answers from the event columns (ds.e_ts sorted, as every loader sorts it)."""

    def __init__(self, ds):
        self.ds = ds

    @property
    def count(self) -> int:
        return len(self.ds.e_ts)

    @property
    def first_ts(self) -> int:
        return int(self.ds.e_ts.min())

    @property
    def end_ts(self) -> int:
        """The last event time + 1."""
        return int(self.ds.e_ts.max()) + 1

    def kth(self, k: int) -> int:
        """The k-th smallest event time (0-based)."""
        return int(self.ds.e_ts[k])

    def count_before(self, ts: int) -> int:
        return int(np.searchsorted(self.ds.e_ts, ts, side="left"))

    def first_seen(self) -> np.ndarray:
        """int64 [n_users]: each user's first event time (int64 max: none)."""
        out = np.full(self.ds.n_users, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(out, self.ds.e_user, self.ds.e_ts)  # e_ts is sorted, but users interleave
        return out

    def fresh_share(self, before_ts: int, window_days: float) -> float:
        """Share of the events before before_ts that land on a post no older than the window."""
        n = self.count_before(before_ts)
        if n == 0:
            return 0.0
        ds = self.ds
        age = ds.e_ts[:n] - ds.post_created_at[ds.e_post[:n]]
        return int((age <= window_days * DAY).sum()) / n


def event_times(ds):
    """The answers for this Dataset: its own (a Spark-loaded one's), else from its columns."""
    return getattr(ds, "event_times", None) or EventTimes(ds)
