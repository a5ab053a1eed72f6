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


class DataError(ValueError):
    """Bad input data; the message is one line with file, row and column."""


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Iterable[object]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        fh.write(",".join(header) + "\n")
        fh.writelines(",".join(map(str, row)) + "\n" for row in rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class CsvTable:
    """One CSV file read column-wise, with typed accessors that report bad cells."""

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
            header = [h.strip() for h in header]
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(f"{path}: row 1: missing column(s) {', '.join(missing)} (header: {','.join(header)})")
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

    def has(self, column: str) -> bool:
        return column in self.columns

    def _where(self, i: int, column: str) -> str:
        return f"{self.path}: row {i + 2}, column {column!r}"

    def strings(self, column: str, allow_empty: bool = False) -> list[str]:
        j = self.columns[column]
        out = [r[j].strip() for r in self.rows]
        if not allow_empty and not all(out):
            i = out.index("")
            raise DataError(f"{self._where(i, column)}: empty value")
        return out

    def ints(self, column: str, *, minimum: int | None = None) -> np.ndarray:
        values = self.strings(column)
        try:
            arr = np.array(values, dtype=np.int64)
        except (ValueError, OverflowError):
            for i, v in enumerate(values):
                try:
                    int(v)
                except ValueError:
                    raise DataError(f"{self._where(i, column)}: {v!r} is not an integer") from None
            raise
        if minimum is not None and len(arr) and arr.min() < minimum:
            i = int(np.argmin(arr))
            raise DataError(f"{self._where(i, column)}: {values[i]} is below {minimum}")
        return arr

    def floats(self, column: str, *, minimum: float | None = None) -> np.ndarray:
        values = self.strings(column)
        try:
            arr = np.array(values, dtype=np.float64)
        except ValueError:
            for i, v in enumerate(values):
                try:
                    float(v)
                except ValueError:
                    raise DataError(f"{self._where(i, column)}: {v!r} is not a number") from None
            raise
        bad = ~np.isfinite(arr) | ((arr < minimum) if minimum is not None else False)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{self._where(i, column)}: {values[i]!r} is out of range")
        return arr

    def bools(self, column: str) -> np.ndarray:
        truthy, falsy = {"1", "true", "yes"}, {"0", "false", "no", ""}
        j = self.columns[column]
        out = np.zeros(len(self.rows), dtype=bool)
        for i, r in enumerate(self.rows):
            v = r[j].strip().lower()
            if v in truthy:
                out[i] = True
            elif v not in falsy:
                raise DataError(f"{self._where(i, column)}: {r[j]!r} is not a boolean (0/1/true/false)")
        return out

    def choices(self, column: str, allowed: Sequence[str]) -> np.ndarray:
        """Codes (index into allowed) of a categorical column."""
        code = {a: i for i, a in enumerate(allowed)}
        values = self.strings(column)
        out = np.empty(len(values), dtype=np.uint8)
        for i, v in enumerate(values):
            c = code.get(v.lower())
            if c is None:
                raise DataError(f"{self._where(i, column)}: {v!r} is not one of {', '.join(allowed)}")
            out[i] = c
        return out

    def error(self, i: int, column: str, message: str) -> DataError:
        return DataError(f"{self._where(i, column)}: {message}")
