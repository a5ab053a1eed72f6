"""A MovieLens/Last.fm-like log in the documented schema: the real-log path, end to end.

Items are posts with a genre as community, created_at 0 (items are old), events carry
play counts in `weight` and no kind, and there is no communities.csv or memberships.csv:
the partial shape real public logs have once converted. Preferences are low-rank with a
power-law item popularity, so a user x item ALS has something real to find.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_catalogue_logs(
    out: Path,
    users: int = 600,
    items: int = 400,
    genres: int = 8,
    rank: int = 6,
    per_user: int = 40,
    seed: int = 3,
    days: int = 365,
) -> Path:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    genre = rng.integers(0, genres, items)
    genre_vec = rng.normal(0, 1, (genres, rank))
    item_vec = genre_vec[genre] + 0.7 * rng.normal(0, 1, (items, rank))
    user_vec = rng.normal(0, 1, (users, rank))
    popularity = np.log(rng.pareto(1.2, items) + 1.0)
    start = 1_600_000_000
    with open(out / "posts.csv", "w") as fh:
        fh.write("post_id,community_id,created_at\n")
        fh.writelines(f"i{i},g{genre[i]},0\n" for i in range(items))
    rows = []
    for u in range(users):
        logits = user_vec[u] @ item_vec.T / 1.5 + popularity
        p = np.exp(logits - logits.max())
        p /= p.sum()
        n = max(5, int(rng.lognormal(np.log(per_user), 0.5)))
        chosen = rng.choice(items, min(n, items // 2), replace=False, p=p)
        ts = np.sort(rng.integers(start, start + days * 86_400, len(chosen)))
        plays = 1 + rng.poisson(3 * p[chosen] / p[chosen].max())
        rows += [f"user{u},i{i},{t},{c}\n" for i, t, c in zip(chosen, ts, plays)]
    with open(out / "events.csv", "w") as fh:
        fh.write("user_id,post_id,ts,weight\n")
        fh.writelines(rows)
    return out
