"""core/ids.py: id <-> row over memory-mapped arrays, exactly as a dict and a list would."""

from __future__ import annotations

import numpy as np

from core.ids import IdList, RowLookup, id_index


def test_row_lookup_agrees_with_a_dict_including_near_misses(tmp_path):
    ids = np.array(["p10", "p2", "p1", "é-post", "p100", "a"])
    sorted_ids, rows = id_index(ids)
    for name, arr in (("ids", ids), ("sorted", sorted_ids), ("rows", rows)):
        np.save(tmp_path / f"{name}.npy", arr)
    mm_ids = np.load(tmp_path / "ids.npy", mmap_mode="r")
    lookup = RowLookup(np.load(tmp_path / "sorted.npy", mmap_mode="r"), np.load(tmp_path / "rows.npy", mmap_mode="r"))
    truth = {p: i for i, p in enumerate(ids.tolist())}
    queries = ["p1", "p10", "p100", "p1000", "p", "", "é-post", "a", "zz", "p10 ", "p100000000000"]
    assert lookup.rows(queries).tolist() == [truth.get(q, -1) for q in queries]
    assert lookup.get("p2") == 1 and lookup.get("nope") is None and lookup.get("nope", -1) == -1
    assert "a" in lookup and "b" not in lookup and 3 not in lookup
    assert lookup["p100"] == 4
    assert lookup.rows([]).tolist() == []
    names = IdList(mm_ids)
    assert names[3] == "é-post" and isinstance(names[0], str) and names[1:3] == ["p2", "p1"]
    assert names.take(np.array([5, 0])) == ["a", "p10"] and list(names) == ids.tolist() and len(names) == 6
