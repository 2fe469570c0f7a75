"""Payment channel plug-ins, looked up by channel code or by pay method."""

from __future__ import annotations

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


def build(config: MerchantConfig) -> Channel:
    return channel_class(config.channel)(config)


def _load_builtin() -> None:
    # Importing the modules registers their classes; done lazily so the SDKs load only when used.
    if not _CHANNELS:
        from cashier.channels import alipay, insurance, unionpay, wechat  # noqa: F401
