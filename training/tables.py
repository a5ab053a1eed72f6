"""Where an input table lives: `events.csv`, or `events/` holding Parquet files.

Each table of the input schema (training/schema.py) may come as one CSV file or as a
directory of Parquet files named like the file without `.csv` (as a lake job writes
it); not both, since then which one is the data would be a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from training.cells import CellTable, DataError
from training.csvio import CsvTable
from training.parquetio import ParquetTable, parquet_files


def parquet_dir(data_dir: Path, csv_name: str) -> Path:
    return Path(data_dir) / csv_name.removesuffix(".csv")


def table_kind(data_dir: Path, csv_name: str) -> str | None:
    """ "csv", "parquet", or None when the table is absent."""
    csv_path, pq_dir = Path(data_dir) / csv_name, parquet_dir(data_dir, csv_name)
    if csv_path.exists() and pq_dir.is_dir():
        raise DataError(f"{csv_path}: both it and {pq_dir}/ exist; keep one of them")
    if csv_path.exists():
        return "csv"
    return "parquet" if pq_dir.is_dir() else None


def table_files(data_dir: Path, csv_name: str) -> list[Path]:
    """The files holding the table (empty when absent): what the data fingerprint hashes."""
    kind = table_kind(data_dir, csv_name)
    if kind == "csv":
        return [Path(data_dir) / csv_name]
    return parquet_files(parquet_dir(data_dir, csv_name)) if kind == "parquet" else []


def open_table(data_dir: Path, csv_name: str, required: Sequence[str], optional: Sequence[str] = ()) -> CellTable:
    kind = table_kind(data_dir, csv_name)
    if kind == "parquet":
        return ParquetTable(parquet_dir(data_dir, csv_name), required, optional)
    if kind is None:
        raise DataError(
            f"{Path(data_dir) / csv_name}: cannot open (no such file, nor a "
            f"{parquet_dir(data_dir, csv_name).name}/ directory of Parquet files)"
        )
    return CsvTable(Path(data_dir) / csv_name, required, optional)


def table_exists(data_dir: Path, csv_name: str) -> bool:
    return table_kind(data_dir, csv_name) is not None
