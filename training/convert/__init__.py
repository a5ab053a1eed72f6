"""Converters from public engagement logs, in their original formats, to the training
schema (docs/training.md "Input schema" and "Real logs: converters").

    python -m training convert FORMAT SRC OUT [--since DATE] [--until DATE]

Every converter is `function(src: Path, out: Path) -> dict of counts`: it reads the source
files from the directory `src` (each may also be gzipped, `name.gz`, or inside a `.zip` in
`src`), writes events.csv, posts.csv and communities.csv into `out` atomically, and
returns counts (users, posts, communities, events by kind, dropped rows by reason). Bad
input raises training.csvio.DataError with one line naming file, row and column.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from training.convert.discourse import convert_discourse
from training.convert.lastfm import convert_lastfm
from training.convert.mailing_lists import convert_mailing_lists
from training.convert.movielens import convert_movielens
from training.convert.reddit import convert_reddit_threads
from training.convert.stackexchange import convert_stackexchange, convert_stackexchange_sites

FORMATS: dict[str, Callable[[Path, Path], dict]] = {
    "movielens": convert_movielens,
    "lastfm": convert_lastfm,
    "stackexchange": convert_stackexchange,
    "stackexchange-sites": convert_stackexchange_sites,
    "reddit-threads": convert_reddit_threads,
    "mailing-lists": convert_mailing_lists,
    "discourse": convert_discourse,
}
# Formats whose converter takes a time window (since=, until=: unix seconds; the CLI's
# --since/--until): logs that span years, where a study wants a stretch of them.
WINDOWED = {"mailing-lists", "reddit-threads", "discourse"}
