"""FeedWriter: write requests -> the write path (service/writes/) -> WriteResponse or a status."""

from __future__ import annotations

import time

import grpc

from nichefeed.v1 import writes_pb2, writes_pb2_grpc
from service.api.status import UNDECODABLE, abort, safe_parser
from service.errors import InvalidArgument, ResourceExhausted, ServiceError, Unavailable
from service.metrics import METRICS
from service.writes import WriteApplier

WRITER_SERVICE_NAME = writes_pb2.DESCRIPTOR.services_by_name["FeedWriter"].full_name
MAX_BATCH = 1000
MAX_STREAM_EVENTS = 1_000_000
STREAM_BATCH = 500  # events applied per script while a client stream is read


def _outcome(error: ServiceError) -> str:
    """The write counter's outcome label of a failed batch."""
    return {"RESOURCE_EXHAUSTED": "too_large", "UNAVAILABLE": "unavailable"}.get(error.code, "rejected")


class FeedWriterServicer(writes_pb2_grpc.FeedWriterServicer):
    def __init__(self, applier: WriteApplier):
        self.applier = applier

    def _unary(self, method: str, kind: str, request, message: str, apply, context):
        t0 = time.perf_counter()
        n = 0
        try:
            if request is UNDECODABLE:
                raise InvalidArgument("request", f"not a valid nichefeed.v1.{message}")
            events = list(request.events)
            n = len(events)
            if n > MAX_BATCH:
                raise ResourceExhausted(f"events: {n} events, at most {MAX_BATCH} a call")
            applied, dups = apply(events, time.time())
            METRICS.writes.labels(kind=kind, outcome="applied").inc(applied)
            if dups:
                METRICS.writes.labels(kind=kind, outcome="duplicate").inc(dups)
            return writes_pb2.WriteResponse(applied=applied, duplicates=dups)
        except ServiceError as exc:
            METRICS.writes.labels(kind=kind, outcome=_outcome(exc)).inc(n)
            abort(context, exc)
        finally:
            METRICS.write_latency.labels(method=method).observe(time.perf_counter() - t0)

    def WritePosts(self, request, context):
        return self._unary("WritePosts", "post", request, "WritePostsRequest", self.applier.write_posts, context)

    def WriteEngagements(self, request, context):
        return self._unary(
            "WriteEngagements",
            "engagement",
            request,
            "WriteEngagementsRequest",
            self.applier.write_engagements,
            context,
        )

    def StreamEngagements(self, request_iterator, context):
        """One event a message, applied in batches of STREAM_BATCH as they arrive."""

        def batches():
            batch, seen = [], 0
            for event in request_iterator:
                if event is UNDECODABLE:
                    raise InvalidArgument(f"events[{seen}]", "not a valid nichefeed.v1.EngagementEvent")
                seen += 1
                batch.append(event)
                if len(batch) >= STREAM_BATCH:
                    yield batch
                    batch = []
            if batch:
                yield batch

        return self._apply_stream("StreamEngagements", batches(), context)

    def StreamEngagementBatches(self, request_iterator, context):
        """A batch a message (at most MAX_BATCH events): one decode per batch, not per event."""

        def batches():
            seen = 0
            for request in request_iterator:
                if request is UNDECODABLE:
                    raise InvalidArgument(
                        f"events[{seen}]", "message is not a valid nichefeed.v1.WriteEngagementsRequest"
                    )
                if len(request.events) > MAX_BATCH:
                    raise ResourceExhausted(
                        f"events: a batch of {len(request.events)} events, at most {MAX_BATCH} a message"
                    )
                seen += len(request.events)
                yield list(request.events)

        return self._apply_stream("StreamEngagementBatches", batches(), context)

    def _apply_stream(self, method: str, batches, context):
        """Apply batches as they arrive. A bad event rejects its own batch and ends the
        stream; batches before it stay applied (the status says how many)."""
        t0 = time.perf_counter()
        applied = dups = seen = 0
        batch: list = []
        try:
            for batch in batches:
                if seen + len(batch) > MAX_STREAM_EVENTS:
                    raise ResourceExhausted(f"events: more than {MAX_STREAM_EVENTS} in one stream")
                a, d = self.applier.write_engagements(batch, time.time(), offset=seen)
                applied, dups, seen = applied + a, dups + d, seen + len(batch)
                batch = []  # applied: a later failure does not count these
        except ServiceError as exc:
            METRICS.writes.labels(kind="engagement", outcome=_outcome(exc)).inc(len(batch))
            hint = "; resend the rest with the same event ids" if isinstance(exc, Unavailable) else ""
            abort(context, exc, f" ({applied} events applied before this batch{hint})")
        finally:
            METRICS.write_latency.labels(method=method).observe(time.perf_counter() - t0)
        METRICS.writes.labels(kind="engagement", outcome="applied").inc(applied)
        if dups:
            METRICS.writes.labels(kind="engagement", outcome="duplicate").inc(dups)
        return writes_pb2.WriteResponse(applied=applied, duplicates=dups)


def writer_handlers(servicer: FeedWriterServicer) -> grpc.GenericRpcHandler:
    """FeedWriter's handlers, with deserializers that turn garbage into INVALID_ARGUMENT."""
    out = writes_pb2.WriteResponse.SerializeToString
    return grpc.method_handlers_generic_handler(
        WRITER_SERVICE_NAME,
        {
            "WritePosts": grpc.unary_unary_rpc_method_handler(
                servicer.WritePosts,
                request_deserializer=safe_parser(writes_pb2.WritePostsRequest),
                response_serializer=out,
            ),
            "WriteEngagements": grpc.unary_unary_rpc_method_handler(
                servicer.WriteEngagements,
                request_deserializer=safe_parser(writes_pb2.WriteEngagementsRequest),
                response_serializer=out,
            ),
            "StreamEngagements": grpc.stream_unary_rpc_method_handler(
                servicer.StreamEngagements,
                request_deserializer=safe_parser(writes_pb2.EngagementEvent),
                response_serializer=out,
            ),
            "StreamEngagementBatches": grpc.stream_unary_rpc_method_handler(
                servicer.StreamEngagementBatches,
                request_deserializer=safe_parser(writes_pb2.WriteEngagementsRequest),
                response_serializer=out,
            ),
        },
    )
