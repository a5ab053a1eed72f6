"""Hot reload and rollback: a pointer flip is picked up without restart, under load and
without a failed request; a corrupt or half-written bundle is refused and the old model
keeps serving (and a metric says so); a request uses one model version start to end."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from prometheus_client import REGISTRY

from core import contract
from core.bundle import load_bundle
from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc
from service.app import Service
from service.pipeline import RankContext, RankPipeline, RankQuery
from service.reload import BundleHolder
from service.stages import default_stages
from tests.conftest import BACKENDS, OwnStore, service_config
from training import publish as publishing

BURST = 200


def copy_as_version(src, models_dir, version: str):
    """The same model under another version name (the manifest names its directory)."""
    dst = models_dir / version
    shutil.copytree(src, dst)
    manifest = json.loads((dst / contract.MANIFEST_FILE).read_text())
    manifest["model_version"] = version
    (dst / contract.MANIFEST_FILE).write_text(json.dumps(manifest))
    return dst


def refused_count() -> float:
    return REGISTRY.get_sample_value("nichefeed_model_reloads_total", {"outcome": "refused"}) or 0.0


@pytest.fixture(scope="module", params=BACKENDS)
def reloading(request, tiny_bundle, tmp_path_factory):
    """The service over one redis-server, or over the session's Redis Cluster."""
    models = tmp_path_factory.mktemp("reload-models")
    first = copy_as_version(tiny_bundle, models, "20990101T000000Z-aaaaaaaa")
    store = OwnStore(request.param, request, tmp_path_factory, "reload-redis")
    client = store.client
    publishing.publish(first, client)
    svc = Service(service_config(first, reload_interval_s=0.05), store.url).start(metrics=False)
    ch = grpc.insecure_channel(f"127.0.0.1:{svc.port}")
    yield svc, ranking_pb2_grpc.FeedRankerStub(ch), client, models, first.name
    ch.close()
    svc.stop(grace=1)
    store.stop()


def _wait_for(svc, version: str) -> None:
    for _ in range(200):  # bounded: the reloader polls every 50 ms
        if svc.holder.current.version == version:
            return
        time.sleep(0.025)
    raise AssertionError(f"still serving {svc.holder.current.version}, not {version}")


def test_publish_during_a_burst_fails_no_request(reloading, tiny_bundle):
    svc, stub, client, models, first = reloading
    assert svc.holder.current.version == first
    second = copy_as_version(tiny_bundle, models, "20990101T000001Z-bbbbbbbb")
    versions: list[str] = []
    errors: list[str] = []
    answered = [0]

    def one(i: int) -> None:
        try:
            resp = stub.Rank(ranking_pb2.RankRequest(user_id=f"u{i % 300}", limit=10), timeout=10)
            versions.append(resp.model_version)
            assert len(resp.items) == 10
        except grpc.RpcError as err:
            errors.append(f"{err.code().name}: {err.details()}")
        answered[0] += 1

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(one, i) for i in range(BURST)]
        for _ in range(500):
            if answered[0] >= BURST // 4:
                break
            time.sleep(0.01)
        publishing.publish(second, client)  # new keys, then the pointer flips
        for f in futures:
            f.result()
    assert errors == []
    assert set(versions) <= {first, second.name}
    _wait_for(svc, second.name)
    assert stub.Rank(ranking_pb2.RankRequest(user_id="u1", limit=3), timeout=5).model_version == second.name
    # Rollback: the previous version's keys are still there; the pointer flips back.
    publishing.rollback(client, models)
    _wait_for(svc, first)
    assert stub.Rank(ranking_pb2.RankRequest(user_id="u1", limit=3), timeout=5).model_version == first


@pytest.mark.parametrize("damage", ["corrupt", "half_written"])
def test_a_bad_bundle_is_refused_and_the_old_one_keeps_serving(reloading, tiny_bundle, damage):
    svc, stub, client, models, _ = reloading
    serving = svc.holder.current.version
    bad = f"20990101T00000{2 if damage == 'corrupt' else 3}Z-{damage[:8]:x<8}"
    path = copy_as_version(tiny_bundle, models, bad)
    if damage == "corrupt":
        with open(path / contract.POST_VECTORS_FILE, "r+b") as fh:  # flip bytes in place
            fh.seek(200)
            fh.write(b"\xff" * 16)
    else:
        (path / contract.MANIFEST_FILE).unlink()  # the copy stopped before the manifest
    before = refused_count()
    client.set(contract.CURRENT_KEY, bad)
    try:
        for _ in range(200):  # bounded wait for the reloader to try it
            if refused_count() > before:
                break
            time.sleep(0.025)
        assert refused_count() == before + 1  # refused once, not re-hashed every poll
        assert REGISTRY.get_sample_value("nichefeed_model_refused") == 1
        assert svc.holder.current.version == serving
        resp = stub.Rank(ranking_pb2.RankRequest(user_id="u2", limit=5), timeout=5)
        assert resp.model_version == serving and len(resp.items) == 5
    finally:
        client.set(contract.CURRENT_KEY, serving)
    for _ in range(200):
        if REGISTRY.get_sample_value("nichefeed_model_refused") == 0:
            break
        time.sleep(0.025)
    assert REGISTRY.get_sample_value("nichefeed_model_refused") == 0


def test_a_request_keeps_its_model_when_a_reload_lands_mid_request(reloading, tiny_bundle):
    """A stage between retrieval and hydration swaps the serving bundle: the request in
    flight still hydrates, scores and answers with the one it started with."""
    svc, stub, client, models, _ = reloading
    holder = BundleHolder(load_bundle(models / svc.holder.current.version))
    started = holder.current
    other = load_bundle(copy_as_version(tiny_bundle, models, "20990101T000009Z-cccccccc"))

    class SwapModel:
        name = "swap_model"

        def run(self, ctx: RankContext) -> None:
            holder.swap(other)

    stages = default_stages(svc.cfg, svc.store)
    stages.insert([s.name for s in stages].index("hydrate_candidates"), SwapModel())
    ctx = RankPipeline(stages).run(
        RankContext(query=RankQuery(user_id="u4", limit=10), bundle=holder.current, now=started.data_end_ts + 60)
    )
    assert holder.current is other and ctx.bundle is started
    assert len(ctx.items) == 10 and not ctx.degraded  # its keys were read under its own version
    assert all(started.post_row[i.post_id] >= 0 for i in ctx.items)
