"""Mailing-list archives -> the training schema: one community per list, one post per
thread, one comment event per reply.

Source layout: SRC/<list>/, one directory per list (its name is the community's), holding
either mbox files (`*.mbox`, or a file named `mbox`) or a public-inbox archive (a git
repository, bare or not, or public-inbox v2 epochs `0.git`, `1.git`, ...): see
mail_archive.py.

Mapping:
  community  = the list, l-<list> (topic = the list's name);
  post       = a thread: its root message, t-<sha1(root Message-ID)[:14]>; author = the
               root's sender, created_at = its Date;
  event      = every other message of the thread: kind comment on it, by its sender, at
               its Date, weight 1;
  users      = m-<sha1(lower-cased From address)[:12]>: no address or name is written.
  parent     = In-Reply-To (its last id) when that message is in the converted range,
               else the last References entry that is; the thread root is reached by
               following parents (a cycle, only possible with broken headers, is cut
               where it closes).
  cross-post = a Message-ID read in several lists is one message; its thread goes to
               the smallest of the lists holding the root (fewest messages read), ties
               by name: the most specific audience. Two different messages with one
               Message-ID (a series re-sent with the same ids, a re-delivery) keep the
               first read: lists in name order, each oldest first.
  dropped    = counted per reason: malformed messages (no Message-ID, no From address,
               no Date, an unparsable Date; an empty message, which is how a public-inbox
               commit without `m` reads, e.g. a removal); messages dated more than a day
               after they reached the archive (commit time, mbox `From ` line date);
               messages outside [--since, --until); replies by bots (address or name
               matching BOT), by the thread's own author, or dated before the thread's
               root. A bot's thread stays a post, without author.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from training.convert.common import DAY, Log, day, write_log
from training.convert.mail_archive import ListSource, detect
from training.convert.mail_headers import Mail, Malformed, parse
from training.csvio import DataError

LIST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
BOT = re.compile(
    r"(bot\b|bot[+@._-]|robot|noreply|no-reply|no_reply|jenkins|ci[-_]?notify|kernelci|patchwork"
    r"|buildbot|syzkaller|syzbot|mailer-daemon|lkp@intel\.com)",
    re.I,
)
EXAMPLES = 20  # malformed messages named in the summary


def is_bot(address: str, name: str) -> bool:
    return bool(BOT.search(address) or BOT.search(name or ""))


def user_id(address: str) -> str:
    return "m-" + hashlib.sha1(address.encode()).hexdigest()[:12]


def post_id(msgid: str) -> str:
    return "t-" + hashlib.sha1(msgid.encode()).hexdigest()[:14]


@dataclass
class Archive:
    """The messages kept from every list, indexed by Message-ID."""

    mails: list[Mail] = field(default_factory=list)
    lists_of: list[set[str]] = field(default_factory=list)  # per kept mail: the lists that carried it
    index: dict[str, int] = field(default_factory=dict)  # Message-ID -> position in mails
    gone: set[int] = field(default_factory=set)  # hashes of Message-IDs dropped (counted once)
    size: Counter = field(default_factory=Counter)  # list -> messages read
    dropped: Counter = field(default_factory=Counter)
    malformed: list[str] = field(default_factory=list)  # the first EXAMPLES, "where: reason"


def convert_mailing_lists(src: Path, out: Path, since: int | None = None, until: int | None = None) -> dict:
    src = Path(src)
    dirs = sorted(p for p in src.iterdir() if p.is_dir()) if src.is_dir() else []
    if not dirs:
        raise DataError(f"{src}: no list subdirectories (expected e.g. {src}/linux-pm/<list>.mbox or a git archive)")
    for d in dirs:
        if not LIST_NAME.fullmatch(d.name):
            raise DataError(f"{d}: list name {d.name!r}: use letters, digits, '.', '_', '+', '-' (<= 100 chars)")
    sources = [detect(d) for d in dirs]
    archive = Archive()
    for source in sources:
        read_list(archive, source, since, until)
    log = Log()
    log.dropped.update(archive.dropped)
    cross = build_threads(log, archive)
    result = write_log(log, out)
    result["since"] = day(since)
    result["until"] = day(until)
    result["cross_posted_thread_roots"] = cross
    result["malformed_examples"] = archive.malformed
    result["lists"] = per_list(log, archive, sources)
    return result


def read_list(archive: Archive, source: ListSource, since: int | None, until: int | None) -> None:
    name = source.name
    for raw in source.messages():
        archive.size[name] += 1
        try:
            mail = parse(raw.data)
        except Malformed as bad:
            if bad.msgid:
                if bad.msgid in archive.index or hash(bad.msgid) in archive.gone:
                    continue  # a cross-post: counted where first read
                archive.gone.add(hash(bad.msgid))
            archive.dropped[f"malformed_{bad.reason}"] += 1
            if len(archive.malformed) < EXAMPLES:
                archive.malformed.append(f"{raw.where}: {bad.msgid or '(no Message-ID)'}: {bad.reason}")
            continue
        at = archive.index.get(mail.msgid)
        if at is not None:
            archive.lists_of[at].add(name)
            continue
        key = hash(mail.msgid)
        if key in archive.gone:
            continue
        if raw.arrival is not None and mail.ts > raw.arrival + DAY:
            archive.dropped["dated_in_future"] += 1
            archive.gone.add(key)
        elif (since is not None and mail.ts < since) or (until is not None and mail.ts >= until):
            archive.dropped["outside_date_range"] += 1
            archive.gone.add(key)
        else:
            archive.index[mail.msgid] = len(archive.mails)
            archive.mails.append(mail)
            archive.lists_of.append({name})


def parents(archive: Archive) -> list[int | None]:
    index, out = archive.index, []
    for i, mail in enumerate(archive.mails):
        p = index.get(mail.in_reply_to) if mail.in_reply_to else None
        if p is None or p == i:
            p = next((index[r] for r in reversed(mail.references) if r in index and index[r] != i), None)
        out.append(p)
    return out


def roots(parent: list[int | None]) -> list[int]:
    root: list[int | None] = [None] * len(parent)
    for start in range(len(parent)):
        chain, on_chain, m = [], set(), start
        while root[m] is None:
            if m in on_chain:  # a cycle: cut it here
                root[m] = m
                break
            on_chain.add(m)
            chain.append(m)
            p = parent[m]
            if p is None:
                root[m] = m
                break
            m = p
        for c in chain:
            root[c] = root[m]
    return root


def build_threads(log: Log, archive: Archive) -> int:
    """Posts and events into the log; returns the number of cross-posted thread roots."""
    mails, root = archive.mails, roots(parents(archive))
    cross = 0
    for i in sorted(set(root)):
        mail = mails[i]
        lists = sorted(archive.lists_of[i], key=lambda name: (archive.size[name], name))
        cross += len(lists) > 1
        cid = f"l-{lists[0]}"
        log.communities.setdefault(cid, lists[0])
        author = "" if is_bot(mail.address, mail.name) else user_id(mail.address)
        log.posts[post_id(mail.msgid)] = (cid, author, mail.ts)
    for i, mail in enumerate(mails):
        r = root[i]
        if r == i:
            continue
        top = mails[r]
        if is_bot(mail.address, mail.name):
            log.dropped["comment_by_bot"] += 1
        elif mail.address == top.address:
            log.dropped["comment_by_thread_author"] += 1
        elif mail.ts < top.ts:
            log.dropped["comment_before_thread"] += 1
        else:
            log.events.append((user_id(mail.address), post_id(top.msgid), mail.ts, "comment", 1))
    return cross


def per_list(log: Log, archive: Archive, sources: list[ListSource]) -> dict:
    posts = Counter(c for c, _, _ in log.posts.values())
    events = Counter(log.posts[p][0] for _, p, *_ in log.events)
    return {
        s.name: {
            **s.provenance(),
            "messages": archive.size[s.name],
            "posts": posts[f"l-{s.name}"],
            "events": events[f"l-{s.name}"],
        }
        for s in sources
    }


def parse_day(value: str) -> int:
    """An ISO date (2024-01-19, 00:00 UTC) or date-time (UTC unless it names a zone) -> unix seconds."""
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO date: {value!r} (e.g. 2024-01-19)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp())
