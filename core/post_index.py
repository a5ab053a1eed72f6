"""The post index as both sides use it: nearest posts by inner product, FAISS ids = bundle rows.

Two layouts of the FAISS index, told apart by its dimension against the factors' d:

- d: an inner-product index (IndexFlatIP, or IVF lists under METRIC_INNER_PRODUCT),
  searched with the user's vector as it is;
- width(d) ("mips-" in training's index kinds): the inner-product search reduced to a
  nearest-neighbour one. Each post vector x is stored as [x, sqrt(M^2 - |x|^2), 0...], M
  the largest norm indexed, and a query q is searched as [q, 0, 0...]; then
  |q' - x'|^2 = |q|^2 + M^2 - 2 q.x, so the nearest stored points are exactly the largest
  inner products. The zeros pad d + 1 to a multiple of LANES (bundles from before the
  padding hold d + 1 and still serve). Why: ALS post vectors' norms spread widely (0.07 to 12 at 1M posts), and
  k-means lists under inner product partition them poorly (4x more lists than sqrt(n)
  reached recall 0.44 at nprobe 64), while on the sphere of radius M finer lists work:
  training's measurement on the 1M-post bench world, 6 sqrt(n) lists reach recall@500
  0.959 at nprobe 40 in 0.40 ms a query, against 0.955 in 0.93 ms for sqrt(n) half-float
  lists under inner product at nprobe 64 (training/index.py measures both on every
  training and keeps the faster one that keeps the recall).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# FAISS scans half-float lists with SIMD code only when the dimension is a multiple of 8
# (AVX2's eight lanes); at 32 factors the "mips-" layout's 33 took the scalar path.
# Measured on the 1M-post bench world (mips-IVF5964, nprobe 40, 400 user vectors, one
# thread): 370-390 us a query at 33 dimensions, 148-190 us at 40 (and at 48, no faster),
# with the same lists probed and 99.6% of the same top 500.
LANES = 8


def width(d: int) -> int:
    """The dimension of a "mips-" index over d-dimensional vectors: d + 1, padded."""
    return -(-(d + 1) // LANES) * LANES


def stored(vectors: np.ndarray, dim: int | None = None) -> np.ndarray:
    """The (n, dim) points a "mips-" index of dimension `dim` (default: width(d); d + 1 is
    the unpadded layout) holds for these post vectors (all of them indexed at once: M is
    their largest norm)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    dim = width(d) if dim is None else dim
    norms2 = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
    extra = np.sqrt(np.maximum(norms2.max(initial=0.0) - norms2, 0.0)).astype(np.float32)
    return np.hstack([vectors, extra[:, None], np.zeros((n, dim - d - 1), np.float32)])


def as_query(queries: np.ndarray, dim: int | None = None) -> np.ndarray:
    """Queries of a "mips-" index of dimension `dim` (default: width(d)): zeros appended."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n, d = queries.shape
    dim = width(d) if dim is None else dim
    return np.hstack([queries, np.zeros((n, dim - d), np.float32)])


class PostIndex:
    """The bundle's FAISS index behind one `search` by inner product, whatever its layout."""

    def __init__(self, index, d: int):
        if index.d not in (d, d + 1, width(d)):
            raise ValueError(f"index dimension {index.d} is none of the factors' {d}, {d + 1} or {width(d)}")
        self.faiss = index
        self.d = d  # the post and user vectors' dimension
        self.mips = index.d != d

    @property
    def ntotal(self) -> int:
        return self.faiss.ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the k nearest posts of each query, as faiss answers; the
        scores of a "mips-" index are squared distances (smaller is nearer), only the
        rows and their order mean the same in both layouts."""
        return self.faiss.search(as_query(queries, self.faiss.d) if self.mips else queries, k)

    def rows(self) -> np.ndarray:
        """The bundle rows the index holds."""
        import faiss

        index = self.faiss
        if hasattr(index, "id_map"):
            return faiss.vector_to_array(index.id_map).astype(np.int64)
        return np.arange(index.ntotal, dtype=np.int64)


def read_faiss(path: Path):
    """The FAISS index file of a bundle, memory-mapped where FAISS can (workers share its
    pages), else read into memory."""
    import faiss

    flag = getattr(faiss, "IO_FLAG_MMAP_IFC", 0) or getattr(faiss, "IO_FLAG_MMAP", 0)
    try:
        return faiss.read_index(str(path), flag)
    except RuntimeError:
        return faiss.read_index(str(path))


def read(path: Path, d: int) -> PostIndex:
    return PostIndex(read_faiss(path), d)
