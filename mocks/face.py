"""Mock face verification provider (人脸核身), with the page the resident "looks into".

Provider API (what the platform calls):
- ``POST /_mock/face/orders {name, id_number_hash?, return_url}`` → ``{order_id, verify_url}``
- ``GET  /_mock/face/orders/{order_id}`` → ``{order_id, status: "pending"|"pass"|"fail"}``;
  404 ``{code: "ORDER_NOT_FOUND"}`` for an unknown or expired order.

The resident's side:
- ``GET  verify_url`` (``/_mock/face/verify/{order_id}``): a small page with two buttons,
  "pass" and "fail", no external assets;
- ``POST /_mock/face/orders/{order_id}/complete {result: "pass"|"fail"}`` (mock control,
  API.md). JSON in → ``{order_id, status}``; the page's form post → 303 to
  ``return_url?order_id=…``. An order completes once; again answers 409 ``ORDER_DONE``.

Orders live an hour.
"""

from __future__ import annotations

import html as htmllib
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sanic import Blueprint, Request
from sanic.response import html, json, redirect

from mocks._common import body_of, cache, dumps, is_form, loads, now_iso, settings_of

bp = Blueprint("mock_face", url_prefix="/_mock/face")

ORDER_TTL_S = 3600
RESULTS = ("pass", "fail")
_KEY_ORDER = "mock:face:order:{}"
_KEY_RESULT = "mock:face:result:{}"


def _refuse(status: int, code: str, message: str):
    return json({"code": code, "message": message}, status=status)


def _absolute_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _with_order_id(url: str, order_id: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + [("order_id", order_id)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


async def _order(request: Request, order_id: str) -> dict | None:
    redis = cache(request)
    order = loads(await redis.get(_KEY_ORDER.format(order_id)))
    if order is not None:
        result = await redis.get(_KEY_RESULT.format(order_id))
        order["status"] = result.decode() if result else "pending"
    return order


@bp.post("/orders")
async def create_order(request: Request):
    body = body_of(request)
    name = str(body.get("name") or "").strip()
    return_url = str(body.get("return_url") or "")
    if not name:
        return _refuse(400, "INVALID_PARAMETER", "name is required")
    if not _absolute_http(return_url):
        return _refuse(400, "INVALID_PARAMETER", "return_url must be an absolute http(s) URL")
    order_id = uuid.uuid4().hex
    order = {
        "order_id": order_id,
        "name": name,
        "id_number_hash": str(body.get("id_number_hash") or ""),
        "return_url": return_url,
        "created_at": now_iso(),
    }
    await cache(request).set(_KEY_ORDER.format(order_id), dumps(order), ex=ORDER_TTL_S)
    verify_url = f"{settings_of(request).base_url.rstrip('/')}/_mock/face/verify/{order_id}"
    return json({"order_id": order_id, "verify_url": verify_url})


@bp.get("/orders/<order_id:str>")
async def order_status(request: Request, order_id: str):
    order = await _order(request, order_id)
    if order is None:
        return _refuse(404, "ORDER_NOT_FOUND", "no such order, or it has expired")
    return json({"order_id": order_id, "status": order["status"]})


@bp.post("/orders/<order_id:str>/complete")
async def complete(request: Request, order_id: str):
    """The resident finished: the provider's decision is ``result``."""
    body = body_of(request)
    from_page = is_form(request)
    result = body.get("result")
    if result not in RESULTS:
        return _refuse(400, "INVALID_PARAMETER", "result is pass or fail")
    order = await _order(request, order_id)
    if order is None:
        return _refuse(404, "ORDER_NOT_FOUND", "no such order, or it has expired")
    redis = cache(request)
    if not await redis.set(_KEY_RESULT.format(order_id), result.encode(), ex=ORDER_TTL_S, nx=True):
        return _refuse(409, "ORDER_DONE", "this order is already completed")
    if from_page:
        return redirect(_with_order_id(order["return_url"], order_id), status=303)
    return json({"order_id": order_id, "status": result})


@bp.get("/verify/<order_id:str>")
async def verify_page(request: Request, order_id: str):
    order = await _order(request, order_id)
    if order is None:
        return html(_page("核验单不存在或已过期", ""), status=404)
    if order["status"] != "pending":
        return html(_page("人脸核验已完成", f"<p>结果：{order['status']}</p>"))
    name = order["name"]
    masked = htmllib.escape(name[0] + "*" * (len(name) - 1))
    action = f"/_mock/face/orders/{htmllib.escape(order_id)}/complete"
    buttons = "".join(
        f'<form method="post" action="{action}"><input type="hidden" name="result" value="{value}">'
        f'<button type="submit" id="face-{value}">{label}</button></form>'
        for value, label in (("pass", "核验通过 (pass)"), ("fail", "核验失败 (fail)"))
    )
    return html(_page("人脸核验 (mock)", f"<p>请 {masked} 正对屏幕，完成人脸核验。</p>{buttons}"))


def _page(title: str, content: str) -> str:
    return (
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "button{font-size:1.2em;margin:.5em 0;padding:.5em 1em;width:100%}</style></head>"
        f"<body><h1>{title}</h1>{content}</body></html>"
    )
