"""Each server process on one CPU of its own (--pin-cpus true, or auto with a worker per CPU).

A worker's Python threads take turns on its one interpreter lock (the GIL). Rank calls
ranking at once in a worker (two ranking slots, service/config.py) hand the lock to each
other dozens of times a call: at every FAISS search, Redis read and write, numpy sort
and compiled tree evaluation, which release it. When the two threads run on two CPUs
each handoff moves the interpreter's working set (reference counts of shared objects,
the bundle's dicts) from one CPU's cache to the other's. Measured in process on the 1M
world (400 home feeds, two threads ranking at once): 1.60-1.69 ms of CPU a feed on two
CPUs, 1.27-1.29 ms with both threads on one CPU, 1.29-1.47 ms for one thread alone; and
wall time a feed 1.49-1.67 against 1.29-1.31 ms (benchmarks/README.md, "Fifth hot-path
round"). Worker i takes the i-th CPU the process may run on (its affinity mask, which
respects taskset and cgroup cpusets), wrapping around when there are more workers than
CPUs. redis-server (embedded or not) is left to the scheduler.
"""

from __future__ import annotations

import os


def usable_cpus() -> list[int]:
    """The CPUs this process may run on, in order (all of them where the platform cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def should_pin(setting: str, workers: int, cpus: int | None = None) -> bool:
    """Whether --pin-cpus `setting` pins a server of `workers` processes on `cpus` CPUs
    (default: those this process may use). "auto" pins only when there are as many
    workers as CPUs: each CPU then runs one worker, and a second such server on the same
    machine puts one more on each, so nothing piles onto the first CPUs. With fewer
    workers than CPUs (a pod under a CPU quota sees every CPU of its node, a single
    process on a laptop) it leaves the scheduler free."""
    if setting == "true":
        return True
    if setting == "false":
        return False
    n = len(usable_cpus()) if cpus is None else cpus
    return n >= 2 and workers == n


def pin_to_cpu(slot: int) -> int | None:
    """Run the calling thread, and every thread it starts from now on, on one CPU: the
    slot-th of those this process may use (modulo their number). Call it before the
    server starts its threads; threads already running keep their CPUs (in a single
    process, the thread that restarts the embedded redis-server: Redis stays free to
    run on any CPU). The CPU, or None where there is nothing to choose (one CPU) or the
    platform cannot pin."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = usable_cpus()
    if len(cpus) < 2:
        return None
    cpu = cpus[slot % len(cpus)]
    os.sched_setaffinity(0, {cpu})  # 0: the calling thread; new threads inherit its mask
    return cpu
