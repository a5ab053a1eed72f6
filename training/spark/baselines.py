"""Two baselines' own fits on Spark: plain ALS and EASE's Gram matrix.

The report's baselines fit models of their own over the training events
(training/baselines.py). When the Spark engine's driver holds the events of a sample of
the users only (beyond --driver-users, training/spark/load.py), these two fits, which need
every user's events, read them where they stay, on Spark (below the cap the driver holds
every engaged user's positive events and fits both itself, as the default engine does):
- plain ALS: the user x post matrix of log(1 + summed positive weight), aggregated on Spark and
  factored by MLlib's implicit ALS with implicit's confidence rule and sweep order
  (spark/als.py `mllib_implicit_als`: what differs between the libraries is said there);
- EASE: each catalogue item's engaged users counted, the most engaged items chosen by the
  same rule as training/baselines.py `ease_gram`, and their item x item Gram matrix (how
  many users engaged with both) counted on Spark by a self-join on the user. Only the
  counts come back: one row per catalogue item, then one per pair of chosen items that
  share a user (at most EASE_MAX_ITEMS squared). The dense inverse stays on the driver
  whatever the engine, as it is items x items.
Counts are integers, so EASE's Gram is equal to numpy's whatever order Spark adds in.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from training.params import AlsParams
from training.schema import Dataset
from training.spark.als import dense_factors, mllib_implicit_als
from training.spark.frames import event_weight, events_frame
from training.spark.session import spark_session
from training.spark.sums import ordered_sum


def _positive_before(spark, ds: Dataset, as_of: int):
    """(user, post, w) of the positive events before as_of."""
    from pyspark.sql import functions as F

    events = events_frame(spark, ds).where(F.col("ts") < as_of)
    return events.select("user", "post", event_weight(ds).alias("w")).where(F.col("w") > 0)


def plain_als_factors_on_spark(ds: Dataset, as_of: int, params: AlsParams) -> tuple[np.ndarray, np.ndarray]:
    """(user factors, post factors) of plain ALS fitted on the events before as_of: the
    value of a (user, post) pair is log(1 + its summed positive weight), as
    training/baselines.py `plain_als` sums and compresses it (in a fixed order: fractional
    counts, spark/sums.py)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    spark = spark_session()
    matrix = (
        _positive_before(spark, ds, as_of)
        .groupBy("user", "post")
        .agg(F.log1p(ordered_sum(F.col("w"))).alias("value"))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    model = mllib_implicit_als(matrix, "user", "post", params)  # posts solved last, as implicit's items
    users = dense_factors(model.itemFactors, ds.n_users, params.factors)
    posts = dense_factors(model.userFactors, ds.n_posts, params.factors)
    matrix.unpersist()
    return users, posts


def ease_gram_on_spark(ds: Dataset, as_of: int, catalogue: np.ndarray, max_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(cols, G): the catalogue columns EASE covers (the most engaged, at most max_items,
    ties to the lower column) and their Gram matrix (float64), from the distinct (user,
    post) pairs of positive engagement before as_of."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    spark = spark_session()
    positions = spark.createDataFrame(
        pa.table({"post": np.asarray(catalogue, np.int32), "col": np.arange(len(catalogue), dtype=np.int32)})
    )
    pairs = _positive_before(spark, ds, as_of).select("user", "post").distinct().join(positions, on="post")
    pairs = pairs.persist(StorageLevel.MEMORY_AND_DISK)  # read twice: the counts, then the Gram matrix
    engaged = pairs.groupBy("col").count().toArrow()
    counts = np.zeros(len(catalogue), np.int64)
    counts[engaged.column("col").to_numpy()] = engaged.column("count").to_numpy()
    engaged_cols = np.flatnonzero(counts > 0)
    cols = engaged_cols[np.argsort(-counts[engaged_cols], kind="stable")[:max_items]]
    chosen = spark.createDataFrame(pa.table({"col": cols.astype(np.int32), "k": np.arange(len(cols), dtype=np.int32)}))
    x = pairs.join(chosen, on="col").select("user", "k")
    both = (
        x.alias("a")
        .join(x.alias("b"), on="user")
        .groupBy(F.col("a.k").alias("i"), F.col("b.k").alias("j"))
        .count()
        .toArrow()
    )
    pairs.unpersist()
    G = np.zeros((len(cols), len(cols)), np.float64)
    G[both.column("i").to_numpy(), both.column("j").to_numpy()] = both.column("count").to_numpy()
    return cols, G
