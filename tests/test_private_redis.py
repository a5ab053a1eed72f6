"""The private redis-server of `make serve` (core/embedded_redis.py) with real processes
and real signals: owner-only files, publish and rollback beside a running service, a
kill -9 of the service that leaves no server behind, and a leftover server stopped at
the next start."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import redis

from core import contract
from core.embedded_redis import EmbeddedRedis, free_port
from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc
from tests.service_process import start_service, stop_service
from training import publish as publishing


def copy_as_version(src: Path, models_dir: Path, version: str) -> Path:
    dst = models_dir / version
    shutil.copytree(src, dst)
    manifest = json.loads((dst / contract.MANIFEST_FILE).read_text())
    manifest["model_version"] = version
    (dst / contract.MANIFEST_FILE).write_text(json.dumps(manifest))
    return dst


@pytest.fixture
def var_with_model(tiny_bundle, tmp_path) -> tuple[Path, Path]:
    """A var dir whose private Redis has the tiny bundle published, as `make serve` leaves it."""
    var = tmp_path / "var"
    private = EmbeddedRedis(var / "redis").start()
    with redis.Redis.from_url(private.url) as c:
        publishing.publish(tiny_bundle, c, progress=False)
    private.stop()
    return var, tiny_bundle.parent


def _env_without_redis_url(var: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NICHEFEED_REDIS_URL"}
    return {**env, "NICHEFEED_VAR_DIR": str(var), "PYTHONUNBUFFERED": "1"}


def _serve(var: Path, models: Path, port: int):
    return start_service(
        ["--var-dir", str(var), "--models-dir", str(models), "--grpc-addr", f"127.0.0.1:{port}"]
        + ["--metrics-addr", "", "--clock", "data"],
        env=_env_without_redis_url(var),
    )


def _redis_child(pid: int) -> int:
    out = subprocess.run(["pgrep", "-P", str(pid), "redis-server"], capture_output=True, text=True).stdout
    (child,) = [int(x) for x in out.split()]
    return child


def _gone(pid: int, within_s: float = 10.0) -> bool:
    """True once `pid` no longer runs (bounded wait; a zombie counts as gone)."""
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def _rank_version(port: int) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        resp = ranking_pb2_grpc.FeedRankerStub(ch).Rank(ranking_pb2.RankRequest(user_id="u3", limit=5), timeout=10)
    assert len(resp.items) == 5 and not resp.degraded
    return resp.model_version


def test_the_private_redis_keeps_its_files_to_its_owner(tmp_path):
    data = tmp_path / "redis"
    data.mkdir(mode=0o755)
    (data / "redis.log").write_text("from an older version\n")
    (data / "redis.log").chmod(0o644)
    server = EmbeddedRedis(data).start()
    try:
        with redis.Redis.from_url(server.url) as c:
            c.set("k", "v")  # the append-only file has something in it
        entries = [data, *data.rglob("*")]
        assert any(p.name.endswith(".aof") for p in entries)
        modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in entries}
        assert {p: m for p, m in modes.items() if int(m, 8) & 0o077} == {}
        assert modes["redis"] == "0o700"
    finally:
        server.stop()


def test_publish_and_rollback_beside_a_running_service_use_its_private_redis(var_with_model, tiny_bundle, tmp_path):
    var, _ = var_with_model
    models = tmp_path / "models"
    first = copy_as_version(tiny_bundle, models, tiny_bundle.name)
    second = copy_as_version(tiny_bundle, models, "20990101T000000Z-second00")
    port = free_port()
    proc, line = _serve(var, models, port)
    try:
        assert f"serving model {first.name}" in line, line + proc.stderr.read()
        redis_pid = _redis_child(proc.pid)
        cli = [sys.executable, "-m", "training"]
        env = _env_without_redis_url(var)
        run = subprocess.run(
            [*cli, "publish", "--models", str(models), "--version", second.name, "--force"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        assert _wait_for_version(port, second.name)
        run = subprocess.run([*cli, "rollback", "--models", str(models)], capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip().endswith(f"current version is now {first.name}")
        assert _wait_for_version(port, first.name)
        assert _redis_child(proc.pid) == redis_pid  # the commands left the service's server running
    finally:
        status, _, err = stop_service(proc)
    assert status == 0, err


def _wait_for_version(port: int, version: str) -> bool:
    for _ in range(100):  # bounded: the reloader polls every 2 s
        if _rank_version(port) == version:
            return True
        time.sleep(0.1)
    return False


def test_kill_9_of_the_service_takes_its_redis_down_and_a_restart_comes_back(var_with_model):
    var, models = var_with_model
    port = free_port()
    proc, line = _serve(var, models, port)
    assert "serving model" in line, line + proc.stderr.read()
    redis_pid = _redis_child(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert _gone(redis_pid), "the private redis-server outlived its owner"
    proc, line = _serve(var, models, port)
    try:
        assert "serving model" in line, line + proc.stderr.read()
        _rank_version(port)
    finally:
        status, _, err = stop_service(proc)
    assert status == 0, err


def test_a_leftover_private_redis_is_recognised_and_stopped_at_the_next_start(var_with_model):
    """A server that outlived its owner (started without the parent-death signal, as an
    older version did): the next start stops it and serves on a fresh one, same data."""
    var, models = var_with_model
    leftover = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from core.embedded_redis import EmbeddedRedis; "
            "print(EmbeddedRedis(sys.argv[1], die_with_owner=False).start().proc.pid)",
            str(var / "redis"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = int(leftover.stdout)
    assert not _gone(orphan, within_s=0.2)  # its owner exited; it still runs
    port = free_port()
    proc, line = _serve(var, models, port)
    try:
        assert "serving model" in line, line + proc.stderr.read()
        assert _gone(orphan)
        assert _redis_child(proc.pid) != orphan
        _rank_version(port)  # the published model survived: same data directory
    finally:
        status, _, err = stop_service(proc)
    assert status == 0, err
    warnings = [x for x in err.splitlines() if "left running" in x]
    assert len(warnings) == 1 and f"(pid {orphan})" in warnings[0], err
