"""Redis records built from a bundle: what publish writes for one model version.

Each function yields (key, value) pairs in the formats of core/contract.py: user
records, post records, the recent-post lists and the hot lists of each community (the
in-network candidates the hot path reads in the user's round trip).
"""

from __future__ import annotations

import numpy as np

from core import contract
from core.bundle import Bundle


def user_entries(bundle: Bundle):
    users = bundle[contract.MEMBERSHIP_USER_FILE]
    order = np.argsort(users, kind="stable")
    comms = np.asarray(bundle[contract.MEMBERSHIP_COMMUNITY_FILE])[order]
    roles = np.asarray(bundle[contract.MEMBERSHIP_ROLE_FILE])[order]
    bounds = np.searchsorted(np.asarray(users)[order], np.arange(len(bundle.user_ids) + 1))
    factors = np.asarray(bundle[contract.USER_FACTORS_FILE])
    version = bundle.version
    for i, uid in enumerate(bundle.user_ids):
        lo, hi = bounds[i], bounds[i + 1]
        yield contract.user_key(version, uid), contract.encode_user(factors[i], comms[lo:hi], roles[lo:hi])


def post_entries(bundle: Bundle):
    rec = bundle.records_at(np.arange(len(bundle.post_ids)))
    prefix, suffix = contract.post_key_prefix(bundle.version), contract.POST_KEY_SUFFIX
    return zip((prefix + p + suffix for p in bundle.post_ids), contract.encode_posts(rec))


def recent_entries(bundle: Bundle):
    """Each community's newest servable posts (the in-network candidates), newest first.
    How many: len(bundle.community_recent)."""
    version = bundle.version
    for c, rows in bundle.community_recent.items():
        ids = [bundle.post_ids[r] for r in rows[: contract.RECENT_PER_COMMUNITY].tolist()]
        yield contract.recent_key(version, bundle.community_ids[c]), contract.encode_recent(ids)


def hot_list_entries(bundle: Bundle):
    """Each community's hot list at the data end: (key, {post id: list score}). The epoch
    of list scores is the data end, so a post's score starts as its hotness then."""
    version = bundle.version
    hot = bundle[contract.POST_HOT_FILE]
    for c, rows in bundle.community_hot.items():
        yield (
            contract.hot_key(version, bundle.community_ids[c]),
            {bundle.post_ids[r]: float(hot[r]) for r in rows.tolist()},
        )
