"""Converters (training/convert/) on tiny synthetic inputs written here, in each source's
original format (nothing is copied from the real data sets): exact counts and rows, that
the output loads, one bad-input error per format naming file, row and column, the CLI's
exit status 2, and that a failed conversion leaves the output directory as it was."""

from __future__ import annotations

import calendar
import csv
import gzip
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from training.convert import FORMATS
from training.csvio import DataError
from training.load import load_dataset

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("events.csv", "posts.csv", "communities.csv")


def utc(*ymd_hms: int) -> int:
    return calendar.timegm((*ymd_hms, *(0,) * (6 - len(ymd_hms))))


def write(src: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text, encoding="utf-8")
    return src


def tsv(*rows: tuple) -> str:
    return "".join("\t".join(map(str, r)) + "\n" for r in rows)


def xml(root: str, *rows: str) -> str:
    """A dump file: XML declaration on line 1, root on line 2, so row i is on line i + 3."""
    body = "".join(f"  <row {r} />\n" for r in rows)
    return f'<?xml version="1.0" encoding="utf-8"?>\n<{root}>\n{body}</{root}>\n'


def rows(out: Path, name: str) -> list[dict[str, str]]:
    with open(out / name, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def events(out: Path) -> list[tuple]:
    return [(r["user_id"], r["post_id"], int(r["ts"]), r["kind"], int(r["weight"])) for r in rows(out, "events.csv")]


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


# ------------------------------------------------------------------------------ samples


def movielens_src(src: Path) -> Path:
    genres = "unknown|0\nAction|1\nComedy|2\nDrama|3\n\n"  # the real file ends with a blank line
    items = (
        "1|Robot Picnic (1994)|01-Jan-1994||http://example.invalid/1|0|1|0|1\n"
        "2|Quiet Harbour (1965)|12-Jun-1965||http://example.invalid/2|0|0|0|1\n"
        "3|Untitled (1996)|||http://example.invalid/3|0|0|0|0\n"
        "4|Lamp, Ladder & Co (1997)|28-Feb-1997||http://example.invalid/4|0|0|1|0\n"
    )
    ratings = tsv(
        (7, 1, 4, 881000000),
        (7, 4, 2, 881000600),
        (8, 1, 5, 881000300),
        (8, 2, 3, 882000000),
        (9, 4, 1, 883000000),
        (9, 1, 3, 881500000),
    )
    return write(src, {"u.genre": genres, "u.item": items, "u.data": ratings})


def lastfm_src(src: Path) -> Path:
    return write(
        src,
        {
            "tags.dat": tsv(("tagID", "tagValue"), (1, "indie"), (2, "jazz, smooth"), (3, 'so "cool"')),
            "user_taggedartists.dat": tsv(
                ("userID", "artistID", "tagID", "day", "month", "year"),
                (5, 100, 1, 1, 3, 2009),
                (5, 100, 2, 1, 2, 2009),  # earlier: the pair's first tagging
                (6, 100, 1, 15, 5, 2010),  # 6 never played 100: weight 1
                (6, 101, 2, 1, 1, 1956),  # corrupt date: no event, but the tag counts
                (7, 101, 2, 2, 2, 2008),
                (7, 101, 3, 3, 3, 2008),
            ),
            "user_artists.dat": tsv(
                ("userID", "artistID", "weight"),
                (5, 100, 250),
                (6, 102, 40),  # played, never tagged: no time, no event
                (7, 101, 12),
            ),
            "artists.dat": tsv(
                ("id", "name", "url", "pictureURL"),
                (100, "Band One", "http://example.invalid/100", ""),
                (101, "Band Two", "http://example.invalid/101", ""),
                (103, "Band Unheard", "http://example.invalid/103", ""),
            ),
        },
    )


def stackexchange_src(src: Path) -> Path:
    return write(
        src,
        {
            "Posts.xml": xml(
                "posts",
                'Id="10" PostTypeId="1" CreationDate="2021-05-01T08:00:00.000" OwnerUserId="1" '
                'Tags="&lt;sourdough&gt;&lt;flour&gt;"',
                'Id="11" PostTypeId="2" ParentId="10" CreationDate="2021-05-01T09:30:00.250" OwnerUserId="2"',
                'Id="12" PostTypeId="2" ParentId="10" CreationDate="2021-05-01T10:00:00.000" OwnerUserId="1"',
                'Id="13" PostTypeId="1" CreationDate="2021-05-03T12:00:00.000" OwnerUserId="3" Tags="|knives|sharp|"',
                'Id="14" PostTypeId="2" ParentId="13" CreationDate="2021-05-04T07:00:00.000"',
                'Id="15" PostTypeId="1" CreationDate="2021-05-05T00:00:00.000" Tags=""',
                'Id="16" PostTypeId="5" CreationDate="2021-05-01T00:00:00.000"',
            ),
            "Comments.xml": xml(
                "comments",
                'Id="1" PostId="11" CreationDate="2021-05-01T11:00:00.000" UserId="4"',
                'Id="2" PostId="13" CreationDate="2021-05-03T13:00:00.000" UserId="3"',
                'Id="3" PostId="16" CreationDate="2021-05-02T00:00:00.000" UserId="2"',
                'Id="4" PostId="15" CreationDate="2021-05-06T10:00:00.000" UserId="2"',
            ),
            "Votes.xml": xml(
                "votes",
                'Id="1" PostId="10" VoteTypeId="2" CreationDate="2021-05-01T00:00:00.000"',
                'Id="2" PostId="10" VoteTypeId="5" UserId="4" CreationDate="2021-05-01T00:00:00.000"',
                'Id="3" PostId="13" VoteTypeId="5" UserId="2" CreationDate="2021-05-07T00:00:00.000"',
            ),
        },
    )


def stackexchange_sites_src(src: Path) -> Path:
    return write(
        src,
        {
            "SOURCES.tsv": "a file beside the sites is not a site\n",
            "alpha/Posts.xml": xml(
                "posts",
                'Id="1" PostTypeId="1" CreationDate="2022-01-01T00:00:00.000" OwnerUserId="1" Tags="&lt;x&gt;"',
                'Id="2" PostTypeId="2" ParentId="1" CreationDate="2022-01-01T05:00:00.000" OwnerUserId="2"',
                'Id="3" PostTypeId="1" CreationDate="2022-01-10T00:00:00.000" OwnerUserId="2"',
            ),
            "alpha/Users.xml": xml(
                "users", 'Id="-1" AccountId="-1"', 'Id="1" AccountId="500"', 'Id="2" AccountId="600"'
            ),
            "alpha/Comments.xml": xml(
                "comments",
                'Id="1" PostId="2" CreationDate="2022-01-02T00:00:00.000" UserId="3"',
                'Id="2" PostId="3" CreationDate="2022-03-01T00:00:00.000" UserId="1"',  # after the Posts dump
            ),
            "beta/Posts.xml": xml(
                "posts",
                'Id="1" PostTypeId="1" CreationDate="2022-02-01T00:00:00.000" OwnerUserId="9"',
                'Id="2" PostTypeId="2" ParentId="1" CreationDate="2022-02-02T00:00:00.000" OwnerUserId="7"',
                'Id="3" PostTypeId="2" ParentId="1" CreationDate="2022-02-03T00:00:00.000" OwnerUserId="8"',
            ),
            "beta/Users.xml": xml("users", 'Id="7" AccountId="500"', 'Id="8" AccountId="600"'),
        },
    )


def thread(sid: str, author: str, created: int, comments: dict) -> str:
    return json.dumps({"sid": sid, "title": "t", "author": author, "created": created, "comments": comments})


def comment(author: str, created: int, replies: dict | None = None) -> dict:
    return {"author": author, "created": created, "upvotes": 3, "replies": replies or {}}


def reddit_threads_src(src: Path) -> Path:
    t0 = utc(2021, 10, 1)
    return write(
        src,
        {
            "GradSchool/GradSchool-1-a1.json": thread(
                "a1",
                "ann",
                t0,
                {
                    "c1": comment("bob", t0 + 60, {"c2": comment("ann", t0 + 120)}),  # thread author: dropped
                    "c3": comment("[deleted]", t0 + 180),
                    "c4": comment("AutoModerator", t0 + 1),
                    "c5": comment("cat", t0 + 240, {"c6": comment("bob", t0 + 300_000)}),  # after crawl end
                },
            ),
            "GradSchool/GradSchool-2-a2.json": thread("a2", "[deleted]", t0 + 3600, {"c7": comment("ann", t0 + 7200)}),
            "GradSchool/GradSchool-3-a1.json": thread("a1", "ann", t0, {}),  # saved twice
            "Emory/Emory-4-b1.json": thread("b1", "bob", (t0 + 86_400) * 1000, {"c8": comment("ann", t0 + 90_000)}),
        },
    )


def iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def dpost(number: int, user_id: int | None, ts: int, **extra) -> dict:
    """A post as Discourse's topic JSON holds it (the fields the converter reads, and some it ignores)."""
    base = {"id": 1000 + number, "post_number": number, "user_id": user_id, "username": f"n{user_id}"}
    return (
        base
        | {
            "created_at": iso(ts),
            "post_type": 1,
            "deleted_at": None,
            "hidden": False,
            "user_deleted": False,
            "reads": 9,
        }
        | extra
    )


def topic(tid: int, category: int | None, ts: int, posts: list[dict], **extra) -> str:
    doc = {"id": tid, "title": "t", "created_at": iso(ts), "category_id": category, "archetype": "regular"}
    doc |= {"visible": True, "deleted_at": None, "post_stream": {"posts": posts, "stream": [p["id"] for p in posts]}}
    return json.dumps(doc | extra, indent=1)


def discourse_src(src: Path) -> Path:
    t0 = utc(2020, 3, 6)
    write(
        src,
        {
            "site.json": json.dumps(
                {"categories": [{"id": 4, "name": "Support"}, {"id": 9, "name": "Show  and tell"}]}
            ),
            "posts/json/glyphs.10.json": topic(
                10,
                4,
                t0,
                [
                    dpost(1, 7, t0),
                    dpost(2, 8, t0 + 60),
                    dpost(3, 7, t0 + 120),  # the topic's author: dropped
                    dpost(4, -1, t0 + 180),  # Discourse's system user: dropped
                    dpost(5, 9, t0 + 240, post_type=3),  # a small action ("closed"): dropped
                    dpost(6, 9, t0 + 300, hidden=True),  # flagged away: dropped
                    dpost(7, 9, t0 + 360, deleted_at=iso(t0 + 400)),  # deleted: dropped
                    dpost(8, 9, t0 - 60),  # before the topic (a wrong clock): dropped
                    dpost(9, 9, t0 + 3600),
                ],
            ),
            "posts/json/demo.11.json": topic(11, 9, t0 + 86_400, [dpost(1, 8, t0 + 86_400), dpost(2, 7, t0 + 90_000)]),
            "posts/json/pm.12.json": topic(
                12, None, t0, [dpost(1, 7, t0), dpost(2, 8, t0 + 60)], archetype="private_message"
            ),
            "posts/json/hidden.13.json": topic(13, 4, t0, [dpost(1, 7, t0), dpost(2, 8, t0 + 60)], visible=False),
            "posts/json/loose.14.json": topic(14, None, t0 + 7200, [dpost(1, None, t0 + 7200), dpost(2, 8, t0 + 7300)]),
            "posts/json/zz-copy.10.json": topic(10, 4, t0, [dpost(1, 7, t0)]),  # topic 10 saved twice
        },
    )
    # A long topic of which the archiver kept the first page only, gzipped.
    long = json.loads(topic(15, 9, t0 + 600, [dpost(1, 9, t0 + 600), dpost(2, 8, t0 + 700)]))
    long["post_stream"]["stream"] += [5001, 5002]
    (src / "posts" / "json" / "long.15.json.gz").write_bytes(gzip.compress(json.dumps(long).encode()))
    return src


def mailing_lists_src(src: Path) -> Path:
    """The mbox lists of tests/test_convert_mailing_lists.py (exact rows are checked there)."""
    from tests.test_convert_mailing_lists import mbox_src

    return mbox_src(src)


SAMPLES = {
    "movielens": movielens_src,
    "lastfm": lastfm_src,
    "stackexchange": stackexchange_src,
    "stackexchange-sites": stackexchange_sites_src,
    "reddit-threads": reddit_threads_src,
    "mailing-lists": mailing_lists_src,
    "discourse": discourse_src,
}

# One bad cell per format: (file to edit, old, new, the one-line error).
BAD = {
    "movielens": ("u.data", "8\t2\t3\t", "8\t2\tx\t", "u.data: row 4, column rating: not an integer 'x'"),
    "lastfm": (
        "user_artists.dat",
        "\t40\n",
        "\tlots\n",
        "user_artists.dat: row 3, column weight: not an integer 'lots'",
    ),
    "stackexchange": (
        "Comments.xml",
        "2021-05-03T13:00:00.000",
        "yesterday",
        "Comments.xml: row 4, column CreationDate: not a date 'yesterday'",
    ),
    "stackexchange-sites": (
        "beta/Posts.xml",
        'OwnerUserId="8"',
        'OwnerUserId="eight"',
        "beta/Posts.xml: row 5, column OwnerUserId: not an integer 'eight'",
    ),
    "reddit-threads": (
        "Emory/Emory-4-b1.json",
        '"created": 1633136400',
        '"created": "soon"',
        "Emory/Emory-4-b1.json: comment c8, column created: not a non-negative unix time: 'soon'",
    ),
    "discourse": (
        "posts/json/demo.11.json",
        '"created_at": "2020-03-07T01:00:00.000Z"',
        '"created_at": "tomorrow"',
        "posts/json/demo.11.json: topic 11 post 2, column created_at: not an ISO 8601 time with a zone: 'tomorrow'",
    ),
    "mailing-lists": (
        "alpha/alpha.mbox",
        "From mailer@example.org Mon Mar  4 10:00:00 2024\nFrom: Alice",
        "From: Alice",
        "alpha/alpha.mbox: offset 0: not an mbox file (the first line does not start with 'From ')",
    ),
}


def test_registry_names_every_format():
    assert sorted(FORMATS) == sorted(SAMPLES)


# ---------------------------------------------------------------------------- MovieLens


def test_movielens_counts_and_rows(tmp_path):
    out = tmp_path / "out"
    c = FORMATS["movielens"](movielens_src(tmp_path / "src"), out)
    assert (c["users"], c["posts"], c["posts_with_events"], c["communities"], c["events"]) == (3, 4, 3, 4, 6)
    assert c["events_by_kind"] == {"like": 6} and c["dropped"] == {}
    assert events(out) == [
        ("u7", "p1", 881000000, "like", 4),
        ("u8", "p1", 881000300, "like", 5),
        ("u7", "p4", 881000600, "like", 2),
        ("u9", "p1", 881500000, "like", 3),
        ("u8", "p2", 882000000, "like", 3),
        ("u9", "p4", 883000000, "like", 1),
    ]
    posts = {r["post_id"]: r for r in rows(out, "posts.csv")}
    assert posts["p1"] == {
        "post_id": "p1",
        "community_id": "g1",  # first flag: Action, not Drama
        "author_id": "",
        "created_at": str(utc(1994, 1, 1)),
        "deleted": "0",
        "visibility": "community",
    }
    assert (posts["p2"]["community_id"], posts["p2"]["created_at"]) == ("g3", "0")  # 1965: before 1970
    assert (posts["p3"]["community_id"], posts["p3"]["created_at"]) == ("g0", "0")  # no flag, no date
    assert rows(out, "communities.csv") == [
        {"community_id": "g0", "is_private": "0", "topic": "unknown"},
        {"community_id": "g1", "is_private": "0", "topic": "Action"},
        {"community_id": "g2", "is_private": "0", "topic": "Comedy"},
        {"community_id": "g3", "is_private": "0", "topic": "Drama"},
    ]


def test_movielens_from_a_zip_as_downloaded(tmp_path):
    plain = movielens_src(tmp_path / "plain")
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    with zipfile.ZipFile(zipped / "ml-100k.zip", "w") as archive:
        for name in ("u.data", "u.item", "u.genre"):
            archive.write(plain / name, f"ml-100k/{name}")
    FORMATS["movielens"](plain, tmp_path / "a")
    FORMATS["movielens"](zipped, tmp_path / "b")
    for name in OUTPUTS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


# ------------------------------------------------------------------------------ Last.fm


def test_lastfm_counts_and_rows(tmp_path):
    out = tmp_path / "out"
    c = FORMATS["lastfm"](lastfm_src(tmp_path / "src"), out)
    assert (c["users"], c["posts"], c["posts_with_events"], c["communities"], c["events"]) == (3, 4, 2, 3, 3)
    assert c["dropped"] == {"listening_pairs_without_any_time": 1, "tag_assignments_dated_before_2005": 1}
    assert events(out) == [
        ("u7", "p101", utc(2008, 2, 2), "like", 12),
        ("u5", "p100", utc(2009, 2, 1), "like", 250),
        ("u6", "p100", utc(2010, 5, 15), "like", 1),
    ]
    assert [(r["post_id"], r["community_id"], r["created_at"]) for r in rows(out, "posts.csv")] == [
        ("p100", "t1", "0"),  # indie twice, jazz once
        ("p101", "t2", "0"),  # the 1956 tagging still counts for the community
        ("p102", "untagged", "0"),
        ("p103", "untagged", "0"),
    ]
    # tag texts with commas and quotes survive the CSV round trip
    assert [r["topic"] for r in rows(out, "communities.csv")] == ["indie", "jazz, smooth", "untagged"]
    assert 'jazz, smooth"' in (out / "communities.csv").read_text()


# ----------------------------------------------------------------------- Stack Exchange


def test_stackexchange_counts_and_rows(tmp_path):
    out = tmp_path / "out"
    c = FORMATS["stackexchange"](stackexchange_src(tmp_path / "src"), out)
    assert (c["users"], c["posts"], c["communities"], c["events"]) == (4, 3, 3, 5)
    assert c["events_by_kind"] == {"comment": 3, "save": 2}
    assert c["dropped"] == {
        "comment_by_question_author": 2,
        "comment_not_on_a_question": 1,
        "comment_without_user": 1,
    }
    assert events(out) == [
        ("u4", "p10", utc(2021, 5, 1, 8), "save", 1),  # favourite of the question's day moved to its creation
        ("u2", "p10", utc(2021, 5, 1, 9, 30), "comment", 1),  # an answer
        ("u4", "p10", utc(2021, 5, 1, 11), "comment", 1),  # a comment on answer 11 counts on its question
        ("u2", "p15", utc(2021, 5, 6, 10), "comment", 1),
        ("u2", "p13", utc(2021, 5, 7), "save", 1),
    ]
    assert [(r["post_id"], r["community_id"], r["author_id"]) for r in rows(out, "posts.csv")] == [
        ("p10", "t_sourdough", "u1"),
        ("p13", "t_knives", "u3"),  # the 2024 tag syntax |a|b|
        ("p15", "t_untagged", ""),  # deleted account
    ]


def test_stackexchange_gzipped_files_give_the_same_output(tmp_path):
    plain = stackexchange_src(tmp_path / "plain")
    packed = tmp_path / "packed"
    shutil.copytree(plain, packed)
    for name in ("Posts.xml", "Comments.xml"):
        with gzip.open(packed / f"{name}.gz", "wb") as fh:
            fh.write((packed / name).read_bytes())
        (packed / name).unlink()
    FORMATS["stackexchange"](plain, tmp_path / "a")
    FORMATS["stackexchange"](packed, tmp_path / "b")
    for name in OUTPUTS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_stackexchange_sites_one_community_per_site_and_linked_accounts(tmp_path):
    out = tmp_path / "out"
    c = FORMATS["stackexchange-sites"](stackexchange_sites_src(tmp_path / "src"), out)
    assert (c["users"], c["posts"], c["communities"], c["events"]) == (4, 3, 2, 4)
    assert c["dropped"] == {"comment_after_posts_dump_end": 1}
    assert (c["linked_users"], c["users_engaging_in_2plus_communities"]) == (2, 1)
    assert sorted(c["sites"]) == ["alpha", "beta"]
    assert c["sites"]["beta"]["files"] == ["Posts.xml", "Users.xml"]
    assert events(out) == [
        ("a600", "alpha-p1", utc(2022, 1, 1, 5), "comment", 1),
        ("alpha-u3", "alpha-p1", utc(2022, 1, 2), "comment", 1),  # not in Users.xml: stays per site
        ("a500", "beta-p1", utc(2022, 2, 2), "comment", 1),
        ("a600", "beta-p1", utc(2022, 2, 3), "comment", 1),
    ]
    assert [(r["post_id"], r["community_id"], r["author_id"]) for r in rows(out, "posts.csv")] == [
        ("alpha-p1", "c-alpha", "a500"),
        ("alpha-p3", "c-alpha", "a600"),
        ("beta-p1", "c-beta", "beta-u9"),
    ]
    assert rows(out, "communities.csv") == [
        {"community_id": "c-alpha", "is_private": "0", "topic": "alpha"},
        {"community_id": "c-beta", "is_private": "0", "topic": "beta"},
    ]


# ------------------------------------------------------------------------ every format


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_output_loads_as_training_input(tmp_path, fmt):
    out = tmp_path / "out"
    c = FORMATS[fmt](SAMPLES[fmt](tmp_path / "src"), out)
    ds = load_dataset(out)
    assert (len(ds.post_ids), len(ds.community_ids), len(ds.e_ts)) == (c["posts"], c["communities"], c["events"])


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_bad_input_names_file_row_and_column(tmp_path, fmt):
    src = SAMPLES[fmt](tmp_path / "src")
    name, old, new, message = BAD[fmt]
    replace(src / name, old, new)
    with pytest.raises(DataError) as err:
        FORMATS[fmt](src, tmp_path / "out")
    assert str(err.value) == message
    assert not (tmp_path / "out").exists()


def test_missing_source_file_is_named(tmp_path):
    src = movielens_src(tmp_path / "src")
    (src / "u.item").unlink()
    with pytest.raises(DataError, match=r"^u\.item: file not found in "):
        FORMATS["movielens"](src, tmp_path / "out")


def test_failed_conversion_leaves_previous_output_untouched(tmp_path):
    src, out = movielens_src(tmp_path / "src"), tmp_path / "out"
    FORMATS["movielens"](src, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (src / "u.data").write_text((src / "u.data").read_text() + "9\t77\t4\t884000000\n")  # movie not in u.item
    with pytest.raises(DataError, match=r"^u\.data: row 7, column item: movie not in u\.item '77'$"):
        FORMATS["movielens"](src, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # same files, no temp files left


# ---------------------------------------------------------------------------------- CLI


def run_cli(*args: object) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "training", "convert", *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_converts_and_prints_the_counts(tmp_path):
    out = tmp_path / "out"
    done = run_cli("movielens", movielens_src(tmp_path / "src"), out)
    assert done.returncode == 0, done.stderr
    assert '"events": 6' in done.stdout and '"posts": 4' in done.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_cli_bad_input_is_one_line_and_exit_status_2(tmp_path, fmt):
    src = SAMPLES[fmt](tmp_path / "src")
    name, old, new, message = BAD[fmt]
    replace(src / name, old, new)
    done = run_cli(fmt, src, tmp_path / "out")
    assert (done.returncode, done.stderr, done.stdout) == (2, f"error: {message}\n", "")


# ------------------------------------------------------------------------ Reddit threads


# What reddit_threads_src's rows make the converter drop, whatever the window.
REDDIT_SRC_DROPS = {
    "comment_after_crawl_end": 1,
    "comment_by_bot": 1,
    "comment_by_thread_author": 1,
    "comment_without_user": 1,
    "duplicate_thread": 1,
}


def test_reddit_threads_counts_and_rows(tmp_path):
    out = tmp_path / "out"
    c = FORMATS["reddit-threads"](reddit_threads_src(tmp_path / "src"), out)
    t0 = utc(2021, 10, 1)
    assert (c["posts"], c["communities"], c["events"]) == (3, 2, 4)
    assert c["dropped"] == REDDIT_SRC_DROPS
    assert events(out) == [
        ("u-bob", "a1", t0 + 60, "comment", 1),
        ("u-cat", "a1", t0 + 240, "comment", 1),
        ("u-ann", "a2", t0 + 7200, "comment", 1),
        ("u-ann", "b1", t0 + 90_000, "comment", 1),
    ]
    assert [(r["post_id"], r["community_id"], r["author_id"], r["created_at"]) for r in rows(out, "posts.csv")] == [
        ("a1", "r-GradSchool", "u-ann", str(t0)),
        ("a2", "r-GradSchool", "", str(t0 + 3600)),  # deleted author
        ("b1", "r-Emory", "u-bob", str(t0 + 86_400)),  # milliseconds scaled to seconds
    ]
    assert [r["community_id"] for r in rows(out, "communities.csv")] == ["r-Emory", "r-GradSchool"]


def test_reddit_threads_malformed_json_names_the_file(tmp_path):
    src = reddit_threads_src(tmp_path / "src")
    (src / "Emory" / "Emory-4-b1.json").write_text('{"sid": "b1",\n "created": }')
    with pytest.raises(DataError, match=r"^Emory/Emory-4-b1\.json: row 2, column \(json\): not valid JSON"):
        FORMATS["reddit-threads"](src, tmp_path / "out")


def test_reddit_threads_window_keeps_threads_created_in_it_and_comments_before_its_end(tmp_path):
    src, out = reddit_threads_src(tmp_path / "src"), tmp_path / "out"
    t0 = utc(2021, 10, 1)
    # a1 (created t0) is before the window, a2 (t0 + 1 h) and b1 (t0 + 1 day) inside it;
    # b1's comment falls exactly on the window's end.
    done = run_cli("reddit-threads", src, out, "--since", "2021-10-01T00:30", "--until", "2021-10-02T01:00")
    assert done.returncode == 0, done.stderr
    c = json.loads(done.stdout.split("\n", 1)[1])
    assert (c["posts"], c["events"], c["since"], c["until"]) == (2, 1, "2021-10-01T00:30:00Z", "2021-10-02T01:00:00Z")
    assert c["dropped"] == {
        **REDDIT_SRC_DROPS,
        "thread_outside_window": 1,
        "comment_on_thread_outside_window": 2,  # bob's and cat's on a1
        "comment_after_until": 1,  # ann's on b1
    }
    assert c["subreddits"] == {"Emory": {"threads": 1, "events": 0}, "GradSchool": {"threads": 3, "events": 1}}
    assert events(out) == [("u-ann", "a2", t0 + 7200, "comment", 1)]
    assert [r["post_id"] for r in rows(out, "posts.csv")] == ["a2", "b1"]


# ----------------------------------------------------------------------------- Discourse


def test_discourse_counts_and_rows(tmp_path):
    out = tmp_path / "out"
    c = FORMATS["discourse"](discourse_src(tmp_path / "src"), out)
    t0 = utc(2020, 3, 6)
    assert (c["posts"], c["communities"], c["events"], c["topic_files"]) == (4, 3, 5, 7)  # site.json is no topic
    assert c["dropped"] == {
        "deleted_post": 1,
        "duplicate_topic": 1,
        "hidden_post": 1,
        "not_a_reply_post": 1,
        "post_before_topic": 1,
        "post_by_system_user": 1,
        "post_by_topic_author": 1,
        "post_in_private_message_topic": 2,
        "post_in_unlisted_topic": 2,
        "private_message_topic": 1,
        "unlisted_topic": 1,
    }
    assert (c["topics_missing_posts"], c["posts_missing"], c["categories_named"]) == (1, 2, 2)
    assert events(out) == [  # sorted by time
        ("u8", "t10", t0 + 60, "comment", 1),
        ("u8", "t15", t0 + 700, "comment", 1),  # the page the archive kept
        ("u9", "t10", t0 + 3600, "comment", 1),
        ("u8", "t14", t0 + 7300, "comment", 1),
        ("u7", "t11", t0 + 90_000, "comment", 1),
    ]
    assert [(r["post_id"], r["community_id"], r["author_id"], r["created_at"]) for r in rows(out, "posts.csv")] == [
        ("t10", "d-4", "u7", str(t0)),
        ("t11", "d-9", "u8", str(t0 + 86_400)),
        ("t14", "d-uncategorized", "", str(t0 + 7200)),  # its first post has no user
        ("t15", "d-9", "u9", str(t0 + 600)),
    ]
    assert [(r["community_id"], r["topic"]) for r in rows(out, "communities.csv")] == [
        ("d-4", "Support"),
        ("d-9", "Show and tell"),
        ("d-uncategorized", "uncategorized"),
    ]


def test_discourse_private_messages_never_reach_the_output(tmp_path):
    out = tmp_path / "out"
    FORMATS["discourse"](discourse_src(tmp_path / "src"), out)
    assert "t12" not in {r["post_id"] for r in rows(out, "posts.csv")}
    assert "t12" not in {e[1] for e in events(out)}


def test_discourse_malformed_json_names_the_file(tmp_path):
    src = discourse_src(tmp_path / "src")
    (src / "posts" / "json" / "demo.11.json").write_text('{"id": 11,\n "created_at": }')
    with pytest.raises(DataError, match=r"^posts/json/demo\.11\.json: row 2, column \(json\): not valid JSON"):
        FORMATS["discourse"](src, tmp_path / "out")


def test_discourse_window_keeps_topics_created_in_it_and_replies_before_its_end(tmp_path):
    src, out = discourse_src(tmp_path / "src"), tmp_path / "out"
    t0 = utc(2020, 3, 6)
    # t10 (created t0) is before the window; t15 (+10 min), t14 (+2 h) and t11 (+1 day)
    # inside it; t11's reply (+25 h) falls after the window's end.
    done = run_cli("discourse", src, out, "--since", "2020-03-06T00:05", "--until", "2020-03-07T01:00")
    assert done.returncode == 0, done.stderr
    c = json.loads(done.stdout.split("\n", 1)[1])
    assert (c["posts"], c["events"], c["since"], c["until"]) == (3, 2, "2020-03-06T00:05:00Z", "2020-03-07T01:00:00Z")
    assert (c["dropped"]["thread_outside_window"], c["dropped"]["comment_on_thread_outside_window"]) == (1, 2)
    assert c["dropped"]["comment_after_until"] == 1
    assert events(out) == [("u8", "t15", t0 + 700, "comment", 1), ("u8", "t14", t0 + 7300, "comment", 1)]
