"""Carry live posts over to a newly published model version.

Posts created through the write path after the new model's training data was cut are
not in its bundle. Before the pointer flips, publish copies them from the serving
version into the new one: the record is re-indexed against the new bundle's
communities and users, and the post restarts from its community's new vector (vectors of
two versions live in different spaces). A post whose community the new model no longer
knows cannot be placed and is dropped, and said so. Posts the new bundle already has
(folded into its training data) are left as trained.
"""

from __future__ import annotations

import numpy as np
import redis

from core import contract
from core.bundle import Bundle
from core.redis_conn import mget


def carry_over(client: redis.Redis, old_version: str, new: Bundle) -> tuple[int, int]:
    """Returns (posts carried, posts dropped)."""
    created: dict[str, dict[bytes, bytes]] = {}
    for _, fields in client.xrange(contract.live_stream_key(old_version)):
        post_id = fields[contract.LIVE_POST.encode()].decode()
        if fields.get(contract.LIVE_DELETED.encode()) == b"1":
            created.pop(post_id, None)
        elif contract.LIVE_COMMUNITY.encode() in fields:
            created[post_id] = fields
    todo = [p for p in created if p not in new.post_row]
    if not todo:
        return 0, 0
    old = contract.decode_posts(mget(client, [contract.post_key(old_version, p) for p in todo]))
    pipe = client.pipeline(transaction=False)
    carried = dropped = 0
    recent: dict[str, list[str]] = {}
    for j, post_id in enumerate(todo):
        fields = created[post_id]
        community_id = fields[contract.LIVE_COMMUNITY.encode()].decode()
        c = new.community_row.get(community_id)
        if c is None or not old["flags"][j] & contract.FLAG_PRESENT or old["flags"][j] & contract.FLAG_DELETED:
            dropped += 1
            continue
        rec = old[j : j + 1].copy()
        rec["row"] = -1
        rec["community"] = c
        rec["author"] = new.user_row.get(fields.get(contract.LIVE_AUTHOR.encode(), b"").decode(), -1)
        if new[contract.COMMUNITY_PRIVATE_FILE][c]:  # never less private than either version says
            rec["flags"] |= contract.FLAG_PRIVATE
        vector = new.new_post_vectors(np.array([c]), rec["author"])[0]
        pipe.set(contract.post_key(new.version, post_id), contract.encode_posts(rec)[0])
        pipe.xadd(
            contract.live_stream_key(new.version),
            {
                contract.LIVE_POST: post_id,
                contract.LIVE_COMMUNITY: community_id,
                contract.LIVE_AUTHOR: fields.get(contract.LIVE_AUTHOR.encode(), b""),
                contract.LIVE_VECTOR: vector.astype("<f4").tobytes(),
                contract.LIVE_CREATED: int(rec["created_at"][0]),
            },
        )
        recent.setdefault(community_id, []).append((int(rec["created_at"][0]), post_id))
        carried += 1
    pipe.execute()
    # Live posts are newer than anything trained: they go to the head of their community's list.
    for community_id, posts in recent.items():
        key = contract.recent_key(new.version, community_id)
        ids = [p for _, p in sorted(posts, reverse=True)]
        merged = ids + [p for p in contract.decode_recent(client.get(key)) if p not in set(ids)]
        client.set(key, contract.encode_recent(merged[: contract.RECENT_PER_COMMUNITY]))
    return carried, dropped


def carry_removals(client: redis.Redis, version: str) -> int:
    """Posts moderators took out of feeds stay out in `version`: the removal
    list (contract.REMOVED_KEY, unversioned) is applied to the version's post records, and to its
    live stream so that workers honour it from memory while Redis is down. Idempotent;
    returns how many posts of the version were marked."""
    removed = [p.decode() for p in client.hkeys(contract.REMOVED_KEY)]
    if not removed:
        return 0
    key = contract.post_key
    records = contract.decode_posts(mget(client, [key(version, p) for p in removed]))
    off = contract.post_field_offset("flags")
    pipe = client.pipeline(transaction=False)
    marked = 0
    for post_id, rec in zip(removed, records):
        if not rec["flags"] & contract.FLAG_PRESENT:
            continue  # not in this version (a live post of another, not carried)
        if not rec["flags"] & contract.FLAG_REMOVED:
            pipe.setrange(key(version, post_id), off, bytes([int(rec["flags"]) | contract.FLAG_REMOVED]))
            pipe.xadd(contract.live_stream_key(version), {contract.LIVE_POST: post_id, contract.LIVE_REMOVED: "1"})
        marked += 1
    pipe.execute()
    return marked
