"""Comparisons that justify the design, measured on the bench world:

1. hydration of N candidates: the service's layout (one packed value per post, one MGET,
   one frombuffer) against a pipeline of N GETs of the same packed values, and against a
   per-field layout (one hash per post, a pipeline of N HMGETs, fields parsed in Python).
   The hashes are written for this comparison under a bench-only key prefix and deleted.
2. top-K retrieval: FAISS exact inner-product search against a numpy brute-force scan
   (matrix-vector product + argpartition) over the same vectors, one thread each.
"""

from __future__ import annotations

import time

import numpy as np
import redis

from core import contract, post_index

HASH_PREFIX = "nfbench:h:"
FIELDS = [name for name in contract.POST_DTYPE.names if not name.startswith("_")]


def _time(fn, seconds: float, max_iter: int = 100_000) -> dict:
    fn()  # warm
    lat = []
    end = time.perf_counter() + seconds
    while len(lat) < max_iter:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        fn()
        lat.append(time.perf_counter() - t0)
    ms = np.array(lat) * 1000
    return {
        "n": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def hydration(url: str, version: str, post_ids: list[str], n: int = 500, seconds: float = 2.0, seed: int = 1) -> dict:
    client = redis.Redis.from_url(url, socket_timeout=10)
    rng = np.random.default_rng(seed)
    pool = [post_ids[i] for i in rng.choice(len(post_ids), size=min(len(post_ids), 20 * n), replace=False)]
    # Per-field copies of the same records, under a prefix the service never reads.
    records = contract.decode_posts(client.mget([contract.post_key(version, p) for p in pool]))
    pipe = client.pipeline(transaction=False)
    for pid, rec in zip(pool, records):
        pipe.hset(HASH_PREFIX + pid, mapping={f: str(rec[f].item()) for f in FIELDS})
    pipe.execute()
    sets = [[pool[i] for i in rng.choice(len(pool), size=n, replace=False)] for _ in range(16)]
    it = iter(range(1 << 62))

    def packed_mget():
        ids = sets[next(it) % 16]
        return contract.decode_posts(client.mget([contract.post_key(version, p) for p in ids]))

    def packed_pipeline():
        ids = sets[next(it) % 16]
        p = client.pipeline(transaction=False)
        for pid in ids:
            p.get(contract.post_key(version, pid))
        return contract.decode_posts(p.execute())

    def field_hashes():
        ids = sets[next(it) % 16]
        p = client.pipeline(transaction=False)
        for pid in ids:
            p.hmget(HASH_PREFIX + pid, FIELDS)
        rows = p.execute()
        out = np.zeros(len(rows), dtype=contract.POST_DTYPE)
        for j, f in enumerate(FIELDS):
            kind = contract.POST_DTYPE[f].kind
            conv = float if kind == "f" else int
            out[f] = [conv(r[j]) if r[j] is not None else 0 for r in rows]
        return out

    try:
        out = {
            "records": n,
            "packed_mget": _time(packed_mget, seconds),
            "packed_get_pipeline": _time(packed_pipeline, seconds),
            "field_hashes_hmget_pipeline": _time(field_hashes, seconds),
        }
    finally:
        for i in range(0, len(pool), 1000):
            client.delete(*[HASH_PREFIX + p for p in pool[i : i + 1000]])
        client.close()
    base = out["packed_mget"]["p50_ms"]
    for k in ("packed_get_pipeline", "field_hashes_hmget_pipeline"):
        out[k]["x_packed_mget_p50"] = round(out[k]["p50_ms"] / base, 2) if base else None
    return out


def faiss_vs_numpy(bundle_dir, k: int = 500, n_queries: int = 100, seed: int = 3) -> dict:
    import faiss
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(1)
    vectors = np.load(bundle_dir / contract.POST_VECTORS_FILE, mmap_mode="r")
    index = post_index.read(bundle_dir / contract.INDEX_FILE, vectors.shape[1])  # what the service serves
    rows = index.rows()
    xb = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    users = np.load(bundle_dir / contract.USER_FACTORS_FILE)
    rng = np.random.default_rng(seed)
    xq = np.ascontiguousarray(
        users[rng.choice(len(users), size=min(n_queries, len(users)), replace=False)], dtype=np.float32
    )

    def numpy_topk(q):
        s = xb @ q
        top = np.argpartition(-s, k - 1)[:k]
        return rows[top[np.argsort(-s[top])]]

    lat_f, lat_n, agree = [], [], 0
    with threadpool_limits(1):
        for q in xq:
            t0 = time.perf_counter()
            _, labels = index.search(q[None, :], k)
            lat_f.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            top = numpy_topk(q)
            lat_n.append(time.perf_counter() - t0)
            agree += len(np.intersect1d(labels[0], top))
    f, nump = np.array(lat_f) * 1000, np.array(lat_n) * 1000
    out = {
        "vectors": len(xb),
        "k": k,
        "queries": len(xq),
        "threads": 1,
        "faiss_flat_ip": {"p50_ms": round(float(np.median(f)), 3), "p99_ms": round(float(np.percentile(f, 99)), 3)},
        "numpy_scan": {"p50_ms": round(float(np.median(nump)), 3), "p99_ms": round(float(np.percentile(nump, 99)), 3)},
        "same_ids_share": round(agree / (k * len(xq)), 4),
    }
    out["numpy_x_faiss_p50"] = round(out["numpy_scan"]["p50_ms"] / out["faiss_flat_ip"]["p50_ms"], 2)
    return out
