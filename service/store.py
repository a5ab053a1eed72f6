"""The Redis feature store client: one round trip per read, short timeouts, packed values.

Every call has a socket timeout (Config.redis_timeout_ms): a slow Redis must turn into
a degraded answer within the client's deadline, never into a hung handler thread.
"""
from __future__ import annotations

import time

import redis

from service import contract
from service.metrics import METRICS


class StoreUnavailable(RuntimeError):
    """Redis could not answer in time; the caller degrades."""


class FeatureStore:
    def __init__(self, url: str, timeout_ms: float = 50.0, max_connections: int = 64):
        timeout = timeout_ms / 1000.0
        self.url = url
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=max(timeout, 0.2),
            max_connections=max_connections,
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self._get_latency = METRICS.redis_latency.labels(op="get")
        self._mget_latency = METRICS.redis_latency.labels(op="mget")

    def _call(self, op: str, fn, *args):
        t0 = time.perf_counter()
        try:
            result = fn(*args)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            METRICS.redis_errors.labels(op=op).inc()
            raise StoreUnavailable(f"redis {op}: {exc.__class__.__name__}") from exc
        (self._mget_latency if op == "mget" else self._get_latency).observe(time.perf_counter() - t0)
        return result

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except (redis.exceptions.RedisError, OSError):
            return False

    def current_version(self) -> str | None:
        raw = self._call("get", self.client.get, contract.CURRENT_KEY)
        return raw.decode() if raw else None

    def user_record(self, version: str, user_id: str) -> bytes | None:
        return self._call("get", self.client.get, contract.user_key(version, user_id))

    def post_records(self, version: str, post_ids: list[str]) -> list[bytes | None]:
        if not post_ids:
            return []
        prefix = contract.post_key_prefix(version)
        return self._call("mget", self.client.mget, [prefix + p for p in post_ids])

    def close(self) -> None:
        self.client.close()
