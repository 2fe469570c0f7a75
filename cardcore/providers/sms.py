"""SMS gateway: sends a text to a mainland mobile number.

Protocol (the mock in ``mocks/sms.py`` speaks it; a real gateway is adapted here):
``POST <sms_url>/send {"phone", "text", "sign_name"}`` → ``{"request_id", "code": "OK"}``,
any other ``code`` (with ``message``) is a refusal.
"""

from __future__ import annotations

from cardcore.providers._http import JsonHttpProvider
from cardcore.providers.errors import ProviderError


class SmsGateway(JsonHttpProvider):
    name = "sms"

    def __init__(self, url: str, *, sign_name: str = "", timeout: float = 10):
        super().__init__(url, timeout=timeout)
        self.sign_name = sign_name

    @classmethod
    def from_settings(cls, settings) -> "SmsGateway":
        return cls(settings.sms_url, sign_name=settings.sms_sign_name, timeout=settings.provider_timeout_s)

    async def send(self, phone: str, text: str) -> str:
        """Send ``text`` to ``phone``; returns the gateway's request id."""
        payload = {"phone": phone, "text": text}
        if self.sign_name:
            payload["sign_name"] = self.sign_name
        status, body = await self._call("POST", "/send", json=payload)
        if status != 200 or body.get("code") != "OK" or not body.get("request_id"):
            raise ProviderError(self.name, str(body.get("message", "")), provider_code=str(body.get("code")))
        return str(body["request_id"])
