"""Stage 5: the FAISS index over post vectors, saved as a file served memory-mapped.

Only posts a feed could still show are indexed: not deleted and younger than the index
window at the end of the data. Older posts stay in the bundle (evaluation, re-rank mode)
but would only crowd fresh ones out of the top-k. FAISS ids are bundle rows.
Exact inner-product search (IndexFlatIP): at this catalogue size it is exact and fast
enough; benchmarks/ compares approximate indexes on the trained vectors.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DAY = 86_400


def servable_rows(created_at: np.ndarray, deleted: np.ndarray, end_ts: int, window_days: float) -> np.ndarray:
    return np.flatnonzero(~deleted & (created_at >= end_ts - window_days * DAY)).astype(np.int64)


def build_index(vectors: np.ndarray, rows: np.ndarray, path: Path) -> int:
    import faiss

    d = vectors.shape[1]
    index = faiss.IndexIDMap(faiss.IndexFlatIP(d))
    if len(rows):
        index.add_with_ids(np.ascontiguousarray(vectors[rows], dtype=np.float32), rows)
    faiss.write_index(index, str(path))
    return index.ntotal
