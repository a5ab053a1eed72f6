"""Per-event validation of write batches: every problem names `events[i].field`."""

from __future__ import annotations

from core import contract
from service.errors import InvalidArgument

MAX_FUTURE_S = 86_400  # a timestamp more than a day ahead is a client bug


def check_id(value: str, where: str) -> None:
    if not value:
        raise InvalidArgument(where, "must not be empty")
    problem = contract.id_problem(value)
    if problem:
        raise InvalidArgument(where, problem)


def check_ts(ts: int, now: float, where: str) -> int:
    """The event's time, or now when the client left it 0."""
    if ts < 0 or ts > now + MAX_FUTURE_S:
        raise InvalidArgument(where, f"{ts} is not a plausible unix time")
    return ts or int(now)
