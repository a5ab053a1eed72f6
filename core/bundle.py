"""Load and verify a model bundle.

A bundle is refused unless its manifest matches this contract and every file matches
its checksum: a corrupt or half-copied bundle must never replace a good one. Large
arrays and the FAISS index are memory-mapped, so several worker processes share one
copy in the page cache.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import contract, hotness, post_index, post_vectors
from core.ids import IdList, RowLookup, id_index
from core.neighbours import CoEngaged, co_engaged
from core.retrieval import POPULAR_COMMUNITIES, hot_lists
from core.scoring import Scorer, load_scorer


class BundleError(RuntimeError):
    """The bundle cannot be served (missing, corrupt, or of another schema)."""


@dataclass(eq=False)
class Bundle:
    path: Path
    manifest: contract.Manifest
    arrays: dict[str, np.ndarray]
    index: post_index.PostIndex  # nearest posts by inner product, ids = post rows
    scorer: Scorer
    post_ids: IdList  # row -> id, over the memory-mapped ids (core/ids.py)
    post_row: RowLookup  # id -> row, by binary search over shared arrays
    community_ids: list[str]  # communities are few: plain Python
    community_row: dict[str, int]
    user_ids: IdList
    user_row: RowLookup
    community_recent: dict[int, np.ndarray]  # community -> indexed rows, newest first
    community_hot: dict[int, np.ndarray]  # community -> rows with hotness, hottest first (at most HOT_LIST_KEEP)
    affinity_offsets: np.ndarray  # CSR over users: user u's heaviest communities are
    affinity_communities: np.ndarray  # affinity_communities[offsets[u]:offsets[u + 1]], heaviest first,
    affinity_weights: np.ndarray  # with their weights

    @property
    def version(self) -> str:
        return self.manifest.model_version

    def communities_of(self, user_row: int) -> np.ndarray:
        """The user's heaviest communities as training saw them, heaviest first: which
        in-network lists to read (the Redis user record stays the authority on
        membership for privacy)."""
        return self.affinity_communities[self.affinity_offsets[user_row] : self.affinity_offsets[user_row + 1]]

    def community_weights_of(self, user_row: int) -> dict[int, float]:
        """community -> the user's weight there (the community_weight feature)."""
        lo, hi = self.affinity_offsets[user_row], self.affinity_offsets[user_row + 1]
        return dict(zip(self.affinity_communities[lo:hi].tolist(), self.affinity_weights[lo:hi].tolist()))

    def co_engaged(self, user_id: str) -> CoEngaged | None:
        """The user's co-engagement with the posts near their history as trained
        (core/neighbours.py), or None for a user this bundle does not know."""
        row = self.user_row.get(user_id)
        if row is None:
            return None
        return co_engaged(
            self[contract.USER_HISTORY_FILE][row],
            self[contract.POST_NEIGHBOURS_FILE],
            self[contract.POST_NEIGHBOUR_SIMS_FILE],
        )

    def community_vector(self, communities: list[int], weights: list[float] | None = None) -> np.ndarray:
        """A stand-in user vector for a user the model has not seen: the (weighted) mean
        of the vectors of their communities. Until the next training places them, it
        retrieves posts near their groups, exactly as a post's prior sits near its group."""
        factors = np.asarray(self[contract.COMMUNITY_FACTORS_FILE])
        if not communities:
            return np.zeros(factors.shape[1], dtype=np.float32)
        w = np.ones(len(communities), np.float32) if weights is None else np.asarray(weights, np.float32)
        return (w @ factors[np.asarray(communities, dtype=np.int64)] / max(float(w.sum()), 1e-9)).astype(np.float32)

    @functools.cached_property
    def popular_communities(self) -> list[int]:
        """The public communities with the most engagement heat at the data end, hottest
        first (at most POPULAR_COMMUNITIES): where "popular now" comes from for a user
        with no groups at all."""
        hot = np.asarray(self[contract.POST_HOT_FILE], dtype=np.float64)
        heat = np.bincount(
            np.asarray(self[contract.POST_COMMUNITY_FILE]), weights=hot, minlength=len(self.community_ids)
        )
        heat[np.asarray(self[contract.COMMUNITY_PRIVATE_FILE])] = -1.0
        order = np.argsort(-heat, kind="stable")
        return [int(c) for c in order[:POPULAR_COMMUNITIES] if heat[c] >= 0]

    @property
    def hot_half_life_s(self) -> float:
        return float(self.manifest.params.get("hot_half_life_h", 24.0)) * 3600.0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def new_post_vectors(self, communities: np.ndarray, authors: np.ndarray) -> np.ndarray:
        """Where posts nobody has engaged with yet start (core.post_vectors.post_prior):
        their community's vector blended with the author's KnownFor vector, if any."""
        communities = np.asarray(communities, dtype=np.int64)
        authors = np.asarray(authors, dtype=np.int64)
        known = authors >= 0
        author_vecs = np.asarray(self[contract.AUTHOR_VECTORS_FILE])[np.maximum(authors, 0)]
        has_author = known & np.any(author_vecs != 0, axis=1)
        return post_vectors.post_prior(
            np.asarray(self[contract.COMMUNITY_FACTORS_FILE])[communities], author_vecs, has_author
        )

    def records_at(self, rows: np.ndarray) -> np.ndarray:
        """The Redis post records (contract.POST_DTYPE) of these rows as the bundle knows
        them: what publish writes, and what the hot path falls back to without Redis."""
        b = self
        rec = np.zeros(len(rows), dtype=contract.POST_DTYPE)
        rec["row"] = rows
        rec["community"] = b[contract.POST_COMMUNITY_FILE][rows]
        rec["author"] = b[contract.POST_AUTHOR_FILE][rows]
        private = (
            np.asarray(b[contract.COMMUNITY_PRIVATE_FILE])[rec["community"]] | b[contract.POST_MEMBERS_ONLY_FILE][rows]
        )
        rec["flags"] = (
            contract.FLAG_PRESENT
            | np.where(b[contract.POST_DELETED_FILE][rows], contract.FLAG_DELETED, 0)
            | np.where(private, contract.FLAG_PRIVATE, 0)
        ).astype(np.uint8)
        rec["created_at"] = b[contract.POST_CREATED_AT_FILE][rows]
        rec["author_trust"] = b[contract.POST_AUTHOR_TRUST_FILE][rows]
        rec["positives"] = b[contract.POST_POSITIVES_FILE][rows]
        rec["negatives"] = b[contract.POST_NEGATIVES_FILE][rows]
        rec["views"] = b[contract.POST_VIEWS_FILE][rows]
        rec["hot"] = b[contract.POST_HOT_FILE][rows]
        rec["hot_at"] = b.data_end_ts
        last_active = b.arrays.get(contract.POST_LAST_ACTIVE_FILE)
        if last_active is not None:
            rec["hot"], rec["hot_at"] = hotness.as_of_last_activity(
                rec["hot"], b.data_end_ts, np.asarray(last_active)[rows], b.hot_half_life_s
            )
        engagers = b.arrays.get(contract.POST_MEMBER_ENGAGERS_FILE)
        if engagers is not None:
            rec["member_engagers"] = np.clip(np.asarray(engagers)[rows], 0, np.iinfo(np.uint16).max)
        return rec

    @property
    def data_end_ts(self) -> int:
        return int(self.manifest.params.get("data_end_ts", 0))


def load_bundle(path: Path, verify: bool = True) -> Bundle:
    path = Path(path)
    manifest_path = path / contract.MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"{path}: no {contract.MANIFEST_FILE} (not a bundle, or not completely written)")
    try:
        manifest = contract.Manifest.from_json(manifest_path.read_text(), str(manifest_path))
    except contract.ContractError as exc:
        raise BundleError(str(exc)) from None
    if manifest.model_version != path.name:
        raise BundleError(f"{path}: manifest says version {manifest.model_version}")
    for name in contract.REQUIRED_FILES:
        if name not in manifest.files or not (path / name).is_file():
            raise BundleError(f"{path}: {name} is missing")
    if verify:
        for name, meta in manifest.files.items():
            file = path / name
            if (
                not file.is_file()
                or file.stat().st_size != meta.get("bytes")
                or contract.file_digest(file) != meta.get("sha256")
            ):
                raise BundleError(
                    f"{path}: {name} does not match its checksum in the manifest (corrupt or half-written)"
                )
    arrays = {}
    try:
        for name, kind in contract.ARRAY_FILES.items():
            arr = np.load(path / name, mmap_mode="r", allow_pickle=False)
            if arr.dtype.kind != kind:
                raise BundleError(f"{path}: {name} has dtype {arr.dtype}, expected kind {kind!r}")
            # A plain ndarray view of the memory map (the same shared pages): indexing an
            # np.memmap runs Python-level __getitem__ / __array_finalize__ on every call,
            # ~19 us of a request's co-engagement lookup (3 gathers) at 1M posts.
            arrays[name] = np.asarray(arr)
        for name in contract.OPTIONAL_POST_ARRAYS:
            optional = path / name
            if optional.is_file():
                arr = np.load(optional, mmap_mode="r", allow_pickle=False)
                if arr.dtype.kind not in "iu" or arr.shape != (len(arrays[contract.POST_IDS_FILE]),):
                    raise BundleError(f"{path}: {optional.name} has dtype {arr.dtype} and shape {arr.shape}")
                arrays[optional.name] = np.asarray(arr)
        scorer = load_scorer((path / contract.SCORER_FILE).read_text())
        raw_index = post_index.read_faiss(path / contract.INDEX_FILE)
    except (ValueError, OSError, RuntimeError) as exc:
        raise BundleError(f"{path}: {exc}") from None
    n_users, n_posts, n_comm = (
        len(arrays[f]) for f in (contract.USER_IDS_FILE, contract.POST_IDS_FILE, contract.COMMUNITY_IDS_FILE)
    )
    d = arrays[contract.USER_FACTORS_FILE].shape[1]
    checks = {
        contract.USER_FACTORS_FILE: (n_users, d),
        contract.AUTHOR_VECTORS_FILE: (n_users, d),
        contract.COMMUNITY_FACTORS_FILE: (n_comm, d),
        contract.POST_VECTORS_FILE: (n_posts, d),
        contract.COMMUNITY_PRIVATE_FILE: (n_comm,),
        contract.COMMUNITY_SIZE_FILE: (n_comm,),
    }
    for name in (
        contract.POST_COMMUNITY_FILE,
        contract.POST_AUTHOR_FILE,
        contract.POST_CREATED_AT_FILE,
        contract.POST_DELETED_FILE,
        contract.POST_MEMBERS_ONLY_FILE,
        contract.POST_AUTHOR_TRUST_FILE,
        contract.POST_POSITIVES_FILE,
        contract.POST_NEGATIVES_FILE,
        contract.POST_VIEWS_FILE,
        contract.POST_HOT_FILE,
    ):
        checks[name] = (n_posts,)
    for name in (contract.POST_NEIGHBOURS_FILE, contract.POST_NEIGHBOUR_SIMS_FILE):
        if arrays[name].ndim != 2 or arrays[name].shape[0] != n_posts:
            raise BundleError(f"{path}: {name} has shape {arrays[name].shape}, expected ({n_posts}, k)")
    if arrays[contract.USER_HISTORY_FILE].ndim != 2 or arrays[contract.USER_HISTORY_FILE].shape[0] != n_users:
        raise BundleError(f"{path}: {contract.USER_HISTORY_FILE} has shape {arrays[contract.USER_HISTORY_FILE].shape}")
    n_aff = len(arrays[contract.AFFINITY_USER_FILE])
    for name in (contract.AFFINITY_COMMUNITY_FILE, contract.AFFINITY_WEIGHT_FILE):
        checks[name] = (n_aff,)
    for name, shape in checks.items():
        if arrays[name].shape != shape:
            raise BundleError(f"{path}: {name} has shape {arrays[name].shape}, expected {shape}")
    try:
        index = post_index.PostIndex(raw_index, d)
    except ValueError as exc:
        raise BundleError(f"{path}: {exc}") from None
    id_indexes = _id_indexes(path, arrays)
    community_ids = arrays[contract.COMMUNITY_IDS_FILE].tolist()
    a_user = np.asarray(arrays[contract.AFFINITY_USER_FILE])
    if len(a_user) and (np.diff(a_user) < 0).any():
        raise BundleError(f"{path}: {contract.AFFINITY_USER_FILE} must be sorted by user")
    return Bundle(
        path=path,
        manifest=manifest,
        arrays=arrays,
        index=index,
        scorer=scorer,
        post_ids=IdList(arrays[contract.POST_IDS_FILE]),
        post_row=RowLookup(*id_indexes[contract.POST_IDS_FILE]),
        community_ids=community_ids,
        community_row={c: i for i, c in enumerate(community_ids)},
        user_ids=IdList(arrays[contract.USER_IDS_FILE]),
        user_row=RowLookup(*id_indexes[contract.USER_IDS_FILE]),
        community_recent=_recent_by_community(index, arrays),
        community_hot=hot_lists(np.asarray(arrays[contract.POST_HOT_FILE]), arrays[contract.POST_COMMUNITY_FILE]),
        affinity_offsets=np.searchsorted(a_user, np.arange(n_users + 1)),
        affinity_communities=np.asarray(arrays[contract.AFFINITY_COMMUNITY_FILE]),
        affinity_weights=np.asarray(arrays[contract.AFFINITY_WEIGHT_FILE]),
    )


def _id_indexes(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """ids file -> (ids sorted, row of each): memory-mapped from the bundle (shared by every
    worker), or computed here for a bundle written before training wrote them."""
    out = {}
    for ids_file, (sorted_file, rows_file) in contract.ID_INDEX_FILES.items():
        ids = arrays[ids_file]
        if (path / sorted_file).is_file() and (path / rows_file).is_file():
            sorted_ids = np.load(path / sorted_file, mmap_mode="r", allow_pickle=False)
            rows = np.load(path / rows_file, mmap_mode="r", allow_pickle=False)
            if (
                sorted_ids.dtype.kind != "U"
                or sorted_ids.shape != ids.shape
                or rows.dtype.kind not in "iu"
                or (rows.shape != ids.shape)
            ):
                raise BundleError(f"{path}: {sorted_file} / {rows_file} do not match {ids_file}")
            out[ids_file] = (sorted_ids, rows)
        else:
            out[ids_file] = id_index(np.asarray(ids))
    return out


def _recent_by_community(index: post_index.PostIndex, arrays: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """In-network candidates: the indexed (servable) posts of each community, newest first."""
    rows = index.rows()
    comm = np.asarray(arrays[contract.POST_COMMUNITY_FILE])[rows]
    created = np.asarray(arrays[contract.POST_CREATED_AT_FILE])[rows]
    order = np.lexsort((-created, comm))
    rows, comm = rows[order], comm[order]
    cuts = np.flatnonzero(np.diff(comm)) + 1
    return {int(c[0]): r for c, r in zip(np.split(comm, cuts), np.split(rows, cuts)) if len(r)}
