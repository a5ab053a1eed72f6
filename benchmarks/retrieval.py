"""Retrieval: FAISS index types on the trained vectors, recall@K against exact search
versus single-query latency, so that the index the service uses is a measured choice.

Vectors are the bundle's post vectors of the indexed (servable) posts; queries are the
trained vectors of sampled users: the real query distribution, not random points. Every
search is one query at a time on one thread, as on the hot path (OMP_NUM_THREADS=1).

Recall is tie-aware: many posts share a vector (an untouched post is placed by its
community and author alone), so "the" exact top-K is not unique. A returned post counts
as a hit when its true inner product is at least the exact K-th best score (minus a
float32 epsilon); recall@K = hits / K.
"""

from __future__ import annotations

import time

import numpy as np

from core import contract, post_index


def _load(bundle_dir, n_queries: int, seed: int = 3):
    import faiss

    vectors = np.load(bundle_dir / contract.POST_VECTORS_FILE, mmap_mode="r")
    index = faiss.read_index(str(bundle_dir / contract.INDEX_FILE))
    rows = faiss.vector_to_array(index.id_map).astype(np.int64) if hasattr(index, "id_map") else np.arange(index.ntotal)
    xb = np.ascontiguousarray(vectors[np.sort(rows)], dtype=np.float32)
    users = np.load(bundle_dir / contract.USER_FACTORS_FILE)
    rng = np.random.default_rng(seed)
    xq = np.ascontiguousarray(
        users[rng.choice(len(users), size=min(n_queries, len(users)), replace=False)], dtype=np.float32
    )
    inner = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index
    return xb, xq, type(inner).__name__


def _latency(index, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    lat = np.empty(len(xq))
    ids = np.empty((len(xq), k), dtype=np.int64)
    for i in range(len(xq)):
        t0 = time.perf_counter()
        _, labels = index.search(xq[i : i + 1], k)
        lat[i] = time.perf_counter() - t0
        ids[i] = labels[0]
    return lat, ids


def _recall(xb: np.ndarray, xq: np.ndarray, ids: np.ndarray, kth: np.ndarray, k: int) -> float:
    hits = 0
    for i in range(len(xq)):
        got = ids[i][ids[i] >= 0]
        true_scores = xb[got] @ xq[i]
        hits += min(k, int((true_scores >= kth[i] - 1e-5 * max(1.0, abs(kth[i]))).sum()))
    return hits / (k * len(xq))


MIPS = "mips-"  # factory prefix: build on core.post_index.stored(vectors), search as_query
# The same layout without the padding to a multiple of 8 dimensions (d + 1, as bundles were
# written before it): beside the served one, it shows what the padding buys (FAISS's SIMD
# scan of half-float lists wants the dimension a multiple of 8).
MIPS_UNPADDED = "mips1-"


def _candidates(n: int, full: bool, hnsw: bool) -> list[tuple[str, str, dict]]:
    """(label, factory string, search params) to try; nlist ~ sqrt(n)."""
    nlist = int(2 ** round(np.log2(max(16, np.sqrt(n)))))
    out = [("Flat (exact)", "Flat", {}), ("SQfp16", "SQfp16", {})]
    probes = (4, 16, 64) if not full else (4, 16, 32, 64, 128)
    out += [(f"IVF{nlist},Flat nprobe={p}", f"IVF{nlist},Flat", {"nprobe": p}) for p in probes]
    out += [(f"IVF{nlist},SQfp16 nprobe={p}", f"IVF{nlist},SQfp16", {"nprobe": p}) for p in (32, 64)]
    out += [(f"IVF{nlist},SQ8 nprobe={p}", f"IVF{nlist},SQ8", {"nprobe": p}) for p in (16, 64)]
    if hnsw and n <= 200_000:  # building HNSW over 1M vectors costs ~25 s of the bench budget
        out += [(f"HNSW32 efSearch={ef}", "HNSW32", {"efSearch": ef}) for ef in (512, 1024)]
    # Training's "mips-" layout (core/post_index.py): the inner product as a nearest-neighbour
    # search on a sphere, 6 sqrt(n) half-float lists (at most n/39, as training builds it).
    fine = min(6 * int(np.sqrt(n)), n // 39)
    if fine >= 16:
        probes = (24, 40, 64) if full else (40,)
        out += [(f"mips-IVF{fine},SQfp16 nprobe={p}", f"{MIPS}IVF{fine},SQfp16", {"nprobe": p}) for p in probes]
        out += [(f"mips-IVF{fine},SQfp16 nprobe=40, unpadded", f"{MIPS_UNPADDED}IVF{fine},SQfp16", {"nprobe": 40})]
    return out


def _build(factory: str, xb: np.ndarray):
    """One candidate index, trained where it needs it and filled with xb (ids = positions in xb)."""
    import faiss

    unpadded = factory.startswith(MIPS_UNPADDED)
    mips = unpadded or factory.startswith(MIPS)
    points = post_index.stored(xb, xb.shape[1] + 1 if unpadded else None) if mips else xb
    n, d = points.shape
    metric = faiss.METRIC_L2 if mips else faiss.METRIC_INNER_PRODUCT
    index = faiss.index_factory(d, factory.removeprefix(MIPS).removeprefix(MIPS_UNPADDED), metric)
    if not index.is_trained:
        rng = np.random.default_rng(5)
        nlist = faiss.extract_index_ivf(index).nlist if "IVF" in factory else 1024
        sample = points[rng.choice(n, size=min(n, 40 * nlist), replace=False)]
        faiss.omp_set_num_threads(2)  # building is offline: use both cores
        index.train(sample)
    faiss.omp_set_num_threads(2)
    index.add(points)
    faiss.omp_set_num_threads(1)
    # The service searches through PostIndex, which appends the query's zeros for "mips-".
    return post_index.PostIndex(index, xb.shape[1]) if mips else index


def run(bundle_dir, ks=(100, 500), n_queries: int = 200, full: bool = True, hnsw: bool = True, log=print) -> dict:
    import faiss

    faiss.omp_set_num_threads(1)
    xb, xq, serving_type = _load(bundle_dir, n_queries)
    n, d = xb.shape
    kmax = max(ks)
    exact = faiss.IndexFlatIP(d)
    exact.add(xb)
    exact_scores, _ = exact.search(xq, kmax)  # batched: the ground truth, not timed
    rows = []
    built: dict[str, tuple] = {}
    for label, factory, params in _candidates(n, full, hnsw):
        if factory not in built:
            t0 = time.perf_counter()
            index = exact if factory == "Flat" else _build(factory, xb)
            build_s = time.perf_counter() - t0
            size_mb = len(faiss.serialize_index(getattr(index, "faiss", index))) / 2**20
            built[factory] = (index, build_s, size_mb)
            log(f"retrieval: built {factory} over {n} vectors in {build_s:.1f}s")
        index, build_s, size_mb = built[factory]
        if "nprobe" in params:
            faiss.extract_index_ivf(getattr(index, "faiss", index)).nprobe = params["nprobe"]
        if "efSearch" in params:
            faiss.downcast_index(index).hnsw.efSearch = params["efSearch"]
        row = {
            "index": label,
            "factory": factory,
            "params": params,
            "build_s": round(build_s, 2),
            "size_mb": round(size_mb, 1),
        }
        for k in ks:
            lat, ids = _latency(index, xq, k)
            lat_ms = lat * 1000
            row[f"recall@{k}"] = round(_recall(xb, xq, ids, exact_scores[:, k - 1], k), 4)
            row[f"p50_ms@{k}"] = round(float(np.percentile(lat_ms, 50)), 3)
            row[f"p99_ms@{k}"] = round(float(np.percentile(lat_ms, 99)), 3)
        rows.append(row)
    del built
    choice = _choose(rows, kmax)
    return {
        "vectors": n,
        "dim": d,
        "queries": len(xq),
        "ks": list(ks),
        "serving_index": f"IndexIDMap({serving_type})",
        "rows": rows,
        "choice": choice,
    }


def _choose(rows: list[dict], k: int, min_recall: float = 0.95) -> dict:
    """The fastest index at recall@k >= min_recall, beside exact search."""
    ok = [r for r in rows if r[f"recall@{k}"] >= min_recall]
    exact = next(r for r in rows if r["factory"] == "Flat")
    best = min(ok, key=lambda r: r[f"p50_ms@{k}"]) if ok else exact
    return {
        "k": k,
        "min_recall": min_recall,
        "fastest": best["index"],
        "fastest_p50_ms": best[f"p50_ms@{k}"],
        "fastest_recall": best[f"recall@{k}"],
        "exact_p50_ms": exact[f"p50_ms@{k}"],
        "speedup_vs_exact": round(exact[f"p50_ms@{k}"] / best[f"p50_ms@{k}"], 2) if best[f"p50_ms@{k}"] else None,
    }
