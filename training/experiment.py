"""Start, stop and promote an experiment: the definition in Redis every worker follows.

`start` checks the candidate is a published bundle other than the serving one, brings
the live posts and moderators' removals the control has over to it (as publish does), and
writes the definition (contract.ExperimentDefinition) beside the current pointer: the
workers load the candidate and start routing its share of users once the grace period is
over. `stop` deletes it (everyone back on control at the next poll); `promote` makes the
candidate the current version and ends the experiment. Each ending is kept under
contract.EXPERIMENT_STOPPED_KEY with its reason; the experiment log stays for the report.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import redis

from core import contract
from core.bundle import BundleError, load_bundle
from core.redis_conn import is_cluster
from training.carry_over import carry_over, carry_removals
from training.publish import current_version, flip


class ExperimentError(RuntimeError):
    """The operation cannot be done; the message is one line for the operator."""


def running(client: redis.Redis) -> contract.ExperimentDefinition | None:
    raw = client.get(contract.EXPERIMENT_KEY)
    if raw is None:
        return None
    try:
        return contract.ExperimentDefinition.from_json(raw)
    except contract.ContractError as exc:
        raise ExperimentError(f"{contract.EXPERIMENT_KEY} holds an unreadable definition ({exc}): stop it") from None


def start(
    client: redis.Redis,
    models_dir: Path,
    version: str,
    share: float,
    salt: str | None = None,
    shadow_rate: float = 0.0,
    max_excess: float = 0.05,
    min_requests: int = 200,
    grace_s: float = 10.0,
    now: float | None = None,
) -> contract.ExperimentDefinition:
    if is_cluster(client):
        # The candidate's catch-up (service/experiments.py) replays the control's live stream
        # ({g}) onto post records ({p:..}) in one script: one node's only, so far.
        raise ExperimentError("experiments need a single Redis node; this Redis is a cluster (not supported yet)")
    control = current_version(client)
    if control is None:
        raise ExperimentError("nothing is serving yet: publish a version first (make publish)")
    if version == control:
        raise ExperimentError(f"START: {version} is the serving version; the candidate must be another one")
    existing = running(client)
    if existing is not None:
        raise ExperimentError(f"experiment {existing.id} is running (candidate {existing.candidate}): stop it first")
    if not client.exists(contract.published_key(version)):
        raise ExperimentError(
            f"START: version {version} is not published in Redis "
            f"(make publish ARGS='--version {version} --stage' publishes it without serving it)"
        )
    try:
        bundle = load_bundle(Path(models_dir) / version)
    except BundleError as exc:
        raise ExperimentError(f"START: version {version} cannot be served: {exc}") from None
    started = int(time.time() if now is None else now)
    defn = contract.ExperimentDefinition(
        # Unique even for two started within a second: the log tells experiments apart by it.
        id=f"exp-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(started))}-{secrets.token_hex(3)}-{version}"[
            : contract.MAX_ID_BYTES
        ],
        candidate=version,
        control=control,
        share=float(share),
        salt=salt or secrets.token_hex(8),
        started_at=started,
        shadow_rate=float(shadow_rate),
        max_excess=float(max_excess),
        min_requests=int(min_requests),
        grace_s=float(grace_s),
    )
    problem = defn.problem()
    if problem:
        raise ExperimentError(problem.replace("share ", "SHARE: ", 1) if problem.startswith("share") else problem)
    # Posts written live since the candidate's data was cut, and removals, as publish does.
    carry_over(client, control, bundle)
    carry_removals(client, version)
    if not client.set(contract.EXPERIMENT_KEY, defn.to_json(), nx=True):
        raise ExperimentError("another experiment was started meanwhile: stop it first")
    return defn


def _end(client: redis.Redis, defn: contract.ExperimentDefinition, reason: str) -> None:
    record = {"definition": json.loads(defn.to_json()), "reason": reason, "stopped_at": int(time.time())}
    pipe = client.pipeline(transaction=True)
    pipe.delete(contract.EXPERIMENT_KEY)
    pipe.set(contract.EXPERIMENT_STOPPED_KEY, json.dumps(record))
    pipe.execute()


def stop(client: redis.Redis, reason: str = "stopped by an operator") -> contract.ExperimentDefinition:
    defn = running(client)
    if defn is None:
        raise ExperimentError(f"no experiment is running{last_stopped_note(client)}")
    _end(client, defn, reason)
    return defn


def promote(client: redis.Redis, models_dir: Path) -> contract.ExperimentDefinition:
    """The candidate becomes the current version (with the live posts and removals since)."""
    defn = running(client)
    if defn is None:
        raise ExperimentError(f"no experiment is running{last_stopped_note(client)}")
    current = current_version(client)
    if current != defn.control:
        raise ExperimentError(
            f"the serving version is {current}, not the experiment's control {defn.control}: stop it instead"
        )
    try:
        bundle = load_bundle(Path(models_dir) / defn.candidate)
    except BundleError as exc:
        raise ExperimentError(f"candidate {defn.candidate} cannot be served: {exc}") from None
    carry_over(client, defn.control, bundle)
    carry_removals(client, defn.candidate)
    flip(client, defn.candidate)
    _end(client, defn, f"promoted: {defn.candidate} is the current version")
    return defn


def last_stopped(client: redis.Redis) -> dict | None:
    raw = client.get(contract.EXPERIMENT_STOPPED_KEY)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def last_stopped_note(client: redis.Redis) -> str:
    last = last_stopped(client)
    if not last:
        return ""
    return f" (the last one, {last['definition'].get('id')}, ended: {last.get('reason')})"


def describe(defn: contract.ExperimentDefinition) -> str:
    return (
        f"experiment {defn.id}: candidate {defn.candidate} serves {defn.share:g}% of users, control {defn.control} "
        f"the rest (salt {defn.salt}, shadow rate {defn.shadow_rate:g}, stops itself when its error or degraded "
        f"rate exceeds control's by {defn.max_excess:.1%} after {defn.min_requests} requests per variant)"
    )
