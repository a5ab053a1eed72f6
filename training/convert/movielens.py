"""MovieLens 100k (u.data, u.item, u.genre) -> the training schema.

Mapping:
  post       = movie, p<item id>;
  community  = the movie's FIRST genre flag in u.genre order, g<genre index> (topic = genre
               name). A catalogue has no groups; a genre is the closest thing to one, and one
               community per post is what the schema allows, so the first flag wins. A movie
               with no flag goes to genre 0 'unknown', as MovieLens itself does;
  created_at = release date at 00:00 UTC, 0 when missing or before 1970 (the schema's
               unknown/old: created_at is a non-negative unix time);
  author     = none (a film has no author among the users);
  event      = rating: user u<id>, kind like, weight = the rating (1..5), ts = rating time.
               Low ratings stay likes with a small weight: the schema has no graded
               dislike, and dropping them would hide that the user chose to watch.
"""

from __future__ import annotations

import calendar
from pathlib import Path

from training.convert.common import Log, Row, delimited, require, write_log
from training.csvio import DataError

# Explicit month names: time.strptime's %b follows the process locale.
MONTHS = {
    m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)
}


def convert_movielens(src: Path, out: Path) -> dict:
    src = Path(src)
    genres = read_genres(src)
    log = Log()
    read_items(src, genres, log)
    read_ratings(src, log)
    return write_log(log, out)


def read_genres(src: Path) -> list[str]:
    name, data = require(src, "u.genre")
    genres: dict[int, str] = {}
    for row in delimited(name, data, "|", ("name", "index"), header=False, encoding="latin-1"):
        genres[row.int("index", lo=0)] = row.get("name")
    if sorted(genres) != list(range(len(genres))):
        raise DataError(f"{name}: row 1, column index: genre indexes are not 0..{len(genres) - 1}")
    return [genres[i] for i in range(len(genres))]


def read_items(src: Path, genres: list[str], log: Log) -> None:
    name, data = require(src, "u.item")
    columns = ("item", "title", "release", "video_release", "url") + tuple(f"genre{i}" for i in range(len(genres)))
    for row in delimited(name, data, "|", columns, header=False, encoding="latin-1"):
        item = row.int("item", lo=1)
        flags = [row.int(f"genre{i}", lo=0) for i in range(len(genres))]
        g = next((i for i, f in enumerate(flags) if f), 0)
        cid = f"g{g}"
        log.communities.setdefault(cid, genres[g])
        if f"p{item}" in log.posts:
            raise row.fail("item", "duplicate movie id", str(item))
        log.posts[f"p{item}"] = (cid, "", release_date(row, "release"))


def release_date(row: Row, column: str) -> int:
    """'01-Jan-1995' -> unix seconds at 00:00 UTC; empty or before 1970 -> 0."""
    v = row.get(column, required=False)
    if v is None:
        return 0
    parts = v.split("-")
    if len(parts) != 3 or parts[1] not in MONTHS or not (parts[0].isdigit() and parts[2].isdigit()):
        raise row.fail(column, "not a date", v)
    day, month, year = int(parts[0]), MONTHS[parts[1]], int(parts[2])
    if year < 1 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        raise row.fail(column, "not a date", v)
    return max(0, calendar.timegm((year, month, day, 0, 0, 0)))


def read_ratings(src: Path, log: Log) -> None:
    name, data = require(src, "u.data")
    for row in delimited(name, data, "\t", ("user", "item", "rating", "ts"), header=False):
        user, item = row.int("user", lo=1), row.int("item", lo=1)
        rating, ts = row.int("rating", lo=1), row.int("ts", lo=0)
        if f"p{item}" not in log.posts:
            raise row.fail("item", "movie not in u.item", str(item))
        log.events.append((f"u{user}", f"p{item}", ts, "like", rating))
