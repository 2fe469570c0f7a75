"""Identity registry (the population registry's real-name check, 实名核验).

Protocol (the mock in ``mocks/registry.py`` speaks it):
``POST <registry_url>/verify {"name", "id_type", "id_number"}`` → ``{"result": "match"|"mismatch"|"unknown"}``:
``match`` the document exists under this name, ``mismatch`` it exists under another
name, ``unknown`` the registry has no such document.
"""

from __future__ import annotations

from typing import Literal, Protocol

from cardcore.cards import IdentityMismatch
from cardcore.errors import PlatformError
from cardcore.providers._http import JsonHttpProvider
from cardcore.providers.errors import ProviderError, ProviderUnavailable

RegistryResult = Literal["match", "mismatch", "unknown"]
REGISTRY_RESULTS = ("match", "mismatch", "unknown")


class IdentityUnknown(PlatformError):
    code, status, message = "IDENTITY_UNKNOWN", 422, "the identity registry does not know this identity document"


class RealName(Protocol):
    """What the registry checks; ``cardcore.identity.Identity`` is one."""

    name: str
    id_type: str
    id_number: str


class IdentityRegistry(JsonHttpProvider):
    name = "registry"

    @classmethod
    def from_settings(cls, settings) -> "IdentityRegistry":
        return cls(settings.registry_url, timeout=settings.provider_timeout_s)

    async def verify(self, identity: RealName) -> RegistryResult:
        """What the registry says about this name and identity document."""
        payload = {"name": identity.name, "id_type": identity.id_type, "id_number": identity.id_number}
        status, body = await self._call("POST", "/verify", json=payload)
        if status != 200:
            raise ProviderError(self.name, str(body.get("message", "")), provider_code=str(body.get("code")))
        result = body.get("result")
        if result not in REGISTRY_RESULTS:
            raise ProviderUnavailable(self.name, f"unexpected result {result!r}")
        return result

    async def require_match(self, identity: RealName) -> None:
        """Pass only a verified identity: 422 ``IDENTITY_UNKNOWN``, 409 ``IDENTITY_MISMATCH`` otherwise."""
        result = await self.verify(identity)
        if result == "unknown":
            raise IdentityUnknown()
        if result == "mismatch":
            raise IdentityMismatch("the identity registry holds this identity document under another name")
