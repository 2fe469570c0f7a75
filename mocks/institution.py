"""Mock institution (the hospital's HIS): a notify_url that records what it receives.

- ``POST /_mock/institution/notify[?out_trade_no=…]``: records ``{headers, body (the JSON
  object, or null), raw_body (the exact text), target (path and query as they arrived),
  received_at, status, answered_success}``
  under the ``out_trade_no`` of the query, or else of the JSON body, the form or the XML
  (channel notifications can be recorded too), and answers 200 ``SUCCESS``.
- ``POST /_mock/institution/behaviour {fail_next: N, status: 500, body: "FAIL", location, delay_ms}``:
  the next N notifications are answered ``status`` / ``body`` instead (with a ``Location``
  header when ``location`` is given, e.g. for a 302); ``delay_ms`` delays every answer.
  ``DELETE`` the same path to reset. Refused attempts are recorded too.
- ``GET /_mock/institution/notifications?out_trade_no=`` -> ``{items: [...]}`` in arrival order.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
from urllib.parse import parse_qsl

import xmltodict
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from cardcore.cache import LuaScript
from mocks._common import body_of, cache, dumps, loads, now_iso

bp = Blueprint("mock_institution", url_prefix="/_mock/institution")

_KEY_ITEMS = "mock:institution:notifications:{}"
_KEY_BEHAVIOUR = "mock:institution:behaviour"
_KEY_FAIL_NEXT = "mock:institution:fail_next"
_TTL_S = 7 * 86400
# One notification received and recorded (KEYS: behaviour, fail_next, the out_trade_no's
# record list; ARGV: the record as JSON without its closing brace, ttl): the answer's status
# ends the record, which is appended to the list; returns the behaviour set, 1 when this
# notification is one of the next ones to fail, and the status to answer. The record is
# closed as text, not re-encoded, so that it keeps what was received exactly (numbers past
# 14 digits included).
_RECEIVED = LuaScript(
    """
    local fail = redis.call('DECR', KEYS[2]) >= 0
    if not fail then redis.call('SET', KEYS[2], 0) end
    local behaviour = redis.call('GET', KEYS[1]) or ''
    local status = 200
    if fail then
      local ok, settings = pcall(cjson.decode, behaviour)
      status = (ok and type(settings) == 'table' and tonumber(settings.status)) or 500
    end
    local answered = fail and 'false' or 'true'
    redis.call('RPUSH', KEYS[3], ARGV[1] .. ',"status":' .. string.format('%d', status) .. ',"answered_success":' .. answered .. '}')
    redis.call('EXPIRE', KEYS[3], ARGV[2])
    return {behaviour, fail and 1 or 0, status}
    """
)


def _out_trade_no(request: Request, text: str, body) -> str:
    if request.args.get("out_trade_no"):
        return request.args.get("out_trade_no")
    if isinstance(body, dict):
        return str(body.get("out_trade_no") or "")
    fields = (
        dict(parse_qsl(text, keep_blank_values=True))
        if "=" in text and not text.lstrip().startswith("<")
        else {}
    )
    if not fields and text.lstrip().startswith("<xml"):
        try:
            fields = xmltodict.parse(text)["xml"] or {}
        except Exception:  # noqa: BLE001
            fields = {}
    return str(fields.get("out_trade_no") or fields.get("orderId") or "")


@bp.post("/notify")
async def notify(request: Request):
    text = request.body.decode("utf-8", errors="replace")
    try:
        body = jsonlib.loads(text)
    except ValueError:
        body = None
    record = {
        "headers": {k.lower(): v for k, v in request.headers.items()},
        "body": body,
        "raw_body": text,
        "target": request.raw_url.decode("latin-1"),
        "received_at": now_iso(),
    }
    items_key = _KEY_ITEMS.format(_out_trade_no(request, text, body))
    raw, fail, status = await _RECEIVED(
        cache(request), [_KEY_BEHAVIOUR, _KEY_FAIL_NEXT, items_key], [dumps(record)[:-1], _TTL_S]
    )
    behaviour = loads(raw) or {}
    if behaviour.get("delay_ms"):
        await asyncio.sleep(behaviour["delay_ms"] / 1000)
    answer = str(behaviour.get("body", "FAIL")) if fail else "SUCCESS"
    headers = {"Location": behaviour["location"]} if fail and behaviour.get("location") else None
    return HTTPResponse(answer.encode(), status=status, headers=headers, content_type="text/plain; charset=utf-8")


@bp.route("/behaviour", methods=["POST", "DELETE"])
async def behaviour(request: Request):
    redis = cache(request)
    if request.method == "DELETE":
        await redis.delete(_KEY_BEHAVIOUR, _KEY_FAIL_NEXT)
        return json({"behaviour": {}})
    body = body_of(request)
    try:
        settings = {
            "status": int(body.get("status", 500)),
            "body": str(body.get("body", "FAIL")),
            "delay_ms": int(body.get("delay_ms", 0)),
        }
        if body.get("location"):
            settings["location"] = str(body["location"])
        fail_next = int(body.get("fail_next", 0))
    except (TypeError, ValueError):
        return json(
            {"code": "BAD_BEHAVIOUR", "message": "status, fail_next and delay_ms are integers"}, status=400
        )
    await redis.set(_KEY_BEHAVIOUR, dumps(settings))
    await redis.set(_KEY_FAIL_NEXT, fail_next)
    return json({"behaviour": {**settings, "fail_next": fail_next}})


@bp.get("/notifications")
async def notifications(request: Request):
    out_trade_no = request.args.get("out_trade_no", "")
    raw = await cache(request).lrange(_KEY_ITEMS.format(out_trade_no), 0, -1)
    return json({"items": [loads(item) for item in raw]})
