"""The pipeline's ALS stage on Spark: MLlib's implicit-feedback ALS on the same design.

Same matrix as training/als.py: users x [communities | posts], a post column holding the
user's net engagement (kept when positive), a community column the engagement summed over
its posts plus the membership prior, at community_share; value log(1 + net). The
aggregation (group by user and column, sum, keep the positive nets) runs on Spark over
the events before the state's time, and so does each post's summed engager confidence;
both sums add each group's values in a fixed order (spark/sums.py), so a recomputation
gives the same bits.

Two rules differ between the libraries and are matched here:
- Confidence. implicit weighs a pair by c = alpha * value; MLlib by c = 1 + alpha * r.
  The rating handed to MLlib is therefore r = value - 1/alpha, which gives the same c. A
  pair whose c would fall below 1 (a tiny fractional count) gets c = 1 (r just above 0:
  MLlib reads r <= 0 as "not preferred"), where implicit would weigh it below an
  unobserved pair.
- Which side is solved last. implicit solves items last in every sweep, so a post's factor
  is exactly the item step given the final user factors (embeddings.py relies on it);
  MLlib solves its "users" last. The columns are therefore MLlib's users and the users
  its items.
What stays different: MLlib scales the L2 penalty of each row by that row's number of
ratings (ALS-WR), implicit does not, and the two start from different random factors; the
parity test and the training benchmark measure that the report is the same within noise.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from training.als import MEMBERSHIP_PRIOR, AlsModel
from training.params import AlsParams
from training.schema import Dataset
from training.spark.frames import event_weight, events_frame, pairs_frame, post_community_frame
from training.spark.session import partitions, spark_session
from training.spark.sums import ordered_sum
from training.state import WorldState

MIN_RATING = 1e-6  # MLlib reads a rating <= 0 as "not preferred"; this keeps c at 1


def _matrix(spark, ds: Dataset, state: WorldState, share: float):
    """(user, column, value) of the users x [communities | posts] matrix, before alpha."""
    from pyspark.sql import functions as F

    before = (
        events_frame(spark, ds).where(F.col("ts") < state.as_of).select("user", "post", event_weight(ds).alias("w"))
    )
    post_community = post_community_frame(spark, ds)
    prior_w = np.zeros(len(state.m_role), np.float64)
    for code, value in MEMBERSHIP_PRIOR.items():
        prior_w[state.m_role == code] = value
    prior = pairs_frame(spark, state.m_user, state.m_community, w=prior_w)
    n_c = ds.n_communities

    def positive_nets(frame, column):
        # In a fixed order: fractional counts make the nets non-integer (spark/sums.py).
        net = frame.groupBy("user", column).agg(ordered_sum(F.col("w")).alias("net")).where(F.col("net") > 0)
        return net.select("user", F.col(column).alias("column"), F.log1p("net").alias("value"))

    posts = positive_nets(before, "post").select("user", (F.col("column") + n_c).alias("column"), "value")
    engaged = before.join(post_community, on="post").select("user", "community", "w")
    communities = positive_nets(engaged.unionByName(prior), "community").select(
        "user", "column", (F.col("value") * share).alias("value")
    )
    return posts.unionByName(communities)


def dense_factors(frame, rows: int, d: int) -> np.ndarray:
    """MLlib factors (id, features) as a float32 [rows, d] array; zeros for ids it never saw."""
    table = frame.toArrow()
    out = np.zeros((rows, d), dtype=np.float32)
    if table.num_rows:
        ids = table.column("id").to_numpy()
        out[ids] = pa.concat_arrays(table.column("features").chunks).flatten().to_numpy().reshape(-1, d)
    return out


def mllib_implicit_als(matrix, row: str, column: str, params: AlsParams):
    """MLlib's implicit ALS over `matrix`'s (row, column, value) with implicit's confidence
    rule (c = alpha * value, module docstring), the `column` side solved last in each
    sweep, as implicit solves its items; returns the fitted model."""
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    spark = spark_session()
    rating = F.greatest(F.col("value") - 1.0 / params.alpha, F.lit(MIN_RATING))
    blocks = partitions(spark)
    als = ALS(
        rank=params.factors,
        maxIter=params.iterations,
        regParam=params.regularization,
        implicitPrefs=True,
        alpha=params.alpha,
        seed=params.seed,
        userCol=column,  # MLlib solves its users last in each sweep
        itemCol=row,
        ratingCol="rating",
        numUserBlocks=blocks,
        numItemBlocks=blocks,
    )
    # Sorted, so each block receives its ratings in one order whatever plan produced the
    # matrix: MLlib sums them in arrival order, and float sums in another order differ in
    # the last bits, enough to swap tied posts; make evaluate's refit must match exactly.
    return als.fit(matrix.select(row, column, rating.alias("rating")).orderBy(column, row))


def fit_community_als_on_spark(ds: Dataset, state: WorldState, params: AlsParams) -> AlsModel:
    """training.als.fit_community_als with the aggregation and the fit on Spark."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    spark = spark_session()
    matrix = _matrix(spark, ds, state, params.community_share).persist(StorageLevel.MEMORY_AND_DISK)
    model = mllib_implicit_als(matrix, "user", "column", params)
    n_c, d = ds.n_communities, params.factors
    users = dense_factors(model.itemFactors, ds.n_users, d)
    columns = dense_factors(model.userFactors, n_c + ds.n_posts, d)
    # implicit's item step weighs each engager by c - 1 (training/als.py): per post, on Spark.
    weights = (
        matrix.where(F.col("column") >= n_c)
        .groupBy("column")
        .agg(ordered_sum(params.alpha * F.col("value") - 1.0).alias("w"))  # logs: never whole (spark/sums.py)
        .toArrow()
    )
    matrix.unpersist()
    post_weight = np.zeros(ds.n_posts, np.float32)
    post_weight[weights.column("column").to_numpy() - n_c] = weights.column("w").to_numpy()
    return AlsModel(
        users, np.ascontiguousarray(columns[:n_c]), np.ascontiguousarray(columns[n_c:]), np.maximum(post_weight, 0)
    )
