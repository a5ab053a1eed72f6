"""The write path: FeedWriter batches of posts and engagements into Redis at once.

Every batch kind has one shape (batches.py): validate every event (all or nothing; the
error names `events[i].field`), one read round trip (which event ids were applied
already, which posts exist, ...), then one Lua script (scripts.py) that applies the
batch atomically: an idempotency marker per event id (SET NX, so a retry is applied
once), records, counters, recent lists, the live stream every worker's live index
follows, and the event log that training folds in. The applier (applier.py) runs that
shape against the serving bundle; the reply goes out only after Redis acknowledged the
script (with the project's Redis, append-only with fsync always: on disk).

A new kind of write event (the live graph's joins and leaves, say) is one more batch
class with its validation, reads and script; the servicer (service/api/writes.py) and
the applier stay as they are.
"""

from service.writes.applier import WriteApplier

__all__ = ["WriteApplier"]
