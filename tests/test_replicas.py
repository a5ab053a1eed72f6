"""Many replicas: two `python -m service` processes on their own loopback addresses
(127.0.0.2 and 127.0.0.3, one port, as two pods would be), sharing the session's Redis
Cluster, behind one client channel that balances per call with gRPC's round_robin and
health checking (core/balancing.py, the options README "Running in production" gives).

- Both replicas answer, in turn: of 40 calls, each replica's own /metrics count 20.
- A rolling restart under load drops no call: while callers keep calling (bounded in
  calls and in seconds), each replica in turn is sent SIGTERM (it says NOT_SERVING, then
  keeps answering for its drain notice, then drains), exits 0, is started again on its address, and takes calls again before the
  next one goes. Every call, each with a 5 s deadline and wait_for_ready, is answered.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from core import balancing
from core.embedded_redis import free_port
from core.redis_conn import connect
from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc
from tests.service_process import start_service, stop_service
from training import publish as publishing

HOSTS = ("127.0.0.2", "127.0.0.3")
LIMIT = 10
DEADLINE_S = 5.0  # long enough to wait out a drain and a reconnect
CALLERS = 4
MAX_CALLS = 4000  # the load loop's bounds: calls, and seconds (a stuck restart fails)
MAX_LOAD_S = 90.0
TAKES_CALLS_S = 20.0
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
NOTICE_S = 2.0  # after SIGTERM: NOT_SERVING but answering (long enough for a loaded machine)  # a restarted replica must take calls within this


def _port_free_on_every_host() -> int:
    """A port free on each replica's address (pods share the port, not the address)."""
    for _ in range(100):
        port = free_port(HOSTS[0])
        try:
            for host in HOSTS[1:]:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise AssertionError(f"no port free on every one of {HOSTS}")


class Replica:
    """One service process on its own address, with its own /metrics there."""

    def __init__(self, host: str, port: int, url: str, models: Path):
        self.host, self.port = host, port
        self.metrics_port = free_port(host)
        self.args = [
            "--grpc-addr", f"{host}:{port}",
            "--metrics-addr", f"{host}:{self.metrics_port}",
            "--redis-url", url,
            "--models-dir", str(models),
            "--clock", "data",
            "--drain-notice-s", str(NOTICE_S),
            "--drain-s", "5",
        ]  # fmt: skip
        self.proc = None

    def start(self) -> Replica:
        self.proc, line = start_service(self.args)
        assert "serving" in line, f"replica {self.host} did not start: {line!r} {self.proc.stderr.read()}"
        return self

    def stop(self) -> tuple[int, str, str]:
        return stop_service(self.proc)

    def rank_calls(self) -> int:
        """Rank calls this process answered OK (its own counter: which replica served)."""
        text = urllib.request.urlopen(f"http://{self.host}:{self.metrics_port}/metrics", timeout=5).read().decode()
        return int(
            sum(
                s.value
                for fam in text_string_to_metric_families(text)
                for s in fam.samples
                if s.name == "nichefeed_requests_total" and s.labels == {"method": "Rank", "code": "OK"}
            )
        )


@pytest.fixture(scope="module")
def replicas(redis_cluster, tiny_bundle):
    """Two replicas on the session's cluster (flushed, the tiny bundle published)."""
    redis_cluster.flush()
    with connect(redis_cluster.url) as client:
        publishing.publish(tiny_bundle, client, progress=False)
    port = _port_free_on_every_host()
    reps = [Replica(host, port, redis_cluster.url, tiny_bundle.parent) for host in HOSTS]
    with ThreadPoolExecutor(len(reps)) as pool:  # both load the bundle at once
        started = [pool.submit(r.start) for r in reps]
        errors = [f.exception() for f in started]
    if any(errors):
        for r in reps:
            if r.proc is not None:
                r.stop()
        raise next(e for e in errors if e)
    yield reps
    for r in reps:
        if r.proc.poll() is None:
            r.stop()


@pytest.fixture
def balanced(replicas):
    ch = grpc.insecure_channel(balancing.target([f"{r.host}:{r.port}" for r in replicas]), balancing.channel_options())
    yield ch
    ch.close()


def _both_in_rotation(stub, replicas, timeout: float = 20.0) -> None:
    """Call until each replica has answered one call from this channel: a subchannel joins
    the rotation only once connected and its health Watch said SERVING."""
    before = [r.rank_calls() for r in replicas]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        stub.Rank(ranking_pb2.RankRequest(user_id="u1", limit=LIMIT), timeout=DEADLINE_S, wait_for_ready=True)
        if all(r.rank_calls() > b for r, b in zip(replicas, before)):
            return
    raise AssertionError(f"both replicas not in the rotation after {timeout}s")


def test_round_robin_spreads_calls_evenly_over_the_replicas(replicas, balanced):
    stub = ranking_pb2_grpc.FeedRankerStub(balanced)
    _both_in_rotation(stub, replicas)
    before = [r.rank_calls() for r in replicas]
    for i in range(40):
        resp = stub.Rank(ranking_pb2.RankRequest(user_id=f"u{i}", limit=LIMIT), timeout=DEADLINE_S)
        assert len(resp.items) == LIMIT
    assert [r.rank_calls() - b for r, b in zip(replicas, before)] == [20, 20]


class LoadLoop:
    """CALLERS threads calling Rank back to back until stopped, MAX_CALLS or MAX_LOAD_S;
    every outcome kept (the code name of a failure, "short" for a short answer)."""

    def __init__(self, stub):
        self.stub = stub
        self.ok = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.end = time.monotonic() + MAX_LOAD_S
        self.threads = [threading.Thread(target=self._caller, args=(i,), daemon=True) for i in range(CALLERS)]

    def _caller(self, i: int) -> None:
        n = 0
        while not self.stopping.is_set() and time.monotonic() < self.end:
            with self.lock:
                if self.ok + len(self.failures) >= MAX_CALLS:
                    return
            request = ranking_pb2.RankRequest(user_id=f"u{(i * 97 + n) % 300}", limit=LIMIT)
            n += 1
            try:
                resp = self.stub.Rank(request, timeout=DEADLINE_S, wait_for_ready=True)
                outcome = None if len(resp.items) == LIMIT else "short"
            except grpc.RpcError as err:
                outcome = err.code().name
            with self.lock:
                if outcome is None:
                    self.ok += 1
                else:
                    self.failures.append(outcome)

    def calls(self) -> int:
        with self.lock:
            return self.ok + len(self.failures)

    def __enter__(self) -> LoadLoop:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(DEADLINE_S + 5)


def _wait_not_serving(direct: grpc.Channel) -> None:
    """Until the replica's health Check says NOT_SERVING. Bounded, but not by the notice
    itself: on a loaded machine the signal can reach the server's handler later than
    NOTICE_S after kill(); what matters is that NOT_SERVING comes before the server stops
    answering (a stopped server fails the Check with an RPC error, not a timeout)."""
    check = health_pb2_grpc.HealthStub(direct).Check
    end = time.monotonic() + NOTICE_S + 10.0
    while check(health_pb2.HealthCheckRequest(service=""), timeout=NOTICE_S).status != NOT_SERVING:
        assert time.monotonic() < end, "still SERVING after SIGTERM"
        time.sleep(0.01)


def _wait_taking_calls(replica: Replica, load: LoadLoop) -> None:
    end = time.monotonic() + TAKES_CALLS_S
    while replica.rank_calls() < 5:
        assert time.monotonic() < end, f"restarted replica {replica.host} took no calls in {TAKES_CALLS_S}s"
        assert load.calls() < MAX_CALLS, "the load loop ran out of calls before the restart finished"
        time.sleep(0.05)


def test_a_rolling_restart_under_load_drops_no_call(replicas, balanced):
    stub = ranking_pb2_grpc.FeedRankerStub(balanced)
    _both_in_rotation(stub, replicas)
    during: list[int] = []  # calls answered while each replica was away
    with LoadLoop(stub) as load:
        time.sleep(0.5)
        for replica in replicas:
            at_term = load.calls()
            with grpc.insecure_channel(f"{replica.host}:{replica.port}") as direct:
                grpc.channel_ready_future(direct).result(timeout=10)
                replica.proc.send_signal(signal.SIGTERM)
                _wait_not_serving(direct)
                # Still answering while its clients move away (the drain notice).
                one = ranking_pb2_grpc.FeedRankerStub(direct).Rank(
                    ranking_pb2.RankRequest(user_id="u2", limit=LIMIT), timeout=DEADLINE_S
                )
                assert len(one.items) == LIMIT
            code, _out, err = replica.stop()  # waits for the exit: in-flight calls drained
            assert code == 0 and "Traceback" not in err, err
            replica.start()
            _wait_taking_calls(replica, load)
            during.append(load.calls() - at_term)
        time.sleep(0.5)
    assert load.failures == []
    assert all(n > 0 for n in during), during  # the load really ran through each restart
    assert load.ok == load.calls() and load.ok < MAX_CALLS


def test_the_readme_gives_clients_the_service_config_the_tests_use():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert json.dumps(balancing.SERVICE_CONFIG) in readme
