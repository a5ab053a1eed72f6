"""The live community graph's batch kinds, in the applier's shape (batches.py):
GraphBatch (joins, leaves, roles, bans, blocks, mutes, new users) and RuleBatch
(moderators' pins, removals and non-member caps).

Both write unversioned keys (contract: graph_key, PINS_KEY, CAPS_KEY, REMOVED_KEY) that
outlive every model version, so a publish never undoes them (removals are flags on the
versioned post records too: publish re-applies them from contract.REMOVED_KEY). Each live entry is stamped
with when the service applied it, never earlier than just after the serving bundle's
data end: it was applied while that bundle served, so it is newer than anything the
bundle learnt, and core/live_graph.py lets it win over the bundle's snapshot.
"""

from __future__ import annotations

from core import contract
from core.bundle import Bundle
from nichefeed.v1 import graph_pb2
from service.errors import AlreadyExists, FailedPrecondition, InvalidArgument, PermissionDenied
from service.writes.markers import digest, refusal, reused_id
from service.writes.scripts import GRAPH_LUA, RULES_LUA
from service.writes.validate import check_id, check_ts

MAX_SIGNUP_COMMUNITIES = 100
MAX_PIN_AHEAD_S = 90 * 86_400

_GRAPH_OP = {
    graph_pb2.GRAPH_OP_JOIN: "join",
    graph_pb2.GRAPH_OP_LEAVE: "leave",
    graph_pb2.GRAPH_OP_SET_ROLE: "set_role",
    graph_pb2.GRAPH_OP_BAN: "ban",
    graph_pb2.GRAPH_OP_UNBAN: "unban",
    graph_pb2.GRAPH_OP_BLOCK: "block",
    graph_pb2.GRAPH_OP_UNBLOCK: "unblock",
    graph_pb2.GRAPH_OP_MUTE: "mute",
    graph_pb2.GRAPH_OP_UNMUTE: "unmute",
    graph_pb2.GRAPH_OP_CREATE_USER: "create",
}
_COMMUNITY_OPS = {"join", "leave", "set_role", "ban", "unban", "mute", "unmute"}
_RULE_OP = {
    graph_pb2.RULE_OP_PIN: "pin",
    graph_pb2.RULE_OP_UNPIN: "unpin",
    graph_pb2.RULE_OP_REMOVE_POST: "remove",
    graph_pb2.RULE_OP_RESTORE_POST: "restore",
    graph_pb2.RULE_OP_CAP_NON_MEMBER_SHARE: "cap",
}
_POST_RULES = {"pin", "unpin", "remove", "restore"}


def applied_at(bundle: Bundle, now: float) -> int:
    """The stamp of a live entry (module docstring: never at or before the data end)."""
    return max(int(now), bundle.data_end_ts + 1)


def role_in(raw: bytes | None, community: int) -> int:
    """A user's role in a community by their published (bundle) record, 0 if none."""
    if raw is None or community < 0:
        return 0
    try:
        user = contract.decode_user(raw)
    except contract.ContractError:
        return 0
    return dict(zip(user.communities.tolist(), user.roles.tolist())).get(community, 0)


def check_community(bundle: Bundle, value: str, where: str) -> int:
    check_id(value, where)
    c = bundle.community_row.get(value)
    if c is None:
        raise InvalidArgument(where, f"unknown community {value!r}")
    return c


def raise_refusal(i: int, reason: str, events, offset: int) -> None:
    """A script's refusal of events[i] as the error naming its field."""
    e = events[i]
    at = f"events[{i + offset}]"
    if reason == "conflict":
        raise reused_id(events, i, offset)
    if reason == "exists":
        raise AlreadyExists(f"{at}.user_id", f"user {e.user_id!r} already exists")
    if reason == "banned":
        raise FailedPrecondition(f"{at}.user_id", f"{e.user_id!r} is banned from {e.community_id!r}")
    if reason == "not_member":
        raise FailedPrecondition(f"{at}.user_id", f"{e.user_id!r} is not a member of {e.community_id!r}")
    if reason == "full":
        raise FailedPrecondition(
            f"{at}.target_user_id", f"{e.user_id!r} already blocks {contract.BLOCKED_READ_MAX} users"
        )
    if reason == "denied":
        raise PermissionDenied(f"{at}.moderator_id", f"{e.moderator_id!r} is not a moderator of {e.community_id!r}")
    raise InvalidArgument(f"{at}.op", reason)


def op_of(table: dict, enum, e, at: str) -> str:
    """The event's op by name, or the error naming `events[i].op` with the valid ones."""
    op = table.get(e.op)
    if op is None:
        raise InvalidArgument(f"{at}.op", f"must be one of {', '.join(enum.keys()[1:])}")
    return op


class CheckedBatch:
    """The finish of a batch whose script checks every event before writing any: either
    (applied, duplicates), or the refusal as the error naming events[i].field."""

    def finish(self, bundle: Bundle, reply, events=(), offset: int = 0) -> tuple[int, int]:
        refused = refusal(reply)
        if refused:
            raise_refusal(*refused, events, offset)
        return int(reply[0]), int(reply[1])


class GraphBatch(CheckedBatch):
    kind = "graph"
    script = GRAPH_LUA

    def validate(self, bundle: Bundle, events, now: float, offset: int = 0) -> None:
        for i, e in enumerate(events, start=offset):
            at = f"events[{i}]"
            check_id(e.event_id, f"{at}.event_id")
            check_id(e.user_id, f"{at}.user_id")
            op = op_of(_GRAPH_OP, graph_pb2.GraphOp, e, at)
            if op in _COMMUNITY_OPS:
                check_community(bundle, e.community_id, f"{at}.community_id")
            if op == "join" and e.role not in graph_pb2.Role.values():
                raise InvalidArgument(f"{at}.role", f"unknown role {e.role}")
            if op == "set_role" and e.role not in (
                graph_pb2.ROLE_MEMBER,
                graph_pb2.ROLE_TRUSTED,
                graph_pb2.ROLE_MODERATOR,
            ):
                raise InvalidArgument(f"{at}.role", "must be ROLE_MEMBER, ROLE_TRUSTED or ROLE_MODERATOR")
            if op in ("block", "unblock"):
                check_id(e.target_user_id, f"{at}.target_user_id")
                if e.target_user_id == e.user_id:
                    raise InvalidArgument(f"{at}.target_user_id", "a user cannot block themselves")
            if op == "create":
                if len(e.community_ids) > MAX_SIGNUP_COMMUNITIES:
                    raise InvalidArgument(f"{at}.community_ids", f"at most {MAX_SIGNUP_COMMUNITIES} communities")
                for j, c in enumerate(e.community_ids):
                    check_community(bundle, c, f"{at}.community_ids[{j}]")
                if len(set(e.community_ids)) != len(e.community_ids):
                    raise InvalidArgument(f"{at}.community_ids", "lists a community twice")
            check_ts(e.ts, now, f"{at}.ts")

    def reads(self, bundle: Bundle, events) -> list[tuple]:
        """The users' published records (their roles as trained)."""
        return [("MGET", *[contract.user_key(bundle.version, e.user_id) for e in events])]

    def script_args(self, bundle: Bundle, events, replies, now: float, offset: int = 0) -> tuple[list, list]:
        (records,) = replies
        keys = [contract.EVENT_LOG_KEY]
        argv: list = [
            contract.APPLIED_TTL_S,
            contract.EVENT_LOG_MAXLEN,
            bundle.data_end_ts,
            applied_at(bundle, now),
            contract.BLOCKED_READ_MAX,
        ]
        for e, record in zip(events, records):
            op = _GRAPH_OP[e.op]
            keys += [contract.applied_key(e.event_id), contract.graph_key(e.user_id), contract.blocked_key(e.user_id)]
            if op == "create":
                community, bundle_state = "\n".join(e.community_ids), int(e.user_id in bundle.user_row)
            else:
                community = e.community_id
                bundle_state = role_in(record, bundle.community_row.get(e.community_id, -1))
            role = e.role or graph_pb2.ROLE_MEMBER
            payload = contract.encode_log(
                e.event_id,
                graph_pb2.GraphOp.Name(e.op),
                e.user_id,
                community,
                graph_pb2.Role.Name(role) if op in ("join", "set_role") else "",
                e.target_user_id,
                e.ts or int(now),
            )
            argv += [op, community, role, bundle_state, e.target_user_id, digest(e), contract.GRAPH_COMMUNITY, payload]
        return keys, argv


class RuleBatch(CheckedBatch):
    kind = "rule"
    script = RULES_LUA

    def validate(self, bundle: Bundle, events, now: float, offset: int = 0) -> None:
        for i, e in enumerate(events, start=offset):
            at = f"events[{i}]"
            check_id(e.event_id, f"{at}.event_id")
            check_id(e.moderator_id, f"{at}.moderator_id")
            op = op_of(_RULE_OP, graph_pb2.RuleOp, e, at)
            check_community(bundle, e.community_id, f"{at}.community_id")
            if op in _POST_RULES:
                check_id(e.post_id, f"{at}.post_id")
            if op == "pin" and not now < e.until <= now + MAX_PIN_AHEAD_S:
                raise InvalidArgument(f"{at}.until", f"{e.until} must be in the future, at most 90 days ahead")
            if op == "cap" and not 0.0 <= e.max_share <= 1.0:
                raise InvalidArgument(f"{at}.max_share", f"{e.max_share} is not between 0 and 1")
            check_ts(e.ts, now, f"{at}.ts")

    def reads(self, bundle: Bundle, events) -> list[tuple]:
        """The moderators' published records and the posts' records."""
        return [
            ("MGET", *[contract.user_key(bundle.version, e.moderator_id) for e in events]),
            ("MGET", *[contract.post_key(bundle.version, e.post_id or "-") for e in events]),
        ]

    def script_args(self, bundle: Bundle, events, replies, now: float, offset: int = 0) -> tuple[list, list]:
        moderators, posts = replies
        decoded = contract.decode_posts(posts)
        keys = [
            contract.EVENT_LOG_KEY,
            contract.live_stream_key(bundle.version),
            contract.REMOVED_KEY,
            contract.CAPS_KEY,
            contract.PINS_KEY,
            contract.RULES_REV_KEY,
        ]
        argv: list = [
            contract.APPLIED_TTL_S,
            contract.EVENT_LOG_MAXLEN,
            bundle.data_end_ts,
            applied_at(bundle, now),
            contract.post_field_offset("flags"),
        ]
        for i, e in enumerate(events):
            op = _RULE_OP[e.op]
            community = bundle.community_row[e.community_id]
            if op in _POST_RULES:
                present = decoded["flags"][i] & contract.FLAG_PRESENT
                if not present:
                    raise InvalidArgument(f"events[{i + offset}].post_id", f"unknown post {e.post_id!r}")
                if int(decoded["community"][i]) != community:
                    raise InvalidArgument(
                        f"events[{i + offset}].post_id", f"post {e.post_id!r} is not in {e.community_id!r}"
                    )
            keys += [
                contract.applied_key(e.event_id),
                contract.graph_key(e.moderator_id),
                contract.post_key(bundle.version, e.post_id or "-"),
            ]
            payload = contract.encode_log(
                e.event_id,
                graph_pb2.RuleOp.Name(e.op),
                e.moderator_id,
                e.community_id,
                e.post_id,
                e.until,
                f"{e.max_share:g}",
                e.ts or int(now),
            )
            argv += [
                op,
                e.community_id,
                e.post_id,
                e.until,
                f"{e.max_share:g}",
                role_in(moderators[i], community),
                digest(e),
                payload,
                contract.encode_pin(e.community_id, e.post_id),
            ]
        return keys, argv
