"""Publish: gate, publish a bundle's features to Redis, flip the pointer, keep history, prune.

Gate: a bundle worse than the serving version beyond noise on the gate metric
(evaluate.GATE_METRIC, the pipeline's NDCG@10 on its held-out windows: the first split
point's, pooled with the next ones' on a log too sparse for one point to judge
--eval-users; the serving model re-ranked on the same user-requests, and the paired
interval of the difference entirely below zero) is refused unless forced; a bundle
without a report, or a serving version without one, cannot be compared and is let
through with a warning.

Order matters for zero-downtime: the new version's keys are written first (pipelined
MSET batches; against a Redis Cluster a SET each, the pipeline sending every node its
share), only then does the one pointer key flip (a MULTI on the pointer's one slot: the
pointer, the history and the published markers share the {g} hash tag); a service polling the pointer
loads the bundle and switches in one reference swap. Older versions stay for rollback
until more than `keep` newer ones exist; their keys are then unlinked in SCAN batches
and their bundle directories removed.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import redis

from core import contract
from core.bundle import BundleError, load_bundle
from core.redis_conn import set_many
from training.carry_over import carry_over, carry_removals
from training.csvio import DataError
from training.evaluate import GATE_METRIC
from training.gate import GateComparison, compare_on_candidate
from training.records import hot_list_entries, post_entries, recent_entries, user_entries

BATCH = 2_000  # keys per MSET: large enough to amortise the round trip, small enough not to stall Redis


def log(msg: str) -> None:
    print(f"[publish {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class GateRefused(RuntimeError):
    """The bundle scores worse than the serving version; publish with force to override."""


def _write(client: redis.Redis, items, total: int, what: str, progress: bool = True) -> None:
    from tqdm import tqdm

    pipe = client.pipeline(transaction=False)
    batch: dict[str, bytes] = {}
    done = queued = 0
    t0 = time.perf_counter()
    bar = tqdm(total=total, desc=f"publish {what}", unit="key", disable=not progress or total < 50_000, mininterval=1.0)
    for key, value in items:
        batch[key] = value
        if len(batch) >= BATCH:
            set_many(pipe, batch)
            done += len(batch)
            bar.update(len(batch))
            batch = {}
            queued += 1
            if queued >= 8:  # several MSETs per round trip
                pipe.execute()
                queued = 0
    if batch:
        set_many(pipe, batch)
        done += len(batch)
        bar.update(len(batch))
    pipe.execute()
    bar.close()
    log(f"{what}: {done} keys in {time.perf_counter() - t0:.1f}s")


def gate_value(bundle_dir: Path) -> tuple[str, float] | None:
    """(metric, value) from a bundle's manifest, None when it was not evaluated."""
    try:
        metrics = json.loads((bundle_dir / contract.MANIFEST_FILE).read_text()).get("metrics", {})
    except (OSError, ValueError):
        return None
    if "gate_metric" not in metrics or "gate_value" not in metrics:
        return None
    return str(metrics["gate_metric"]), float(metrics["gate_value"])


def check_gate(
    bundle_dir: Path, client: redis.Redis, models_dir: Path, force: bool = False, tolerance: float = 0.0
) -> str:
    """Refuse (GateRefused) a bundle worse than the serving one; returns what was decided.

    Like with like (training/gate.py): the serving model is re-ranked on the candidate's
    data, split points, users and windows, and the candidate is refused when it is worse
    beyond noise (the paired 95% interval of the difference below zero). A lower mean
    within noise passes, and the line says so: two retrains of a small forum's model
    differ by noise, and a gate on the mean alone would refuse about half of them (either
    is lower on the mean as often as not). Only when the re-ranking cannot be done (the
    candidate's data directory is gone, a bundle cannot be read) are the two saved
    reports' means compared (no pairing, so no interval: lower by more than `tolerance`
    is refused), and the line says so."""
    current = current_version(client)
    if current is None:
        return "gate: nothing is serving yet"
    if current == bundle_dir.name:
        return f"gate: {current} is already serving (republishing)"
    try:
        cmp = compare_on_candidate(bundle_dir, models_dir / current)
    except (BundleError, DataError, OSError, KeyError, IndexError, ValueError) as exc:
        return _gate_on_reports(bundle_dir, models_dir, current, force, tolerance, f"({exc}) ")
    return gate_decision(cmp, current, force)


def gate_decision(cmp: GateComparison, current: str, force: bool) -> str:
    """Refused (GateRefused) when worse beyond noise, unless forced; else what passed, and how."""
    verdict = (
        f"{GATE_METRIC} {cmp.candidate:.4f} (new) vs {cmp.serving:.4f} (serving {current}, re-ranked on the new "
        f"model's data and windows, {cmp.users} user-requests at {cmp.points} split point(s); "
        f"difference [{cmp.ci95[0]:+.4f}, {cmp.ci95[1]:+.4f}] {cmp.verdict})"
    )
    if cmp.ci95[1] < 0:
        if not force:
            raise GateRefused(f"gate: {verdict}: the new model is worse; not published (use --force to publish anyway)")
        return f"gate: {verdict}: worse, published because forced"
    if cmp.candidate < cmp.serving:
        return f"gate: {verdict}: passed (lower on the mean, but not beyond noise)"
    return f"gate: {verdict}: passed"


def _gate_on_reports(bundle_dir: Path, models_dir: Path, current: str, force: bool, tolerance: float, why: str) -> str:
    """The fallback: the two saved reports' gate values, which may come from different windows."""
    new, old = gate_value(bundle_dir), gate_value(models_dir / current)
    if new is None or old is None or new[0] != old[0]:
        return f"gate: cannot compare with serving version {current} {why}(no comparable report): allowed"
    metric = new[0]
    verdict = (
        f"{metric} {new[1]:.4f} (new) vs {old[1]:.4f} (serving {current}, its own report: "
        f"not re-ranked on the new data {why.strip()})"
    )
    if new[1] < old[1] - tolerance:
        if not force:
            raise GateRefused(f"gate: {verdict}: the new model is worse; not published (use --force to publish anyway)")
        return f"gate: {verdict}: worse, published because forced"
    return f"gate: {verdict}: passed"


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


def prune(client: redis.Redis, keep: int, models_dir: Path | None = None) -> list[str]:
    """Unlink the keys of versions beyond the newest `keep` (the current one always stays),
    and remove their bundle directories from models_dir when given."""
    history = published_versions(client)
    current = current_version(client)
    protected = {current, experiment_candidate(client)}  # an experiment's candidate serves too
    doomed = [v for v in history[keep:] if v not in protected]
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
        if models_dir is not None and (models_dir / version / contract.MANIFEST_FILE).is_file():
            shutil.rmtree(models_dir / version, ignore_errors=True)
        log(f"pruned version {version}")
    return doomed


def experiment_candidate(client: redis.Redis) -> str | None:
    """The version a running experiment serves beside the current one (never pruned)."""
    raw = client.get(contract.EXPERIMENT_KEY)
    try:
        return contract.ExperimentDefinition.from_json(raw).candidate if raw else None
    except contract.ContractError:
        return None


def write_hot_lists(client: redis.Redis, bundle) -> None:
    """One ZADD per community (replacing any list a failed publish left), pipelined."""
    t0 = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    n = 0
    for n, (key, scores) in enumerate(hot_list_entries(bundle), start=1):
        pipe.delete(key)
        pipe.zadd(key, scores)
        if n % 500 == 0:
            pipe.execute()
    pipe.execute()
    log(f"hot lists: {n} keys in {time.perf_counter() - t0:.1f}s")


def publish(
    bundle_dir: Path,
    client: redis.Redis,
    keep: int = 3,
    force: bool = False,
    prune_bundles: bool = False,
    progress: bool = True,
    serve: bool = True,
) -> str:
    """Verify, gate, write the bundle's keys, flip the pointer, prune. Raises BundleError
    (the bundle cannot be served) or GateRefused. With serve=False the version is staged:
    its keys and marker are written and it joins the history behind every other version
    (rollback never lands on it), but the pointer stays: `experiment start` can serve it."""
    bundle_dir = Path(bundle_dir)
    t0 = time.perf_counter()
    # Verified first: a corrupt bundle is refused (BundleError) before the gate spends
    # time on it and before anything is written.
    bundle = load_bundle(bundle_dir, verify=True)
    log(check_gate(bundle_dir, client, bundle_dir.parent, force))
    version = bundle.version
    log(f"publishing {version} from {bundle_dir}")
    _write(client, user_entries(bundle), len(bundle.user_ids), "users", progress)
    _write(client, post_entries(bundle), len(bundle.post_ids), "posts", progress)
    _write(client, recent_entries(bundle), len(bundle.community_recent), "recent lists", progress)
    write_hot_lists(client, bundle)
    previous = current_version(client)
    if previous and previous != version:
        # Posts written live since the new model's data was cut must keep being served.
        carried, dropped = carry_over(client, previous, bundle)
        if carried or dropped:
            log(f"live posts carried over from {previous}: {carried} (dropped, community unknown: {dropped})")
    removed = carry_removals(client, version)
    if removed:
        log(f"posts moderators took out of feeds, still out: {removed}")
    client.set(contract.published_key(version), bundle.manifest.created_at)  # every key is in
    if not serve:
        pipe = client.pipeline(transaction=True)
        pipe.lrem(contract.HISTORY_KEY, 0, version)
        pipe.rpush(contract.HISTORY_KEY, version)
        pipe.execute()
        log(f"staged {version} (published, not serving; current stays {previous})")
        return version
    flip(client, version)
    log(f"current version: {previous} -> {version} ({time.perf_counter() - t0:.1f}s)")
    prune(client, keep, bundle_dir.parent if prune_bundles else None)
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
    carry_removals(client, target)  # removals made since it last served
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
