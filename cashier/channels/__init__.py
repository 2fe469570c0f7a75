"""Payment channel plug-ins, looked up by channel code or by pay method."""

from __future__ import annotations

import importlib
import re

from cashier.channels.base import Channel, MerchantConfig

_CHANNELS: dict[str, type[Channel]] = {}


def register(cls: type[Channel]) -> type[Channel]:
    _CHANNELS[cls.code] = cls
    return cls


def channel_class(code: str) -> type[Channel]:
    _load_builtin()
    try:
        return _CHANNELS[code]
    except KeyError:
        raise LookupError(f"no payment channel {code!r}") from None


def channel_of_method(method: str) -> str:
    """The channel code serving a pay method (wechat_jsapi -> wechat, …)."""
    _load_builtin()
    for code, cls in _CHANNELS.items():
        if method in cls.methods:
            return code
    raise LookupError(f"no payment channel serves {method!r}")


def all_methods() -> list[str]:
    _load_builtin()
    return [m for cls in _CHANNELS.values() for m in cls.methods]


# The payment codes (付款码) each channel issues, told apart by their digits alone:
PAYMENT_CODE_FORMATS: dict[str, re.Pattern] = {
    "wechat": re.compile(r"1[0-5][0-9]{16}"),  # 18 digits starting 10–15
    "alipay": re.compile(r"(?:2[5-9]|30)[0-9]{14,22}"),  # 16–24 digits starting 25–30
    "unionpay": re.compile(r"62[0-9]{17}"),  # 19 digits starting 62
    "insurance": re.compile(r"91[0-9]{18}"),  # 20 digits starting 91 (医保移动支付, this platform's choice)
}


def channel_of_payment_code(code: str) -> str:
    """The channel that issued a payment code (the TOKEN of ``VUID:0:VALID:TOKEN``), by its format."""
    for channel, pattern in PAYMENT_CODE_FORMATS.items():
        if pattern.fullmatch(code):
            return channel
    raise LookupError("not a payment code of any channel")


def build(config: MerchantConfig) -> Channel:
    return channel_class(config.channel)(config)


BUILTIN = ("wechat", "alipay", "unionpay", "insurance")
_loaded = False


def _load_builtin() -> None:
    # Importing the modules registers their classes; done lazily so the SDKs load only when used.
    global _loaded
    if not _loaded:
        for name in BUILTIN:
            importlib.import_module(f"cashier.channels.{name}")
        _loaded = True
