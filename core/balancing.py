"""How a client should connect to many service replicas: per-call round_robin over every
address the target resolves to, skipping any replica whose health service does not say
SERVING (README "Running in production" quotes SERVICE_CONFIG; tests/test_replicas.py
connects with exactly these options).

Why per call: a gRPC channel keeps one long-lived HTTP/2 connection per address, so a
balancer in front of a single address (a ClusterIP, an L4 load balancer) pins all of a
client's calls to one replica. With round_robin the client holds a connection to every
replica and spreads calls itself; with health checking (a grpc.health.v1 Watch stream per
connection) a replica that starts draining (it says NOT_SERVING on SIGTERM before it stops
taking calls) leaves the rotation at once, before its connection closes.
"""

from __future__ import annotations

import json

# "" is the server's overall health, which the service sets (service/server.py set_serving).
SERVICE_CONFIG = {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}


def channel_options(max_reconnect_backoff_ms: int = 1000) -> list[tuple[str, object]]:
    """Channel options for a round-robin, health-checked client.

    max_reconnect_backoff_ms: a restarted replica comes back on the same address; gRPC's
    default backoff grows to 120 s between reconnect attempts, so a client could take
    minutes to use it again, and in a rolling restart the last replica standing would
    carry everything meanwhile. One second keeps the rotation full.
    """
    return [
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ("grpc.enable_http_proxy", 0),  # loopback and cluster-internal addresses: never via a proxy
        ("grpc.initial_reconnect_backoff_ms", min(1000, max_reconnect_backoff_ms)),
        ("grpc.max_reconnect_backoff_ms", max_reconnect_backoff_ms),
    ]


def target(addresses: list[str]) -> str:
    """A static target over several IPv4 host:port addresses (gRPC's ipv4: scheme); in
    Kubernetes use dns:///<headless service>:<port> instead, which resolves every pod."""
    return "ipv4:" + ",".join(addresses)
