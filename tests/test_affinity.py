"""service/affinity.py: --pin-cpus puts the calling thread, and the threads it starts, on
one CPU of those the process may use, chosen by the server's slot; "auto" (the default)
does so only when there is a worker per CPU."""

from __future__ import annotations

import os
import threading

import pytest

from service.affinity import pin_to_cpu, should_pin
from service.config import load_config

CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


@pytest.mark.skipif(len(CPUS) < 2, reason="one CPU: nothing to choose")
def test_the_calling_thread_and_the_threads_it_starts_run_on_the_slots_cpu_and_no_other_thread_moves():
    seen = {}

    def server_thread():
        seen["cpu"] = pin_to_cpu(len(CPUS) + 1)  # more slots than CPUs: wraps around
        seen["own"] = os.sched_getaffinity(0)
        child = threading.Thread(target=lambda: seen.setdefault("child", os.sched_getaffinity(0)))
        child.start()
        child.join()

    t = threading.Thread(target=server_thread)
    t.start()
    t.join()
    assert seen["cpu"] == CPUS[1]
    assert seen["own"] == seen["child"] == {CPUS[1]}
    assert os.sched_getaffinity(0) == set(CPUS)  # this (test) thread was not pinned


@pytest.mark.skipif(len(CPUS) < 2, reason="one CPU: nothing to choose")
def test_slot_i_takes_the_ith_cpu():
    got = []
    for slot in range(len(CPUS)):
        t = threading.Thread(target=lambda s=slot: got.append((pin_to_cpu(s), os.sched_getaffinity(0))))
        t.start()
        t.join()
    assert got == [(cpu, {cpu}) for cpu in CPUS]


def test_auto_pins_only_a_worker_per_cpu_and_true_and_false_mean_what_they_say():
    assert should_pin("auto", workers=2, cpus=2)
    assert should_pin("auto", workers=4, cpus=4)
    assert not should_pin("auto", workers=1, cpus=2)  # a single process: the scheduler's
    assert not should_pin("auto", workers=2, cpus=32)  # a pod seeing every CPU of its node
    assert not should_pin("auto", workers=4, cpus=2)  # more workers than CPUs
    assert not should_pin("auto", workers=1, cpus=1)
    assert should_pin("true", workers=1, cpus=32)
    assert not should_pin("false", workers=2, cpus=2)


def test_the_setting_is_checked_where_it_is_read():
    assert load_config([], environ={}).pin_cpus == "auto"
    assert load_config(["--pin-cpus", "true"], environ={}).pin_cpus == "true"
    assert load_config([], environ={"NICHEFEED_PIN_CPUS": "false"}).pin_cpus == "false"
    with pytest.raises(SystemExit):
        load_config(["--pin-cpus", "yes"], environ={})
