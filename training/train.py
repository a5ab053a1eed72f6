"""The training run: load -> split -> ALS -> post embeddings -> index -> scorer -> bundle.

Each stage is its own module; this one only wires them and reports progress.
What is evaluated is what ships: the bundle holds the model fitted on the training
window, and its report scores that very model on the following window.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from service import contract
from service.scoring import LinearScorer
from training import schema
from training.als import AlsParams, fit_als, user_community_matrix
from training.bundle_writer import new_version, write_bundle
from training.embeddings import post_embeddings
from training.index import build_index, servable_rows
from training.load import load_dataset
from training.split import split_by_time

TRUST_OF_ROLE = np.array([0.2, 0.5, 0.8, 0.9], dtype=np.float32)  # none, member, trusted, moderator


@dataclass
class TrainParams:
    als: AlsParams = field(default_factory=AlsParams)
    test_fraction: float = 0.1
    index_window_days: float = 14.0
    scorer: str = "affinity"


def log(msg: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def data_fingerprint(data_dir: Path) -> str:
    h = hashlib.sha256()
    for name in (schema.COMMUNITIES_CSV, schema.MEMBERSHIPS_CSV, schema.POSTS_CSV, schema.EVENTS_CSV):
        path = data_dir / name
        if path.exists():
            h.update(name.encode())
            h.update(contract.file_digest(path).encode())
    return h.hexdigest()


def author_trust(ds: schema.Dataset) -> np.ndarray:
    """Standing of each post's author in the post's community, from their role there."""
    n_c = max(ds.n_communities, 1)
    m_key = ds.m_user.astype(np.int64) * n_c + ds.m_community
    order = np.argsort(m_key)
    p_key = ds.post_author.astype(np.int64) * n_c + ds.post_community
    pos = np.clip(np.searchsorted(m_key[order], p_key), 0, max(len(order) - 1, 0))
    found = (m_key[order][pos] == p_key) if len(order) else np.zeros(len(p_key), bool)
    role = np.where(found, ds.m_role[order][pos] if len(order) else 0, 0)
    return TRUST_OF_ROLE[role]


def post_counters(ds: schema.Dataset, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = ds.event_weights()[mask]
    posts = ds.e_post[mask]
    positives = np.bincount(posts, weights=np.maximum(w, 0), minlength=ds.n_posts).astype(np.float32)
    negatives = np.bincount(posts, weights=np.isin(ds.e_kind[mask], schema.NEGATIVE_KINDS) * ds.e_count[mask],
                            minlength=ds.n_posts).astype(np.float32)
    views = np.bincount(posts, weights=ds.e_count[mask], minlength=ds.n_posts).astype(np.float32)
    return positives, negatives, views


def train(data_dir: Path, models_dir: Path, params: TrainParams, progress: bool = True) -> Path:
    t0 = time.perf_counter()
    log(f"loading {data_dir}")
    ds = load_dataset(data_dir)
    for note in ds.notes:
        log(f"note: {note}")
    log(f"{ds.n_users} users, {ds.n_communities} communities, {ds.n_posts} posts, {len(ds.e_ts)} events")
    split = split_by_time(ds, params.test_fraction)
    log(f"time split at {split.split_ts}: {int(split.train.sum())} train / {int(split.test.sum())} test events")

    matrix = user_community_matrix(ds, split.train)
    log(f"ALS on {matrix.shape[0]}x{matrix.shape[1]} user-community matrix, {matrix.nnz} nonzeros, "
        f"{params.als.factors} factors x {params.als.iterations} iterations")
    user_f, comm_f = fit_als(matrix, params.als, progress=progress)
    post_v = post_embeddings(ds, split.train, user_f, comm_f, params.als)
    log(f"post vectors: {post_v.shape}")

    scorer = LinearScorer.affinity_only()
    positives, negatives, views = post_counters(ds, np.ones(len(ds.e_ts), dtype=bool))
    rows = servable_rows(ds.post_created_at, ds.post_deleted, split.end_ts, params.index_window_days)

    fingerprint = data_fingerprint(data_dir)
    manifest = contract.Manifest(
        model_version=new_version(fingerprint),
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        data_fingerprint=fingerprint,
        dims={"factors": int(user_f.shape[1]), "users": ds.n_users, "communities": ds.n_communities,
              "posts": ds.n_posts, "indexed_posts": int(len(rows)), "memberships": int(len(ds.m_user))},
        params={**asdict(params), "split_ts": split.split_ts, "data_end_ts": split.end_ts,
                "data_dir": str(data_dir), "notes": ds.notes},
    )
    arrays = {
        contract.USER_IDS_FILE: ds.user_ids,
        contract.USER_FACTORS_FILE: user_f,
        contract.COMMUNITY_IDS_FILE: ds.community_ids,
        contract.COMMUNITY_FACTORS_FILE: comm_f,
        contract.COMMUNITY_PRIVATE_FILE: ds.community_private.astype(bool),
        contract.COMMUNITY_SIZE_FILE: ds.community_size(),
        contract.POST_IDS_FILE: ds.post_ids,
        contract.POST_VECTORS_FILE: post_v,
        contract.POST_COMMUNITY_FILE: ds.post_community.astype(np.int32),
        contract.POST_AUTHOR_FILE: ds.post_author.astype(np.int32),
        contract.POST_CREATED_AT_FILE: ds.post_created_at.astype(np.int64),
        contract.POST_DELETED_FILE: ds.post_deleted.astype(bool),
        contract.POST_AUTHOR_TRUST_FILE: author_trust(ds),
        contract.POST_POSITIVES_FILE: positives,
        contract.POST_NEGATIVES_FILE: negatives,
        contract.POST_VIEWS_FILE: views,
        contract.MEMBERSHIP_USER_FILE: ds.m_user.astype(np.int32),
        contract.MEMBERSHIP_COMMUNITY_FILE: ds.m_community.astype(np.int32),
        contract.MEMBERSHIP_ROLE_FILE: ds.m_role.astype(np.uint8),
    }

    def write_extra(staging: Path) -> None:
        n = build_index(post_v, rows, staging / contract.INDEX_FILE)
        log(f"FAISS index: {n} servable posts")
        (staging / contract.SCORER_FILE).write_text(scorer.to_json())

    bundle = write_bundle(models_dir, manifest, arrays, write_extra)
    log(f"bundle {manifest.model_version} written to {bundle} in {time.perf_counter() - t0:.1f}s")
    return bundle
