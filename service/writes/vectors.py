"""Moving post vectors on live engagement: the ALS item step from running sums.

Engagement moves a post's vector toward its engagers with the rule training uses
(core/post_vectors.py), on sufficient statistics kept per post in Redis; the new
vectors go to the version's live stream, which every worker's live index follows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import redis

from core import contract, post_vectors
from core.bundle import Bundle
from core.redis_conn import mget


@dataclass
class FoldIn:
    """Per model version: what moving a vector needs (computed once per bundle)."""

    version: str
    gram_inv: np.ndarray  # (X'X + reg I)^-1 over the bundle's user factors
    alpha: float


def fold_in_for(bundle: Bundle) -> FoldIn:
    als = bundle.manifest.params.get("als", {})
    gram_inv = post_vectors.fold_in_gram(bundle[contract.USER_FACTORS_FILE], float(als.get("regularization", 0.05)))
    return FoldIn(bundle.version, gram_inv, float(als.get("alpha", 10.0)))


def engagement_stats(fold: FoldIn, user_vector: np.ndarray, weight: float) -> bytes:
    """What one positive engagement adds to its post's statistics: (c * x, c - 1), with
    the confidence c = 1 + alpha * log1p(weight) that training gives it."""
    c = 1.0 + fold.alpha * float(np.log1p(weight))
    stats = np.empty(len(user_vector) + 1, dtype="<f4")
    stats[:-1] = c * np.asarray(user_vector)
    stats[-1] = c - 1.0
    return stats.tobytes()


def publish_moved(client: redis.Redis, bundle: Bundle, fold: FoldIn, moved: list, dim: int) -> None:
    """New vectors for posts whose engager statistics changed, to the live stream.
    `moved` is the engagement script's tail: post key, packed statistics, ..."""
    prefix = contract.post_key_prefix(bundle.version).encode()
    suffix = len(contract.POST_KEY_SUFFIX)
    post_ids = [k[len(prefix) : -suffix].decode() for k in moved[0::2]]
    stats = np.frombuffer(b"".join(moved[1::2]), dtype="<f4").reshape(-1, dim + 1)
    records = contract.decode_posts(mget(client, [contract.post_key(bundle.version, p) for p in post_ids]))
    base = np.empty((len(post_ids), dim), dtype=np.float32)
    for j, row in enumerate(bundle.post_row.rows(post_ids).tolist()):
        if row >= 0:
            base[j] = bundle[contract.POST_VECTORS_FILE][row]
        else:  # a live post: its prior, as when it was created
            base[j] = bundle.new_post_vectors(records["community"][j : j + 1], records["author"][j : j + 1])[0]
    engaged = post_vectors.engaged_from_stats(stats[:, :dim], fold.gram_inv)
    vectors = post_vectors.blend(base, engaged, stats[:, dim])
    pipe = client.pipeline(transaction=False)
    key = contract.live_stream_key(bundle.version)
    for j, p in enumerate(post_ids):
        if records["flags"][j] & contract.FLAG_DELETED:
            continue
        pipe.xadd(key, {contract.LIVE_POST: p, contract.LIVE_VECTOR: vectors[j].astype("<f4").tobytes()})
    pipe.execute()
