"""The expected ways a request ends without an answer, free of any transport.

The Rank pipeline and the write path raise these; the gRPC layer maps each to its
status code in one place (service/api/status.py). The message always starts with the
field it is about when there is one (`limit: must be between 1 and 200, got 0`,
`events[3].kind: must be one of ...`), so a client can act on it.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A request that ends with a status other than OK; `code` names the gRPC status."""

    code = "INTERNAL"


class FieldError(ServiceError):
    """An error about one field of the request: the message starts with the field."""

    def __init__(self, field_name: str, problem: str):
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name


class InvalidArgument(FieldError):
    code = "INVALID_ARGUMENT"


class NotFound(ServiceError):
    code = "NOT_FOUND"


class AlreadyExists(FieldError):
    code = "ALREADY_EXISTS"


class ResourceExhausted(ServiceError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(ServiceError):
    code = "UNAVAILABLE"


class DeadlineExceeded(ServiceError):
    code = "DEADLINE_EXCEEDED"


class Cancelled(ServiceError):
    code = "CANCELLED"


class FailedPrecondition(FieldError):
    """The event is valid but the state it needs is not there (a banned user joining)."""

    code = "FAILED_PRECONDITION"


class PermissionDenied(FieldError):
    code = "PERMISSION_DENIED"
