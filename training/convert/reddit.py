"""Reddit threads, one JSON file per thread with its comment tree nested inside (the shape
that crawlers such as the reddit-college corpus write) -> the training schema.

Source layout: SRC/<subreddit>/<anything>.json, one directory per subreddit. Each file is
one thread: {"sid", "author", "created" (unix seconds), "comments": {comment id: {"author",
"created", "replies": {...}}}}; other keys (title, text, upvotes) are ignored.

Mapping:
  community  = the subreddit, r-<name> (topic = the name): a subreddit is a real community
               boundary (own members, rules, moderators);
  post       = the thread, <sid>; author = its author (empty when deleted);
               created_at = its "created";
  event      = every comment at any depth -> kind comment on its thread, by the comment's
               author, at its "created", weight 1 (an act, not a count). Thread votes are
               anonymous counts: they cannot become events.
  dropped    = comments by deleted accounts ("[deleted]", "[removed]", none); by bots
               (AutoModerator, and names ending in "bot": they comment on every thread,
               which says nothing about anyone's taste); by the thread's own author (an
               author replying in their own thread is not a recommendation signal, and
               would leak the author into the held-out targets); with a time before the
               thread's (clock skew in the crawl); dated more than a day after the
               subreddit's newest thread (the crawl stopped collecting threads there, so
               that stretch holds only comments on old threads: cut rather than half
               kept). Counted per reason in "dropped".
  duplicates = a thread id seen twice (a crawler that saved one thread under two names)
               keeps the first file in name order and counts the rest.
  window     = --since/--until (optional): only threads created in [since, until), and
               their comments before until (a stretch of a years-long crawl, such as its
               dense last months; "thread_outside_window",
               "comment_on_thread_outside_window" and "comment_after_until" in
               "dropped"). The crawl-end cut is the subreddit's newest thread of the
               whole crawl, window or not.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from training.convert.common import DAY, Log, day, keep_window, write_log
from training.csvio import DataError

SUBREDDIT = re.compile(r"[A-Za-z0-9_]{2,21}")  # Reddit's own rule for subreddit names
DELETED = {"", "[deleted]", "[removed]"}


def convert_reddit_threads(src: Path, out: Path, since: int | None = None, until: int | None = None) -> dict:
    src = Path(src)
    subs = sorted(p for p in src.iterdir() if p.is_dir()) if src.is_dir() else []
    if not subs:
        raise DataError(f"{src}: no subreddit subdirectories (expected e.g. {src}/AskAcademia/<thread>.json)")
    log = Log()
    per_sub = {}
    for sub in subs:
        if not SUBREDDIT.fullmatch(sub.name):
            raise DataError(f"{sub}: subreddit name {sub.name!r}: use letters, digits and '_' (2-21 chars)")
        cid = f"r-{sub.name}"
        log.communities[cid] = sub.name
        before = len(log.events)
        files = sorted(sub.glob("*.json"))
        for path in files:
            add_thread(log, cid, path, f"{sub.name}/{path.name}")
        cut_after_crawl_end(log, before, cid)
        per_sub[sub.name] = {"threads": len(files), "events": len(log.events) - before}
    if since is not None or until is not None:
        keep_window(log, since, until)
        kept = Counter(log.posts[e[1]][0] for e in log.events)  # events per community, in one pass
        for name in per_sub:
            per_sub[name]["events"] = kept[f"r-{name}"]
    result = write_log(log, out)
    result["since"] = day(since)
    result["until"] = day(until)
    result["subreddits"] = per_sub
    return result


def cut_after_crawl_end(log: Log, first_event: int, cid: str) -> None:
    newest = max((t for c, _, t in log.posts.values() if c == cid), default=0)
    kept = [e for e in log.events[first_event:] if e[2] <= newest + DAY]
    log.dropped["comment_after_crawl_end"] += len(log.events) - first_event - len(kept)
    del log.events[first_event:]
    log.events.extend(kept)


def add_thread(log: Log, cid: str, path: Path, fname: str) -> None:
    try:
        thread = json.loads(path.read_bytes())
    except OSError as exc:
        raise DataError(f"{fname}: cannot read ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = getattr(exc, "lineno", 1)
        raise DataError(f"{fname}: row {line}, column (json): not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(thread, dict):
        raise DataError(f"{fname}: row 1, column (json): expected one thread object, got {type(thread).__name__}")
    sid = text(thread, "sid", fname)
    if sid in log.posts:
        log.dropped["duplicate_thread"] += 1
        return
    created = seconds(thread, "created", fname)
    author = user(thread.get("author"))
    log.posts[sid] = (cid, author or "", created)
    comments = thread.get("comments") or {}
    if not isinstance(comments, dict):
        raise DataError(f"{fname}: thread {sid}, column comments: expected an object of comments")
    stack = list(comments.items())
    while stack:
        cid_, comment = stack.pop()
        where = f"{fname}: comment {cid_}"
        if not isinstance(comment, dict):
            raise DataError(f"{where}, column (json): expected an object")
        replies = comment.get("replies") or {}
        if not isinstance(replies, dict):
            raise DataError(f"{where}, column replies: expected an object of comments")
        stack.extend(replies.items())
        by = user(comment.get("author"))
        ts = seconds(comment, "created", where)
        if by is None:
            log.dropped["comment_without_user"] += 1
        elif is_bot(by):
            log.dropped["comment_by_bot"] += 1
        elif by == author:
            log.dropped["comment_by_thread_author"] += 1
        elif ts < created:
            log.dropped["comment_before_thread"] += 1
        else:
            log.events.append((by, sid, ts, "comment", 1))


def user(raw: object) -> str | None:
    if not isinstance(raw, str) or raw.strip() in DELETED:
        return None
    return f"u-{raw.strip()}"


def is_bot(uid: str) -> bool:
    name = uid.removeprefix("u-").lower()
    return name == "automoderator" or name.endswith("bot")


def text(obj: dict, key: str, where: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str) or not v.strip():
        raise DataError(f"{where}: row 1, column {key}: missing or not a string: {v!r}")
    return v.strip()


def seconds(obj: dict, key: str, where: str) -> int:
    """Unix seconds; a value in milliseconds (some crawls write those) is scaled down."""
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        raise DataError(f"{where}, column {key}: not a non-negative unix time: {v!r}")
    v = int(v)
    return v // 1000 if v > 10**11 else v
