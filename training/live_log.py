"""Fold the service's event log (live posts and engagements) into a data directory.

The write path appends every accepted event to a Redis Stream (contract.EVENT_LOG_KEY).
Folding rewrites posts.csv (new posts appended, deletions and visibility changes
applied) and appends to events.csv, each file replaced atomically, then records how far
it got and trims the folded entries: the next `make train` learns from live traffic, and
a crash mid-way folds nothing twice (the position only moves after both files landed).
"""

from __future__ import annotations

import csv
import os
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


def fold_log(client: redis.Redis, data_dir: Path) -> tuple[int, int, str]:
    """Returns (post events folded, engagement events folded, last entry id)."""
    start = (client.get(contract.LOG_FOLDED_KEY) or b"0-0").decode()
    posts: list[dict[str, str]] = []
    engagements: list[dict[str, str]] = []
    last = start
    while True:
        entries = client.xrange(contract.EVENT_LOG_KEY, min=f"({last}", count=CHUNK)
        if not entries:
            break
        for entry_id, fields in entries:
            if contract.LOG_POST.encode() in fields:
                posts.append(contract.decode_log(fields[contract.LOG_POST.encode()], contract.LOG_POST_FIELDS))
            elif contract.LOG_ENGAGEMENT.encode() in fields:
                engagements.append(
                    contract.decode_log(fields[contract.LOG_ENGAGEMENT.encode()], contract.LOG_ENGAGEMENT_FIELDS)
                )
            last = entry_id.decode()
    if last == start:
        return 0, 0, last

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

    client.set(contract.LOG_FOLDED_KEY, last)
    client.xtrim(contract.EVENT_LOG_KEY, minid=last)  # keeps `last` itself: the next fold starts after it
    return len(posts), len(engagements), last
