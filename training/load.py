"""Load and validate the input files (CSV or Parquet, tables.py) into a Dataset (see training/schema.py).

Every bad cell ends the run with one line naming file, row and column (csvio.DataError).
Partial logs load with documented fallbacks, each recorded in Dataset.notes so the
report says what was assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np

from core import contract
from training import schema
from training.cells import CellTable, DataError
from training.tables import open_table, table_exists

NO_COMMUNITY = "(none)"


def _index(ids: list[str], known: dict[str, int], table: CellTable, column: str, what: str) -> np.ndarray:
    out = np.fromiter(map(known.get, ids, repeat(-1)), dtype=np.int32, count=len(ids))
    if len(out) and out.min() < 0:
        i = int(np.argmin(out))
        raise table.error(i, column, f"unknown {what} {ids[i]!r}")
    return out


def _intern(values: list[str], table: dict[str, int]) -> np.ndarray:
    """Indices of values, adding unseen ones to table (users appear in several files)."""
    out = np.empty(len(values), dtype=np.int32)
    get = table.get
    for i, v in enumerate(values):
        j = get(v)
        if j is None:
            j = table[v] = len(table)
        out[i] = j
    return out


def _load_posts(data_dir: Path, users: dict[str, int], notes: list[str]):
    posts = open_table(data_dir, schema.POSTS_CSV, schema.POST_COLUMNS, schema.POST_OPTIONAL)
    post_ids = posts.strings("post_id")
    post_index = {p: i for i, p in enumerate(post_ids)}
    if len(post_index) != len(post_ids):
        seen: set[str] = set()
        for i, p in enumerate(post_ids):
            if p in seen:
                raise posts.error(i, "post_id", f"duplicate post id {p!r}")
            seen.add(p)
    if posts.has("created_at"):
        created = posts.ints("created_at", minimum=0)
    else:
        created = np.zeros(len(posts), np.int64)
        notes.append(f"{schema.POSTS_CSV} has no created_at: every post counts as created at 0 (no freshness signal)")
    deleted = posts.bools("deleted") if posts.has("deleted") else np.zeros(len(posts), dtype=bool)
    # visibility (written by fold-log for posts made members-only live): privacy must
    # survive a retrain, so an unknown value is an error, never "public".
    members_only = (
        posts.choices("visibility", schema.VISIBILITIES) == 1
        if posts.has("visibility")
        else np.zeros(len(posts), dtype=bool)
    )
    if posts.has("author_id"):
        names = posts.strings("author_id", allow_empty=True)
        unknown = np.array([not n for n in names], dtype=bool)
        author = np.full(len(names), -1, np.int32)
        author[~unknown] = _intern([n for n in names if n], users)
        if unknown.any():
            notes.append(f"{int(unknown.sum())} posts have no author_id: author features are neutral for them")
    else:
        author = np.full(len(posts), -1, np.int32)
        notes.append(f"{schema.POSTS_CSV} has no author_id: authors unknown, author trust neutral")
    return posts, post_ids, post_index, created, deleted, author, members_only


@dataclass
class EventColumns:
    """The events table as index arrays, in file order (load_dataset sorts them by time)."""

    user: np.ndarray  # int32 rows of users (new users interned in order of first appearance)
    post: np.ndarray  # int32 rows of posts
    kind: np.ndarray | None  # uint8 schema.KINDS codes; None: the table has no kind column
    ts: np.ndarray  # int64
    count: np.ndarray | None  # float32; None: the table has no weight column
    frame: object = None  # the same events as a Spark DataFrame, when Spark read them
    # A reader that returns only the positive events (the Spark engine's) says so, and
    # whether the whole table has a positive kind, which those arrays can no longer tell.
    positive_only: bool = False
    has_positive_kind: bool | None = None
    # Users with any positive event, when the reader holds only a sample of them (the
    # Spark engine's driver: training/spark/load.py sampled_users); None: all are held.
    engaged_users: int | None = None


def kind_weights(has_positive_kind: bool) -> np.ndarray:
    """The confidence weight of each kind for this log: schema.KIND_WEIGHT, with views
    counted as positive when the log has no positive kind at all (play counts)."""
    weights = schema.KIND_WEIGHT.copy()
    if not has_positive_kind:
        weights[schema.KIND_CODE["view"]] = 1.0
    return weights


def read_events(data_dir: Path, post_index: dict[str, int], users: dict[str, int]) -> EventColumns:
    """The events table read and validated in this process (the Spark engine reads it on
    Spark instead: training/spark/load.py, same checks and the same columns out)."""
    return events_from_table(
        open_table(data_dir, schema.EVENTS_CSV, schema.EVENT_COLUMNS, schema.EVENT_OPTIONAL), post_index, users
    )


def events_from_table(events: CellTable, post_index: dict[str, int], users: dict[str, int]) -> EventColumns:
    """Every check of an events table, in order; the first bad cell raises its DataError."""
    if len(events) == 0:
        raise DataError(f"{events.path}: no events (nothing to train on)")
    return EventColumns(
        user=_intern(events.strings("user_id"), users),
        post=_index(events.strings("post_id"), post_index, events, "post_id", "post"),
        kind=events.choices("kind", schema.KINDS) if events.has("kind") else None,
        ts=events.ints("ts", minimum=0),
        count=events.floats("weight", minimum=0).astype(np.float32) if events.has("weight") else None,
    )


def load_dataset(data_dir: Path, events_reader=read_events) -> schema.Dataset:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: not a directory (expected {schema.POSTS_CSV} and {schema.EVENTS_CSV})")
    notes: list[str] = []
    users: dict[str, int] = {}

    posts, post_ids, post_index, created, deleted, post_author, members_only = _load_posts(data_dir, users, notes)
    if posts.has("community_id"):
        post_comm_ids = posts.strings("community_id", allow_empty=True)
    else:
        post_comm_ids = [""] * len(posts)
    if not all(post_comm_ids):
        # A catalogue without groups still trains: such posts share one community, which
        # then carries no signal (every user is in it) and the post columns do the work.
        n = post_comm_ids.count("")
        post_comm_ids = [c or NO_COMMUNITY for c in post_comm_ids]
        notes.append(f"{n} posts have no community_id: they share the community {NO_COMMUNITY!r}")

    if table_exists(data_dir, schema.COMMUNITIES_CSV):
        comms = open_table(data_dir, schema.COMMUNITIES_CSV, schema.COMMUNITY_COLUMNS, ("topic",))
        community_ids = comms.strings("community_id")
        private = comms.bools("is_private")
        community_index = {c: i for i, c in enumerate(community_ids)}
        if len(community_index) != len(community_ids):
            seen: set[str] = set()
            for i, c in enumerate(community_ids):
                if c in seen:
                    raise comms.error(i, "community_id", f"duplicate community id {c!r}")
                seen.add(c)
        post_comm = _index(post_comm_ids, community_index, posts, "community_id", "community")
    else:
        community_index = {}
        post_comm = _intern(post_comm_ids, community_index)
        community_ids = list(community_index)
        private = np.zeros(len(community_ids), dtype=bool)
        notes.append(
            f"{schema.COMMUNITIES_CSV} missing: {len(community_ids)} communities derived from posts, all public"
        )

    ev = events_reader(data_dir, post_index, users)
    if ev.kind is None:
        ev.kind = np.full(len(ev.ts), schema.KIND_CODE["like"], np.uint8)
        notes.append(f"{schema.EVENTS_CSV} has no kind column: every event counts as a like")
    if ev.count is None:
        ev.count = np.ones(len(ev.ts), np.float32)
    else:
        notes.append("events carry counts in 'weight': confidence grows with log(1 + count)")
    e_user, e_post, e_kind, e_ts, e_count = ev.user, ev.post, ev.kind, ev.ts, ev.count
    if ev.engaged_users is not None:
        notes.append(
            f"the driver holds the positive events of {len(np.unique(e_user))} of the {ev.engaged_users} users "
            "with any (a seeded sample, --driver-users): the tuning, the scorer and the evaluation draw their "
            "users from them"
        )
    has_positive_kind = ev.has_positive_kind if ev.positive_only else bool(np.isin(e_kind, schema.POSITIVE_KINDS).any())
    kind_weight = kind_weights(has_positive_kind)
    if not has_positive_kind:
        notes.append("no like/comment/share/save events: views count as positive engagement (implicit feedback log)")

    derived = not table_exists(data_dir, schema.MEMBERSHIPS_CSV)
    if not derived:
        mems = open_table(data_dir, schema.MEMBERSHIPS_CSV, schema.MEMBERSHIP_COLUMNS)
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
        # Derived per split (training/state.py) so evaluation never learns a membership
        # from the window it is judged on.
        m_user = m_comm = np.empty(0, np.int32)
        m_role = np.empty(0, np.uint8)
        m_joined = np.empty(0, np.int64)
        notes.append(
            f"{schema.MEMBERSHIPS_CSV} missing: memberships derived from engagement before each split "
            "(two positive engagements in a community, or authorship); roles unknown (all 'member')"
        )

    order = np.argsort(e_ts, kind="stable")
    return schema.Dataset(
        user_ids=np.array(list(users), dtype=str) if users else np.array([], dtype="<U1"),
        community_ids=np.array(community_ids, dtype=str),
        community_private=private,
        m_user=m_user,
        m_community=m_comm,
        m_role=m_role,
        m_joined_at=m_joined,
        post_ids=np.array(post_ids, dtype=str),
        post_author=post_author,
        post_community=post_comm,
        post_created_at=created,
        post_deleted=deleted,
        e_user=e_user[order],
        e_post=e_post[order],
        e_kind=e_kind[order],
        e_ts=e_ts[order],
        e_count=e_count[order],
        notes=notes,
        memberships_derived=derived,
        kind_weight=kind_weight,
        post_members_only=members_only,
        events_frame=ev.frame,
        events_positive_only=ev.positive_only,
        events_user_sample=ev.engaged_users is not None,
    )
