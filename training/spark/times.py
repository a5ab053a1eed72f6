"""training/event_times.py's answers computed by Spark over all the events, for a Dataset
whose driver holds only the positive ones (training/spark/load.py). Each is exact, the
same number the event columns give: counts are counts, the quantile is the exact k-th
time (below), the first-seen times one row a user, the fresh share two counts divided
as numpy divides them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from training.event_times import DAY
from training.spark.frames import events_frame
from training.spark.session import spark_session

# The k-th time: an approximate quantile brackets it, within this share of the events,
# and only the times inside the bracket come back (about 4 x this share of the events).
BRACKET = 1e-3


class SparkEventTimes:
    """training.event_times.EventTimes over ds.events_frame (module docstring)."""

    def __init__(self, ds):
        from pyspark.sql import functions as F

        self.ds = ds
        self.frame = events_frame(spark_session(), ds)
        row = self.frame.agg(F.count("*").alias("n"), F.min("ts").alias("lo"), F.max("ts").alias("hi")).first()
        self.count = int(row["n"])
        self.first_ts = int(row["lo"]) if self.count else 0
        self.end_ts = int(row["hi"]) + 1 if self.count else 1
        self._before: dict[int, int] = {}

    def count_before(self, ts: int) -> int:
        from pyspark.sql import functions as F

        ts = int(ts)
        if ts not in self._before:  # the split asks for a few times, some twice
            self._before[ts] = self.frame.where(F.col("ts") < ts).count()
        return self._before[ts]

    def kth(self, k: int) -> int:
        """The k-th smallest event time (0-based), exactly: approxQuantile's answers for
        k/n -+ 2 x BRACKET bracket it (its rank error is at most BRACKET x n); the counts
        below and up to the bracket check that it does, a wider bracket is tried if not,
        and the times inside come back sorted to pick the k-th from."""
        from pyspark.sql import functions as F

        if not 0 <= k < self.count:
            raise IndexError(f"event {k} of {self.count}")
        share = BRACKET
        while True:
            if share >= 0.25:  # the whole range: certainly brackets it
                lo, hi = self.first_ts, self.end_ts - 1
            else:
                p = k / self.count
                bracket = self.frame.approxQuantile("ts", [max(0.0, p - 2 * share), min(1.0, p + 2 * share)], share)
                lo, hi = (int(t) for t in bracket)
            below = self.count_before(lo)
            if below <= k < self.count_before(hi + 1):
                inside = self.frame.where((F.col("ts") >= lo) & (F.col("ts") <= hi)).select("ts").toArrow()
                return int(np.sort(inside.column("ts").to_numpy())[k - below])
            share *= 4

    def first_seen(self) -> np.ndarray:
        from pyspark.sql import functions as F

        out = np.full(self.ds.n_users, np.iinfo(np.int64).max, dtype=np.int64)
        table = self.frame.groupBy("user").agg(F.min("ts").alias("ts")).toArrow()
        out[table.column("user").to_numpy()] = table.column("ts").to_numpy()
        return out

    def fresh_share(self, before_ts: int, window_days: float) -> float:
        from pyspark.sql import functions as F

        n = self.count_before(before_ts)
        if n == 0:
            return 0.0
        posts = pa.table(
            {"post": np.arange(self.ds.n_posts, dtype=np.int32), "created": self.ds.post_created_at.astype(np.int64)}
        )
        created = spark_session().createDataFrame(posts)
        fresh = (
            self.frame.where(F.col("ts") < int(before_ts))
            .join(created, on="post")
            .where((F.col("ts") - F.col("created")).cast("double") <= float(window_days * DAY))
            .count()
        )
        return fresh / n
