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
import urllib3

from cardcore import outbound
from cardcore.providers._threads import MAX_CONCURRENT_SDK_CALLS
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


class GatewaySession:
    """What wechatpy asks of its ``requests.Session`` (``request(method, url, data=…,
    timeout=…, cert=…)``, ``post``), on urllib3's connection pools directly.

    Per call, requests merges session settings, prepares cookies and hooks and looks for
    redirects, none of which a gateway call needs: ``bench/outbound_http.py`` measured
    515–528 µs of CPU a call through requests and 330–380 µs through this session (the
    loopback receiver's share included). The answer comes back as a
    ``requests.Response`` and failures as requests' exceptions, so the SDK and its callers
    read them as before. Redirects are not followed (an answer is what the gateway said),
    nothing is retried, cookies are not kept.

    The proxy (``outbound.proxy_for``, with the credentials its URL carries) and the CA
    bundle (requests' reading of ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``, else
    certifi's) are read once, for the gateway at ``url``: a server's environment does not
    change while it runs, and a gateway's address only with its account, whose client is
    built anew then, as is the certificate it presents. It keeps a connection for each SDK
    call that may run at once.
    """

    def __init__(
        self, url: str, *, cert: tuple[str, str] | None = None, connections: int = MAX_CONCURRENT_SDK_CALLS
    ) -> None:
        parts = urlsplit(url)
        self.proxy = outbound.proxy_for(parts.scheme, parts.hostname)
        verify = requests.Session().merge_environment_settings(url, {}, None, None, None)["verify"]
        bundle = requests.utils.DEFAULT_CA_BUNDLE_PATH if verify is True else verify
        options = dict(cert_reqs="CERT_REQUIRED", maxsize=connections)
        options.update({"ca_cert_dir": bundle} if os.path.isdir(bundle) else {"ca_certs": bundle})
        self._cert = tuple(cert) if cert else None
        if self._cert:
            options.update(cert_file=self._cert[0], key_file=self._cert[1])
        if self.proxy:
            # A proxy's credentials in its URL, sent as requests sends them (urllib3 leaves them out).
            username, password = requests.utils.get_auth_from_url(self.proxy)
            auth = urllib3.make_headers(proxy_basic_auth=f"{username}:{password}") if username else None
            self._pool = urllib3.ProxyManager(self.proxy, proxy_headers=auth, **options)
        else:
            self._pool = urllib3.PoolManager(**options)

    def request(
        self, method: str, url: str, data=None, headers=None, timeout=None, cert=None
    ) -> requests.Response:
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif data is not None and not isinstance(data, bytes):
            raise TypeError("a gateway call sends a text or bytes body")
        if cert and tuple(cert) != self._cert:
            raise ValueError("this session presents the client certificate it was made with, or none")
        try:
            answer = self._pool.request(
                method.upper(),
                url,
                body=data,
                headers=headers,
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                retries=False,
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise _as_requests_error(exc) from exc
        response = requests.Response()
        response.status_code, response.reason, response.url = answer.status, answer.reason, url
        response.headers = requests.structures.CaseInsensitiveDict(answer.headers)
        response._content = answer.data
        return response

    def post(self, url: str, data=None, **options) -> requests.Response:
        return self.request("POST", url, data=data, **options)


def _as_requests_error(exc: urllib3.exceptions.HTTPError) -> requests.RequestException:
    """The exception requests raises for what urllib3 raised (its adapter's mapping)."""
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return requests.ConnectionError(exc)
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return requests.ConnectTimeout(exc)
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return requests.ReadTimeout(exc)
    if isinstance(exc, urllib3.exceptions.ProxyError):
        return requests.exceptions.ProxyError(exc)
    if isinstance(exc, urllib3.exceptions.SSLError):
        return requests.exceptions.SSLError(exc)
    return requests.ConnectionError(exc)


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
