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


class InvalidArgument(ServiceError):
    code = "INVALID_ARGUMENT"

    def __init__(self, field_name: str, problem: str):
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name


class NotFound(ServiceError):
    code = "NOT_FOUND"


class AlreadyExists(ServiceError):
    code = "ALREADY_EXISTS"

    def __init__(self, field_name: str, problem: str):
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name


class ResourceExhausted(ServiceError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(ServiceError):
    code = "UNAVAILABLE"


class DeadlineExceeded(ServiceError):
    code = "DEADLINE_EXCEEDED"


class Cancelled(ServiceError):
    code = "CANCELLED"


class FailedPrecondition(ServiceError):
    """The event is valid but the state it needs is not there (a banned user joining)."""

    code = "FAILED_PRECONDITION"

    def __init__(self, field_name: str, problem: str):
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name


class PermissionDenied(ServiceError):
    code = "PERMISSION_DENIED"

    def __init__(self, field_name: str, problem: str):
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name
