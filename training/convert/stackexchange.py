"""Stack Exchange data dumps (Posts.xml, Comments.xml, Votes.xml, Users.xml) -> the
training schema: one site (`stackexchange`) or several sites, one community per site
(`stackexchange-sites`).

Common mapping. The unit a feed ranks is the question thread, so:
  post       = question (PostTypeId 1); author = OwnerUserId (empty for deleted accounts);
               created_at = CreationDate (UTC);
  events     = answer (PostTypeId 2) -> kind comment on its question, by the answer's owner,
               at its date; comment (Comments.xml) on the question or on one of its
               answers -> kind comment on the question; favourite (Votes.xml VoteTypeId 5,
               the only vote type that carries a UserId) -> kind save, dated to the day
               (00:00 UTC) in the dump, so moved up to the question's creation when earlier.
               Up/down votes are anonymous in the dumps: they cannot become events.
               weight 1 (an act, not a count).
  dropped    = events without a user (deleted accounts); events by the question's own
               author (an asker replying in their own thread is not a recommendation
               signal, and would leak the author into the held-out targets); events on
               posts that are not a question of Posts.xml (tag wikis, or newer posts when
               the files come from different dumps). Counted per reason in "dropped".

Single site: community = the question's FIRST tag, t_<tag> (topic = the tag): a site has
no sub-forums, and the first tag is the asker's main topic; untagged questions go to
t_untagged. Ids: p<Id>, u<Id>.

Several sites (a directory whose subdirectories are sites, named like 'cardano' or
'history.meta'): community = the site, c-<site> (topic = the site name): the site is the
real community boundary (own users, rules, moderators). Ids: <site>-p<Id>, <site>-u<Id>;
when the site ships Users.xml, a user with a network AccountId becomes a<AccountId>, so one
person active on two sites is one user. Events dated more than a day after the site's last
post are dropped: when Comments/Votes come from a later dump than Posts, that stretch of
the site is incomplete, so it is cut rather than half kept.
"""

from __future__ import annotations

import calendar
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from training.convert.common import DAY, MAX_ID_BYTES, UNTAGGED, Log, Row, find, require, write_log, xml_rows
from training.csvio import DataError

SITE_NAME = re.compile(r"[a-z0-9][a-z0-9.\-]{0,40}")
ACCOUNT_ID = re.compile(r"a\d+")  # network-wide account ids; per-site ids contain "-u"
FILES = ("Posts.xml", "Comments.xml", "Votes.xml", "Users.xml")


@dataclass
class Site:
    """How one site's rows become ids and communities."""

    src: Path
    label: str  # prefix of file names in errors and counts ("" or "<site>/")
    prefix: str  # id prefix ("" or "<site>-")
    community: Callable[[Row], str]  # a question row -> its community id (registered in the log)
    cut_after_posts_end: bool
    accounts: dict[int, int] = field(default_factory=dict)  # site user id -> network account id

    def user(self, raw: int | None) -> str | None:
        if raw is None:
            return None
        return f"a{self.accounts[raw]}" if raw in self.accounts else f"{self.prefix}u{raw}"


# ------------------------------------------------------------------------------ one site


def convert_stackexchange(src: Path, out: Path) -> dict:
    """One site dump: Posts.xml (required), Comments.xml, Votes.xml (optional)."""
    src = Path(src)
    log = Log()
    site = Site(src, "", "", lambda row: tag_community(log, row), cut_after_posts_end=False)
    add_site(log, site)
    return write_log(log, out) | {"files": files_present(site)}


def tag_community(log: Log, row: Row) -> str:
    tags = se_tags(row.get("Tags", required=False))
    topic = tags[0] if tags else UNTAGGED
    cid = f"t_{topic}"
    if "," in cid or " " in cid or len(cid.encode()) > MAX_ID_BYTES:
        raise row.fail("Tags", "tag not usable as an id", topic)
    log.communities.setdefault(cid, topic)
    return cid


def se_tags(raw: str | None) -> list[str]:
    """Tags are '<a><b>' in dumps up to 2023 and '|a|b|' since 2024."""
    if not raw:
        return []
    if raw.startswith("<"):
        return re.findall(r"<([^<>]+)>", raw)
    return [t for t in raw.split("|") if t]


# ------------------------------------------------------------------------- several sites


def convert_stackexchange_sites(src: Path, out: Path) -> dict:
    """Every subdirectory of src is one site (its name is the site's name); per site:
    Posts.xml (required), Comments.xml, Votes.xml, Users.xml (optional)."""
    src = Path(src)
    names = sorted(p.name for p in src.iterdir() if p.is_dir()) if src.is_dir() else []
    if not names:
        raise DataError(f"{src}: no site subdirectories (expected e.g. {src}/cardano/Posts.xml)")
    log = Log()
    per_site = {}
    for name in names:
        if not SITE_NAME.fullmatch(name):
            raise DataError(f"{src / name}: site name {name!r}: use lowercase letters, digits, '.', '-' (<= 41 chars)")
        per_site[name] = add_named_site(log, src / name, name)
    result = write_log(log, out)
    sites_of: dict[str, set] = {}
    for user, pid, *_ in log.events:
        sites_of.setdefault(user, set()).add(log.posts[pid][0])
    everyone = {e[0] for e in log.events} | {a for _, a, _ in log.posts.values() if a}
    result["users_engaging_in_2plus_communities"] = sum(1 for s in sites_of.values() if len(s) > 1)
    result["linked_users"] = sum(1 for u in everyone if ACCOUNT_ID.fullmatch(u))
    result["sites"] = per_site
    return result


def add_named_site(log: Log, src: Path, name: str) -> dict:
    cid = f"c-{name}"
    log.communities[cid] = name
    site = Site(src, f"{name}/", f"{name}-", lambda row: cid, cut_after_posts_end=True)
    site.accounts = read_accounts(site)
    before_events, before_dropped = len(log.events), Counter(log.dropped)
    questions = add_site(log, site)
    events = log.events[before_events:]
    ts = [e[2] for e in events]
    return {
        "posts": questions,
        "events_by_kind": dict(sorted(Counter(e[3] for e in events).items())),
        "files": files_present(site),
        "first_event": min(ts) if ts else None,
        "last_event": max(ts) if ts else None,
        "span_days": round((max(ts) - min(ts)) / DAY, 1) if ts else 0.0,
        "dropped": {k: v - before_dropped[k] for k, v in sorted(log.dropped.items()) if v - before_dropped[k]},
    }


def read_accounts(site: Site) -> dict[int, int]:
    found = find(site.src, "Users.xml", site.label)
    accounts: dict[int, int] = {}
    for row in xml_rows(*found) if found else []:
        acc = row.int("AccountId", required=False, lo=-1)
        if acc is not None and acc > 0:  # -1 is the Community bot
            accounts[row.int("Id")] = acc
    return accounts


def files_present(site: Site) -> list[str]:
    return [n for n in FILES if find(site.src, n)]


# ------------------------------------------------------------------------------ shared


def add_site(log: Log, site: Site) -> int:
    """Add one site's questions and events to the log; returns its number of questions."""
    parent: dict[int, str] = {}  # answer id -> question id
    answers: list[tuple[str, str | None, int]] = []
    last = 0
    questions = 0
    for row in xml_rows(*require(site.src, "Posts.xml", site.label)):
        pid, ptype = row.int("Id", lo=0), row.int("PostTypeId")
        created = se_time(row, "CreationDate")
        last = max(last, created)
        if ptype == 1:
            qid = f"{site.prefix}p{pid}"
            if qid in log.posts:
                raise row.fail("Id", "duplicate question id", str(pid))
            author = site.user(row.int("OwnerUserId", required=False)) or ""
            log.posts[qid] = (site.community(row), author, created)
            questions += 1
        elif ptype == 2:
            parent[pid] = f"{site.prefix}p{row.int('ParentId', lo=0)}"
            answers.append((parent[pid], site.user(row.int("OwnerUserId", required=False)), created))
    until = last + DAY if site.cut_after_posts_end else None  # saves are day-rounded: allow the last day
    for qid, user, ts in answers:
        add_event(log, qid, user, ts, "comment", until)
    for fname, kind, user_col in (("Comments.xml", "comment", "UserId"), ("Votes.xml", "save", "UserId")):
        found = find(site.src, fname, site.label)
        for row in xml_rows(*found) if found else []:
            if kind == "save" and row.int("VoteTypeId") != 5:
                continue
            target = row.int("PostId", lo=0)
            qid = parent.get(target, f"{site.prefix}p{target}")
            add_event(log, qid, site.user(row.int(user_col, required=False)), se_time(row, "CreationDate"), kind, until)
    return questions


def add_event(log: Log, qid: str, user: str | None, ts: int, kind: str, until: int | None) -> None:
    post = log.posts.get(qid)
    if post is None:
        log.dropped[f"{kind}_not_on_a_question"] += 1
    elif user is None:
        log.dropped[f"{kind}_without_user"] += 1
    elif user == post[1]:
        log.dropped[f"{kind}_by_question_author"] += 1
    elif until is not None and ts > until:
        log.dropped[f"{kind}_after_posts_dump_end"] += 1
    else:
        log.events.append((user, qid, max(ts, post[2]) if kind == "save" else ts, kind, 1))


def se_time(row: Row, column: str) -> int:
    """Dump dates are UTC without a zone, e.g. 2018-03-12T17:00:45.567; seconds suffice."""
    v = row.get(column)
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S"):
        try:
            return calendar.timegm(time.strptime(v, fmt))
        except ValueError:
            pass
    raise row.fail(column, "not a date", v)
