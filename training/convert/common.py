"""What every converter shares: reading source files (plain, .gz, or inside a .zip) with
errors that name file, row and column; the converted log held in memory; and writing it
as the training schema's CSV files, atomically.

Row numbers in errors are the 1-based line numbers of the source file (header included),
so an engineer can open the file at that line.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import os
import re
import tempfile
import xml.parsers.expat
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from training.csvio import DataError
from training.schema import COMMUNITIES_CSV, EVENTS_CSV, KINDS, POSTS_CSV

DAY = 86_400
MAX_ID_BYTES = 128  # the service's limit on ids (user_id: at most 128 bytes)
# The schema needs a community for every post; posts with no tag or genre share this one.
UNTAGGED = "untagged"

# ------------------------------------------------------------------------------------ input


def find(src: Path, name: str, label: str = "") -> tuple[str, bytes] | None:
    """(label + name, raw bytes) of `name` in src: the plain file, name.gz, or a member of
    a .zip in src; None when absent.

    Zip members are matched by basename so an archive as downloaded, with a top folder
    (ml-100k.zip -> ml-100k/u.data), works without unpacking.
    """
    where = label + name
    plain = src / name
    try:
        if plain.is_file():
            return where, plain.read_bytes()
        if plain.with_name(name + ".gz").is_file():
            with gzip.open(plain.with_name(name + ".gz"), "rb") as fh:
                return where, fh.read()
        for entry in sorted(src.iterdir()) if src.is_dir() else []:
            if entry.name.lower().endswith(".zip"):
                with zipfile.ZipFile(entry) as archive:
                    for member in sorted(archive.namelist()):
                        if os.path.basename(member) == name:
                            return where, archive.read(member)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{where}: cannot read ({exc})") from None
    return None


def require(src: Path, name: str, label: str = "") -> tuple[str, bytes]:
    found = find(src, name, label)
    if found is None:
        raise DataError(f"{label}{name}: file not found in {src} (nor {name}.gz, nor in a .zip)")
    return found


def lines(fname: str, data: bytes, encoding: str) -> Iterator[tuple[int, str]]:
    """(line number, line) pairs; blank lines are skipped (trailing newlines in dumps)."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        row = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{fname}: row {row}: not valid {encoding} text") from None
    text = text.removeprefix("\ufeff")
    # Split on \n only: str.splitlines also breaks at \x85, \x1c.. which latin-1 text may hold.
    for n, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip():
            yield n, line


class Row:
    """One source row; typed access whose errors name file, row and column."""

    def __init__(self, fname: str, lineno: int, values: dict[str, str]):
        self.fname, self.lineno, self.values = fname, lineno, values

    def fail(self, column: str, what: str, value: object) -> DataError:
        return DataError(f"{self.fname}: row {self.lineno}, column {column}: {what} {value!r}")

    def get(self, column: str, required: bool = True) -> str | None:
        v = self.values.get(column)
        if v is None or v == "":
            if required:
                raise self.fail(column, "missing value", v or "")
            return None
        return v

    def int(self, column: str, required: bool = True, lo: int | None = None) -> int | None:
        v = self.get(column, required)
        if v is None:
            return None
        if not re.fullmatch(r"-?\d+", v.strip()):
            raise self.fail(column, "not an integer", v)
        x = int(v)
        if lo is not None and x < lo:
            raise self.fail(column, f"must be >= {lo}:", v)
        return x


def delimited(
    fname: str, data: bytes, sep: str, columns: tuple[str, ...], *, header: bool, encoding: str = "utf-8"
) -> Iterator[Row]:
    """Rows of a separator-delimited file (not CSV: the sources never quote, and titles
    contain commas and quotes). With header=True the header must contain `columns`;
    otherwise `columns` name the leading fields by position."""
    rows = lines(fname, data, encoding)
    names = list(columns)
    if header:
        hn, hline = next(rows, (1, None))
        if hline is None:
            raise DataError(f"{fname}: row 1: empty file, expected a header")
        names = [h.strip() for h in hline.split(sep)]
        for c in columns:
            if c not in names:
                raise DataError(f"{fname}: row {hn}, column {c}: missing from header {names!r}")
    for n, line in rows:
        fields = line.split(sep)
        if not header and len(fields) < len(names):
            raise DataError(
                f"{fname}: row {n}, column {names[len(fields)]}: missing field "
                f"(got {len(fields)} fields, expected {len(names)})"
            )
        if header and len(fields) != len(names):
            col = names[min(len(fields), len(names) - 1)]
            raise DataError(f"{fname}: row {n}, column {col}: expected {len(names)} fields, got {len(fields)}")
        yield Row(fname, n, dict(zip(names, fields)))


def xml_rows(fname: str, data: bytes) -> list[Row]:
    """The <row .../> elements of a Stack Exchange dump file, with their line numbers."""
    rows: list[Row] = []
    parser = xml.parsers.expat.ParserCreate()

    def start(tag: str, attrs: dict[str, str]) -> None:
        if tag == "row":
            rows.append(Row(fname, parser.CurrentLineNumber, attrs))

    parser.StartElementHandler = start
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise DataError(
            f"{fname}: row {exc.lineno}, column (xml): malformed XML: {xml.parsers.expat.ErrorString(exc.code)}"
        ) from None
    return rows


# ----------------------------------------------------------------------------------- output


@dataclass
class Log:
    """A converted log, held in memory until every input file has been read, so bad input
    fails before a single output file is touched."""

    posts: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # id -> (community, author, created_at)
    communities: dict[str, str] = field(default_factory=dict)  # id -> topic
    events: list[tuple[str, str, int, str, int]] = field(default_factory=list)  # user, post, ts, kind, weight
    dropped: Counter = field(default_factory=Counter)  # reason -> count (reported in the counts)


def keep_window(log: Log, since: int | None, until: int | None) -> None:
    """Posts (threads, topics) created in [since, until) and their events before until; the
    rest dropped, counted under the thread-forum names every windowed converter reports."""
    lo = since if since is not None else -(2**63)
    hi = until if until is not None else 2**63
    outside = {pid for pid, (_, _, created) in log.posts.items() if not lo <= created < hi}
    dropped = {
        "thread_outside_window": len(outside),
        "comment_on_thread_outside_window": sum(e[1] in outside for e in log.events),
        "comment_after_until": sum(e[1] not in outside and e[2] >= hi for e in log.events),
    }
    log.dropped.update({reason: n for reason, n in dropped.items() if n})
    for pid in outside:
        del log.posts[pid]
    log.events[:] = [e for e in log.events if e[1] not in outside and e[2] < hi]


def day(ts: int | None) -> str | None:
    """Unix seconds -> ISO date-time in UTC (a window's ends in the printed counts)."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def check_id(value: str, what: str) -> str:
    """Ids must survive the CSV round trip unquoted and fit the service's limit."""
    if (
        not value
        or value != value.strip()
        or "," in value
        or not value.isprintable()
        or len(value.encode("utf-8")) > MAX_ID_BYTES
    ):
        raise DataError(f"{what} id {value!r}: not usable (empty, comma, spaces at the ends or over 128 bytes)")
    return value


def write_log(log: Log, out: Path) -> dict:
    """Check referential integrity, write events.csv, posts.csv and communities.csv sorted
    (output is deterministic: nothing depends on dict order or the clock), return the counts."""
    _check(log)
    events = sorted(log.events, key=lambda e: (e[2], e[0], e[1], e[3], e[4]))
    posts = [(pid, c, a, t, 0, "community") for pid, (c, a, t) in sorted(log.posts.items(), key=_id_key)]
    write_atomically(
        Path(out),
        {
            EVENTS_CSV: (("user_id", "post_id", "ts", "kind", "weight"), events),
            POSTS_CSV: (("post_id", "community_id", "author_id", "created_at", "deleted", "visibility"), posts),
            COMMUNITIES_CSV: (
                ("community_id", "is_private", "topic"),
                [(c, 0, t) for c, t in sorted(log.communities.items())],
            ),
        },
    )
    return counts(log)


def _check(log: Log) -> None:
    for pid, (cid, author, _) in log.posts.items():
        check_id(pid, "post")
        check_id(cid, "community")
        if author:
            check_id(author, "author")
        if cid not in log.communities:
            raise DataError(f"post {pid}: names unknown community {cid}")
    for user, pid, ts, kind, weight in log.events:
        check_id(user, "user")
        if pid not in log.posts or kind not in KINDS or weight < 0:
            raise DataError(f"event {(user, pid, ts, kind, weight)}: unknown post, unknown kind or negative weight")


def _id_key(item: tuple) -> tuple:
    """Sort p2 before p10: the numeric part counts as a number when the id is prefix + digits."""
    m = re.fullmatch(r"([^\d]*)(\d+)", item[0])
    return (m.group(1), int(m.group(2)), "") if m else (item[0], -1, item[0])


def write_atomically(out: Path, files: dict[str, tuple[tuple[str, ...], Iterable[tuple]]]) -> None:
    """Every file goes to a temp file in `out` first (same file system, so os.replace is
    atomic); only when all are written and fsynced do they replace their targets. A failure
    before that leaves `out` as it was and removes the temp files."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{out}: cannot create the output directory ({exc.strerror})") from None
    temps: dict[str, str] = {}
    try:
        for name, (header, rows) in files.items():
            fd, temps[name] = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".tmp")
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
                # csv quoting: topics (Last.fm tag texts) may hold commas and quotes.
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(header)
                writer.writerows(rows)
                fh.flush()
                os.fsync(fh.fileno())
        for name, tmp in temps.items():
            os.replace(tmp, out / name)
    except OSError as exc:
        raise DataError(f"{out}: cannot write the converted files ({exc.strerror})") from None
    finally:
        for tmp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def counts(log: Log) -> dict:
    """Counts and shape of a converted log: what the CLI prints and the docs quote."""
    ts = [e[2] for e in log.events]
    fresh = sum(1 for _, p, t, _, _ in log.events if log.posts[p][2] > 0 and 0 <= t - log.posts[p][2] < 14 * DAY)
    return {
        "users": len({e[0] for e in log.events} | {a for _, a, _ in log.posts.values() if a}),
        "engaging_users": len({e[0] for e in log.events}),
        "posts": len(log.posts),
        "posts_with_events": len({e[1] for e in log.events}),
        "communities": len(log.communities),
        "events": len(log.events),
        "events_by_kind": dict(sorted(Counter(e[3] for e in log.events).items())),
        "ts_min": min(ts) if ts else None,
        "ts_max": max(ts) if ts else None,
        "span_days": round((max(ts) - min(ts)) / DAY, 1) if ts else 0.0,
        "events_per_post": round(len(ts) / len(log.posts), 3) if log.posts else 0.0,
        "share_events_on_posts_younger_than_14d": round(fresh / len(ts), 4) if ts else 0.0,
        "dropped": dict(sorted(log.dropped.items())),
    }
