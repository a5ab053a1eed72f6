"""FeedRanker: RankRequest -> the Rank pipeline with one bundle -> RankResponse or a status."""

from __future__ import annotations

import logging
import os
import time

import grpc

from core import contract
from core.bundle import Bundle
from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc
from service.api.status import UNDECODABLE, abort, safe_parser
from service.errors import ServiceError
from service.experiments import ExperimentHolder, Routing
from service.metrics import METRICS, Children
from service.pipeline import RankContext, RankPipeline, RankQuery
from service.rank_slots import RankSlots
from service.reload import BundleHolder

log = logging.getLogger("nichefeed.server")
SERVICE_NAME = ranking_pb2.DESCRIPTOR.services_by_name["FeedRanker"].full_name


class FeedRankerServicer(ranking_pb2_grpc.FeedRankerServicer):
    def __init__(
        self,
        pipeline: RankPipeline,
        holder: BundleHolder,
        clock,
        live_for=lambda version: None,
        experiments: ExperimentHolder | None = None,
        served=None,
        shadow=None,
        rank_slots: int = 0,
    ):
        self.pipeline = pipeline
        # At most rank_slots calls in the pipeline at once (service/config.py says why);
        # None: no limit.
        self._slots = RankSlots(rank_slots) if rank_slots > 0 else None
        self._slot_wait = METRICS.rank_slot_wait
        self._pipeline_cpu = METRICS.rank_pipeline_cpu
        self.holder = holder
        self.clock = clock
        self.live_for = live_for  # version -> that version's LiveIndex, or None
        self.experiments = experiments or ExperimentHolder()
        self.served = served  # service/served.py: remembers what each variant served to whom
        self.shadow = shadow  # service/shadow.py: the candidate ranks a sample of control answers
        self._latency = METRICS.latency.labels(method="Rank")
        self._in_flight = METRICS.in_flight
        # Label children looked up once per label value: labels() costs ~4 us a call, and
        # a Rank call counted five of them.
        self._variant_requests = Children(METRICS.variant_requests)  # (variant, code)
        self._variant_latency = Children(METRICS.variant_latency)  # variant
        self._variant_items = Children(METRICS.variant_items)
        self._variant_filtered = Children(METRICS.variant_filtered)

    def Rank(self, request, context):
        """Route to a variant (service/experiments.py), rank, and count the call per variant."""
        outcome = {"code": "INTERNAL", "degraded": False, "routing": None}
        t0 = time.perf_counter()
        try:
            response = self._rank(request, context, outcome)
            outcome["code"] = "OK"
            return response
        except Exception:
            code = context.code() if hasattr(context, "code") else None
            outcome["code"] = code.name if isinstance(code, grpc.StatusCode) else "INTERNAL"
            raise
        finally:
            routing: Routing | None = outcome["routing"]
            if routing is not None:
                label = routing.label
                self._variant_requests[label, outcome["code"]].inc()
                self._variant_latency[label].observe(time.perf_counter() - t0)
                self.experiments.count(routing, outcome["code"], outcome["degraded"])

    def _rank(self, request, context, outcome: dict):
        t0 = time.perf_counter()
        request_id = dict(context.invocation_metadata()).get("x-request-id", "")[:64]
        if not request_id.isprintable() or not request_id:
            request_id = os.urandom(8).hex()  # 16 random hex digits, a tenth of uuid4()'s cost
        self._in_flight.inc()
        try:
            if request is UNDECODABLE:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request: not a valid nichefeed.v1.RankRequest")
            control: Bundle | None = self.holder.current
            if control is None:
                context.abort(grpc.StatusCode.UNAVAILABLE, "no model loaded yet")
            routing = outcome["routing"] = self.experiments.route(request.user_id, control)
            bundle = routing.bundle  # one version start to end, whichever variant
            remaining = context.time_remaining()
            deadline = time.monotonic() + remaining if remaining is not None and remaining < 1e6 else None
            if deadline is not None and remaining <= 0:
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the request was read")
            query = RankQuery(
                user_id=request.user_id,
                limit=request.limit,
                candidate_post_ids=list(request.candidate_post_ids),
                community_id=request.community_id,
                exclude_post_ids=list(request.exclude_post_ids),
                explain=request.explain,
            )
            self._take_slot(context, deadline)
            cpu0 = time.thread_time()
            try:
                ctx = self.pipeline.run(
                    RankContext(
                        query=query,
                        bundle=bundle,
                        now=self.clock(bundle),
                        deadline=deadline,
                        is_cancelled=lambda: not context.is_active(),
                        live=self.live_for(bundle.version),
                    )
                )
            except ServiceError as exc:
                abort(context, exc)
            except Exception:
                log.exception("Rank failed request_id=%s", request_id)
                context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")
            finally:
                self._pipeline_cpu.observe(time.thread_time() - cpu0)
                if self._slots is not None:
                    self._slots.release()
            if ctx.degraded:
                METRICS.degraded.inc()
                METRICS.variant_degraded.labels(variant=routing.label).inc()
                outcome["degraded"] = True
                log.debug("degraded request_id=%s reasons=%s", request_id, ctx.degraded)
            self._after_answer(routing, query, ctx)
            return response(ctx.items, bundle.version, bool(ctx.degraded), request_id, routing.variant)
        finally:
            self._in_flight.dec()
            self._latency.observe(time.perf_counter() - t0)  # calls by status: api/accounting.py

    def _take_slot(self, context, deadline: float | None) -> None:
        """Wait for a ranking slot, no longer than the call's deadline."""
        if self._slots is None:
            return
        t0 = time.perf_counter()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        got = self._slots.acquire(timeout=timeout)
        self._slot_wait.observe(time.perf_counter() - t0)
        if not got:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed while waiting for a ranking slot")

    def _after_answer(self, routing: Routing, query: RankQuery, ctx: RankContext) -> None:
        """Per-variant counts; under an experiment, hand the answer to the recorder and
        (control answers) to the shadow sampler: both queue it, neither waits for Redis."""
        label = routing.label
        self._variant_items[label].inc(len(ctx.items))
        removed = sum(ctx.removed.values())
        if removed:
            self._variant_filtered[label].inc(removed)
        if not routing.variant:
            return
        post_ids = [item.post_id for item in ctx.items]
        if self.served is not None:
            self.served.record(query.user_id, routing.experiment_id, routing.variant, post_ids)
        if self.shadow is not None and routing.variant == contract.VARIANT_CONTROL:
            self.shadow.maybe_submit(query, post_ids)


def response(items, model_version: str, degraded: bool, request_id: str, experiment: str):
    """The RankResponse of these items. Each item is added in place (items.add) and
    `reasons` only when there are any: a list of RankedPost messages handed to the
    constructor, each with an empty reasons list, cost 32 us for 20 items against 13."""
    out = ranking_pb2.RankResponse(
        model_version=model_version, degraded=degraded, request_id=request_id, experiment=experiment
    )
    add = out.items.add
    for i in items:
        if i.reasons:
            add(post_id=i.post_id, score=i.score, community_id=i.community_id, author_id=i.author_id, reasons=i.reasons)
        else:
            add(post_id=i.post_id, score=i.score, community_id=i.community_id, author_id=i.author_id)
    return out


def rank_handlers(servicer: FeedRankerServicer) -> grpc.GenericRpcHandler:
    """Registered by hand rather than with add_FeedRankerServicer_to_server so that bytes
    that are not a RankRequest get INVALID_ARGUMENT from Rank, not gRPC's INTERNAL."""
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "Rank": grpc.unary_unary_rpc_method_handler(
                servicer.Rank,
                request_deserializer=safe_parser(ranking_pb2.RankRequest),
                response_serializer=ranking_pb2.RankResponse.SerializeToString,
            ),
        },
    )
