"""CSV reading with precise errors, and atomic CSV writing.

Errors name the file, the row (1-based, the header is row 1) and the column, because an
ML engineer fixing a 2M-row export needs to find the bad cell, not a traceback.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from training.cells import CellTable, DataError

__all__ = ["CsvTable", "DataError", "write_csv"]


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Iterable[object]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        fh.write(",".join(header) + "\n")
        fh.writelines(",".join(map(str, row)) + "\n" for row in rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def checked_header(path: Path, header: list[str], required: Sequence[str]) -> list[str]:
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path}: row 1: missing column(s) {', '.join(missing)} (header: {','.join(header)})")
    return header


def csv_header(path: Path, required: Sequence[str]) -> list[str]:
    """The header row alone, checked as CsvTable checks it (for a reader that reads the
    rows elsewhere)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), None)
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: row 1: {exc}") from None
    if header is None:
        raise DataError(f"{path}: row 1: file is empty, expected a header")
    return checked_header(path, header, required)


class CsvTable(CellTable):
    """One CSV file read column-wise; rows are numbered as lines, the header is row 1."""

    def __init__(self, path: Path, required: Sequence[str], optional: Sequence[str] = ()):
        self.path = path
        try:
            fh = open(path, newline="", encoding="utf-8")
        except OSError as exc:
            raise DataError(f"{path}: cannot open ({exc.strerror})") from None
        with fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                raise DataError(f"{path}: row 1: file is empty, expected a header") from None
            except (csv.Error, UnicodeDecodeError) as exc:
                raise DataError(f"{path}: row 1: {exc}") from None
            header = checked_header(path, header, required)
            self.columns = {c: header.index(c) for c in (*required, *optional) if c in header}
            width = len(header)
            try:
                rows: list[list[str]] = list(reader)  # C speed; widths are checked below
            except (csv.Error, UnicodeDecodeError) as exc:
                raise DataError(f"{path}: row {reader.line_num}: {exc}") from None
        if rows:
            lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
            bad = np.flatnonzero(lengths != width)
            if len(bad):
                i = int(bad[0])
                # Row numbers count the header as row 1 (a quoted field spanning lines would
                # shift them; such files fail on the field instead).
                if not rows[i]:
                    raise DataError(f"{path}: row {i + 2}: empty line")
                raise DataError(f"{path}: row {i + 2}: {len(rows[i])} fields, header has {width}")
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def _cells(self, column: str) -> list[str]:
        j = self.columns[column]
        return [r[j] for r in self.rows]

    def _where(self, i: int, column: str) -> str:
        return f"{self.path}: row {i + 2}, column {column!r}"
