"""The contract between training and serving: bundle files and Redis keys.

Training imports this module to write a model bundle and publish features; the service
imports it to read them. Nothing else in the code base spells a bundle file name, a
manifest field or a Redis key. Change a bundle file here and bump SCHEMA_VERSION, or the key
layout and bump KEY_SCHEMA_VERSION, and both
sides move together.

Bundle (a directory ``<models_dir>/<model_version>/``, written atomically by rename):

  manifest.json          schema_version, model_version, created_at, data_fingerprint,
                         params, metrics, dims, files (sha256 and size of every file)
  user_ids.npy           U  [n_users]      external user ids, row = user index
  user_factors.npy       f4 [n_users, d]   ALS user factors (community affinity)
  author_vectors.npy     f4 [n_users, d]   authors' KnownFor vectors (zeros: no engaged post yet)
  community_ids.npy      U  [n_comm]
  community_factors.npy  f4 [n_comm, d]
  community_private.npy  b1 [n_comm]
  community_size.npy     i4 [n_comm]       members
  post_ids.npy           U  [n_posts]      row = FAISS id
  post_vectors.npy       f4 [n_posts, d]   memory-mapped at serve time
  post_community.npy     i4 [n_posts]
  post_author.npy        i4 [n_posts]      user index of the author, -1 when unknown
  post_created_at.npy    i8 [n_posts]      unix seconds
  post_deleted.npy       b1 [n_posts]
  post_members_only.npy  b1 [n_posts]      members-only posts (private even in a public community)
  post_author_trust.npy  f4 [n_posts]      the author's standing in the post's community
  post_positives.npy     f4 [n_posts]      weighted positive engagements (all data)
  post_negatives.npy     f4 [n_posts]      hides and reports
  post_views.npy         f4 [n_posts]      engagement events of any kind
  membership_user.npy    i4 [n_memberships]
  membership_community.npy i4 [n_memberships]
  membership_role.npy    u1 [n_memberships] ROLE_* codes
  post_hot.npy           f4 [n_posts]      hotness at the data end (manifest params.hot_half_life_h)
  affinity_user.npy      i4 [n_affinities] each user's heaviest communities (engagement + membership),
  affinity_community.npy i4 [n_affinities]   at most 32 a user: which in-network lists Rank reads,
  affinity_weight.npy    f4 [n_affinities]   and the community_weight feature
  post_neighbours.npy    i4 [n_posts, 20]  nearest posts by co-engagement (-1 pads), most similar first
  post_neighbour_sims.npy f4 [n_posts, 20] their cosine similarities
  user_history.npy       i4 [n_users, 50]  each user's newest engaged posts (-1 pads): the co_engagement feature
  post_ids_sorted.npy    U  [n_posts]      post_ids sorted, and post_ids_sorted_rows.npy (i4) the row of
  user_ids_sorted.npy    U  [n_users]      each; same for users (id -> row by binary search, core/ids.py;
                                           optional: computed at load if absent)
  posts.faiss            FAISS index over post_vectors (ids = rows), memory-mapped
  scorer.json            the learned scorer (see core.scoring)
  report.json / .md      evaluation report (optional for serving)

No pickle anywhere: arrays are .npy loaded with allow_pickle=False, the rest is JSON.

Redis (every key under ``nf:<key schema>:``; model-derived keys also under the model version,
so a publish writes a new version's keys and then flips one pointer; the {...} part of a
key is its Redis Cluster hash tag, see "Hash tags" below):

  nf:3:{g}:current                  the model version that serves (string)
  nf:3:{g}:history                  published versions, newest first (list)
  nf:3:m:<ver>:u:{u:<user_id>}      packed user record (USER record below)
  nf:3:m:<ver>:p:{p:<post_id>}      packed post record (POST_DTYPE, fixed size)
  nf:3:m:<ver>:r:{c:<community_id>} recent posts of a community, newest first (encode_recent)
  nf:3:m:<ver>:h:{c:<community_id>} hot posts of a community (ZSET, core.hotness list scores)
  nf:3:seen:{u:<user_id>}           live, unversioned: posts the user has seen (ZSET, score =
                                    unix seconds; the reader takes the newest SEEN_READ_MAX)
  nf:3:blocked:{u:<user_id>}        live, unversioned: author user ids the user blocked (SET)
  nf:3:g:{u:<user_id>}              live graph, unversioned: the user's memberships, roles,
                                    bans and mutes written since training (HASH, see below)
  nf:3:{g}:pins                     moderators' pins (ZSET member = community id LOG_SEP post id,
                                    score = pinned until)
  nf:3:{g}:caps                     non-member caps (HASH community id -> max feed share)
  nf:3:{g}:rules:rev                bumped by every pin and cap change: workers re-read both then
  nf:3:{g}:removed                  posts moderators took out of feeds (HASH post id -> the rule's log entry)

Key schema 3 added the hash tags (key schema 2 had the same keys without them, under
nf:2:); a Redis written by an older release is not read: publish the bundle again
(publish writes every key a version needs; bundles themselves are unchanged).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 2  # the bundle's files and manifest
# The Redis key layout's own version (KEY_ROOT): 3 added the hash tags. Bundles did not
# change with it, so a schema-2 bundle publishes as it is into the new layout.
KEY_SCHEMA_VERSION = 3

# ---------------------------------------------------------------------------------------
# Bundle files
# ---------------------------------------------------------------------------------------
MANIFEST_FILE = "manifest.json"
USER_IDS_FILE = "user_ids.npy"
USER_FACTORS_FILE = "user_factors.npy"
AUTHOR_VECTORS_FILE = "author_vectors.npy"  # f4 [n_users, d]: KnownFor of each author, zeros if none
COMMUNITY_IDS_FILE = "community_ids.npy"
COMMUNITY_FACTORS_FILE = "community_factors.npy"
COMMUNITY_PRIVATE_FILE = "community_private.npy"
COMMUNITY_SIZE_FILE = "community_size.npy"
POST_IDS_FILE = "post_ids.npy"
POST_VECTORS_FILE = "post_vectors.npy"
POST_COMMUNITY_FILE = "post_community.npy"
POST_AUTHOR_FILE = "post_author.npy"
POST_CREATED_AT_FILE = "post_created_at.npy"
POST_DELETED_FILE = "post_deleted.npy"
POST_MEMBERS_ONLY_FILE = "post_members_only.npy"  # b1 [n_posts]: visible to community members only
POST_AUTHOR_TRUST_FILE = "post_author_trust.npy"
POST_POSITIVES_FILE = "post_positives.npy"
POST_NEGATIVES_FILE = "post_negatives.npy"
POST_VIEWS_FILE = "post_views.npy"
MEMBERSHIP_USER_FILE = "membership_user.npy"
MEMBERSHIP_COMMUNITY_FILE = "membership_community.npy"
MEMBERSHIP_ROLE_FILE = "membership_role.npy"
POST_HOT_FILE = "post_hot.npy"  # f4 [n_posts]: hotness at the data end (core.hotness, manifest hot_half_life_h)
# Each user's heaviest communities (engagement there + membership), at most
# RetrievalParams.communities per user: which in-network lists the hot path reads, and
# the community_weight feature.
AFFINITY_USER_FILE = "affinity_user.npy"  # i4 [n_affinities]
AFFINITY_COMMUNITY_FILE = "affinity_community.npy"  # i4 [n_affinities]
AFFINITY_WEIGHT_FILE = "affinity_weight.npy"  # f4 [n_affinities]
# Co-engagement (core/neighbours.py): each post's nearest posts by who engaged with them,
# and each user's newest engaged posts (rows; -1 pads both).
POST_NEIGHBOURS_FILE = "post_neighbours.npy"  # i4 [n_posts, NEIGHBOURS]
POST_NEIGHBOUR_SIMS_FILE = "post_neighbour_sims.npy"  # f4 [n_posts, NEIGHBOURS]
USER_HISTORY_FILE = "user_history.npy"  # i4 [n_users, HISTORY], newest first
# Optional (not in ARRAY_FILES): u2/i4 [n_posts], distinct members of the post's community
# who engaged positively. When a bundle has it, post records carry it and Rank can say
# "3 members of X engaged"; without it the field is 0 and that reason is not given.
POST_MEMBER_ENGAGERS_FILE = "post_member_engagers.npy"
# Optional (not in ARRAY_FILES): i8 [n_posts], when the post was last active at the data
# end: its newest positive engagement, or its creation if nobody engaged with it. With
# it, publish writes a record's hot_at as that time (and hot as of it), so hot_at is
# the post's last activity from publish on, as the write path keeps it; without it
# hot_at is the data end for every post, and so is every post's last activity.
POST_LAST_ACTIVE_FILE = "post_last_active.npy"
OPTIONAL_POST_ARRAYS = (POST_MEMBER_ENGAGERS_FILE, POST_LAST_ACTIVE_FILE)
# Optional (not in ARRAY_FILES): the ids sorted (U [n]) and the row of each (i4 [n]). With
# them every worker maps ids to rows by binary search over shared memory-mapped arrays
# (core/ids.py); a bundle without them gets them computed at load, in each process.
POST_IDS_SORTED_FILE = "post_ids_sorted.npy"
POST_IDS_SORTED_ROWS_FILE = "post_ids_sorted_rows.npy"
USER_IDS_SORTED_FILE = "user_ids_sorted.npy"
USER_IDS_SORTED_ROWS_FILE = "user_ids_sorted_rows.npy"
ID_INDEX_FILES = {
    "post_ids.npy": (POST_IDS_SORTED_FILE, POST_IDS_SORTED_ROWS_FILE),
    "user_ids.npy": (USER_IDS_SORTED_FILE, USER_IDS_SORTED_ROWS_FILE),
}
INDEX_FILE = "posts.faiss"
SCORER_FILE = "scorer.json"
REPORT_JSON_FILE = "report.json"
REPORT_MD_FILE = "report.md"
REPORT_PLOT_FILE = "report.png"  # every method's NDCG@10 and recall@50 per window

# Every array file and the dtype kind it must have; the loader checks both.
ARRAY_FILES: dict[str, str] = {
    USER_IDS_FILE: "U",
    USER_FACTORS_FILE: "f",
    AUTHOR_VECTORS_FILE: "f",
    COMMUNITY_IDS_FILE: "U",
    COMMUNITY_FACTORS_FILE: "f",
    COMMUNITY_PRIVATE_FILE: "b",
    COMMUNITY_SIZE_FILE: "i",
    POST_IDS_FILE: "U",
    POST_VECTORS_FILE: "f",
    POST_COMMUNITY_FILE: "i",
    POST_AUTHOR_FILE: "i",
    POST_CREATED_AT_FILE: "i",
    POST_DELETED_FILE: "b",
    POST_MEMBERS_ONLY_FILE: "b",
    POST_AUTHOR_TRUST_FILE: "f",
    POST_POSITIVES_FILE: "f",
    POST_NEGATIVES_FILE: "f",
    POST_VIEWS_FILE: "f",
    MEMBERSHIP_USER_FILE: "i",
    MEMBERSHIP_COMMUNITY_FILE: "i",
    MEMBERSHIP_ROLE_FILE: "u",
    POST_HOT_FILE: "f",
    AFFINITY_USER_FILE: "i",
    AFFINITY_COMMUNITY_FILE: "i",
    AFFINITY_WEIGHT_FILE: "f",
    POST_NEIGHBOURS_FILE: "i",
    POST_NEIGHBOUR_SIMS_FILE: "f",
    USER_HISTORY_FILE: "i",
}
REQUIRED_FILES = tuple(ARRAY_FILES) + (INDEX_FILE, SCORER_FILE)

# Directory names inside models_dir that are not versions (half-written bundles).
STAGING_PREFIX = ".staging-"


class ContractError(ValueError):
    """A bundle or a Redis record does not follow this contract."""


@dataclass
class Manifest:
    model_version: str
    created_at: str
    data_fingerprint: str
    dims: dict[str, int]
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractError(f"{where}: manifest is not valid JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise ContractError(f"{where}: manifest must be a JSON object")
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise ContractError(
                f"{where}: schema_version {raw.get('schema_version')!r} is not "
                f"{SCHEMA_VERSION} (retrain with this version of nichefeed)"
            )
        missing = [k for k in ("model_version", "created_at", "data_fingerprint", "dims", "files") if k not in raw]
        if missing:
            raise ContractError(f"{where}: manifest lacks {', '.join(missing)}")
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**known)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def describe_files(bundle_dir: Path) -> dict[str, dict[str, Any]]:
    """Checksums and sizes of every file in a bundle (the manifest excluded)."""
    out = {}
    for path in sorted(bundle_dir.iterdir()):
        if path.name == MANIFEST_FILE or not path.is_file():
            continue
        out[path.name] = {"sha256": file_digest(path), "bytes": path.stat().st_size}
    return out


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_versions(models_dir: Path) -> list[str]:
    """Complete bundles in models_dir, oldest first (versions sort by creation time)."""
    if not models_dir.is_dir():
        return []
    return sorted(
        p.name
        for p in models_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_FILE).is_file()
    )


# ---------------------------------------------------------------------------------------
# Redis keys
# ---------------------------------------------------------------------------------------
KEY_ROOT = f"nf:{KEY_SCHEMA_VERSION}"

# Hash tags (Redis Cluster hashes only the part of a key between the first "{" and the
# next "}"): every key names the one thing whose slot it must share.
#   {u:<user>}   the user's record (every version), seen, blocked, live graph, served:
#                the user's round trip is one node's
#   {c:<comm>}   a community's recent and hot lists (every version)
#   {p:<post>}   a post's record and engager statistics (every version): an engagement's
#                counters and a post event's flags change in one slot
#   {g}          everything global: pointer, history, published markers, event log, live
#                streams, rules, experiments (the pointer flip is one MULTI on one slot)
# An id holding "}" ends its tag early, but identically in every key of that id, so its
# keys still share a slot. A single node ignores the braces; its keys are the same strings.
GLOBAL = f"{KEY_ROOT}:{{g}}"
CURRENT_KEY = f"{GLOBAL}:current"
HISTORY_KEY = f"{GLOBAL}:history"


def user_tag(user_id: str) -> str:
    return "{u:" + user_id + "}"


def community_tag(community_id: str) -> str:
    return "{c:" + community_id + "}"


def post_tag(post_id: str) -> str:
    return "{p:" + post_id + "}"


def user_key(version: str, user_id: str) -> str:
    return f"{KEY_ROOT}:m:{version}:u:{user_tag(user_id)}"


def post_key_prefix(version: str) -> str:
    """Post keys are prefix + post_id + POST_KEY_SUFFIX; the hot path builds 500 a request."""
    return f"{KEY_ROOT}:m:{version}:p:{{p:"


POST_KEY_SUFFIX = "}"


def post_key(version: str, post_id: str) -> str:
    return post_key_prefix(version) + post_id + POST_KEY_SUFFIX


def version_key_pattern(version: str) -> str:
    """SCAN pattern matching every key of one model version (for pruning)."""
    return f"{KEY_ROOT}:m:{version}:*"


# ---------------------------------------------------------------------------------------
# Redis records: packed binary, not JSON (a 500-post MGET decodes with one frombuffer)
# ---------------------------------------------------------------------------------------
ROLE_NONE, ROLE_MEMBER, ROLE_TRUSTED, ROLE_MODERATOR = 0, 1, 2, 3
ROLE_NAMES = {"member": ROLE_MEMBER, "trusted": ROLE_TRUSTED, "moderator": ROLE_MODERATOR}

_USER_HEADER = struct.Struct("<BHH")  # record version, dim, number of memberships
_USER_RECORD_VERSION = 1


@dataclass
class UserRecord:
    vector: np.ndarray  # float32 [d]
    communities: np.ndarray  # int32 community indices of the bundle
    roles: np.ndarray  # uint8 role codes, parallel to communities


def encode_user(vector: np.ndarray, communities: np.ndarray, roles: np.ndarray) -> bytes:
    vector = np.ascontiguousarray(vector, dtype="<f4")
    communities = np.ascontiguousarray(communities, dtype="<i4")
    roles = np.ascontiguousarray(roles, dtype="u1")
    if communities.shape != roles.shape:
        raise ContractError("communities and roles must have the same length")
    header = _USER_HEADER.pack(_USER_RECORD_VERSION, vector.shape[0], communities.shape[0])
    return header + vector.tobytes() + communities.tobytes() + roles.tobytes()


def decode_user(raw: bytes) -> UserRecord:
    if len(raw) < _USER_HEADER.size:
        raise ContractError("user record is truncated")
    version, dim, n = _USER_HEADER.unpack_from(raw)
    expected = _USER_HEADER.size + 4 * dim + 4 * n + n
    if version != _USER_RECORD_VERSION or len(raw) != expected:
        raise ContractError(f"user record has version {version} and {len(raw)} bytes, expected {expected}")
    off = _USER_HEADER.size
    vector = np.frombuffer(raw, dtype="<f4", count=dim, offset=off)
    off += 4 * dim
    communities = np.frombuffer(raw, dtype="<i4", count=n, offset=off)
    roles = np.frombuffer(raw, dtype="u1", count=n, offset=off + 4 * n)
    return UserRecord(vector=vector, communities=communities, roles=roles)


# Post flags. PRESENT is set on every stored record so that a missing key (MGET -> None,
# decoded as zeros) can never look like a visible public post: privacy fails closed.
FLAG_PRESENT = 1
FLAG_DELETED = 2
FLAG_PRIVATE = 4
FLAG_REMOVED = 8  # taken out of feeds by a moderator (not deleted: the platform still shows it)

POST_DTYPE = np.dtype(
    [
        ("row", "<i4"),  # row in the bundle's post arrays / FAISS id; -1 for live posts
        ("community", "<i4"),  # community index of the bundle
        ("author", "<i4"),  # user index of the author, -1 when unknown
        ("flags", "u1"),
        ("_pad", "u1"),
        ("member_engagers", "<u2"),  # distinct members of the community who engaged positively
        ("created_at", "<i8"),  # unix seconds
        ("author_trust", "<f4"),  # standing of the author in the community, 0..1
        ("positives", "<f4"),  # weighted positive engagements
        ("negatives", "<f4"),  # hides and reports
        ("views", "<f4"),
        ("hot", "<f4"),  # positive engagement decayed by the model's half-life, as of hot_at (core.hotness)
        # unix seconds (a double: the write path updates it in Lua, whose numbers are
        # doubles). The time `hot` is as of, which is also the post's last activity: the
        # write path moves it to each newer positive engagement, publish sets it to the
        # newest one before the data end (POST_LAST_ACTIVE_FILE). 0 on a live post until
        # its first engagement: last activity is max(hot_at, created_at).
        ("hot_at", "<f8"),
    ]
)
POST_RECORD_SIZE = POST_DTYPE.itemsize
_EMPTY_POST = bytes(POST_RECORD_SIZE)


def encode_posts(records: np.ndarray) -> list[bytes]:
    """Pack a POST_DTYPE array into one value per post (PRESENT flag forced on)."""
    records = np.ascontiguousarray(records, dtype=POST_DTYPE)
    records["flags"] |= FLAG_PRESENT
    raw = records.tobytes()
    size = POST_RECORD_SIZE
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def decode_posts(values: list[bytes | None]) -> np.ndarray:
    """Decode an MGET reply; missing or malformed values become all-zero records (not PRESENT)."""
    size = POST_RECORD_SIZE
    if None not in values and set(map(len, values)) <= {size}:  # the common case, checked in C
        return np.frombuffer(b"".join(values), dtype=POST_DTYPE)
    joined = b"".join(v if v is not None and len(v) == size else _EMPTY_POST for v in values)
    return np.frombuffer(joined, dtype=POST_DTYPE)


# ---------------------------------------------------------------------------------------
# Write path (live posts and engagements between trainings)
# ---------------------------------------------------------------------------------------
# Every accepted write event, in order, for the next training run (a Redis Stream).
EVENT_LOG_KEY = f"{GLOBAL}:log"
EVENT_LOG_MAXLEN = 20_000_000  # approximate cap; `python -m training fold-log` drains it
# An applied event id is remembered this long: a retry within it is applied once.
APPLIED_TTL_S = 7 * 86_400


def applied_key(event_id: str) -> str:
    return f"{KEY_ROOT}:applied:{event_id}"


def live_stream_key(version: str) -> str:
    """Stream of post vector changes of one model version (new posts, moved vectors,
    deletions); every worker follows it to keep its live index, and replays it on start."""
    return f"{KEY_ROOT}:m:{version}:{{g}}:live"


def engager_stats_key(version: str, post_id: str) -> str:
    """Live engagers of a post: packed float32 [d + 1] = (sum of c * user vector, sum of c - 1)."""
    return f"{KEY_ROOT}:m:{version}:pe:{post_tag(post_id)}"


# Fields of a live stream entry.
LIVE_POST = "p"  # post id
LIVE_COMMUNITY = "c"  # community id
LIVE_AUTHOR = "a"  # author user id
LIVE_VECTOR = "v"  # packed float32 [d]
LIVE_DELETED = "d"  # "1" when the post was deleted
LIVE_CREATED = "t"  # created_at, unix seconds (decimal)
LIVE_PRIVATE = "x"  # visibility change: "1" members only, "0" as its community
LIVE_REMOVED = "r"  # moderation: "1" taken out of feeds, "0" restored


def post_field_offset(name: str) -> int:
    """Byte offset of a POST_DTYPE field (the write path updates fields in place)."""
    return POST_DTYPE.fields[name][1]


# Engagement kinds and the confidence each adds, shared by training (schema.py) and the
# write path, so a live like moves a post exactly as a logged like would count.
KINDS = ("view", "like", "comment", "share", "save", "hide", "report")
KIND_WEIGHT = np.array([0.0, 1.0, 2.0, 3.0, 2.0, -2.0, -4.0], dtype=np.float32)
NEGATIVE_KIND_NAMES = ("hide", "report")


# ---------------------------------------------------------------------------------------
# Hot path: in-network recent lists (versioned) and per-user live keys (unversioned)
# ---------------------------------------------------------------------------------------
RECENT_PER_COMMUNITY = 100  # post ids kept per community's recent list
SEEN_READ_MAX = 500  # newest seen posts a request reads (writers should trim to about this)
BLOCKED_READ_MAX = 1000  # a block list longer than this is refused as unreadable (fails closed)


def recent_key(version: str, community_id: str) -> str:
    """A community's recent post ids, newest first: the in-network candidates."""
    return f"{KEY_ROOT}:m:{version}:r:{community_tag(community_id)}"


def encode_recent(post_ids) -> bytes:
    """Newline-separated post ids, newest first (ids are printable: no newline inside).
    A writer prepends a new post with `id + "\n" + old` and trims to RECENT_PER_COMMUNITY."""
    return "\n".join(post_ids).encode()


def decode_recent(raw: bytes | None) -> list[str]:
    if not raw:
        return []
    return raw.decode(errors="replace").split("\n")[:RECENT_PER_COMMUNITY]


def hot_key(version: str, community_id: str) -> str:
    """A community's hot list: ZSET member = post id, score = core.hotness.list_score
    (epoch = the version's data end), trimmed to core.retrieval.HOT_LIST_KEEP."""
    return f"{KEY_ROOT}:m:{version}:h:{community_tag(community_id)}"


def seen_key(user_id: str) -> str:
    """Posts the user has already seen (ZSET member = post id, score = unix seconds)."""
    return f"{KEY_ROOT}:seen:{user_tag(user_id)}"


def blocked_key(user_id: str) -> str:
    """Authors (user ids) the user has blocked (SET)."""
    return f"{KEY_ROOT}:blocked:{user_tag(user_id)}"


# Event log entries: one field, LOG_POST or LOG_ENGAGEMENT, whose value joins these
# fields with LOG_SEP (a control character, which validated ids can never contain).
LOG_POST = "post"
LOG_POST_FIELDS = ("event_id", "op", "post_id", "author_id", "community_id", "created_at", "visibility")
LOG_ENGAGEMENT = "engagement"
LOG_ENGAGEMENT_FIELDS = ("event_id", "user_id", "post_id", "kind", "ts")
LOG_SEP = "\x1f"
LOG_FOLDED_KEY = f"{GLOBAL}:log:folded"  # id of the last log entry folded into training data


def encode_log(*values: object) -> str:
    return LOG_SEP.join(map(str, values))


def decode_log(value: bytes, fields: tuple[str, ...]) -> dict[str, str]:
    parts = value.decode().split(LOG_SEP)
    if len(parts) != len(fields):
        raise ContractError(f"log entry has {len(parts)} fields, expected {len(fields)}")
    return dict(zip(fields, parts))


# ---------------------------------------------------------------------------------------
# The live community graph (unversioned: it outlives every model version)
# ---------------------------------------------------------------------------------------
# nf:3:g:{u:<user_id>} is a HASH written by the graph RPCs and read in the user's round trip:
#   c:<community_id>  "<state>:<at>"  state GRAPH_LEFT, a ROLE_* code, or GRAPH_BANNED; at =
#                                     when the service applied it (unix seconds)
#   m:<community_id>  "<at>"          the user muted the community (HDEL on unmute)
#   created           "<at>"          the platform created the user through the API
# A c: entry overrides the bundle's membership of that community when it is newer than the
# bundle's data (manifest params.data_end_ts): live state wins over the trained snapshot,
# and a retrain that folded the event in agrees with it anyway (core/live_graph.py).
GRAPH_LEFT = 0
GRAPH_BANNED = 9
GRAPH_COMMUNITY = "c:"
GRAPH_MUTED = "m:"
GRAPH_CREATED = "created"
CAPS_KEY = f"{GLOBAL}:caps"
PINS_KEY = f"{GLOBAL}:pins"
# Pins and caps change rarely and every request needs them: each worker caches both and
# reads only this counter in the user's round trip, re-reading the rules when it moved.
RULES_REV_KEY = f"{GLOBAL}:rules:rev"
REMOVED_KEY = f"{GLOBAL}:removed"
PINS_PER_COMMUNITY = 5  # pins shown per community (the longest-lasting win)


def graph_key(user_id: str) -> str:
    return f"{KEY_ROOT}:g:{user_tag(user_id)}"


def encode_pin(community_id: str, post_id: str) -> str:
    return community_id + LOG_SEP + post_id


def decode_pin(raw: bytes) -> tuple[str, str]:
    community_id, _, post_id = raw.decode(errors="replace").partition(LOG_SEP)
    return community_id, post_id


def encode_graph_entry(state: int, at: int) -> str:
    return f"{state}:{at}"


def decode_graph_entry(raw: bytes) -> tuple[int, int]:
    """(state, at); raises ContractError on anything else."""
    try:
        state, at = raw.split(b":")
        return int(state), int(at)
    except ValueError:
        raise ContractError(f"graph entry {raw[:40]!r} is not <state>:<at>") from None


# Log entries of graph events and moderators' rules (fields as the write API names them).
LOG_GRAPH = "graph"
LOG_GRAPH_FIELDS = ("event_id", "op", "user_id", "community_id", "role", "target_user_id", "ts")
LOG_RULE = "rule"
LOG_RULE_FIELDS = ("event_id", "op", "moderator_id", "community_id", "post_id", "until", "max_share", "ts")


# ---------------------------------------------------------------------------------------
# Evaluation files in a bundle (training/evaluate.py; not needed to serve)
# ---------------------------------------------------------------------------------------
EVAL_USERS_FILE = "eval_users.npy"  # i4 [n_points, max_users] user rows per split point, ascending, -1 padded
EVAL_RANKINGS_FILE = "eval_rankings.npy"  # i4 [n_points, n_methods, max_users, max K] post rows, -1 padded


# Ids (users, posts, communities, events) as every API accepts them. Keys embed ids, and
# the event log separates fields with a control character, which a printable id never has.
MAX_ID_BYTES = 128


def id_problem(value: str) -> str | None:
    """Why `value` is not an acceptable id (None when it is); empty is the caller's call."""
    if len(value.encode()) > MAX_ID_BYTES:
        return f"longer than {MAX_ID_BYTES} bytes"
    if not value.isprintable() or value != value.strip():
        return "must be printable with no surrounding spaces"
    return None


# ---------------------------------------------------------------------------------------
# A published version's data is in Redis (operations: Redis that came back empty)
# ---------------------------------------------------------------------------------------
def published_key(version: str) -> str:
    """Set by publish once every key of `version` is written, just before the pointer
    flips, and unlinked with them by pruning. The serving version without it (or no
    pointer at all) means Redis lost the data: restarted without persistence, failed over
    to an empty replica, or evicted; the service then says so and waits for a republish."""
    return f"{KEY_ROOT}:m:{version}:{{g}}:published"


# ---------------------------------------------------------------------------------------
# Experiments: a candidate version served beside the current one (service/experiments.py)
# ---------------------------------------------------------------------------------------
# nf:3:{g}:experiment              the running experiment (JSON ExperimentDefinition below); absent:
#                                  none. Written by `python -m training experiment`, read by every
#                                  worker's reloader beside the current pointer.
# nf:3:{g}:experiment:stopped      the last experiment that ended and why (JSON: definition + reason)
# nf:3:{g}:experiment:log          a Redis Stream: one LOG_SERVED entry per Rank answer of an
#                                  experiment, one LOG_ATTRIBUTED entry per engagement with a post an
#                                  experiment served (what `experiment-report` reads)
# nf:3:served:{u:<user_id>}:<window> which variant served which post to the user (HASH post id ->
#                                  encode_served); one hash per SERVED_WINDOW_S window, expiring
#                                  after two: an engagement is attributed for at least one window.
EXPERIMENT_KEY = f"{GLOBAL}:experiment"
EXPERIMENT_STOPPED_KEY = f"{GLOBAL}:experiment:stopped"
EXPERIMENT_LOG_KEY = f"{GLOBAL}:experiment:log"
EXPERIMENT_LOG_MAXLEN = 5_000_000  # approximate cap (a served entry per Rank answer)
SERVED_WINDOW_S = 86_400
VARIANT_CONTROL = "control"
VARIANT_CANDIDATE = "candidate"
VARIANTS = (VARIANT_CONTROL, VARIANT_CANDIDATE)
SHARE_BUCKETS = 10_000  # a user's bucket is one of these; SHARE percent of them get the candidate
LOG_SERVED = "served"
LOG_SERVED_FIELDS = ("experiment", "variant", "user_id", "items", "ts")
LOG_ATTRIBUTED = "engaged"
LOG_ATTRIBUTED_FIELDS = ("experiment", "variant", "user_id", "post_id", "kind", "ts")


def served_window(ts: float) -> int:
    """The window (of SERVED_WINDOW_S, wall clock) a serve or an engagement falls in."""
    return int(ts // SERVED_WINDOW_S)


def served_key(user_id: str, window: int) -> str:
    return f"{KEY_ROOT}:served:{user_tag(user_id)}:{window}"


def encode_served(experiment_id: str, variant: str) -> str:
    return experiment_id + LOG_SEP + variant


def decode_served(raw: bytes) -> tuple[str, str]:
    experiment_id, _, variant = raw.decode(errors="replace").partition(LOG_SEP)
    return experiment_id, variant


@dataclass(frozen=True)
class ExperimentDefinition:
    """What every worker needs to route a user without asking anyone: the candidate
    version, the share of users it serves (percent of SHARE_BUCKETS), the salt of the
    user hash, and the safety and shadow settings. `control` is the version that served
    when it started: the experiment runs while the pointer still names it."""

    id: str
    candidate: str
    control: str
    share: float  # percent of users served by the candidate, 0 (shadow only) .. < 100
    salt: str
    started_at: int  # unix seconds
    shadow_rate: float = 0.0  # share of control answers also ranked by the candidate, unserved
    max_excess: float = 0.05  # stop when the candidate's error or degraded rate exceeds control's by this
    min_requests: int = 200  # per variant and worker before the safety check judges
    # The candidate serves nobody before started_at + grace_s: by then every worker has read
    # the definition (grace >= their reload interval) and keeps the candidate's posts in step.
    grace_s: float = 10.0

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str) -> ExperimentDefinition:
        try:
            data = json.loads(raw)
            known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
            defn = cls(**known)
        except (ValueError, TypeError) as exc:
            raise ContractError(f"experiment definition is not valid: {exc}") from None
        problem = defn.problem()
        if problem:
            raise ContractError(f"experiment definition: {problem}")
        return defn

    def problem(self) -> str | None:
        """Why this definition cannot run (None when it can)."""
        if not isinstance(self.share, (int, float)) or not 0 <= self.share < 100:
            return f"share must be a percent in [0, 100), got {self.share!r}"
        if not isinstance(self.shadow_rate, (int, float)) or not 0 <= self.shadow_rate <= 1:
            return f"shadow_rate must be in [0, 1], got {self.shadow_rate!r}"
        if not isinstance(self.max_excess, (int, float)) or not 0 < self.max_excess <= 1:
            return f"max_excess must be in (0, 1], got {self.max_excess!r}"
        if not isinstance(self.grace_s, (int, float)) or not 0 <= self.grace_s <= 3600:
            return f"grace_s must be in [0, 3600] seconds, got {self.grace_s!r}"
        if not isinstance(self.min_requests, int) or self.min_requests < 1:
            return f"min_requests must be a positive integer, got {self.min_requests!r}"
        for name in ("id", "candidate", "control", "salt"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or id_problem(value):
                return f"{name} must be a printable id, got {value!r}"
        if self.candidate == self.control:
            return f"candidate and control are both {self.candidate!r}"
        return None
