"""A seeded synthetic micro-community world with its hidden truth.

The generative story (every step is vectorised so the default world takes seconds):
- communities have a topic, a power-law "pull" (many small groups, a few big ones) and
  are private with some probability (small groups more often);
- users prefer one or two topics (homophily) and join 1-5 communities, picked by topic
  preference times pull; each community gets moderators and trusted members;
- authors post in their communities, moderators and trusted members more, over `days`
  days; each author has a hidden skill (standing beyond the role: skilled authors write
  better posts wherever they post); a few spam accounts post low-quality posts into big
  public groups;
- engagements: a user opens one of their communities (by hidden affinity) or a public
  group of a topic they like, and looks at a fresh post there; whether they like,
  comment, share or save it depends on affinity, author trust, post quality and
  freshness; spam and bad posts draw hides and reports.
The hidden truth (user topic preferences, community topics, post quality, spam authors,
author skill, per-membership affinity) is written under truth/ for evaluation only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from core import contract
from core.flags import param
from training import schema
from training.csvio import write_csv

DAY = 86_400
EPOCH = 1_760_000_000  # a fixed start (Oct 2025) so worlds are reproducible to the byte


@dataclass
class WorldParams:
    users: int = param(20_000, "users")
    communities: int = param(1_200, "communities")
    posts: int = param(200_000, "posts")
    events: int = param(2_000_000, "engagement events")
    days: int = param(42, "days the world spans")
    topics: int = param(24, "hidden topics behind communities and tastes")
    private_fraction: float = param(0.2, "share of private communities")
    spam_fraction: float = param(0.02, "share of posts written by spam accounts")
    seed: int = param(7, "seed of the world")
    end: int = param(EPOCH + 42 * DAY, "unix time the world ends", cli=False)  # the CLI defaults it to now

    def times(self, scale: float) -> WorldParams:
        """These sizes times `scale` (the default world at scale 5 has 1M posts)."""
        return replace(
            self,
            users=max(20, int(self.users * scale)),
            communities=max(4, int(self.communities * scale)),
            posts=max(40, int(self.posts * scale)),
            events=max(200, int(self.events * scale)),
        )


@dataclass
class World:
    dataset: schema.Dataset
    community_topic: np.ndarray
    user_topic_pref: np.ndarray  # [users, topics]
    membership_affinity: np.ndarray  # hidden affinity per membership row
    post_quality: np.ndarray
    spam_users: np.ndarray  # bool [users]
    author_skill: np.ndarray  # float32 [users]: hidden standing as an author, beyond any role
    start: int
    end: int


def _pick(rng: np.random.Generator, cum: np.ndarray, n: int) -> np.ndarray:
    """Draw n indices from an unnormalised cumulative weight vector."""
    return np.searchsorted(cum, rng.random(n) * cum[-1], side="right").clip(0, len(cum) - 1)


def generate(params: WorldParams) -> World:
    rng = np.random.default_rng(params.seed)
    U, C, T = params.users, params.communities, params.topics
    start, end = params.end - params.days * DAY, params.end

    # Communities: topic, power-law pull, privacy.
    community_topic = rng.integers(0, T, C)
    pull = (rng.pareto(1.1, C) + 1.0) ** 1.6
    pull = np.minimum(pull, np.quantile(pull, 0.995))
    private = rng.random(C) < params.private_fraction * np.where(pull < np.median(pull), 1.5, 0.5)

    # Users: topic preferences concentrated on one or two topics (homophily).
    pref = rng.dirichlet(np.full(T, 0.15), U).astype(np.float32)
    spam_users = np.zeros(U, dtype=bool)
    n_spam = max(1, int(U * 0.004))
    spam_users[rng.choice(U, n_spam, replace=False)] = True

    # Memberships: k in 1..5 per user; each pick = topic by preference, then a community of
    # that topic by pull. Duplicates collapse, so some users end with fewer.
    k = rng.choice([1, 2, 3, 4, 5], U, p=[0.3, 0.3, 0.2, 0.12, 0.08])
    m_user = np.repeat(np.arange(U), k)
    pref_cum = np.cumsum(pref, axis=1)
    topic = (pref_cum[m_user] < rng.random(len(m_user))[:, None] * pref_cum[m_user, -1:]).sum(axis=1)
    topic = np.minimum(topic, T - 1)
    order = np.argsort(community_topic, kind="stable")
    sorted_topics = community_topic[order]
    m_comm = np.empty(len(m_user), dtype=np.int64)
    for t in range(T):
        rows = np.flatnonzero(topic == t)
        members = order[sorted_topics == t]
        if len(members) == 0:  # a topic without groups: fall back to any group
            members = order
        m_comm[rows] = members[_pick(rng, np.cumsum(pull[members]), len(rows))]
    pairs = np.unique(m_user.astype(np.int64) * C + m_comm)
    m_user, m_comm = (pairs // C).astype(np.int32), (pairs % C).astype(np.int32)
    # Every community has at least one member: its founder, a moderator.
    empty = np.setdiff1d(np.arange(C), m_comm)
    if len(empty):
        m_user = np.concatenate([m_user, rng.integers(0, U, len(empty)).astype(np.int32)])
        m_comm = np.concatenate([m_comm, empty.astype(np.int32)])
    n_m = len(m_user)
    role = np.where(
        rng.random(n_m) < 0.05,
        contract.ROLE_MODERATOR,
        np.where(rng.random(n_m) < 0.15, contract.ROLE_TRUSTED, contract.ROLE_MEMBER),
    ).astype(np.uint8)
    if len(empty):
        role[n_m - len(empty) :] = contract.ROLE_MODERATOR
    joined = (start - rng.integers(0, 365 * DAY, n_m)).astype(np.int64)
    # Hidden affinity of a member for their group: their taste for its topic plus noise.
    affinity = (pref[m_user, community_topic[m_comm]] + 0.3 * rng.random(n_m)).astype(np.float32)

    # Posts: community by activity (small groups post more per member), author among its
    # members weighted by role, time uniform over the window, quality ~ Beta.
    size = np.bincount(m_comm, minlength=C).astype(np.float64)
    activity = np.maximum(size, 1) ** 0.75 * rng.lognormal(0, 0.5, C)
    n_spam_posts = int(params.posts * params.spam_fraction)
    n_real = params.posts - n_spam_posts
    p_comm = _pick(rng, np.cumsum(activity), n_real)
    by_comm = np.argsort(m_comm, kind="stable")
    comm_start = np.searchsorted(m_comm[by_comm], np.arange(C))
    comm_count = np.bincount(m_comm, minlength=C)
    role_w = np.array([0, 1.0, 2.5, 3.0])[role[by_comm]]
    # Author within the community: weighted pick inside the community's slice.
    role_cum = np.cumsum(role_w)
    lo = comm_start[p_comm]
    hi = lo + comm_count[p_comm]
    base = np.where(lo > 0, role_cum[lo - 1], 0.0)
    target = base + rng.random(n_real) * (role_cum[hi - 1] - base)
    slot = np.clip(np.searchsorted(role_cum, target, side="right"), lo, hi - 1)
    p_author = m_user[by_comm[slot]]
    # Standing beyond the role: every user has a hidden skill as an author; skilled
    # authors write better posts everywhere, so a track record is real signal.
    author_skill = rng.normal(0.0, 1.0, U).astype(np.float32)
    base_q = rng.beta(4, 2, n_real)
    p_quality = 1 / (1 + np.exp(-(np.log(base_q / (1 - base_q)) + 0.8 * author_skill[p_author])))
    # Spam: spam accounts post into big public groups.
    public_big = np.flatnonzero(~private)
    spam_comm = public_big[_pick(rng, np.cumsum(pull[public_big]), n_spam_posts)]
    spam_author = rng.choice(np.flatnonzero(spam_users), n_spam_posts)
    post_comm = np.concatenate([p_comm, spam_comm]).astype(np.int32)
    post_author = np.concatenate([p_author, spam_author]).astype(np.int32)
    quality = np.concatenate([p_quality, rng.beta(1, 6, n_spam_posts)]).astype(np.float32)
    created = rng.integers(start, end, params.posts).astype(np.int64)
    deleted = rng.random(params.posts) < 0.01
    shuffle = rng.permutation(params.posts)
    post_comm, post_author, quality, created, deleted = (
        a[shuffle] for a in (post_comm, post_author, quality, created, deleted)
    )

    # Standing of each (author, community): role-based, used by the engagement model.
    trust_of_role = np.array([0.2, 0.5, 0.8, 0.9], dtype=np.float32)
    m_key = m_user.astype(np.int64) * C + m_comm
    key_order = np.argsort(m_key)
    post_key = post_author.astype(np.int64) * C + post_comm
    pos = np.clip(np.searchsorted(m_key[key_order], post_key), 0, n_m - 1)
    found = m_key[key_order][pos] == post_key
    author_role = np.where(found, role[key_order][pos], 0)
    author_trust = np.clip(trust_of_role[author_role] + 0.1 * np.tanh(author_skill[post_author]), 0, 1)
    author_trust[spam_users[post_author]] = 0.05

    # Events: sessions of (user, time, community) then a fresh post of that community.
    E = params.events
    user_activity = rng.lognormal(0, 1.0, U)
    e_user = _pick(rng, np.cumsum(user_activity), E).astype(np.int32)
    e_time = rng.integers(start + DAY // 2, end, E).astype(np.int64)
    # Community: 75% one of the user's own groups by hidden affinity, else a public group
    # of a liked topic (out-of-network discovery).
    u_first = np.searchsorted(m_user, np.arange(U))
    u_count = np.bincount(m_user, minlength=U)
    aff_cum = np.cumsum(affinity.astype(np.float64) ** 2)
    in_net = (rng.random(E) < 0.75) & (u_count[e_user] > 0)
    lo = u_first[e_user]
    hi = lo + np.maximum(u_count[e_user], 1)
    base = np.where(lo > 0, aff_cum[np.maximum(lo - 1, 0)], 0.0)
    target = base + rng.random(E) * (aff_cum[np.minimum(hi, len(aff_cum)) - 1] - base)
    slot = np.clip(np.searchsorted(aff_cum, target, side="right"), lo, hi - 1)
    e_comm = np.where(in_net, m_comm[np.minimum(slot, n_m - 1)], -1)
    out_rows = np.flatnonzero(~in_net)
    fav_topic = (pref_cum[e_user[out_rows]] < rng.random(len(out_rows))[:, None]).sum(axis=1)
    fav_topic = np.minimum(fav_topic, T - 1)
    pub_order = np.flatnonzero(~private)
    pub_order = pub_order[np.argsort(community_topic[pub_order], kind="stable")]
    pub_topics = community_topic[pub_order]
    for t in range(T):
        rows = out_rows[fav_topic == t]
        cands = pub_order[pub_topics == t]
        if len(cands) == 0:
            cands = pub_order
        e_comm[rows] = cands[_pick(rng, np.cumsum(pull[cands]), len(rows))]
    # Post: the newest post of that community created before (time - age), age ~ Exp(20h).
    age = rng.exponential(20 * 3600, E).astype(np.int64)
    post_order = np.lexsort((created, post_comm))
    comp = post_comm[post_order].astype(np.int64) * (end + DAY) + created[post_order]
    want = e_comm.astype(np.int64) * (end + DAY) + (e_time - age)
    idx = np.searchsorted(comp, want, side="right") - 1
    ok = idx >= 0
    idx = np.maximum(idx, 0)
    e_post = post_order[idx]
    ok &= post_comm[e_post] == e_comm
    ok &= ~deleted[e_post]
    e_user, e_post, e_time = e_user[ok], e_post[ok].astype(np.int32), e_time[ok]
    hours = (e_time - created[e_post]) / 3600.0
    e_time = np.maximum(e_time, created[e_post] + 60)

    # Kind: appeal from hidden affinity (topic taste), trust, quality and freshness.
    taste = pref[e_user, community_topic[post_comm[e_post]]]
    appeal = 1 / (1 + np.exp(-(4.0 * taste + 2.5 * quality[e_post] + 1.5 * author_trust[e_post] - 0.03 * hours - 3.2)))
    r = rng.random(len(e_user))
    kind = np.full(len(e_user), schema.KIND_CODE["view"], dtype=np.uint8)
    positive = r < appeal
    sub = rng.random(len(e_user))
    kind[positive] = np.select(
        [sub[positive] < 0.55, sub[positive] < 0.75, sub[positive] < 0.85],
        [schema.KIND_CODE["like"], schema.KIND_CODE["comment"], schema.KIND_CODE["share"]],
        schema.KIND_CODE["save"],
    )
    bad = (quality[e_post] < 0.25) & ~positive & (rng.random(len(e_user)) < 0.35)
    kind[bad] = np.where(rng.random(bad.sum()) < 0.7, schema.KIND_CODE["hide"], schema.KIND_CODE["report"])
    order = np.argsort(e_time, kind="stable")

    ds = schema.Dataset(
        user_ids=np.array([f"u{i}" for i in range(U)]),
        community_ids=np.array([f"c{i}" for i in range(C)]),
        community_private=private,
        m_user=m_user,
        m_community=m_comm,
        m_role=role,
        m_joined_at=joined,
        post_ids=np.array([f"p{i}" for i in range(params.posts)]),
        post_author=post_author,
        post_community=post_comm,
        post_created_at=created,
        post_deleted=deleted,
        e_user=e_user[order],
        e_post=e_post[order],
        e_kind=kind[order],
        e_ts=e_time[order],
        e_count=np.ones(len(order), dtype=np.float32),
    )
    return World(ds, community_topic, pref, affinity, quality, spam_users, author_skill, start, end)


def write_world(world: World, out_dir: Path, params: WorldParams) -> None:
    """Write the world in the documented CSV schema, plus truth/ beside it."""
    ds = world.dataset
    out_dir.mkdir(parents=True, exist_ok=True)
    role_name = {contract.ROLE_MEMBER: "member", contract.ROLE_TRUSTED: "trusted", contract.ROLE_MODERATOR: "moderator"}
    write_csv(
        out_dir / schema.COMMUNITIES_CSV,
        ("community_id", "is_private", "topic"),
        zip(ds.community_ids, ds.community_private.astype(int), world.community_topic),
    )
    write_csv(
        out_dir / schema.MEMBERSHIPS_CSV,
        schema.MEMBERSHIP_COLUMNS,
        zip(
            ds.user_ids[ds.m_user],
            ds.community_ids[ds.m_community],
            (role_name[r] for r in ds.m_role.tolist()),
            ds.m_joined_at,
        ),
    )
    write_csv(
        out_dir / schema.POSTS_CSV,
        ("post_id", "author_id", "community_id", "created_at", "deleted"),
        zip(
            ds.post_ids,
            ds.user_ids[ds.post_author],
            ds.community_ids[ds.post_community],
            ds.post_created_at,
            ds.post_deleted.astype(int),
        ),
    )
    kinds = np.array(schema.KINDS)
    write_csv(
        out_dir / schema.EVENTS_CSV,
        ("user_id", "post_id", "kind", "ts"),
        zip(ds.user_ids[ds.e_user], ds.post_ids[ds.e_post], kinds[ds.e_kind], ds.e_ts),
    )
    truth = out_dir / schema.TRUTH_DIR
    truth.mkdir(exist_ok=True)
    np.save(truth / "community_topic.npy", world.community_topic)
    np.save(truth / "user_topic_pref.npy", world.user_topic_pref)
    np.save(truth / "membership_affinity.npy", world.membership_affinity)
    np.save(truth / "post_quality.npy", world.post_quality)
    np.save(truth / "spam_users.npy", world.spam_users)
    np.save(truth / "author_skill.npy", world.author_skill)
    (truth / "params.json").write_text(json.dumps(asdict(params), indent=2))
