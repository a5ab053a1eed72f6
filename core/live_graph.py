"""The live community graph of one user, and how it overrides the bundle's snapshot.

The graph RPCs write each user's joins, leaves, role changes, bans and mutes to one
Redis hash (contract.graph_key); Rank reads it in the user's round trip. The bundle's
user record holds the memberships training saw, as of the data's end. For each
community the newer of the two wins: a live entry applied after the bundle's data end
replaces the bundle's membership there (a leave ends it, a join starts it); an older
live entry is already part of what training learnt (make fold-log folded it) and the
bundle stands. So a publish can never resurrect a membership that ended live after its
data was cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core import contract
from core.scoring import MEMBER_WEIGHT


@dataclass
class LiveGraph:
    entries: dict[str, tuple[int, int]] = field(default_factory=dict)  # community id -> (state, at)
    muted: set[str] = field(default_factory=set)  # community ids
    created: bool = False  # the platform created this user through the API

    @property
    def empty(self) -> bool:
        return not self.entries and not self.muted and not self.created

    def banned(self, community_id: str) -> bool:
        entry = self.entries.get(community_id)
        return entry is not None and entry[0] == contract.GRAPH_BANNED

    def newer_than(self, data_end: int) -> dict[str, int]:
        """community id -> state, for entries the bundle's data cannot have seen."""
        return {c: state for c, (state, at) in self.entries.items() if at > data_end}


def parse(reply: dict[bytes, bytes] | list | None) -> LiveGraph:
    """An HGETALL reply (a dict, or a flat list from a raw pipeline) as a LiveGraph.
    A malformed entry raises contract.ContractError: the caller fails closed."""
    if not reply:
        return LiveGraph()
    if isinstance(reply, list):
        reply = dict(zip(reply[::2], reply[1::2]))
    graph = LiveGraph()
    for raw_key, raw_value in reply.items():
        key = raw_key.decode(errors="replace")
        if key.startswith(contract.GRAPH_COMMUNITY):
            graph.entries[key[len(contract.GRAPH_COMMUNITY) :]] = contract.decode_graph_entry(raw_value)
        elif key.startswith(contract.GRAPH_MUTED):
            graph.muted.add(key[len(contract.GRAPH_MUTED) :])
        elif key == contract.GRAPH_CREATED:
            graph.created = True
    return graph


def effective_roles(
    bundle_roles: dict[int, int], graph: LiveGraph, community_row: dict[str, int], data_end: int
) -> dict[int, int]:
    """community index -> role (> ROLE_NONE), the bundle's snapshot overridden by newer
    live entries. Communities the bundle does not know are left out (nothing of theirs
    can be ranked)."""
    roles = {c: r for c, r in bundle_roles.items() if r > contract.ROLE_NONE}
    for community_id, state in graph.newer_than(data_end).items():
        c = community_row.get(community_id)
        if c is None:
            continue
        if contract.ROLE_MEMBER <= state <= contract.ROLE_MODERATOR:
            roles[c] = state
        else:  # left or banned
            roles.pop(c, None)
    return roles


def adjusted_weights(weights: dict[int, float], before: dict[int, int], after: dict[int, int]) -> dict[int, float]:
    """The community_weight feature's input after live membership changes: membership's
    share (MEMBER_WEIGHT) moves with the membership, the engagement part stays."""
    out = dict(weights)
    for c in set(before) | set(after):
        delta = (MEMBER_WEIGHT if c in after else 0.0) - (MEMBER_WEIGHT if c in before else 0.0)
        if delta:
            out[c] = max(out.get(c, 0.0) + delta, 0.0)
    return out
