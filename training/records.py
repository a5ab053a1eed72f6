"""Redis records built from a bundle: what publish writes for one model version.

Each function yields (key, packed value) pairs in the formats of service/contract.py:
user records, post records, and the recent-post lists of each community (the in-network
candidates the hot path reads in the user's round trip).
"""
from __future__ import annotations

import numpy as np

from service import contract
from service.bundle import Bundle


def user_records(bundle: Bundle):
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


def post_records(bundle: Bundle):
    n = len(bundle.post_ids)
    rec = np.zeros(n, dtype=contract.POST_DTYPE)
    rec["row"] = np.arange(n)
    rec["community"] = bundle[contract.POST_COMMUNITY_FILE]
    rec["author"] = bundle[contract.POST_AUTHOR_FILE]
    private = np.asarray(bundle[contract.COMMUNITY_PRIVATE_FILE])[rec["community"]]
    rec["flags"] = (contract.FLAG_PRESENT
                    | np.where(bundle[contract.POST_DELETED_FILE], contract.FLAG_DELETED, 0)
                    | np.where(private, contract.FLAG_PRIVATE, 0)).astype(np.uint8)
    rec["created_at"] = bundle[contract.POST_CREATED_AT_FILE]
    rec["author_trust"] = bundle[contract.POST_AUTHOR_TRUST_FILE]
    rec["positives"] = bundle[contract.POST_POSITIVES_FILE]
    rec["negatives"] = bundle[contract.POST_NEGATIVES_FILE]
    rec["views"] = bundle[contract.POST_VIEWS_FILE]
    engagers = bundle.arrays.get(contract.POST_MEMBER_ENGAGERS_FILE)
    if engagers is not None:
        rec["member_engagers"] = np.clip(np.asarray(engagers), 0, np.iinfo(np.uint16).max)
    prefix = contract.post_key_prefix(bundle.version)
    return zip((prefix + p for p in bundle.post_ids), contract.encode_posts(rec))


def recent_records(bundle: Bundle):
    """Each community's newest servable posts (the in-network candidates), newest first.
    How many: len(bundle.community_recent)."""
    version = bundle.version
    for c, rows in bundle.community_recent.items():
        ids = [bundle.post_ids[r] for r in rows[: contract.RECENT_PER_COMMUNITY].tolist()]
        yield contract.recent_key(version, bundle.community_ids[c]), contract.encode_recent(ids)
