"""What a stuck process says about itself: thread stacks on demand, and a stop that has a
deadline.

- `kill -USR1 <pid>` writes every thread's Python stack to the process's stderr (its
  log) and the process goes on: how an SRE sees where a worker that stopped answering
  is waiting, without a debugger in the image. Fatal signals (SIGSEGV, SIGABRT, ...)
  dump the same way.
- Once a stop begins, the process has `budget_s` to exit. Past it, it writes its
  threads' stacks and exits with STUCK_EXIT_CODE: a stop that hangs (a handler that never
  returns, a thread the interpreter waits for at exit) ends with the place it hung in the
  log, instead of waiting for the orchestrator's SIGKILL, which leaves nothing behind.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger("nichefeed")
STUCK_EXIT_CODE = 3
# Beyond the drain (notice + in-flight calls): the background threads' joins, the Redis
# pools, the private redis-server's flush. Each is bounded well inside this.
STOP_SLACK_S = 30.0


def enable_stack_dumps() -> None:
    faulthandler.enable(file=sys.stderr, all_threads=True)
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True, chain=False)


def exit_if_stop_outlasts(budget_s: float) -> None:
    """Start the stop's deadline (call once, when the stop begins)."""

    def watch() -> None:
        time.sleep(budget_s)  # the process exiting first ends this daemon thread
        log.error(
            "the stop did not finish within %.1fs; the threads' stacks follow, then exit %d", budget_s, STUCK_EXIT_CODE
        )
        sys.stderr.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(STUCK_EXIT_CODE)  # not sys.exit: the interpreter's own exit is what may hang

    threading.Thread(target=watch, name="stop-deadline", daemon=True).start()
