"""Discourse forums, as archived from Discourse's own JSON (the topic document it serves at
/t/<id>.json, with the whole post stream) -> the training schema.

Discourse is the forum software most small communities run (a project's support forum, a
hobby group), so its archives are the closest public logs to the groups this ranker is for.

Source layout: SRC holds one topic document per file, at any depth (`**/*.json`, or
`*.json.gz`): {"id", "created_at", "category_id", "archetype", "visible", "deleted_at",
"post_stream": {"posts": [{"post_number", "user_id", "created_at", "post_type",
"deleted_at", "hidden", "user_deleted"}, ...], "stream": [post ids]}}; other keys are
ignored. Optional, at SRC's top: `site.json` (Discourse's /site.json) or `categories.json`
(/categories.json), read only for the categories' names; they are not topics.

Mapping:
  community  = the topic's category, d-<category_id> (topic = the category's name when
               site.json or categories.json names it, else "category <id>"); a topic without
               a category goes to d-uncategorized. A category is the forum's own boundary
               between groups of people (a project's "Support" and "Showcase" draw
               different regulars).
  post       = the topic, t<id>; author = the user of its first post, u<user_id>;
               created_at = the topic's created_at.
  event      = every later post (post_number > 1): kind comment on the topic, by its user,
               at its created_at, weight 1. Likes are anonymous counts in topic documents:
               they cannot become events.
  dropped    = whole topics that are not public discussions: private messages (archetype
               private_message), unlisted (visible false) or deleted topics, counted with
               their posts ("private_message_topic", "unlisted_topic", "deleted_topic");
               posts that are not a person's reply: moderator actions, small actions
               ("closed", "pinned") and whispers (post_type 2, 3, 4; whispers are for staff
               only); deleted or hidden posts (hidden = flagged away by the community);
               posts by Discourse's own users (user_id <= 0: system, discobot), by the
               topic's author (replying in one's own topic is no recommendation signal, and
               would leak the author into the held-out targets), without a user, or dated
               before the topic. A topic id seen twice keeps the first file in path order.
  incomplete = a topic whose post_stream.stream lists more posts than the file holds (an
               archiver that saved only the first page of a long topic) keeps the posts it
               has and is counted in "topics_missing_posts", with the posts missing.
  window     = --since/--until (optional), as for reddit-threads: only topics created in
               [since, until), and their replies before until.
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from pathlib import Path

from training.convert.common import Log, day, keep_window, write_log
from training.csvio import DataError

REGULAR = 1  # Discourse's post_type of a person's post (2 moderator action, 3 small action, 4 whisper)
CATEGORY_FILES = ("site.json", "categories.json")
UNCATEGORIZED = "d-uncategorized"


def convert_discourse(src: Path, out: Path, since: int | None = None, until: int | None = None) -> dict:
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src}: not a directory (expected topic documents, e.g. {src}/<slug>.<id>.json)")
    files = sorted(
        p
        for p in src.rglob("*")
        if p.is_file() and p.name.endswith((".json", ".json.gz")) and not (p.parent == src and p.name in CATEGORY_FILES)
    )
    if not files:
        raise DataError(f"{src}: no topic documents (*.json or *.json.gz) found")
    names = category_names(src)
    log = Log()
    missing = {"topics_missing_posts": 0, "posts_missing": 0}
    for path in files:
        add_topic(log, names, read_json(path, src), str(path.relative_to(src)), missing)
    if since is not None or until is not None:
        keep_window(log, since, until)
    result = write_log(log, out)
    result.update(missing)
    result["topic_files"] = len(files)
    # Named by site.json / categories.json, and holding at least one converted topic.
    result["categories_named"] = sum(f"d-{cat}" in log.communities for cat in names)
    result["since"] = day(since)
    result["until"] = day(until)
    return result


def read_json(path: Path, src: Path) -> object:
    fname = str(path.relative_to(src))
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        return json.loads(raw)
    except (OSError, EOFError) as exc:
        raise DataError(f"{fname}: cannot read ({exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = getattr(exc, "lineno", 1)
        raise DataError(f"{fname}: row {line}, column (json): not valid JSON ({exc.__class__.__name__})") from None


def category_names(src: Path) -> dict[int, str]:
    """Category id -> name from site.json ({"categories": [...]}) or categories.json
    ({"category_list": {"categories": [...]}}, subcategories nested or listed)."""
    names: dict[int, str] = {}
    for name in CATEGORY_FILES:
        path = src / name
        if not path.is_file():
            continue
        doc = read_json(path, src)
        cats = doc.get("categories") if isinstance(doc, dict) else None
        if cats is None and isinstance(doc, dict):
            cats = (doc.get("category_list") or {}).get("categories")
        if not isinstance(cats, list):
            raise DataError(f"{name}: row 1, column categories: expected a list of categories")
        stack = list(cats)
        while stack:
            cat = stack.pop()
            if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or not isinstance(cat.get("name"), str):
                raise DataError(
                    f"{name}: row 1, column categories: each category needs an integer id and a name: {cat!r}"
                )
            names.setdefault(cat["id"], " ".join(cat["name"].split()))
            stack.extend(c for c in cat.get("subcategory_list") or [] if isinstance(c, dict))
    return names


def add_topic(log: Log, names: dict[int, str], doc: object, fname: str, missing: dict[str, int]) -> None:
    if not isinstance(doc, dict):
        raise DataError(f"{fname}: row 1, column (json): expected one topic object, got {type(doc).__name__}")
    tid = integer(doc, "id", fname)
    where = f"{fname}: topic {tid}"
    stream = doc.get("post_stream")
    posts = stream.get("posts") if isinstance(stream, dict) else None
    if not isinstance(posts, list) or not posts:
        raise DataError(f"{where}, column post_stream.posts: expected a non-empty list of posts")
    pid = f"t{tid}"
    if pid in log.posts:
        log.dropped["duplicate_topic"] += 1
        return
    reason = (
        "private_message_topic"
        if doc.get("archetype") == "private_message"
        else "unlisted_topic"
        if doc.get("visible") is False
        else "deleted_topic"
        if doc.get("deleted_at")
        else None
    )
    if reason:
        log.dropped[reason] += 1
        log.dropped[f"post_in_{reason}"] += len(posts)
        return
    ids = stream.get("stream")
    if isinstance(ids, list) and len(ids) > len(posts):
        missing["topics_missing_posts"] += 1
        missing["posts_missing"] += len(ids) - len(posts)
    created = timestamp(doc, "created_at", where)
    first = next((p for p in posts if isinstance(p, dict) and p.get("post_number") == 1), None)
    author = user(first.get("user_id")) if first else None
    log.posts[pid] = (community(log, names, doc.get("category_id"), where), author or "", created)
    for post in posts:
        if not isinstance(post, dict):
            raise DataError(f"{where}, column post_stream.posts: expected post objects, got {type(post).__name__}")
        number = integer(post, "post_number", where)
        if number == 1:
            continue
        at = f"{where} post {number}"
        by = user(post.get("user_id"))
        ts = timestamp(post, "created_at", at)
        if post.get("post_type", REGULAR) != REGULAR:
            log.dropped["not_a_reply_post"] += 1
        elif post.get("deleted_at") or post.get("user_deleted"):
            log.dropped["deleted_post"] += 1
        elif post.get("hidden"):
            log.dropped["hidden_post"] += 1
        elif by is None:
            log.dropped["post_by_system_user" if isinstance(post.get("user_id"), int) else "post_without_user"] += 1
        elif by == author:
            log.dropped["post_by_topic_author"] += 1
        elif ts < created:
            log.dropped["post_before_topic"] += 1
        else:
            log.events.append((by, pid, ts, "comment", 1))


def community(log: Log, names: dict[int, str], raw: object, where: str) -> str:
    if raw is None:
        log.communities.setdefault(UNCATEGORIZED, "uncategorized")
        return UNCATEGORIZED
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise DataError(f"{where}, column category_id: not an integer: {raw!r}")
    cid = f"d-{raw}"
    log.communities.setdefault(cid, names.get(raw, f"category {raw}"))
    return cid


def user(raw: object) -> str | None:
    """u<id> for a person; None for Discourse's own users (system -1, discobot -2) or none."""
    if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
        return None
    return f"u{raw}"


def integer(obj: dict, key: str, where: str) -> int:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise DataError(f"{where}, column {key}: missing or not an integer: {v!r}")
    return v


def timestamp(obj: dict, key: str, where: str) -> int:
    """Discourse's ISO 8601 times ('2020-12-28T22:29:45.471Z') -> unix seconds."""
    v = obj.get(key)
    try:
        parsed = datetime.fromisoformat(v) if isinstance(v, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise DataError(f"{where}, column {key}: not an ISO 8601 time with a zone: {v!r}")
    return int(parsed.timestamp())
