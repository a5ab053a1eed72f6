"""Typed, validated access to the cells of one input table, whatever file format holds it.

The CSV reader (csvio.py) and the Parquet reader (parquetio.py) differ only in how they
get a column's cells and how they name a cell's place in an error; the rules for an id,
an integer, a number, a boolean or a choice are written once, here, so both formats (and
the Spark engine, which re-reads one file with these readers to name a bad row) reject
the same cells with the same words.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

TRUTHY = frozenset({"1", "true", "yes"})
FALSY = frozenset({"0", "false", "no", ""})


class DataError(ValueError):
    """Bad input data; the message is one line with file, row and column."""


class CellTable:
    """A table's columns as stripped strings, with typed accessors that report bad cells.

    Subclasses provide __len__, `columns` (present column names), `_cells(column)` (the
    column as a list of str, missing cells as "") and `_where(i, column)` (file and place
    of the i-th row, for messages); they may override an accessor for natively typed data.
    """

    path: Path
    columns: dict

    def __len__(self) -> int:
        raise NotImplementedError

    def _cells(self, column: str) -> list[str]:
        raise NotImplementedError

    def _where(self, i: int, column: str) -> str:
        raise NotImplementedError

    def has(self, column: str) -> bool:
        return column in self.columns

    def error(self, i: int, column: str, message: str) -> DataError:
        return DataError(f"{self._where(i, column)}: {message}")

    def strings(self, column: str, allow_empty: bool = False) -> list[str]:
        out = [v.strip() for v in self._cells(column)]
        if not allow_empty and not all(out):
            raise self.error(out.index(""), column, "empty value")
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
                    raise self.error(i, column, f"{v!r} is not an integer") from None
            raise
        return self._at_least(arr, column, minimum)

    def _at_least(self, arr: np.ndarray, column: str, minimum: int | None) -> np.ndarray:
        if minimum is not None and len(arr) and arr.min() < minimum:
            i = int(np.argmin(arr))
            raise self.error(i, column, f"{arr[i]} is below {minimum}")
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
                    raise self.error(i, column, f"{v!r} is not a number") from None
            raise
        return self._in_range(arr, column, minimum, values)

    def _in_range(self, arr: np.ndarray, column: str, minimum: float | None, shown: Sequence) -> np.ndarray:
        bad = ~np.isfinite(arr) | ((arr < minimum) if minimum is not None else False)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise self.error(i, column, f"{shown[i]!r} is out of range")
        return arr

    def bools(self, column: str) -> np.ndarray:
        raw = self._cells(column)
        out = np.zeros(len(raw), dtype=bool)
        for i, cell in enumerate(raw):
            v = cell.strip().lower()
            if v in TRUTHY:
                out[i] = True
            elif v not in FALSY:
                raise self.error(i, column, f"{cell!r} is not a boolean (0/1/true/false)")
        return out

    def choices(self, column: str, allowed: Sequence[str]) -> np.ndarray:
        """Codes (index into allowed) of a categorical column."""
        code = {a: i for i, a in enumerate(allowed)}
        values = self.strings(column)
        out = np.empty(len(values), dtype=np.uint8)
        for i, v in enumerate(values):
            c = code.get(v.lower())
            if c is None:
                raise self.error(i, column, f"{v!r} is not one of {', '.join(allowed)}")
            out[i] = c
        return out

    def first_row_of(self, column: str, value: str) -> int:
        """The first row whose cell is value (an engine that found a bad value elsewhere
        names its row with this)."""
        return self.strings(column, allow_empty=True).index(value)
