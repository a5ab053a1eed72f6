"""Parquet input: one table as a directory of Parquet files, as a data lake writes it.

`events/part-00000.parquet, events/part-00001.parquet, ...` hold the same columns as
events.csv (docs/training.md "Input schema"); files are read in name order, and a
column may be stored as text or natively typed (integers, floats, booleans). A bad cell
is named by file, row group and row within it (both counted from 0, as pyarrow counts:
`pq.ParquetFile(file).read_row_group(g).slice(r, 1)` shows it) and column, in the same
words as a CSV cell (training/cells.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from training.cells import CellTable, DataError

SUFFIX = ".parquet"


def parquet_files(directory: Path) -> list[Path]:
    """The table's data files in name order; lake bookkeeping (_SUCCESS, .crc, _metadata) is skipped."""
    files = sorted(
        p for p in directory.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith(("_", ".")) and p.is_file()
    )
    if not files:
        raise DataError(f"{directory}: no {SUFFIX} files in this table directory")
    return files


class ParquetTable(CellTable):
    """A directory of Parquet files (or one file) read column-wise."""

    def __init__(self, path: Path, required: Sequence[str], optional: Sequence[str] = ()):
        self.path = path
        files = parquet_files(path) if path.is_dir() else [path]
        present = parquet_columns(files, required, optional)
        self.files = files
        self._parts: list[pa.Table] = []
        self._group_starts: list[np.ndarray] = []  # per file: first row of each row group
        for f in files:
            pf = pq.ParquetFile(f)
            try:
                self._parts.append(pf.read(columns=present))
            except (pa.ArrowException, OSError) as exc:
                raise DataError(f"{f}: cannot read ({str(exc).splitlines()[0]})") from None
            sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
            self._group_starts.append(np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64))
        self.columns = {c: i for i, c in enumerate(present)}
        self._file_starts = np.concatenate([[0], np.cumsum([len(t) for t in self._parts])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self._file_starts[-1])

    def _where(self, i: int, column: str) -> str:
        k = int(np.searchsorted(self._file_starts, i, side="right")) - 1
        row = i - int(self._file_starts[k])
        g = int(np.searchsorted(self._group_starts[k], row, side="right")) - 1
        return f"{self.files[k]}: row group {g}, row {row - int(self._group_starts[k][g])}, column {column!r}"

    def _chunks(self, column: str) -> list[pa.ChunkedArray]:
        return [t.column(column) for t in self._parts]

    def _typed(self, column: str, test) -> bool:
        return all(test(c.type) for c in self._chunks(column))

    def _text(self, column: str) -> pa.ChunkedArray:
        """The column as trimmed text, nulls as "" (a typed column is formatted first)."""
        out = []
        for c in self._chunks(column):
            text = c if pa.types.is_string(c.type) or pa.types.is_large_string(c.type) else pc.cast(c, pa.string())
            out.extend(pc.fill_null(pc.utf8_trim_whitespace(text), "").chunks)
        return pa.chunked_array(out, type=pa.string())

    def _cells(self, column: str) -> list[str]:
        return self._text(column).to_pylist()

    def _first(self, mask: pa.ChunkedArray) -> int | None:
        hits = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        return int(hits[0]) if len(hits) else None

    def strings(self, column: str, allow_empty: bool = False) -> list[str]:
        text = self._text(column)
        if not allow_empty:
            i = self._first(pc.equal(text, ""))
            if i is not None:
                raise self.error(i, column, "empty value")
        return text.to_pylist()

    def _numbers(self, column: str) -> np.ndarray:
        merged = pa.chunked_array([ch for c in self._chunks(column) for ch in c.chunks])
        i = self._first(pc.is_null(merged))
        if i is not None:
            raise self.error(i, column, "empty value")
        return merged.to_numpy()

    def ints(self, column: str, *, minimum: int | None = None) -> np.ndarray:
        if not self._typed(column, pa.types.is_integer):
            return super().ints(column, minimum=minimum)
        return self._at_least(self._numbers(column).astype(np.int64), column, minimum)

    def floats(self, column: str, *, minimum: float | None = None) -> np.ndarray:
        if not self._typed(column, lambda t: pa.types.is_integer(t) or pa.types.is_floating(t)):
            return super().floats(column, minimum=minimum)
        arr = self._numbers(column).astype(np.float64)
        return self._in_range(arr, column, minimum, arr.tolist())

    def bools(self, column: str) -> np.ndarray:
        if not self._typed(column, pa.types.is_boolean):
            return super().bools(column)  # text or 0/1 integers, by the CSV rule
        merged = pa.chunked_array([ch for c in self._chunks(column) for ch in c.chunks])
        return pc.fill_null(merged, False).to_numpy(zero_copy_only=False).astype(bool)


def write_parquet_table(csv_path: Path, out_dir: Path, files: int = 2, row_group_rows: int = 100_000) -> Path:
    """A CSV table as a directory of `files` Parquet files (ids as text, times and flags as
    the integers pyarrow infers), the layout a lake job writes: what tests and the training
    benchmark feed the Parquet path. The directory is written under a temporary name and
    renamed, so a reader never sees half of it."""
    from pyarrow import csv as pacsv

    header = csv_path.open().readline().strip().split(",")
    ids = {c: pa.string() for c in header if c.endswith("_id") or c in ("kind", "role", "visibility", "topic")}
    table = pacsv.read_csv(csv_path, convert_options=pacsv.ConvertOptions(column_types=ids))
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    per = -(-len(table) // files) if len(table) else 0
    for k in range(files):
        part = table.slice(k * per, per)
        pq.write_table(part, tmp / f"part-{k:05d}{SUFFIX}", row_group_size=row_group_rows)
    os.replace(tmp, out_dir)
    return out_dir


def parquet_columns(files: list[Path], required: Sequence[str], optional: Sequence[str] = ()) -> list[str]:
    """The table's columns present in every file, from the files' footers alone (no data
    read): the schema checks of ParquetTable for a reader that reads the data elsewhere."""
    present: list[str] | None = None
    for f in files:
        try:
            names = pq.ParquetFile(f).schema_arrow.names
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{f}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
        missing = [c for c in required if c not in names]
        if missing:
            raise DataError(f"{f}: missing column(s) {', '.join(missing)} (columns: {','.join(names)})")
        mine = [c for c in (*required, *optional) if c in names]
        if present is None:
            present = mine
        elif mine != present:
            raise DataError(f"{f}: columns {','.join(mine)} differ from {files[0].name}'s {','.join(present)}")
    return present or []
