"""core/retrieval.py's in-network rule: the lazy queues give exactly the plain rule's answer
(each community's hottest and newest alternately, communities in turn, each post once, at
most `limit`), whatever the lists."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from core.retrieval import community_queue, in_network, round_robin


def plain_queue(hot, recent, per_list):
    out, seen = [], set()
    hot, recent = hot[:per_list], recent[:per_list]
    for i in range(max(len(hot), len(recent))):
        for lst in (hot, recent):
            if i < len(lst) and lst[i] not in seen:
                seen.add(lst[i])
                out.append(lst[i])
    return out


def plain_round_robin(queues, limit):
    out, seen = [], set()
    for i in range(max((len(q) for q in queues), default=0)):
        for q in queues:
            if i < len(q) and q[i] not in seen:
                seen.add(q[i])
                out.append(q[i])
                if len(out) >= limit:
                    return out
    return out


posts = st.lists(st.integers(0, 40), max_size=30)


@settings(max_examples=300, deadline=None)
@given(communities=st.lists(st.tuples(posts, posts), max_size=8), per_list=st.integers(0, 12), limit=st.integers(1, 60))
def test_lazy_in_network_rule_equals_the_plain_rule(communities, per_list, limit):
    lazy = round_robin([community_queue(h, r, per_list) for h, r in communities], limit)
    plain = plain_round_robin([plain_queue(h, r, per_list) for h, r in communities], limit)
    assert lazy == plain
    assert (
        list(community_queue(*communities[0], per_list)) == plain_queue(*communities[0], per_list)
        if communities
        else True
    )


@settings(max_examples=500, deadline=None)
@given(
    communities=st.lists(st.tuples(posts, posts), max_size=10), per_list=st.integers(0, 32), limit=st.integers(0, 80)
)
def test_the_services_in_network_rule_equals_the_lazy_one(communities, per_list, limit):
    lazy = round_robin([community_queue(h, r, per_list) for h, r in communities], limit)
    assert in_network(communities, per_list, limit) == lazy


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=40), limit=st.integers(1, 300))
def test_the_services_in_network_rule_on_distinct_ids_of_many_communities(sizes, limit):
    """The service's shape: many communities, distinct post ids, hot and recent lists
    that overlap within a community."""
    communities = []
    for c, (n_hot, n_recent) in enumerate(sizes):
        recent = [f"p{c}-{i}" for i in range(n_recent)]
        hot = [f"p{c}-{i}" for i in range(0, 2 * n_hot, 2)]  # every other one, some of them recent too
        communities.append((hot, recent))
    lazy = round_robin([community_queue(h, r, 50) for h, r in communities], limit)
    assert in_network(communities, 50, limit) == lazy
