"""Mock SMS gateway, and the resident's phone inbox.

- ``POST /_mock/sms/send {phone, text, sign_name?}`` → ``{request_id, code: "OK"}`` (the
  provider API the platform calls); refusals answer 400 ``{code, message}`` with
  ``INVALID_PHONE`` or ``INVALID_TEXT``.
- ``GET /_mock/sms/messages?phone=`` → ``{items: [{phone, text, code, sent_at}]}``, newest
  first (mock control: what the phone received). ``text`` is what the phone shows,
  ``【sign_name】`` first; ``code`` is the 4–8 digit code in it, or null.

The inbox keeps the last 50 messages per phone for a day.
"""

from __future__ import annotations

import re
import uuid

from sanic import Blueprint, Request
from sanic.response import json

from mocks._common import body_of, cache, dumps, loads, now_iso

bp = Blueprint("mock_sms", url_prefix="/_mock/sms")

INBOX_SIZE = 50
INBOX_TTL_S = 86400
MAX_TEXT = 500
_KEY_INBOX = "mock:sms:inbox:{}"
_PHONE = re.compile(r"^1[3-9]\d{9}$")
_CODE = re.compile(r"(?<!\d)\d{4,8}(?!\d)")


def extract_code(text: str) -> str | None:
    """The verification code in a message: the first run of 4 to 8 digits standing alone."""
    match = _CODE.search(text)
    return match.group(0) if match else None


def normalise_phone(phone: str) -> str:
    return phone.replace(" ", "").removeprefix("+86")


def _refuse(code: str, message: str):
    return json({"code": code, "message": message}, status=400)


@bp.post("/send")
async def send(request: Request):
    body = body_of(request)
    phone = normalise_phone(str(body.get("phone") or ""))
    text = str(body.get("text") or "").strip()
    sign_name = str(body.get("sign_name") or "").strip()
    if not _PHONE.match(phone):
        return _refuse("INVALID_PHONE", "phone must be an 11-digit mainland mobile number")
    if not text or len(text) > MAX_TEXT:
        return _refuse("INVALID_TEXT", f"text must be 1 to {MAX_TEXT} characters")
    request_id = uuid.uuid4().hex.upper()
    message = {
        "phone": phone,
        "text": f"【{sign_name}】{text}" if sign_name else text,
        "code": extract_code(text),
        "sent_at": now_iso(),
    }
    key = _KEY_INBOX.format(phone)
    pipe = cache(request).pipeline(transaction=True)
    pipe.lpush(key, dumps(message))
    pipe.ltrim(key, 0, INBOX_SIZE - 1)
    pipe.expire(key, INBOX_TTL_S)
    await pipe.execute()
    return json({"request_id": request_id, "code": "OK", "message": "OK"})


@bp.get("/messages")
async def messages(request: Request):
    phone = normalise_phone(request.args.get("phone", ""))
    if not _PHONE.match(phone):
        return _refuse("INVALID_PHONE", "give ?phone= an 11-digit mainland mobile number")
    raw = await cache(request).lrange(_KEY_INBOX.format(phone), 0, INBOX_SIZE - 1)
    return json({"items": [loads(item) for item in raw]})
