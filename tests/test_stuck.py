"""A stuck process says where it is stuck (service/stuck.py), with real processes and
real signals: SIGUSR1 writes a running service's thread stacks to its log and the
service goes on serving; a stop that outlasts its deadline writes the stacks and exits
with its own code instead of hanging."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import grpc

from core.embedded_redis import free_port
from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc
from service.stuck import STUCK_EXIT_CODE
from tests.service_process import start_service, stop_service


def test_sigusr1_writes_every_threads_stack_and_the_service_goes_on(published, redis_server):
    port = free_port()
    proc, line = start_service(
        ["--models-dir", str(published.parent), "--grpc-addr", f"127.0.0.1:{port}"]
        + ["--metrics-addr", "", "--clock", "data"],
        env={"NICHEFEED_REDIS_URL": redis_server.url},
    )
    try:
        assert "serving model" in line, line + proc.stderr.read()
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        assert proc.poll() is None
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            resp = ranking_pb2_grpc.FeedRankerStub(ch).Rank(ranking_pb2.RankRequest(user_id="u3", limit=5), timeout=10)
        assert len(resp.items) == 5 and not resp.degraded
    finally:
        status, _, err = stop_service(proc)
    assert status == 0, err
    # The main thread serves (waiting for the stop signal, or on a loaded machine still
    # printing its ready line when the signal came); the reloader polls in its own thread.
    assert "in serve_one" in err and "(most recent call first)" in err, err
    assert err.count("Thread 0x") >= 3, err


def test_a_stop_that_outlasts_its_deadline_exits_with_the_stacks():
    """The interpreter's exit waits for a non-daemon thread that never returns: without
    the deadline this process would hang; with it, it exits 3 naming that thread's frame."""
    program = textwrap.dedent(
        """
        import threading
        from service.stuck import enable_stack_dumps, exit_if_stop_outlasts

        def never_returns():
            threading.Event().wait()

        enable_stack_dumps()
        threading.Thread(target=never_returns, name="stuck").start()
        exit_if_stop_outlasts(0.5)
        """
    )
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert run.returncode == STUCK_EXIT_CODE, run.stderr
    assert f"the stop did not finish within 0.5s; the threads' stacks follow, then exit {STUCK_EXIT_CODE}" in run.stderr
    assert "in never_returns" in run.stderr, run.stderr
    assert time.monotonic() - started < 30


def test_a_stop_signal_the_kernel_hands_to_another_thread_still_stops():
    """Python runs signal handlers in the main thread; a SIGTERM delivered to another
    thread must still end wait_for_signal (an untimed wait slept through it until
    something else woke the main thread)."""
    program = textwrap.dedent(
        """
        import signal, threading, time
        from service.workers import wait_for_signal

        def send():
            time.sleep(0.3)
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # this thread, not main
            time.sleep(60)

        threading.Thread(target=send, daemon=True).start()
        wait_for_signal()
        print("stopped")
        """
    )
    run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=20)
    assert run.returncode == 0 and run.stdout.strip() == "stopped", run.stderr
