"""Fixtures with real parts: a redis-server on a free loopback port, a real Redis Cluster
(six redis-server processes, started once per session when a test asks for it), a
trained and published tiny world, and the real gRPC service on a free port."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dataclasses
import shutil
import time
from pathlib import Path

import grpc
import pytest
import redis

from core.embedded_redis import EmbeddedRedis, free_port
from core.local_cluster import LocalCluster
from core.redis_conn import connect
from service.app import Service
from service.config import Config
from training import publish as publishing
from training.params import TrainParams
from training.synthetic import EPOCH, WorldParams, generate, write_world
from training.train import train

TINY = WorldParams(users=300, communities=24, posts=3000, events=30000, days=21, seed=11, end=EPOCH + 21 * 86_400)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), port=free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """Three masters and three replicas on loopback ports, shared by every cluster test of
    the session (each flushes it first); a failover test starts a cluster of its own."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


# The suites that run against both: a module fixture parametrized with BACKENDS gets its
# store from `own_store` (a redis-server of its own, or the session's cluster, flushed).
BACKENDS = ["single", "cluster"]


class OwnStore:
    """A Redis for one test module: url, a client (redis.Redis or RedisCluster), stop()."""

    def __init__(self, kind: str, request, tmp_path_factory, name: str):
        self.kind = kind
        self.server = None
        if kind == "cluster":
            cluster = request.getfixturevalue("redis_cluster")
            cluster.flush()
            self.url = cluster.url
        else:
            self.server = EmbeddedRedis(tmp_path_factory.mktemp(name), port=free_port()).start()
            self.url = self.server.url
        self.client = connect(self.url)

    def stop(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()


@pytest.fixture(scope="session")
def redis_client(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_world")
    write_world(generate(TINY), out, TINY)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_data, tmp_path_factory) -> Path:
    """Affinity-only scorer: the shared service's answers are then exactly the highest
    inner products (test_rank_e2e). Learned-scorer bundles: tests/test_training*.py."""
    models = tmp_path_factory.mktemp("models")
    return train(tiny_data, models, TrainParams(scorer="affinity"), progress=False, quiet=True)


@pytest.fixture(scope="session")
def learned_bundle(tiny_data, tmp_path_factory) -> Path:
    """The tiny world trained with the default (learned) scorer, never published here."""
    models = tmp_path_factory.mktemp("learned_models")
    return train(tiny_data, models, TrainParams(), progress=False, quiet=True)


@pytest.fixture(scope="session")
def published(tiny_bundle, redis_client) -> Path:
    publishing.publish(tiny_bundle, redis_client)
    return tiny_bundle


def service_config(bundle: Path, **overrides) -> Config:
    base = Config(
        grpc_addr="127.0.0.1:0",
        metrics_addr="",
        models_dir=bundle.parent,
        clock="data",
        reload_interval_s=0.2,
        redis_timeout_ms=200,
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture(scope="session")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def service(published, redis_server, metrics_port):
    svc = Service(service_config(published, metrics_addr=f"127.0.0.1:{metrics_port}"), redis_server.url).start()
    yield svc
    svc.stop(grace=1)


@pytest.fixture(scope="session")
def channel(service):
    ch = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    grpc.channel_ready_future(ch).result(timeout=10)
    yield ch
    ch.close()


@pytest.fixture(scope="session")
def ranker(channel):
    from nichefeed.v1 import ranking_pb2_grpc

    return ranking_pb2_grpc.FeedRankerStub(channel)


@pytest.fixture(scope="session")
def promtool() -> str:
    """Prometheus' own checker: `make install` takes it from Debian's prometheus package."""
    path = shutil.which("promtool") or str(Path(__file__).resolve().parents[1] / "var" / "tools" / "promtool")
    if not Path(path).is_file():
        pytest.fail("promtool is missing: run `make install` (it fetches it into var/tools/)")
    return path


SPARK_START_TRIES = 4


@pytest.fixture(scope="module")
def spark():
    """One local[2] SparkSession for a module's Spark tests (the engine's own session: a
    start costs seconds, so it is shared), stopped when the module ends so that no Spark
    threads or ports outlive the tests that use them."""
    from pyspark.errors import PySparkRuntimeError

    from training.spark.session import spark_session

    # This process also runs other tests' gRPC servers and channels, so spark-submit is
    # forked while gRPC threads are busy ("skipping fork() handlers"): in a full suite the
    # Java gateway has exited before sending its port, without a word, and started at a
    # later try; on a loaded machine two tries in a row have failed so. The fourth failure
    # is taken as real and fails the tests.
    for attempt in range(SPARK_START_TRIES):
        try:
            session = spark_session()
            break
        except PySparkRuntimeError as exc:
            if exc.getCondition() != "JAVA_GATEWAY_EXITED" or attempt == SPARK_START_TRIES - 1:
                raise
            time.sleep(2.0)
    yield session
    session.stop()


def parquet_copy(csv_dir: Path, out: Path, files: int = 3, row_group_rows: int = 4000) -> Path:
    """A CSV world as a lake writes it: each table a directory of Parquet files."""
    from training.parquetio import write_parquet_table

    out.mkdir(parents=True)
    for csv_file in sorted(csv_dir.glob("*.csv")):
        write_parquet_table(csv_file, out / csv_file.stem, files=files, row_group_rows=row_group_rows)
    return out


@pytest.fixture(scope="session")
def tiny_parquet(tiny_data, tmp_path_factory) -> Path:
    return parquet_copy(tiny_data, tmp_path_factory.mktemp("tiny_parquet") / "data")


def assert_same_dataset(a, b) -> None:
    """Every array and note of two loaded Datasets equal (the Spark DataFrame aside)."""
    import numpy as np

    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if field.name in ("events_frame", "event_times"):
            continue
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), field.name
        else:
            assert x == y, field.name


def positive_events(ds):
    """ds with only its positive events in the e_* arrays: what the Spark engine's driver
    holds (training/spark/load.py), in the same order."""
    keep = ds.event_weights() > 0
    cut = {name: getattr(ds, name)[keep] for name in ("e_user", "e_post", "e_kind", "e_ts", "e_count")}
    return dataclasses.replace(ds, **cut, events_positive_only=True)
