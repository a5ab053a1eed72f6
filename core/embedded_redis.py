"""A private redis-server for `make serve` and the tests when no Redis URL is configured.

It listens on a unix socket only (no TCP port to collide with or expose), keeps its data
under a git-ignored directory with append-only persistence (an acknowledged write
survives a restart), and is stopped by whoever started it (its owner).

- Private on disk: the directory is 0700 and every file in it 0600 (the append-only
  files hold the event log and every membership); the server runs with umask 077.
- It dies with its owner: started through `setpriv --pdeathsig TERM` where available, so
  a kill -9 of the service sends the server SIGTERM (it flushes and exits).
- A server left running anyway (an older version, no setpriv) is recognised at the next
  start as ours (it answers on our socket from our directory; `owner.pid` names its
  owner) and, its owner being gone, stopped before a fresh one starts.
- Short commands (publish, rollback, fold-log) beside a running `make serve` use that
  server (attach_or_start) instead of refusing or starting a second one.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger("nichefeed.redis")
OWNER_FILE = "owner.pid"  # pid of the process that started (owns) the server
PID_FILE = "redis.pid"


class EmbeddedRedisError(RuntimeError):
    pass


def find_redis_server() -> str:
    exe = shutil.which("redis-server")
    if not exe:
        raise EmbeddedRedisError("redis-server is not on PATH (make install-redis, or set NICHEFEED_REDIS_URL)")
    return exe


class EmbeddedRedis:
    def __init__(self, data_dir: Path, port: int = 0, host: str = "127.0.0.1", die_with_owner: bool = True):
        """port=0: unix socket only; otherwise TCP on host:port (used by tests).
        die_with_owner=False leaves the server running if this process is killed (only
        the tests of leftover servers want that)."""
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.host = host
        self.die_with_owner = die_with_owner
        self.proc: subprocess.Popen | None = None
        self.attached = False  # True: the server is another process's, never stopped here

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

    # -- a server already on our socket ------------------------------------------------

    def _running_pid(self) -> int | None:
        """The pid of a redis-server that answers on our socket from our directory (ours),
        else None. A server elsewhere cannot answer on this socket path; the check of its
        directory guards against a socket file copied or symlinked in."""
        if self.port or not self._ping():
            return None
        # Imported here, not at the top: the --workers supervisor starts the private
        # server through this module, and redis-py (asyncio, ssl and its parsers with it)
        # would cost that process 17 MB it otherwise never needs.
        import redis

        try:
            with redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=2) as client:
                where = client.config_get("dir").get("dir")
                pid = int(client.info("server")["process_id"])
        except (redis.exceptions.RedisError, OSError, KeyError, ValueError):
            return None
        return pid if where and Path(where).resolve() == self.data_dir else None

    def _owner_alive(self, pid: int) -> int | None:
        """The owner's pid while the process that started server `pid` still runs it."""
        try:
            owner = int((self.data_dir / OWNER_FILE).read_text())
        except (OSError, ValueError):
            return None
        # The owner is the server's parent while it lives; once it died the server was
        # re-parented, and a recycled pid in owner.pid is not its parent either.
        return owner if _parent_of(pid) == owner else None

    def _stop_leftover(self, pid: int, timeout: float) -> None:
        log.warning(
            "stopping the private redis-server (pid %d) left running on %s by a run that did not stop it "
            "(killed?); starting a fresh one on the same data",
            pid,
            self.socket_path,
        )
        os.kill(pid, signal.SIGTERM)  # flushes the append-only file, then exits
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._ping() and not _alive(pid):
                return
            time.sleep(0.02)
        raise EmbeddedRedisError(f"the redis-server (pid {pid}) left on {self.socket_path} did not stop")

    def attach_or_start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """The private server already running (a `make serve` beside this command): use
        it and leave it running; none running: start one this process owns."""
        if self._running_pid() is not None:
            self.attached = True
            return self
        return self.start(timeout)

    # -- the server this process owns ----------------------------------------------------

    def _make_private(self) -> None:
        """0700 for the directory, 0600 for what is in it, also when an older version
        created them readable by anyone."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir.chmod(0o700)
        for root, dirs, files in os.walk(self.data_dir):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o700)
            for name in files:
                path = os.path.join(root, name)
                if not os.path.islink(path) and name != self.socket_path.name:
                    os.chmod(path, 0o600)

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self._make_private()
        leftover = self._running_pid()
        if leftover is not None:
            owner = self._owner_alive(leftover)
            if owner is not None:
                raise EmbeddedRedisError(
                    f"the private redis-server on {self.socket_path} belongs to running process {owner} "
                    f"(another nichefeed service?); stop it, or set NICHEFEED_REDIS_URL={self.url} to share it"
                )
            self._stop_leftover(leftover, timeout)
        elif not self.port and self._ping():
            raise EmbeddedRedisError(
                f"a redis-server that is not ours listens on {self.socket_path}; "
                f"set NICHEFEED_REDIS_URL={self.url} to share it"
            )
        self.attached = False
        prefix = []
        setpriv = shutil.which("setpriv")
        if self.die_with_owner and setpriv:
            # The signal follows the *thread* that starts the server: the main thread or
            # one that lives as long as the process (the service's redis keeper).
            prefix = [setpriv, "--pdeathsig", "TERM", "--"]
        args = prefix + [
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
            "--pidfile",
            str(self.data_dir / PID_FILE),
        ]
        if not self.port:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            umask=0o077,  # the append-only files, the log and the pid file: owner only
        )
        owner = os.open(self.data_dir / OWNER_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(owner, "w") as fh:
            fh.write(f"{os.getpid()}\n")
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


def _parent_of(pid: int) -> int | None:
    """The parent pid of `pid` (Linux /proc), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm) state"


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


if os.name != "posix":  # pragma: no cover
    raise ImportError("embedded redis needs a POSIX system")
