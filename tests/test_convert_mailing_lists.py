"""The mailing-lists converter on small archives written here (nothing copied from real
lists): mbox files with exact expected rows and counts, the same messages as public-inbox
git archives built with real `git` giving byte-identical output, and bad input named."""

from __future__ import annotations

import calendar
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from training.convert import FORMATS
from training.convert.mail_archive import detect
from training.csvio import DataError
from training.load import load_dataset

ROOT = Path(__file__).resolve().parents[1]


def utc(*ymd_h: int) -> int:
    return calendar.timegm((*ymd_h, *(0,) * (6 - len(ymd_h))))


def rows(out: Path, name: str) -> list[dict[str, str]]:
    with open(out / name, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def events(out: Path) -> list[tuple]:
    return [(r["user_id"], r["post_id"], int(r["ts"]), r["kind"], int(r["weight"])) for r in rows(out, "events.csv")]


T0 = utc(2024, 3, 4, 10)
HOUR = 3600
SINCE, UNTIL = utc(2024, 1, 1), utc(2025, 1, 1)


def uid(address: str) -> str:
    return "m-" + hashlib.sha1(address.encode()).hexdigest()[:12]


def pid(msgid: str) -> str:
    return "t-" + hashlib.sha1(msgid.encode()).hexdigest()[:14]


def rfc2822(ts: int) -> str:
    import email.utils

    return email.utils.formatdate(ts, usegmt=True)


def mail(msgid: str | None, sender: str | None, ts: int | str | None, *, irt: str = "", refs: str = "") -> str:
    """One message's text; ts None leaves out Date, a string is written as the Date."""
    head = []
    if sender is not None:
        head.append(f"From: {sender}")
    head.append("To: list@example.org")
    if ts is not None:
        head.append(f"Date: {ts if isinstance(ts, str) else rfc2822(ts)}")
    head.append(f"Subject: about {msgid}")
    if msgid is not None:
        head.append(f"Message-ID: <{msgid}>")
    if irt:
        head.append(f"In-Reply-To: <{irt}>")
    if refs:
        head.append("References: " + "\n\t".join(f"<{r}>" for r in refs.split()))  # folded
    return "\n".join(head) + "\n\nbody of the message\n"


# Every list's messages in arrival order: (arrival time, message text).
ALICE, BOB, CAROL, DAVE = "alice@example.org", "bob@example.org", "carol@example.org", "dave@example.org"
MESSAGES: dict[str, list[tuple[int, str]]] = {
    "alpha": [
        (T0, mail("a1@x", f"Alice <{ALICE}>", T0)),
        (T0 + HOUR, mail("a2@x", f"Bob <{BOB}>", T0 + HOUR, irt="a1@x")),
        # References only: its parent is the last known entry (a2), so its thread is a1's.
        (T0 + 2 * HOUR, mail("a3@x", CAROL, T0 + 2 * HOUR, refs="a1@x a2@x")),
        (T0 + 3 * HOUR, mail("a4@x", "Alice <ALICE@Example.org>", T0 + 3 * HOUR, irt="a3@x")),  # self-reply
        (T0 + 4 * HOUR, mail("a5@x", "kernel test robot <lkp@intel.com>", T0 + 4 * HOUR, irt="a1@x")),  # bot
        (T0 + 5 * HOUR, mail("a6@x", DAVE, T0 - HOUR, irt="a1@x")),  # dated before its thread
        (T0 + 6 * HOUR, mail("a7@x", DAVE, None, irt="a1@x")),  # no Date
        (T0 + 6 * HOUR, mail("a8@x", DAVE, "yesterday", irt="a1@x")),  # unparsable Date
        (T0 + 6 * HOUR, mail("a9@x", None, T0 + 6 * HOUR, irt="a1@x")),  # no From
        # In reply to a message the archive does not hold: a thread of its own.
        (T0 + 7 * HOUR, mail("a10@x", DAVE, T0 + 7 * HOUR, irt="gone@x", refs="gone@x")),
        (T0 + 8 * HOUR, mail("x2@x", f"Dave <{DAVE}>", T0 + 8 * HOUR, irt="x1@x")),  # reply to the cross-post
        (T0 + 9 * HOUR, mail("old@x", BOB, utc(2023, 6, 1))),  # before --since
    ],
    "beta": [
        (T0 + HOUR, mail("x1@x", CAROL, T0 + HOUR)),  # cross-posted to alpha and beta
    ],
    "gamma": [
        (T0 + HOUR, mail("g1@x", BOB, T0 + HOUR)),
        (T0 + 2 * HOUR, mail("g2@x", f'"Carol C." <{CAROL}>', T0 + 2 * HOUR, irt="g1@x")),
        (T0 + 3 * HOUR, mail("g3@x", CAROL, utc(2030, 1, 1), irt="g1@x")),  # far in the future
        (T0 + 4 * HOUR, mail("g4@x", "syzbot <syzbot+abc@syzkaller.appspotmail.com>", T0 + 4 * HOUR)),  # bot thread
        (T0 + 5 * HOUR, mail("g5@x", ALICE, T0 + 5 * HOUR, irt="g4@x")),
    ],
}
MESSAGES["alpha"].insert(1, (T0 + HOUR, mail("x1@x", CAROL, T0 + HOUR)))  # the cross-post's alpha copy


def from_line(ts: int) -> str:
    import time

    return "From mailer@example.org " + time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(ts)) + "\n"


def mbox_src(src: Path) -> Path:
    for name, msgs in MESSAGES.items():
        (src / name).mkdir(parents=True)
        text = "".join(from_line(at) + body + "\n" for at, body in msgs)
        (src / name / f"{name}.mbox").write_text(text)
    return src


def git(cwd: Path, *args: str, when: int | None = None) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@example.org"}
    env |= {"GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@example.org", "GIT_CONFIG_NOSYSTEM": "1"}
    if when is not None:
        env |= {"GIT_AUTHOR_DATE": f"@{when} +0000", "GIT_COMMITTER_DATE": f"@{when} +0000"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def commit_messages(repo: Path, msgs: list[tuple[int, str]]) -> None:
    """A public-inbox-like repository: one commit per message, the message in `m`."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    for at, body in msgs:
        (repo / "m").write_text(body)
        git(repo, "add", "m")
        git(repo, "commit", "-q", "-m", "message", when=at)


def public_inbox_src(src: Path) -> Path:
    """alpha: a plain (non-bare) repository; beta: the list directory is a bare repository;
    gamma: public-inbox v2 epochs git/0.git and git/1.git (bare), split mid-list."""
    src.mkdir(parents=True)
    commit_messages(src / "alpha", MESSAGES["alpha"])
    commit_messages(src / "work-beta", MESSAGES["beta"])
    git(src, "clone", "-q", "--bare", "work-beta", "beta")
    commit_messages(src / "work-g0", MESSAGES["gamma"][:2])
    commit_messages(src / "work-g1", MESSAGES["gamma"][2:])
    (src / "gamma" / "git").mkdir(parents=True)
    for n in (0, 1):
        git(src, "clone", "-q", "--bare", f"work-g{n}", f"gamma/git/{n}.git")
    for work in ("work-beta", "work-g0", "work-g1"):
        shutil.rmtree(src / work)
    return src


def convert(src: Path, out: Path) -> dict:
    return FORMATS["mailing-lists"](src, out, since=SINCE, until=UNTIL)


# ------------------------------------------------------------------------------- tests


def test_mbox_lists_exact_rows_and_counts(tmp_path):
    out = tmp_path / "out"
    c = convert(mbox_src(tmp_path / "src"), out)
    in_file_order = sorted(
        [
            (uid(BOB), pid("a1@x"), T0 + HOUR, "comment", 1),
            (uid(CAROL), pid("a1@x"), T0 + 2 * HOUR, "comment", 1),  # References-only reply
            (uid(CAROL), pid("g1@x"), T0 + 2 * HOUR, "comment", 1),
            (uid(ALICE), pid("g4@x"), T0 + 5 * HOUR, "comment", 1),  # on a bot's thread
            (uid(DAVE), pid("x1@x"), T0 + 8 * HOUR, "comment", 1),  # on the cross-post, from alpha
        ],
        key=lambda e: (e[2], e[0], e[1]),
    )
    assert events(out) == in_file_order
    posts = [(r["post_id"], r["community_id"], r["author_id"], int(r["created_at"])) for r in rows(out, "posts.csv")]
    assert sorted(posts) == sorted(
        [
            (pid("a1@x"), "l-alpha", uid(ALICE), T0),
            (pid("a10@x"), "l-alpha", uid(DAVE), T0 + 7 * HOUR),
            (pid("x1@x"), "l-beta", uid(CAROL), T0 + HOUR),  # the smaller of the two lists
            (pid("g1@x"), "l-gamma", uid(BOB), T0 + HOUR),
            (pid("g4@x"), "l-gamma", "", T0 + 4 * HOUR),  # a bot's thread has no author
        ]
    )
    assert rows(out, "communities.csv") == [
        {"community_id": f"l-{n}", "is_private": "0", "topic": n} for n in ("alpha", "beta", "gamma")
    ]
    assert c["dropped"] == {
        "comment_before_thread": 1,
        "comment_by_bot": 1,
        "comment_by_thread_author": 1,
        "dated_in_future": 1,
        "malformed_no_date": 1,
        "malformed_no_from_address": 1,
        "malformed_unparsable_date": 1,
        "outside_date_range": 1,
    }
    assert (c["users"], c["posts"], c["communities"], c["events"]) == (4, 5, 3, 5)
    assert c["cross_posted_thread_roots"] == 1
    assert (c["since"], c["until"]) == ("2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z")
    assert c["malformed_examples"] == [
        f"alpha/alpha.mbox: offset {offset_of(out.parent / 'src/alpha/alpha.mbox', 'a7@x')}: a7@x: no_date",
        f"alpha/alpha.mbox: offset {offset_of(out.parent / 'src/alpha/alpha.mbox', 'a8@x')}: a8@x: unparsable_date",
        f"alpha/alpha.mbox: offset {offset_of(out.parent / 'src/alpha/alpha.mbox', 'a9@x')}: a9@x: no_from_address",
    ]
    assert c["lists"]["beta"] == {"source": "mbox", "files": ["beta.mbox"], "messages": 1, "posts": 1, "events": 1}
    assert (c["lists"]["alpha"]["messages"], c["lists"]["gamma"]["messages"]) == (13, 5)
    ds = load_dataset(out)
    assert (len(ds.post_ids), len(ds.e_ts)) == (5, 5)
    assert "@" not in "".join(p.read_text() for p in out.iterdir())  # no address is written


def offset_of(mbox: Path, msgid: str) -> int:
    """Byte offset of the 'From ' line that starts the message with this Message-ID."""
    data = mbox.read_bytes()
    return data.rindex(b"\nFrom ", 0, data.index(f"<{msgid}>".encode())) + 1


def test_public_inbox_gives_the_same_output_as_mbox(tmp_path):
    a = convert(mbox_src(tmp_path / "mbox"), tmp_path / "from-mbox")
    b = convert(public_inbox_src(tmp_path / "git"), tmp_path / "from-git")
    for name in ("events.csv", "posts.csv", "communities.csv"):
        assert (tmp_path / "from-git" / name).read_bytes() == (tmp_path / "from-mbox" / name).read_bytes()
    strip = ("lists", "malformed_examples")
    assert {k: v for k, v in a.items() if k not in strip} == {k: v for k, v in b.items() if k not in strip}
    assert [s.split(": ")[-1] for s in b["malformed_examples"]] == ["no_date", "unparsable_date", "no_from_address"]
    assert b["malformed_examples"][0].startswith("alpha: commit ")
    assert b["lists"]["beta"]["source"] == "public-inbox" and b["lists"]["beta"]["messages"] == 1
    assert sorted(b["lists"]["gamma"]["commits"]) == ["gamma/git/0.git", "gamma/git/1.git"]
    assert all(len(sha) == 40 for info in b["lists"].values() for sha in info["commits"].values())


def test_without_a_window_everything_dated_is_kept(tmp_path):
    c = FORMATS["mailing-lists"](mbox_src(tmp_path / "src"), tmp_path / "out")
    assert "outside_date_range" not in c["dropped"]
    assert c["posts"] == 6  # the 2023 message is a thread of its own
    assert c["dropped"]["dated_in_future"] == 1  # judged against its arrival, not a window


def test_list_without_an_archive_is_named(tmp_path):
    src = mbox_src(tmp_path / "src")
    (src / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no mail archive \(expected \*\.mbox"):
        convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_file_that_is_not_an_mbox_is_named_with_its_offset(tmp_path):
    src = mbox_src(tmp_path / "src")
    (src / "gamma" / "gamma.mbox").write_text("Subject: no From line\n\ntext\n")
    with pytest.raises(DataError) as err:
        convert(src, tmp_path / "out")
    assert str(err.value) == "gamma/gamma.mbox: offset 0: not an mbox file (the first line does not start with 'From ')"


def test_broken_git_archive_is_named(tmp_path):
    src = mbox_src(tmp_path / "src")
    shutil.rmtree(src / "gamma")
    (src / "gamma" / "objects").mkdir(parents=True)
    (src / "gamma" / "HEAD").write_text("not a ref\n")
    with pytest.raises(DataError, match=r"gamma: not a readable git archive \("):
        convert(src, tmp_path / "out")


def test_mbox_and_git_in_one_list_is_an_error(tmp_path):
    src = public_inbox_src(tmp_path / "src")
    (src / "alpha" / "alpha.mbox").write_text(from_line(T0) + MESSAGES["alpha"][0][1])
    with pytest.raises(DataError, match=r"alpha: holds both mbox files and a git archive"):
        convert(src, tmp_path / "out")


def test_detects_each_kind(tmp_path):
    src = public_inbox_src(tmp_path / "git")
    assert [(s.kind, len(s.parts)) for s in map(detect, sorted(src.iterdir()))] == [
        ("public-inbox", 1),
        ("public-inbox", 1),
        ("public-inbox", 2),
    ]


def run_cli(*args: object) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "training", "convert", *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_window_options(tmp_path):
    src, out = mbox_src(tmp_path / "src"), tmp_path / "out"
    done = run_cli("mailing-lists", src, out, "--since", "2024-01-01", "--until", "2025-01-01")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.split("\n", 1)[1])
    assert (summary["events"], summary["dropped"]["outside_date_range"]) == (5, 1)
    bad = run_cli("mailing-lists", src, out, "--since", "last week")
    assert bad.returncode == 2 and "not an ISO date: 'last week'" in bad.stderr
    other = run_cli("movielens", src, out, "--since", "2024-01-01")
    assert (other.returncode, other.stderr) == (
        2,
        "error: --since/--until: only for discourse, mailing-lists, reddit-threads, not movielens\n",
    )
