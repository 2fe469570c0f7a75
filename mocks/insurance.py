"""Mock medical-insurance mobile pay under ``/_mock/insurance/`` (protocol: ``cashier.channels.insurance``).

``api/v1/…`` calls must come from the institution of ``cashier.channels.dev.mock_merchant_configs``
(app_id, org_code, HMAC-SM3 signature); answers and notifications are signed with the same
key. ``GET pay/{out_trade_no}`` is the page where the insured confirms.

The split is the mock's decision: ``insurance_fen = amount_fen * fund_percent // 100``
(rounded down to the fen; the insured pays the rest, ``self_pay_fen``), ``fund_percent``
60 unless set with ``POST /_mock/insurance/pay/faults {"fund_percent": N}``. A refund
gives back its amount only; the bill has no fee.
"""

from __future__ import annotations

import csv
import io
import json
import secrets

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from cardcore.crypto import constant_time_equal, hmac_sm3
from mocks._common import cache, settings_of
from mocks._payments import ChannelMock, Notification, Refusal, beijing_now, digits

bp = Blueprint("mock_insurance", url_prefix="/_mock/insurance")
mock = ChannelMock(
    "insurance",
    bp,
    "医保移动支付",
    "#1e6fbf",
    lambda reply: reply.status_code == 200 and reply.text.strip() == "SUCCESS",
    settings={"fund_percent": int},
)
SIGNATURE = "X-YB-Signature"
DEFAULT_FUND_PERCENT = 60


def _key(account) -> bytes:
    return bytes.fromhex(account.secrets["hmac_key"])


def _signed_json(document: dict, key: bytes | None, status: int = 200) -> HTTPResponse:
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    headers = {SIGNATURE: hmac_sm3(key, body).hex()} if key else {}
    return HTTPResponse(body, status=status, headers=headers, content_type="application/json; charset=utf-8")


HANDLERS = {}


def call(name: str):
    def register(handler):
        HANDLERS[name] = handler
        return handler

    return register


@bp.post("/api/v1/<name:path>")
async def api(request: Request, name: str):
    async def run():
        account = await mock.merchant(request)
        try:
            envelope = json.loads(request.body)
            data = envelope["data"]
        except (ValueError, KeyError, TypeError):
            return _signed_json({"code": "BAD_REQUEST", "message": "请求报文格式错误"}, None, 400)
        if envelope.get("app_id") != account.app_id or envelope.get("org_code") != account.merchant_id:
            return _signed_json({"code": "APP_NOT_FOUND", "message": "应用或机构编码错误"}, None, 403)
        if not constant_time_equal(
            request.headers.get(SIGNATURE, ""), hmac_sm3(_key(account), request.body).hex()
        ):
            return _signed_json({"code": "SIGNATURE_INVALID", "message": "签名校验失败"}, None, 401)
        handler = HANDLERS.get(name)
        if handler is None:
            return _signed_json({"code": "NOT_FOUND", "message": "接口不存在"}, _key(account), 404)
        try:
            answer = {"code": "0", "message": "成功", "data": await handler(request, data, account)}
        except Refusal as exc:
            answer = {"code": exc.code, "message": exc.message}
        return _signed_json(answer, _key(account))

    return await mock.api(request, run())


def _now() -> str:
    return beijing_now().isoformat(timespec="seconds")


async def _split(request: Request, amount: int) -> tuple[int, int]:
    percent = (await mock.faults(request)).get("fund_percent", DEFAULT_FUND_PERCENT)
    fund = amount * max(0, min(100, percent)) // 100
    return fund, amount - fund


def _order_view(order: dict) -> dict:
    view = {
        "out_trade_no": order["out_trade_no"],
        "status": order["state"],
        "amount_fen": order["amount_fen"],
    }
    if order["state"] == "PAID":
        view.update(
            trade_no=order["trade_no"],
            insurance_fen=order["insurance_fen"],
            self_pay_fen=order["self_pay_fen"],
            paid_at=order["paid_at"],
        )
    return view


def _new_order(data: dict) -> dict:
    amount = data.get("amount_fen")
    if not isinstance(amount, int) or amount <= 0 or not data.get("out_trade_no"):
        raise Refusal("BAD_REQUEST", "amount_fen / out_trade_no 错误")
    return {
        "out_trade_no": str(data["out_trade_no"]),
        "amount_fen": amount,
        "subject": str(data.get("subject", "")),
        "notify_url": str(data.get("notify_url", "")),
        "return_url": str(data.get("return_url", "")),
        "status": "paying",
        "state": "PAYING",
        "expires_at": str(data.get("expires_at", "")),
        "refunds": [],
    }


@call("orders")
async def create(request: Request, data: dict, account) -> dict:
    order = _new_order(data)
    async with mock.locked(request, order["out_trade_no"]):
        existing = await mock.order(request, order["out_trade_no"])
        if existing is not None:
            if existing["state"] == "PAID":
                raise Refusal("ORDER_PAID", "订单已支付")
            if existing["amount_fen"] != order["amount_fen"] or existing["state"] != "PAYING":
                raise Refusal("DUPLICATE_ORDER", "订单号重复")
        else:
            await mock.save_order(request, order)
    base = settings_of(request).base_url.rstrip("/")
    return {
        "out_trade_no": order["out_trade_no"],
        "pay_url": f"{base}/_mock/insurance/pay/{order['out_trade_no']}",
    }


@bp.get("/pay/<out_trade_no>")
async def pay_page(request: Request, out_trade_no: str):
    order = await mock.order(request, out_trade_no)
    if order is None:
        return mock.page_response("<p class='done'>订单不存在</p>", status=404)
    if order["status"] != "paying":
        return mock.page_response("<p class='done'>订单已支付或已关闭</p>")
    return mock.payment_page(order)


async def _pay(request: Request, order: dict) -> dict:
    fund, own = await _split(request, order["amount_fen"])
    order.update(
        status="paid",
        state="PAID",
        trade_no="YB" + beijing_now().strftime("%Y%m%d") + digits(14),
        insurance_fen=fund,
        self_pay_fen=own,
        paid_at=_now(),
    )
    await mock.save_order(request, order)
    account = await mock.merchant(request)
    await mock.add_bill_line(
        request,
        account.merchant_id,
        {
            "kind": "支付",
            "out_trade_no": order["out_trade_no"],
            "trade_no": order["trade_no"],
            "refund_no": "",
            "refund_id": "",
            "amount_fen": order["amount_fen"],
            "insurance_fen": fund,
            "self_pay_fen": own,
        },
    )
    if order["notify_url"]:
        await mock.notify(
            request,
            order["out_trade_no"],
            _notification(account, order["notify_url"], {"event": "PAY_SUCCESS", **_order_view(order)}),
        )
    return order


def _notification(account, url: str, event: dict):
    def build(faults: dict) -> Notification:
        delta = faults.get("wrong_notify_amount", 0)
        document = {
            **event,
            "app_id": account.app_id,
            "org_code": account.merchant_id,
            "timestamp": int(beijing_now().timestamp() * 1000),
            "nonce": secrets.token_hex(16),
        }
        for name in ("amount_fen", "self_pay_fen", "refund_fen"):  # the split still adds up
            if name in document and delta:
                document[name] += delta
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        key = secrets.token_bytes(32) if faults.get("bad_notify_signature") else _key(account)
        return Notification(
            url, body, "application/json; charset=utf-8", {SIGNATURE: hmac_sm3(key, body).hex()}
        )

    return build


@mock.on_confirm
async def confirm(request: Request, order: dict) -> dict:
    return order if order.get("pay_code") else await _pay(request, order)


@call("micropay")
async def micropay(request: Request, data: dict, account) -> dict:
    order = _new_order(data)
    async with mock.locked(request, order["out_trade_no"]):
        if await mock.order(request, order["out_trade_no"]) is not None:
            raise Refusal("DUPLICATE_ORDER", "订单号重复")
        agreement = await mock.take_code(request, str(data.get("pay_code", "")))
        if agreement is None:
            raise Refusal("PAY_CODE_INVALID", "医保付款码无效或已使用")
        order["pay_code"] = data["pay_code"]
        faults = await mock.faults(request)
        if faults.get("userpaying"):
            await mock.save_order(request, order)
            mock.complete_later(request, order["out_trade_no"], _pay, faults.get("userpaying_ms", 1000))
            return _order_view(order)
        order = await _pay(request, order)
    return _order_view(order)


async def _existing(request: Request, data: dict) -> dict:
    order = await mock.order(request, str(data.get("out_trade_no", "")))
    if order is None:
        raise Refusal("ORDER_NOT_FOUND", "订单不存在")
    return order


@call("orders/query")
async def query(request: Request, data: dict, account) -> dict:
    return _order_view(await _existing(request, data))


@call("orders/close")
async def close(request: Request, data: dict, account) -> dict:
    async with mock.locked(request, str(data.get("out_trade_no", ""))):
        order = await _existing(request, data)
        if order["state"] == "PAID":
            raise Refusal("ORDER_PAID", "订单已支付，不能关闭")
        order.update(status="closed", state="CLOSED")
        await mock.save_order(request, order)
    return _order_view(order)


def _refund_view(record: dict) -> dict:
    return {
        "out_refund_no": record["out_refund_no"],
        "refund_id": record["refund_id"],
        "status": "SUCCESS",
        "refund_fen": record["refund_fen"],
        "finished_at": record["finished_at"],
    }


@call("refunds")
async def refund(request: Request, data: dict, account) -> dict:
    amount, refund_no = data.get("refund_fen"), str(data.get("out_refund_no", ""))
    if not isinstance(amount, int) or amount <= 0 or not refund_no:
        raise Refusal("BAD_REQUEST", "refund_fen / out_refund_no 错误")
    async with mock.locked(request, str(data.get("out_trade_no", ""))):
        order = await _existing(request, data)
        if order["state"] != "PAID":
            raise Refusal("ORDER_NOT_PAID", "订单未支付")
        previous = next((r for r in order["refunds"] if r["out_refund_no"] == refund_no), None)
        if previous is not None:
            if previous["refund_fen"] != amount:
                raise Refusal("DUPLICATE_REFUND", "退款单号重复且金额不同")
            return _refund_view(previous)
        if sum(r["refund_fen"] for r in order["refunds"]) + amount > order["amount_fen"]:
            raise Refusal("REFUND_EXCEEDS", "退款金额超过可退金额")
        record = {
            "out_refund_no": refund_no,
            "refund_id": "YBR" + digits(20),
            "refund_fen": amount,
            "finished_at": _now(),
        }
        order["refunds"].append(record)
        await mock.save_order(request, order)
        await cache(request).set(mock.key("refund", refund_no), order["out_trade_no"], ex=7 * 86400)
    await mock.add_bill_line(
        request,
        account.merchant_id,
        {
            "kind": "退款",
            "out_trade_no": order["out_trade_no"],
            "trade_no": order["trade_no"],
            "refund_no": refund_no,
            "refund_id": record["refund_id"],
            "amount_fen": amount,
            "insurance_fen": 0,
            "self_pay_fen": amount,
        },
    )
    url = str(data.get("notify_url") or order["notify_url"])
    if url:
        await mock.notify(
            request,
            order["out_trade_no"],
            _notification(
                account,
                url,
                {"event": "REFUND_SUCCESS", "out_trade_no": order["out_trade_no"], **_refund_view(record)},
            ),
        )
    return _refund_view(record)


@call("refunds/query")
async def refund_query(request: Request, data: dict, account) -> dict:
    raw = await cache(request).get(mock.key("refund", str(data.get("out_refund_no", ""))))
    order = await mock.order(request, raw.decode()) if raw else None
    record = next(
        (r for r in (order or {}).get("refunds", []) if r["out_refund_no"] == data.get("out_refund_no")), None
    )
    if record is None:
        raise Refusal("REFUND_NOT_FOUND", "退款不存在")
    return _refund_view(record)


@call("agreements")
async def agreement(request: Request, data: dict, account) -> dict:
    record = await mock.new_agreement(
        request, account.merchant_id, str(data.get("payer_id", "")), "YBA" + digits(17)
    )
    return {"agreement_id": record["agreement_id"], "signed_at": record["signed_at"]}


@call("paycodes")
async def paycode(request: Request, data: dict, account) -> dict:
    record = await mock.agreement(request, str(data.get("agreement_id", "")))
    if record is None:
        raise Refusal("AGREEMENT_NOT_FOUND", "授权不存在")
    return {"pay_code": await mock.issue_code(request, record), "expires_in": 120}


BILL_HEADER = [
    "交易时间",
    "交易类型",
    "机构订单号",
    "医保交易号",
    "退款单号",
    "医保退款号",
    "金额(分)",
    "统筹支付(分)",
    "个人自付(分)",
    "手续费(分)",
    "状态",
]


@call("bills")
async def bills(request: Request, data: dict, account) -> dict:
    lines = await mock.bill_lines(request, account.merchant_id, str(data.get("bill_date", "")))
    if not lines:
        raise Refusal("BILL_NOT_FOUND", "当日无账单")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(BILL_HEADER)
    for x in lines:
        writer.writerow(
            [
                x["at"].replace(" ", "T") + "+08:00",
                x["kind"],
                x["out_trade_no"],
                x["trade_no"],
                x["refund_no"],
                x["refund_id"],
                x["amount_fen"],
                x["insurance_fen"],
                x["self_pay_fen"],
                0,
                "SUCCESS",
            ]
        )
    return {"bill_date": data["bill_date"], "content": out.getvalue()}
