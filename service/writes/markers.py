"""Applied markers: what makes a retried write apply once, and a reused id fail loudly.

Each applied event leaves contract.applied_key(event_id) holding a digest of the event as
the client sent it (not as the server completed it: a retry of an event whose ts was 0
must match). A resend with the same id and the same event is a duplicate; the same id
with a different event is a client bug and is refused (as payment APIs treat idempotency
keys), never silently counted as a duplicate. The scripts check every marker before they
write anything, so a refused batch changes nothing.
"""

from __future__ import annotations

import hashlib

from service.errors import InvalidArgument


def digest(event) -> str:
    return hashlib.blake2b(event.SerializeToString(deterministic=True), digest_size=12).hexdigest()


def refusal(reply) -> tuple[int, str] | None:
    """(event index, reason) when a script answered {'err', i, reason}, else None."""
    if reply and reply[0] in (b"err", "err"):
        reason = reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2])
        return int(reply[1]), reason
    return None


def reused_id(events, i: int, offset: int) -> InvalidArgument:
    return InvalidArgument(
        f"events[{i + offset}].event_id", f"{events[i].event_id!r} was already used for a different event"
    )
