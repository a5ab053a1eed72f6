"""Errors to gRPC status codes, and request decoding, in one place for every servicer."""

from __future__ import annotations

import grpc

from service.errors import ServiceError


def abort(context: grpc.ServicerContext, error: ServiceError, suffix: str = "") -> None:
    """End the call with the error's status code and message (never returns)."""
    context.abort(getattr(grpc.StatusCode, error.code), f"{error}{suffix}")


class _Undecodable:
    """Stands for bytes that are not the expected message. gRPC would answer a failed
    deserializer with its own INTERNAL error; the servicer answers INVALID_ARGUMENT."""


UNDECODABLE = _Undecodable()


def safe_parser(message_cls):
    """A request deserializer that returns UNDECODABLE instead of raising."""

    def parse(data: bytes):
        try:
            return message_cls.FromString(data)
        except Exception:  # DecodeError, or invalid UTF-8 in a string field
            return UNDECODABLE

    return parse
