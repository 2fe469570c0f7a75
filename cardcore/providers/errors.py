"""How an outside service's failure reaches the caller.

Three outcomes, whatever the provider:

- ``ProviderUnavailable`` (503): it could not be reached, timed out, answered 5xx or
  something unreadable, or is not configured. Trying again later may work.
- ``ProviderError`` (502): it answered, but refused the platform's own request (wrong
  app id or secret, a request signature it rejects, an answer whose signature does not
  verify). A configuration or security problem of the platform, not the resident's.
- ``LoginFailed`` (401): the resident's login code is invalid, expired or already used.

The provider's own error code stays in ``provider_code`` for the log; the response
envelope shows only which provider failed.
"""

from __future__ import annotations

import logging

from cardcore.errors import PlatformError

log = logging.getLogger("ehc.providers")

PROVIDER_LABELS = {
    "wechat": "WeChat",
    "alipay": "Alipay",
    "sms": "the SMS gateway",
    "face": "the face verification service",
    "registry": "the identity registry",
}


class _ProviderFailure(PlatformError):
    template = "{label} failed"
    log_level = logging.WARNING

    def __init__(self, provider: str, reason: str = "", *, provider_code: str | None = None):
        label = PROVIDER_LABELS.get(provider, provider)
        super().__init__(self.template.format(label=label), details={"provider": provider})
        self.provider = provider
        self.reason = reason
        self.provider_code = provider_code
        log.log(
            self.log_level,
            "outside service call failed",
            extra={"provider": provider, "code": self.code, "provider_code": provider_code, "reason": reason},
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.provider}, {self.code}, {self.provider_code!r}, {self.reason!r})"


class ProviderUnavailable(_ProviderFailure):
    code, status = "PROVIDER_UNAVAILABLE", 503
    template = "{label} is unavailable at the moment; try again later"


class ProviderError(_ProviderFailure):
    code, status = "PROVIDER_ERROR", 502
    template = "{label} refused the platform's request"


class LoginFailed(_ProviderFailure):
    code, status = "LOGIN_FAILED", 401
    template = "the {label} login code is invalid, expired or already used"
    log_level = logging.INFO
