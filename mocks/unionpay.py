"""Mock UnionPay gateway under ``/_mock/unionpay/gateway/api/`` (protocol: ``cashier.channels.unionpay``).

``frontTransReq.do`` (the browser's signed form: the payment page), ``backTransReq.do``
(txnType 01/06 payment code, 04 refund, 31 cancel/close, 79 agreement, 77 payment code),
``queryTrans.do``, ``fileTransfer.do``. Requests must be signed by the merchant of
``cashier.channels.dev.mock_merchant_configs`` (certId = its certificate's serial); answers
and notifications are signed with the mock's own key (``dev-unionpay-gateway``).
respCode: 00 done, 11 bad signature, 12 duplicate/not allowed, 34 no such transaction,
35 original transaction not refundable, 61 amount over the limit, 98 no file. A
notification (form post to ``backUrl``) counts as received on HTTP 200.
"""

from __future__ import annotations

import asyncio
import base64
import io
import secrets
import zipfile
from datetime import datetime
from urllib.parse import urlencode

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from cashier.channels.dev import unionpay_gateway_signing_key
from cashier.channels.unionpay import cert_id, parse_form, sign, signature_ok
from mocks._common import cache, settings_of
from mocks._payments import BEIJING, ChannelMock, Notification, Refusal, beijing_now, digits, fee_of

bp = Blueprint("mock_unionpay", url_prefix="/_mock/unionpay")
mock = ChannelMock("unionpay", bp, "银联在线支付", "#d7000f", lambda reply: reply.status_code == 200)
TIME = "%Y%m%d%H%M%S"


async def _keys(request: Request):
    settings = settings_of(request)
    account = await mock.merchant(request)
    private_pem, cert_pem = await asyncio.to_thread(unionpay_gateway_signing_key, settings)
    merchant_cert = x509.load_pem_x509_certificate(account.secrets["sign_cert"].encode())
    gateway_cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return (
        account,
        merchant_cert,
        serialization.load_pem_private_key(private_pem.encode(), None),
        cert_id(gateway_cert),
    )


def _signed(fields: dict, private_key, gateway_cert_id: str) -> dict[str, str]:
    fields = {k: str(v) for k, v in fields.items() if v not in (None, "")}
    fields.update(version="5.1.0", encoding="UTF-8", signMethod="01", certId=gateway_cert_id)
    fields["signature"] = sign(private_key, fields)
    return fields


def _form_response(fields: dict) -> HTTPResponse:
    return HTTPResponse(
        urlencode(fields).encode(), content_type="application/x-www-form-urlencoded; charset=UTF-8"
    )


async def _authenticated(request: Request):
    """(fields, merchant account, gateway signer) of a request signed by the known merchant."""
    fields = {k: v[0] for k, v in request.get_form(keep_blank_values=True).items()}
    account, merchant_cert, private_key, gateway_cert_id = await _keys(request)
    if fields.get("merId") != account.merchant_id:
        raise Refusal("11", "商户号不存在")  # unsigned: not a merchant the gateway knows
    if fields.get("certId") != cert_id(merchant_cert) or not signature_ok(merchant_cert.public_key(), fields):
        raise Refusal("11", "验证签名失败")
    return fields, account, (private_key, gateway_cert_id)


def _serve(handler):
    async def route(request: Request):
        async def run():
            try:
                fields, account, signer = await _authenticated(request)
            except Refusal as exc:
                return _form_response({"respCode": exc.code, "respMsg": exc.message})
            echo = {
                k: fields[k]
                for k in ("merId", "orderId", "txnType", "txnSubType", "bizType", "txnTime")
                if k in fields
            }
            try:
                answer = {
                    "respCode": "00",
                    "respMsg": "成功[0000000]",
                    **await handler(request, fields, account),
                }
            except Refusal as exc:
                answer = {"respCode": exc.code, "respMsg": exc.message}
            return _form_response(_signed({**echo, **answer}, *signer))

        return await mock.api(request, run())

    return route


def _amount(fields: dict) -> int:
    text = fields.get("txnAmt", "")
    if not text.isdigit() or int(text) <= 0:
        raise Refusal("30", "交易金额格式错误")
    return int(text)


def _now() -> str:
    return beijing_now().strftime(TIME)


# --- the browser's payment ---------------------------------------------------------------


@bp.post("/gateway/api/frontTransReq.do")
async def front(request: Request):
    try:
        fields, account, _ = await _authenticated(request)
        if fields.get("txnType") != "01" or not fields.get("orderId") or not fields.get("backUrl"):
            raise Refusal("30", "报文格式错误")
        amount = _amount(fields)
    except Refusal as exc:
        return mock.page_response(f"<p class='done'>{exc.message} ({exc.code})</p>", status=400)
    async with mock.locked(request, fields["orderId"]):
        order = await mock.order(request, fields["orderId"])
        if order is None:
            expires = ""
            if fields.get("payTimeout"):
                expires = datetime.strptime(fields["payTimeout"], TIME).replace(tzinfo=BEIJING).isoformat()
            subject = fields.get("riskRateInfo", "").removeprefix("{commodityName=").removesuffix("}")
            order = {
                "out_trade_no": fields["orderId"],
                "txnType": "01",
                "amount_fen": amount,
                "subject": subject,
                "notify_url": fields["backUrl"],
                "return_url": fields.get("frontUrl", ""),
                "status": "paying",
                "expires_at": expires,
                "txnTime": fields.get("txnTime", ""),
                "refunded_fen": 0,
            }
            await mock.save_order(request, order)
        elif order["amount_fen"] != amount:
            return mock.page_response("<p class='done'>重复交易 (12)</p>", status=400)
    if order["status"] != "paying":
        return mock.page_response("<p class='done'>订单已支付或已关闭</p>")
    return mock.payment_page(order)


def _went_through() -> dict:
    """queryId (starting with traceTime, MMDDhhmmss) and paidTime of a transaction put through now."""
    now = beijing_now()
    return {"queryId": now.strftime("%m%d%H%M%S") + digits(11), "paidTime": now.strftime(TIME)}


def _trace(record: dict) -> dict:
    """How answers and notifications name a transaction that went through: its queryId and
    the traceTime/traceNo it carries."""
    query_id = record["queryId"]
    return {"queryId": query_id, "traceNo": query_id[-6:], "traceTime": query_id[:10]}


def _paid(order: dict) -> dict:
    order.update(status="paid", **_went_through())
    order["trade_no"] = order["queryId"]
    return order


async def _after_payment(request: Request, order: dict, account) -> None:
    await cache(request).set(mock.key("query", order["queryId"]), order["out_trade_no"], ex=7 * 86400)
    await mock.add_bill_line(
        request,
        account.merchant_id,
        {
            "txnType": "01",
            "orderId": order["out_trade_no"],
            "origOrderId": "",
            "queryId": order["queryId"],
            "amount_fen": order["amount_fen"],
            "fee": fee_of(order["amount_fen"]),
            "txnTime": order["paidTime"],
        },
    )
    if order.get("notify_url"):
        await mock.notify(request, order["out_trade_no"], await _notification(request, order, account))


async def _notification(request: Request, record: dict, account, notify_url: str = ""):
    _, _, private_key, gateway_cert_id = await _keys(request)

    def build(faults: dict) -> Notification:
        fields = _signed(
            {
                "merId": account.merchant_id,
                "orderId": record["out_trade_no"],
                "txnType": record["txnType"],
                "txnSubType": "00" if record["txnType"] == "04" else "01",
                "bizType": "000201",
                "accessType": "0",
                "currencyCode": "156",
                "txnAmt": record["amount_fen"] + faults.get("wrong_notify_amount", 0),
                "txnTime": record.get("txnTime", ""),  # as the merchant sent it; traceTime is when it went through
                **_trace(record),
                "settleDate": _now()[4:8],
                "settleAmt": record["amount_fen"],
                "settleCurrencyCode": "156",
                "respCode": "00",
                "respMsg": "Success!",
                **({"origQryId": record["origQryId"]} if record.get("origQryId") else {}),
            },
            private_key,
            gateway_cert_id,
        )
        if faults.get("bad_notify_signature"):
            fields["signature"] = base64.b64encode(secrets.token_bytes(256)).decode()
        return Notification(
            notify_url or record["notify_url"],
            urlencode(fields).encode(),
            "application/x-www-form-urlencoded; charset=UTF-8",
        )

    return build


@mock.on_confirm
async def confirm(request: Request, order: dict) -> dict:
    if order["txnType"] != "01" or order.get("qrNo"):
        return order  # refunds, and payment-code charges, complete by themselves
    account = await mock.merchant(request)
    order = _paid(order)
    await mock.save_order(request, order)
    await _after_payment(request, order, account)
    return order


# --- back-end transactions ------------------------------------------------------------------


async def _back(request: Request, fields: dict, account) -> dict:
    kind = (fields.get("txnType"), fields.get("txnSubType"))
    handlers = {
        ("01", "06"): _payment_code_charge,
        ("04", "00"): _refund,
        ("31", "00"): _cancel,
        ("79", "00"): _open_agreement,
        ("77", "01"): _issue_code,
    }
    handler = handlers.get(kind)
    if handler is None:
        raise Refusal("40", "交易类型不支持")
    return await handler(request, fields, account)


bp.add_route(_serve(_back), "/gateway/api/backTransReq.do", methods=["POST"], name="back")


async def _payment_code_charge(request: Request, fields: dict, account) -> dict:
    amount = _amount(fields)
    async with mock.locked(request, fields.get("orderId", "")):
        if await mock.order(request, fields.get("orderId", "")) is not None:
            raise Refusal("12", "重复交易")
        agreement = await mock.take_code(request, fields.get("qrNo", ""))
        if agreement is None:
            raise Refusal("60", "付款码无效或已使用")
        order = {
            "out_trade_no": fields["orderId"],
            "txnType": "01",
            "amount_fen": amount,
            "subject": "",
            "notify_url": fields.get("backUrl", ""),
            "return_url": "",
            "status": "paying",
            "expires_at": "",
            "txnTime": fields.get("txnTime", ""),
            "refunded_fen": 0,
            "qrNo": fields["qrNo"],
        }
        faults = await mock.faults(request)
        if faults.get("userpaying"):
            await mock.save_order(request, order)
            mock.complete_later(request, order["out_trade_no"], _complete, faults.get("userpaying_ms", 1000))
            return {}
        order = _paid(order)
        await mock.save_order(request, order)
    await _after_payment(request, order, account)
    return {"queryId": order["queryId"]}


async def _complete(request: Request, order: dict) -> None:
    order = _paid(order)
    await mock.save_order(request, order)
    await _after_payment(request, order, await mock.merchant(request))


async def _refund(request: Request, fields: dict, account) -> dict:
    amount = _amount(fields)
    raw = await _order_of_query(request, fields.get("origQryId", ""))
    async with mock.locked(request, raw or "-"):
        original = await mock.order(request, raw) if raw else None
        if original is None or original["status"] != "paid" or original["txnType"] != "01":
            raise Refusal("35", "原交易不存在或状态不正确")
        if await mock.order(request, fields.get("orderId", "")) is not None:
            raise Refusal("12", "重复交易")
        if original["refunded_fen"] + amount > original["amount_fen"]:
            raise Refusal("61", "退货金额超限")
        original["refunded_fen"] += amount
        await mock.save_order(request, original)
        refund = {
            "out_trade_no": fields["orderId"],
            "txnType": "04",
            "amount_fen": amount,
            "status": "paid",
            "origOrderId": original["out_trade_no"],
            "origQryId": original["queryId"],
            "expires_at": "",
            **_went_through(),
            "txnTime": fields.get("txnTime", ""),
            "notify_url": fields.get("backUrl") or original["notify_url"],
        }
        await mock.save_order(request, refund)
    await mock.add_bill_line(
        request,
        account.merchant_id,
        {
            "txnType": "04",
            "orderId": refund["out_trade_no"],
            "origOrderId": original["out_trade_no"],
            "queryId": refund["queryId"],
            "amount_fen": amount,
            "fee": -fee_of(amount),
            "txnTime": refund["paidTime"],
        },
    )
    await mock.notify(request, original["out_trade_no"], await _notification(request, refund, account))
    return {"queryId": refund["queryId"], "origQryId": original["queryId"], "txnAmt": str(amount)}


async def _order_of_query(request: Request, query_id: str) -> str:
    """The orderId of a paid consume by its queryId."""
    if not query_id:
        return ""
    raw = await cache(request).get(mock.key("query", query_id))
    return raw.decode() if raw else ""


async def _cancel(request: Request, fields: dict, account) -> dict:
    """消费撤销 without origQryId: closes an unpaid order (the mock's stand-in for payTimeout)."""
    if fields.get("origQryId"):
        raise Refusal("40", "消费撤销仅支持关闭未支付订单（mock）")
    order_id = fields.get("origOrderId", "")
    async with mock.locked(request, order_id):
        order = await mock.order(request, order_id)
        if order is None:
            raise Refusal("34", "查无此交易")
        if order["status"] == "paid":
            raise Refusal("12", "原交易已成功，不能关闭")
        order["status"] = "closed"
        await mock.save_order(request, order)
    return {"origOrderId": order_id}


async def _open_agreement(request: Request, fields: dict, account) -> dict:
    payer = fields.get("customerInfo", "").removeprefix("{customerNm=").removesuffix("}")
    record = await mock.new_agreement(request, account.merchant_id, payer or "anonymous", "6235" + digits(15))
    return {"tokenPayData": "{token=" + record["agreement_id"] + "&trId=62000000001&tokenLevel=40}"}


async def _issue_code(request: Request, fields: dict, account) -> dict:
    token = parse_form(fields.get("tokenPayData", "").strip("{}")).get("token", "")
    record = await mock.agreement(request, token)
    if record is None:
        raise Refusal("34", "标记不存在")
    return {"qrNo": await mock.issue_code(request, record)}


# --- queries and files ---------------------------------------------------------------------


async def _query(request: Request, fields: dict, account) -> dict:
    # UnionPay names a transaction by orderId and the txnTime it was sent with: both must match.
    order = await mock.order(request, fields.get("orderId", ""))
    if order is None or not fields.get("txnTime") or order.get("txnTime") != fields["txnTime"]:
        raise Refusal("34", "查无此交易")
    result = {"paid": ("00", "成功"), "paying": ("05", "交易处理中"), "cancelled": ("01", "交易失败")}.get(
        order["status"], ("34", "订单已关闭")
    )
    answer = {
        "origRespCode": result[0],
        "origRespMsg": result[1],
        "txnType": order["txnType"],
        "txnAmt": str(order["amount_fen"]),
    }
    if order["status"] == "paid":
        answer.update(_trace(order), settleAmt=str(order["amount_fen"]))
    return answer


bp.add_route(_serve(_query), "/gateway/api/queryTrans.do", methods=["POST"], name="query")


async def _file(request: Request, fields: dict, account) -> dict:
    settle = fields.get("settleDate", "")
    today = beijing_now()
    year = today.year if settle <= today.strftime("%m%d") else today.year - 1
    day = f"{year}-{settle[:2]}-{settle[2:]}"
    lines = await mock.bill_lines(request, account.merchant_id, day)
    if len(settle) != 4 or not lines:
        raise Refusal("98", "文件不存在")
    text = f"#UnionPay settlement (mock) merId={account.merchant_id} settleDate={day}\n" + "".join(
        f"{x['txnType']}|{x['orderId']}|{x['origOrderId']}|{x['queryId']}|{x['amount_fen']}|{x['fee']}|"
        f"{x['txnTime']}|00\n"
        for x in lines
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"INN{year % 100:02d}{settle}01ACOMA", text.encode())
    return {
        "fileName": f"INN{year % 100:02d}{settle}01ACOMA.zip",
        "fileContent": base64.b64encode(out.getvalue()).decode(),
        "settleDate": settle,
    }


bp.add_route(_serve(_file), "/gateway/api/fileTransfer.do", methods=["POST"], name="file")
