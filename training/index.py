"""The FAISS index over post vectors, saved as a file served memory-mapped.

Which posts: those a feed could still show. On feed-like data (most engagement lands on
posts younger than the window) that is the non-deleted posts created within
`window_days` of the end of the data; older ones stay in the bundle (evaluation,
re-rank mode) but would only crowd fresh ones out of the top-k. On catalogue-like logs
(movies, artists: items stay relevant for years, created_at may be 0) no age window
applies and every non-deleted post is indexed; the same happens when the window would
hold too few posts to fill a feed. The rule is measured on the training window only.

Which index: measured, not assumed. Exact inner product (IndexFlatIP) is the reference;
IVF variants are built on the same vectors and searched with real user vectors at the
service's k; the fastest one whose recall@k against exact stays >= MIN_RECALL wins
(exact wins ties and small catalogues). FAISS ids are bundle rows (IndexIDMap). The
"mips-" variants hold the vectors reduced to a nearest-neighbour search, one dimension
more and padded to a multiple of 8 (core/post_index.py), with finer lists.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core import post_index

DAY = 86_400
FEED_SHARE = 0.8  # engagement share on fresh posts above which the data is a feed
MIN_SERVABLE = 1_000  # fewer servable posts than this (or than 10% of posts) -> index all
MIN_RECALL = 0.95
SEARCH_K = 500  # the service's default candidates per request


def age_window(
    created_at: np.ndarray, deleted: np.ndarray, share: float, window_days: float, end_ts: int
) -> tuple[float | None, str]:
    """The age window to index by (None: all non-deleted posts), and why. share: of the
    training events, those on posts younger than the window at event time
    (training/event_times.py fresh_share)."""
    if share < FEED_SHARE:
        return None, (
            f"catalogue-like data: {share:.0%} of training engagement is on posts younger than "
            f"{window_days:g} days, so every non-deleted post is indexed"
        )
    rows = servable_rows(created_at, deleted, end_ts, window_days)
    enough = min(MIN_SERVABLE, int(0.1 * int((~deleted).sum())))
    if len(rows) < enough:
        return None, (
            f"only {len(rows)} posts are younger than {window_days:g} days at the data end, "
            f"so every non-deleted post is indexed"
        )
    return window_days, f"feed-like data: {share:.0%} of engagement is on posts younger than {window_days:g} days"


def servable_rows(created_at: np.ndarray, deleted: np.ndarray, end_ts: int, window_days: float | None) -> np.ndarray:
    keep = ~deleted
    if window_days is not None:
        keep &= created_at >= end_ts - window_days * DAY
    return np.flatnonzero(keep).astype(np.int64)


@dataclass
class IndexChoice:
    # "flat", "ivf<nlist>,nprobe=<n>", "ivf<nlist>,fp16,nprobe=<n>", "ivf<nlist>,sq8,nprobe=<n>"
    # or "mips-ivf<nlist>,fp16,nprobe=<n>" (core/post_index.py's layout of width(d))
    kind: str
    recall: float
    latency_ms: float
    measured: list[dict] = field(default_factory=list)


def _search_ms(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """One query at a time on one thread, as the service searches; median milliseconds.
    (OpenMP threads on a busy 2-core machine make timings swing 10x; one thread does not.)"""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return _timed(index, queries, k)
    finally:
        faiss.omp_set_num_threads(threads)


def _timed(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    ids, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        _, i = index.search(q[None, :], k)
        times.append(time.perf_counter() - t0)
        ids.append(i[0])
    return np.array(ids), float(np.median(times) * 1000)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(f[f >= 0], t)) / max(len(t), 1) for f, t in zip(found, truth)]))


def choose_index(vectors: np.ndarray, queries: np.ndarray, k: int = SEARCH_K, seed: int = 7):
    """Build the candidates on `vectors`, measure them with `queries`; returns (index, IndexChoice).

    The returned index has ids 0..n-1 (positions in vectors); build_index maps them."""
    import faiss

    n, d = vectors.shape
    k = max(1, min(k, n))
    flat = faiss.IndexFlatIP(d)
    flat.add(vectors)
    truth, flat_ms = _search_ms(flat, queries, k)
    measured = [{"kind": "flat", "recall": 1.0, "latency_ms": round(flat_ms, 3)}]
    best, choice = flat, IndexChoice("flat", 1.0, flat_ms)
    if n >= 20_000 and len(queries):
        # sqrt(n) lists: the service asks for k=500 neighbours, which a finer partition
        # only reaches by probing many more lists (measured at 1M posts: 4*sqrt(n) lists
        # reached recall 0.44 at nprobe 64, sqrt(n) lists 0.96 at nprobe 64).
        nlist = int(np.sqrt(n))
        rng = np.random.default_rng(seed)
        # 40 points per centroid is plenty for a recall measurement and keeps k-means cheap.
        sample = vectors[rng.choice(n, min(n, 40 * nlist), replace=False)]
        # Three codings of the lists: exact floats; half floats (half the bytes to scan per
        # probed list, scores within ~1e-3: the scan is memory bound at 1M posts, measured
        # 1.6x faster per query there); and 8-bit scalar-quantised codes (a quarter of the
        # bytes, at a larger cost in recall). The measurement below weighs each.
        for coding in ("flat", "fp16", "sq8"):
            quantizer = faiss.IndexFlatIP(d)
            if coding == "flat":
                ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            else:
                qtype = faiss.ScalarQuantizer.QT_fp16 if coding == "fp16" else faiss.ScalarQuantizer.QT_8bit
                ivf = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, qtype, faiss.METRIC_INNER_PRODUCT)
            ivf.cp.seed = seed
            ivf.train(sample)
            ivf.add(vectors)
            for nprobe in (4, 8, 16, 32, 64, 128, 256):
                ivf.nprobe = nprobe
                found, ms = _search_ms(ivf, queries, k)
                rec = _recall(found, truth)
                kind = f"ivf{nlist},nprobe={nprobe}" if coding == "flat" else f"ivf{nlist},{coding},nprobe={nprobe}"
                measured.append({"kind": kind, "recall": round(rec, 4), "latency_ms": round(ms, 3)})
                if rec >= MIN_RECALL and ms < choice.latency_ms * 0.8:
                    choice = IndexChoice(kind, rec, ms)
                    best = faiss.clone_index(ivf)
                if rec >= MIN_RECALL:
                    break  # more probes only cost time
        # The same search reduced to nearest neighbours on a sphere (core/post_index.py),
        # where k-means lists partition the posts well enough for 6x finer lists: at 1M
        # posts 6*sqrt(n) lists reached recall@500 0.959 at nprobe 40, 0.40 ms a query, where
        # the inner-product lists above needed nprobe 64 and 0.93 ms for 0.955. Half-float
        # lists only (the coding the measurement above picks at that size). At most n/39
        # lists: fewer points per list than that and k-means has too little to place them.
        fine = min(6 * nlist, n // 39)
        points = post_index.stored(vectors)
        sample = points[rng.choice(n, min(n, 40 * fine), replace=False)]
        dim = post_index.width(d)
        mips = faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatL2(dim), dim, fine, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_L2
        )
        mips.cp.seed = seed
        mips.train(sample)
        mips.add(points)
        mips_queries = post_index.as_query(queries)
        for nprobe in (4, 8, 16, 24, 32, 40, 48, 64, 96, 128):
            mips.nprobe = nprobe
            found, ms = _search_ms(mips, mips_queries, k)
            rec = _recall(found, truth)
            kind = f"mips-ivf{fine},fp16,nprobe={nprobe}"
            measured.append({"kind": kind, "recall": round(rec, 4), "latency_ms": round(ms, 3)})
            if rec >= MIN_RECALL and ms < choice.latency_ms * 0.8:
                choice = IndexChoice(kind, rec, ms)
                best = faiss.clone_index(mips)
            if rec >= MIN_RECALL:
                break
    choice.measured = measured
    return best, choice


def build_index(vectors: np.ndarray, rows: np.ndarray, path: Path, queries: np.ndarray | None = None) -> IndexChoice:
    """Choose, build and write the index over vectors[rows] with FAISS ids = rows."""
    import faiss

    d = vectors.shape[1]
    sub = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    if len(rows) == 0:
        inner, choice = faiss.IndexFlatIP(d), IndexChoice("flat", 1.0, 0.0)
    else:
        q = np.zeros((0, d), np.float32) if queries is None else np.ascontiguousarray(queries, dtype=np.float32)
        inner, choice = choose_index(sub, q)
        inner.reset() if hasattr(inner, "reset") else None
    index = faiss.IndexIDMap(inner)
    if len(rows):
        index.add_with_ids(post_index.stored(sub) if choice.kind.startswith("mips-") else sub, rows)
    faiss.write_index(index, str(path))
    return choice
