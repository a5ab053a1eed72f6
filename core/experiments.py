"""Which variant of an experiment serves a user: a salted hash, so every worker (and the
report, and the tests) agrees without asking anyone, and a user stays in one variant
for the experiment's life (a new experiment draws a new salt: fresh buckets)."""

from __future__ import annotations

import hashlib

from core import contract


def bucket(salt: str, user_id: str) -> int:
    """The user's bucket in [0, SHARE_BUCKETS): uniform, independent across salts."""
    digest = hashlib.blake2b(f"{salt}\x1f{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % contract.SHARE_BUCKETS


def variant_of(defn: contract.ExperimentDefinition, user_id: str) -> str:
    """VARIANT_CANDIDATE for the first `share` percent of buckets, else VARIANT_CONTROL."""
    threshold = round(defn.share * contract.SHARE_BUCKETS / 100)
    return contract.VARIANT_CANDIDATE if bucket(defn.salt, user_id) < threshold else contract.VARIANT_CONTROL
