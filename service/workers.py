"""Worker processes: one server per process, several on one port, drained on SIGTERM.

With --workers N the main process is a supervisor: it starts N server processes that
share the gRPC port (SO_REUSEPORT: the kernel spreads connections over them, so both
cores serve), serves /metrics itself from every worker's samples (prometheus_client
multiprocess mode), restarts a worker that dies, and on SIGTERM or SIGINT asks every
worker to drain and waits for it. Workers are fresh interpreters (subprocess), not forks:
gRPC's threads and an open Redis pool do not survive a fork. Not multiprocessing's
"spawn" either: it starts a resource-tracker process beside them (7 MB of the tree, for
semaphores no worker uses).

This module imports prometheus_client (through service.app) only inside functions, so
the supervisor can set PROMETHEUS_MULTIPROC_DIR before anything reads it.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from service.affinity import pin_to_cpu, should_pin
from service.config import Config
from service.stuck import STOP_SLACK_S, enable_stack_dumps, exit_if_stop_outlasts

log = logging.getLogger("nichefeed")
STARTUP_TIMEOUT_S = 300.0  # a worker loads and verifies the bundle before it is ready
# The supervisor's one metric (service/metrics.py exports it too, from every process).
WORKER_RESTARTS = "nichefeed_worker_restarts"
WORKER_RESTARTS_HELP = "Worker processes the --workers supervisor restarted after they died"


class RestartBackoff:
    """How long to wait before restarting a worker that died: first_s after a worker that
    lived, doubling after each one that died young (a crash loop), up to max_s."""

    def __init__(self, first_s: float = 0.5, max_s: float = 30.0, stable_s: float = 60.0):
        self.first_s, self.max_s, self.stable_s = first_s, max_s, stable_s
        self._next = first_s

    def delay(self, lived_s: float) -> float:
        if lived_s >= self.stable_s:
            self._next = self.first_s
        delay, self._next = self._next, min(self._next * 2, self.max_s)
        return delay


def setup_logging(cfg: Config) -> None:
    logging.basicConfig(
        level=cfg.log_level.upper(),
        format='{"ts":"%(asctime)s","level":"%(levelname)s","pid":%(process)d,"logger":"%(name)s","msg":"%(message)s"}',
    )


def wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # A timed wait, not stop.wait(): Python runs signal handlers in the main thread only,
    # and a signal the kernel hands to another thread (gRPC's, the reloader's) does not
    # wake a main thread blocked in an untimed lock wait; the handler would run only when
    # something else woke it.
    while not stop.wait(0.5):
        pass


def serve_one(cfg: Config, url: str, reuse_port: bool, metrics: bool, on_ready, slot: int = 0) -> int:
    """Run one server process until SIGTERM/SIGINT, then drain in-flight requests.
    on_ready(version, error) is called once: with the model version, or with the error.
    slot: this process's place among the workers (its CPU when pinned: cfg.pin_cpus)."""
    if should_pin(cfg.pin_cpus, cfg.workers):  # before the imports below: threads they start inherit the CPU
        log.info("server slot %s pinned to CPU %s", slot, pin_to_cpu(slot))
    from service.app import Service, StartupError

    try:
        service = Service(cfg, url, reuse_port=reuse_port).start(metrics=metrics)
    except (StartupError, OSError) as exc:
        on_ready(None, str(exc))
        return 2
    on_ready(service.holder.current.version, None)
    wait_for_signal()
    exit_if_stop_outlasts(cfg.drain_notice_s + cfg.drain_s + STOP_SLACK_S)
    log.info("NOT_SERVING for %.1fs, then draining in-flight requests (up to %.0fs)", cfg.drain_notice_s, cfg.drain_s)
    service.stop(grace=cfg.drain_s, notice_s=cfg.drain_notice_s)
    return 0


# A worker's first lines: its import path (so it imports what the supervisor imports),
# then its config and where to report, both as pickles on its stdin.
WORKER_BOOT = (
    "import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); "
    "from service.workers import worker_main; worker_main()"
)
# A report is one write of one line under PIPE_BUF (4096 bytes), so two workers' reports
# never interleave; a longer reason is cut (JSON escapes can at most sextuple it).
READY_DETAIL_MAX = 600


def worker_main() -> None:  # runs in a worker process, started by Supervisor._spawn
    cfg, url, ready_fd, slot = pickle.load(sys.stdin.buffer)
    setup_logging(cfg)
    enable_stack_dumps()

    def on_ready(version, error):
        detail = (error or version)[:READY_DETAIL_MAX]
        report = {"kind": "error" if error else "ready", "pid": os.getpid(), "detail": detail}
        os.write(ready_fd, (json.dumps(report) + "\n").encode())

    sys.exit(serve_one(cfg, url, reuse_port=True, metrics=False, on_ready=on_ready, slot=slot))


class ReadyChannel:
    """The pipe every worker reports on once: ("ready", pid, version) or ("error", pid, why)."""

    def __init__(self):
        self.read_fd, self.write_fd = os.pipe()
        self._partial = b""

    def get(self, timeout: float) -> tuple[str, int, str] | None:
        """The next report, or None after timeout seconds without one."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._partial:
            left = max(0.0, deadline - time.monotonic())
            if not select.select([self.read_fd], [], [], left)[0]:
                return None
            self._partial += os.read(self.read_fd, 65536)
        line, self._partial = self._partial.split(b"\n", 1)
        report = json.loads(line)
        return report["kind"], report["pid"], report["detail"]


class Supervisor:
    """N worker processes on one port, /metrics for all of them, drain on SIGTERM."""

    def __init__(self, cfg: Config, url: str, prom_dir: Path):
        self.cfg = cfg
        self.url = url
        self.prom_dir = prom_dir
        self.ready = ReadyChannel()
        self.workers: list[subprocess.Popen] = []
        self.started: list[float] = []  # when each slot's worker was started (monotonic)
        self.stopping = threading.Event()

    def _spawn(self, slot: int) -> subprocess.Popen:
        p = subprocess.Popen(
            [sys.executable, "-c", WORKER_BOOT], stdin=subprocess.PIPE, pass_fds=(self.ready.write_fd,)
        )
        try:
            with p.stdin:  # the worker reads both pickles before it does anything else
                pickle.dump(sys.path, p.stdin)
                pickle.dump((self.cfg, self.url, self.ready.write_fd, slot), p.stdin)
        except BrokenPipeError:
            pass  # it died at once (a broken interpreter): its exit is handled like any other
        return p

    def _await_ready(self, n: int) -> str:
        """Wait until n workers loaded their model; the first error (or a worker that died
        before saying anything) aborts the start."""
        version = ""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        ready = 0
        while ready < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready after {STARTUP_TIMEOUT_S:.0f}s")
            report = self.ready.get(timeout=0.2)
            if report is None:
                dead = [p for p in self.workers if p.poll() is not None]
                if dead:
                    raise RuntimeError(f"worker {dead[0].pid} exited with {dead[0].returncode} while starting")
                continue
            kind, _, detail = report
            if kind == "error":
                raise RuntimeError(detail)
            version = detail
            ready += 1
        return version

    def start(self) -> str:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        self.workers = [self._spawn(i) for i in range(self.cfg.workers)]
        self.started = [time.monotonic()] * len(self.workers)
        try:
            version = self._await_ready(len(self.workers))
        except Exception:
            self.stop()
            raise
        if self.cfg.metrics_addr:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(self.prom_dir))
            host, port = self.cfg.metrics_addr.rsplit(":", 1)
            start_http_server(int(port), addr=host, registry=registry)
        threading.Thread(target=self._watch, name="worker-watch", daemon=True).start()
        return version

    def _watch(self) -> None:
        """Restart a worker that died unexpectedly (its gauges leave the scrape), after
        a backoff that grows while replacements keep dying young."""
        from prometheus_client import Counter, multiprocess

        # Not service.metrics (its gauges would count this process as a worker): the same
        # counter by name, its value a file in the multiprocess directory like the workers'.
        restarts = Counter(WORKER_RESTARTS, WORKER_RESTARTS_HELP, registry=None)
        backoff = [RestartBackoff() for _ in self.workers]
        due: dict[int, float] = {}  # slot -> when its replacement starts
        while not self.stopping.wait(0.1):
            # A replacement's report, read so the pipe never fills up.
            while (report := self.ready.get(timeout=0)) is not None:
                kind, pid, detail = report
                (log.info if kind == "ready" else log.error)("replacement worker %s: %s %s", pid, kind, detail)
            now = time.monotonic()
            for i, p in enumerate(self.workers):
                if self.stopping.is_set() or p.poll() is None:
                    continue
                if i not in due:
                    delay = backoff[i].delay(now - self.started[i])
                    log.error("worker %s exited with %s; starting another in %.1fs", p.pid, p.returncode, delay)
                    multiprocess.mark_process_dead(p.pid, path=str(self.prom_dir))
                    due[i] = now + delay
                elif now >= due[i]:
                    del due[i]
                    self.workers[i] = self._spawn(i)
                    self.started[i] = now
                    restarts.inc()

    def stop(self) -> None:
        from prometheus_client import multiprocess

        self.stopping.set()
        for p in self.workers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.workers:
            try:
                p.wait(self.cfg.drain_notice_s + self.cfg.drain_s + 10)
            except subprocess.TimeoutExpired:
                log.error("worker %s did not drain in time; killing it", p.pid)
                p.kill()
                p.wait()
            multiprocess.mark_process_dead(p.pid, path=str(self.prom_dir))
