"""`python -m training train` on a fresh clone: the default data directory is generated first."""

from __future__ import annotations

import csv

from training.__main__ import DEFAULT_DATA, build_parser, ensure_default_world
from training.schema import EVENTS_CSV
from training.synthetic import WorldParams


def test_train_without_the_default_data_generates_make_datas_world_first(tmp_path, monkeypatch):
    # `make train` from a fresh clone once failed here: generate's flags (--scale) were
    # read from train's namespace, which has none of them.
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["train", "--train-seed", "3", "--quiet"])
    ensure_default_world(args)
    with open(DEFAULT_DATA / "communities.csv", newline="") as f:
        communities = sum(1 for _ in csv.DictReader(f))
    assert communities == WorldParams().communities  # the default world, not one shaped by train's flags
    assert (DEFAULT_DATA / EVENTS_CSV).stat().st_size > 0


def test_train_with_another_missing_data_directory_generates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["train", "--data", "elsewhere"])
    ensure_default_world(args)
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / DEFAULT_DATA).exists()
