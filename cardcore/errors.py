"""The one error hierarchy of the platform.

Every refusal a caller may see is a ``PlatformError`` with an API.md code and the HTTP
status it maps to; the web layer turns it into the error envelope in one place. The
status lives here (not in the web layer) so that services in ``cardcore`` and
``cashier`` can state the outcome without importing the web framework.
"""

from __future__ import annotations


class PlatformError(Exception):
    code = "INTERNAL_ERROR"
    status = 500
    message = "internal error"

    def __init__(self, message: str | None = None, *, code: str | None = None, status: int | None = None, details=None):
        self.message = message or self.message
        if code:
            self.code = code
        if status:
            self.status = status
        self.details = details
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.message!r})"


class BadRequest(PlatformError):
    code, status, message = "BAD_REQUEST", 400, "the request cannot be read"


class ValidationFailed(PlatformError):
    code, status, message = "VALIDATION_ERROR", 422, "the request has invalid fields"


class NotFound(PlatformError):
    code, status, message = "NOT_FOUND", 404, "not found"


class Conflict(PlatformError):
    code, status, message = "CONFLICT", 409, "conflict"


class RateLimited(PlatformError):
    code, status, message = "RATE_LIMITED", 429, "too many requests, try again later"


# --- signed access (API.md "Conventions") -----------------------------------


class AuthError(PlatformError):
    status = 401


class StaleRequest(AuthError):
    code, message = "STALE_REQUEST", "timestamp is outside the allowed window"


class ReplayedRequest(AuthError):
    code, message = "REPLAYED_REQUEST", "nonce was already used"


class BadSignature(AuthError):
    code, message = "BAD_SIGNATURE", "signature does not verify"


class ClientDisabled(PlatformError):
    code, status, message = "CLIENT_DISABLED", 403, "client is not approved or is disabled"


class Forbidden(PlatformError):
    code, status, message = "FORBIDDEN", 403, "this function is not enabled for the client"


class TerminalNotAllowed(PlatformError):
    code, status, message = "TERMINAL_NOT_ALLOWED", 403, "terminal is not authorised"


# --- codes and cards (API.md "Institution and terminal API") -----------------


class CodeMalformed(PlatformError):
    code, status, message = "CODE_MALFORMED", 422, "code text is malformed"


class CardNotFound(PlatformError):
    code, status, message = "CARD_NOT_FOUND", 404, "card not found"


class CodeExpired(PlatformError):
    code, status, message = "CODE_EXPIRED", 410, "code has expired"


class CodeUsed(PlatformError):
    code, status, message = "CODE_USED", 409, "code was already used"


class CodeInvalid(PlatformError):
    code, status, message = "CODE_INVALID", 422, "code does not verify"


class CodeLocked(PlatformError):
    code, status, message = "CODE_LOCKED", 423, "code is locked after repeated failures"


class CardInactive(PlatformError):
    code, status, message = "CARD_INACTIVE", 403, "card is frozen or cancelled"


class SceneRequiresDynamic(PlatformError):
    code, status, message = "SCENE_REQUIRES_DYNAMIC", 403, "this scene needs a dynamic code or a second check"
