"""Per-(user, post) features and the learned scorer.

This is the one scoring function: the service calls it on the hot path
(service/stages/score.py) and training calls it offline to fit the scorer and to
evaluate it (training/features.py), so what was measured is what serves (no
train/serve skew). The scorer is a linear model over standardised features (a logistic
model's logit), LightGBM lambdarank trees, or the two blended (the default), stored as
JSON in the bundle. A row's score never depends on the other rows scored beside it, so
training's evaluation (every user's candidates in one call) gives each request what the
service gives it alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from core.tree_ensemble import TreeEnsemble

FEATURES = (
    "affinity",  # user vector . post vector (community-affinity embeddings)
    "community_affinity",  # user vector . community vector: how much the user likes the group
    "is_member",  # the user belongs to the post's community
    "user_standing",  # the user's own role there (member < trusted < moderator), 0 outside
    "author_trust",  # the author's standing in that community, 0..1
    "freshness",  # exp(-age / FRESHNESS_HOURS)
    "log_age_hours",  # log(1 + age in hours): freshness beyond the first day
    "engagement_rate",  # weighted positives per view, smoothed
    "engagement_per_member",  # positives normalised by community size (small groups count)
    "negative_rate",  # hides and reports per view, smoothed
    "log_community_size",
    "hot",  # log(1 + the post's engagement decayed by the model's half-life): hot now
    "community_weight",  # log(1 + the user's engagement in the post's community, + 1 if a member)
    "hot_in_my_communities",  # log(1 + hot * community weight): "hot in your groups"
    "co_engagement",  # log(1 + summed similarity to the user's newest engaged posts): item kNN
    # People follow people: on a forum a reply goes to a thread by someone the user has
    # answered before far more often than to a stranger's (7x on the Reddit log, 4x on
    # the mailing lists), and the embeddings cannot see it for a fresh post.
    "author_tie",  # log(1 + how many of the user's newest engaged posts this author wrote)
    # Relative to the other candidates of the same request (<= 0: the best of them is 0).
    # How hot a week is moves (an exam week on a student forum, a holiday), and a
    # scorer fitted on last week's absolute levels misreads this week's; the gap to the
    # hottest post in front of this user carries over from week to week.
    "hot_in_my_communities_vs_best",  # hot_in_my_communities minus its request maximum
    "hot_vs_best",  # hot minus its request maximum
    # Ranks within the request, log(1 + how many candidates come before): the orders of
    # the two feeds every community platform ships, "newest in my groups" and "hot in my
    # groups". A linear score over absolute levels cannot reproduce a pure recency order
    # when other features vary (a 2-day-old post in the user's main group beats a 2-hour-
    # old one elsewhere); with the ranks as features the scorer can follow either feed
    # where the log says it is best, and mix them where not.
    "newest_rank_in_my_communities",  # in-network candidates newer than this one (out: all of them)
    "hot_rank_in_my_communities",  # candidates hotter in my communities than this one
    # When the post was last active (its newest positive engagement, else its creation):
    # the order forums show by default ("latest activity", a bumped thread first). A
    # thread gets replies while its conversation goes on; its age says how long ago it
    # began, its hotness how much it got (decayed), neither whether anyone is still in it.
    "log_hours_since_active",  # log(1 + hours since the post's last activity)
)
FRESHNESS_HOURS = 24.0
RATE_PRIOR_VIEWS = 5.0  # smoothing: a post with 1 view and 1 like is not a 100% post
# Standing of a user in a community by contract role code (none, member, trusted,
# moderator). Shared with training's author-trust prior so both read roles alike.
ROLE_STANDING = np.array([0.0, 0.5, 0.8, 0.9], dtype=np.float32)
NON_MEMBER_STANDING = 0.2  # an author posting where they hold no role (public groups)
MEMBER_WEIGHT = 1.0  # what membership adds to a user's weight in a community


@dataclass
class FeatureInputs:
    """What the features of (user, post) pairs are computed from, one value per pair.

    The service fills it from the request's user record, the post records and the
    bundle (service/stages/score.py); training from the world as of the ranking time
    (training/features.py)."""

    affinity: np.ndarray  # user vector . post vector
    community_affinity: np.ndarray  # user vector . community vector
    user_role: np.ndarray  # contract ROLE_* code of the user in the post's community (0: none)
    author_trust: np.ndarray
    age_seconds: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    views: np.ndarray
    community_size: np.ndarray
    hot: np.ndarray  # the post's hotness at the ranking time (core.hotness.decayed)
    community_weight: np.ndarray  # the user's weight in the post's community (0: none)
    co_engagement: np.ndarray  # core.neighbours.co_engagement of the post for the user
    author_tie: np.ndarray  # core.neighbours.author_ties: the user's history posts by the post's author
    active_age_seconds: np.ndarray  # since the post's last activity (contract POST_DTYPE hot_at)


def feature_matrix(f: FeatureInputs, requests: np.ndarray | None = None) -> np.ndarray:
    """Columns in FEATURES order, float32 [n, len(FEATURES)].

    `requests` says which request each row belongs to (any integer key, e.g. the user
    when each user has one request); None: all rows are one request, as in the service."""
    n = len(f.affinity)
    X = np.empty((n, len(FEATURES)), dtype=np.float32)
    user_role = np.asarray(f.user_role, dtype=np.intp)
    views = np.maximum(f.views, f.positives + f.negatives)
    age = np.maximum(f.age_seconds, 0)
    hot = np.maximum(f.hot, 0)
    weight = np.maximum(f.community_weight, 0)
    X[:, 0] = f.affinity
    X[:, 1] = f.community_affinity
    X[:, 2] = user_role > 0
    X[:, 3] = ROLE_STANDING[np.clip(user_role, 0, len(ROLE_STANDING) - 1)]
    X[:, 4] = f.author_trust
    X[:, 5] = np.exp(-age / (3600.0 * FRESHNESS_HOURS))
    X[:, 6] = np.log1p(age / 3600.0)
    X[:, 7] = f.positives / (views + RATE_PRIOR_VIEWS)
    X[:, 8] = f.positives / np.sqrt(f.community_size + 1.0)
    X[:, 9] = f.negatives / (views + RATE_PRIOR_VIEWS)
    X[:, 10] = np.log1p(f.community_size)
    X[:, 11] = np.log1p(hot)
    X[:, 12] = np.log1p(weight)
    X[:, 13] = np.log1p(hot * weight)
    X[:, 14] = np.log1p(np.maximum(f.co_engagement, 0))
    X[:, 15] = np.log1p(np.maximum(f.author_tie, 0))
    X[:, 16] = X[:, 13] - request_max(X[:, 13], requests)
    X[:, 17] = X[:, 11] - request_max(X[:, 11], requests)
    # Out-of-network rows rank after every in-network one (their recency is not the feed's).
    recency = np.where(weight > 0, -age, -np.inf)
    X[:, 18] = np.log1p(request_rank(recency, requests))
    X[:, 19] = np.log1p(request_rank(X[:, 13], requests))
    active_age = np.maximum(f.active_age_seconds, 0)
    X[:, 20] = np.log1p(active_age / 3600.0)
    return X


def request_max(values: np.ndarray, requests: np.ndarray | None) -> np.ndarray:
    """Each row's request maximum of `values` (0 for an empty request)."""
    if len(values) == 0:
        return values
    if requests is None:
        return np.full(len(values), values.max(), dtype=values.dtype)
    keys, inverse = np.unique(requests, return_inverse=True)
    best = np.full(len(keys), -np.inf, dtype=values.dtype)
    np.maximum.at(best, inverse, values)
    return best[inverse]


def request_rank(values: np.ndarray, requests: np.ndarray | None) -> np.ndarray:
    """Each row's number of rows of its request with a strictly greater value (ties share
    a rank, so the order of rows cannot change it), as float32."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    if requests is None:  # the service's one request: a sort and a binary search (~15 us at 500)
        below = -np.asarray(values, dtype=np.float64)
        return np.searchsorted(np.sort(below), below, side="left").astype(np.float32)
    group = np.unique(requests, return_inverse=True)[1]
    order = np.lexsort((-np.asarray(values, dtype=np.float64), group))
    g, v = group[order], np.asarray(values, dtype=np.float64)[order]
    at = np.arange(n)
    group_start = np.maximum.accumulate(np.where(np.r_[True, g[1:] != g[:-1]], at, 0))
    tie_start = np.maximum.accumulate(np.where(np.r_[True, (g[1:] != g[:-1]) | (v[1:] != v[:-1])], at, 0))
    rank = np.empty(n, dtype=np.float32)
    rank[order] = tie_start - group_start
    return rank


@dataclass
class LinearScorer:
    """score = sum(w * (x - mean) / scale) + bias; a logistic model's logit."""

    weights: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    bias: float = 0.0
    kind: str = "linear"
    info: dict = field(default_factory=dict)

    def score(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) / self.scale) @ self.weights + self.bias

    @classmethod
    def affinity_only(cls) -> LinearScorer:
        """Rank by the embedding inner product alone (plain retrieval order)."""
        w = np.zeros(len(FEATURES), dtype=np.float32)
        w[FEATURES.index("affinity")] = 1.0
        return cls(w, np.zeros_like(w), np.ones_like(w), 0.0, "affinity")

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "features": list(FEATURES),
                "weights": self.weights.tolist(),
                "mean": self.mean.tolist(),
                "scale": self.scale.tolist(),
                "bias": float(self.bias),
                "info": self.info,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> LinearScorer:
        raw = json.loads(text)
        named = raw.get("features")
        if not isinstance(named, list) or len(set(named)) != len(named) or not set(named) <= set(FEATURES):
            raise ValueError(f"scorer features {named} are not distinct names among this service's {list(FEATURES)}")
        arrays = [np.asarray(raw[k], dtype=np.float32) for k in ("weights", "mean", "scale")]
        if any(a.shape != (len(named),) for a in arrays) or not all(np.isfinite(a).all() for a in arrays):
            raise ValueError("scorer weights, mean and scale must be finite lists of one value per feature")
        if (arrays[2] <= 0).any():
            raise ValueError("scorer scale must be positive")
        # A scorer trained before a feature was added weighs it 0, so a bundle from the
        # previous release still serves, and the publish gate can re-rank with it.
        at = [FEATURES.index(f) for f in named]
        weights, mean, scale = (
            np.zeros(len(FEATURES), np.float32),
            np.zeros(len(FEATURES), np.float32),
            np.ones(len(FEATURES), np.float32),
        )
        weights[at], mean[at], scale[at] = arrays
        return cls(weights, mean, scale, float(raw.get("bias", 0.0)), raw.get("kind", "linear"), raw.get("info", {}))


@dataclass
class TreeScorer:
    """score = a LightGBM lambdarank ensemble's output over the features (what training
    ships where its inner windows say the trees rank better beyond noise,
    training/scorer_choice.py): trees find the interactions a linear score
    cannot take (on the mailing-list log, +0.030 NDCG@10 over the linear scorer). Stored
    as the model's own text in the scorer JSON; the columns it was fitted on are named
    there, so a bundle stays servable after FEATURES grows."""

    model: str  # LightGBM's model text (Booster.model_to_string)
    features: tuple[str, ...]  # the columns it was fitted on, in order
    kind: str = "lambdarank"
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        columns = [FEATURES.index(f) for f in self.features]
        # Fitted on today's FEATURES in order (every bundle this release trains): no
        # column gather on the hot path.
        self._columns = None if columns == list(range(len(FEATURES))) else np.array(columns, dtype=np.intp)
        # Scored in numpy, to LightGBM's own doubles (core/tree_ensemble.py), unless
        # training found that evaluation differs on this model (training/scorer.py) or it
        # is refused; then LightGBM's predict. A process serving numpy-scored trees never
        # imports LightGBM: ~18 MB of private memory a worker.
        self.ensemble = self._booster = None
        if self.info.get("evaluator") != "lightgbm":
            # Refused (tree_ensemble.Unsupported, a ValueError), or a text this reader
            # cannot follow: LightGBM's parser then says whether it is a model at all.
            with contextlib.suppress(ValueError, KeyError, IndexError):
                self.ensemble = TreeEnsemble(self.model, len(self.features))
        if self.ensemble is None:
            self._booster = lightgbm_booster(self.model, len(self.features))

    @property
    def evaluator(self) -> str:
        """What scores the trees: core/tree_ensemble.py compiled ("c") or in numpy
        ("numpy"), or LightGBM's predict ("lightgbm")."""
        return self.ensemble.kernel if self.ensemble is not None else "lightgbm"

    def score(self, X: np.ndarray) -> np.ndarray:
        Z = X if self._columns is None else X[:, self._columns]
        if self.ensemble is not None:  # LightGBM's doubles, 2.5-7x cheaper (core/tree_ensemble.py)
            return self.ensemble.score(Z)
        # One thread: a Rank call is one request among many, and the server's
        # concurrency is its workers.
        return self._booster.predict(np.ascontiguousarray(Z, dtype=np.float64), num_threads=1)

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "features": list(self.features),
                "model": self.model,
                "model_sha256": model_digest(self.model),
                "info": self.info,
            }
        )


def tree_evaluator(scorer) -> str:
    """What scores a scorer's trees: "c", "numpy" or "lightgbm" (TreeScorer.evaluator),
    "none" for a scorer without trees."""
    trees = scorer if isinstance(scorer, TreeScorer) else getattr(scorer, "trees", None)
    return trees.evaluator if isinstance(trees, TreeScorer) else "none"


def lightgbm_booster(model: str, n_features: int):
    """LightGBM's own Booster for a model text, checked to have `n_features` columns."""
    try:
        import lightgbm  # only for trees the numpy evaluation does not take

        booster = lightgbm.Booster(model_str=model)
    except Exception as exc:  # ImportError, or LightGBMError on a damaged model text
        raise ValueError(f"lambdarank scorer: {exc}") from None
    if booster.num_feature() != n_features:
        raise ValueError(f"lambdarank scorer: a model of {booster.num_feature()} features, {n_features} named")
    return booster


def model_digest(model: str) -> str:
    return hashlib.sha256(model.encode()).hexdigest()


@dataclass
class BlendScorer:
    """The linear softmax and the lambdarank trees, each divided by its own scale and
    averaged: the scorer training ships by default (--scorer-objective blend). The two
    scores live on different scales (a logit; a sum of tree outputs), so each is divided
    by the standard deviation of its scores over the rows it was fitted on, fixed at fit
    time and stored with it. Fixed, not taken over each request: a row's score then does
    not depend on the other candidates (a one-candidate request gets a real score, and
    scores compare across requests), and raising a post's negative rate, which lowers
    both parts (the linear weight's bound, the trees' monotone constraint), can only lower
    its blended score, never reorder the others. Scales taken within each request ranked
    level with these on seven of eight logs, and ahead on the 16 Stack Exchange sites by
    0.010 (docs/training.md).
    The trees take interactions the linear score cannot; the linear score holds where
    the trees, fitted on a few thousand requests, overfit: on the Reddit log's last 70
    days the blend gained +0.020 NDCG@10 over the softmax where the trees alone gained
    +0.012, and on the 16 Stack Exchange sites, where the trees alone lost 0.017, the
    blend was level (-0.006; docs/training.md, "The scorer's objective"). Its cost is the
    trees': about 0.6 ms of CPU a Rank call at 500 candidates, scored in numpy
    (core/tree_ensemble.py; 1.7 ms through LightGBM's predict)."""

    linear: LinearScorer
    trees: TreeScorer
    scales: tuple[float, float] = (1.0, 1.0)  # (linear, trees): their scores' std over the fitted rows
    kind: str = "blend"
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            scales = tuple(float(v) for v in self.scales)
        except (TypeError, ValueError):
            scales = ()
        if len(scales) != 2 or not all(np.isfinite(v) and v > 0 for v in scales):
            raise ValueError(f"blend scorer: scales must be two positive numbers, got {self.scales!r}")
        self.scales = scales

    def score(self, X: np.ndarray) -> np.ndarray:
        linear = np.asarray(self.linear.score(X), dtype=np.float64)
        return 0.5 * linear / self.scales[0] + 0.5 * self.trees.score(X) / self.scales[1]

    @staticmethod
    def scales_on(linear: LinearScorer, trees: TreeScorer, X: np.ndarray) -> tuple[float, float]:
        """Each part's score spread over the rows X (1 where a part is constant)."""
        spread = [float(np.std(np.asarray(part.score(X), dtype=np.float64))) for part in (linear, trees)]
        return tuple(v if v > 1e-12 else 1.0 for v in spread)

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "scales": list(self.scales),
                "linear": json.loads(self.linear.to_json()),
                "trees": json.loads(self.trees.to_json()),
                "info": self.info,
            }
        )


def load_scorer(text: str) -> Scorer:
    """A bundle's scorer JSON, whichever kind it holds."""
    raw = json.loads(text)
    if raw.get("kind") == BlendScorer.kind:
        parts = (raw.get("linear"), raw.get("trees"))
        if not all(isinstance(part, dict) for part in parts):
            raise ValueError("blend scorer: needs its 'linear' and 'trees' scorers")
        linear, trees = (scorer_of(part) for part in parts)
        if not isinstance(linear, LinearScorer) or not isinstance(trees, TreeScorer):
            raise ValueError("blend scorer: 'linear' must hold a linear scorer and 'trees' a lambdarank one")
        scales = raw.get("scales")
        if not isinstance(scales, list):
            raise ValueError("blend scorer: needs its two 'scales'")
        return BlendScorer(linear, trees, tuple(scales), info=raw.get("info", {}))
    return scorer_of(raw)


def scorer_of(raw: dict) -> LinearScorer | TreeScorer:
    """A linear or tree scorer from its parsed JSON."""
    if raw.get("kind") != TreeScorer.kind:
        return LinearScorer.from_json(json.dumps(raw))
    named = raw.get("features")
    if not isinstance(named, list) or not set(named) <= set(FEATURES) or not isinstance(raw.get("model"), str):
        raise ValueError(
            f"lambdarank scorer: features {named} must be names among {list(FEATURES)}, with the model text"
        )
    # LightGBM's parser aborts the process on some damaged model texts rather than raise:
    # the text is checked against its digest before the parser sees it.
    if raw.get("model_sha256") != model_digest(raw["model"]):
        raise ValueError("lambdarank scorer: the model text does not match its sha256 (damaged)")
    return TreeScorer(raw["model"], tuple(named), info=raw.get("info", {}))


Scorer = LinearScorer | TreeScorer | BlendScorer  # what a bundle's scorer.json holds
