"""Optional transport security: TLS, mutual TLS, and a bearer token; health stays open."""

from __future__ import annotations

import subprocess

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc
from service.app import Service, StartupError
from tests.conftest import service_config

TOKEN = "s3cret-token-for-tests-only"


def _cert(dir_, name: str, ca=None) -> tuple:
    key, crt = dir_ / f"{name}.key", dir_ / f"{name}.crt"
    if ca is None:  # self-signed CA for 127.0.0.1
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                f"/CN={name}",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                key,
                "-out",
                crt,
            ],
            check=True,
            capture_output=True,
        )
    else:
        csr = dir_ / f"{name}.csr"
        subprocess.run(
            ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", key, "-out", csr],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                csr,
                "-CA",
                ca[1],
                "-CAkey",
                ca[0],
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                crt,
            ],
            check=True,
            capture_output=True,
        )
    return key, crt


@pytest.fixture(scope="module")
def secure(published, redis_server, tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    server_key, server_crt = _cert(d, "server")
    ca_key, ca_crt = _cert(d, "clients-ca")
    client_key, client_crt = _cert(d, "client", ca=(ca_key, ca_crt))
    token = d / "token"
    token.write_text(TOKEN + "\n")
    cfg = service_config(
        published,
        tls_cert=str(server_crt),
        tls_key=str(server_key),
        tls_client_ca=str(ca_crt),
        auth_token_file=str(token),
    )
    svc = Service(cfg, redis_server.url).start(metrics=False)
    yield svc, server_crt.read_bytes(), client_key.read_bytes(), client_crt.read_bytes(), d
    svc.stop(grace=1)


def _channel(port, root, key=None, crt=None):
    creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=crt)
    return grpc.secure_channel(f"127.0.0.1:{port}", creds)


def test_mtls_and_token_let_a_caller_in(secure):
    svc, root, key, crt, _ = secure
    with _channel(svc.port, root, key, crt) as ch:
        stub = ranking_pb2_grpc.FeedRankerStub(ch)
        resp = stub.Rank(
            ranking_pb2.RankRequest(user_id="u1", limit=3), timeout=10, metadata=[("authorization", f"Bearer {TOKEN}")]
        )
        assert len(resp.items) == 3
        with pytest.raises(grpc.RpcError) as err:
            stub.Rank(
                ranking_pb2.RankRequest(user_id="u1", limit=3), timeout=10, metadata=[("authorization", "Bearer wrong")]
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert err.value.details().startswith("authorization:")
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # no token needed


def test_a_client_without_a_certificate_or_without_tls_is_refused(secure):
    svc, root, *_ = secure
    for ch in (_channel(svc.port, root), grpc.insecure_channel(f"127.0.0.1:{svc.port}")):
        with ch:
            with pytest.raises(grpc.RpcError) as err:
                ranking_pb2_grpc.FeedRankerStub(ch).Rank(
                    ranking_pb2.RankRequest(user_id="u1", limit=3),
                    timeout=5,
                    metadata=[("authorization", f"Bearer {TOKEN}")],
                )
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_bad_security_settings_stop_the_start_with_the_setting_named(published, redis_server, secure):
    d = secure[4]
    with pytest.raises(StartupError, match="^tls_cert: "):
        Service(service_config(published, tls_cert=str(d / "server.crt")), redis_server.url)
    (d / "short").write_text("abc")
    with pytest.raises(StartupError, match="^auth_token_file: "):
        Service(service_config(published, auth_token_file=str(d / "short")), redis_server.url)
