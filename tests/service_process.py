"""`python -m service` as a real process: start it, wait for its first line, stop it."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time


def start_service(args: list[str], env: dict | None = None, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Start the service with `args`; return the process and its first stdout line (the
    "serving" line, or whatever it printed before exiting)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            return proc, proc.stdout.readline()
        if proc.poll() is not None:
            return proc, ""
    return proc, ""


def stop_service(proc: subprocess.Popen, timeout: float = 60.0) -> tuple[int, str, str]:
    """SIGTERM, wait, and return (exit status, rest of stdout, stderr)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # its threads' stacks into stderr (service/stuck.py)
        time.sleep(1.0)
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err
