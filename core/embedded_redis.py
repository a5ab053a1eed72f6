"""A private redis-server for `make serve` and the tests when no Redis URL is configured.

It listens on a unix socket only (no TCP port to collide with or expose), keeps its data
under a git-ignored directory with append-only persistence (an acknowledged write
survives a restart), and is stopped by whoever started it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


class EmbeddedRedisError(RuntimeError):
    pass


def find_redis_server() -> str:
    exe = shutil.which("redis-server")
    if not exe:
        raise EmbeddedRedisError("redis-server is not on PATH (make install-redis, or set NICHEFEED_REDIS_URL)")
    return exe


class EmbeddedRedis:
    def __init__(self, data_dir: Path, port: int = 0, host: str = "127.0.0.1"):
        """port=0: unix socket only; otherwise TCP on host:port (used by tests)."""
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.host = host
        self.proc: subprocess.Popen | None = None

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://{self.host}:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    def _ping(self) -> bool:
        try:
            if self.port:
                s = socket.create_connection((self.host, self.port), timeout=0.2)
            else:
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(0.2)
                s.connect(str(self.socket_path))
            with s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port and self._ping():
            raise EmbeddedRedisError(
                f"a redis-server already listens on {self.socket_path}; set NICHEFEED_REDIS_URL={self.url} to share it"
            )
        args = [
            find_redis_server(),
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",  # a write is acked once on disk
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        if not self.port:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
                log = self.data_dir / "redis.log"
                tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
                raise EmbeddedRedisError(f"redis-server exited with {self.proc.returncode}: {err or ' '.join(tail)}")
            if self._ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer on {self.url} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # redis flushes the AOF on SIGTERM
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """Stop at once, as a crash would (tests of failure handling)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


if os.name != "posix":  # pragma: no cover
    raise ImportError("embedded redis needs a POSIX system")
