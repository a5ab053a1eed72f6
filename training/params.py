"""Every training parameter, with its default and its meaning, in one place.

`python -m training train` generates its flags from these dataclasses (core/flags.py),
the manifest records them whole (`params`), and the stages take them whole: a default
is written here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.flags import param
from training.split import AUTO_MAX_POINTS, AUTO_MIN_POINTS, AUTO_MIN_REQUESTS

KS = (10, 50)  # cut-offs of recall@K and NDCG@K


@dataclass
class AlsParams:
    """Implicit ALS over users x [communities | posts] (training/als.py)."""

    factors: int = param(32, "latent factors of users, communities and posts")
    iterations: int = param(15, "ALS sweeps")
    regularization: float = param(0.05, "L2 regularisation of the factors")
    alpha: float = param(10.0, "confidence = alpha * log(1 + net engagement)")
    community_share: float = param(0.5, "community columns' confidence relative to post columns")
    seed: int = param(7, "seed of ALS's initial factors", flag="train-seed")
    engine: str = param(
        "implicit",
        "implicit: this machine; spark: the events and every ALS fit on Apache Spark (MLlib), the same bundle out",
        choices=("implicit", "spark"),
    )
    driver_users: int = param(
        100_000,
        "spark engine: the driver collects the positive events of at most this many users (a seeded "
        "sample of those with any), from whom the tuning, the scorer and the evaluation draw theirs",
    )


@dataclass
class ScorerParams:
    """The learned scorer, fitted by replaying the evaluation inside the training window."""

    max_users: int = param(2000, "users sampled to fit the scorer", flag="scorer-users")
    # 128, not 32: only a log of a few hundred people a week pools that many before it has
    # drawn scorer-users, and there the longer replays gained beyond noise (docs/training.md,
    # "The scorer's windows: 128 on a small log").
    windows: int = param(
        128,
        "inner windows with engagement pooled at most while fewer than scorer-users users are drawn",
        flag="scorer-windows",
    )
    negatives_per_user: int = param(100, "sampled non-engaged candidates per user")
    l2: float = param(1.0, "L2 penalty of the scorer's weights")
    objective: str = param(
        "blend",
        "blend: the softmax and the lambdarank trees, each over its scores' spread at the fit, averaged "
        "(in the protocol ahead of the softmax beyond noise on seven of eight logs, behind on none: "
        "docs/training.md; serving costs the trees' ~0.6 ms CPU a call more); softmax: which of a "
        "request's candidates the user engages with (a softmax over each request's positives and sampled "
        "negatives; the cheapest); logistic: engaged or not, each candidate alone; lambdarank: LightGBM's "
        "lambdarank trees over the same rows; auto: the softmax, or the trees or the blend where they rank "
        "the inner windows' candidates better beyond noise (training/scorer_choice.py)",
        choices=("auto", "softmax", "logistic", "lambdarank", "blend"),
        flag="scorer-objective",
    )
    trees: int = param(
        100,
        "trees of the lambdarank and blend objectives, at learning rate 10 / trees (the same total "
        "step); serving predicts every candidate with each of them",
        flag="scorer-trees",
    )
    seed: int = param(7, "seed of the scorer's user and negative sampling", flag="scorer-seed")


@dataclass
class EvalParams:
    """The held-out evaluation (training/evaluate.py)."""

    max_users: int = param(2000, "users evaluated at each split point (sampled with the seed)", flag="eval-users")
    seed: int = param(7, "seed of user sampling, the random baseline and the bootstrap", flag="eval-seed")
    bootstrap: int = param(1000, "bootstrap resamples of each interval")
    ks: tuple[int, ...] = param(KS, "cut-offs K", cli=False)
    windows_days: tuple[float, ...] = param((1.0, 7.0), "evaluation windows after each split point", cli=False)
    split_points: int = param(
        0,
        "split points replayed, one longest window apart while data remains (0: auto, at least "
        f"{AUTO_MIN_POINTS}, more up to {AUTO_MAX_POINTS} until about {AUTO_MIN_REQUESTS} user-requests are "
        "judged; a point with nobody to judge is passed over)",
    )
    tune_users: int = param(500, "users the baselines are tuned on (inner split)")
    # In the manifest, so that `make evaluate` of a bundle trained before the refit (its
    # manifest without the field) recomputes it as it was trained.
    refit_scorer: bool = param(True, "refit the scorer at each later split point, as the vectors are", cli=False)


@dataclass
class TrainParams:
    als: AlsParams = field(default_factory=AlsParams)
    test_fraction: float = param(0.2, "share of the events held out for evaluation (the newest)")
    split_at: int | None = param(None, "unix time where evaluation starts (instead of --test-fraction)")
    index_window_days: float = param(14.0, "on feed-like data, posts older than this are not indexed")
    scorer: str = param(
        "learned",
        "learned: a linear model over the service's features, fitted on earlier windows; affinity: inner product only",
        choices=("learned", "affinity"),
    )
    tune_als: bool = param(True, "choose the ALS factors and alpha on the inner split (else --factors, --alpha)")
    scorer_fit: ScorerParams = field(default_factory=ScorerParams)
    eval: EvalParams = field(default_factory=EvalParams)
