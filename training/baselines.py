"""The rankers a user would pick instead of nichefeed, each tuned on the inner split.

Every baseline scores the whole catalogue for a batch of users (a dense matrix); the
evaluation then hides what the user may not or need not see and takes the top K, the same
for every method. What each one is:
- random; most_popular (positive engagement ever);
- hot_global: engagement decayed by a half-life (trending);
- hot_in_communities: the same, in the communities the user engages with, weighted by
  the user's weight there to a power ("hot in your groups", what community platforms
  ship by default); posts elsewhere follow, by hotness;
- newest_in_communities: chronological, newest first, in the user's communities;
- active_in_communities: latest activity first in the user's communities (a thread
  bumped by a new reply or like comes back to the top), the default order of forum
  software and of Q&A sites' "active" tab;
- newest_from_followed: a "following" feed: posts by the authors the user engaged with
  (among their newest engaged posts), most engaged-with author first, newest first among
  equals; then newest in the user's communities;
- item_knn: item-based collaborative filtering, cosine similarity on co-engagement summed
  over the user's recent engagements;
- ease: EASE (Steck 2019), a closed-form item-item model, on the most engaged items when
  the catalogue is large;
- plain_als: implicit ALS on user x post engagement with its own tuned factors and alpha,
  each pair's summed positive weight compressed by log(1 + w) as the ALS stage's is: raw
  play counts as confidence handicapped it on Last.fm (0.045 against 0.053 NDCG@10).
Tuning: each baseline's settings are measured on the inner split (the protocol shifted
back one window inside the training data) and the best NDCG@10 wins; the hot grids are
fixed and reach past their optima, EASE's lambda and plain ALS's (factors, alpha) are
searched along ladders until the best is bracketed (`bracketed`: a fixed three-point ALS
grid left plain ALS at its edge on every real log, and on Last.fm 0.012 NDCG@10 below its
optimum). Every setting measured and the choices are in the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from training.als import fit_als
from training.neighbours import history_matrix
from training.params import AlsParams
from training.schema import Dataset
from training.state import WorldState, log_aggregates

ScoreFn = Callable[[np.ndarray], np.ndarray]  # user rows -> [len(users), len(catalogue)] scores

# Fair tuning brackets the optimum: on a forum whose threads live for hours 1 h wins, so
# the grid reaches below it; tuned on weeks, Reddit's last 70 days picked 0.25 h and
# Last.fm's global hot 256 h, then the grid's ends, so it reaches 0.125 h and 1024 h.
HOT_HALF_LIVES_H = (0.125, 0.25, 0.5, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0)
# Powers reach far enough that "my heaviest group first, then hotness" is on the grid: on
# the default world and on mailing lists the inner split picks the largest power offered;
# and down to 0: "hot among my groups' posts", unweighted (Reddit's last 70 days and the
# Urho3D forum picked 0.5 and 0.25 when each was the grid's end).
COMMUNITY_POWERS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0)
# EASE's lambda and plain ALS's (factors, alpha) are searched until the optimum is
# bracketed: start from these, then step along the ladder beyond whichever tried value is
# best while it has an untried neighbour (the best at a ladder's end is the end's).
EASE_LAMBDAS = (100.0, 500.0)
EASE_LADDER = (4.0, 20.0, 100.0, 500.0, 2500.0, 12500.0, 62500.0)
EASE_MAX_ITEMS = 3000  # a dense item x item inverse grows with the cube: beyond this, minutes
ALS_GRID = ((32, 1.0), (64, 1.0), (32, 10.0))  # (factors, alpha) tried first
ALS_FACTORS = (4, 8, 16, 32, 64, 128, 256)
ALS_ALPHAS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
TUNE_ITERATIONS = 8  # ALS sweeps while comparing grid points (the chosen one is fitted in full)
OUTSIDE = 1e-6  # posts outside the user's communities still rank, after every inside one
COLD = np.float32(-1e30)  # a log-score below every real one, still finite (ranked, not hidden)


@dataclass
class BaselineParams:
    """The tuned setting of every baseline (chosen on the inner split)."""

    hot_global_half_life_h: float = 24.0
    hot_half_life_h: float = 24.0  # hot_in_communities, and the pipeline's hot features
    community_power: float = 1.0
    ease_lambda: float = 200.0
    als_factors: int = 64
    als_alpha: float = 1.0
    # The windows the hot feeds were tuned on: [start, users judged], newest first.
    hot_windows: list = field(default_factory=list)
    # The pipeline's hot features' half-life: hot_in_communities' best on the inner split
    # itself. Where the hot feeds are tuned on other windows (a sparse log's weeks), the
    # pipeline keeps this one: with the weeks' choice MovieLens lost -0.0155 [-0.0309,
    # -0.0005] NDCG@10 and the 16 Stack Exchange sites gained a noise-level +0.011.
    pipeline_hot_half_life_h: float = 24.0
    tuning: dict = field(default_factory=dict)  # every grid point's inner NDCG@10


@dataclass
class RankingWorld:
    """What a baseline may look at when ranking at `as_of`: engagement before it."""

    ds: Dataset
    state: WorldState
    train: np.ndarray  # bool mask over events: before as_of
    catalogue: np.ndarray
    engine: str = "implicit"  # whose aggregations give the hotness (training/state.py log_aggregates)
    _hot: dict = field(default_factory=dict)
    _log: object = None  # the engine's aggregations as of as_of, made on first use

    @property
    def as_of(self) -> int:
        return self.state.as_of

    def hot(self, half_life_h: float) -> np.ndarray:
        """The catalogue's hotness at as_of with this half-life (computed once), by the
        engine that computed the state: on Spark the events stay there."""
        if half_life_h not in self._hot:
            if self._log is None:
                self._log = log_aggregates(self.ds, self.as_of, self.engine)
            self._hot[half_life_h] = self._log.hot(half_life_h)[self.catalogue]
        return self._hot[half_life_h]


def popularity(w: RankingWorld) -> ScoreFn:
    pop = w.state.positives[w.catalogue]
    return lambda b: np.broadcast_to(pop, (len(b), len(pop))).copy()


def hot_global(w: RankingWorld, half_life_h: float) -> ScoreFn:
    hot = w.hot(half_life_h)
    return lambda b: np.broadcast_to(hot, (len(b), len(hot))).copy()


def hot_in_communities(w: RankingWorld, half_life_h: float, power: float) -> ScoreFn:
    # hotness x weight^power, ranked by its logarithm: the same order, and no overflow
    # when a large power (a near-lexicographic "my heaviest group first") meets a large
    # weight. Posts nobody engaged with score COLD, all tied, as 0 ties in the product.
    hot = w.hot(half_life_h)
    cold = hot <= 0
    # COLD absorbs any lift added to it (float32's step at 1e30 is ~1e23), so cold posts
    # come out COLD from the one addition below, with no separate masking pass.
    log_hot = np.where(cold, COLD, np.log(np.where(cold, 1.0, hot))).astype(np.float32)
    comm = w.ds.post_community[w.catalogue]
    weights = w.state.community_weight

    def fn(b: np.ndarray) -> np.ndarray:
        uw = np.asarray(weights[b].todense(), dtype=np.float64)  # [users, communities]
        log_lift = np.where(uw > 0, power * np.log(np.maximum(uw, 1e-9)), np.log(OUTSIDE)).astype(np.float32)
        # take, not log_lift[:, comm]: fancy indexing of the columns returns a transposed
        # layout, which made top_k's row passes strided (10x slower: most of the 27 s of
        # CPU a default-world training spent selecting the top 10).
        out = log_lift.take(comm, axis=1)
        out += log_hot[None, :]
        return out

    return fn


def latest_in_communities(w: RankingWorld, times: np.ndarray) -> ScoreFn:
    """The user's communities' posts, the latest `times` (one per catalogue post) first;
    the rest after, all tied."""
    times = times.astype(np.float64)
    comm = w.ds.post_community[w.catalogue]
    weights = w.state.community_weight
    floor = times.min() if len(times) else 0.0
    # The float32 score the evaluation ranks, computed once per post (not per user).
    score = (times - floor + 1.0).astype(np.float32)

    def fn(b: np.ndarray) -> np.ndarray:
        inside = np.asarray(weights[b].todense()).take(comm, axis=1) > 0  # C order: see hot_in_communities
        return np.where(inside, score[None, :], np.float32(0.0))

    return fn


def newest_in_communities(w: RankingWorld) -> ScoreFn:
    return latest_in_communities(w, w.ds.post_created_at[w.catalogue])


def active_in_communities(w: RankingWorld) -> ScoreFn:
    """Latest activity first (the state's last_active: newest positive engagement, else
    creation), in the user's communities; the rest after."""
    return latest_in_communities(w, w.state.last_active[w.catalogue])


FOLLOW_LEVELS = 7  # tie counts above this rank alike (keeps the float32 score's recency exact)


def newest_from_followed(w: RankingWorld) -> ScoreFn:
    """The "following" feed social platforms ship, as a tie to an author is read here: how
    many of the user's newest engaged posts (the state's history, what the pipeline's
    author_tie feature reads) that author wrote. Followed authors' posts first, by tie and
    then newest; then newest in the user's communities; then the rest, newest first."""
    n = len(w.catalogue)
    created = w.ds.post_created_at[w.catalogue]
    # float32 like every score the evaluation ranks, and 0.99 x a rank in (0, 1): a level
    # (at most 1 + FOLLOW_LEVELS) plus it keeps the order exact up to about a million posts.
    recency = np.empty(n, np.float32)
    recency[np.argsort(created, kind="stable")] = 0.99 * (np.arange(n) + 1.0) / (n + 1.0)  # newest highest
    comm = w.ds.post_community[w.catalogue]
    author = w.ds.post_author[w.catalogue]
    known = author >= 0
    weights = w.state.community_weight
    history = w.state.history
    n_users = w.ds.n_users

    def fn(b: np.ndarray) -> np.ndarray:
        h = history[b]  # [batch, HISTORY] post rows, -1 pads
        rows, cols = np.nonzero(h >= 0)
        written = w.ds.post_author[h[rows, cols]]
        ok = written >= 0
        # duplicate (user, author) entries sum: how many of the history posts each wrote
        ties = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (rows[ok], written[ok])), shape=(len(b), n_users))
        # One [batch, catalogue] float32 array, filled in place (the evaluation scores 256
        # users at a time; at a million posts each such array is 1 GB).
        score = np.zeros((len(b), n), np.float32)
        score[:, known] = ties[:, author[known]].toarray()
        np.minimum(score, FOLLOW_LEVELS, out=score)
        followed = score > 0
        score[followed] += 1.0  # followed authors' posts at levels 2.., by tie
        inside = np.asarray(weights[b].todense()).take(comm, axis=1) > 0
        score[inside & ~followed] = 1.0  # then the user's communities, then the rest at 0
        score += recency[None, :]  # newest first within a level, never past the next level
        return score

    return fn


def item_knn(w: RankingWorld) -> ScoreFn:
    """Item-based collaborative filtering: a post scores the summed cosine similarity
    (on co-engagement) to the user's recent engagements (the state's history: each user's
    50 newest engaged posts, which either engine's state holds, so no event is read here).
    Computed through the users (H[b] Hn' Hn, Hn = H with unit item columns) so the post x
    post matrix is never built."""
    H = history_matrix(w.state.history, w.ds.n_posts)
    norms = np.sqrt(np.asarray(H.sum(axis=0)).ravel()) + 1e-9
    Hn = H.multiply(1.0 / norms[None, :]).tocsr()
    HnT = Hn.T.tocsr()
    Hn_cat = Hn[:, w.catalogue].tocsr()

    def fn(b: np.ndarray) -> np.ndarray:
        via_users = Hn[b] @ HnT  # [batch, users]: how alike the batch's histories and each user's are
        return np.asarray((via_users @ Hn_cat).todense())

    return fn


@dataclass
class EaseGram:
    """EASE's item x item Gram matrix over the most engaged catalogue items, computed
    once and solved for each lambda."""

    cols: np.ndarray  # catalogue columns the model covers
    X: sp.csr_matrix  # users x those items, binary
    G: np.ndarray  # X'X, float64


def ease_gram(w: RankingWorld) -> EaseGram | None:
    pos = w.train & (w.ds.event_weights() > 0)
    X = sp.csr_matrix(
        (np.ones(int(pos.sum()), np.float32), (w.ds.e_user[pos], w.ds.e_post[pos])), shape=(w.ds.n_users, w.ds.n_posts)
    )
    X.data[:] = 1.0
    if w.ds.events_user_sample:  # the driver holds a sample: the counts and the Gram matrix on Spark
        from training.spark.baselines import ease_gram_on_spark

        cols, G = ease_gram_on_spark(w.ds, w.as_of, w.catalogue, EASE_MAX_ITEMS)
        return EaseGram(cols, X[:, w.catalogue[cols]].tocsr(), G) if len(cols) else None
    counts = np.asarray(X[:, w.catalogue].sum(axis=0)).ravel()
    engaged = np.flatnonzero(counts > 0)
    if len(engaged) == 0:
        return None
    cols = engaged[np.argsort(-counts[engaged], kind="stable")[:EASE_MAX_ITEMS]]
    Xc = X[:, w.catalogue[cols]].tocsr()
    return EaseGram(cols, Xc, (Xc.T @ Xc).toarray().astype(np.float64))


def ease(w: RankingWorld, lam: float, gram: EaseGram | None = None) -> ScoreFn | None:
    """EASE over the most engaged catalogue items (at most EASE_MAX_ITEMS); other items
    score below every one of them."""
    gram = gram or ease_gram(w)
    if gram is None:
        return None
    G = gram.G.copy()
    G[np.diag_indices_from(G)] += lam
    P = np.linalg.inv(G)
    B = (-P / np.diag(P)[None, :]).astype(np.float32)
    np.fill_diagonal(B, 0.0)
    n_cat, cols, Xc = len(w.catalogue), gram.cols, gram.X

    def fn(b: np.ndarray) -> np.ndarray:
        out = np.full((len(b), n_cat), -1e9, np.float32)
        out[:, cols] = np.asarray(Xc[b].todense()) @ B
        return out

    return fn


def plain_als(w: RankingWorld, als: AlsParams) -> ScoreFn:
    """implicit ALS on the user x post matrix of positive engagement (log(1 + summed
    weight), as training/als.py compresses the ALS stage's); MLlib's when the driver holds
    a sample of the users' events (training/spark/baselines.py)."""
    if w.ds.events_user_sample:
        from training.spark.baselines import plain_als_factors_on_spark

        U, V = plain_als_factors_on_spark(w.ds, w.as_of, als)
    else:
        U, V = fit_als(plain_als_matrix(w.ds, w.train), als)
    Vc = V[w.catalogue]
    return lambda b: U[b] @ Vc.T


def plain_als_matrix(ds: Dataset, train: np.ndarray) -> sp.csr_matrix:
    """users x posts: log(1 + the summed weight of each pair's positive events under train).
    A play count of 10,000 is not 10,000 times the evidence of one play: raw, such counts
    held plain ALS to 0.045 NDCG@10 on Last.fm, compressed it scores 0.053."""
    pos = train & (ds.event_weights() > 0)
    m = sp.csr_matrix(
        (ds.event_weights()[pos].astype(np.float32), (ds.e_user[pos], ds.e_post[pos])),
        shape=(ds.n_users, ds.n_posts),
    )
    m.sum_duplicates()
    m.data = np.log1p(m.data)
    return m


def build(w: RankingWorld, p: BaselineParams, als: AlsParams) -> dict[str, ScoreFn | None]:
    """Every baseline's score function at this world, with the tuned settings."""
    rng = np.random.default_rng(als.seed)
    n = len(w.catalogue)

    def random(b: np.ndarray) -> np.ndarray:
        return rng.random((len(b), n))

    random.draws_in_order = True  # one generator across batches: rank them in order
    return {
        "random": random,
        "most_popular": popularity(w),
        "hot_global": hot_global(w, p.hot_global_half_life_h),
        "hot_in_communities": hot_in_communities(w, p.hot_half_life_h, p.community_power),
        "newest_in_communities": newest_in_communities(w),
        "active_in_communities": active_in_communities(w),
        "newest_from_followed": newest_from_followed(w),
        "item_knn": item_knn(w),
        "ease": ease(w, p.ease_lambda),
        "plain_als": plain_als(w, replace(als, factors=p.als_factors, alpha=p.als_alpha)),
    }


Measure = Callable[[ScoreFn], float]  # a score function -> its mean NDCG@10 over the measure's users


def tune(
    w: RankingWorld,
    measure: Measure,
    als: AlsParams,
    recent: list[tuple[RankingWorld, Measure]] | None = None,
) -> BaselineParams:
    """Each baseline's grid on the inner world; `measure` gives a score function's NDCG@10.

    The hot feeds' settings are measured on `recent` instead when given: windows of the
    evaluation's own length, pooled (each window's measure weighted by its users). A
    half-life is chosen for a horizon: on a sparse log the inner split is widened to
    weeks or months, and a half-life fitted to months of engagement is not the one that
    ranks next week's best."""
    p = BaselineParams()
    grid: dict[str, dict[str, float]] = {}
    recent = recent or [(w, measure)]
    judged = sum(len(m.users) for _, m in recent)
    p.hot_windows = [[int(rw.as_of), len(m.users)] for rw, m in recent]

    def pooled(make: Callable[[RankingWorld], ScoreFn]) -> float:
        if judged == 0:
            return 0.0
        return sum(m(make(rw)) * len(m.users) for rw, m in recent) / judged

    def best(name: str, options: dict[str, Callable[[], ScoreFn | None]]) -> str:
        values = {}
        for key, make in options.items():
            fn = make()
            values[key] = measure(fn) if fn is not None else float("-inf")
        grid[name] = {k: round(v, 5) for k, v in values.items()}
        return first_best(values)

    def best_recent(name: str, options: dict[str, Callable[[RankingWorld], ScoreFn]]) -> str:
        values = {key: pooled(make) for key, make in options.items()}
        grid[name] = {k: round(v, 5) for k, v in values.items()}
        return first_best(values)

    h = best_recent("hot_global", {f"{hl:g}h": (lambda rw, hl=hl: hot_global(rw, hl)) for hl in HOT_HALF_LIVES_H})
    p.hot_global_half_life_h = float(h[:-1])
    options = {
        f"{hl:g}h^{pw:g}": (lambda rw, hl=hl, pw=pw: hot_in_communities(rw, hl, pw))
        for hl in HOT_HALF_LIVES_H
        for pw in COMMUNITY_POWERS
    }
    h, pw = best_recent("hot_in_communities", options).split("^")
    p.hot_half_life_h, p.community_power = float(h[:-1]), float(pw)
    p.pipeline_hot_half_life_h = p.hot_half_life_h
    if len(recent) > 1 or recent[0][0] is not w:
        inner = {key: (lambda make=make: make(w)) for key, make in options.items()}
        p.pipeline_hot_half_life_h = float(best("hot_in_communities_inner_split", inner).split("^")[0][:-1])
    gram = ease_gram(w)
    values = bracketed(
        lambda i: ease(w, EASE_LADDER[i], gram),
        [(EASE_LADDER.index(lam),) for lam in EASE_LAMBDAS],
        (len(EASE_LADDER),),
        measure,
    )
    grid["ease"] = {f"{EASE_LADDER[i]:g}": round(v, 5) for (i,), v in values.items()}
    p.ease_lambda = EASE_LADDER[first_best(values)[0]]
    # Settings are compared at the pipeline's own tuning sweeps; the chosen one is fitted
    # in full at each split point, as the pipeline's is.
    sweeps = min(als.iterations, TUNE_ITERATIONS)
    values = bracketed(
        lambda i, j: plain_als(w, replace(als, factors=ALS_FACTORS[i], alpha=ALS_ALPHAS[j], iterations=sweeps)),
        [(ALS_FACTORS.index(f), ALS_ALPHAS.index(a)) for f, a in ALS_GRID],
        (len(ALS_FACTORS), len(ALS_ALPHAS)),
        measure,
    )
    grid["plain_als"] = {f"{ALS_FACTORS[i]}x{ALS_ALPHAS[j]:g}": round(v, 5) for (i, j), v in values.items()}
    i, j = first_best(values)
    p.als_factors, p.als_alpha = ALS_FACTORS[i], ALS_ALPHAS[j]
    p.tuning = grid
    return p


def first_best(values: dict) -> object:
    """The best setting (a key of values); among equals the one tried first."""
    return max(values, key=lambda k: (values[k], -list(values).index(k)))


def bracketed(
    make: Callable[..., ScoreFn | None],
    start: list[tuple[int, ...]],
    shape: tuple[int, ...],
    measure: Callable[[ScoreFn], float],
) -> dict[tuple[int, ...], float]:
    """A greedy search on a grid of ladder positions: measure the start points, then every
    untried neighbour (one step along one ladder) of the best point so far, until the best
    has none left. The optimum it returns is bracketed: each neighbour of it was measured
    and scored no higher (or it sits at a ladder's end). When every start point scores the
    same (the pipeline's ALS stage alone on a feed where it finds nothing: 0 for all), the
    first is kept without a walk."""
    values: dict[tuple[int, ...], float] = {}

    def at(point: tuple[int, ...]) -> None:
        fn = make(*point)
        values[point] = measure(fn) if fn is not None else float("-inf")

    for point in start:
        at(point)
    if len(start) > 1 and len(set(values.values())) == 1:
        return values  # every start point alike: the measure cannot tell settings apart here
    while True:
        best = first_best(values)
        around = [
            best[:d] + (best[d] + step,) + best[d + 1 :]
            for d in range(len(shape))
            for step in (-1, 1)
            if 0 <= best[d] + step < shape[d]
        ]
        untried = [q for q in around if q not in values]
        if not untried:
            return values
        for q in untried:
            at(q)
