"""The documented input schema of the training pipeline (CSV files in one directory, or per
table a directory of Parquet files named without .csv: training/tables.py).

    communities.csv  community_id, is_private (0/1/true/false), topic (optional)
    memberships.csv  user_id, community_id, role (member|trusted|moderator), joined_at
    posts.csv        post_id, community_id (optional), author_id (optional),
                     created_at (optional), deleted (optional, 0/1)
    events.csv       user_id, post_id, ts, kind (optional), weight (optional: a count, default 1)

Timestamps are unix seconds (integers). Event kinds and their confidence weights are
below; hide and report are negative signals. Partial logs are expected:
communities.csv and memberships.csv may be missing (communities then come from
posts.csv, all public; memberships are derived from training-window engagement), an
empty or absent community_id puts the post in one shared community "(none)", an
empty or absent author_id means "unknown author", an absent created_at means 0, an
absent kind means "like", and a log with no positive kind at all (views with play counts)
has its views counted as positives. Each such fallback is noted in the report.
docs/training.md is the full reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COMMUNITIES_CSV = "communities.csv"
MEMBERSHIPS_CSV = "memberships.csv"
POSTS_CSV = "posts.csv"
EVENTS_CSV = "events.csv"
TRUTH_DIR = "truth"  # hidden truth of a synthetic world: for evaluation only, never training

COMMUNITY_COLUMNS = ("community_id", "is_private")
MEMBERSHIP_COLUMNS = ("user_id", "community_id", "role", "joined_at")
POST_COLUMNS = ("post_id",)
POST_OPTIONAL = ("community_id", "author_id", "created_at", "deleted", "visibility")
VISIBILITIES = ("community", "members")  # members: only members of its community see the post
EVENT_COLUMNS = ("user_id", "post_id", "ts")
EVENT_OPTIONAL = ("kind", "weight")

# Event kinds in a fixed order (the codes are stored as uint8).
KINDS = ("view", "like", "comment", "share", "save", "hide", "report")
KIND_CODE = {k: i for i, k in enumerate(KINDS)}
# Confidence each kind adds to a (user, item) pair. A view is exposure, not endorsement;
# hide and report subtract (ALS then sees the pair as not liked, see als.py).
KIND_WEIGHT = np.array([0.0, 1.0, 2.0, 3.0, 2.0, -2.0, -4.0], dtype=np.float32)
POSITIVE_KINDS = np.array([KIND_CODE[k] for k in ("like", "comment", "share", "save")])
NEGATIVE_KINDS = np.array([KIND_CODE[k] for k in ("hide", "report")])

ROLES = ("member", "trusted", "moderator")


@dataclass
class Dataset:
    """A loaded world: ids as numpy string arrays, relations as index arrays."""

    user_ids: np.ndarray
    community_ids: np.ndarray
    community_private: np.ndarray  # bool [n_comm]
    m_user: np.ndarray  # int32 [n_memberships]
    m_community: np.ndarray
    m_role: np.ndarray  # uint8 contract role codes
    m_joined_at: np.ndarray  # int64
    post_ids: np.ndarray
    post_author: np.ndarray  # int32 user index
    post_community: np.ndarray
    post_created_at: np.ndarray  # int64
    post_deleted: np.ndarray  # bool
    e_user: np.ndarray  # int32
    e_post: np.ndarray  # int32
    e_kind: np.ndarray  # uint8
    e_ts: np.ndarray  # int64
    e_count: np.ndarray  # float32 (1 unless the log carries counts)
    notes: list[str] = field(default_factory=list)
    memberships_derived: bool = False  # no memberships.csv: derive them as of each split
    kind_weight: np.ndarray = field(default_factory=lambda: KIND_WEIGHT.copy())
    post_members_only: np.ndarray | None = None  # bool [n_posts]; None: every post as its community
    # The events as a Spark DataFrame (user, post, kind, ts, count; indices and codes as
    # above) when the Spark engine read them: its ALS fits aggregate there, not from the arrays.
    events_frame: object = None
    # True when the e_* arrays hold only the positive events (event_weights() > 0): the
    # Spark engine's driver, whose numpy stages read no others; the state and the ALS
    # matrix, which need every event, are then computed from events_frame, and the
    # split's counts from event_times (training/event_times.py).
    events_positive_only: bool = False
    # True when they hold those of a sample of the users only (the Spark engine's driver
    # beyond --driver-users, training/spark/load.py): a fit over every user's events (plain
    # ALS, EASE's Gram matrix) then runs on Spark (training/spark/baselines.py).
    events_user_sample: bool = False
    event_times: object = None  # training/event_times.py; None: from the e_* arrays

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_communities(self) -> int:
        return len(self.community_ids)

    @property
    def n_posts(self) -> int:
        return len(self.post_ids)

    def event_weights(self) -> np.ndarray:
        return self.kind_weight[self.e_kind] * self.e_count

    def require_every_event(self, what: str) -> None:
        """For numpy code that reads views and negative events too: a Dataset holding only
        the positive events (events_positive_only) would give it wrong numbers, silently."""
        if self.events_positive_only:
            raise ValueError(
                f"{what} needs every event; this Dataset's driver holds only the positive ones "
                "(the Spark engine's): compute it with engine='spark'"
            )

    def community_size(self) -> np.ndarray:
        return np.bincount(self.m_community, minlength=self.n_communities).astype(np.int32)
