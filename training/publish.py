"""Stage 8b: publish a bundle's features to Redis, flip the pointer, keep history, prune.

Order matters for zero-downtime: the new version's keys are written first (pipelined
MSET batches), only then does the one pointer key flip; a service polling the pointer
loads the bundle and switches in one reference swap. Older versions stay for rollback
until more than `keep` newer ones exist; their keys are then unlinked in SCAN batches.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import redis

from service import contract
from service.bundle import Bundle, load_bundle

BATCH = 2_000  # keys per MSET: large enough to amortise the round trip, small enough not to stall Redis


def log(msg: str) -> None:
    print(f"[publish {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def user_records(bundle: Bundle):
    users = bundle[contract.MEMBERSHIP_USER_FILE]
    order = np.argsort(users, kind="stable")
    comms = np.asarray(bundle[contract.MEMBERSHIP_COMMUNITY_FILE])[order]
    roles = np.asarray(bundle[contract.MEMBERSHIP_ROLE_FILE])[order]
    bounds = np.searchsorted(np.asarray(users)[order], np.arange(len(bundle.user_ids) + 1))
    factors = np.asarray(bundle[contract.USER_FACTORS_FILE])
    version = bundle.version
    for i, uid in enumerate(bundle.user_ids):
        lo, hi = bounds[i], bounds[i + 1]
        yield contract.user_key(version, uid), contract.encode_user(factors[i], comms[lo:hi], roles[lo:hi])


def post_records(bundle: Bundle):
    n = len(bundle.post_ids)
    rec = np.zeros(n, dtype=contract.POST_DTYPE)
    rec["row"] = np.arange(n)
    rec["community"] = bundle[contract.POST_COMMUNITY_FILE]
    rec["author"] = bundle[contract.POST_AUTHOR_FILE]
    private = np.asarray(bundle[contract.COMMUNITY_PRIVATE_FILE])[rec["community"]]
    rec["flags"] = (contract.FLAG_PRESENT
                    | np.where(bundle[contract.POST_DELETED_FILE], contract.FLAG_DELETED, 0)
                    | np.where(private, contract.FLAG_PRIVATE, 0)).astype(np.uint8)
    rec["created_at"] = bundle[contract.POST_CREATED_AT_FILE]
    rec["author_trust"] = bundle[contract.POST_AUTHOR_TRUST_FILE]
    rec["positives"] = bundle[contract.POST_POSITIVES_FILE]
    rec["negatives"] = bundle[contract.POST_NEGATIVES_FILE]
    rec["views"] = bundle[contract.POST_VIEWS_FILE]
    prefix = contract.post_key_prefix(bundle.version)
    return zip((prefix + p for p in bundle.post_ids), contract.encode_posts(rec))


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
