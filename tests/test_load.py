"""Loading real logs: exact one-line errors, documented fallbacks for partial logs,
and nothing half-written when a file is bad."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core import contract
from training.csvio import DataError
from training.load import load_dataset
from training.params import TrainParams
from training.state import state_as_of
from training.train import train

POSTS = "post_id,author_id,community_id,created_at\np1,a,c1,100\np2,b,c2,100\np3,a,c1,200\n"
EVENTS = "user_id,post_id,kind,ts\nu1,p1,like,1000\nu1,p3,comment,2000\nu2,p2,like,3000\n"


def write(dir_: Path, **files: str) -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (dir_ / f"{name}.csv").write_text(text)
    return dir_


@pytest.mark.parametrize(
    "events, message",
    [
        (EVENTS.replace("2000", "soon"), "events.csv: row 3, column 'ts': 'soon' is not an integer"),
        (EVENTS.replace("u2,p2,like", "u2,p9,like"), "events.csv: row 4, column 'post_id': unknown post 'p9'"),
        (
            EVENTS.replace("comment", "poke"),
            "events.csv: row 3, column 'kind': 'poke' is not one of view, like, comment, share, save, hide, report",
        ),
        (EVENTS.replace("u1,p1,like,1000", "u1,p1,like"), "events.csv: row 2: 3 fields, header has 4"),
        (
            EVENTS.replace("user_id", "who"),
            "events.csv: row 1: missing column(s) user_id (header: who,post_id,kind,ts)",
        ),
        (EVENTS.replace("2000", "-5"), "events.csv: row 3, column 'ts': -5 is below 0"),
    ],
)
def test_a_bad_cell_is_named_by_file_row_and_column(tmp_path, events, message):
    data = write(tmp_path / "d", posts=POSTS, events=events)
    with pytest.raises(DataError) as err:
        load_dataset(data)
    assert str(err.value) == f"{data}/{message}"


def test_bad_weight_and_duplicate_post(tmp_path):
    data = write(tmp_path / "d", posts=POSTS + "p1,c,c1,300\n", events=EVENTS)
    with pytest.raises(DataError, match=r"posts.csv: row 5, column 'post_id': duplicate post id 'p1'$"):
        load_dataset(data)
    data = write(tmp_path / "e", posts=POSTS, events="user_id,post_id,ts,weight\nu1,p1,5,2\nu1,p2,6,lots\n")
    with pytest.raises(DataError, match=r"events.csv: row 3, column 'weight': 'lots' is not a number$"):
        load_dataset(data)


def test_bad_data_leaves_no_bundle_behind(tiny_data, tmp_path):
    """A bad cell deep in a real-size file fails the run before anything is written."""
    data = tmp_path / "bad"
    data.mkdir()
    for f in tiny_data.glob("*.csv"):
        (data / f.name).write_text(f.read_text())
    lines = (data / "events.csv").read_text().splitlines()
    lines[1234] = lines[1234].replace(",like,", ",lik,").replace(",view,", ",lik,")
    (data / "events.csv").write_text("\n".join(lines) + "\n")
    models = tmp_path / "models"
    with pytest.raises(DataError, match=r"events.csv: row 1235, column 'kind': 'lik' is not one of"):
        train(data, models, TrainParams(), progress=False, quiet=True)
    assert not models.exists() or list(models.iterdir()) == []
    # The CLI says it in one line and exits 2.
    run = subprocess.run(
        [sys.executable, "-m", "training", "train", "--data", str(data), "--models", str(models), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"error: {data}/events.csv: row 1235, column 'kind': 'lik' is not one of "
        "view, like, comment, share, save, hide, report"
    ]
    assert not models.exists() or list(models.iterdir()) == []


def test_partial_log_loads_with_documented_fallbacks(tmp_path):
    """No communities, no memberships, no author, no kind, counts as weights, created_at 0."""
    data = write(
        tmp_path / "d",
        posts="post_id,community_id,created_at\nm1,drama,0\nm2,drama,0\nm3,comedy,0\n",
        events="user_id,post_id,ts,weight\nann,m1,10,3\nann,m2,20,1\nbob,m3,30,2\nbob,m3,40,5\n"
        "bob,m1,50,1\nbob,m2,60,1\n",
    )
    ds = load_dataset(data)
    assert ds.community_ids.tolist() == ["drama", "comedy"]
    assert not ds.community_private.any()
    assert (ds.post_author == -1).all()
    assert ds.e_count.tolist() == [3, 1, 2, 5, 1, 1]
    assert (ds.event_weights() > 0).all()  # every event is a like
    assert ds.memberships_derived and len(ds.m_user) == 0
    notes = " | ".join(ds.notes)
    for fragment in (
        "communities.csv missing",
        "memberships.csv missing",
        "no author_id",
        "no kind column",
        "counts in 'weight'",
    ):
        assert fragment in notes
    # Memberships come from engagement before the split only: bob's two drama likes are at
    # ts 50 and 60, so at 55 he is in comedy (two events) but not yet in drama.
    users = {u: i for i, u in enumerate(ds.user_ids)}
    comm = {c: i for i, c in enumerate(ds.community_ids)}
    s55 = state_as_of(ds, 55, True)
    got55 = {(int(u), int(c)) for u, c in zip(s55.m_user, s55.m_community)}
    assert got55 == {(users["ann"], comm["drama"]), (users["bob"], comm["comedy"])}
    s61 = state_as_of(ds, 61, True)
    assert (users["bob"], comm["drama"]) in {(int(u), int(c)) for u, c in zip(s61.m_user, s61.m_community)}
    assert set(s61.m_role.tolist()) == {contract.ROLE_MEMBER}


def test_views_only_log_counts_views_as_positive(tmp_path):
    data = write(tmp_path / "d", posts=POSTS, events="user_id,post_id,kind,ts,weight\nu1,p1,view,1,7\nu2,p2,view,2,1\n")
    ds = load_dataset(data)
    assert ds.event_weights().tolist() == [7.0, 1.0]
    assert any("views count as positive" in n for n in ds.notes)
    assert np.array_equal(ds.post_author, [0, 1, 0])


def test_posts_without_community_share_one(tmp_path):
    data = write(tmp_path / "d", posts="post_id\nm1\nm2\n", events="user_id,post_id,ts\nu1,m1,5\nu2,m2,6\n")
    ds = load_dataset(data)
    assert ds.community_ids.tolist() == ["(none)"]
    assert ds.post_community.tolist() == [0, 0]
    assert ds.post_created_at.tolist() == [0, 0]
    assert any("no community_id" in n for n in ds.notes)
