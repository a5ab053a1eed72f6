"""Every call of the nichefeed services counted by its final status code, in one place.

nichefeed_requests_total{method, code} counts each call of FeedRanker and FeedWriter once,
whatever ends it: an answer, a status from the servicer (context.abort), an unexpected
exception (UNKNOWN), or a message over the size limit. gRPC itself refuses an oversized
message before any Python code runs, so such calls would never be seen; the limit is
therefore enforced here, in the request deserializer (RESOURCE_EXHAUSTED, counted), and
gRPC's own limit is only a backstop far above it (service/server.py) against memory
exhaustion. Calls denied UNAUTHENTICATED are counted by the token check (security.py),
which answers before this interceptor.
"""

from __future__ import annotations

import grpc

from service.metrics import METRICS

MAX_MESSAGE_BYTES = 1 << 20  # a full RankRequest is far below this; bigger is abuse
COUNTED_PREFIX = "/nichefeed."  # health and reflection are not the service's traffic
WRAPPERS_KEPT = 64  # far more than the nichefeed methods


class _TooLarge:
    """Stands for a request message over MAX_MESSAGE_BYTES (its size, for the status)."""

    __slots__ = ("size",)

    def __init__(self, size: int):
        self.size = size


def _limited(deserializer, limit: int):
    def parse(data: bytes):
        if len(data) > limit:
            return _TooLarge(len(data))
        return deserializer(data) if deserializer is not None else data

    return parse


def method_name(full_method: str) -> str:
    """'/nichefeed.v1.FeedRanker/Rank' -> 'Rank' (the metric's method label)."""
    return full_method.rsplit("/", 1)[-1]


def count(method: str, code: str) -> None:
    METRICS.requests.labels(method=method, code=code).inc()


class CallAccounting(grpc.ServerInterceptor):
    """Wraps each nichefeed method's handler once: gRPC asks the interceptor on every call,
    and building the wrapper (closures, a method handler, the OK counter's label lookup)
    on each was ~10 us of every Rank call. The wrapper of a handler is kept as long as
    the handler: a generic handler answers every call of a method with the same one."""

    def __init__(self, limit: int = MAX_MESSAGE_BYTES):
        self.limit = limit
        self._wrapped: dict[int, tuple] = {}  # id(handler) -> (handler, its wrapper)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        full = handler_call_details.method
        if handler is None or not full.startswith(COUNTED_PREFIX) or handler.response_streaming:
            return handler  # no nichefeed method streams its responses
        kept = self._wrapped.get(id(handler))
        if kept is not None and kept[0] is handler:
            return kept[1]
        wrapper = self._wrap(handler, method_name(full))
        if len(self._wrapped) >= WRAPPERS_KEPT:  # a handler made per call must not grow it
            self._wrapped.clear()
        # Holding the handler keeps its id from being reused by another object.
        self._wrapped[id(handler)] = (handler, wrapper)
        return wrapper

    def _wrap(self, handler, method: str):
        limit = self.limit
        ok = METRICS.requests.labels(method=method, code="OK")

        def refuse(context, message: _TooLarge) -> None:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"request: a message of {message.size} bytes, at most {limit}"
            )

        def finish(context, raised: bool) -> None:
            code = context.code()
            if code is None and not raised:
                ok.inc()
            else:
                count(method, code.name if code is not None else "UNKNOWN")

        if not handler.request_streaming:
            inner = handler.unary_unary

            def unary(request, context):
                raised = True
                try:
                    if isinstance(request, _TooLarge):
                        refuse(context, request)
                    response = inner(request, context)
                    raised = False
                    return response
                finally:
                    finish(context, raised)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=_limited(handler.request_deserializer, limit),
                response_serializer=handler.response_serializer,
            )

        inner_stream = handler.stream_unary

        def checked(requests, context):
            for request in requests:
                if isinstance(request, _TooLarge):
                    refuse(context, request)
                yield request

        def stream(request_iterator, context):
            raised = True
            try:
                response = inner_stream(checked(request_iterator, context), context)
                raised = False
                return response
            finally:
                finish(context, raised)

        return grpc.stream_unary_rpc_method_handler(
            stream,
            request_deserializer=_limited(handler.request_deserializer, limit),
            response_serializer=handler.response_serializer,
        )
