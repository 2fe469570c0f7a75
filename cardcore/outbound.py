"""Outbound HTTP from the platform's workers: payment channel gateways, identity providers
(SMS, face, registry), hospital notifications, and the mock channels' callbacks, on aiohttp.
(The payment and login SDKs make their own calls; the partner SDK and the scanner simulator
are clients of the platform, on httpx.)

Why aiohttp here: ``bench/outbound_http.py`` measured httpx at 5–19× aiohttp's CPU per
request, and an httpx client made for one call builds a TLS context first (25–36 ms of CPU,
the event loop stopped meanwhile). Sessions are opened once and kept: one per event loop
for calls that bring none (``shared_session``), one per notification worker.

Redirects are never followed (an answer is what the called service said), cookies never
kept (no call is a browser session), and an answer can be read only up to a limit. Calls
go through the proxy the environment names (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``;
not for hosts in ``NO_PROXY``), as the SDKs' own calls do.
"""

from __future__ import annotations

import asyncio
import json
from functools import lru_cache
from typing import NamedTuple
from weakref import WeakKeyDictionary

import aiohttp
import requests.utils
from multidict import CIMultiDictProxy
from yarl import URL

DEFAULT_TIMEOUT_S = 10
# What a failed call raises: network and protocol errors, bad URLs, timeouts.
FAILURES = (aiohttp.ClientError, asyncio.TimeoutError)

_shared: WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = WeakKeyDictionary()


def new_session(timeout_s: float = DEFAULT_TIMEOUT_S, *, connections: int = 100) -> aiohttp.ClientSession:
    """A session keeping up to ``connections`` connections open (call from the event loop)."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        connector=aiohttp.TCPConnector(limit=connections),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def shared_session() -> aiohttp.ClientSession:
    """This event loop's session, for calls that bring none of their own."""
    loop = asyncio.get_running_loop()
    session = _shared.get(loop)
    if session is None or session.closed:
        session = _shared[loop] = new_session()
    return session


async def close_shared_session() -> None:
    """Close this event loop's shared session (the server calls this when it stops)."""
    session = _shared.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()


class Reply(NamedTuple):
    """An answer, read: status, headers (case-insensitive) and body."""

    status_code: int
    headers: CIMultiDictProxy
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


async def fetch(
    session: aiohttp.ClientSession | None,
    method: str,
    url: str,
    *,
    timeout_s: float | None = None,
    data: bytes | dict | None = None,
    headers: dict[str, str] | None = None,
    read_limit: int | None = None,
) -> Reply:
    """One call through ``session`` (None: the shared one); raises one of ``FAILURES``.

    ``url`` goes out as given (already encoded: what was signed is what is sent). With
    ``read_limit``, at most that many bytes of the body are read, so an endless answer is
    not waited for.
    """
    try:
        target = URL(url, encoded=True)
    except ValueError as exc:
        raise aiohttp.InvalidURL(url) from exc
    session = session or shared_session()
    options = {} if timeout_s is None else {"timeout": aiohttp.ClientTimeout(total=timeout_s)}  # else the session's
    async with session.request(
        method, target, data=data, headers=headers, allow_redirects=False, proxy=proxy_for(target.scheme, target.host), **options
    ) as answer:
        content = await (_read_at_most(answer, read_limit) if read_limit is not None else answer.read())
        return Reply(answer.status, answer.headers, content)


@lru_cache(maxsize=1024)
def proxy_for(scheme: str, host: str | None) -> str | None:
    """The proxy the environment names for calls to ``host`` over ``scheme``, or None.

    requests' reading of the variables, which the payment SDKs' own calls get too
    (``NO_PROXY`` may list domains, addresses and networks such as ``10.0.0.0/8``). Read
    once per host (aiohttp's ``trust_env`` would read the environment, and look for a
    ``.netrc``, on every call): a worker's environment does not change while it runs.
    """
    if not host:
        return None
    authority = f"[{host}]" if ":" in host else host
    proxies = requests.utils.get_environ_proxies(f"{scheme}://{authority}/")  # empty when NO_PROXY names it
    return proxies.get(scheme) or proxies.get("all") or None


async def _read_at_most(answer: aiohttp.ClientResponse, limit: int) -> bytes:
    data = b""
    while len(data) < limit:
        chunk = await answer.content.read(limit - len(data))
        if not chunk:
            break
        data += chunk
    return data
