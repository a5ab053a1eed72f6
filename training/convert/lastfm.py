"""Last.fm hetrec2011-lastfm-2k (user_artists.dat, user_taggedartists.dat or
user_taggedartists-timestamps.dat, tags.dat, optional artists.dat) -> the training schema.

The play counts of user_artists.dat carry NO time, and training splits by time, so the
events come from the dated tag assignments:
  event      = the FIRST time a user tagged an artist (one per user-artist pair: re-tagging
               the same artist says nothing new about the user's taste), kind like,
               ts = that time (the -timestamps file, in ms, when present; else the
               day/month/year file at 00:00 UTC),
               weight = the user's play count of that artist (user_artists.dat), or 1 when
               the user tagged an artist they have no plays for;
  dropped    = listening pairs never tagged (no time to split on), and tag assignments
               dated before 2005 (Last.fm started tagging later: a handful of corrupt
               1956/1957/1979 rows);
  post       = artist, p<artistID>: every artist of artists.dat plus any tagged or listened id;
  community  = the artist's most used tag over all users, t<tagID> (ties -> lowest id;
               topic = the tag text): the crowd's main genre for the artist; artists nobody
               tagged go to 'untagged';
  created_at = 0 (unknown: a catalogue); author = none.
"""

from __future__ import annotations

import calendar
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

from training.convert.common import UNTAGGED, Log, Row, delimited, find, require, write_log

EARLIEST = calendar.timegm((2005, 1, 1, 0, 0, 0))


def convert_lastfm(src: Path, out: Path) -> dict:
    src = Path(src)
    log = Log()
    tag_text = read_tags(src)
    first_tag, tag_uses = read_taggings(src, tag_text, log)
    plays = read_plays(src)
    log.dropped["listening_pairs_without_any_time"] = sum(1 for k in plays if k not in first_tag)
    add_artists(src, log, tag_uses, tag_text, plays)
    for (user, artist), ts in first_tag.items():
        log.events.append((f"u{user}", f"p{artist}", ts, "like", plays.get((user, artist), 1)))
    return write_log(log, out)


def read_tags(src: Path) -> dict[int, str]:
    name, data = require(src, "tags.dat")
    rows = delimited(name, data, "\t", ("tagID", "tagValue"), header=True, encoding="latin-1")
    return {row.int("tagID", lo=0): row.get("tagValue") for row in rows}


def read_taggings(src: Path, tag_text: dict[int, str], log: Log) -> tuple[dict, dict]:
    """(first tag time per (user, artist), tag use counts per artist). Every assignment,
    even a badly dated one, counts towards the artist's community: the tag is still valid."""
    first_tag: dict[tuple[int, int], int] = {}
    tag_uses: dict[int, Counter] = defaultdict(Counter)
    too_early = 0
    for row, ts in taggings(src):
        user, artist, tag = row.int("userID", lo=0), row.int("artistID", lo=0), row.int("tagID", lo=0)
        if tag not in tag_text:
            raise row.fail("tagID", "tag not in tags.dat", str(tag))
        tag_uses[artist][tag] += 1
        if ts < EARLIEST:
            too_early += 1
            continue
        key = (user, artist)
        if key not in first_tag or ts < first_tag[key]:
            first_tag[key] = ts
    log.dropped["tag_assignments_dated_before_2005"] = too_early
    return first_tag, tag_uses


def taggings(src: Path) -> Iterator[tuple[Row, int]]:
    """Tag assignments with unix seconds: the ms-timestamp file if shipped (exact times),
    else the day/month/year file (day resolution)."""
    found = find(src, "user_taggedartists-timestamps.dat")
    if found is not None:
        for row in delimited(*found, "\t", ("userID", "artistID", "tagID", "timestamp"), header=True):
            yield row, row.int("timestamp", lo=0) // 1000
        return
    name, data = require(src, "user_taggedartists.dat")
    for row in delimited(name, data, "\t", ("userID", "artistID", "tagID", "day", "month", "year"), header=True):
        d, m, y = row.int("day", lo=1), row.int("month", lo=1), row.int("year", lo=1)
        if d > 31:
            raise row.fail("day", "not a day of month", str(d))
        if m > 12:
            raise row.fail("month", "not a month", str(m))
        yield row, calendar.timegm((y, m, d, 0, 0, 0))


def read_plays(src: Path) -> dict[tuple[int, int], int]:
    name, data = require(src, "user_artists.dat")
    plays: dict[tuple[int, int], int] = {}
    for row in delimited(name, data, "\t", ("userID", "artistID", "weight"), header=True):
        plays[(row.int("userID", lo=0), row.int("artistID", lo=0))] = row.int("weight", lo=0)
    return plays


def add_artists(src: Path, log: Log, tag_uses: dict, tag_text: dict[int, str], plays: dict) -> None:
    artists = {a for _, a in plays} | set(tag_uses)
    found = find(src, "artists.dat")
    if found is not None:
        # artists.dat names are latin-1 in places; only the id column is used.
        for row in delimited(*found, "\t", ("id",), header=True, encoding="latin-1"):
            artists.add(row.int("id", lo=0))
    for artist in sorted(artists):
        uses = tag_uses.get(artist)
        if uses:
            tag = min(uses, key=lambda t: (-uses[t], t))
            cid, topic = f"t{tag}", tag_text[tag]
        else:
            cid, topic = UNTAGGED, UNTAGGED
        log.communities.setdefault(cid, topic)
        log.posts[f"p{artist}"] = (cid, "", 0)
