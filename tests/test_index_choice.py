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

    exact = faiss.IndexFlatIP(16)
    exact.add(vectors)
    truth, _ = _search_ms(exact, queries, 100)
    found, _ = _search_ms(index, queries, 100)
    assert _recall(found, truth) >= MIN_RECALL and choice.recall >= MIN_RECALL
