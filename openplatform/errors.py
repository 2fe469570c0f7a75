"""The error envelope of API.md, in one place, for every refusal and every failure."""

from __future__ import annotations

import asyncio
import logging

from pydantic import ValidationError
from sanic import Request
from sanic.exceptions import SanicException
from sanic.handlers import ErrorHandler
from sanic.response import HTTPResponse, json

from cardcore.errors import PlatformError, ValidationFailed
from openplatform.observability import request_id_of

log = logging.getLogger("ehc.errors")

# Framework exceptions (routing, methods, body size) mapped to API codes.
_SANIC_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    413: "PAYLOAD_TOO_LARGE",
    416: "RANGE_NOT_SATISFIABLE",
    503: "SERVICE_UNAVAILABLE",
}


def envelope(request: Request | None, status: int, code: str, message: str, details=None) -> HTTPResponse:
    body = {"code": code, "message": message, "request_id": request_id_of(request)}
    if details is not None:
        body["details"] = details
    return json(body, status=status)


def validation_details(exc: ValidationError) -> list[dict]:
    # A validator's own words, without the "Value error, " pydantic puts before them.
    return [
        {"field": ".".join(str(part) for part in err["loc"]) or "(body)", "problem": err["msg"].removeprefix("Value error, ")}
        for err in exc.errors(include_url=False, include_input=False)
    ]


class EnvelopeErrorHandler(ErrorHandler):
    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        if isinstance(exception, ValidationError):
            exception = ValidationFailed(details=validation_details(exception))
        if isinstance(exception, PlatformError):
            return envelope(request, exception.status, exception.code, exception.message, exception.details)
        if isinstance(exception, SanicException) and exception.status_code < 500:
            status = exception.status_code
            code = _SANIC_CODES.get(status, "BAD_REQUEST")
            return envelope(request, status, code, str(exception) or code.replace("_", " ").lower())
        if isinstance(exception, asyncio.CancelledError):
            # Sanic cancels a handler whose client hung up; nobody reads this answer, and
            # unfinished database work was rolled back with the cancelled transaction.
            log.info("request cancelled: the client closed the connection", extra={"request_id": request_id_of(request)})
            return envelope(request, 503, "SERVICE_UNAVAILABLE", "the request was cancelled")
        # Anything else is our fault: log it with the request id, reveal nothing.
        log.exception("unhandled error", extra={"request_id": request_id_of(request)})
        return envelope(request, 500, "INTERNAL_ERROR", "internal error; quote the request id when reporting it")
