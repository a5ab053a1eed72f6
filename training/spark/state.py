"""The world as of a time on Spark: training/state.py's LogAggregates computed by Spark
aggregations over the events, so that no stage of the state needs the event log on the
driver; only the results come back, one row a post, a user or a (user, community) pair,
as the numpy arrays the shared code (and the bundle) takes.

Each method is the numpy function of the same name in training/state.py (or
training/neighbours.py) over the events with ts < as_of, with the same rules and the
same tie-breaks:
- counts, memberships, histories and engager counts are integers and come out equal;
- the sums of weights are float32 values summed in double, each group's values in
  ascending order (spark/sums.py: Spark's own sum adds them in arrival order, which a
  recomputation can change) instead of the log's. For the per-post counters and hotness
  numpy sums in double too, so their float32 results are equal unless the two double
  sums straddle a float32 rounding boundary; hotness decays each event with Java's pow
  where numpy uses exp2, the same or one double ulp apart, which the float32 rounding
  absorbs. The community weights numpy sums in float32 (scipy's duplicate sum), so with
  fractional counts they differ in the last float32 bits (whole-number weights, as in
  the default world: equal). tests/test_spark_engine.py checks all of it on a small
  world with whole and with fractional counts; tests/test_spark_sums.py that the arrays
  do not depend on how the events are partitioned or ordered.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from core.neighbours import HISTORY
from core.retrieval import RetrievalParams
from core.scoring import MEMBER_WEIGHT
from training import schema
from training.spark.frames import event_weight, events_frame, pairs_frame, post_community_frame
from training.spark.session import spark_session
from training.spark.sums import ordered_sum
from training.state import WorldState


def _per_row(table, key: str, value: str, n: int, dtype) -> np.ndarray:
    """A [n] array from (key, value) rows; zeros where no row."""
    out = np.zeros(n, dtype)
    if table.num_rows:
        out[table.column(key).to_numpy()] = table.column(value).to_numpy().astype(dtype)
    return out


class SparkLogAggregates:
    """training.state.LogAggregates on Spark (module docstring)."""

    def __init__(self, ds: schema.Dataset, as_of: int):
        from pyspark.sql import functions as F

        self.ds, self.as_of = ds, int(as_of)
        self.spark = spark_session()
        self.before = (
            events_frame(self.spark, ds)
            .where(F.col("ts") < self.as_of)
            .select("user", "post", "kind", "ts", "count", event_weight(ds).alias("w"))
        )
        self.positive = self.before.where(F.col("w") > 0)

    def _positive_in_communities(self):
        """(user, post, community, w) of each positive event."""
        return self.positive.join(post_community_frame(self.spark, self.ds), on="post")

    def memberships(self) -> tuple[np.ndarray, np.ndarray]:
        """derive_memberships: two positive engagements in a community, or authorship."""
        from pyspark.sql import functions as F

        ds = self.ds
        engaged = self._positive_in_communities().select("user", "community", F.lit(1).alias("n"))
        has = ds.post_author >= 0
        # An authored post counts twice (training/state.py): authorship alone makes a member.
        authored = pairs_frame(
            self.spark, ds.post_author[has], ds.post_community[has], n=np.full(int(has.sum()), 2, np.int32)
        )
        table = (
            engaged.unionByName(authored)
            .groupBy("user", "community")
            .agg(F.sum("n").alias("n"))  # integers: exact in any order
            .where(F.col("n") >= 2)
            .orderBy("user", "community")
            .select("user", "community")
            .toArrow()
        )
        return (
            table.column("user").to_numpy().astype(np.int32),
            table.column("community").to_numpy().astype(np.int32),
        )

    def counters(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """post_counters: positive weight, negative count and events of any kind, per post."""
        from pyspark.sql import functions as F

        negative = F.col("kind").isin(*(int(k) for k in schema.NEGATIVE_KINDS))
        table = (
            self.before.groupBy("post")
            .agg(
                # In a fixed order: counts and weights may be fractional (spark/sums.py).
                ordered_sum(F.greatest(F.col("w"), F.lit(0.0))).alias("positives"),
                ordered_sum(F.when(negative, F.col("count")).otherwise(F.lit(0.0))).alias("negatives"),
                ordered_sum(F.col("count")).alias("views"),
            )
            .toArrow()
        )
        n = self.ds.n_posts
        return tuple(_per_row(table, "post", name, n, np.float32) for name in ("positives", "negatives", "views"))

    def hot(self, half_life_h: float) -> np.ndarray:
        """hotness: each event's positive weight decayed to as_of (core.hotness), summed per post."""
        from pyspark.sql import functions as F

        age = F.greatest(F.lit(float(self.as_of)) - F.col("ts").cast("double"), F.lit(0.0))
        # core.hotness.decayed: float64 arithmetic, each event's value rounded to float32.
        decayed = F.greatest(F.col("w"), F.lit(0.0)).cast("double") * F.pow(F.lit(2.0), -age / (half_life_h * 3600.0))
        # Never whole numbers: summed in a fixed order (spark/sums.py).
        table = self.before.groupBy("post").agg(ordered_sum(decayed.cast("float")).alias("hot")).toArrow()
        return _per_row(table, "post", "hot", self.ds.n_posts, np.float32)

    def community_weight(self, m_user: np.ndarray, m_comm: np.ndarray) -> sp.csr_matrix:
        """community_weights: positive engagement per (user, community) plus MEMBER_WEIGHT
        where a member, each user's heaviest RetrievalParams().communities kept (ties by
        lower community), as training/state.py's _heaviest keeps them."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        ds, n = self.ds, RetrievalParams().communities
        engaged = self._positive_in_communities().select("user", "community", F.col("w").cast("double").alias("w"))
        members = pairs_frame(self.spark, m_user, m_comm, w=np.full(len(m_user), MEMBER_WEIGHT, np.float64))
        # Ranked by the float32 weight the state holds, so ties are the ties numpy sees.
        # In a fixed order: with fractional counts the weights are not whole (spark/sums.py).
        weights = (
            engaged.unionByName(members)
            .groupBy("user", "community")
            .agg(ordered_sum(F.col("w")).cast("float").alias("w"))
        )
        heaviest = Window.partitionBy("user").orderBy(F.col("w").desc(), F.col("community"))
        table = weights.withColumn("rank", F.row_number().over(heaviest)).where(F.col("rank") <= n).toArrow()
        users = table.column("user").to_numpy().astype(np.int32)
        W = sp.csr_matrix(
            (table.column("w").to_numpy().astype(np.float32), (users, table.column("community").to_numpy())),
            shape=(ds.n_users, ds.n_communities),
        )
        W.sort_indices()
        return W

    def history(self, keep: int = HISTORY) -> np.ndarray:
        """user_history: each user's `keep` newest distinct positively engaged posts,
        newest first (ties by lower post row), -1 padded."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        newest = self.positive.groupBy("user", "post").agg(F.max("ts").alias("ts"))
        by_user = Window.partitionBy("user").orderBy(F.col("ts").desc(), F.col("post"))
        table = (
            newest.withColumn("rank", F.row_number().over(by_user) - 1)
            .where(F.col("rank") < keep)
            .select("user", "post", "rank")
            .toArrow()
        )
        out = np.full((self.ds.n_users, keep), -1, dtype=np.int32)
        out[table.column("user").to_numpy(), table.column("rank").to_numpy()] = table.column("post").to_numpy()
        return out

    def last_positive(self) -> np.ndarray:
        """last_positive: each post's newest positive engagement time (0 where none)."""
        from pyspark.sql import functions as F

        table = self.positive.groupBy("post").agg(F.max("ts").alias("ts")).toArrow()
        return _per_row(table, "post", "ts", self.ds.n_posts, np.int64)

    def member_engagers(self, state: WorldState) -> np.ndarray:
        """member_engagers: distinct members of each post's community who engaged with it positively."""
        from pyspark.sql import functions as F

        roles = state.m_role > 0
        members = pairs_frame(self.spark, state.m_user[roles], state.m_community[roles])
        table = (
            self._positive_in_communities()
            .join(members, on=["user", "community"])
            .select("post", "user")
            .distinct()
            .groupBy("post")
            .agg(F.count("*").alias("n"))
            .toArrow()
        )
        return _per_row(table, "post", "n", self.ds.n_posts, np.int32)
