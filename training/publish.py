"""Stage 8b: publish a bundle's features to Redis, flip the pointer, keep history, prune.

Order matters for zero-downtime: the new version's keys are written first (pipelined
MSET batches), only then does the one pointer key flip; a service polling the pointer
loads the bundle and switches in one reference swap. Older versions stay for rollback
until more than `keep` newer ones exist; their keys are then unlinked in SCAN batches.
"""
from __future__ import annotations

import time
from pathlib import Path

import redis

from service import contract
from service.bundle import load_bundle
from training.records import post_records, user_records

BATCH = 2_000  # keys per MSET: large enough to amortise the round trip, small enough not to stall Redis


def log(msg: str) -> None:
    print(f"[publish {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _write(client: redis.Redis, items, total: int, what: str) -> None:
    pipe = client.pipeline(transaction=False)
    batch: dict[str, bytes] = {}
    done = queued = 0
    t0 = time.perf_counter()
    for key, value in items:
        batch[key] = value
        if len(batch) >= BATCH:
            pipe.mset(batch)
            done += len(batch)
            batch = {}
            queued += 1
            if queued >= 8:  # several MSETs per round trip
                pipe.execute()
                queued = 0
                if done % (BATCH * 64) == 0:
                    log(f"{what}: {done}/{total}")
    if batch:
        pipe.mset(batch)
        done += len(batch)
    pipe.execute()
    log(f"{what}: {done} keys in {time.perf_counter() - t0:.1f}s")


def published_versions(client: redis.Redis) -> list[str]:
    return [v.decode() for v in client.lrange(contract.HISTORY_KEY, 0, -1)]


def current_version(client: redis.Redis) -> str | None:
    raw = client.get(contract.CURRENT_KEY)
    return raw.decode() if raw else None


def flip(client: redis.Redis, version: str) -> None:
    """Point serving at `version` and move it to the head of the history."""
    pipe = client.pipeline(transaction=True)
    pipe.set(contract.CURRENT_KEY, version)
    pipe.lrem(contract.HISTORY_KEY, 0, version)
    pipe.lpush(contract.HISTORY_KEY, version)
    pipe.execute()


def prune(client: redis.Redis, keep: int) -> list[str]:
    """Unlink the keys of versions beyond the newest `keep` (the current one always stays)."""
    history = published_versions(client)
    current = current_version(client)
    doomed = [v for v in history[keep:] if v != current]
    for version in doomed:
        batch = []
        for key in client.scan_iter(match=contract.version_key_pattern(version), count=5_000):
            batch.append(key)
            if len(batch) >= 5_000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
        client.lrem(contract.HISTORY_KEY, 0, version)
        log(f"pruned version {version}")
    return doomed


def publish(bundle_dir: Path, client: redis.Redis, keep: int = 3) -> str:
    bundle = load_bundle(bundle_dir, verify=True)
    version = bundle.version
    log(f"publishing {version} from {bundle_dir}")
    _write(client, user_records(bundle), len(bundle.user_ids), "users")
    _write(client, post_records(bundle), len(bundle.post_ids), "posts")
    previous = current_version(client)
    flip(client, version)
    log(f"current version: {previous} -> {version}")
    prune(client, keep)
    return version


def rollback(client: redis.Redis, models_dir: Path) -> str:
    """Point serving back at the previous published version (its keys are still there)."""
    history = published_versions(client)
    current = current_version(client)
    older = [v for v in history if v != current]
    if not older:
        raise RuntimeError("no previous version to roll back to")
    target = older[0]
    if not (models_dir / target / contract.MANIFEST_FILE).is_file():
        raise RuntimeError(f"previous version {target} has no bundle in {models_dir}")
    flip(client, target)
    # The rolled-back-from version goes behind the target so a second rollback does not
    # bounce between the two.
    pipe = client.pipeline(transaction=True)
    if current:
        pipe.lrem(contract.HISTORY_KEY, 0, current)
        pipe.rpush(contract.HISTORY_KEY, current)
    pipe.execute()
    log(f"rolled back: {current} -> {target}")
    return target
