"""Per-group sums of non-integer values that do not depend on the order rows arrive in.

Spark's sum adds a group's rows in the order they reach the aggregation, and that order
is not part of a query's meaning: another partitioning, another plan, or a cached
partition recomputed after a shuffle hands the same rows over in another order. Floating
point addition is not associative, so a sum of non-integer values (hotness, engager
confidence, weights of fractional counts) can then differ in its last bits, and a
recomputation (make evaluate's refit of a split point) can then swap two tied posts.

ordered_sum adds each group's values in ascending order of value: one order fixed by
the values alone, so the same rows give the same double whatever the plan. Sums of
integers (counts, whole-number weights) are exact in any order and keep Spark's sum.

Cost: each group's values are gathered into one array before adding (one row of the
aggregation holds them), which is fine for the groups summed here (a post's events, a
(user, column) pair's events); a post with tens of millions of events would need a
two-level sum (sorted partial sums over fixed buckets) instead.
"""

from __future__ import annotations


def ordered_sum(value):
    """sum(value) per group as a double, its values added in ascending order (module
    docstring). Nulls are skipped, as sum skips them; an all-null group sums to 0."""
    from pyspark.sql import functions as F

    values = F.array_sort(F.collect_list(value.cast("double")))
    return F.aggregate(values, F.lit(0.0), lambda total, x: total + x)
