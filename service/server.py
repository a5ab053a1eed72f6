"""The gRPC server: the servicers of service/api/, health, reflection, security, one port.

No ranking or write logic lives here; this module only assembles what serves.
"""

from __future__ import annotations

import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service import security
from service.api.accounting import MAX_MESSAGE_BYTES, CallAccounting
from service.api.graph import GRAPH_SERVICE_NAME, CommunityGraphServicer, graph_handlers
from service.api.rank import SERVICE_NAME, FeedRankerServicer, rank_handlers
from service.api.writes import WRITER_SERVICE_NAME, FeedWriterServicer, writer_handlers
from service.config import Config

# The size limit of a request message is enforced (and counted) by CallAccounting; this
# is gRPC's own limit, a backstop against memory exhaustion that answers before any
# Python code runs and so is never counted: keep it far above MAX_MESSAGE_BYTES.
TRANSPORT_MAX_MESSAGE_BYTES = 16 * MAX_MESSAGE_BYTES


def make_clock(cfg: Config):
    """now(bundle): wall time, or for replaying old data, the bundle's data end + uptime."""
    if cfg.clock == "data":
        started = time.time()
        return lambda bundle: bundle.data_end_ts + (time.time() - started)
    return lambda bundle: time.time()


def build_server(
    cfg: Config, servicer: FeedRankerServicer, reuse_port: bool = False, writer: FeedWriterServicer | None = None
) -> tuple[grpc.Server, int, health.HealthServicer]:
    options = [
        ("grpc.max_receive_message_length", TRANSPORT_MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    if cfg.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", int(cfg.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(cfg.drain_s * 1000)),
        ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=cfg.threads, thread_name_prefix="rank"),
        options=options,
        # Authentication first: a denied call never reaches the accounting's wrapper.
        interceptors=[*security.interceptors(cfg), CallAccounting()],
    )
    server.add_generic_rpc_handlers((rank_handlers(servicer),))
    names = [SERVICE_NAME]
    if writer is not None:
        server.add_generic_rpc_handlers((writer_handlers(writer), graph_handlers(CommunityGraphServicer(writer))))
        names += [WRITER_SERVICE_NAME, GRAPH_SERVICE_NAME]
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    credentials = security.server_credentials(cfg)
    if credentials is None:
        port = server.add_insecure_port(cfg.grpc_addr)
    else:
        port = server.add_secure_port(cfg.grpc_addr, credentials)
    if port == 0:
        raise OSError(f"cannot bind gRPC address {cfg.grpc_addr}")
    return server, port, health_servicer


def set_serving(health_servicer: health.HealthServicer, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, status)
