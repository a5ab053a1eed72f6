"""The Dataset's tables as Spark DataFrames, shared by the Spark engine's aggregations
(spark/als.py, spark/state.py), and the one rule they all weigh events by."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from training.schema import Dataset


def events_frame(spark, ds: Dataset):
    """The events (user, post, kind, ts, count) on Spark: the frame the Spark loader left
    cached, or, for a Dataset the default loader read (a test's), its columns sent over.
    Not kept on the Dataset: a Dataset may outlive the session (a test module's)."""
    if ds.events_frame is not None:
        return ds.events_frame
    # Spark has no unsigned bytes: kind codes (0-6) travel as int8, as the Spark loader's tinyint.
    kind = ds.e_kind.astype(np.int8)
    table = pa.table({"user": ds.e_user, "post": ds.e_post, "kind": kind, "ts": ds.e_ts, "count": ds.e_count})
    return spark.createDataFrame(table)


def event_weight(ds: Dataset):
    """ds.event_weights() as a column: the kind's weight times the count, a float32
    product as numpy computes it (the double product of two float32 values is exact, so
    rounding it to float gives numpy's float32 product bit for bit)."""
    return kind_weighted(ds.kind_weight)


def kind_weighted(weights: np.ndarray):
    """event_weight with these kind weights (the loader's, before the Dataset exists)."""
    from pyspark.sql import functions as F

    kind_weight = F.array(*(F.lit(float(w)) for w in weights))
    return (F.element_at(kind_weight, F.col("kind").cast("int") + 1) * F.col("count")).cast("float")


def post_community_frame(spark, ds: Dataset):
    """(post, community): one row a post."""
    return spark.createDataFrame(
        pa.table({"post": np.arange(ds.n_posts, dtype=np.int32), "community": ds.post_community.astype(np.int32)})
    )


def pairs_frame(spark, user: np.ndarray, community: np.ndarray, **columns: np.ndarray):
    """(user, community, *columns): memberships and the like, one row a pair."""
    table = {"user": user.astype(np.int32), "community": community.astype(np.int32), **columns}
    return spark.createDataFrame(pa.table(table))
