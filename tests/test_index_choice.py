"""training/index.py: the serving index is chosen by measurement, recall first."""

from __future__ import annotations

import numpy as np


def test_index_choice_measures_every_list_coding_and_keeps_its_recall_promise():
    from training.index import MIN_RECALL, _recall, _search_ms, choose_index

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, 16)).astype(np.float32)
    vectors = (centres[rng.integers(0, 40, 30_000)] + 0.3 * rng.normal(size=(30_000, 16))).astype(np.float32)
    queries = rng.normal(size=(30, 16)).astype(np.float32)
    index, choice = choose_index(vectors, queries, k=100)
    kinds = [m["kind"] for m in choice.measured]
    assert (
        kinds[0] == "flat"
        and any(",sq8," in k for k in kinds)
        and any(",fp16," in k for k in kinds)
        and any(",nprobe=" in k and ",sq8," not in k and ",fp16," not in k for k in kinds)
    )
    import faiss

    from core.post_index import PostIndex

    exact = faiss.IndexFlatIP(16)
    exact.add(vectors)
    truth, _ = _search_ms(exact, queries, 100)
    # Searched as the service searches it, whichever layout won (a "mips-" index holds
    # padded points and wants padded queries).
    found, _ = _search_ms(PostIndex(index, 16), queries, 100)
    assert _recall(found, truth) >= MIN_RECALL and choice.recall >= MIN_RECALL


def _spread_vectors(n: int = 5_000, d: int = 8, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Post vectors whose norms spread over two orders of magnitude (as ALS post vectors'
    do), and user vectors."""
    rng = np.random.default_rng(seed)
    vectors = (rng.normal(size=(n, d)) * np.exp(rng.normal(0, 1.2, size=(n, 1)))).astype(np.float32)
    return vectors, rng.normal(size=(20, d)).astype(np.float32)


def test_mips_layout_finds_exactly_the_largest_inner_products(tmp_path):
    """core/post_index.py's layout (d + 1 dimensions padded to a multiple of 8: 16 for 8
    factors), written and read back as a bundle's index file:
    an exact L2 search over the stored points answers the exact inner-product top k, with
    the bundle rows as ids (up to float32 rounding of the distances, which are offset by
    the largest norm: near-ties may swap, never a post far from the top k)."""
    import faiss

    from core import post_index

    vectors, queries = _spread_vectors()
    n, d = vectors.shape
    rows = np.arange(n, dtype=np.int64) * 3 + 1  # ids are bundle rows, not positions
    assert post_index.width(d) == 16 and post_index.stored(vectors).shape == (n, 16)
    index = faiss.IndexIDMap(faiss.IndexFlatL2(post_index.width(d)))
    index.add_with_ids(post_index.stored(vectors), rows)
    faiss.write_index(index, str(tmp_path / "posts.faiss"))
    served = post_index.read(tmp_path / "posts.faiss", d)
    assert served.mips and served.d == d and served.ntotal == n
    assert np.array_equal(np.sort(served.rows()), rows)
    _, got = served.search(queries, 50)
    exact = vectors @ queries.T  # (n, queries)
    max_norm = float(np.linalg.norm(vectors, axis=1).max())
    for j, q in enumerate(queries):
        best = np.sort(exact[:, j])[::-1][:50]
        found = exact[(got[j] - 1) // 3, j]  # positions of the returned rows
        assert np.allclose(found, best, rtol=0, atol=1e-5 * max_norm * float(np.linalg.norm(q)))


def test_a_bundle_of_the_unpadded_layout_still_serves(tmp_path):
    """A "mips-" index written before the padding holds d + 1 dimensions: the service
    searches it with queries of d + 1, and gets the same posts as from the padded one."""
    import faiss

    from core import post_index

    vectors, queries = _spread_vectors(n=3_000)
    n, d = vectors.shape
    answers = []
    for dim in (d + 1, post_index.width(d)):
        index = faiss.IndexIDMap(faiss.IndexFlatL2(dim))
        index.add_with_ids(post_index.stored(vectors, dim), np.arange(n, dtype=np.int64))
        served = post_index.PostIndex(index, d)
        assert served.mips
        answers.append(served.search(queries, 20)[1])
    exact = np.argsort(-(vectors @ queries.T), axis=0, kind="stable")[:20].T
    assert np.array_equal(np.sort(answers[0], axis=1), np.sort(exact, axis=1))
    assert np.array_equal(np.sort(answers[1], axis=1), np.sort(exact, axis=1))


def test_post_index_refuses_an_index_of_another_dimension():
    import faiss
    import pytest

    from core.post_index import PostIndex

    assert not PostIndex(faiss.IndexFlatIP(8), 8).mips
    with pytest.raises(ValueError, match="dimension 10"):
        PostIndex(faiss.IndexFlatIP(10), 8)


def test_a_mips_choice_is_written_in_its_layout_and_keeps_its_recall(tmp_path):
    """build_index writes the kind choose_index picked; a "mips-" pick is stored with one
    dimension more, padded to 24, and the index the service reads back keeps the measured
    recall."""
    from core import post_index
    from training.index import MIN_RECALL, build_index

    vectors, queries = _spread_vectors(n=40_000, d=16, seed=9)
    rows = np.arange(len(vectors), dtype=np.int64)
    choice = build_index(vectors, rows, tmp_path / "posts.faiss", queries)
    kinds = [m["kind"] for m in choice.measured]
    assert any(k.startswith("mips-") for k in kinds)
    served = post_index.read(tmp_path / "posts.faiss", 16)
    assert served.mips == choice.kind.startswith("mips-")
    assert served.faiss.d == (24 if served.mips else 16)
    _, got = served.search(queries, 100)
    exact = np.argsort(-(vectors @ queries.T), axis=0)[:100].T
    recall = np.mean([len(np.intersect1d(g, e)) / 100 for g, e in zip(got, exact)])
    assert recall >= MIN_RECALL, (choice.kind, recall)
