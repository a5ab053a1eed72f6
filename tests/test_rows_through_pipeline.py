"""Bundle rows through the hot path: retrieve leaves posts that came as ids unresolved,
hydrate_candidates takes their rows from the records it reads, and ids are made only for
the rows that can still become candidates. Exact expected outcomes on hand-made inputs."""

from __future__ import annotations

import numpy as np

from core import contract
from core.ids import IdList, RowLookup, id_index
from service.pipeline import RankContext, RankQuery
from service.stages.hydrate import lookup_rows, resolve_rows
from service.stages.retrieve import ANN_MARGIN, UNRESOLVED, add_nearest, add_rows


class _Ids:
    """The two id views of a bundle that these helpers use."""

    def __init__(self, ids: list[str]):
        array = np.array(ids)
        self.post_ids = IdList(array)
        self.post_row = RowLookup(*id_index(array))


def _ctx(rows: list[int], post_ids: list[str], bundle=None) -> RankContext:
    ctx = RankContext(query=RankQuery(user_id="u", limit=5), bundle=bundle, now=0.0)
    ctx.rows = np.array(rows, dtype=np.int64)
    ctx.post_ids = post_ids
    return ctx


def test_add_rows_appends_new_rows_in_order_up_to_k():
    b = _Ids([f"p{i}" for i in range(10)])
    found = {"p3": UNRESOLVED, "live": UNRESOLVED}
    add_rows(found, b, np.array([3, 7, 1, 3, 9, 2]), k=5)
    assert found == {"p3": UNRESOLVED, "live": UNRESOLVED, "p7": 7, "p1": 1, "p9": 9}
    assert list(found) == ["p3", "live", "p7", "p1", "p9"]


def test_add_rows_without_k_takes_every_new_row():
    b = _Ids([f"p{i}" for i in range(10)])
    found = {"p2": UNRESOLVED}
    add_rows(found, b, np.array([2, 5, 2, 0]))
    assert list(found.items()) == [("p2", UNRESOLVED), ("p5", 5), ("p0", 0)]


def test_add_rows_stops_at_k_even_when_already_full():
    b = _Ids([f"p{i}" for i in range(4)])
    found = {"p0": 0, "p1": 1}
    add_rows(found, b, np.array([2, 3]), k=2)
    assert list(found) == ["p0", "p1"]
    add_rows(found, b, np.array([0, 1, 2, 3]), k=3)  # the repeats cost a second, shorter pass
    assert list(found.items()) == [("p0", 0), ("p1", 1), ("p2", 2)]


def _ivf(n: int = 4000, d: int = 8):
    """A real IVF index over random vectors, ids = rows (as the bundle's)."""
    import faiss

    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, 16, faiss.METRIC_INNER_PRODUCT)
    ivf.train(vectors)
    ivf.nprobe = 4
    index = faiss.IndexIDMap(ivf)
    index.add_with_ids(vectors, np.arange(n, dtype=np.int64))
    return index, rng.normal(size=d).astype(np.float32)


def _one_search(found: dict, b, index, vec, k: int) -> dict:
    found = dict(found)
    _, labels = index.search(vec[None, :], k)
    add_rows(found, b, labels[0][labels[0] >= 0], k)
    return found


def test_add_nearest_equals_one_search_for_k_with_little_overlap():
    index, vec = _ivf()
    b = _Ids([f"p{i}" for i in range(index.ntotal)])
    found = {f"x{i}": UNRESOLVED for i in range(300)}  # in-network candidates, not in FAISS
    got = dict(found)
    add_nearest(got, index, b, vec, 500)
    assert list(got.items()) == list(_one_search(found, b, index, vec, 500).items())


def test_add_nearest_searches_again_for_k_when_the_margin_is_short():
    """More of FAISS's nearest already found than the margin allows: the answer is still
    exactly one search for k (order included)."""
    index, vec = _ivf()
    b = _Ids([f"p{i}" for i in range(index.ntotal)])
    _, labels = index.search(vec[None, :], 500)
    overlap = labels[0][: 100 + ANN_MARGIN]  # FAISS's nearest, already candidates
    found = {f"p{r}": int(r) for r in overlap} | {f"x{i}": UNRESOLVED for i in range(200)}
    got = dict(found)
    add_nearest(got, index, b, vec, 500)
    assert len(got) == 500
    assert list(got.items()) == list(_one_search(found, b, index, vec, 500).items())


def test_resolve_rows_takes_the_records_row_and_minus_one_without_a_record():
    ctx = _ctx([4, UNRESOLVED, UNRESOLVED, UNRESOLVED], ["p4", "p8", "live", "gone"])
    posts = np.zeros(4, dtype=contract.POST_DTYPE)
    posts["row"] = [4, 8, -1, 77]
    posts["flags"] = [contract.FLAG_PRESENT, contract.FLAG_PRESENT, contract.FLAG_PRESENT, 0]
    ctx.posts = posts
    resolve_rows(ctx)
    assert ctx.rows.dtype == np.int64
    assert ctx.rows.tolist() == [4, 8, -1, -1]


def test_lookup_rows_asks_the_bundle_for_unresolved_ids_only():
    b = _Ids(["a", "b", "c"])
    ctx = _ctx([2, UNRESOLVED, UNRESOLVED, -1], ["c", "a", "zz", "live"], bundle=b)
    lookup_rows(ctx)
    assert ctx.rows.tolist() == [2, 0, -1, -1]


def test_live_index_finds_bundle_posts_by_row_and_live_posts_by_id():
    from service.live_index import LiveIndex

    b = _Ids([f"p{i}" for i in range(6)])
    index = LiveIndex("v", 2, capacity=2, post_row=b.post_row)

    def put(entry: int, post_id: str, x: float) -> None:
        vec = np.array([x, -x], dtype="<f4").tobytes()
        index.apply(f"{entry}-0", {contract.LIVE_POST.encode(): post_id.encode(), contract.LIVE_VECTOR.encode(): vec})

    put(1, "p4", 1.0)
    put(2, "new", 2.0)
    put(3, "p1", 3.0)
    ids, rows = ["p1", "p2", "new", "p4", "gone"], np.array([1, 2, -1, 4, -1])
    by_id = index.vectors_for(ids)
    pending = index.vectors_for(ids, rows)  # rows not resolved yet: the ids decide
    index.resolve_rows()
    by_row = index.vectors_for(ids, rows)
    for known, vectors in (by_id, pending, by_row):
        assert known.tolist() == [True, False, True, True, False]
        assert vectors[:, 0].tolist() == [3.0, 2.0, 1.0]
    put(4, "p4", 5.0)  # a moved post keeps its slot
    put(5, "p2", 6.0)  # a new bundle post: by id until resolved, then by row
    assert index.vectors_for(ids, rows)[1][:, 0].tolist() == [3.0, 6.0, 2.0, 5.0]
    index.resolve_rows()
    assert index._slot_of_row.tolist() == [-1, 2, 3, -1, 0, -1]
    assert index.vectors_for(ids, rows)[1][:, 0].tolist() == [3.0, 6.0, 2.0, 5.0]
