"""Mock WeChat Pay API v2 under ``/_mock/wechat/`` (XML bodies, MD5 or HMAC-SHA256 signatures).

wechatpy's ``WeChatPay`` talks to it unchanged with ``API_BASE_URL = <base_url>/_mock/wechat/``:
``pay/unifiedorder`` (JSAPI, MWEB), ``pay/micropay``, ``pay/orderquery``, ``pay/closeorder``,
``secapi/pay/refund``, ``pay/refundquery``, ``pay/downloadbill``; simplified agreements:
``papay/contract/sign`` {openid} -> contract_id, ``papay/querycontract``, ``pay/authcode/issue``
{contract_id} -> auth_code (an 18-digit payment code, single use, 2 minutes).

It accepts the merchant of ``cashier.channels.dev.mock_merchant_configs`` (mch_id, its app ids,
API key), checks every signature with the request's ``sign_type`` and signs answers and
notifications the same way. Over plain http no client certificate can be seen, so
``secapi/`` calls are authenticated by their signature alone.

Payment notifications go to the order's ``notify_url``; refund notifications (``req_info``
encrypted with AES-256-ECB under MD5(API key)) to the refund's ``notify_url`` or the order's.
A notification counts as received when the answer is XML with ``return_code`` SUCCESS.
``GET pay/checkmweb?prepay_id=…&redirect_url=…`` is the H5 payment page of MWEB orders.
Bills (``ALL``): WeChat's text layout, rows and summary with back-quoted cells, fee 0.6 %.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime

import xmltodict
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from wechatpy.pay.utils import dict_to_xml

from cashier.channels.wechat import read_fields
from mocks._common import HEX, URLSAFE, cache, settings_of, token
from mocks._payments import BEIJING, ChannelMock, Notification, beijing_now, digits, fee_of, yuan

bp = Blueprint("mock_wechat_pay", url_prefix="/_mock/wechat")


def acknowledged(reply) -> bool:
    try:
        return reply.status_code == 200 and read_fields(reply.content).get("return_code") == "SUCCESS"
    except ValueError:
        return False


mock = ChannelMock("wechat", bp, "微信支付", "#07c160", acknowledged)


class PayError(Exception):
    """A business refusal (result_code FAIL) or, with ``fail_return``, a refused call."""

    def __init__(self, err_code: str, des: str, *, fail_return: bool = False):
        super().__init__(err_code)
        self.err_code, self.des, self.fail_return = err_code, des, fail_return


def sign(params: dict, api_key: str, sign_type: str = "MD5") -> str:
    """The v2 signature: sorted non-empty ``k=v`` but ``sign``, ``&key=…``; MD5 or HMAC-SHA256, upper hex."""
    text = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "sign" and v not in (None, ""))
    text += f"&key={api_key}"
    if sign_type == "HMAC-SHA256":
        return hmac.new(api_key.encode(), text.encode(), hashlib.sha256).hexdigest().upper()
    return hashlib.md5(text.encode()).hexdigest().upper()


def xml_response(fields: dict) -> HTTPResponse:
    return HTTPResponse(dict_to_xml(fields).encode(), content_type="text/xml; charset=utf-8")


def _return_fail(message: str) -> HTTPResponse:
    return xml_response({"return_code": "FAIL", "return_msg": message})


def signed(fields: dict, api_key: str, sign_type: str) -> dict:
    fields = {k: str(v) for k, v in fields.items() if v not in (None, "")}  # wechatpy writes int 0 as empty
    if sign_type != "MD5":
        fields["sign_type"] = sign_type
    fields["nonce_str"] = token(32, HEX)
    fields["sign"] = sign(fields, api_key, sign_type)
    return fields


def api(path: str):
    """A WeChat Pay API route: parse, authenticate, run ``handler(request, params, merchant)``, sign."""

    def register(handler):
        async def route(request: Request):
            return await mock.api(request, _serve(request, handler))

        bp.add_route(route, path, methods=["POST"], name=path.replace("/", "_"))
        return handler

    return register


async def _serve(request: Request, handler) -> HTTPResponse:
    try:
        params = read_fields(request.body)
    except ValueError:
        return _return_fail("XML格式错误")
    account = await mock.merchant(request)
    app_ids = {account.app_id, account.secrets.get("mini_app_id")} - {None, ""}
    sign_type = params.get("sign_type") or "MD5"
    if params.get("mch_id") != account.merchant_id:
        return _return_fail("mch_id参数格式错误")
    if params.get("appid") not in app_ids:
        return _return_fail("appid和mch_id不匹配")
    if sign_type not in ("MD5", "HMAC-SHA256"):
        return _return_fail("签名类型错误")
    if params.get("sign") != sign(params, account.secrets["api_key"], sign_type):
        return _return_fail("签名错误")
    if not params.get("nonce_str"):
        return _return_fail("nonce_str参数缺失")
    base = {
        "return_code": "SUCCESS",
        "return_msg": "OK",
        "appid": params["appid"],
        "mch_id": account.merchant_id,
    }
    try:
        answer = await handler(request, params, account)
    except PayError as exc:
        if exc.fail_return:
            return _return_fail(exc.des)
        answer = {"result_code": "FAIL", "err_code": exc.err_code, "err_code_des": exc.des}
    else:
        if isinstance(answer, HTTPResponse):  # a bill file
            return answer
        answer = {"result_code": "SUCCESS", **answer}
    return xml_response(signed({**base, **answer}, account.secrets["api_key"], sign_type))


def _amount(params: dict, name: str) -> int:
    try:
        value = int(params.get(name) or "")
    except ValueError:
        raise PayError("PARAM_ERROR", f"{name}参数错误") from None
    if value <= 0:
        raise PayError("PARAM_ERROR", f"{name}参数错误")
    return value


def _require(params: dict, *names: str) -> None:
    for name in names:
        if not params.get(name):
            raise PayError("PARAM_ERROR", f"缺少参数{name}")


def _expiry(params: dict) -> str:
    text = params.get("time_expire") or ""
    try:
        moment = datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=BEIJING)
    except ValueError:
        return ""
    return moment.isoformat()


async def _order(request: Request, params: dict) -> dict:
    out_trade_no = params.get("out_trade_no") or ""
    order = await mock.order(request, out_trade_no) if out_trade_no else None
    if order is None and params.get("transaction_id"):
        order = await mock.order(request, await _by_transaction(request, params["transaction_id"]))
    if order is None:
        raise PayError("ORDERNOTEXIST", "订单不存在")
    return order


async def _by_transaction(request: Request, transaction_id: str) -> str:
    raw = await cache(request).get(mock.key("transaction", transaction_id))
    return raw.decode() if raw else ""


# --- orders -----------------------------------------------------------------------------


@api("/pay/unifiedorder")
async def unifiedorder(request: Request, params: dict, account) -> dict:
    _require(params, "body", "out_trade_no", "spbill_create_ip", "notify_url", "trade_type")
    total = _amount(params, "total_fee")
    trade_type = params["trade_type"]
    if trade_type not in ("JSAPI", "MWEB", "NATIVE", "APP"):
        raise PayError("PARAM_ERROR", "trade_type参数错误")
    if trade_type == "JSAPI" and not params.get("openid"):
        raise PayError("PARAM_ERROR", "JSAPI支付必须传openid")
    async with mock.locked(request, params["out_trade_no"]):
        order = await mock.order(request, params["out_trade_no"])
        if order is not None:
            if order["status"] == "paid":
                raise PayError("ORDERPAID", "该订单已支付")
            if order["status"] in ("closed", "cancelled"):
                raise PayError("ORDERCLOSED", "该订单已关")
            same = (order["amount_fen"], order["trade_type"], order.get("openid")) == (
                total,
                trade_type,
                params.get("openid"),
            )
            if not same:
                raise PayError("INVALID_REQUEST", "201 商户订单号重复")
        else:
            order = {
                "out_trade_no": params["out_trade_no"],
                "appid": params["appid"],
                "amount_fen": total,
                "subject": params["body"],
                "trade_type": trade_type,
                "openid": params.get("openid"),
                "notify_url": params["notify_url"],
                "sign_type": params.get("sign_type") or "MD5",
                "prepay_id": "wx" + beijing_now().strftime("%d%H%M%S") + token(24, HEX),
                "status": "paying",
                "expires_at": _expiry(params),
                "refunds": [],
            }
            await mock.save_order(request, order)
            await _index(request, "prepay", order["prepay_id"], order["out_trade_no"])
    answer = {"prepay_id": order["prepay_id"], "trade_type": trade_type}
    if trade_type == "MWEB":
        answer["mweb_url"] = (
            f"{settings_of(request).base_url.rstrip('/')}/_mock/wechat/pay/checkmweb"
            f"?prepay_id={order['prepay_id']}&package={digits(10)}"
        )
    return answer


async def _index(request: Request, kind: str, value: str, out_trade_no: str) -> None:
    await mock.write(request, "SET", mock.key(kind, value), out_trade_no)


@bp.get("/pay/checkmweb")
async def checkmweb(request: Request):
    """The H5 payment page WeChat opens for an MWEB order."""
    raw = await cache(request).get(mock.key("prepay", request.args.get("prepay_id", "")))
    order = await mock.order(request, raw.decode()) if raw else None
    if order is None:
        return mock.page_response("<p class='done'>订单不存在或已过期</p>", status=404)
    redirect_url = request.args.get("redirect_url", "")
    if redirect_url and order.get("return_url") != redirect_url:
        order["return_url"] = redirect_url
        await mock.save_order(request, order)
    return mock.payment_page(order)


def _paid(order: dict, openid: str) -> dict:
    order.update(
        status="paid",
        trade_no="4200" + beijing_now().strftime("%Y%m%d") + digits(16),
        paid_at=beijing_now().strftime("%Y%m%d%H%M%S"),
        openid=order.get("openid") or openid,
    )
    return order


async def _after_payment(request: Request, order: dict, account) -> None:
    await _index(request, "transaction", order["trade_no"], order["out_trade_no"])
    await mock.add_bill_line(request, account.merchant_id, _bill_line(order, "payment"))


def _bill_line(order: dict, kind: str, **refund) -> dict:
    names = ("appid", "trade_no", "out_trade_no", "trade_type", "amount_fen", "subject")
    return {"kind": kind, "openid": order.get("openid") or "", **{n: order[n] for n in names}, **refund}


@mock.on_confirm
async def confirm(request: Request, order: dict) -> dict:
    account = await mock.merchant(request)
    if order["trade_type"] == "MICROPAY":
        return order  # a payment-code charge completes by itself
    order = _paid(order, "o" + token(27, URLSAFE))
    await _after_payment(request, order, account)
    api_key = account.secrets["api_key"]

    def build(faults: dict) -> Notification:
        total = order["amount_fen"] + faults.get("wrong_notify_amount", 0)
        fields = signed(
            {
                "return_code": "SUCCESS",
                "appid": order["appid"],
                "mch_id": account.merchant_id,
                "result_code": "SUCCESS",
                "openid": order["openid"],
                "is_subscribe": "N",
                "trade_type": order["trade_type"],
                "bank_type": "OTHERS",
                "total_fee": total,
                "cash_fee": total,
                "fee_type": "CNY",
                "transaction_id": order["trade_no"],
                "out_trade_no": order["out_trade_no"],
                "time_end": order["paid_at"],
            },
            api_key,
            order["sign_type"],
        )
        if faults.get("bad_notify_signature"):
            fields["sign"] = secrets.token_hex(16).upper()
        return Notification(order["notify_url"], dict_to_xml(fields).encode(), "text/xml; charset=utf-8")

    await mock.notify(request, order["out_trade_no"], build)
    return order


@api("/pay/micropay")
async def micropay(request: Request, params: dict, account) -> dict:
    _require(params, "body", "out_trade_no", "spbill_create_ip", "auth_code")
    total = _amount(params, "total_fee")
    code = params["auth_code"]
    if not (len(code) == 18 and code.isdigit() and "10" <= code[:2] <= "15"):
        raise PayError("AUTH_CODE_INVALID", "请扫描微信支付授权码(以10/11/12/13/14/15开头的18位数字)")
    async with mock.locked(request, params["out_trade_no"]):
        order = await mock.order(request, params["out_trade_no"])
        if order is not None:
            raise PayError(
                "ORDERPAID" if order["status"] == "paid" else "OUT_TRADE_NO_USED", "商户订单号重复"
            )
        agreement = await mock.take_code(request, code)
        if agreement is None:
            raise PayError("AUTHCODEEXPIRE", "二维码已过期，请用户在微信上刷新后再试")
        order = {
            "out_trade_no": params["out_trade_no"],
            "appid": params["appid"],
            "amount_fen": total,
            "subject": params["body"],
            "trade_type": "MICROPAY",
            "openid": agreement["payer_id"],
            "notify_url": "",
            "sign_type": params.get("sign_type") or "MD5",
            "status": "paying",
            "expires_at": "",
            "refunds": [],
        }
        faults = await mock.faults(request)
        if faults.get("userpaying"):
            order["trade_state"] = "USERPAYING"
            await mock.save_order(request, order)
            mock.complete_later(request, order["out_trade_no"], _complete, faults.get("userpaying_ms", 1000))
            raise PayError("USERPAYING", "需要用户输入支付密码")
        order = _paid(order, agreement["payer_id"])
        await mock.save_order(request, order)
    await _after_payment(request, order, account)
    return _trade_fields(order)


async def _complete(request: Request, order: dict) -> None:
    order = _paid(order, order["openid"])
    order.pop("trade_state", None)
    await mock.save_order(request, order)
    await _after_payment(request, order, await mock.merchant(request))


def _trade_fields(order: dict) -> dict:
    return {
        "openid": order.get("openid") or "",
        "is_subscribe": "N",
        "trade_type": order["trade_type"],
        "bank_type": "OTHERS",
        "fee_type": "CNY",
        "total_fee": order["amount_fen"],
        "cash_fee": order["amount_fen"],
        "transaction_id": order["trade_no"],
        "out_trade_no": order["out_trade_no"],
        "time_end": order["paid_at"],
    }


@api("/pay/orderquery")
async def orderquery(request: Request, params: dict, account) -> dict:
    order = await _order(request, params)
    if order["status"] == "paid":
        state = "REFUND" if order["refunds"] else "SUCCESS"
        return {"trade_state": state, "trade_state_desc": "支付成功", **_trade_fields(order)}
    state = {"closed": "CLOSED", "cancelled": "PAYERROR"}.get(
        order["status"], order.get("trade_state", "NOTPAY")
    )
    return {
        "trade_state": state,
        "out_trade_no": order["out_trade_no"],
        "total_fee": order["amount_fen"],
        "trade_type": order["trade_type"],
        "trade_state_desc": state,
    }


@api("/pay/closeorder")
async def closeorder(request: Request, params: dict, account) -> dict:
    _require(params, "out_trade_no")
    async with mock.locked(request, params["out_trade_no"]):
        order = await _order(request, params)
        if order["status"] == "paid":
            raise PayError("ORDERPAID", "订单已支付，不能发起关单")
        if order["status"] == "closed":
            raise PayError("ORDERCLOSED", "订单已关闭，无法重复关闭")
        order["status"] = "closed"
        await mock.save_order(request, order)
    return {}


# --- refunds -----------------------------------------------------------------------------


@api("/secapi/pay/refund")
async def refund(request: Request, params: dict, account) -> dict:
    _require(params, "out_refund_no")
    total, amount = _amount(params, "total_fee"), _amount(params, "refund_fee")
    async with mock.locked(request, params.get("out_trade_no") or params.get("transaction_id") or ""):
        order = await _order(request, params)
        if order["status"] != "paid":
            raise PayError("TRADE_STATE_ERROR", "订单状态错误")
        if total != order["amount_fen"]:
            raise PayError("INVALID_REQUEST", "订单金额或退款金额与之前请求不一致，请核实后再试")
        previous = next((r for r in order["refunds"] if r["out_refund_no"] == params["out_refund_no"]), None)
        if previous is not None:
            if previous["amount_fen"] != amount:
                raise PayError("INVALID_REQUEST", "订单金额或退款金额与之前请求不一致，请核实后再试")
            return _refund_fields(order, previous)
        if sum(r["amount_fen"] for r in order["refunds"]) + amount > order["amount_fen"]:
            raise PayError("NOTENOUGH", "申请退款金额超过订单可退金额")
        record = {
            "out_refund_no": params["out_refund_no"],
            "refund_id": "50" + digits(27),
            "amount_fen": amount,
            "status": "SUCCESS",
            "success_time": beijing_now().strftime("%Y-%m-%d %H:%M:%S"),
            "notify_url": params.get("notify_url") or order["notify_url"],
        }
        order["refunds"].append(record)
        await mock.save_order(request, order)
        await _index(request, "refund", record["out_refund_no"], order["out_trade_no"])
    line = _bill_line(
        order,
        "refund",
        refund_id=record["refund_id"],
        out_refund_no=record["out_refund_no"],
        refund_fen=amount,
    )
    await mock.add_bill_line(request, account.merchant_id, line)
    if record["notify_url"]:
        await mock.notify(request, order["out_trade_no"], _refund_notification(order, record, account))
    return _refund_fields(order, record)


def _refund_fields(order: dict, record: dict) -> dict:
    return {
        "transaction_id": order["trade_no"],
        "out_trade_no": order["out_trade_no"],
        "out_refund_no": record["out_refund_no"],
        "refund_id": record["refund_id"],
        "refund_fee": record["amount_fen"],
        "total_fee": order["amount_fen"],
        "cash_fee": order["amount_fen"],
        "cash_refund_fee": record["amount_fen"],
    }


def encrypt_req_info(api_key: str, fields: dict) -> str:
    plain = xmltodict.unparse({"root": fields}, full_document=False).encode()
    pad = 16 - len(plain) % 16
    key = hashlib.md5(api_key.encode()).hexdigest().encode()
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return base64.b64encode(encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()).decode()


def _refund_notification(order: dict, record: dict, account):
    def build(faults: dict) -> Notification:
        info = {
            "transaction_id": order["trade_no"],
            "out_trade_no": order["out_trade_no"],
            "refund_id": record["refund_id"],
            "out_refund_no": record["out_refund_no"],
            "total_fee": order["amount_fen"],
            "refund_fee": record["amount_fen"] + faults.get("wrong_notify_amount", 0),
            "settlement_refund_fee": record["amount_fen"],
            "refund_status": record["status"],
            "success_time": record["success_time"],
            "refund_recv_accout": "支付用户零钱",
            "refund_account": "REFUND_SOURCE_UNSETTLED_FUNDS",
            "refund_request_source": "API",
        }
        key = secrets.token_hex(16) if faults.get("bad_notify_signature") else account.secrets["api_key"]
        fields = {
            "return_code": "SUCCESS",
            "appid": order["appid"],
            "mch_id": account.merchant_id,
            "nonce_str": token(32, HEX),
            "req_info": encrypt_req_info(key, info),
        }
        return Notification(record["notify_url"], dict_to_xml(fields).encode(), "text/xml; charset=utf-8")

    return build


@api("/pay/refundquery")
async def refundquery(request: Request, params: dict, account) -> dict:
    out_refund_no = params.get("out_refund_no") or ""
    if out_refund_no:
        order = (
            await mock.order(request, params.get("out_trade_no") or "")
            if params.get("out_trade_no")
            else None
        )
        order = order or await _order_of_refund(request, out_refund_no)
        refunds = [r for r in (order or {}).get("refunds", []) if r["out_refund_no"] == out_refund_no]
    else:
        order = await _order(request, params)
        refunds = order["refunds"]
    if not refunds:
        raise PayError("REFUNDNOTEXIST", "退款订单查询失败")
    answer = {
        "transaction_id": order["trade_no"],
        "out_trade_no": order["out_trade_no"],
        "total_fee": order["amount_fen"],
        "cash_fee": order["amount_fen"],
        "refund_count": len(refunds),
    }
    for n, record in enumerate(refunds):
        answer.update(
            {
                f"out_refund_no_{n}": record["out_refund_no"],
                f"refund_id_{n}": record["refund_id"],
                f"refund_fee_{n}": record["amount_fen"],
                f"refund_status_{n}": record["status"],
                f"refund_success_time_{n}": record["success_time"],
                f"refund_recv_accout_{n}": "支付用户零钱",
                f"refund_channel_{n}": "ORIGINAL",
            }
        )
    return answer


async def _order_of_refund(request: Request, out_refund_no: str) -> dict | None:
    raw = await cache(request).get(mock.key("refund", out_refund_no))
    return await mock.order(request, raw.decode()) if raw else None


# --- agreements and payment codes -----------------------------------------------------------


@api("/papay/contract/sign")
async def contract_sign(request: Request, params: dict, account) -> dict:
    _require(params, "openid", "contract_code")
    record = await mock.new_agreement(request, account.merchant_id, params["openid"], "2020" + digits(16))
    return {
        "contract_id": record["agreement_id"],
        "contract_code": params["contract_code"],
        "openid": params["openid"],
        "contract_state": 0,
        "contract_signed_time": record["signed_at"],
    }


async def _contract(request: Request, params: dict, account) -> dict:
    record = await mock.agreement(request, params.get("contract_id") or "")
    if record is None or record["merchant"] != account.merchant_id:
        raise PayError("CONTRACT_NOT_EXIST", "签约协议不存在")
    return record


@api("/papay/querycontract")
async def contract_query(request: Request, params: dict, account) -> dict:
    record = await _contract(request, params, account)
    return {
        "contract_id": record["agreement_id"],
        "openid": record["payer_id"],
        "contract_state": 0,
        "contract_signed_time": record["signed_at"],
    }


@api("/pay/authcode/issue")
async def authcode_issue(request: Request, params: dict, account) -> dict:
    record = await _contract(request, params, account)
    return {
        "contract_id": record["agreement_id"],
        "auth_code": await mock.issue_code(request, record),
        "expires_in": 120,
    }


# --- bills ---------------------------------------------------------------------------------

BILL_HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,"
    "货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,"
    "商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
)
BILL_SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"


@api("/pay/downloadbill")
async def downloadbill(request: Request, params: dict, account):
    day = params.get("bill_date") or ""
    if len(day) != 8 or not day.isdigit():
        raise PayError("", "invalid bill_date", fail_return=True)
    if (params.get("bill_type") or "ALL") != "ALL":
        raise PayError("", "bill_type only ALL in the mock", fail_return=True)
    lines = await mock.bill_lines(request, account.merchant_id, f"{day[:4]}-{day[4:6]}-{day[6:]}")
    if not lines:
        raise PayError("", "No Bill Exist", fail_return=True)
    rows, paid, refunded, fees = [], 0, 0, 0
    for line in lines:
        refund_fen = line.get("refund_fen", 0)
        fee = fee_of(line["amount_fen"]) if line["kind"] == "payment" else -fee_of(refund_fen)
        settle = line["amount_fen"] if line["kind"] == "payment" else 0
        paid, refunded, fees = paid + settle, refunded + refund_fen, fees + fee
        cells = [
            line["at"],
            line["appid"],
            account.merchant_id,
            "0",
            "",
            line["trade_no"],
            line["out_trade_no"],
            line["openid"],
            line["trade_type"],
            "SUCCESS" if line["kind"] == "payment" else "REFUND",
            "OTHERS",
            "CNY",
            yuan(settle),
            "0.00",
            line.get("refund_id", "0"),
            line.get("out_refund_no", "0"),
            yuan(refund_fen),
            "0.00",
            "ORIGINAL" if refund_fen else "",
            "SUCCESS" if refund_fen else "",
            line["subject"].replace(",", " "),
            "",
            yuan(fee),
            "0.60%",
            yuan(line["amount_fen"]),
            yuan(refund_fen),
            "",
        ]
        rows.append(",".join("`" + cell for cell in cells))
    summary = [str(len(lines)), yuan(paid), yuan(refunded), "0.00", yuan(fees), yuan(paid), yuan(refunded)]
    text = "\r\n".join([BILL_HEADER, *rows, BILL_SUMMARY, ",".join("`" + cell for cell in summary)]) + "\r\n"
    return HTTPResponse(text.encode(), content_type="text/plain; charset=utf-8")
