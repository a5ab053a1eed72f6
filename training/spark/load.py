"""The events table read, validated and indexed on Spark.

The small tables (posts, communities, memberships: one row per thing, not per event) are
read by training/load.py as for the default engine; the events, the table that grows to
billions of rows, are read here from the CSV file or the Parquet directory, every cell
checked by the same rules, joined to the post and user rows, and indexed: new users are
numbered in order of first appearance (files in name order, rows in file order) exactly
as the default loader numbers them. All the events stay on Spark (EventColumns.frame),
where the state, the ALS matrix, the baselines' fits and the split's counts are computed;
only the positive events (event weight > 0) of at most `driver_users` users come back to
the driver (all the users with any when they are fewer, else a seeded sample of them:
sampled_users), as the same index arrays in the same order (the default loader's arrays
with the others left out), because the driver's numpy stages read only those (the seen
posts and targets of the users the tuning, the scorer and the evaluation draw, from the
sample): docs/training.md "What is collected to the driver".

A bad cell is found by one Spark pass; the error is then worded by re-reading that one
file with the default engine's reader (training/load.py events_from_table), so it names
the file, row (or row group and row) and column in exactly the same words.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa

from training import schema
from training.cells import DataError
from training.csvio import CsvTable, csv_header
from training.load import EventColumns, events_from_table, kind_weights
from training.params import AlsParams
from training.parquetio import ParquetTable, parquet_columns, parquet_files
from training.spark.frames import kind_weighted
from training.spark.session import spark_session
from training.spark.times import SparkEventTimes
from training.tables import open_table, parquet_dir, table_kind

# The driver's share of the events (docs/training.md "What is collected to the driver").
DRIVER_USERS = AlsParams.driver_users
SAMPLE_SEED = 7

FILE, POS = "_file", "_pos"  # where a row came from: its file, and its place in that file
WIDTH_BAD, EXTRA = "_width_bad", "_extra"  # a CSV row with more or fewer fields than its header


def _text(column: str):
    from pyspark.sql import functions as F

    return F.trim(F.col(column).cast("string"))


def _try_cast(column: str, sql_type: str):
    from pyspark.sql import functions as F

    # Spark 4 runs with ANSI SQL: a plain cast of a bad cell would fail the whole job.
    return F.expr(f"try_cast(trim(cast(`{column}` as string)) as {sql_type})")


def _raw_events(spark, data_dir: Path):
    """(DataFrame of the table's columns with FILE, POS and WIDTH_BAD, present columns)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    wanted = (*schema.EVENT_COLUMNS, *schema.EVENT_OPTIONAL)
    kind = table_kind(data_dir, schema.EVENTS_CSV)
    if kind is None:
        open_table(data_dir, schema.EVENTS_CSV, schema.EVENT_COLUMNS)  # raises the default engine's error
    if kind == "csv":
        path = Path(data_dir) / schema.EVENTS_CSV
        header = csv_header(path, schema.EVENT_COLUMNS)
        present = [c for c in wanted if c in header]
        # Columns by position, plus one more: Spark silently drops the extra fields of a
        # long row, which then show in EXTRA. A short row gets nulls, which the cell
        # checks below catch in every column the engine reads (one it ignores may be short).
        fields = [StructField(c, StringType()) for c in header] + [StructField(EXTRA, StringType())]
        df = spark.read.schema(StructType(fields)).option("header", True).csv(str(path))
        width_bad = F.col(EXTRA).isNotNull()
        # One CSV file: Spark's splits of it are numbered in file order, so this id grows
        # with the row's place in the file.
        position = F.monotonically_increasing_id()
        return df.select(
            *present, F.lit(str(path)).alias(FILE), position.alias(POS), width_bad.alias(WIDTH_BAD)
        ), present
    files = parquet_files(parquet_dir(data_dir, schema.EVENTS_CSV))
    present = parquet_columns(files, schema.EVENT_COLUMNS, schema.EVENT_OPTIONAL)
    df = spark.read.parquet(*(str(f) for f in files))
    return df.select(
        *present,
        F.col("_metadata.file_path").alias(FILE),
        F.col("_metadata.row_index").alias(POS),
        F.lit(False).alias(WIDTH_BAD),
    ), present


def _id_frame(spark, ids: dict[str, int], name: str):
    table = pa.table({name: list(ids), f"{name}_row": np.fromiter(ids.values(), np.int32, len(ids))})
    return spark.createDataFrame(table)


def _local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme in ("file", "") else Path(uri)


def _bad_cell_error(path: Path, post_index: dict[str, int], users: dict[str, int], column: str) -> DataError:
    """The default reader's error for the first bad cell of one file."""
    table = (
        CsvTable(path, schema.EVENT_COLUMNS, schema.EVENT_OPTIONAL)
        if path.suffix == ".csv"
        else ParquetTable(path, schema.EVENT_COLUMNS, schema.EVENT_OPTIONAL)
    )
    try:
        events_from_table(table, post_index, dict(users))
    except DataError as exc:
        return exc
    return DataError(f"{path}: column {column!r}: a cell Spark could not read (the file reader accepts it)")


def read_events_on_spark(
    data_dir: Path, post_index: dict[str, int], users: dict[str, int], driver_users: int = DRIVER_USERS
) -> EventColumns:
    """training.load.read_events on Spark (module docstring); new users are added to users.
    The driver gets the positive events of at most driver_users users (sampled_users)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    spark = spark_session()
    raw, present = _raw_events(spark, data_dir)
    posts = _id_frame(spark, post_index, "post_id")
    # No broadcast hints: the id tables are small here and Spark broadcasts them by itself
    # (adaptive execution); on a lake with 100M posts a forced broadcast would not fit.
    df = raw.join(posts, on="post_id", how="left")
    kind_code = F.array_position(F.array(*(F.lit(k) for k in schema.KINDS)), F.lower(_text("kind"))) - 1
    ts, count = _try_cast("ts", "bigint"), _try_cast("weight", "double")
    checks = [
        ("row width", F.col(WIDTH_BAD)),
        ("user_id", _text("user_id").isNull() | (_text("user_id") == "")),
        ("post_id", _text("post_id").isNull() | (_text("post_id") == "") | F.col("post_id_row").isNull()),
        ("kind", F.lit(False) if "kind" not in present else kind_code.isNull() | (kind_code < 0)),
        ("ts", ts.isNull() | (ts < 0)),
        (
            "weight",
            F.lit(False)
            if "weight" not in present
            else count.isNull() | F.isnan(count) | (F.abs(count) == np.inf) | (count < 0),
        ),
    ]
    bad = F.lit(None).cast("string")
    for column, test in reversed(checks):  # the first failing check of a row names it
        bad = F.when(F.coalesce(test, F.lit(True)), F.lit(column)).otherwise(bad)  # null: a missing cell
    df = df.select(
        _text("user_id").alias("user_id"),
        F.col("post_id_row").alias("post"),
        (kind_code if "kind" in present else F.lit(schema.KIND_CODE["like"])).cast("tinyint").alias("kind"),
        ts.alias("ts"),
        (count if "weight" in present else F.lit(1.0)).cast("float").alias("count"),
        bad.alias("_bad"),
        FILE,
        POS,
    ).persist(StorageLevel.MEMORY_AND_DISK)
    first_bad = df.where(F.col("_bad").isNotNull()).orderBy(FILE, POS).select(FILE, "_bad").limit(1).collect()
    if first_bad:
        df.unpersist()
        raise _bad_cell_error(_local_path(first_bad[0][FILE]), post_index, users, first_bad[0]["_bad"])

    # Users first seen in the events get the next rows, in order of first appearance.
    known = _id_frame(spark, users, "user_id")
    new = (
        df.join(known, on="user_id", how="left_anti")
        .groupBy("user_id")
        .agg(F.min(F.struct(FILE, POS)).alias("first"))
        .orderBy("first")
        .select("user_id")
        .toArrow()
        .column(0)
        .to_pylist()
    )
    for u in new:
        users[u] = len(users)
    indexed = (
        df.join(_id_frame(spark, users, "user_id"), on="user_id")
        .select(F.col("user_id_row").alias("user"), "post", "kind", "ts", "count", FILE, POS)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    total = indexed.count()  # fills the cache the state, the fits and the split read
    df.unpersist()
    if total == 0:
        where = Path(data_dir) / schema.EVENTS_CSV if table_kind(data_dir, schema.EVENTS_CSV) == "csv" else None
        raise DataError(f"{where or parquet_dir(data_dir, schema.EVENTS_CSV)}: no events (nothing to train on)")
    # Which events are positive depends on the whole table (training/load.py kind_weights).
    positive_kinds = [int(k) for k in schema.POSITIVE_KINDS]
    has_positive_kind = "kind" not in present or bool(
        indexed.where(F.col("kind").isin(*positive_kinds)).limit(1).count()
    )
    positive = kind_weighted(kind_weights(has_positive_kind)) > 0
    held = indexed.where(positive)
    engaged_users = None  # all of them are held
    if len(users) > driver_users:  # else no sample can be needed: no pass to count them
        engaged = held.select("user").distinct().toArrow().column(0).to_numpy()  # one row a user
        if len(engaged) > driver_users:
            rows = spark.createDataFrame(pa.table({"user": sampled_users(engaged, driver_users).astype(np.int32)}))
            held = held.join(F.broadcast(rows), on="user")  # at most driver_users rows: it fits
            engaged_users = len(engaged)
    cols = held.orderBy(FILE, POS).drop(FILE, POS).toArrow()
    return EventColumns(
        user=cols.column("user").to_numpy().astype(np.int32),
        post=cols.column("post").to_numpy().astype(np.int32),
        kind=cols.column("kind").to_numpy().astype(np.uint8) if "kind" in present else None,
        ts=cols.column("ts").to_numpy().astype(np.int64),
        count=cols.column("count").to_numpy().astype(np.float32) if "weight" in present else None,
        frame=indexed.drop(FILE, POS),
        positive_only=True,
        has_positive_kind=has_positive_kind,
        engaged_users=engaged_users,
    )


def sampled_users(engaged: np.ndarray, driver_users: int) -> np.ndarray:
    """The users whose positive events the driver collects, sorted: all of those with any
    when they are at most driver_users, else a sample of driver_users of them drawn with a
    fixed seed (the same users on every load of the same data: make evaluate's refit)."""
    engaged = np.sort(np.asarray(engaged, dtype=np.int64))
    if len(engaged) <= driver_users:
        return engaged
    return np.sort(np.random.default_rng(SAMPLE_SEED).choice(engaged, driver_users, replace=False))


def load_dataset_on_spark(data_dir: Path, driver_users: int = DRIVER_USERS) -> schema.Dataset:
    """training.load.load_dataset with the events read on Spark."""
    from training.load import load_dataset

    ds = load_dataset(data_dir, events_reader=partial(read_events_on_spark, driver_users=driver_users))
    ds.event_times = SparkEventTimes(ds)  # the split counts every event, which stay on Spark
    return ds
