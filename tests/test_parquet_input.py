"""Parquet input beside CSV: a table as a directory of Parquet files loads into exactly the
Dataset its CSV gives, and a bad cell is named by file, row group, row and column."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import assert_same_dataset
from training.csvio import DataError
from training.load import load_dataset
from training.train import data_fingerprint

POSTS = "post_id,author_id,community_id,created_at\np1,a,c1,100\np2,b,c2,100\np3,a,c1,200\n"


def lake(tmp_path: Path, events: list[pa.Table], row_group_rows: int = 2) -> Path:
    """posts.csv beside an events/ directory with one Parquet file per table given."""
    data = tmp_path / "d"
    (data / "events").mkdir(parents=True)
    (data / "posts.csv").write_text(POSTS)
    for k, table in enumerate(events):
        pq.write_table(table, data / "events" / f"part-{k:05d}.parquet", row_group_size=row_group_rows)
    (data / "events" / "_SUCCESS").write_text("")  # a lake job's marker: not data
    return data


def events(users, posts, kinds, ts) -> pa.Table:
    return pa.table({"user_id": users, "post_id": posts, "kind": kinds, "ts": pa.array(ts, pa.int64())})


GOOD = events(["u1", "u1", "u2"], ["p1", "p3", "p2"], ["like", "comment", "like"], [1000, 2000, 3000])


def test_a_lake_table_loads_as_its_csv_does(tiny_data, tiny_parquet):
    assert sorted(p.name for p in (tiny_parquet / "events").iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert_same_dataset(load_dataset(tiny_data), load_dataset(tiny_parquet))
    # the data fingerprint (gate and make evaluate check it) covers the Parquet files
    assert data_fingerprint(tiny_parquet) != data_fingerprint(tiny_data)
    assert len(data_fingerprint(tiny_parquet)) == 64


@pytest.mark.parametrize(
    "second, message",
    [
        # file 1, row group 1 (rows of 2), its row 0: the 3rd row of the file
        (
            events(["u3", "u3", "u4"], ["p1", "p2", "p3"], ["like", "share", "poke"], [1, 2, 3]),
            "part-00001.parquet: row group 1, row 0, column 'kind': "
            "'poke' is not one of view, like, comment, share, save, hide, report",
        ),
        (
            events(["u3", "u3"], ["p1", "p9"], ["like", "like"], [1, 2]),
            "part-00001.parquet: row group 0, row 1, column 'post_id': unknown post 'p9'",
        ),
        (
            events(["u3", None], ["p1", "p2"], ["like", "like"], [1, 2]),
            "part-00001.parquet: row group 0, row 1, column 'user_id': empty value",
        ),
        (
            pa.table({"user_id": ["u3"], "post_id": ["p1"], "kind": ["like"], "ts": ["soon"]}),
            "part-00001.parquet: row group 0, row 0, column 'ts': 'soon' is not an integer",
        ),
        (
            events(["u3", "u3", "u3"], ["p1", "p2", "p3"], ["like"] * 3, [5, 6, -7]),
            "part-00001.parquet: row group 1, row 0, column 'ts': -7 is below 0",
        ),
        (
            pa.table({"who": ["u3"], "post_id": ["p1"], "kind": ["like"], "ts": [1]}),
            "part-00001.parquet: missing column(s) user_id (columns: who,post_id,kind,ts)",
        ),
        (
            pa.table({"user_id": ["u3"], "post_id": ["p1"], "ts": [1]}),
            "part-00001.parquet: columns user_id,post_id,ts differ from part-00000.parquet's user_id,post_id,ts,kind",
        ),
    ],
)
def test_a_bad_cell_is_named_by_file_row_group_row_and_column(tmp_path, second, message):
    data = lake(tmp_path, [GOOD, second])
    with pytest.raises(DataError) as err:
        load_dataset(data)
    assert str(err.value) == f"{data}/events/{message}"


def test_a_file_that_is_not_parquet_and_a_table_given_twice(tmp_path):
    data = lake(tmp_path, [GOOD])
    (data / "events" / "part-00001.parquet").write_bytes(b"user_id,post_id\nu1,p1\n")
    with pytest.raises(DataError, match=r"events/part-00001.parquet: not a readable Parquet file \(") as err:
        load_dataset(data)
    assert "\n" not in str(err.value)
    (data / "events" / "part-00001.parquet").unlink()
    (data / "events.csv").write_text("user_id,post_id,ts\nu1,p1,5\n")
    with pytest.raises(DataError, match=r"events.csv: both it and .*/events/ exist; keep one of them$"):
        load_dataset(data)


def test_the_cli_rejects_a_malformed_parquet_file_in_one_line(tmp_path):
    data = lake(tmp_path, [GOOD, events(["u3"], ["p1"], ["lik"], [9])])
    models = tmp_path / "models"
    run = subprocess.run(
        [sys.executable, "-m", "training", "train", "--data", str(data), "--models", str(models), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"error: {data}/events/part-00001.parquet: row group 0, row 0, column 'kind': 'lik' is not one of "
        "view, like, comment, share, save, hide, report"
    ]
    assert not models.exists()
