"""The Kubernetes manifests (ops/k8s/) and the Dockerfile: schema-valid, and saying what
the service needs (settings it knows, probes on its health service, the secrets)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from core.settings import env_name
from service.config import Config

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "ops" / "k8s"
KUBERNETES_VERSION = "1.30"  # the oldest release the manifests promise to apply to


def documents() -> dict[str, dict]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                docs[doc["kind"]] = doc
    return docs


def test_every_manifest_validates_against_the_kubernetes_schema():
    docs = documents()
    assert set(docs) == {
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for kind, doc in docs.items():
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind}: {exc.message} at {list(exc.path)}")


def test_kustomization_lists_every_manifest():
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def test_probes_are_grpc_health_checks_on_the_served_port():
    pod = documents()["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["grpc"]["port"] == port, probe
    config = documents()["ConfigMap"]["data"]
    assert config[env_name("grpc_addr")].endswith(f":{port}")
    drain = float(config[env_name("drain_notice_s")]) + float(config[env_name("drain_s")])
    assert pod["terminationGracePeriodSeconds"] > drain


def test_settings_are_ones_the_service_reads_and_secrets_come_from_the_secret():
    fields = {env_name(f.name) for f in dataclasses.fields(Config)}
    docs = documents()
    unknown = set(docs["ConfigMap"]["data"]) - fields
    assert not unknown, f"the ConfigMap sets settings the service does not have: {unknown}"
    secret = docs["Secret"]["stringData"]
    assert {"redis-url", "auth-token"} <= set(secret)
    assert secret["redis-url"].startswith("redis+cluster://")
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    from_secret = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"] if "valueFrom" in e}
    assert from_secret == {env_name("redis_url"): "redis-url"}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    token_file = docs["ConfigMap"]["data"][env_name("auth_token_file")]
    assert str(Path(token_file).parent) in mounts


def test_pdb_and_hpa_select_the_deployment():
    docs = documents()
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]


def test_dockerfile_copies_what_exists_and_runs_the_service():
    text = (ROOT / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            source = line.split()[1]
            assert (ROOT / source).exists(), line
    assert 'ENTRYPOINT ["python", "-m", "service"]' in text
    assert "USER 10001" in text
