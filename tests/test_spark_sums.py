"""The Spark engine's sums of non-integer values do not depend on the order the events
reach them (training/spark/sums.py): the same events, in another order over another
partitioning, give bit-identical state arrays, engager weights and factors, which is
what lets make evaluate's refit of a split point reproduce the stored rankings. Spark's
own sum does not have that property, shown here on the same kind of values."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from training.als import fit_community_als
from training.load import load_dataset
from training.params import AlsParams
from training.spark.als import _matrix
from training.state import log_aggregates, state_as_of


@pytest.fixture(scope="module")
def fractional(spark, tiny_data):
    """The tiny world with counts that are not whole numbers, so every weight sum is
    non-integer (the default world's whole counts leave only hotness and the engager
    weights so)."""
    ds = load_dataset(tiny_data)
    counts = np.random.default_rng(11).uniform(0.1, 3.0, len(ds.e_ts)).astype(np.float32)
    return dataclasses.replace(ds, e_count=counts, memberships_derived=True, events_frame=None)


def arranged(spark, ds, seed: int | None, partitions: int):
    """ds with its events on Spark in another order (a permutation; None: the log's)
    over `partitions` partitions, hashed by user when shuffled, so each post's events
    arrive from other partitions in another order."""
    order = np.arange(len(ds.e_ts)) if seed is None else np.random.default_rng(seed).permutation(len(ds.e_ts))
    table = pa.table(
        {
            "user": ds.e_user[order],
            "post": ds.e_post[order],
            "kind": ds.e_kind[order].astype(np.int8),
            "ts": ds.e_ts[order],
            "count": ds.e_count[order],
        }
    )
    frame = spark.createDataFrame(table)
    frame = frame.coalesce(1) if seed is None else frame.repartition(partitions, "user")
    return dataclasses.replace(ds, events_frame=frame)


def test_spark_arrays_do_not_depend_on_the_events_order_or_partitioning(spark, fractional):
    a, b = arranged(spark, fractional, None, 1), arranged(spark, fractional, 5, 5)
    as_of = int(fractional.e_ts[int(len(fractional.e_ts) * 0.8)])
    here = state_as_of(a, as_of, True, 6.0, engine="spark")
    there = state_as_of(b, as_of, True, 6.0, engine="spark")
    for name in ("m_user", "m_community", "positives", "negatives", "views", "hot", "author_trust", "history"):
        x, y = getattr(here, name), getattr(there, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name  # bit for bit
    W, V = here.community_weight, there.community_weight
    assert np.array_equal(W.indptr, V.indptr) and np.array_equal(W.indices, V.indices)
    assert np.array_equal(W.data, V.data)
    engagers = log_aggregates(a, as_of, "spark").member_engagers(here)
    assert np.array_equal(engagers, log_aggregates(b, as_of, "spark").member_engagers(there))
    # The ALS matrix's values (doubles, before MLlib rounds them to float): the sums of
    # fractional weights there are not absorbed by a float32 rounding.
    values = [
        _matrix(spark, d, here, 0.5).orderBy("user", "column").toArrow().column("value").to_numpy() for d in (a, b)
    ]
    assert np.array_equal(values[0], values[1])
    params = AlsParams(factors=4, iterations=2, engine="spark")
    fit_a, fit_b = fit_community_als(a, here, params), fit_community_als(b, here, params)
    assert fit_a.post_weight.any()
    for name in ("post_weight", "user_factors", "community_factors", "post_factors"):
        assert np.array_equal(getattr(fit_a, name), getattr(fit_b, name)), name


def test_ordered_sum_is_one_double_whatever_the_partitioning_and_spark_sum_is_not(spark):
    """Group sums of decayed weights (hotness-like values) over two arrangements of the
    same rows: ordered_sum gives the same doubles; Spark's sum, adding in arrival order,
    does not (which is why the engine does not use it for such values)."""
    from pyspark.sql import functions as F

    from training.spark.sums import ordered_sum

    rng = np.random.default_rng(3)
    n = 60_000
    key = rng.integers(0, 40, n).astype(np.int32)
    value = rng.uniform(0.0, 3.0, n) * np.exp2(-rng.uniform(0.0, 30.0, n))
    results = {}
    for name, order, parts in (("log", np.arange(n), 1), ("shuffled", rng.permutation(n), 7)):
        frame = spark.createDataFrame(pa.table({"key": key[order], "value": value[order]})).repartition(parts)
        table = (
            frame.groupBy("key")
            .agg(ordered_sum(F.col("value")).alias("ordered"), F.sum("value").alias("spark"))
            .orderBy("key")
            .toArrow()
        )
        results[name] = {c: table.column(c).to_numpy() for c in ("ordered", "spark")}
    assert np.array_equal(results["log"]["ordered"], results["shuffled"]["ordered"])
    assert not np.array_equal(results["log"]["spark"], results["shuffled"]["spark"])
    # and both are the sum: to rounding
    sums = np.bincount(key, weights=value, minlength=40)
    np.testing.assert_allclose(results["log"]["ordered"], sums, rtol=1e-12)
