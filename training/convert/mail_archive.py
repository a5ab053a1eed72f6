"""Reading one mailing list's archive as a stream of raw messages: mbox files, or a
public-inbox archive (git repositories, one message per commit in the file `m`).

Which one a list directory holds is detected: files named `*.mbox` or `mbox` are mbox;
the directory being a git repository (bare or not), holding `*.git` repositories (public-
inbox v2 epochs, `0.git`, `1.git`, ...), or a `git/` directory of them is public-inbox.
Both in one list directory is an error (the same messages would be read twice).

Every message comes with `where` (the file and offset, or repository and commit, for
error messages and the summary) and its arrival time when the archive records one: the
commit time in public-inbox, the date on the mbox `From ` line. Nothing is held in memory
beyond the message being read: `git cat-file --batch` streams the blobs of one epoch in
one process.
"""

from __future__ import annotations

import calendar
import mailbox
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from training.csvio import DataError


@dataclass
class RawMail:
    where: str  # "<list>/<file>: offset N" or "<list>/<repo>: commit SHA"
    data: bytes  # the message as stored (headers and body)
    arrival: int | None  # unix seconds it reached the archive, when known


@dataclass
class ListSource:
    name: str  # the list directory's name: the community
    path: Path
    kind: str  # "mbox" or "public-inbox"
    parts: list[Path] = field(default_factory=list)  # mbox files, or git repositories (epochs) in order

    def provenance(self) -> dict:
        """What the summary records about where this list's messages came from."""
        if self.kind == "mbox":
            return {"source": "mbox", "files": [p.name for p in self.parts]}
        return {"source": "public-inbox", "commits": {self.label(p): head_commit(p) for p in self.parts}}

    def label(self, part: Path) -> str:
        return self.name if part == self.path else f"{self.name}/{part.relative_to(self.path)}"

    def messages(self) -> Iterator[RawMail]:
        for part in self.parts:
            yield from (read_mbox if self.kind == "mbox" else read_git)(part, self.label(part))


def detect(path: Path) -> ListSource:
    """What a list directory holds; DataError naming it when neither or both."""
    name = path.name
    files = sorted(p for p in path.iterdir() if p.is_file() and (p.name == "mbox" or p.name.endswith(".mbox")))
    repos = git_repos(path)
    if files and repos:
        raise DataError(f"{path}: holds both mbox files and a git archive; keep one per list")
    if files:
        return ListSource(name, path, "mbox", files)
    if repos:
        return ListSource(name, path, "public-inbox", repos)
    raise DataError(
        f"{path}: no mail archive (expected *.mbox or mbox files, or a public-inbox git repository / <n>.git epochs)"
    )


def is_git_repo(path: Path) -> bool:
    return (path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir())


def git_repos(path: Path) -> list[Path]:
    if is_git_repo(path):
        return [path]
    for base in (path, path / "git"):
        epochs = [p for p in base.glob("*.git") if p.is_dir() and is_git_repo(p)] if base.is_dir() else []
        if epochs:
            return sorted(epochs, key=epoch_key)
    return []


def epoch_key(p: Path) -> tuple:
    stem = p.name.removesuffix(".git")
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


# ------------------------------------------------------------------------------- mbox

FROM_LINE_DATE = re.compile(rb"([A-Z][a-z]{2}) +([A-Z][a-z]{2}) +(\d{1,2}) +(\d{1,2}:\d{2}:\d{2}) +(\d{4})\s*$")


def read_mbox(path: Path, label: str) -> Iterator[RawMail]:
    where = label
    try:
        with open(path, "rb") as fh:
            first = fh.readline()
        if first and not first.startswith(b"From "):
            raise DataError(f"{where}: offset 0: not an mbox file (the first line does not start with 'From ')")
        box = mailbox.mbox(path, create=False)
        keys = box.keys()  # scans the file once for the 'From ' lines; messages are read one at a time
    except OSError as exc:
        raise DataError(f"{where}: cannot read ({exc.strerror})") from None
    try:
        for key in keys:
            offset = box._toc[key][0]  # the stdlib's table of contents: (start, stop) byte offsets
            with box.get_file(key, from_=True) as fh:
                from_line = fh.readline()
                data = fh.read()
            yield RawMail(f"{where}: offset {offset}", data, from_line_time(from_line))
    finally:
        box.close()


def from_line_time(line: bytes) -> int | None:
    """The delivery date on an mbox 'From sender Thu Jan  4 10:00:00 2024' line (UTC)."""
    m = FROM_LINE_DATE.search(line.rstrip(b"\r\n"))
    if not m:
        return None
    try:
        return calendar.timegm(time.strptime(b" ".join(m.groups()).decode(), "%a %b %d %H:%M:%S %Y"))
    except ValueError:
        return None


# ------------------------------------------------------------------------ public-inbox


def git_env(repo: Path) -> dict[str, str]:
    """Git reads `repo` only: no looking for a repository in the directories above it."""
    return {**os.environ, "GIT_CEILING_DIRECTORIES": str(repo.absolute().parent)}


def git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False, env=git_env(repo)
        )
    except OSError as exc:
        raise DataError(f"{repo}: cannot run git ({exc.strerror})") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["git failed"])[-1]
        raise DataError(f"{repo}: not a readable git archive ({why})")
    return done.stdout


def head_commit(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


def read_git(repo: Path, label: str) -> Iterator[RawMail]:
    """Every commit's `m`, oldest commit first, through one `git cat-file --batch`. A
    commit without `m` (public-inbox v2 writes `d` when a message is removed) is yielded
    with empty data, so the caller counts it."""
    commits = [line.split() for line in git(repo, "rev-list", "--all", "--reverse", "--timestamp").splitlines()]
    proc = subprocess.Popen(
        ["git", "-C", str(repo), "cat-file", "--batch"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=1 << 20,
        env=git_env(repo),
    )

    def feed() -> None:
        try:
            for _, sha in commits:
                proc.stdin.write(f"{sha}:m\n".encode())
            proc.stdin.close()
        except (BrokenPipeError, ValueError):  # the reader stopped early (an error)
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        for ts, sha in commits:
            head = proc.stdout.readline().split()
            where = f"{label}: commit {sha}"
            if len(head) == 2 and head[1] == b"missing":
                yield RawMail(where, b"", int(ts))
                continue
            if len(head) != 3 or head[1] != b"blob":
                raise DataError(
                    f"{where}: git cat-file answered {b' '.join(head).decode(errors='replace')!r}, not a blob `m`"
                )
            size = int(head[2])
            data = proc.stdout.read(size)
            proc.stdout.read(1)  # the newline after the blob
            if len(data) != size:
                raise DataError(f"{where}: git cat-file stopped after {len(data)} of {size} bytes")
            yield RawMail(where, data, int(ts))
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()
        feeder.join(timeout=5)
