"""Stage 1: load and validate the input files into a Dataset (see training/schema.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from service import contract
from training import schema
from training.csvio import CsvTable, DataError


def _index(ids: list[str], known: dict[str, int], table: CsvTable, column: str, what: str) -> np.ndarray:
    out = np.empty(len(ids), dtype=np.int32)
    for i, v in enumerate(ids):
        j = known.get(v)
        if j is None:
            raise table.error(i, column, f"unknown {what} {v!r}")
        out[i] = j
    return out


def _intern(values: list[str], table: dict[str, int]) -> np.ndarray:
    """Indices of values, adding unseen ones to table (users appear in several files)."""
    out = np.empty(len(values), dtype=np.int32)
    for i, v in enumerate(values):
        j = table.get(v)
        if j is None:
            j = table[v] = len(table)
        out[i] = j
    return out


def load_dataset(data_dir: Path) -> schema.Dataset:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: not a directory (expected {schema.POSTS_CSV} and {schema.EVENTS_CSV})")
    notes: list[str] = []
    users: dict[str, int] = {}

    posts = CsvTable(data_dir / schema.POSTS_CSV, schema.POST_COLUMNS, ("deleted",))
    post_ids = posts.strings("post_id")
    post_index = {p: i for i, p in enumerate(post_ids)}
    if len(post_index) != len(post_ids):
        seen: set[str] = set()
        for i, p in enumerate(post_ids):
            if p in seen:
                raise posts.error(i, "post_id", f"duplicate post id {p!r}")
            seen.add(p)
    post_comm_ids = posts.strings("community_id")
    created = posts.ints("created_at", minimum=0)
    deleted = posts.bools("deleted") if posts.has("deleted") else np.zeros(len(posts), dtype=bool)

    comm_path = data_dir / schema.COMMUNITIES_CSV
    if comm_path.exists():
        comms = CsvTable(comm_path, schema.COMMUNITY_COLUMNS, ("topic",))
        community_ids = comms.strings("community_id")
        private = comms.bools("is_private")
        community_index = {c: i for i, c in enumerate(community_ids)}
        if len(community_index) != len(community_ids):
            raise DataError(f"{comm_path}: duplicate community ids")
        post_comm = _index(post_comm_ids, community_index, posts, "community_id", "community")
    else:
        community_index = {}
        post_comm = _intern(post_comm_ids, community_index)
        community_ids = list(community_index)
        private = np.zeros(len(community_ids), dtype=bool)
        notes.append(f"{schema.COMMUNITIES_CSV} missing: {len(community_ids)} communities derived from posts, all public")

    post_author = _intern(posts.strings("author_id"), users)

    events = CsvTable(data_dir / schema.EVENTS_CSV, schema.EVENT_COLUMNS, ("weight",))
    e_user = _intern(events.strings("user_id"), users)
    e_post = _index(events.strings("post_id"), post_index, events, "post_id", "post")
    e_kind = events.choices("kind", schema.KINDS)
    e_ts = events.ints("ts", minimum=0)
    e_count = events.floats("weight", minimum=0).astype(np.float32) if events.has("weight") else np.ones(len(events), np.float32)
    if events.has("weight"):
        notes.append("events carry counts in 'weight': confidence scales with the count")

    mem_path = data_dir / schema.MEMBERSHIPS_CSV
    if mem_path.exists():
        mems = CsvTable(mem_path, schema.MEMBERSHIP_COLUMNS)
        m_user = _intern(mems.strings("user_id"), users)
        m_comm = _index(mems.strings("community_id"), community_index, mems, "community_id", "community")
        role_codes = mems.choices("role", schema.ROLES)
        m_role = np.array([contract.ROLE_NAMES[r] for r in schema.ROLES], dtype=np.uint8)[role_codes]
        m_joined = mems.ints("joined_at", minimum=0)
        key = m_user.astype(np.int64) * max(len(community_ids), 1) + m_comm
        uniq, first = np.unique(key, return_index=True)
        if len(uniq) != len(key):
            dup = np.setdiff1d(np.arange(len(key)), first)[0]
            raise mems.error(int(dup), "community_id", "duplicate membership of this user")
    else:
        # Derive: a user is a member of a community they engaged with positively at least
        # twice, or where they authored a post. Roles are unknown: everyone is a member.
        pos = np.isin(e_kind, schema.POSITIVE_KINDS)
        n_c = max(len(community_ids), 1)
        key = np.concatenate([
            e_user[pos].astype(np.int64) * n_c + post_comm[e_post[pos]],
            post_author.astype(np.int64) * n_c + post_comm,
            post_author.astype(np.int64) * n_c + post_comm,  # authors always qualify
        ])
        uniq, counts = np.unique(key, return_counts=True)
        uniq = uniq[counts >= 2]
        m_user, m_comm = (uniq // n_c).astype(np.int32), (uniq % n_c).astype(np.int32)
        m_role = np.full(len(uniq), contract.ROLE_MEMBER, dtype=np.uint8)
        m_joined = np.zeros(len(uniq), dtype=np.int64)
        notes.append(f"{schema.MEMBERSHIPS_CSV} missing: {len(uniq)} memberships derived from engagement and authorship")

    order = np.argsort(e_ts, kind="stable")
    return schema.Dataset(
        user_ids=np.array(list(users), dtype=str) if users else np.array([], dtype="<U1"),
        community_ids=np.array(community_ids, dtype=str),
        community_private=private,
        m_user=m_user, m_community=m_comm, m_role=m_role, m_joined_at=m_joined,
        post_ids=np.array(post_ids, dtype=str),
        post_author=post_author, post_community=post_comm, post_created_at=created,
        post_deleted=deleted,
        e_user=e_user[order], e_post=e_post[order], e_kind=e_kind[order], e_ts=e_ts[order],
        e_count=e_count[order], notes=notes,
    )
