"""gRPC servicers: proto <-> domain, status codes, health, reflection.

No ranking logic lives here: Rank converts the request, runs the pipeline with one
bundle, and maps the outcome to a response or a status.
"""
from __future__ import annotations

import logging
import time
import uuid
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc
from service import security
from service.bundle import Bundle, BundleHolder
from service.config import Config
from service.metrics import METRICS
from service.writes import WRITER_SERVICE_NAME, FeedWriterServicer, writer_handlers
from service.pipeline import RankContext, RankError, RankPipeline, RankQuery

log = logging.getLogger("nichefeed.server")
SERVICE_NAME = ranking_pb2.DESCRIPTOR.services_by_name["FeedRanker"].full_name
MAX_MESSAGE_BYTES = 1 << 20  # a full RankRequest is far below this; bigger is abuse


def make_clock(cfg: Config):
    """now(bundle): wall time, or for replaying old data, the bundle's data end + uptime."""
    if cfg.clock == "data":
        started = time.time()
        return lambda bundle: bundle.data_end_ts + (time.time() - started)
    return lambda bundle: time.time()


class FeedRankerServicer(ranking_pb2_grpc.FeedRankerServicer):
    def __init__(self, pipeline: RankPipeline, holder: BundleHolder, clock, live_for=lambda version: None):
        self.pipeline = pipeline
        self.holder = holder
        self.clock = clock
        self.live_for = live_for  # version -> that version's LiveIndex, or None
        self._latency = METRICS.latency.labels(method="Rank")
        self._ok = METRICS.requests.labels(method="Rank", code="OK")
        self._in_flight = METRICS.in_flight

    def Rank(self, request, context):
        t0 = time.perf_counter()
        request_id = dict(context.invocation_metadata()).get("x-request-id", "")[:64]
        if not request_id.isprintable() or not request_id:
            request_id = uuid.uuid4().hex[:16]
        code = "OK"
        self._in_flight.inc()
        try:
            if request is UNDECODABLE:
                code = "INVALID_ARGUMENT"
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request: not a valid nichefeed.v1.RankRequest")
            bundle: Bundle | None = self.holder.current
            if bundle is None:
                code = "UNAVAILABLE"
                context.abort(grpc.StatusCode.UNAVAILABLE, "no model loaded yet")
            remaining = context.time_remaining()
            deadline = time.monotonic() + remaining if remaining is not None and remaining < 1e6 else None
            if deadline is not None and remaining <= 0:
                code = "DEADLINE_EXCEEDED"
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the request was read")
            query = RankQuery(
                user_id=request.user_id,
                limit=request.limit,
                candidate_post_ids=list(request.candidate_post_ids),
                community_id=request.community_id,
                exclude_post_ids=list(request.exclude_post_ids),
                explain=request.explain,
            )
            try:
                ctx = self.pipeline.run(RankContext(query=query, bundle=bundle, now=self.clock(bundle), deadline=deadline,
                                                    is_cancelled=lambda: not context.is_active(),
                                                    live=self.live_for(bundle.version)))
            except RankError as exc:
                code = exc.code
                context.abort(getattr(grpc.StatusCode, exc.code), str(exc))
            except Exception:
                code = "INTERNAL"
                log.exception("Rank failed request_id=%s", request_id)
                context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")
            if ctx.degraded:
                METRICS.degraded.inc()
                log.debug("degraded request_id=%s reasons=%s", request_id, ctx.degraded)
            return ranking_pb2.RankResponse(
                items=[
                    ranking_pb2.RankedPost(post_id=i.post_id, score=i.score, community_id=i.community_id,
                                           author_id=i.author_id, reasons=i.reasons)
                    for i in ctx.items
                ],
                model_version=bundle.version,
                degraded=bool(ctx.degraded),
                request_id=request_id,
            )
        finally:
            self._in_flight.dec()
            self._latency.observe(time.perf_counter() - t0)
            (self._ok if code == "OK" else METRICS.requests.labels(method="Rank", code=code)).inc()


class _Undecodable:
    """Stands for bytes that are not a RankRequest (gRPC treats a None request as its own
    INTERNAL error, so the deserializer returns this instead)."""


UNDECODABLE = _Undecodable()


def _parse_rank_request(data: bytes):
    try:
        return ranking_pb2.RankRequest.FromString(data)
    except Exception:  # DecodeError, or invalid UTF-8 in a string field
        return UNDECODABLE


def build_server(cfg: Config, servicer: FeedRankerServicer, reuse_port: bool = False,
                 writer: FeedWriterServicer | None = None) -> tuple[grpc.Server, int, health.HealthServicer]:
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=cfg.threads, thread_name_prefix="rank"), options=options,
                         interceptors=security.interceptors(cfg))
    # Registered by hand rather than with add_FeedRankerServicer_to_server so that bytes
    # that are not a RankRequest get INVALID_ARGUMENT from Rank, not gRPC's INTERNAL.
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {
        "Rank": grpc.unary_unary_rpc_method_handler(
            servicer.Rank, request_deserializer=_parse_rank_request,
            response_serializer=ranking_pb2.RankResponse.SerializeToString),
    }),))
    names = [SERVICE_NAME]
    if writer is not None:
        server.add_generic_rpc_handlers((writer_handlers(writer),))
        names.append(WRITER_SERVICE_NAME)
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
