"""core/retrieval.py's in-network rule (the service's and training's, one function) gives
exactly the plain rule's answer (each community's hottest and newest alternately,
communities in turn, each post once, at most `limit`), whatever the lists."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from core.retrieval import in_network


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


@settings(max_examples=500, deadline=None)
@given(
    communities=st.lists(st.tuples(posts, posts), max_size=10), per_list=st.integers(0, 32), limit=st.integers(0, 80)
)
def test_the_in_network_rule_equals_the_plain_rule(communities, per_list, limit):
    plain = plain_round_robin([plain_queue(h, r, per_list) for h, r in communities], limit) if limit > 0 else []
    assert in_network(communities, per_list, limit) == plain


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=40), limit=st.integers(1, 300))
def test_the_in_network_rule_on_distinct_ids_of_many_communities(sizes, limit):
    """The service's shape: many communities, distinct post ids, hot and recent lists
    that overlap within a community."""
    communities = []
    for c, (n_hot, n_recent) in enumerate(sizes):
        recent = [f"p{c}-{i}" for i in range(n_recent)]
        hot = [f"p{c}-{i}" for i in range(0, 2 * n_hot, 2)]  # every other one, some of them recent too
        communities.append((hot, recent))
    assert in_network(communities, 50, limit) == plain_round_robin(
        [plain_queue(h, r, 50) for h, r in communities], limit
    )
