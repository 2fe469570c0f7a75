"""Helpers the channel adapters share: money in yuan text, channel times, error shapes."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlsplit

import requests

from cardcore import outbound
from cashier.channels.base import ChannelRefused, ChannelUnreachable

BEIJING = timezone(timedelta(hours=8))  # every Chinese channel speaks Beijing time

_YUAN = re.compile(r"(-?)([0-9]+)(?:\.([0-9]{1,2}))?")


def yuan_to_fen(text: str) -> int:
    """``"12.30"`` -> 1230, exactly (never through float). At most two decimals."""
    match = _YUAN.fullmatch(str(text).strip())
    if match is None:
        raise ValueError(f"not an amount in yuan: {text!r}")
    sign, whole, cents = match.groups()
    fen = int(whole) * 100 + int((cents or "0").ljust(2, "0"))
    return -fen if sign else fen


def fen_to_yuan(fen: int) -> str:
    """1230 -> ``"12.30"``."""
    if not isinstance(fen, int) or isinstance(fen, bool):
        raise TypeError("fen is an int")
    return f"{'-' if fen < 0 else ''}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def yuan_to_fen_rounded(text: str) -> int:
    """An amount with more decimals (a fee such as ``"0.00600"``), rounded half up to the fen."""
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(f"not an amount in yuan: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"not an amount in yuan: {text!r}")
    return int((value * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def beijing(moment: datetime) -> datetime:
    """The same instant in Beijing time (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(BEIJING)


def parse_beijing(text: str, pattern: str) -> datetime | None:
    """A channel's local time text as an aware datetime; ``None`` for empty or unreadable text."""
    try:
        return datetime.strptime(text, pattern).replace(tzinfo=BEIJING) if text else None
    except ValueError:
        return None


def refused(channel: str, code: str, message: str) -> ChannelRefused:
    return ChannelRefused(
        f"{channel}: {message}" if message else None, details={"channel": channel, "code": code}
    )


def unreachable(channel: str, reason: str) -> ChannelUnreachable:
    return ChannelUnreachable(details={"channel": channel, "reason": reason})


def create_once(path: Path, make: Callable[[], bytes], mode: int = 0o600) -> bytes:
    """The file's bytes; made with ``make()`` if it does not exist. Another process's file wins."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(make())
            os.chmod(tmp, mode)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    return path.read_bytes()


def pin_environment(session: requests.Session, url: str) -> None:
    """Proxy (``outbound.proxy_for``) and CA-bundle settings from the environment, read now
    for the gateway at ``url`` instead of on every call.

    With ``trust_env`` on, requests reads the proxy variables and looks for a ``.netrc`` on
    each request: a few per cent of a worker's CPU when many payments start at once. A
    server's environment does not change while it runs; a gateway's address only with its
    account, whose client is built anew then.
    """
    parts = urlsplit(url)
    proxy = outbound.proxy_for(parts.scheme, parts.hostname)
    if proxy:
        session.proxies[parts.scheme] = proxy
    # The CA bundle as requests settles it for a call (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE).
    session.verify = session.merge_environment_settings(url, None, None, None, None)["verify"]
    session.trust_env = False


def field(answer, name: str, channel: str) -> str:
    """A text field an answer must carry; its absence makes the answer unreadable."""
    value = answer.get(name) if isinstance(answer, dict) else None
    if not value or not isinstance(value, str):
        raise unreachable(channel, f"answer without {name}")
    return value


async def http_post(
    channel: str, url: str, timeout: float, *, data: bytes | dict, headers: dict | None = None
) -> outbound.Reply:
    """POST through the worker's shared outbound session; network failures and 5xx are unreachable."""
    try:
        reply = await outbound.fetch(None, "POST", url, timeout_s=timeout, data=data, headers=headers)
    except outbound.FAILURES as exc:
        raise unreachable(channel, exc.__class__.__name__) from None
    if reply.status_code >= 500:
        raise unreachable(channel, f"HTTP {reply.status_code}")
    return reply
