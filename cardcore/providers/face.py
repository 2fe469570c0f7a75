"""Face verification provider (人脸核身): the resident compares their face with the ID photo.

Protocol (the mock in ``mocks/face.py`` speaks it):
``POST <face_url>/orders {"name", "id_number_hash", "return_url"}`` → ``{"order_id", "verify_url"}``;
the resident opens ``verify_url`` and is sent back to ``return_url?order_id=…``; the platform
then asks ``GET <face_url>/orders/{order_id}`` → ``{"order_id", "status": "pending"|"pass"|"fail"}``.
The result is only ever taken from that server-to-server answer, never from the redirect.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from cardcore.errors import PlatformError
from cardcore.providers._http import JsonHttpProvider
from cardcore.providers.errors import ProviderError, ProviderUnavailable

FaceStatus = Literal["pending", "pass", "fail"]
FACE_STATUSES = ("pending", "pass", "fail")


class FaceOrderNotFound(PlatformError):
    code, status, message = "FACE_ORDER_NOT_FOUND", 404, "face verification order not found or expired"


@dataclass(frozen=True)
class FaceOrder:
    order_id: str
    verify_url: str


class FaceProvider(JsonHttpProvider):
    name = "face"

    @classmethod
    def from_settings(cls, settings) -> "FaceProvider":
        return cls(settings.face_url, timeout=settings.provider_timeout_s)

    async def create_order(self, *, name: str, id_number: str, return_url: str) -> FaceOrder:
        """Start a verification of this person; send the resident to ``verify_url``."""
        payload = {
            "name": name,
            "id_number_hash": hashlib.sha256(id_number.encode()).hexdigest(),
            "return_url": return_url,
        }
        status, body = await self._call("POST", "/orders", json=payload)
        if status not in (200, 201) or not body.get("order_id") or not body.get("verify_url"):
            raise ProviderError(self.name, str(body.get("message", "")), provider_code=str(body.get("code")))
        return FaceOrder(order_id=str(body["order_id"]), verify_url=str(body["verify_url"]))

    async def result(self, order_id: str) -> FaceStatus:
        """``"pending"`` until the resident has finished, then ``"pass"`` or ``"fail"``."""
        status, body = await self._call("GET", f"/orders/{quote(order_id, safe='')}")
        if status == 404:
            raise FaceOrderNotFound()
        if status != 200:
            raise ProviderError(self.name, str(body.get("message", "")), provider_code=str(body.get("code")))
        result = body.get("status")
        if result not in FACE_STATUSES:
            raise ProviderUnavailable(self.name, f"unexpected status {result!r}")
        return result
