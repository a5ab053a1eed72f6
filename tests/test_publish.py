"""Gate, publish, rollback and prune against a real redis-server of this module's own
(the shared one's pointer serves the other tests and must not move)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import redis

from core import contract
from core.bundle import load_bundle
from core.redis_conn import mget
from tests.conftest import BACKENDS, OwnStore
from training import publish as publishing
from training.gate import GateComparison, compare_on_candidate
from training.params import TrainParams
from training.train import train


@pytest.fixture(scope="module", params=BACKENDS)
def own_redis(request, tmp_path_factory):
    """One redis-server, or the session's Redis Cluster: publish, the pointer flip,
    rollback and pruning run against both."""
    store = OwnStore(request.param, request, tmp_path_factory, "publish_redis")
    yield store, store.client
    store.stop()


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_data, learned_bundle):
    """Three bundles of the tiny world in one models dir: learned (the better one), then
    affinity-only (worse on the gate metric), then learned again with another seed."""
    models = tmp_path_factory.mktemp("pub_models")
    good = models / learned_bundle.name
    shutil.copytree(learned_bundle, good)
    worse = train(tiny_data, models, TrainParams(scorer="affinity"), progress=False, quiet=True)
    return models, good, worse


def keys_of(client: redis.Redis, version: str) -> int:
    return sum(1 for _ in client.scan_iter(match=contract.version_key_pattern(version), count=1000))


def test_gate_refuses_a_worse_model_force_publishes_it_and_rollback_restores(own_redis, models):
    _, client = own_redis
    models_dir, good, worse = models
    client.flushall()
    assert publishing.gate_value(worse)[1] < publishing.gate_value(good)[1]

    assert publishing.publish(good, client, progress=False) == good.name
    assert publishing.current_version(client) == good.name
    bundle = load_bundle(good)
    user = contract.decode_user(client.get(contract.user_key(good.name, "u17")))
    np.testing.assert_array_equal(user.vector, bundle[contract.USER_FACTORS_FILE][bundle.user_row["u17"]])
    n_posts = len(bundle.post_ids)
    values = mget(client, [contract.post_key(good.name, p) for p in bundle.post_ids])
    assert len(values) == n_posts and all(v is not None for v in values)

    with pytest.raises(
        publishing.GateRefused, match=r"ndcg@10 .* \(new\) vs .* \(serving .*\): the new model is worse"
    ):
        publishing.publish(worse, client, progress=False)
    assert publishing.current_version(client) == good.name
    assert keys_of(client, worse.name) == 0  # refused before a single key was written

    assert publishing.publish(worse, client, force=True, progress=False) == worse.name
    assert publishing.current_version(client) == worse.name
    assert publishing.published_versions(client) == [worse.name, good.name]

    assert publishing.rollback(client, models_dir) == good.name
    assert publishing.current_version(client) == good.name
    assert keys_of(client, worse.name) > 0  # still there: a roll forward needs no republish


def test_the_gate_refuses_only_what_is_worse_beyond_noise():
    """Two retrains of a small forum's model differ by noise: a lower mean whose paired
    interval reaches zero passes and says so; an interval below zero is refused, and
    published only when forced."""
    level = GateComparison(candidate=0.4345, serving=0.4477, ci95=(-0.0502, 0.0261), users=92, points=16)
    said = publishing.gate_decision(level, "v1", force=False)
    assert said.endswith("within noise): passed (lower on the mean, but not beyond noise)")
    assert "92 user-requests at 16 split point(s); difference [-0.0502, +0.0261]" in said
    better = GateComparison(candidate=0.46, serving=0.44, ci95=(-0.01, 0.05), users=92, points=16)
    assert publishing.gate_decision(better, "v1", force=False).endswith("within noise): passed")
    worse = GateComparison(candidate=0.40, serving=0.45, ci95=(-0.08, -0.02), users=2000, points=1)
    with pytest.raises(publishing.GateRefused, match=r"worse, beyond noise\): the new model is worse; not published"):
        publishing.gate_decision(worse, "v1", force=False)
    assert publishing.gate_decision(worse, "v1", force=True).endswith("worse, published because forced")


def test_cli_publish_refusal_is_one_line_and_exit_3(own_redis, models):
    server, client = own_redis
    models_dir, good, worse = models
    client.flushall()
    publishing.publish(good, client, progress=False)
    env = {**os.environ, "NICHEFEED_REDIS_URL": server.url}
    run = subprocess.run(
        [sys.executable, "-m", "training", "publish", "--models", str(models_dir), "--version", worse.name],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 3
    last = run.stderr.strip().splitlines()
    assert len(last) == 1 and last[0].startswith("error: gate: ndcg@10") and "use --force" in last[0]
    assert publishing.current_version(client) == good.name
    run = subprocess.run(
        [sys.executable, "-m", "training", "rollback", "--models", str(models_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 1 and "no previous version" in run.stderr


def test_old_versions_are_pruned_after_keep(own_redis, models, tmp_path):
    _, client = own_redis
    _, good, worse = models
    client.flushall()
    # Three distinct versions in a scratch models dir (prune removes bundle directories).
    scratch = tmp_path / "models"
    scratch.mkdir()
    versions = []
    for src in (worse, good):
        shutil.copytree(src, scratch / src.name)
        versions.append(scratch / src.name)
    publishing.publish(versions[0], client, keep=2, progress=False, prune_bundles=True)
    publishing.publish(versions[1], client, keep=2, progress=False, prune_bundles=True)
    third = train(
        Path(load_bundle(good).manifest.params["data_dir"]),
        scratch,
        TrainParams(scorer="learned"),
        progress=False,
        quiet=True,
    )
    assert third.name not in (versions[0].name, versions[1].name)
    publishing.publish(third, client, keep=2, progress=False, prune_bundles=True)
    assert publishing.published_versions(client) == [third.name, versions[1].name]
    assert keys_of(client, versions[0].name) == 0
    assert not versions[0].exists()
    assert keys_of(client, versions[1].name) > 0 and versions[1].exists()


def test_gate_re_ranks_the_serving_model_on_the_candidates_window(learned_bundle, tiny_data, tmp_path):
    """Like with like: the serving model is judged on the candidate's users and window."""
    report = json.loads((learned_bundle / contract.REPORT_JSON_FILE).read_text())
    # The same model carried into its own data ranks exactly as its report says.
    same = compare_on_candidate(learned_bundle, learned_bundle)
    assert (same.points, same.users) == (len(report["gate"]["split_points"]), report["gate"]["users"])
    assert same.candidate == pytest.approx(report["gate"]["value"], abs=1e-12)
    assert same.serving == pytest.approx(same.candidate, abs=1e-12)
    assert same.ci95 == (0.0, 0.0) and same.verdict == "within noise"
    # A model trained on an older cut of the data is re-ranked on the candidate's window,
    # not compared through its own report (another window, other users).
    older = tmp_path / "older"
    older.mkdir()
    shutil.copy(tiny_data / "posts.csv", older / "posts.csv")
    for name in ("communities.csv", "memberships.csv"):
        if (tiny_data / name).exists():
            shutil.copy(tiny_data / name, older / name)
    lines = (tiny_data / "events.csv").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    ts_col = header.split(",").index("ts")
    cut = sorted(int(r.split(",")[ts_col]) for r in rows)[len(rows) * 3 // 4]
    (older / "events.csv").write_text("\n".join([header] + [r for r in rows if int(r.split(",")[ts_col]) < cut]) + "\n")
    serving = train(older, tmp_path / "models", TrainParams(), progress=False, quiet=True)
    cmp = compare_on_candidate(learned_bundle, serving)
    assert (cmp.users, cmp.points) == (same.users, same.points)
    assert cmp.candidate == pytest.approx(report["gate"]["value"], abs=1e-12)
    saved_serving = json.loads((serving / contract.REPORT_JSON_FILE).read_text())["gate"]["value"]
    assert cmp.serving != saved_serving  # judged on the candidate's window, not on its own


def test_cli_publish_of_a_corrupt_bundle_is_one_line_naming_the_file_and_exit_2(own_redis, models, tmp_path):
    """Bytes flipped in a bundle's file: refused before anything is written, one line
    naming the file and the reason, exit status 2, no traceback."""
    server, client = own_redis
    models_dir, good, _ = models
    client.flushall()
    publishing.publish(good, client, progress=False)
    bad_models = tmp_path / "models"
    bad = bad_models / "20990101T000000Z-corrupt0"
    shutil.copytree(good, bad)
    manifest = json.loads((bad / contract.MANIFEST_FILE).read_text())
    manifest["model_version"] = bad.name
    (bad / contract.MANIFEST_FILE).write_text(json.dumps(manifest))
    with open(bad / contract.POST_VECTORS_FILE, "r+b") as fh:
        fh.seek(200)
        fh.write(b"\xff" * 16)
    run = subprocess.run(
        [sys.executable, "-m", "training", "publish", "--models", str(bad_models)],
        capture_output=True,
        text=True,
        env={**os.environ, "NICHEFEED_REDIS_URL": server.url},
        timeout=120,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert lines == [
        f"error: not published: {bad}: {contract.POST_VECTORS_FILE} does not match its checksum in the manifest "
        "(corrupt or half-written)"
    ]
    assert publishing.current_version(client) == good.name
    assert keys_of(client, bad.name) == 0
