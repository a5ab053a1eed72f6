"""The live index: posts created (or moved by engagement) since the bundle was trained.

Each worker process keeps one in memory for the serving model version, fed by that
version's live stream in Redis (contract.live_stream_key): new posts, vectors moved by
engagers, deletions. It is searched beside the bundle's FAISS index by brute force:
it holds hours of posts (thousands, not millions), where a matrix product over a dense
array is both exact and faster than any index rebuild. On start, or when the model
version changes, it is rebuilt by replaying the stream, so live posts survive restarts.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import numpy as np
import redis

from core import contract
from core.ids import RowLookup
from service.metrics import METRICS
from service.reload import BundleHolder

log = logging.getLogger("nichefeed.live")


class LiveIndex:
    def __init__(self, version: str, dim: int, capacity: int = 1024, post_row: RowLookup | None = None):
        self.version = version
        self.dim = dim
        self.last_id = "0-0"
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        self._alive = np.zeros(capacity, dtype=bool)
        self._ids: list[str] = []
        self._slot: dict[str, int] = {}
        self._n = 0  # published count: readers look at [:_n] only
        # Bundle row -> slot, for the bundle posts here (most of them: every engaged post's
        # vector moves). A candidate list's vectors are then one gather by row instead of a
        # dict lookup per candidate id (~0.2 ms a request with 30k posts here). Rows are
        # resolved in batches after apply() (resolve_rows); until then the ids decide.
        self._post_row = post_row
        self._slot_of_row: np.ndarray | None = None
        self._unresolved: list[int] = []  # slots whose bundle row is not looked up yet
        # Changes to bundle posts that only Redis knows: while Redis is down, the hot path
        # rebuilds records from the bundle and must still honour these (privacy fails closed).
        self.deleted: set[str] = set()
        self.private: set[str] = set()
        self.removed: set[str] = set()  # taken out of feeds by a moderator
        self._created: dict[str, dict[bytes, bytes]] = {}  # live posts' creation fields (carry-over needs them)

    def __len__(self) -> int:
        return int(self._alive[: self._n].sum())

    def _grow(self) -> None:
        cap = len(self._vectors) * 2
        for name in ("_vectors", "_alive"):
            old = getattr(self, name)
            new = np.zeros((cap, *old.shape[1:]), dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)  # readers holding the old arrays stay consistent

    def apply(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        post_id = fields[contract.LIVE_POST.encode()].decode()
        slot = self._slot.get(post_id)
        private = fields.get(contract.LIVE_PRIVATE.encode())
        removed = fields.get(contract.LIVE_REMOVED.encode())
        if private is not None:
            (self.private.add if private == b"1" else self.private.discard)(post_id)
        elif removed is not None:
            (self.removed.add if removed == b"1" else self.removed.discard)(post_id)
        elif fields.get(contract.LIVE_DELETED.encode()) == b"1":
            self.deleted.add(post_id)
            if slot is not None:
                self._alive[slot] = False
        else:
            vec = np.frombuffer(fields[contract.LIVE_VECTOR.encode()], dtype="<f4")
            if vec.shape != (self.dim,):
                log.error("live entry %s for %s has %d dims, expected %d", entry_id, post_id, vec.shape[0], self.dim)
            else:
                if slot is None:
                    if self._n == len(self._vectors):
                        self._grow()
                    slot = self._n
                    self._ids.append(post_id)
                    self._slot[post_id] = slot
                    if self._post_row is not None:
                        self._unresolved.append(slot)
                    self._vectors[slot] = vec
                    if contract.LIVE_COMMUNITY.encode() in fields:
                        self._created[post_id] = {k: v for k, v in fields.items() if k != contract.LIVE_VECTOR.encode()}
                    self._alive[slot] = True
                    self._n = slot + 1
                else:
                    self._vectors[slot] = vec
        self.last_id = entry_id

    def snapshot(self) -> list[dict[bytes, bytes]]:
        """The index's state as the fewest stream entries that rebuild it: one per live or
        moved post (its creation fields and current vector), a delete marker per deleted
        bundle post, a visibility marker per members-only post, a removal marker per post
        moderators took out of feeds. Deleted live posts vanish."""
        P, V, D, X, R = (
            f.encode()
            for f in (
                contract.LIVE_POST,
                contract.LIVE_VECTOR,
                contract.LIVE_DELETED,
                contract.LIVE_PRIVATE,
                contract.LIVE_REMOVED,
            )
        )
        out = []
        for slot in np.flatnonzero(self._alive[: self._n]).tolist():
            post_id = self._ids[slot]
            out.append(
                {**self._created.get(post_id, {P: post_id.encode()}), V: self._vectors[slot].astype("<f4").tobytes()}
            )
        out += [{P: p.encode(), D: b"1"} for p in sorted(self.deleted) if p not in self._created]
        out += [{P: p.encode(), X: b"1"} for p in sorted(self.private)]
        out += [{P: p.encode(), R: b"1"} for p in sorted(self.removed)]
        return out

    def author_of(self, post_id: str) -> str:
        """The author id of a post created live ('' when unknown)."""
        fields = self._created.get(post_id)
        return fields.get(contract.LIVE_AUTHOR.encode(), b"").decode() if fields else ""

    def resolve_rows(self) -> None:
        """Look up the bundle rows of the posts applied since the last call, in one batch
        (the follower calls it after each poll; a single lookup per post would cost a
        replay of a long stream seconds)."""
        pending = self._unresolved
        if not pending or self._post_row is None:
            return
        rows = self._post_row.rows([self._ids[s] for s in pending])
        table = self._slot_of_row
        if table is None:
            table = np.full(len(self._post_row), -1, dtype=np.int32)
        known = rows >= 0
        table[rows[known]] = np.asarray(pending, dtype=np.int32)[known]
        self._slot_of_row = table
        self._unresolved = []

    def vectors_for(self, post_ids: list[str], rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(mask of posts this index knows, their vectors) for a candidate list; with
        `rows` (the candidates' bundle rows, -1 for posts the bundle does not know), the
        bundle posts are found by row and only the others by id."""
        if not self._n:
            return np.zeros(len(post_ids), dtype=bool), self._vectors[:0]
        get = self._slot.get
        table = self._slot_of_row
        if rows is None or table is None or self._unresolved:
            slots = np.fromiter((get(p, -1) for p in post_ids), dtype=np.int64, count=len(post_ids))
        else:
            in_bundle = rows >= 0
            slots = np.full(len(post_ids), -1, dtype=np.int64)
            slots[in_bundle] = table[rows[in_bundle]]
            for i in np.flatnonzero(~in_bundle).tolist():
                slots[i] = get(post_ids[i], -1)
        known = (slots >= 0) & (slots < self._n)
        return known, self._vectors[slots[known]]

    def search(self, user_vector: np.ndarray, k: int) -> list[str]:
        n = self._n
        if n == 0 or k <= 0:
            return []
        scores = self._vectors[:n] @ user_vector
        scores[~self._alive[:n]] = -np.inf
        k = min(k, int(self._alive[:n].sum()))
        if k == 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [self._ids[i] for i in top.tolist()]


# KEYS[1]: the live stream. ARGV[1]: the last entry id the snapshot has seen; then per
# entry: field count, then field/value pairs. Applied only if nothing was appended since
# the snapshot (else a newer deletion could be followed by an older "alive" entry).
_COMPACT_LUA = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 0 or last[1][1] ~= ARGV[1] then return 0 end
local i, first = 2, nil
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 1, i + 2 * n))
  first = first or id
  i = i + 1 + 2 * n
end
if first then
  redis.call('XTRIM', KEYS[1], 'MINID', first)
else
  redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)
end
return 1
"""
COMPACT_MIN_ENTRIES = 10_000  # below this the stream is cheap to replay as it is
COMPACT_EVERY_S = 30.0


class LiveIndexFollower:
    """Keeps a LiveIndex for the serving version up to date by polling its stream."""

    def __init__(self, holder: BundleHolder, client: redis.Redis, interval_s: float = 0.1, batch: int = 10_000):
        self.holder = holder
        self.client = client
        self.interval_s = interval_s
        self.batch = batch
        self._index: LiveIndex | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="live-index", daemon=True)
        self._compact = client.register_script(_COMPACT_LUA)
        self._next_compaction = time.monotonic() + COMPACT_EVERY_S

    def index_for(self, version: str) -> LiveIndex | None:
        index = self._index
        return index if index is not None and index.version == version else None

    def poll_once(self) -> int:
        """Apply what the stream holds past our position; returns the entries applied."""
        bundle = self.holder.current
        if bundle is None:
            return 0
        index = self._index
        if index is None or index.version != bundle.version:
            index = LiveIndex(bundle.version, bundle.index.d, post_row=bundle.post_row)
        key = contract.live_stream_key(bundle.version)
        applied = 0
        while True:
            reply = self.client.xread({key: index.last_id}, count=self.batch)
            if not reply:
                break
            entries = reply[0][1]
            for entry_id, fields in entries:
                index.apply(entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields)
            applied += len(entries)
            index.resolve_rows()
            if len(entries) < self.batch:
                break
        self._index = index  # first build: published only once fully replayed
        METRICS.live_index_size.set(len(index))
        METRICS.event_log_length.set(self.client.xlen(contract.EVENT_LOG_KEY))
        return applied

    def compact(self, min_entries: int = COMPACT_MIN_ENTRIES) -> bool:
        """Rewrite the stream as the snapshot of this process's index, if it has grown to
        more than twice that (a post moved by a thousand likes has a thousand entries) and
        no other process is compacting it. Every process follows the rewritten stream
        unchanged: the snapshot entries re-state what it already applied."""
        index = self._index
        if index is None:
            return False
        key = contract.live_stream_key(index.version)
        snapshot = index.snapshot()
        if self.client.xlen(key) <= max(min_entries, 2 * len(snapshot)):
            return False
        lock = key + ":compacting"
        if not self.client.set(lock, b"1", nx=True, ex=60):
            return False
        try:
            args: list = [index.last_id]
            for entry in snapshot:
                args.append(len(entry))
                for k, v in entry.items():
                    args += [k, v]
            done = bool(self._compact(keys=[key], args=args))
        finally:
            self.client.delete(lock)
        if done:
            log.warning("live stream %s compacted to %d entries", key, len(snapshot))
        return done

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll_once()
                if time.monotonic() >= self._next_compaction:
                    self._next_compaction = time.monotonic() + COMPACT_EVERY_S
                    self.compact()
            except (redis.exceptions.RedisError, OSError):
                pass  # Redis down: keep what we have, the hot path degrades on its own
            except Exception:
                log.exception("live index poll failed")

    def start(self) -> None:
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            self.poll_once()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
