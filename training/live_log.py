"""Fold the service's event log (live posts, engagements, graph changes) into a data directory.

The write path appends every accepted event to a Redis Stream (contract.EVENT_LOG_KEY).
Folding rewrites posts.csv (new posts appended, deletions and visibility changes
applied), appends to events.csv, and rewrites memberships.csv from the graph events
(joins and sign-ups add a row, role changes update it, leaves and bans remove it), each
file replaced atomically, then records how far it got and trims the folded entries: the
next `make train` learns from live traffic, and a crash mid-way folds nothing twice (the
position only moves after every file landed).

Blocks, mutes and moderators' rules are not part of the training schema: they stay in
their live keys, which outlive every model version. A data directory without
memberships.csv derives memberships from engagement; graph events are then not folded
(a file of live changes alone would replace the derivation) and the summary says so.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import redis

from core import contract
from training import schema

CHUNK = 10_000


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, list(reader)


def _replace(path: Path, header: list[str], rows) -> None:
    tmp = path.with_name(f".{path.name}.fold")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class Folded:
    posts: int  # post events folded
    engagements: int
    memberships: int  # graph events folded into memberships.csv
    not_folded: int  # graph events left out (no memberships.csv; blocks, mutes; rules)
    last: str  # the log position now folded up to

    @property
    def anything(self) -> bool:
        return bool(self.posts or self.engagements or self.memberships or self.not_folded)


def fold_log(client: redis.Redis, data_dir: Path) -> Folded:
    start = (client.get(contract.LOG_FOLDED_KEY) or b"0-0").decode()
    posts: list[dict[str, str]] = []
    engagements: list[dict[str, str]] = []
    graph: list[dict[str, str]] = []
    rules = 0
    last = start
    folded_ids: set[bytes] = set()
    while True:
        entries = client.xrange(contract.EVENT_LOG_KEY, min=f"({last}", count=CHUNK)
        if not entries:
            break
        for entry_id, fields in entries:
            last = entry_id.decode()
            # A Redis Cluster logs an event again when a retry follows a failure mid-batch
            # (service/writes/cluster.py): an event id is folded once.
            value = next(iter(fields.values()), b"")
            event_id = value.split(contract.LOG_SEP.encode(), 1)[0]
            if event_id in folded_ids:
                continue
            folded_ids.add(event_id)
            if contract.LOG_POST.encode() in fields:
                posts.append(contract.decode_log(fields[contract.LOG_POST.encode()], contract.LOG_POST_FIELDS))
            elif contract.LOG_ENGAGEMENT.encode() in fields:
                engagements.append(
                    contract.decode_log(fields[contract.LOG_ENGAGEMENT.encode()], contract.LOG_ENGAGEMENT_FIELDS)
                )
            elif contract.LOG_GRAPH.encode() in fields:
                graph.append(contract.decode_log(fields[contract.LOG_GRAPH.encode()], contract.LOG_GRAPH_FIELDS))
            elif contract.LOG_RULE.encode() in fields:
                rules += 1
    if last == start:
        return Folded(0, 0, 0, 0, last)

    posts_path = data_dir / schema.POSTS_CSV
    header, rows = _read_rows(posts_path)
    for col in ("deleted", "visibility"):
        if col not in header:
            header.append(col)
            for r in rows:
                r.append("0" if col == "deleted" else "community")
    col = {c: header.index(c) for c in header}
    where = {r[col["post_id"]]: r for r in rows}
    for e in posts:
        if e["op"] == "POST_OP_CREATE" and e["post_id"] not in where:
            row = [""] * len(header)
            row[col["post_id"]], row[col["author_id"]], row[col["community_id"]] = (
                e["post_id"],
                e["author_id"],
                e["community_id"],
            )
            row[col["created_at"]], row[col["deleted"]] = e["created_at"], "0"
            row[col["visibility"]] = "members" if e["visibility"] == "VISIBILITY_MEMBERS" else "community"
            rows.append(row)
            where[e["post_id"]] = row
        elif e["post_id"] in where:
            row = where[e["post_id"]]
            if e["op"] == "POST_OP_DELETE":
                row[col["deleted"]] = "1"
            elif e["op"] == "POST_OP_SET_VISIBILITY":
                row[col["visibility"]] = "members" if e["visibility"] == "VISIBILITY_MEMBERS" else "community"
    _replace(posts_path, header, rows)

    events_path = data_dir / schema.EVENTS_CSV
    ev_header, ev_rows = _read_rows(events_path)
    ev_col = {c: ev_header.index(c) for c in ev_header}
    for e in engagements:
        row = [""] * len(ev_header)
        for name in ("user_id", "post_id", "kind", "ts"):
            row[ev_col[name]] = e[name]
        if "weight" in ev_col:
            row[ev_col["weight"]] = "1"
        ev_rows.append(row)
    _replace(events_path, ev_header, ev_rows)

    folded = _fold_memberships(data_dir, graph)

    client.set(contract.LOG_FOLDED_KEY, last)
    client.xtrim(contract.EVENT_LOG_KEY, minid=last)  # keeps `last` itself: the next fold starts after it
    return Folded(len(posts), len(engagements), folded, len(graph) - folded + rules, last)


_ROLE_OF = {"ROLE_MEMBER": "member", "ROLE_TRUSTED": "trusted", "ROLE_MODERATOR": "moderator"}


def _fold_memberships(data_dir: Path, graph: list[dict[str, str]]) -> int:
    """Apply membership events to memberships.csv in log order; returns how many folded."""
    path = data_dir / schema.MEMBERSHIPS_CSV
    membership_events = [e for e in graph if e["op"] not in _NOT_MEMBERSHIP]
    if not membership_events or not path.is_file():
        return 0
    header, rows = _read_rows(path)
    col = {c: header.index(c) for c in header}
    where = {(r[col["user_id"]], r[col["community_id"]]): r for r in rows}

    def join(user: str, community: str, role: str, ts: str) -> None:
        row = where.get((user, community))
        if row is None:
            row = [""] * len(header)
            row[col["user_id"]], row[col["community_id"]], row[col["joined_at"]] = user, community, ts
            where[(user, community)] = row
        row[col["role"]] = role

    for e in membership_events:
        user, op = e["user_id"], e["op"]
        if op == "GRAPH_OP_CREATE_USER":
            for community in filter(None, e["community_id"].split("\n")):
                join(user, community, "member", e["ts"])
        elif op == "GRAPH_OP_JOIN":
            join(user, e["community_id"], _ROLE_OF.get(e["role"], "member"), e["ts"])
        elif op == "GRAPH_OP_SET_ROLE":
            if (user, e["community_id"]) in where:
                where[(user, e["community_id"])][col["role"]] = _ROLE_OF.get(e["role"], "member")
        elif op in ("GRAPH_OP_LEAVE", "GRAPH_OP_BAN"):
            where.pop((user, e["community_id"]), None)
    _replace(path, header, list(where.values()))
    return len(membership_events)


# Graph events the training schema has no place for: they stay live only.
_NOT_MEMBERSHIP = {"GRAPH_OP_BLOCK", "GRAPH_OP_UNBLOCK", "GRAPH_OP_MUTE", "GRAPH_OP_UNMUTE", "GRAPH_OP_UNBAN"}
