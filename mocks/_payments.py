"""What the payment-channel mocks share: orders in the cache, faults, notifications, the
payment page, payment agreements and codes, and the daily bill lines.

Every channel mock (``wechat_pay``, ``alipay_trade``, ``unionpay``, ``insurance``) makes one
``ChannelMock`` and gets the same mock-control endpoints under ``/_mock/<channel>/pay/``:

- ``POST orders/{out_trade_no}/confirm`` · ``POST orders/{out_trade_no}/cancel``: the payer
  confirms (or gives up) in the channel's app; confirming posts the channel's notification.
  A browser form post (from the payment page) is sent on to the order's return URL.
- ``GET|POST|DELETE faults``: read, set (merged into the current ones) or clear the faults.

Faults (JSON, all optional):

- ``delay_ms``: every API answer waits this long first;
- ``drop_responses``: the next N API calls are carried out, then the connection is closed
  without an answer (in-process ASGI: an empty 502), so the caller cannot know the outcome;
  ``drop_after``: that many calls are answered first (to hit the second call of a sequence);
- ``duplicate_notifies``: each notification is sent N times at once;
- ``notify_delay_ms``: notifications leave this late;
- ``out_of_order``: an order's first notification is held back until its next one has gone
  (a refund notification, or Alipay's success after a stale ``WAIT_BUYER_PAY``), at most
  ``hold_ms`` (default 2000);
- ``bad_notify_signature``: notifications carry a signature that does not verify;
- ``wrong_notify_amount``: fen added to the amount in notifications (signed correctly);
- ``userpaying``: a payment-code charge waits for the payer's password (WeChat ``USERPAYING``,
  Alipay ``10003``, …) and completes after ``userpaying_ms`` (default 1000);
- ``notify_retries``: how often an unacknowledged notification is sent again (default 3).

Notifications go out as background tasks through ``mocks.outbound_http``. One the receiver
does not acknowledge in the channel's way is sent again after 0.5 s, 1 s and 2 s (the real
channels wait 15 s … hours); each attempt is independent of the others.
"""

from __future__ import annotations

import asyncio
import html
import string
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import aiohttp
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json, redirect

from cardcore import outbound
from cardcore.cache import LuaScript, keyed_command
from cashier.channels.dev import mock_merchant_configs
from mocks import outbound_http
from mocks._common import HEX, append_expiring, body_of, cache, dumps, is_form, loads, settings_of, token

BEIJING = timezone(timedelta(hours=8))

# Takes a record's lock and reads the order of that name (KEYS: lock, order; ARGV: holder,
# lease ms): {1, order or ''} when taken, {0, ''} while another request holds it.
_LOCK_AND_READ = LuaScript(
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, redis.call('GET', KEYS[2]) or ''} end"
    " return {0, ''}"
)
# Writes the order if it changed (ARGV[2] not empty; ARGV[3]: ttl) and the writes made while
# the lock was held (KEYS[3..], each with its command and value in ARGV[4..]: SET, or RPUSH
# to a list), all for ttl, then releases the lock only while it is still the caller's (it
# may have expired and been taken).
_SAVE_AND_UNLOCK = LuaScript(
    """
    if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3]) end
    for i = 3, #KEYS do
      local command, value = ARGV[2 * i - 2], ARGV[2 * i - 1]
      if command == 'SET' then
        redis.call('SET', KEYS[i], value, 'EX', ARGV[3])
      else
        redis.call('RPUSH', KEYS[i], value)
        redis.call('EXPIRE', KEYS[i], ARGV[3])
      end
    end
    if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
    return 0
    """
)
# The start of an API call (KEYS: faults, drop_after, drop): the faults, and 1 when this call's
# answer is to be dropped. Once ``drop_after`` calls have been answered, ``drop`` counts the
# answers still to drop; the counter goes when it is spent.
_API_CALL = LuaScript(
    """
    local faults = redis.call('GET', KEYS[1]) or ''
    if redis.call('EXISTS', KEYS[3]) == 0 or redis.call('DECR', KEYS[2]) >= 0 then return {faults, 0} end
    if redis.call('DECR', KEYS[3]) < 0 then redis.call('DEL', KEYS[3]) return {faults, 0} end
    return {faults, 1}
    """
)
# A notification about to be sent (KEYS: faults, the order's notification count; ARGV: ttl):
# the faults, and how many notifications the order has had, this one included.
_NOTIFYING = LuaScript(
    """
    local count = redis.call('INCR', KEYS[2])
    redis.call('EXPIRE', KEYS[2], ARGV[1])
    return {redis.call('GET', KEYS[1]) or '', count}
    """
)
FEE_PER_MILLE = 6  # the service fee every mock channel but insurance charges, rounded half up
RETRY_DELAYS_S = (0.5, 1.0, 2.0)
PAYMENT_CODE_TTL_S = 120
ORDER_TTL_S = 7 * 86400

FAULT_TYPES = {
    "delay_ms": int,
    "drop_responses": int,
    "drop_after": int,
    "duplicate_notifies": int,
    "notify_delay_ms": int,
    "out_of_order": bool,
    "hold_ms": int,
    "bad_notify_signature": bool,
    "wrong_notify_amount": int,
    "userpaying": bool,
    "userpaying_ms": int,
    "notify_retries": int,
}

# Payment codes (付款码) by channel: prefix and total length (cashier.channels.PAYMENT_CODE_FORMATS).
_CODE_SHAPES = {"wechat": ("13", 18), "alipay": ("28", 18), "unionpay": ("62", 19), "insurance": ("91", 20)}

Acknowledged = Callable[[outbound.Reply], bool]


@dataclass
class _HeldOrder:
    """An order read with its lock; written back when the lock is released if it changed,
    with the other writes made meanwhile (``ChannelMock.write``)."""

    stored: bytes | str | None
    changed: bool = False
    writes: list[tuple[str, str, str]] = field(default_factory=list)  # (command, key, value)


@dataclass(frozen=True)
class Notification:
    url: str
    body: bytes
    content_type: str
    headers: dict = field(default_factory=dict)  # e.g. a signature header


def beijing_now() -> datetime:
    return datetime.now(BEIJING)


def digits(n: int) -> str:
    return token(n, string.digits)


def fee_of(fen: int) -> int:
    return (fen * FEE_PER_MILLE + 500) // 1000


class Refusal(Exception):
    """A channel's refusal: its own code and message."""

    def __init__(self, code: str, message: str):
        super().__init__(code)
        self.code, self.message = code, message


def yuan(fen: int) -> str:
    return f"{'-' if fen < 0 else ''}{abs(fen) // 100}.{abs(fen) % 100:02d}"


class ChannelMock:
    """The state and behaviour every payment-channel mock has; ``name`` is the channel code."""

    def __init__(
        self,
        name: str,
        bp: Blueprint,
        label: str,
        colour: str,
        acknowledged: Acknowledged,
        settings: dict[str, type] | None = None,
    ) -> None:
        self.name = name
        self.fault_types = {**FAULT_TYPES, **(settings or {})}  # a channel's own knobs go with the faults
        self.bp = bp
        self.label = label
        self.colour = colour
        self.acknowledged = acknowledged
        self._confirm: Callable[[Request, dict], Awaitable[dict]] | None = None
        self._cancel: Callable[[Request, dict], Awaitable[dict]] | None = None
        bp.add_route(
            self._confirm_route, "/pay/orders/<out_trade_no>/confirm", methods=["POST"], name="pay_confirm"
        )
        bp.add_route(
            self._cancel_route, "/pay/orders/<out_trade_no>/cancel", methods=["POST"], name="pay_cancel"
        )
        bp.add_route(self._faults_route, "/pay/faults", methods=["GET", "POST", "DELETE"], name="pay_faults")

    async def merchant(self, request: Request):
        """The merchant account this mock accepts (``cashier.channels.dev``)."""
        configs = getattr(request.app.ctx, "mock_merchants", None)
        if configs is None:  # the first call may generate the dev keys: off the event loop
            configs = request.app.ctx.mock_merchants = await asyncio.to_thread(
                mock_merchant_configs, settings_of(request)
            )
        return configs[self.name]

    def key(self, *parts: str) -> str:
        return ":".join(("mock", f"{self.name}pay", *parts))

    # --- orders ----------------------------------------------------------------------

    def _held(self, request: Request) -> dict[tuple[str, str], _HeldOrder]:
        held = getattr(request.ctx, "mock_held_orders", None)
        if held is None:
            held = request.ctx.mock_held_orders = {}
        return held

    async def order(self, request: Request, out_trade_no: str) -> dict | None:
        held = self._held(request).get((self.name, out_trade_no))
        if held is not None:
            return loads(held.stored)
        return loads(await keyed_command(cache(request), "GET", self.key("order", out_trade_no)))

    async def save_order(self, request: Request, order: dict) -> None:
        held = self._held(request).get((self.name, order["out_trade_no"]))
        if held is not None:
            held.stored, held.changed = dumps(order), True
            return
        await keyed_command(cache(request), "SET", self.key("order", order["out_trade_no"]), dumps(order), "EX", ORDER_TTL_S)

    @asynccontextmanager
    async def locked(self, request: Request, name: str):
        """One request at a time changes the named record (confirm racing close, two refunds…).

        The order of that name is read as the lock is taken and written as it is released, so
        ``order`` and ``save_order`` inside cost no round trip of their own."""
        redis, lock_key, holder = cache(request), self.key("lock", name), token(16, HEX)
        order_key, held = self.key("order", name), self._held(request)
        for _ in range(500):
            taken, stored = await _LOCK_AND_READ(redis, [lock_key, order_key], [holder, 5000])
            if taken:
                held[(self.name, name)] = _HeldOrder(stored or None)
                break
            await asyncio.sleep(0.01)
        try:
            yield
        finally:
            order = held.pop((self.name, name), None)
            changed = order.stored if order is not None and order.changed else ""
            writes = order.writes if order is not None else []
            await _SAVE_AND_UNLOCK(
                redis,
                [lock_key, order_key, *(key for _, key, _ in writes)],
                [holder, changed, ORDER_TTL_S, *(part for command, _, value in writes for part in (command, value))],
            )

    async def write(self, request: Request, command: str, key: str, value: str) -> None:
        """``SET`` ``key`` to ``value``, or ``RPUSH`` ``value`` to the list ``key``, kept for the
        orders' lifetime. Made while this request holds one of this mock's locks, the write
        goes out with the lock's release, in the same round trip."""
        holding = [order for (mock, _), order in self._held(request).items() if mock == self.name]
        if holding:
            holding[-1].writes.append((command, key, value))
        elif command == "SET":
            await keyed_command(cache(request), "SET", key, value, "EX", ORDER_TTL_S)
        else:
            await append_expiring(request, key, value, ORDER_TTL_S)

    def complete_later(self, request: Request, out_trade_no: str, complete, after_ms: int) -> None:
        """After ``after_ms``, ``await complete(request, order)`` if the order is still being paid
        (a payment-code charge that waited for the payer's password)."""

        async def run():
            await asyncio.sleep(after_ms / 1000)
            async with self.locked(request, out_trade_no):
                order = await self.order(request, out_trade_no)
                if order is not None and order["status"] == "paying":
                    await complete(request, order)

        request.app.add_task(run())

    def on_confirm(self, fn: Callable[[Request, dict], Awaitable[dict]]):
        """Register the channel's confirm: ``fn(request, order) -> order`` (paid, notification sent)."""
        self._confirm = fn
        return fn

    def on_cancel(self, fn: Callable[[Request, dict], Awaitable[dict]]):
        self._cancel = fn
        return fn

    async def _control(self, request: Request, out_trade_no: str, action):
        async with self.locked(request, out_trade_no):
            order = await self.order(request, out_trade_no)
            if order is None:
                return None, json(
                    {"code": "ORDER_NOT_FOUND", "message": f"no {self.name} order {out_trade_no}"}, status=404
                )
            if order["status"] != "paying":
                return order, json(
                    {
                        "code": "ORDER_NOT_PAYABLE",
                        "message": f"order is {order['status']}",
                        "status": order["status"],
                    },
                    status=409,
                )
            if order.get("expires_at") and datetime.fromisoformat(order["expires_at"]) < beijing_now():
                order["status"] = "closed"
                await self.save_order(request, order)
                return order, json(
                    {"code": "ORDER_EXPIRED", "message": "order expired", "status": "closed"}, status=409
                )
            order = await action(request, order)
            await self.save_order(request, order)
        return order, None

    async def _confirm_route(self, request: Request, out_trade_no: str):
        order, problem = await self._control(request, out_trade_no, self._confirm)
        return self._after_control(request, order, problem)

    async def _cancel_route(self, request: Request, out_trade_no: str):
        async def cancel(req, order):
            order = await self._cancel(req, order) if self._cancel else order
            order["status"] = "cancelled" if order["status"] == "paying" else order["status"]
            return order

        order, problem = await self._control(request, out_trade_no, cancel)
        return self._after_control(request, order, problem)

    def _after_control(self, request: Request, order: dict | None, problem):
        if is_form(request) and order is not None:  # the payment page: back to the merchant's page
            target = order.get("return_url") or ""
            if target.startswith(("http://", "https://")):
                return redirect(target, status=303)
            text = "支付成功" if order["status"] == "paid" else "支付未完成"
            return self.page_response(f"<p class='done'>{text}</p>")
        if problem is not None:
            return problem
        return json(
            {
                "out_trade_no": order["out_trade_no"],
                "status": order["status"],
                "channel_trade_no": order.get("trade_no", ""),
                "amount_fen": order["amount_fen"],
                **({"insurance_fen": order["insurance_fen"]} if "insurance_fen" in order else {}),
            }
        )

    # --- faults -------------------------------------------------------------------------

    async def faults(self, request: Request) -> dict:
        return loads(await keyed_command(cache(request), "GET", self.key("faults"))) or {}

    def _fault_keys(self) -> list[str]:
        return [self.key("faults"), self.key("faults", "drop_after"), self.key("faults", "drop")]

    async def _faults_route(self, request: Request):
        redis = cache(request)
        if request.method == "DELETE":
            await redis.delete(*self._fault_keys())
            return json({"faults": {}})
        if request.method == "POST":
            body = body_of(request)
            unknown = sorted(set(body) - set(self.fault_types))
            if unknown:
                return json(
                    {"code": "UNKNOWN_FAULT", "message": f"unknown faults: {', '.join(unknown)}"}, status=400
                )
            try:
                new = {name: self.fault_types[name](value) for name, value in body.items()}
            except (TypeError, ValueError):
                return json(
                    {"code": "BAD_FAULT", "message": "fault values are numbers or booleans"}, status=400
                )
            faults = {**await self.faults(request), **new}
            for counter in ("drop_responses", "drop_after"):
                faults.pop(counter, None)
            await redis.set(self.key("faults"), dumps(faults))
            if "drop_responses" in new:
                await redis.set(self.key("faults", "drop"), new["drop_responses"])
                await redis.set(self.key("faults", "drop_after"), new.get("drop_after", 0))
        faults = await self.faults(request)
        remaining = int(await redis.get(self.key("faults", "drop")) or 0)
        return json({"faults": {**faults, **({"drop_responses": remaining} if remaining > 0 else {})}})

    async def api(self, request: Request, handle: Awaitable[HTTPResponse]) -> HTTPResponse:
        """Run one API call under the faults: wait ``delay_ms``, act, then maybe drop the answer."""
        await self.slow_down(request)
        return await self.maybe_drop(request, await handle)

    async def slow_down(self, request: Request) -> None:
        """The start of an API call: reads the faults and counts the call against
        ``drop_after`` / ``drop_responses`` (one round trip), then waits ``delay_ms``."""
        raw, drop = await _API_CALL(cache(request), self._fault_keys(), [])
        request.ctx.mock_drops_answer = bool(drop)
        faults = loads(raw) or {}
        if faults.get("delay_ms"):
            await asyncio.sleep(faults["delay_ms"] / 1000)

    async def maybe_drop(self, request: Request, response: HTTPResponse) -> HTTPResponse:
        """The answer, or none at all while ``drop_responses`` lasts (the work is done either way)."""
        if not getattr(request.ctx, "mock_drops_answer", False):
            return response
        close = getattr(request.transport, "close", None)
        if close is not None:
            close()
        return HTTPResponse(b"", status=502)  # in-process (ASGI) there is no connection to close

    # --- notifications ------------------------------------------------------------------

    async def notify(
        self, request: Request, out_trade_no: str, build: Callable[[dict], Notification]
    ) -> None:
        """Send the notification ``build(faults)`` in the background, as the faults say."""
        redis = cache(request)
        raw, count = await _NOTIFYING(redis, [self.key("faults"), self.key("notified", out_trade_no)], [ORDER_TTL_S])
        faults = loads(raw) or {}
        notification = build(faults)
        app, http = request.app, outbound_http(request)
        held_key = self.key("held", out_trade_no)
        if count == 1 and faults.get("out_of_order"):
            held = {
                "url": notification.url,
                "body": notification.body.decode(),
                "content_type": notification.content_type,
                "headers": notification.headers,
            }
            await append_expiring(request, held_key, dumps(held), ORDER_TTL_S)
            app.add_task(
                self._release_held(redis, http, held_key, faults, faults.get("hold_ms", 2000) / 1000)
            )
            return

        async def send_then_release():
            await self._send(http, notification, faults)
            await self._release_held(redis, http, held_key, faults, 0)

        # Only an order's first notification is ever held back: with none before, none waits.
        app.add_task(send_then_release() if count > 1 else self._send(http, notification, faults))

    async def _release_held(
        self, redis, http: aiohttp.ClientSession, held_key: str, faults: dict, after_s: float
    ):
        await asyncio.sleep(after_s)
        while (raw := await redis.lpop(held_key)) is not None:
            held = loads(raw)
            notification = Notification(
                held["url"], held["body"].encode(), held["content_type"], held["headers"]
            )
            await self._send(http, notification, faults)

    async def _send(self, http: aiohttp.ClientSession, notification: Notification, faults: dict) -> None:
        """Deliver (N copies at once); returns when each copy had its first attempt."""
        if faults.get("notify_delay_ms"):
            await asyncio.sleep(faults["notify_delay_ms"] / 1000)
        copies = max(1, faults.get("duplicate_notifies", 1))
        retries = RETRY_DELAYS_S[: max(0, faults.get("notify_retries", len(RETRY_DELAYS_S)))]
        first_attempts = [asyncio.Event() for _ in range(copies)]
        for done in first_attempts:
            asyncio.get_running_loop().create_task(self._deliver(http, notification, retries, done))
        for done in first_attempts:
            await done.wait()

    async def _deliver(
        self, http: aiohttp.ClientSession, notification: Notification, retries, done: asyncio.Event
    ):
        try:
            for delay in (0, *retries):
                await asyncio.sleep(delay)
                try:
                    headers = {**notification.headers, "Content-Type": notification.content_type}
                    reply = await outbound.fetch(http, "POST", notification.url, data=notification.body, headers=headers)
                    if self.acknowledged(reply):
                        return
                except outbound.FAILURES:
                    pass
                finally:
                    done.set()
        except Exception:  # a mock must never take the server down  # noqa: BLE001
            done.set()

    # --- agreements and payment codes ----------------------------------------------------

    async def new_agreement(self, request: Request, merchant: str, payer_id: str, agreement_id: str) -> dict:
        record = {
            "agreement_id": agreement_id,
            "merchant": merchant,
            "payer_id": payer_id,
            "signed_at": beijing_now().isoformat(timespec="seconds"),
        }
        await cache(request).set(self.key("agreement", agreement_id), dumps(record))
        return record

    async def agreement(self, request: Request, agreement_id: str) -> dict | None:
        return loads(await cache(request).get(self.key("agreement", agreement_id)))

    async def issue_code(self, request: Request, agreement: dict) -> str:
        prefix, length = _CODE_SHAPES[self.name]
        code = prefix + digits(length - len(prefix))
        await cache(request).set(self.key("paycode", code), dumps(agreement), ex=PAYMENT_CODE_TTL_S)
        return code

    async def take_code(self, request: Request, code: str) -> dict | None:
        """The agreement a payment code was issued for; each code is good for one charge."""
        return loads(await cache(request).getdel(self.key("paycode", code)))

    # --- bills ------------------------------------------------------------------------

    async def add_bill_line(self, request: Request, merchant: str, line: dict) -> None:
        day = beijing_now().strftime("%Y-%m-%d")
        line = {**line, "at": beijing_now().strftime("%Y-%m-%d %H:%M:%S")}
        await self.write(request, "RPUSH", self.key("bill", merchant, day), dumps(line))

    async def bill_lines(self, request: Request, merchant: str, day: str) -> list[dict]:
        return [loads(raw) for raw in await cache(request).lrange(self.key("bill", merchant, day), 0, -1)]

    # --- the payment page ----------------------------------------------------------------

    def page_response(self, content: str, status: int = 200) -> HTTPResponse:
        page = f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{html.escape(self.label)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:0;background:#f4f4f4;color:#222}}
header{{background:{self.colour};color:#fff;padding:14px 16px;font-size:17px}}
main{{padding:24px 16px;text-align:center}}.amount{{font-size:34px;font-weight:600;margin:12px 0}}
.subject{{color:#666;margin-bottom:28px}}button{{display:block;width:100%;padding:13px;margin:10px 0;
border:0;border-radius:6px;font-size:17px}}.pay{{background:{self.colour};color:#fff}}
.cancel{{background:#fff;color:#333;border:1px solid #ccc}}.done{{font-size:20px;margin-top:40px}}</style>
</head><body><header>{html.escape(self.label)}</header><main>{content}</main></body></html>"""
        return HTTPResponse(page.encode(), status=status, content_type="text/html; charset=utf-8")

    def payment_page(self, order: dict) -> HTTPResponse:
        base = f"{self.bp.url_prefix}/pay/orders/{html.escape(order['out_trade_no'])}"
        return self.page_response(
            f"""<div class="subject">{html.escape(order.get("subject", ""))}</div>
<div class="amount">￥{yuan(order["amount_fen"])}</div>
<form method="post" action="{base}/confirm"><input type="hidden" name="from" value="page">
<button class="pay" type="submit">确认支付</button></form>
<form method="post" action="{base}/cancel"><input type="hidden" name="from" value="page">
<button class="cancel" type="submit">取消</button></form>"""
        )
