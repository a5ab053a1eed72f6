"""The few headers a thread needs, from one raw message: Message-ID, In-Reply-To,
References, From, Date. Only the header block is parsed, and only those headers are
handed to the standard library's parser (archived mail carries dozens of Received and
DKIM lines; parsing them all is most of the time on a large archive)."""

from __future__ import annotations

import email.parser
import email.utils
import re
from dataclasses import dataclass

MSG_ID = re.compile(r"<([^<>\s]+)>")
WANTED = re.compile(rb"^(?:message-id|in-reply-to|references|from|date)[ \t]*:.*(?:\n[ \t].*)*", re.I | re.M)
_parser = email.parser.BytesHeaderParser()


@dataclass(slots=True)
class Mail:
    msgid: str
    in_reply_to: str  # the last message id in In-Reply-To, or ""
    references: list[str]
    address: str  # the sender's address, lower-cased
    name: str  # the sender's display name as written (may be RFC 2047 encoded)
    ts: int


class Malformed(Exception):
    """A message that cannot take part: skipped and counted under `reason`."""

    def __init__(self, reason: str, msgid: str = ""):
        super().__init__(reason)
        self.reason, self.msgid = reason, msgid


def header_block(data: bytes) -> bytes:
    """The lines of the wanted headers (with their continuation lines) from the header block."""
    ends = [i for i in (data.find(b"\n\n"), data.find(b"\r\n\r\n")) if i >= 0]
    head = data[: min(ends)] if ends else data
    return b"\n".join(m.group(0) for m in WANTED.finditer(head)) + b"\n"


def parse(data: bytes) -> Mail:
    """The message's thread headers; Malformed when it has no Message-ID, From address or
    usable Date."""
    if not data.strip():
        raise Malformed("no_message")
    m = _parser.parsebytes(header_block(data))
    ids = MSG_ID.findall(str(m.get("Message-ID", "") or ""))
    if not ids:
        raise Malformed("no_message_id")
    msgid = ids[0]
    name, address = email.utils.parseaddr(str(m.get("From", "") or ""))
    if not address:
        raise Malformed("no_from_address", msgid)
    raw_date = m.get("Date")
    if raw_date is None or not str(raw_date).strip():
        raise Malformed("no_date", msgid)
    try:
        parsed = email.utils.parsedate_tz(str(raw_date))
        ts = email.utils.mktime_tz(parsed) if parsed else None
    except (ValueError, OverflowError, TypeError):
        ts = None
    if ts is None:
        raise Malformed("unparsable_date", msgid)
    replies = MSG_ID.findall(str(m.get("In-Reply-To", "") or ""))
    refs = MSG_ID.findall(str(m.get("References", "") or ""))
    return Mail(msgid, replies[-1] if replies else "", refs, address.lower(), name, int(ts))
