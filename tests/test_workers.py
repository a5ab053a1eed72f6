"""`python -m service --workers 2`: two server processes on one port, one /metrics that
counts both (prometheus multiprocess mode, valid for promtool), and SIGTERM drains the
requests in flight before the processes exit cleanly."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from core.embedded_redis import EmbeddedRedis, free_port
from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc
from training import publish as publishing

CALLS = 24


def _scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def _samples(text: str, name: str) -> list:
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name]


def _stubs(port: int, n: int):
    """n channels on separate connections (the kernel spreads connections over workers)."""
    channels = [
        grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(n)
    ]
    return channels, [ranking_pb2_grpc.FeedRankerStub(ch) for ch in channels]


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the supervisor and whatever of its group still runs (its workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _rest_of_output(proc: subprocess.Popen) -> str:
    """What the server wrote after its first line. Bounded: the pipes stay open while any
    process of the server's group lives, and a plain read() would wait for them forever."""
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate(timeout=30)
        err += "\n(the server's group still held its pipes 30 s after it exited: killed)"
    return out + err


@pytest.fixture(scope="module")
def two_workers(tiny_bundle, tmp_path_factory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("workers-redis"), port=free_port()).start()
    client = redis.Redis.from_url(server.url)
    publishing.publish(tiny_bundle, client)
    grpc_port, metrics_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "--workers",
            "2",
            "--redis-url",
            server.url,
            "--models-dir",
            str(tiny_bundle.parent),
            "--grpc-addr",
            f"127.0.0.1:{grpc_port}",
            "--metrics-addr",
            f"127.0.0.1:{metrics_port}",
            "--clock",
            "data",
            "--redis-timeout-ms",
            "1500",
            "--redis-max-budget-ms",
            "1500",
            "--drain-s",
            "10",
            "--pin-cpus",
            "true",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # Its own process group, so teardown can stop the workers with the supervisor:
        # a SIGKILLed supervisor would leave them running, holding the port and the pipes.
        start_new_session=True,
    )
    line = ""
    end = time.monotonic() + 120
    while time.monotonic() < end and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if "serving" in line:
                break
    if "with 2 workers" not in line:
        _kill_group(proc)
        server.stop()
        raise AssertionError(f"the server did not start: {line!r} {_rest_of_output(proc)}")
    yield proc, grpc_port, metrics_port, server
    _kill_group(proc)
    if server.proc is not None and server.proc.poll() is None:
        server.proc.send_signal(signal.SIGCONT)
    client.close()
    server.stop()


def _cpus_of_threads(pid: int) -> set[str]:
    """The distinct Cpus_allowed_list values of every thread of a process."""
    out = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/status") as f:
            out |= {line.split()[1] for line in f if line.startswith("Cpus_allowed_list")}
    return out


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry))
    return kids


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: --pin-cpus has nothing to choose")
def test_pin_cpus_puts_each_worker_on_a_cpu_of_its_own_and_leaves_the_supervisor_free(two_workers):
    proc, *_ = two_workers
    workers = [pid for pid in _children(proc.pid) if "service.workers" in open(f"/proc/{pid}/cmdline").read()]
    assert len(workers) == 2
    cpus = [_cpus_of_threads(pid) for pid in workers]
    assert all(len(c) == 1 for c in cpus), cpus  # every thread of a worker on one and the same CPU
    assert cpus[0] != cpus[1]
    assert len(os.sched_getaffinity(proc.pid)) == len(os.sched_getaffinity(0))


def test_metrics_count_requests_of_every_worker(two_workers, promtool):
    proc, grpc_port, metrics_port, _ = two_workers
    channels, stubs = _stubs(grpc_port, 4)
    try:
        for i in range(CALLS):
            resp = stubs[i % 4].Rank(ranking_pb2.RankRequest(user_id=f"u{i}", limit=5), timeout=10)
            assert len(resp.items) == 5 and not resp.degraded
    finally:
        for ch in channels:
            ch.close()
    text = _scrape(metrics_port)
    ok = [s for s in _samples(text, "nichefeed_requests_total") if s.labels == {"method": "Rank", "code": "OK"}]
    assert sum(s.value for s in ok) == CALLS
    assert len({s.labels["pid"] for s in _samples(text, "nichefeed_worker_up")}) == 2
    assert sum(s.value for s in _samples(text, "nichefeed_request_latency_seconds_count")) == CALLS
    versions = [s for s in _samples(text, "nichefeed_model_info") if s.value == 1]
    assert len(versions) == 1
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_leave_hides_the_group_in_every_worker_on_the_next_request(two_workers, tiny_bundle):
    """The live graph is read from Redis by each request, whichever process answers it."""
    from core import contract
    from core.bundle import load_bundle
    from nichefeed.v1 import graph_pb2, graph_pb2_grpc

    _, grpc_port, _, _ = two_workers
    b = load_bundle(tiny_bundle)
    c = b.community_row["c11"]
    assert b[contract.COMMUNITY_PRIVATE_FILE][c]
    posts = [b.post_ids[r] for r in b.community_recent[c].tolist()]
    channels, stubs = _stubs(grpc_port, 8)
    graph = graph_pb2_grpc.CommunityGraphStub(channels[0])
    request = ranking_pb2.RankRequest(user_id="worker-user", limit=200, candidate_post_ids=posts)

    def write(op: int, n: int) -> None:
        event = graph_pb2.GraphEvent(event_id=f"wk{n}", op=op, user_id="worker-user", community_id="c11")
        if op == graph_pb2.GRAPH_OP_CREATE_USER:
            event = graph_pb2.GraphEvent(event_id=f"wk{n}", op=op, user_id="worker-user", community_ids=["c11"])
        graph.WriteGraph(graph_pb2.WriteGraphRequest(events=[event]), timeout=10)

    try:
        write(graph_pb2.GRAPH_OP_CREATE_USER, 0)
        assert all({i.post_id for i in stub.Rank(request, timeout=10).items} == set(posts) for stub in stubs)
        write(graph_pb2.GRAPH_OP_LEAVE, 1)
        assert all(not stub.Rank(request, timeout=10).items for stub in stubs)  # 8 connections, both workers
    finally:
        for ch in channels:
            ch.close()


def test_sigterm_drains_requests_in_flight(two_workers):
    """Redis paused so that requests stay in flight (each waits for its Redis budget,
    1.5 s, then answers degraded); SIGTERM arrives while they wait: each still gets its
    answer, and the server exits 0."""
    proc, grpc_port, metrics_port, server = two_workers
    channels, stubs = _stubs(grpc_port, 4)
    server.proc.send_signal(signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [
                pool.submit(stubs[i].Rank, ranking_pb2.RankRequest(user_id=f"u{i}", limit=5), timeout=20)
                for i in range(4)
            ]
            for _ in range(200):  # bounded: until all four are inside the servers
                if sum(s.value for s in _samples(_scrape(metrics_port), "nichefeed_requests_in_flight")) == 4:
                    break
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            answers = [f.result() for f in futures]
        assert [len(a.items) for a in answers] == [5, 5, 5, 5]
        assert all(a.degraded for a in answers)
        assert proc.wait(timeout=60) == 0
        assert "Traceback" not in _rest_of_output(proc)
    finally:
        server.proc.send_signal(signal.SIGCONT)
        for ch in channels:
            ch.close()


def test_a_worker_that_cannot_start_ends_the_start_with_its_reason(tmp_path):
    """Nothing published and no bundle on disk: each worker reports why it cannot serve,
    and the supervisor prints the first reason, exits 2, and leaves no worker behind."""
    server = EmbeddedRedis(tmp_path / "redis", port=free_port()).start()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--workers", "2", "--redis-url", server.url]
            + ["--models-dir", str(tmp_path / "no-models"), "--grpc-addr", f"127.0.0.1:{free_port()}"]
            + ["--metrics-addr", f"127.0.0.1:{free_port()}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its group: the supervisor and every worker it started
        )
        try:
            _, err = proc.communicate(timeout=120)
            try:
                os.killpg(proc.pid, 0)
                left_behind = True
            except ProcessLookupError:  # the group is empty: no worker outlived the supervisor
                left_behind = False
        finally:
            _kill_group(proc)
    finally:
        server.stop()
    assert proc.returncode == 2, err
    reason = [line for line in err.splitlines() if line.startswith("error: ")]
    assert reason == [f"error: no model published in Redis at {server.host}:{server.port} (run make publish)"], err
    assert not left_behind


def test_a_worker_that_dies_before_reporting_ends_the_start_with_its_exit_status(tmp_path, monkeypatch):
    """A worker interpreter that cannot even start (here a stand-in that closes its stdin
    and exits 3): the supervisor neither hangs nor crashes on the config it could not
    hand over, and says which worker died how."""
    from service.config import load_config
    from service.workers import Supervisor

    broken = tmp_path / "broken-python"
    broken.write_text("#!/bin/sh\nexec 0<&-\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(broken))
    sup = Supervisor(load_config(["--workers", "2"]), "redis://127.0.0.1:1/0", tmp_path)
    sup.workers = [sup._spawn(i) for i in range(2)]
    with pytest.raises(RuntimeError, match=r"worker \d+ exited with 3 while starting"):
        sup._await_ready(2)
