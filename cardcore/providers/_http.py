"""The shared part of the providers spoken to over plain HTTP + JSON (SMS, face, registry)."""

from __future__ import annotations

import httpx

from cardcore.providers.errors import ProviderUnavailable


class JsonHttpProvider:
    """Calls ``<base_url><path>`` with a JSON body and returns ``(status, JSON object)``.

    Network failures, timeouts, 5xx and unreadable answers become ``ProviderUnavailable``;
    4xx answers are returned for the caller to interpret. Give ``http`` to share one
    ``httpx.AsyncClient`` between providers (or to route calls through a test transport);
    without it the provider opens its own client on first use and ``aclose()`` closes it.
    """

    name = "provider"

    def __init__(self, base_url: str, *, timeout: float = 10, http: httpx.AsyncClient | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = http
        self._owns_http = http is None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout)
        return self._http

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _call(self, method: str, path: str, *, json: dict | None = None, params: dict | None = None):
        if not self.base_url:
            raise ProviderUnavailable(self.name, "not configured")
        url = self.base_url + path
        try:
            reply = await self._client().request(method, url, json=json, params=params, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(self.name, f"{exc.__class__.__name__} calling {method} {path}") from None
        if reply.status_code >= 500:
            raise ProviderUnavailable(self.name, f"HTTP {reply.status_code} from {method} {path}")
        try:
            body = reply.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ProviderUnavailable(self.name, f"unreadable answer (HTTP {reply.status_code}) from {method} {path}")
        return reply.status_code, body
