"""The batch kinds of the write path, each in the one shape the applier runs:

    validate(events)         -> every event checked; InvalidArgument names events[i].field
    reads(events)            -> the commands of the one read round trip
    script_args(events, replies) -> KEYS and ARGV of the batch's Lua script (scripts.py)
    finish(reply, events)    -> (applied, duplicates), after any follow-up (moved vectors);
                                or the error naming events[i].field of a batch the script refused

A batch is all or nothing: validation and the reads happen before the script, and the
script applies every event or (Redis refusing it) none.
"""

from __future__ import annotations

import time

import numpy as np
import redis

from core import contract
from core.bundle import Bundle
from core.retrieval import HOT_LIST_KEEP
from core.scoring import NON_MEMBER_STANDING, ROLE_STANDING
from nichefeed.v1 import writes_pb2
from service.errors import AlreadyExists, InvalidArgument
from service.writes.markers import digest, refusal, reused_id
from service.writes.scripts import ENGAGEMENTS_LUA, POSTS_LUA
from service.writes.validate import check_id, check_ts
from service.writes.vectors import FoldIn, engagement_stats, fold_in_for, publish_moved

KIND_OF = {getattr(writes_pb2, k.upper()): k for k in contract.KINDS}
KIND_CODE = {k: i for i, k in enumerate(contract.KINDS)}


class PostBatch:
    """Create posts, change their visibility, delete them; while an experiment runs, in
    the candidate's version too (`candidate(bundle)` -> its bundle or None)."""

    kind = "post"
    script = POSTS_LUA

    def __init__(self, candidate=lambda bundle: None):
        self.candidate = candidate

    def validate(self, bundle: Bundle, events, now: float, offset: int = 0) -> None:
        for i, e in enumerate(events, start=offset):
            check_id(e.event_id, f"events[{i}].event_id")
            check_id(e.post_id, f"events[{i}].post_id")
            if e.op == writes_pb2.POST_OP_UNSPECIFIED or e.op not in writes_pb2.PostOp.values():
                raise InvalidArgument(f"events[{i}].op", "must be CREATE, SET_VISIBILITY or DELETE")
            if e.visibility not in writes_pb2.Visibility.values():
                raise InvalidArgument(f"events[{i}].visibility", f"unknown value {e.visibility}")
            if e.op == writes_pb2.POST_OP_CREATE:
                check_id(e.author_id, f"events[{i}].author_id")
                check_id(e.community_id, f"events[{i}].community_id")
                if e.community_id not in bundle.community_row:
                    raise InvalidArgument(f"events[{i}].community_id", f"unknown community {e.community_id!r}")
                check_ts(e.created_at, now, f"events[{i}].created_at")

    def reads(self, bundle: Bundle, events) -> list[tuple]:
        """Applied markers, existing post records, author records."""
        version = bundle.version
        return [
            ("MGET", *[contract.applied_key(e.event_id) for e in events]),
            ("MGET", *[contract.post_key(version, e.post_id) for e in events]),
            ("MGET", *[contract.user_key(version, e.author_id or "-") for e in events]),
        ]

    def script_args(self, bundle: Bundle, events, replies, now: float, offset: int = 0) -> tuple[list, list]:
        applied_before, records, authors = replies
        version = bundle.version
        mirror = self.candidate(bundle)
        created_here: set[str] = set()
        keys = [
            contract.live_stream_key(version),
            contract.EVENT_LOG_KEY,
            contract.live_stream_key(mirror.version if mirror else version),
        ]
        argv: list = [
            contract.APPLIED_TTL_S,
            contract.post_field_offset("flags"),
            contract.EVENT_LOG_MAXLEN,
            contract.RECENT_PER_COMMUNITY,
        ]
        private_comm = bundle[contract.COMMUNITY_PRIVATE_FILE]
        known = bundle.post_row.rows([e.post_id for e in events]) >= 0  # one lookup for the batch
        for i, e in enumerate(events):
            where = f"events[{i + offset}].post_id"
            exists = records[i] is not None or bool(known[i]) or e.post_id in created_here
            if applied_before[i] is None:
                if e.op == writes_pb2.POST_OP_CREATE and exists:
                    raise AlreadyExists(where, f"post {e.post_id!r} already exists")
                if e.op != writes_pb2.POST_OP_CREATE and not exists:
                    raise InvalidArgument(where, f"unknown post {e.post_id!r}")
            mirror_version = mirror.version if mirror else version
            keys += [
                contract.applied_key(e.event_id),
                contract.post_key(version, e.post_id),
                contract.recent_key(version, e.community_id or "-"),
                contract.post_key(mirror_version, e.post_id),
                contract.recent_key(mirror_version, e.community_id or "-"),
            ]
            record = vector = mirror_record = mirror_vector = b""
            created = 0
            mirror_op = ""
            if e.op == writes_pb2.POST_OP_CREATE:
                created_here.add(e.post_id)
                created = check_ts(e.created_at, now, "")
                record, vector = new_post(bundle, e, bundle.community_row[e.community_id], created, authors[i])
                op = "create"
                if mirror is not None and e.community_id in mirror.community_row:
                    # A community the candidate does not know cannot place the post there (as publish's carry-over).
                    mirror_record, mirror_vector = mirrored_post(mirror, e, created, record)
                    mirror_op = op
            elif e.op == writes_pb2.POST_OP_DELETE:
                op = mirror_op = "delete"
            else:
                comm = community_of(bundle, e.post_id, records[i])
                members_only = e.visibility == writes_pb2.VISIBILITY_MEMBERS or bool(private_comm[comm])
                op = flags_op(members_only)
                if mirror is not None:  # never less private than either version says
                    c = mirror.community_row.get(bundle.community_ids[comm])
                    mirror_private = c is not None and bool(mirror[contract.COMMUNITY_PRIVATE_FILE][c])
                    mirror_op = flags_op(members_only or mirror_private)
            payload = contract.encode_log(
                e.event_id,
                writes_pb2.PostOp.Name(e.op),
                e.post_id,
                e.author_id,
                e.community_id,
                created,
                writes_pb2.Visibility.Name(e.visibility),
            )
            argv += [op, e.post_id, record, e.community_id, e.author_id, vector, created, payload, digest(e)]
            argv += [mirror_op, mirror_record, mirror_vector]
        return keys, argv

    def finish(self, bundle: Bundle, reply, events=(), offset: int = 0) -> tuple[int, int]:
        refused = refusal(reply)
        if refused:
            raise reused_id(events, refused[0], offset)
        applied, dups = reply
        return int(applied), int(dups)


def flags_op(members_only: bool) -> str:
    """The script's op for a visibility change: flags:<set>:<clear>."""
    private = contract.FLAG_PRIVATE
    return f"flags:{private if members_only else 0}:{0 if members_only else private}"


def mirrored_post(candidate: Bundle, e, created: int, record: bytes) -> tuple[bytes, bytes]:
    """A live post as the experiment's candidate version places it: indexed against its
    communities and users, starting from its prior, with the author standing (and the
    privacy) the serving version gave it."""
    served = contract.decode_posts([record])[0]
    rec, vector = new_post(candidate, e, candidate.community_row[e.community_id], created, None)
    out = contract.decode_posts([rec]).copy()
    out["author_trust"] = served["author_trust"]
    out["flags"] |= served["flags"] & contract.FLAG_PRIVATE
    return contract.encode_posts(out)[0], vector


def community_ids(bundle: Bundle, records: list[bytes | None]) -> list[str]:
    """The community id of each post record, decoded together ('-' where there is no
    record: a duplicate event for a post whose record is gone, which the script skips)."""
    decoded = contract.decode_posts(records)
    present = (decoded["flags"] & contract.FLAG_PRESENT) != 0
    n = len(bundle.community_ids)
    return [
        bundle.community_ids[c] if ok and 0 <= c < n else "-" for c, ok in zip(decoded["community"].tolist(), present)
    ]


def community_of(bundle: Bundle, post_id: str, record: bytes | None) -> int:
    if record is not None:
        return int(contract.decode_posts([record])["community"][0])
    return int(bundle[contract.POST_COMMUNITY_FILE][bundle.post_row[post_id]])


def new_post(bundle: Bundle, e, community: int, created: int, author_raw: bytes | None) -> tuple[bytes, bytes]:
    """(packed record, packed starting vector) of a post created live."""
    rec = np.zeros(1, dtype=contract.POST_DTYPE)
    rec["row"] = -1
    rec["community"] = community
    rec["author"] = bundle.user_row.get(e.author_id, -1)
    private = bool(bundle[contract.COMMUNITY_PRIVATE_FILE][community]) or e.visibility == writes_pb2.VISIBILITY_MEMBERS
    rec["flags"] = contract.FLAG_PRESENT | (contract.FLAG_PRIVATE if private else 0)
    rec["created_at"] = created
    rec["author_trust"] = author_trust(author_raw, community)
    prior = bundle.new_post_vectors(np.array([community]), rec["author"])
    return contract.encode_posts(rec)[0], prior[0].astype("<f4").tobytes()


def author_trust(raw: bytes | None, community: int) -> float:
    """The author's standing in the community: training's role prior (a live post has no
    track record yet to move it)."""
    try:
        user = contract.decode_user(raw) if raw is not None else None
    except contract.ContractError:
        user = None
    role = dict(zip(user.communities.tolist(), user.roles.tolist())).get(community, 0) if user else 0
    return float(ROLE_STANDING[role]) if role > 0 else NON_MEMBER_STANDING


def attribution(served: bytes | None, e, kind: str, ts: int) -> str:
    """The experiment log entry crediting this engagement to the variant that served the
    post to the user ('' when no experiment served it, within the memory's windows)."""
    if not served or isinstance(served, Exception):
        return ""
    experiment_id, variant = contract.decode_served(served)
    return contract.encode_log(experiment_id, variant, e.user_id, e.post_id, kind, ts)


class EngagementBatch:
    """Views, likes, comments, shares, saves, hides, reports."""

    kind = "engagement"
    script = ENGAGEMENTS_LUA

    def __init__(self, client: redis.Redis, clock=time.time, candidate=lambda bundle: None):
        self.candidate = candidate  # an experiment's candidate version: its counters move too
        self.client = client  # for the moved vectors' follow-up
        self.clock = clock  # wall clock: the served windows follow Redis' expiry (service/served.py)
        # One per version: an experiment's candidate moves its posts with its own factors.
        self._folds: dict[str, FoldIn] = {}

    def fold_in(self, bundle: Bundle) -> FoldIn:
        fold = self._folds.get(bundle.version)
        if fold is None:
            fold = fold_in_for(bundle)
            self._folds = dict(list(self._folds.items())[-1:]) | {bundle.version: fold}
        return fold

    def validate(self, bundle: Bundle, events, now: float, offset: int = 0) -> None:
        for i, e in enumerate(events, start=offset):
            check_id(e.event_id, f"events[{i}].event_id")
            check_id(e.user_id, f"events[{i}].user_id")
            check_id(e.post_id, f"events[{i}].post_id")
            if e.kind not in KIND_OF:
                raise InvalidArgument(
                    f"events[{i}].kind", f"must be one of {', '.join(k.upper() for k in contract.KINDS)}"
                )
            check_ts(e.ts, now, f"events[{i}].ts")

    def reads(self, bundle: Bundle, events) -> list[tuple]:
        """Applied markers, the post records (an unknown post is an error) and, in the same
        round trip, which experiment variant served each post to its user (this window's
        and the previous window's served hash: service/served.py)."""
        window = contract.served_window(self.clock())
        served = [("HGET", contract.served_key(e.user_id, w), e.post_id) for e in events for w in (window, window - 1)]
        return [
            ("MGET", *[contract.applied_key(e.event_id) for e in events]),
            ("MGET", *[contract.post_key(bundle.version, e.post_id) for e in events]),
            *served,
        ]

    def script_args(self, bundle: Bundle, events, replies, now: float, offset: int = 0) -> tuple[list, list]:
        applied_before, records, *served = replies
        for i, e in enumerate(events):
            if applied_before[i] is None and records[i] is None:
                raise InvalidArgument(f"events[{i + offset}].post_id", f"unknown post {e.post_id!r}")
        fold = self.fold_in(bundle)
        user_factors = bundle[contract.USER_FACTORS_FILE]
        mirror = self.candidate(bundle)
        mirror_version = mirror.version if mirror is not None else bundle.version
        keys = [contract.EVENT_LOG_KEY, contract.EXPERIMENT_LOG_KEY]
        argv: list = [
            contract.APPLIED_TTL_S,
            contract.post_field_offset("positives"),
            contract.post_field_offset("negatives"),
            contract.post_field_offset("views"),
            user_factors.shape[1],
            contract.EVENT_LOG_MAXLEN,
            contract.SEEN_READ_MAX,
            contract.post_field_offset("hot"),
            bundle.hot_half_life_s,
            bundle.data_end_ts,  # the epoch of this version's hot-list scores (training/records.py)
            HOT_LIST_KEEP,
            contract.EXPERIMENT_LOG_MAXLEN,
            mirror.data_end_ts if mirror is not None else "",
            mirror[contract.USER_FACTORS_FILE].shape[1] if mirror is not None else "",
        ]
        mirror_fold = self.fold_in(mirror) if mirror is not None else None
        mirror_factors = mirror[contract.USER_FACTORS_FILE] if mirror is not None else None
        communities = community_ids(bundle, records)
        user_ids = [e.user_id for e in events]
        user_rows = bundle.user_row.rows(user_ids).tolist()  # one lookup for the batch
        mirror_rows = mirror.user_row.rows(user_ids).tolist() if mirror is not None else [-1] * len(events)
        for i, (e, community, row, mirror_row) in enumerate(zip(events, communities, user_rows, mirror_rows)):
            kind = KIND_OF[e.kind]
            weight = float(contract.KIND_WEIGHT[KIND_CODE[kind]])
            delta = engagement_stats(fold, user_factors[row], weight) if weight > 0 and row >= 0 else b""
            keys += [
                contract.applied_key(e.event_id),
                contract.post_key(bundle.version, e.post_id),
                contract.engager_stats_key(bundle.version, e.post_id),
                contract.seen_key(e.user_id),
                contract.hot_key(bundle.version, community),
                contract.post_key(mirror_version, e.post_id),
                contract.hot_key(mirror_version, community),
                contract.engager_stats_key(mirror_version, e.post_id),
            ]
            mirror_delta = (
                engagement_stats(mirror_fold, mirror_factors[mirror_row], weight)
                if weight > 0 and mirror_row >= 0
                else b""
            )
            ts = e.ts or int(now)
            argv += [
                max(weight, 0.0),
                1.0 if kind in contract.NEGATIVE_KIND_NAMES else 0.0,
                1.0,
                delta,
                e.post_id,
                ts,
                contract.encode_log(e.event_id, e.user_id, e.post_id, kind, ts),
                digest(e),
                attribution(served[2 * i] or served[2 * i + 1], e, kind, ts),
                mirror_delta,
            ]
        return keys, argv

    def finish(self, bundle: Bundle, reply, events=(), offset: int = 0) -> tuple[int, int]:
        refused = refusal(reply)
        if refused:
            raise reused_id(events, refused[0], offset)
        if len(reply) > 2:
            mirror = self.candidate(bundle)
            for version_bundle in (bundle, mirror) if mirror is not None else (bundle,):
                prefix = contract.post_key_prefix(version_bundle.version).encode()
                moved = [x for k, v in zip(reply[2::2], reply[3::2]) if k.startswith(prefix) for x in (k, v)]
                if moved:
                    dim = version_bundle[contract.USER_FACTORS_FILE].shape[1]
                    publish_moved(self.client, version_bundle, self.fold_in(version_bundle), moved, dim)
        return int(reply[0]), int(reply[1])
