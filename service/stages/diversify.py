"""Diversify: re-rank for diversity so that one group or one author cannot flood the feed,
and small active groups get a fair share of it.

1. Caps, greedy by score: a candidate is taken while its community and its author are
   under their caps; the rest wait and only fill the feed when nothing else is left.
   A cap of 0 turns that cap off.
2. Fair share: a post is from a *small active group* when its community has at most
   `small_group_members` members and the post is at most `active_days` old. At least
   ceil(small_group_share * limit) slots go to such posts whenever that many are
   candidates: the best post of each small group first, in turn (so several groups get a
   slot before any gets two), replacing the lowest-scored other posts. A big group's
   viral post outscores a ten-member club's post on engagement alone; this keeps the
   club visible. A share of 0 turns it off, and so does community_share 0 (community
   diversity off altogether: neither a ceiling for big groups nor a floor for small ones).
3. Moderators' rules: posts pinned in the user's groups come first, whatever their
   score; a community whose moderators capped its share of non-members' feeds never
   takes more than that share of a non-member's feed (the rest of it is dropped, not
   deferred).
The feed is then ordered by score (pins first, posts that only filled in past the caps last).
"""

from __future__ import annotations

import math

import numpy as np

from core import contract
from service.pipeline import RankContext


class DiversifyCandidates:
    name = "diversify"

    def __init__(
        self,
        community_share: float = 0.3,
        per_author: int = 2,
        small_group_members: int = 50,
        small_group_share: float = 0.2,
        active_days: float = 3.0,
    ):
        self.community_share = community_share
        self.per_author = per_author
        self.small_group_members = small_group_members
        self.small_group_share = small_group_share
        self.active_s = active_days * 86_400

    def run(self, ctx: RankContext) -> None:
        if ctx.size == 0:
            return
        limit = ctx.query.limit
        order = np.argsort(-ctx.scores, kind="stable").tolist()
        comm = ctx.posts["community"].tolist()
        author = ctx.posts["author"].tolist()
        caps = _Caps(
            max(2, math.ceil(self.community_share * limit)) if self.community_share > 0 else 0,
            self.per_author,
            {c: math.floor(share * limit) for c, share in ctx.caps.items() if c not in ctx.user_roles},
        )
        pinned = [pos for pos, p in enumerate(ctx.post_ids) if p in ctx.pinned][:limit] if ctx.pinned else []
        first = set(pinned)
        taken: list[int] = list(pinned)
        for pos in pinned:
            caps.add(comm[pos], author[pos])
        deferred = caps.greedy(order, comm, author, taken, first, limit)
        if self.small_group_share > 0 and self.community_share > 0:
            taken = self._fair_share(ctx, order, comm, author, taken, caps, limit, first)
        taken.sort(key=lambda pos: (pos not in first, -ctx.scores[pos]))
        chosen = set(taken)
        fill = []
        for pos in deferred:
            if len(taken) + len(fill) >= limit:
                break
            if pos not in chosen and not caps.hard_capped(comm[pos]):
                fill.append(pos)
                caps.add(comm[pos], author[pos])
        ctx.take(np.array((taken + fill)[:limit], dtype=np.int64))

    def small_active(self, ctx: RankContext) -> np.ndarray:
        size = np.asarray(ctx.bundle[contract.COMMUNITY_SIZE_FILE])[ctx.posts["community"]]
        return (size <= self.small_group_members) & (ctx.posts["created_at"] >= ctx.now - self.active_s)

    def _fair_share(
        self,
        ctx: RankContext,
        order: list[int],
        comm: list[int],
        author: list[int],
        taken: list[int],
        caps: _Caps,
        limit: int,
        pinned: set[int],
    ) -> list[int]:
        small = self.small_active(ctx)
        want = min(math.ceil(self.small_group_share * limit), int(np.count_nonzero(small)), limit)
        eligible = small.tolist()  # Python bools: indexed per candidate below, in loops
        have = sum(1 for pos in taken if eligible[pos])
        if have >= want:
            return taken
        chosen = set(taken)
        # Round robin over small groups, each group's posts best first, groups by their best.
        queues: dict[int, list[int]] = {}
        for pos in order:
            if eligible[pos] and pos not in chosen:
                queues.setdefault(comm[pos], []).append(pos)
        victims = [pos for pos in reversed(taken) if not eligible[pos] and pos not in pinned]  # lowest score first
        room = limit - len(taken)
        out = list(taken)
        added = 0
        while have + added < want and queues and (room > 0 or victims):
            for c in list(queues):
                if have + added >= want or (room <= 0 and not victims):
                    break
                pos = queues[c].pop(0)
                if not queues[c]:
                    del queues[c]
                # The post replaces the lowest-scored other post when the feed is full:
                # that post's place under the caps is given back first, so a small group
                # whose own non-eligible post is the one replaced is not held at its cap
                # by a post no longer in the feed.
                victim = victims[0] if room <= 0 else None
                if victim is not None:
                    caps.remove(comm[victim], author[victim])
                if not caps.allows(comm[pos], author[pos]):
                    if victim is not None:
                        caps.add(comm[victim], author[victim])
                    continue
                if victim is not None:
                    out.remove(victims.pop(0))
                else:
                    room -= 1
                out.append(pos)
                caps.add(comm[pos], author[pos])
                added += 1
        return out


class _Caps:
    def __init__(self, per_community: int, per_author: int, hard: dict[int, int] | None = None):
        self.per_community = per_community
        self.per_author = per_author
        self.hard = hard or {}  # community -> most posts it may have (moderators' rule)
        self.communities: dict[int, int] = {}
        self.authors: dict[int, int] = {}

    def hard_capped(self, community: int) -> bool:
        if not self.hard:  # the common case: no moderator capped anything
            return False
        cap = self.hard.get(community)
        return cap is not None and self.communities.get(community, 0) >= cap

    def allows(self, community: int, author: int) -> bool:
        if self.hard_capped(community):
            return False
        if self.per_community and self.communities.get(community, 0) >= self.per_community:
            return False
        return not (self.per_author and author >= 0 and self.authors.get(author, 0) >= self.per_author)

    def add(self, community: int, author: int) -> None:
        self.communities[community] = self.communities.get(community, 0) + 1
        self.authors[author] = self.authors.get(author, 0) + 1

    def remove(self, community: int, author: int) -> None:
        self.communities[community] -= 1
        self.authors[author] -= 1

    def greedy(
        self, order: list[int], comm: list[int], author: list[int], taken: list[int], skip: set[int], limit: int
    ) -> list[int]:
        """Walk `order` appending to `taken` each position under its caps (counted as
        taken) until `limit`; positions in `skip` and hard-capped ones are passed over,
        the others over a cap are returned, in order. What allows/add do one call at a
        time, inlined: the walk often goes 100+ candidates deep (deferred ones), and the
        method calls were most of the stage's time."""
        per_community, per_author, hard = self.per_community, self.per_author, self.hard
        communities, authors = self.communities, self.authors
        deferred: list[int] = []
        for pos in order:
            if len(taken) == limit:
                break
            if pos in skip:
                continue
            c, a = comm[pos], author[pos]
            if hard and self.hard_capped(c):
                continue
            if (per_community and communities.get(c, 0) >= per_community) or (
                per_author and a >= 0 and authors.get(a, 0) >= per_author
            ):
                deferred.append(pos)
            else:
                taken.append(pos)
                communities[c] = communities.get(c, 0) + 1
                authors[a] = authors.get(a, 0) + 1
        return deferred
