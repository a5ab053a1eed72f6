"""The training run: load -> split -> ALS -> post embeddings -> scorer -> evaluate -> bundle.

Each stage is its own module; this one only wires them, times them and reports.
What is evaluated is what ships: the bundle holds the vectors fitted on the training
window and the scorer fitted inside it, and its report scores that very model on the
following window (training/evaluate.py has the protocol). Serving features (counters,
memberships, author standing) are as of the end of the data.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from core import contract
from core.scoring import LinearScorer
from training import schema
from training.als import fit_community_als
from training.bundle_writer import new_version, write_bundle
from training.embeddings import post_embeddings
from training.evaluate import EvalSetup, catalogue_rows, evaluate, markdown, pick_users, target_matrix
from training.features import CandidateSource, Model, seen_matrix
from training.index import age_window, build_index, servable_rows
from training.load import load_dataset
from training.params import TrainParams
from training.scorer import fit_scorer
from training.split import TimeSplit, inner_split, split_by_time
from training.state import member_engagers, state_as_of

INDEX_QUERIES = 200  # user vectors that measure the index candidates


class StageClock:
    """Logs each stage with its duration; the durations go into the report."""

    def __init__(self, quiet: bool = False):
        self.t0 = self.last = time.perf_counter()
        self.times: dict[str, float] = {}
        self.quiet = quiet

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(f"[train {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def done(self, stage: str, msg: str = "") -> None:
        now = time.perf_counter()
        self.times[stage] = round(now - self.last, 2)
        self.last = now
        self.log(f"{stage}: {msg} ({self.times[stage]:.1f}s)" if msg else f"{stage} ({self.times[stage]:.1f}s)")

    @property
    def total(self) -> float:
        return time.perf_counter() - self.t0


def data_fingerprint(data_dir: Path) -> str:
    h = hashlib.sha256()
    for name in (schema.COMMUNITIES_CSV, schema.MEMBERSHIPS_CSV, schema.POSTS_CSV, schema.EVENTS_CSV):
        path = data_dir / name
        if path.exists():
            h.update(name.encode())
            h.update(contract.file_digest(path).encode())
    return h.hexdigest()


def fit_model(ds: schema.Dataset, split: TimeSplit, params: TrainParams, progress: bool):
    state = state_as_of(ds, split.split_ts, ds.memberships_derived)
    als = fit_community_als(ds, split.train, state, params.als, progress)
    posts, authors = post_embeddings(ds, als)
    return state, Model(als.user_factors, als.community_factors, posts, authors)


def learn_scorer(
    ds: schema.Dataset, split: TimeSplit, window: float | None, params: TrainParams, clock: StageClock
) -> LinearScorer:
    inner = inner_split(ds, split)
    state, model = fit_model(ds, inner, params, progress=False)
    catalogue = catalogue_rows(ds, inner.split_ts, inner.end_ts, window)
    seen = seen_matrix(ds, inner.train)
    targets = target_matrix(ds, inner.test, seen, catalogue)
    users = pick_users(targets, seen, params.scorer_fit.max_users, params.scorer_fit.seed)
    clock.log(
        f"scorer: inner split at {inner.split_ts}, {len(users)} users with engagement in "
        f"[{inner.split_ts}, {inner.end_ts})"
    )
    if len(users) == 0:
        scorer = LinearScorer.affinity_only()
        scorer.info = {"fallback": "no users with engagement in the inner window: affinity only"}
        return scorer
    source = CandidateSource(ds, state, model, catalogue, seen)
    return fit_scorer(ds, state, model, source, targets, users, inner.split_ts, params.scorer_fit)


def train(data_dir: Path, models_dir: Path, params: TrainParams, progress: bool = True, quiet: bool = False) -> Path:
    clock = StageClock(quiet)
    data_dir, models_dir = Path(data_dir), Path(models_dir)
    clock.log(f"loading {data_dir}")
    ds = load_dataset(data_dir)
    clock.done("load", f"{ds.n_users} users, {ds.n_communities} communities, {ds.n_posts} posts, {len(ds.e_ts)} events")
    for note in ds.notes:
        clock.log(f"note: {note}")

    split = split_by_time(ds, params.test_fraction)
    window, why = age_window(
        ds.post_created_at,
        ds.post_deleted,
        ds.e_post[split.train],
        ds.e_ts[split.train],
        params.index_window_days,
        split.end_ts,
    )
    notes = ds.notes + [why]
    clock.done(
        "split", f"at {split.split_ts}: {int(split.train.sum())} train / {int(split.test.sum())} test events; {why}"
    )

    state, model = fit_model(ds, split, params, progress)
    clock.done(
        "als",
        f"{ds.n_users} users x ({ds.n_communities} communities + {ds.n_posts} posts), "
        f"{params.als.factors} factors x {params.als.iterations} iterations; post vectors placed",
    )

    if params.scorer == "learned":
        scorer = learn_scorer(ds, split, window, params, clock)
    elif params.scorer == "affinity":
        scorer = LinearScorer.affinity_only()
    else:
        raise ValueError(f"scorer must be 'learned' or 'affinity', got {params.scorer!r}")
    clock.done("scorer", f"{scorer.kind}: " + json.dumps(scorer.info.get("weights_by_feature", {})))

    result = evaluate(EvalSetup(ds, split, state, model, scorer, window), params.eval, params.als, notes, progress)
    clock.done(
        "evaluate",
        f"{len(result.users)} users, gate {result.report['gate']['metric']} = {result.report['gate']['value']:.4f}",
    )

    serving = state_as_of(ds, split.end_ts, ds.memberships_derived)
    rows = servable_rows(ds.post_created_at, ds.post_deleted, split.end_ts, window)
    fingerprint = data_fingerprint(data_dir)
    manifest = contract.Manifest(
        model_version=new_version(fingerprint),
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        data_fingerprint=fingerprint,
        dims={
            "factors": int(model.user_factors.shape[1]),
            "users": ds.n_users,
            "communities": ds.n_communities,
            "posts": ds.n_posts,
            "indexed_posts": int(len(rows)),
            "memberships": int(len(serving.m_user)),
        },
        params={
            **asdict(params),
            "split_ts": split.split_ts,
            "data_end_ts": split.end_ts,
            "index_window_applied_days": window,
            "memberships_derived": ds.memberships_derived,
            "data_dir": str(data_dir),
            "notes": notes,
        },
        metrics=headline(result.report),
    )
    arrays = {
        contract.USER_IDS_FILE: ds.user_ids,
        contract.USER_FACTORS_FILE: model.user_factors,
        contract.AUTHOR_VECTORS_FILE: model.author_vectors,
        contract.COMMUNITY_IDS_FILE: ds.community_ids,
        contract.COMMUNITY_FACTORS_FILE: model.community_factors,
        contract.COMMUNITY_PRIVATE_FILE: ds.community_private.astype(bool),
        contract.COMMUNITY_SIZE_FILE: serving.community_size,
        contract.POST_IDS_FILE: ds.post_ids,
        contract.POST_VECTORS_FILE: model.post_vectors,
        contract.POST_COMMUNITY_FILE: ds.post_community.astype(np.int32),
        contract.POST_AUTHOR_FILE: ds.post_author.astype(np.int32),
        contract.POST_CREATED_AT_FILE: ds.post_created_at.astype(np.int64),
        contract.POST_DELETED_FILE: ds.post_deleted.astype(bool),
        contract.POST_MEMBERS_ONLY_FILE: (
            ds.post_members_only if ds.post_members_only is not None else np.zeros(ds.n_posts, dtype=bool)
        ).astype(bool),
        contract.POST_AUTHOR_TRUST_FILE: serving.author_trust,
        contract.POST_POSITIVES_FILE: serving.positives,
        contract.POST_NEGATIVES_FILE: serving.negatives,
        contract.POST_VIEWS_FILE: serving.views,
        contract.MEMBERSHIP_USER_FILE: serving.m_user.astype(np.int32),
        contract.MEMBERSHIP_COMMUNITY_FILE: serving.m_community.astype(np.int32),
        contract.MEMBERSHIP_ROLE_FILE: serving.m_role.astype(np.uint8),
    }
    rng = np.random.default_rng(params.eval.seed)
    active = np.flatnonzero(np.abs(model.user_factors).sum(axis=1) > 0)
    queries = (
        model.user_factors[np.sort(rng.choice(active, min(INDEX_QUERIES, len(active)), replace=False))]
        if len(active)
        else None
    )

    def write_extra(staging: Path) -> None:
        choice = build_index(model.post_vectors, rows, staging / contract.INDEX_FILE, queries)
        clock.done(
            "index",
            f"{len(rows)} servable posts, {choice.kind} (recall {choice.recall:.3f}, "
            f"{choice.latency_ms:.2f} ms/query; measured {choice.measured})",
        )
        (staging / contract.SCORER_FILE).write_text(scorer.to_json())
        np.save(
            staging / contract.POST_MEMBER_ENGAGERS_FILE,
            member_engagers(ds, np.ones(len(ds.e_ts), bool), serving),
            allow_pickle=False,
        )
        np.save(staging / contract.EVAL_USERS_FILE, result.users.astype(np.int32), allow_pickle=False)
        np.save(staging / contract.EVAL_RANKINGS_FILE, result.rankings.astype(np.int32), allow_pickle=False)
        report = dict(result.report)
        report["model_version"] = manifest.model_version
        report["training"] = {
            "stage_seconds": dict(clock.times),
            "index": asdict(choice),
            "scorer": {"kind": scorer.kind, **scorer.info},
            "als": asdict(params.als),
        }
        (staging / contract.REPORT_JSON_FILE).write_text(json.dumps(report, indent=2))
        (staging / contract.REPORT_MD_FILE).write_text(markdown(report, manifest.model_version))
        manifest.params["index"] = choice.kind

    bundle = write_bundle(models_dir, manifest, arrays, write_extra)
    clock.done("bundle", f"{manifest.model_version} written to {bundle}")
    clock.log(f"total {clock.total:.1f}s")
    return bundle


def headline(report: dict) -> dict:
    """The manifest's metrics: the gate value and every method's means (report.json has the rest)."""
    out = {"gate_metric": report["gate"]["metric"], "gate_value": report["gate"]["value"]}
    for name, row in report["methods"].items():
        for metric, cell in row.items():
            out[f"{name}/{metric}"] = cell["mean"]
    return out
