"""Remember which variant served which post to whom, after the answer has left.

Rank hands each experiment answer to `ServedRecorder.record` (a put on a bounded queue,
never a Redis call): one thread writes them in pipelined batches on the write client,
so Rank's latency does not pay a write round trip. Per answer: the user's served hash of
the current window (contract.served_key, post id -> experiment and variant, expiring
after two windows) and one LOG_SERVED entry in the experiment log (the report's
denominator). The write path reads the hash when an engagement arrives and attributes
it (service/writes/batches.py). A full queue drops the answer (counted: dropped), which
loses attribution for that answer only.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import redis

from core import contract
from service.metrics import METRICS

log = logging.getLogger("nichefeed.served")

QUEUE_MAX = 10_000  # answers waiting for the writer; beyond it they are dropped
BATCH_MAX = 256  # answers per pipelined round trip


class ServedRecorder:
    def __init__(self, client: redis.Redis, clock=time.time):
        self.client = client
        self.clock = clock  # wall clock: the windows follow Redis' expiry, which is wall time
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_MAX)
        self._written = METRICS.served_records.labels(outcome="written")
        self._dropped = METRICS.served_records.labels(outcome="dropped")
        self._failed = METRICS.served_records.labels(outcome="failed")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="served-recorder", daemon=True)

    def record(self, user_id: str, experiment_id: str, variant: str, post_ids: list[str]) -> None:
        try:
            self._queue.put_nowait((user_id, experiment_id, variant, post_ids, self.clock()))
        except queue.Full:
            self._dropped.inc()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every answer recorded so far is written (tests, shutdown)."""
        end = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.005)

    def write(self, answers: list[tuple]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for user_id, experiment_id, variant, post_ids, ts in answers:
            if post_ids:
                key = contract.served_key(user_id, contract.served_window(ts))
                value = contract.encode_served(experiment_id, variant)
                pipe.hset(key, mapping=dict.fromkeys(post_ids, value))
                pipe.expire(key, 2 * contract.SERVED_WINDOW_S)
            payload = contract.encode_log(experiment_id, variant, user_id, len(post_ids), int(ts))
            pipe.xadd(
                contract.EXPERIMENT_LOG_KEY,
                {contract.LOG_SERVED: payload},
                maxlen=contract.EXPERIMENT_LOG_MAXLEN,
                approximate=True,
            )
        pipe.execute()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self.write(batch)
                self._written.inc(len(batch))
            except (redis.exceptions.RedisError, OSError) as exc:
                self._failed.inc(len(batch))
                log.warning("could not remember %d served answers: %s", len(batch), exc)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.flush(timeout=2.0)
        self._stop.set()
        self._thread.join(timeout=5)
