"""The shared part of the providers spoken to over plain HTTP + JSON (SMS, face, registry)."""

from __future__ import annotations

import json as jsonlib
from urllib.parse import urlencode

from cardcore import outbound
from cardcore.providers.errors import ProviderUnavailable


class JsonHttpProvider:
    """Calls ``<base_url><path>`` with a JSON body and returns ``(status, JSON object)``.

    Network failures, timeouts, 5xx and unreadable answers become ``ProviderUnavailable``;
    4xx answers are returned for the caller to interpret. Calls go through the worker's
    shared outbound session (``cardcore.outbound``).
    """

    name = "provider"

    def __init__(self, base_url: str, *, timeout: float = 10) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    async def _call(self, method: str, path: str, *, json: dict | None = None, params: dict | None = None):
        if not self.base_url:
            raise ProviderUnavailable(self.name, "not configured")
        url = self.base_url + path + (f"?{urlencode(params)}" if params else "")
        body, headers = None, None
        if json is not None:
            body, headers = jsonlib.dumps(json).encode(), {"Content-Type": "application/json"}
        try:
            reply = await outbound.fetch(None, method, url, timeout_s=self.timeout, data=body, headers=headers)
        except outbound.FAILURES as exc:
            raise ProviderUnavailable(self.name, f"{exc.__class__.__name__} calling {method} {path}") from None
        if reply.status_code >= 500:
            raise ProviderUnavailable(self.name, f"HTTP {reply.status_code} from {method} {path}")
        try:
            answer = reply.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ProviderUnavailable(self.name, f"unreadable answer (HTTP {reply.status_code}) from {method} {path}")
        return reply.status_code, answer
