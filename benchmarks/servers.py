"""Start `python -m service` as a subprocess on free loopback ports, and look at it from
outside: which processes serve the gRPC port, its Prometheus metrics, its memory.

Only public surfaces are used: the CLI flags, the health service, /metrics, and what\nthe kernel says of the processes (psutil).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from benchmarks.worlds import ROOT, BenchWorld
from core.embedded_redis import free_port


class ServerError(RuntimeError):
    pass


def process_tree(pid: int) -> list[int]:
    """pid and every process below it."""
    try:
        root = psutil.Process(pid)
        return [pid] + [c.pid for c in root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _tcp_ports(pid: int, status: str) -> list[int]:
    """Local ports of the TCP sockets process `pid` holds in `status`."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
    return [c.laddr.port for c in conns if c.status == status and c.laddr]


def listening_pids(pids: list[int], port: int) -> list[int]:
    """The processes among `pids` that hold a listening socket on `port` (= serving workers)."""
    return [pid for pid in pids if port in _tcp_ports(pid, psutil.CONN_LISTEN)]


def connections_per_process(pids: list[int], port: int) -> dict[int, int]:
    """Established client connections on `port` held by each process (how SO_REUSEPORT
    spread the load generator's connections over the workers)."""
    held = {pid: _tcp_ports(pid, psutil.CONN_ESTABLISHED).count(port) for pid in pids}
    return {pid: n for pid, n in held.items() if n}


def unspread_note(workers: int, callers: int, per_process: list[int]) -> str | None:
    """Why a multi-process row measured fewer processes than it asked for: SO_REUSEPORT
    hashes each connection to one listening process, and now and then puts every one of
    the callers' connections on the same process (all 8 of them once, 2026-11-27). None
    when the connections reached as many processes as they could."""
    reachable = min(workers, callers)
    if workers < 2 or len(per_process) >= reachable:
        return None
    return (
        f"SO_REUSEPORT put the {sum(per_process)} connection(s) on {len(per_process)} of the {workers} "
        f"processes: this row measured fewer processes than asked (measured figures kept in the JSON)"
    )


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds each process has used so far."""
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        out[pid] = t.user + t.system
    return out


def _health_ok(addr: str, timeout: float = 1.0) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    ch = grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])
    try:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        return resp.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False
    finally:
        ch.close()


class ServerProcess:
    """One `python -m service` (with --workers N when asked) for one world and setting."""

    def __init__(
        self,
        world: BenchWorld,
        candidates: int,
        workers: int = 1,
        log_dir: Path | None = None,
        extra_args: list[str] | None = None,
        pin_cpus: bool = True,
    ):
        self.world = world
        self.candidates = candidates
        self.workers_requested = workers
        self.workers = 0  # processes found serving the port once started
        self.note = ""
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.addr = f"127.0.0.1:{self.grpc_port}"
        self.log_dir = log_dir or (world.root / "logs")
        self.extra_args = extra_args or []
        # Each server process on a CPU of its own (service/affinity.py): the bench's servers
        # have the machine to themselves, the case the setting is for.
        self.pin_cpus = pin_cpus
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def _args(self, with_workers: bool) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "service",
            "--grpc-addr",
            self.addr,
            "--metrics-addr",
            f"127.0.0.1:{self.metrics_port}",
            "--redis-url",
            self.world.url,
            "--models-dir",
            str(self.world.models_dir),
            "--candidates",
            str(self.candidates),
            "--clock",
            "data",
            "--pin-cpus",
            str(self.pin_cpus).lower(),
            *self.extra_args,
        ]
        if with_workers:
            args += ["--workers", str(self.workers_requested)]
        return args

    def _spawn(self, with_workers: bool) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.logfile = self.log_dir / f"server-c{self.candidates}-w{self.workers_requested}.log"
        env = dict(
            os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"
        )  # one FAISS thread per request, as make serve runs it
        self._fh = open(self.logfile, "w")
        self.proc = subprocess.Popen(
            self._args(with_workers),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self, timeout: float = 180.0) -> ServerProcess:
        t0 = time.perf_counter()
        with_workers = self.workers_requested > 1
        self._spawn(with_workers)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                text = self.logfile.read_text(errors="replace")
                if with_workers and "--workers" in text and "unrecognized" in text:
                    # The flag does not exist (yet): measure what one process does.
                    self.note = "--workers is not supported by this service build"
                    with_workers = False
                    self._fh.close()
                    self._spawn(False)
                    continue
                raise ServerError(f"server exited with {self.proc.returncode}: {text.strip()[-800:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"server did not become healthy within {timeout}s (log {self.logfile})")
            if with_workers and time.perf_counter() - t0 > 10:
                # A supervisor whose workers crash may wait for them for minutes: give up early.
                text = self.logfile.read_text(errors="replace")
                if "Traceback" in text:
                    self.stop()
                    last = [line for line in text.strip().splitlines() if line.strip()][-1:] or [""]
                    raise ServerError(
                        f"--workers {self.workers_requested}: a worker failed: {last[0].strip()[:300]} "
                        f"(log {self.logfile})"
                    )
            if _health_ok(self.addr, timeout=0.5):
                break
            time.sleep(0.1)
        # Several workers: wait until each holds the listening socket (each has loaded the bundle).
        want = self.workers_requested if with_workers else 1
        settle = time.monotonic() + min(60.0, max(5.0, deadline - time.monotonic()))
        while True:
            self.workers = len(listening_pids(process_tree(self.proc.pid), self.grpc_port))
            if self.workers >= want or time.monotonic() > settle:
                break
            time.sleep(0.2)
        if self.workers_requested > 1 and self.workers < self.workers_requested and not self.note:
            self.note = (
                f"asked for --workers {self.workers_requested}, found {self.workers} process(es) "
                f"serving the port: --workers is not (yet) effective in this build"
            )
        # Metrics endpoint up too (scraped for stage shares).
        for _ in range(50):
            if self.scrape() is not None:
                break
            time.sleep(0.1)
        self.startup_seconds = time.perf_counter() - t0
        return self

    @property
    def multi_process_ok(self) -> bool:
        return self.workers >= self.workers_requested

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid) if self.proc else []

    def scrape(self) -> str | None:
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=2) as resp:
                return resp.read().decode()
        except OSError:
            return None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        tree = self.pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)  # the session we created for it
                self.proc.wait()
        # Workers of the session we started must not outlive their parent.
        for pid in tree[1:]:
            for _ in range(50):
                try:
                    if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                        break
                except psutil.NoSuchProcess:
                    break
                time.sleep(0.1)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._fh.close()
        self.proc = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def with_cpu(lg, server: ServerProcess, op: str, c: int, seconds: float, job: dict):
    """Run a load job and account the CPU time the server and the loaders used for it:
    on 2 cores, calls/s can never exceed 2 / (server + loader CPU seconds per call)."""
    spids, lpids = server.pids(), [p.pid for p in lg.procs]
    s0, l0 = cpu_seconds(spids), cpu_seconds(lpids)
    res = lg.run(op, c, seconds, **job)
    s1, l1 = cpu_seconds(spids), cpu_seconds(lpids)
    n = max(res.n + sum(res.errors.values()), 1)
    per_proc = {p: s1[p] - s0.get(p, 0.0) for p in s1}
    server_s = sum(per_proc.values())
    loader_s = sum(l1[p] - l0.get(p, 0.0) for p in l1)
    busy = sorted((v for v in per_proc.values() if v > 0.01 * max(server_s, 1e-9)), reverse=True)
    return res, {
        "server_ms_per_call": round(1000 * server_s / n, 3),
        "loader_ms_per_call": round(1000 * loader_s / n, 3),
        "server_cores_busy": round(server_s / res.elapsed, 2) if res.elapsed else None,
        "loader_cores_busy": round(loader_s / res.elapsed, 2) if res.elapsed else None,
        "server_cpu_s_by_process": [round(v, 2) for v in busy],
    }
