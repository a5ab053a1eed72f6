"""A real Redis Cluster on loopback ports, for the tests and `make bench`.

Six redis-server processes (three masters, three replicas) joined by
`redis-cli --cluster create --cluster-replicas 1`, each on a free port of 127.0.0.1 with
its own directory. Not for production (no persistence tuning, no password): it exists so
that the cluster code path runs against the real thing, failovers included.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from core.embedded_redis import EmbeddedRedisError, find_redis_server, free_port

# A master is declared failed after this long without answering, and its replica then
# promoted (the tests' failover takes about two of these); production keeps the default 15 s.
NODE_TIMEOUT_MS = 1000


class LocalCluster:
    def __init__(self, data_dir: Path, masters: int = 3, replicas: int = 1, host: str = "127.0.0.1"):
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.masters = masters
        self.replicas = replicas
        self.ports: list[int] = []
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        """The service's URL for it: every node a seed (core/redis_conn.py)."""
        return "redis+cluster://" + ",".join(f"{self.host}:{p}" for p in self.ports)

    def _free_cluster_port(self) -> int:
        """A free port whose cluster bus port (port + 10000) is free and valid too."""
        for _ in range(200):
            port = free_port(self.host)
            if port + 10_000 > 65_535 or port in self.ports:
                continue
            try:
                with socket.socket() as s:
                    s.bind((self.host, port + 10_000))
            except OSError:
                continue
            return port
        raise EmbeddedRedisError("no free port pair (port, port + 10000) for a cluster node")

    def _start_node(self, port: int) -> None:
        node_dir = self.data_dir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(),
            "--port", str(port),
            "--bind", self.host,
            "--dir", str(node_dir),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--appendonly", "no",
            "--save", "",
            "--protected-mode", "no",
            "--loglevel", "warning",
            "--logfile", str(node_dir / "redis.log"),
        ]  # fmt: skip
        self.procs[port] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _wait_ping(self, port: int, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with redis.Redis(host=self.host, port=port, socket_timeout=0.5) as c:
                    if c.ping():
                        return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise EmbeddedRedisError(f"cluster node {self.host}:{port} did not start (see {self.data_dir / str(port)})")

    def start(self, timeout: float = 30.0) -> LocalCluster:
        cli = shutil.which("redis-cli")
        if not cli:
            raise EmbeddedRedisError("redis-cli is not on PATH (make install-redis)")
        self.ports = [self._free_cluster_port() for _ in range(self.masters * (1 + self.replicas))]
        try:
            for port in self.ports:
                self._start_node(port)
            for port in self.ports:
                self._wait_ping(port, timeout)
        except BaseException:
            self.stop()
            raise
        nodes = [f"{self.host}:{p}" for p in self.ports]
        done = subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            self.stop()
            raise EmbeddedRedisError(f"redis-cli --cluster create failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30.0, replicas: int | None = None) -> None:
        """Until every slot is served, every live node agrees the cluster is ok, and every
        master has `replicas` replicas in sync (default: as created)."""
        want = self.replicas if replicas is None else replicas
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(self._state(p) == "ok" for p in self.live_ports()) and self._replicated(want):
                return
            time.sleep(0.1)
        raise EmbeddedRedisError(f"cluster on {self.ports} not healthy after {timeout}s")

    def _state(self, port: int) -> str:
        try:
            with redis.Redis(host=self.host, port=port, socket_timeout=1) as c:
                return c.cluster("info").get("cluster_state", "?")
        except redis.exceptions.RedisError:
            return "down"

    def _replicated(self, want: int) -> bool:
        for port in self.live_ports():
            try:
                with redis.Redis(host=self.host, port=port, socket_timeout=1) as c:
                    info = c.info("replication")
            except redis.exceptions.RedisError:
                return False
            if info.get("role") == "master" and info.get("connected_slaves", 0) < want:
                return False
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def live_ports(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def master_ports(self) -> list[int]:
        """Ports of the nodes that are masters now (after a failover, a former replica)."""
        out = []
        for port in self.live_ports():
            with redis.Redis(host=self.host, port=port, socket_timeout=1) as c:
                if c.info("replication").get("role") == "master":
                    out.append(port)
        return out

    def master_of(self, key: str) -> int:
        """Port of the master serving `key`'s slot."""
        for port in self.live_ports():
            with redis.Redis(host=self.host, port=port, socket_timeout=1) as c:
                slot = c.cluster("keyslot", key)
                for start, end, master, *_ in c.cluster("slots"):
                    if start <= slot <= end:
                        return int(master[1])
        raise EmbeddedRedisError(f"no live node knows the slot of {key!r}")

    def kill(self, port: int) -> None:
        """SIGKILL one node: a crash, as a failover test wants it."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def restart(self, port: int, timeout: float = 30.0) -> None:
        """Start a killed node again on its port (it rejoins, as a replica of its promoted one)."""
        self._start_node(port)
        self._wait_ping(port, timeout)

    def flush(self) -> None:
        for port in self.master_ports():
            with redis.Redis(host=self.host, port=port, socket_timeout=5) as c:
                c.flushall()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
