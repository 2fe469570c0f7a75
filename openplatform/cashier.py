"""Unified cashier on the web: the institution API (``/cashier/v1``, signed), the resident's
cashier pages (``/cashier/{order_no}``), and the channels' callbacks (``/cashier/notify/…``).
Handlers only parse, call one cashier service and shape the answer.
"""

from __future__ import annotations

import secrets
from datetime import date
from typing import Annotated

from pydantic import BaseModel, Field
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, html, json, redirect, text

from cardcore import errors
from cardcore.cache import keyed_command
from cardcore.models import ClientKind
from cardcore.text import Readable
from cashier import accounts, bills, callbacks, counter, notifier, orders, refunds
from cashier.channels.base import ORDER_NO_PATTERN, MerchantConfig
from openplatform import sessions
from openplatform.auth import authorise_terminal, signed
from openplatform.h5 import render
from openplatform.presenters import page
from openplatform.validation import PageQuery, StrictModel, json_body, parse_query

api = Blueprint("cashier_api", url_prefix="/cashier/v1")
pages = Blueprint("cashier_pages", url_prefix="/cashier")

ORDER_NO = f"<order_no:{ORDER_NO_PATTERN}>"
NOTIFICATION_ID = "<notification_id:[0-9]{1,18}>"  # ids fit a signed 64-bit column
CALLERS = (ClientKind.institution, ClientKind.terminal)
PAYER_COOKIE = "ehc_payer"
PAYER_TTL_S = 1800


def _rt(request: Request):
    return request.app.ctx.rt


def _order_json(request: Request, order, status: int = 200) -> HTTPResponse:
    return json(orders.order_view(_rt(request), order), status=status)


# --- institution API -------------------------------------------------------------------


class OrderLookup(BaseModel):
    out_trade_no: str = Field(min_length=1, max_length=64)


class BillQuery(BaseModel):
    # The day's bounds in UTC must be dates too: not the first or the last date there is.
    date: Annotated[date, Field(gt=date.min, lt=date.max)]


class CloseBody(StrictModel):
    reason: Annotated[str, Field(max_length=255), Readable] = ""


@api.post("/orders")
@signed(*CALLERS, function="cashier.orders")
@json_body(orders.OrderRequest)
async def create_order(request: Request, body: orders.OrderRequest):
    """Create a payment order; the same out_trade_no with the same body returns it again (200)."""
    order, created = await orders.create_order(_rt(request), request.ctx.caller.institution_id, body)
    return _order_json(request, order, 201 if created else 200)


@api.get("/orders")
@signed(*CALLERS, function="cashier.orders")
async def find_order(request: Request):
    """The order of one of the institution's own out_trade_no."""
    query = parse_query(request, OrderLookup)
    return _order_json(request, await orders.find_order(request.ctx.caller.institution_id, query.out_trade_no))


@api.get(f"/orders/{ORDER_NO}")
@signed(*CALLERS, function="cashier.orders")
async def get_order(request: Request, order_no: str):
    return _order_json(request, await orders.get_order(order_no, request.ctx.caller.institution_id))


@api.post(f"/orders/{ORDER_NO}/close")
@signed(*CALLERS, function="cashier.orders")
@json_body(CloseBody, required=False)
async def close_order(request: Request, order_no: str, body: CloseBody):
    """Close an unpaid order, also at its channel; a paid one is refused (refund it)."""
    institution_id = request.ctx.caller.institution_id
    order = await orders.close_order(_rt(request), order_no, institution_id, body.reason or "closed by institution")
    return _order_json(request, order)


@api.post(f"/orders/{ORDER_NO}/refunds")
@signed(*CALLERS, function="cashier.refunds")
@json_body(refunds.RefundRequest)
async def create_refund(request: Request, order_no: str, body: refunds.RefundRequest):
    """Refund part or all of a paid order; the same out_refund_no again returns the same refund."""
    refund, created = await refunds.create_refund(_rt(request), request.ctx.caller.institution_id, order_no, body)
    return json(refunds.refund_view(refund), status=201 if created else 200)


@api.get(f"/refunds/<refund_no:R{ORDER_NO_PATTERN}>")
@signed(*CALLERS, function="cashier.refunds")
async def get_refund(request: Request, refund_no: str):
    return json(refunds.refund_view(await refunds.get_refund(refund_no, request.ctx.caller.institution_id)))


@api.post("/micropay")
@signed(*CALLERS, function="cashier.micropay")
@json_body(counter.MicropayRequest)
async def micropay(request: Request, body: counter.MicropayRequest):
    """Counter scan pay: a combined code (identifies and pays) or a channel payment code."""
    caller = request.ctx.caller
    if body.terminal_id and body.terminal_id != caller.terminal_id:
        caller = await authorise_terminal(request, body.terminal_id, "cashier.micropay")
    order = await counter.counter_pay(_rt(request), caller.actor, body, request.remote_addr or request.ip)
    return _order_json(request, order)


@api.get("/bills")
@signed(ClientKind.institution, function="cashier.orders")
async def bill(request: Request):
    """The institution's payments and refunds of one day (China time) as CSV."""
    query = parse_query(request, BillQuery)
    body = await bills.institution_bill(request.ctx.caller.institution_id, query.date)
    return text(
        body,
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="bill-{query.date.isoformat()}.csv"'},
    )


# --- channel callbacks -------------------------------------------------------------------


@pages.post("/notify/<channel:wechat|alipay|unionpay|insurance>")
async def channel_callback(request: Request, channel: str):
    """A channel's asynchronous notification, answered in the channel's own format."""
    reply = await callbacks.handle_callback(_rt(request), channel, dict(request.headers), request.body)
    return HTTPResponse(reply.body, status=reply.status, content_type=reply.content_type)


# --- the resident's cashier pages -----------------------------------------------------------


class PayBody(StrictModel):
    channel: str = Field(description="wechat_jsapi, wechat_h5, wechat_mini, alipay_wap, alipay_app, unionpay, insurance")
    code: str | None = Field(None, max_length=128, description="wechat_mini: the payer's wx.login() code")


async def _payer_openid(request: Request) -> str:
    token = request.cookies.get(PAYER_COOKIE, "")
    if not sessions.token_shaped(token):
        return ""
    stored = await keyed_command(_rt(request).redis, "GET", f"cashier:payer:{token}")
    return stored.decode() if stored else ""


@pages.get(f"/{ORDER_NO}")
async def cashier_page(request: Request, order_no: str):
    """Bill details and the channels that work where the page is open."""
    rt = _rt(request)
    order = await orders.get_order(order_no)
    if order.status not in orders.UNPAID:
        return redirect(f"/cashier/{order_no}/result")
    choices = orders.methods_for_browser(request.headers.get("User-Agent", ""), await accounts.open_channels(order.institution_id))
    # Back from WeChat's authorisation the page pays at once, with a method it offers.
    autopay = request.args.get("autopay", "")
    return html(
        await render(
            "cashier/pay.html",
            order=orders.order_view(rt, order),
            choices=choices,
            expired=orders.is_expired(order),
            autopay=autopay if autopay in {choice.method for choice in choices} else "",
        )
    )


@pages.post(f"/{ORDER_NO}/pay")
@json_body(PayBody)
async def pay(request: Request, order_no: str, body: PayBody):
    """Start paying through a channel: ``{action, ...}`` tells the page what to do next."""
    rt = _rt(request)
    payer_id = ""
    if body.channel == "wechat_jsapi":
        payer_id = await _payer_openid(request)
        if not payer_id:
            # WeChat Pay in WeChat needs the payer's openid: one silent authorisation first.
            state = secrets.token_urlsafe(16)
            await rt.redis.set(f"cashier:oauth:{state}", order_no.encode(), ex=600)
            url = request.app.ctx.providers.wechat.authorize_url(f"{rt.settings.base_url}/cashier/{order_no}/wechat-oauth", state)
            return json({"action": "redirect", "url": url})
    elif body.channel == "wechat_mini":
        if not body.code:
            raise errors.ValidationFailed("wechat_mini needs the payer's wx.login() code")
        payer_id, _session_key = await request.app.ctx.providers.wechat.openid_from_mini_code(body.code)
    action = await orders.start_payment(
        rt, order_no, body.channel, client_ip=request.remote_addr or request.ip, payer_id=payer_id
    )
    return json({"action": action.action, **action.data})


@pages.get(f"/{ORDER_NO}/wechat-oauth")
async def wechat_oauth(request: Request, order_no: str):
    """Back from WeChat's silent authorisation: remember the payer's openid, then pay."""
    rt = _rt(request)
    state, code = request.args.get("state", ""), request.args.get("code", "")
    stored = await rt.redis.getdel(f"cashier:oauth:{state}") if sessions.token_shaped(state) else None
    if not code or stored != order_no.encode():
        raise errors.BadRequest("the authorisation is missing or has expired; open the cashier again")
    openid = await request.app.ctx.providers.wechat.openid_from_oauth_code(code)
    token = secrets.token_urlsafe(24)
    await rt.redis.set(f"cashier:payer:{token}", openid.encode(), ex=PAYER_TTL_S)
    response = redirect(f"/cashier/{order_no}?autopay=wechat_jsapi")
    response.add_cookie(PAYER_COOKIE, token, path="/cashier", httponly=True, samesite="Lax", max_age=PAYER_TTL_S,
                        secure=rt.settings.base_url.startswith("https://"))
    return response


@pages.get(f"/{ORDER_NO}/result")
async def result_page(request: Request, order_no: str):
    """The outcome; while the channel has not answered yet the page keeps asking."""
    rt = _rt(request)
    order = await orders.get_order(order_no)
    return html(await render("cashier/result.html", order=orders.order_view(rt, order)))


@pages.get(f"/{ORDER_NO}/status")
async def order_status(request: Request, order_no: str):
    """What the result page polls: the order's status, nothing personal."""
    order = await orders.get_order(order_no)
    return json({"order_no": order.order_no, "status": order.status.value, "paid_fen": order.paid_fen})


# --- operators: notifications and merchant accounts ---------------------------------------

admin_api = Blueprint("cashier_admin", url_prefix="/admin/v1")
admin_only = signed(ClientKind.admin, function="access.manage")


class NotificationQuery(PageQuery):
    status: str | None = Field(None, pattern="^(pending|delivered|failed)$")
    institution_id: str | None = Field(None, max_length=40)
    order_no: str | None = Field(None, max_length=32)


class AccountBody(StrictModel):
    app_id: str = Field("", max_length=64)
    merchant_id: str = Field(min_length=1, max_length=64)
    sub_merchant_id: str = Field("", max_length=64)
    gateway: str = Field("", max_length=255, pattern=r"^(https?://\S+)?$", description="empty: the channel's own")
    secrets: dict[str, str] = Field(description="api_key, private keys (PEM)…; stored sealed, never shown again")
    enabled: bool = True


@admin_api.get("/notifications")
@admin_only
async def list_notifications(request: Request):
    """Hospital notifications, newest first; ``?status=failed`` lists those that gave up."""
    query = parse_query(request, NotificationQuery)
    rows, cursor = await notifier.list_notifications(
        limit=query.limit, cursor=query.cursor, status=query.status, institution_id=query.institution_id,
        order_no=query.order_no,
    )
    return json(page([notifier.notification_view(n) for n in rows], cursor))


@admin_api.get(f"/notifications/{NOTIFICATION_ID}")
@admin_only
async def get_notification(request: Request, notification_id: str):
    """One notification with every delivery attempt."""
    notification = await notifier.get_notification(int(notification_id))
    return json(notifier.notification_view(notification, await notifier.attempts_of(notification.id)))


@admin_api.post(f"/notifications/{NOTIFICATION_ID}/resend")
@admin_only
async def resend_notification(request: Request, notification_id: str):
    """Deliver again now (a failed one restarts its retry schedule)."""
    return json(notifier.notification_view(await notifier.resend(int(notification_id))))


@admin_api.get("/institutions/<institution_id:str>/channels")
@admin_only
async def list_channel_accounts(request: Request, institution_id: str):
    """An institution's merchant accounts (``platform``: the platform's own), without keys."""
    return json({"items": [accounts.account_view(a) for a in await accounts.list_accounts(institution_id)]})


@admin_api.put("/institutions/<institution_id:str>/channels/<channel:wechat|alipay|unionpay|insurance>")
@admin_only
@json_body(AccountBody)
async def save_channel_account(request: Request, institution_id: str, channel: str, body: AccountBody):
    """Open (or change) an institution's account at a channel; keys are sealed at once."""
    config = MerchantConfig(
        channel=channel, app_id=body.app_id, merchant_id=body.merchant_id, secrets=body.secrets,
        gateway=body.gateway, sub_merchant_id=body.sub_merchant_id,
    )
    account = await accounts.save_account(_rt(request), institution_id, config, enabled=body.enabled)
    return json(accounts.account_view(account))
