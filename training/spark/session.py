"""The SparkSession the engine runs in.

Under spark-submit the master, memory and partitions are spark-submit's (`--master`,
`--conf ...`); run as `python -m training train --engine spark` it is a local session,
local[2] unless NICHEFEED_SPARK_MASTER says otherwise, with a quiet JVM. A checkpoint
directory (`--conf spark.checkpoint.dir=...`) is handed to the SparkContext, where MLlib's
ALS uses it to cut the lineage of its iterations (without one a long fit's lineage grows
with every sweep, which a cluster run with many iterations cannot afford).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MASTER = "local[2]"
LOCAL_PARTITIONS = 4  # shuffle partitions and ALS blocks on a laptop-sized run
LOCAL_DRIVER_MEMORY = "4g"  # the driver is the whole of a local run: 10M events need more than Spark's 1g
CHECKPOINT_CONF = "spark.checkpoint.dir"
PARTITIONS_CONF = "spark.sql.shuffle.partitions"
LOG_CONFIG = Path(__file__).with_name("log4j2.properties")


def spark_session():
    """The active session, or a new one (see the module docstring)."""
    try:
        from pyspark import SparkConf
        from pyspark.sql import SparkSession
    except ImportError:
        # make serve installs no pyspark (Makefile "Installs"); say how to get it.
        raise SystemExit("error: the Spark engine needs pyspark and Java: run make install-spark") from None

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName("nichefeed-train")
    if not SparkConf().contains("spark.master"):  # not under spark-submit: a local run
        java_opts = f"-Dlog4j2.configurationFile=file:{LOG_CONFIG}"
        builder = (
            builder.master(os.environ.get("NICHEFEED_SPARK_MASTER", DEFAULT_MASTER))
            .config("spark.driver.memory", os.environ.get("NICHEFEED_SPARK_DRIVER_MEMORY", LOCAL_DRIVER_MEMORY))
            .config(PARTITIONS_CONF, str(LOCAL_PARTITIONS))
            .config("spark.driver.extraJavaOptions", java_opts)
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
        )
    spark = builder.getOrCreate()
    checkpoint = spark.conf.get(CHECKPOINT_CONF, None)
    if checkpoint:
        spark.sparkContext.setCheckpointDir(checkpoint)
    return spark


def partitions(spark) -> int:
    """ALS user and item blocks: as many as the shuffle partitions the run was given."""
    return int(spark.conf.get(PARTITIONS_CONF))
