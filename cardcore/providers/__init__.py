"""Clients for the outside services of the identity side: WeChat and Alipay login, SMS,
face verification and the identity registry.

No web framework here. Each client is built from ``Settings`` (``from_settings``), and in
dev and test those settings point at the mocks under ``/_mock/``. Failures are
``PlatformError``s (see ``cardcore.providers.errors``): 503 ``PROVIDER_UNAVAILABLE``,
502 ``PROVIDER_ERROR``, 401 ``LOGIN_FAILED``, plus each service's own refusals
(``IDENTITY_UNKNOWN``, ``IDENTITY_MISMATCH``, ``FACE_ORDER_NOT_FOUND``).

``Providers.from_settings(settings)`` builds all of them at once; the HTTP ones call
through the worker's shared outbound session (``cardcore.outbound``), which the server
closes when it stops.
"""

from __future__ import annotations

from dataclasses import dataclass

from cardcore.providers.alipay import AlipayLogin
from cardcore.providers.errors import LoginFailed, ProviderError, ProviderUnavailable
from cardcore.providers.face import FaceOrder, FaceOrderNotFound, FaceProvider
from cardcore.providers.registry import IdentityRegistry, IdentityUnknown
from cardcore.providers.sms import SmsGateway
from cardcore.providers.wechat import WeChatLogin

__all__ = [
    "AlipayLogin",
    "FaceOrder",
    "FaceOrderNotFound",
    "FaceProvider",
    "IdentityRegistry",
    "IdentityUnknown",
    "LoginFailed",
    "ProviderError",
    "ProviderUnavailable",
    "Providers",
    "SmsGateway",
    "WeChatLogin",
]


@dataclass
class Providers:
    wechat: WeChatLogin
    alipay: AlipayLogin
    sms: SmsGateway
    face: FaceProvider
    registry: IdentityRegistry

    @classmethod
    def from_settings(cls, settings) -> "Providers":
        """Every client, as ``settings`` configure them."""
        return cls(
            wechat=WeChatLogin.from_settings(settings),
            alipay=AlipayLogin.from_settings(settings),
            sms=SmsGateway.from_settings(settings),
            face=FaceProvider.from_settings(settings),
            registry=IdentityRegistry.from_settings(settings),
        )
