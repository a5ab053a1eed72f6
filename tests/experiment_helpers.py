"""Helpers of the experiment tests: bundles under new versions, a service of their own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc

from core import contract
from nichefeed.v1 import ranking_pb2_grpc, writes_pb2_grpc
from service.app import Service
from tests.conftest import service_config


def clone_bundle(src: Path, models_dir: Path, version: str, scorer_json: str | None = None) -> Path:
    """`src` copied under `version` (manifest and checksums rewritten), with another
    scorer.json when given: a second model of the same data."""
    dst = Path(models_dir) / version
    shutil.copytree(src, dst)
    if scorer_json is not None:
        (dst / contract.SCORER_FILE).write_text(scorer_json)
    manifest = json.loads((dst / contract.MANIFEST_FILE).read_text())
    manifest["model_version"] = version
    manifest["files"] = contract.describe_files(dst)
    (dst / contract.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return dst


class Running:
    """A real service on its own Redis and models dir, with a ranker and a writer stub."""

    def __init__(self, models_dir: Path, redis_url: str, **overrides):
        cfg = service_config(models_dir / "x", reload_interval_s=3600, **overrides)
        self.svc = Service(cfg, redis_url).start(metrics=False)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.svc.port}")
        self.ranker = ranking_pb2_grpc.FeedRankerStub(self.channel)
        self.writer = writes_pb2_grpc.FeedWriterStub(self.channel)

    def poll(self) -> None:
        """What the reloader does every interval: pointer, then the experiment."""
        self.svc.reloader.poll()

    def stop(self) -> None:
        self.channel.close()
        self.svc.stop(grace=1)
