"""Mock Alipay trade methods on the gateway of ``mocks.alipay`` (``/_mock/alipay/gateway.do``).

python-alipay-sdk talks to them unchanged: ``alipay.trade.wap.pay`` (the browser opens the
signed URL: the trade is made and the payment page shown), ``alipay.trade.app.pay`` (mock
control ``POST /_mock/alipay/pay/app {order_string}`` plays the Alipay app opening it),
``alipay.trade.pay`` (bar_code), ``alipay.trade.query``, ``alipay.trade.close``,
``alipay.trade.refund`` (``out_request_no``), ``alipay.trade.fastpay.refund.query``,
``alipay.data.dataservice.bill.downloadurl.query`` (the URL serves a zip of GBK CSV files,
业务明细 and 业务明细(汇总), service fee 0.6 %). Simplified agreements:
``alipay.user.agreement.sign`` {external_logon_id} -> ``agreement_no``;
``alipay.user.agreement.paycode.create`` {agreement_no} -> ``pay_code`` (18 digits, single use).

Amounts are yuan strings with two decimals. The merchant is the app of
``cashier.channels.dev.mock_merchant_configs`` (the gateway checks app id and signature);
its ``merchant_id`` is the seller id. Notifications are form posts signed RSA2 over every
parameter but ``sign`` and ``sign_type``, sent to the order's ``notify_url`` (refunds too,
with ``out_biz_no`` and the total ``refund_fee``); the answer ``success`` acknowledges them.
"""

from __future__ import annotations

import asyncio
import csv
import io
import secrets
import zipfile
from datetime import datetime
from urllib.parse import parse_qsl, urlencode

from sanic import Request
from sanic.response import HTTPResponse, json

from mocks._common import body_of, cache, dumps, loads, settings_of
from mocks._payments import BEIJING, ChannelMock, Notification, beijing_now, digits, fee_of, yuan
from mocks.alipay import (
    GatewayError,
    _check_common,
    bp,
    gateway_keys,
    gateway_method,
    invalid_arguments,
    sign,
    signing_string,
)

TIME = "%Y-%m-%d %H:%M:%S"
BILL_TTL_S = 3600

mock = ChannelMock("alipay", bp, "支付宝", "#1677ff", lambda reply: reply.text.strip() == "success")


def business_failed(sub_code: str, sub_msg: str) -> GatewayError:
    return GatewayError("40004", "Business Failed", sub_code, sub_msg)


def fen(text) -> int:
    """Exact yuan text to fen; the gateway refuses anything else, as Alipay does."""
    text = str(text or "")
    whole, _, cents = text.partition(".")
    if not whole.isdigit() or len(cents) > 2 or (cents and not cents.isdigit()):
        raise invalid_arguments("isv.invalid-parameter", f"金额格式错误: {text}")
    return int(whole) * 100 + int(cents.ljust(2, "0") or 0)


def trade_method(name: str):
    """A trade method: slowed and maybe dropped by the faults, like every channel API call."""

    def register(handler):
        async def run(request: Request, params: dict, biz: dict):
            await mock.slow_down(request)
            request.ctx.finish_answer = mock.maybe_drop
            return await handler(request, params, biz)

        return gateway_method(name)(run)

    return register


def _trade_answer(order: dict) -> dict:
    status = order.get("trade_status", "WAIT_BUYER_PAY")
    answer = {
        "out_trade_no": order["out_trade_no"],
        "trade_status": status,
        "total_amount": yuan(order["amount_fen"]),
    }
    if order.get("trade_no"):
        answer.update(
            trade_no=order["trade_no"],
            buyer_logon_id="pay***@example.com",
            buyer_user_id=order["buyer_id"],
            buyer_pay_amount=yuan(order["amount_fen"]),
            receipt_amount=yuan(order["amount_fen"]),
            send_pay_date=order["paid_at"],
        )
    return {"code": "10000", "msg": "Success", **answer}


async def _order(request: Request, biz: dict) -> dict:
    order = await mock.order(request, str(biz.get("out_trade_no") or ""))
    if order is None and biz.get("trade_no"):
        raw = await cache(request).get(mock.key("transaction", str(biz["trade_no"])))
        order = await mock.order(request, raw.decode()) if raw else None
    if order is None:
        raise business_failed("ACQ.TRADE_NOT_EXIST", "交易不存在")
    return order


# --- making trades -------------------------------------------------------------------------


async def _open_trade(request: Request, params: dict, biz: dict, product: str) -> dict:
    """The trade of a wap/app order, made on first sight; the same order again is the same trade."""
    out_trade_no = str(biz.get("out_trade_no") or "")
    if not out_trade_no or not biz.get("subject"):
        raise invalid_arguments("isv.missing-parameter", "缺少必选参数 out_trade_no / subject")
    amount = fen(biz.get("total_amount"))
    if amount <= 0:
        raise invalid_arguments("isv.invalid-parameter", "total_amount 必须大于 0")
    async with mock.locked(request, out_trade_no):
        order = await mock.order(request, out_trade_no)
        if order is not None:
            if order["amount_fen"] != amount:
                raise business_failed("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
            if params.get("return_url") and order["status"] == "paying":
                order["return_url"] = params["return_url"]
                await mock.save_order(request, order)
            return order
        expires = ""
        if biz.get("time_expire"):
            text = str(biz["time_expire"])
            try:
                moment = datetime.strptime(text, TIME if text.count(":") == 2 else "%Y-%m-%d %H:%M")
            except ValueError:
                raise invalid_arguments("isv.invalid-parameter", "time_expire 格式错误") from None
            expires = moment.replace(tzinfo=BEIJING).isoformat()
        order = {
            "out_trade_no": out_trade_no,
            "amount_fen": amount,
            "subject": str(biz["subject"]),
            "product": product,
            "notify_url": params.get("notify_url", ""),
            "return_url": params.get("return_url", ""),
            "status": "paying",
            "trade_status": "WAIT_BUYER_PAY",
            "expires_at": expires,
            "refunds": [],
            "app_id": params["app_id"],
            "created_at": beijing_now().strftime(TIME),
        }
        await mock.save_order(request, order)
    if order["notify_url"] and (await mock.faults(request)).get("out_of_order"):
        await mock.notify(
            request, out_trade_no, await _notification(request, order)
        )  # a stale one, held back
    return order


@gateway_method("alipay.trade.wap.pay")
async def wap_pay(request: Request, params: dict, biz: dict):
    """The browser opening the signed URL: Alipay's cashier page for the trade."""
    try:
        order = await _open_trade(request, params, biz, "QUICK_WAP_WAY")
    except GatewayError as exc:
        return mock.page_response(f"<p class='done'>{exc.body['sub_msg']}</p>", status=400)
    if order["status"] != "paying":
        return mock.page_response("<p class='done'>订单已支付或已关闭</p>")
    return mock.payment_page(order)


@bp.post("/pay/app")
async def app_opens_order(request: Request):
    """Mock control: the Alipay app opening an ``alipay.trade.app.pay`` order string."""
    params = dict(parse_qsl(str(body_of(request).get("order_string") or ""), keep_blank_values=True))
    app_public, _ = await gateway_keys(request)
    try:
        _check_common(params, settings_of(request).alipay_app_id, app_public)
        if params.get("method") != "alipay.trade.app.pay":
            raise invalid_arguments("isv.invalid-method", "不是 alipay.trade.app.pay 的订单串")
        order = await _open_trade(
            request, params, loads(params.get("biz_content") or "{}") or {}, "QUICK_MSECURITY_PAY"
        )
    except (GatewayError, ValueError) as exc:
        return json(
            {"code": "ORDER_STRING_REFUSED", "message": getattr(exc, "body", {}).get("sub_msg", "bad order")},
            status=400,
        )
    return json({"out_trade_no": order["out_trade_no"], "status": order["status"]})


def _mark_paid(order: dict, buyer_id: str) -> dict:
    order.update(
        status="paid",
        trade_status="TRADE_SUCCESS",
        buyer_id=buyer_id,
        trade_no=beijing_now().strftime("%Y%m%d") + "22001" + digits(15),
        paid_at=beijing_now().strftime(TIME),
    )
    return order


async def _after_payment(request: Request, order: dict) -> None:
    account = await mock.merchant(request)
    await cache(request).set(mock.key("transaction", order["trade_no"]), order["out_trade_no"], ex=7 * 86400)
    await mock.add_bill_line(request, account.merchant_id, _bill_line(order, "payment"))
    if order["notify_url"]:
        await mock.notify(request, order["out_trade_no"], await _notification(request, order))


def _bill_line(order: dict, kind: str, **refund) -> dict:
    names = ("trade_no", "out_trade_no", "subject", "created_at", "amount_fen")
    return {"kind": kind, "buyer": order["buyer_id"], **{n: order[n] for n in names}, **refund}


async def _notification(request: Request, order: dict, refund: dict | None = None):
    """The builder of the order's asynchronous notification as it stands now."""
    account = await mock.merchant(request)
    _, gateway_private = await gateway_keys(request)
    snapshot = dict(order)

    def build(faults: dict) -> Notification:
        fields = {
            "notify_time": beijing_now().strftime(TIME),
            "notify_type": "trade_status_sync",
            "notify_id": secrets.token_hex(16),
            "app_id": snapshot["app_id"],
            "charset": "utf-8",
            "version": "1.0",
            "out_trade_no": snapshot["out_trade_no"],
            "seller_id": account.merchant_id,
            "trade_status": snapshot["trade_status"],
            "subject": snapshot["subject"],
            "total_amount": yuan(snapshot["amount_fen"] + faults.get("wrong_notify_amount", 0)),
            "gmt_create": snapshot["created_at"],
        }
        if snapshot.get("trade_no"):
            fields.update(
                trade_no=snapshot["trade_no"],
                buyer_id=snapshot["buyer_id"],
                receipt_amount=fields["total_amount"],
                buyer_pay_amount=fields["total_amount"],
                gmt_payment=snapshot["paid_at"],
            )
        if refund is not None:
            refunded = sum(r["amount_fen"] for r in snapshot["refunds"])
            fields.update(
                out_biz_no=refund["out_request_no"],
                gmt_refund=refund["at"] + ".000",
                refund_fee=yuan(refunded + faults.get("wrong_notify_amount", 0)),
            )
        signature = sign(gateway_private, signing_string(fields))
        if faults.get("bad_notify_signature"):
            signature = signature[:-8] + ("A" if signature[-8] != "A" else "B") + signature[-7:]
        body = urlencode({**fields, "sign_type": "RSA2", "sign": signature}).encode()
        return Notification(snapshot["notify_url"], body, "application/x-www-form-urlencoded; charset=utf-8")

    return build


@mock.on_confirm
async def confirm(request: Request, order: dict) -> dict:
    if order["product"] == "FACE_TO_FACE_PAYMENT":
        return order  # a bar-code charge completes by itself
    order = _mark_paid(order, "2088" + digits(12))
    await mock.save_order(request, order)
    await _after_payment(request, order)
    return order


@mock.on_cancel
async def cancel(request: Request, order: dict) -> dict:
    order["trade_status"] = "TRADE_CLOSED"
    return order


# --- the API --------------------------------------------------------------------------------


@trade_method("alipay.trade.pay")
async def barcode_pay(request: Request, params: dict, biz: dict) -> dict:
    out_trade_no, code = str(biz.get("out_trade_no") or ""), str(biz.get("auth_code") or "")
    if biz.get("scene") not in ("bar_code", "wave_code") or not out_trade_no or not biz.get("subject"):
        raise invalid_arguments("isv.missing-parameter", "缺少必选参数或 scene 错误")
    amount = fen(biz.get("total_amount"))
    if not (code.isdigit() and 16 <= len(code) <= 24 and 25 <= int(code[:2]) <= 30):
        raise business_failed(
            "ACQ.PAYMENT_AUTH_CODE_INVALID", "支付失败，获取顾客账户信息失败，请顾客刷新付款码后重新收款"
        )
    async with mock.locked(request, out_trade_no):
        if (existing := await mock.order(request, out_trade_no)) is not None:
            if existing["status"] == "paid":
                raise business_failed("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
            raise business_failed("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
        agreement = await mock.take_code(request, code)
        if agreement is None:
            raise business_failed("ACQ.PAYMENT_AUTH_CODE_INVALID", "付款码无效或已使用，请顾客刷新付款码")
        order = {
            "out_trade_no": out_trade_no,
            "amount_fen": amount,
            "subject": str(biz["subject"]),
            "product": "FACE_TO_FACE_PAYMENT",
            "notify_url": params.get("notify_url", ""),
            "return_url": "",
            "status": "paying",
            "trade_status": "WAIT_BUYER_PAY",
            "expires_at": "",
            "refunds": [],
            "app_id": params["app_id"],
            "created_at": beijing_now().strftime(TIME),
        }
        faults = await mock.faults(request)
        if faults.get("userpaying"):
            order["buyer_id"] = agreement["payer_id"]
            await mock.save_order(request, order)
            mock.complete_later(request, out_trade_no, _complete, faults.get("userpaying_ms", 1000))
            return {
                "code": "10003",
                "msg": "order success pay inprocess",
                "out_trade_no": out_trade_no,
                "total_amount": yuan(amount),
            }
        order = _mark_paid(order, _buyer(agreement))
        await mock.save_order(request, order)
    await _after_payment(request, order)
    answer = _trade_answer(order)
    answer.pop("trade_status")
    return {**answer, "gmt_payment": order["paid_at"]}


def _buyer(agreement: dict) -> str:
    payer = agreement["payer_id"]
    return payer if payer.startswith("2088") and len(payer) == 16 else "2088" + digits(12)


async def _complete(request: Request, order: dict) -> None:
    order = _mark_paid(order, _buyer({"payer_id": order["buyer_id"]}))
    await mock.save_order(request, order)
    await _after_payment(request, order)


@trade_method("alipay.trade.query")
async def trade_query(request: Request, params: dict, biz: dict) -> dict:
    return _trade_answer(await _order(request, biz))


@trade_method("alipay.trade.close")
async def trade_close(request: Request, params: dict, biz: dict) -> dict:
    async with mock.locked(request, str(biz.get("out_trade_no") or "")):
        order = await _order(request, biz)
        if order["status"] == "paid":
            raise business_failed("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        order.update(status="closed", trade_status="TRADE_CLOSED")
        await mock.save_order(request, order)
    return {
        "code": "10000",
        "msg": "Success",
        "out_trade_no": order["out_trade_no"],
        **({"trade_no": order["trade_no"]} if order.get("trade_no") else {}),
    }


@trade_method("alipay.trade.refund")
async def trade_refund(request: Request, params: dict, biz: dict) -> dict:
    amount = fen(biz.get("refund_amount"))
    request_no = str(biz.get("out_request_no") or biz.get("out_trade_no") or "")
    async with mock.locked(request, str(biz.get("out_trade_no") or "")):
        order = await _order(request, biz)
        if order.get("trade_status") not in ("TRADE_SUCCESS", "TRADE_CLOSED") or not order.get("trade_no"):
            raise business_failed("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        previous = next((r for r in order["refunds"] if r["out_request_no"] == request_no), None)
        if previous is not None:
            if previous["amount_fen"] != amount:
                raise business_failed("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额与之前请求不一致")
            return _refund_answer(order, previous, "N")
        if amount <= 0 or sum(r["amount_fen"] for r in order["refunds"]) + amount > order["amount_fen"]:
            raise business_failed("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
        refund = {
            "out_request_no": request_no,
            "amount_fen": amount,
            "at": beijing_now().strftime(TIME),
            "reason": str(biz.get("refund_reason") or ""),
        }
        order["refunds"].append(refund)
        if sum(r["amount_fen"] for r in order["refunds"]) == order["amount_fen"]:
            order["trade_status"] = "TRADE_CLOSED"  # fully refunded
        await mock.save_order(request, order)
    line = _bill_line(order, "refund", refund_fen=amount, out_request_no=request_no)
    await mock.add_bill_line(request, (await mock.merchant(request)).merchant_id, line)
    if order["notify_url"]:
        await mock.notify(request, order["out_trade_no"], await _notification(request, order, refund))
    return _refund_answer(order, refund, "Y")


def _refund_answer(order: dict, refund: dict, fund_change: str) -> dict:
    total = sum(r["amount_fen"] for r in order["refunds"])
    return {
        "code": "10000",
        "msg": "Success",
        "trade_no": order["trade_no"],
        "out_trade_no": order["out_trade_no"],
        "buyer_logon_id": "pay***@example.com",
        "buyer_user_id": order["buyer_id"],
        "fund_change": fund_change,
        "refund_fee": yuan(total),
        "gmt_refund_pay": refund["at"],
    }


@trade_method("alipay.trade.fastpay.refund.query")
async def refund_query(request: Request, params: dict, biz: dict) -> dict:
    order = await _order(request, biz)
    refund = next((r for r in order["refunds"] if r["out_request_no"] == biz.get("out_request_no")), None)
    answer = {
        "code": "10000",
        "msg": "Success",
        "trade_no": order.get("trade_no", ""),
        "out_trade_no": order["out_trade_no"],
    }
    if refund is None:  # Alipay answers success without refund fields for an unknown request number
        return answer
    return {
        **answer,
        "out_request_no": refund["out_request_no"],
        "refund_amount": yuan(refund["amount_fen"]),
        "total_amount": yuan(order["amount_fen"]),
        "refund_status": "REFUND_SUCCESS",
        "gmt_refund_pay": refund["at"],
    }


# --- agreements and payment codes --------------------------------------------------------------


@trade_method("alipay.user.agreement.sign")
async def agreement_sign(request: Request, params: dict, biz: dict) -> dict:
    payer = str(biz.get("external_logon_id") or "")
    if not payer:
        raise invalid_arguments("isv.missing-parameter", "缺少必选参数 external_logon_id")
    account = await mock.merchant(request)
    record = await mock.new_agreement(
        request, account.merchant_id, payer, beijing_now().strftime("%Y%m%d") + digits(12)
    )
    return {
        "code": "10000",
        "msg": "Success",
        "agreement_no": record["agreement_id"],
        "status": "NORMAL",
        "external_logon_id": payer,
        "sign_time": record["signed_at"].replace("T", " ")[:19],
    }


@trade_method("alipay.user.agreement.paycode.create")
async def paycode_create(request: Request, params: dict, biz: dict) -> dict:
    record = await mock.agreement(request, str(biz.get("agreement_no") or ""))
    if record is None:
        raise business_failed("USER_AGREEMENT_NOT_EXIST", "用户协议不存在")
    return {
        "code": "10000",
        "msg": "Success",
        "agreement_no": record["agreement_id"],
        "pay_code": await mock.issue_code(request, record),
        "expires_in": "120",
    }


# --- bills ----------------------------------------------------------------------------------------

DETAIL_HEADER = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,"
    "商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,"
    "商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注"
)


def bill_zip(seller_id: str, day: str, lines: list[dict]) -> bytes:
    """Alipay's trade bill: a zip of two GBK CSV files, the details and the summary."""
    stamp = day.replace("-", "")
    rows, paid, refunded, paid_n, refund_n = [], 0, 0, 0, 0
    for line in lines:
        if line["kind"] == "payment":
            kind, received, fee, request_no = "交易", line["amount_fen"], -fee_of(line["amount_fen"]), ""
            paid, paid_n = paid + received, paid_n + 1
        else:
            kind, received, fee, request_no = (
                "退款",
                -line["refund_fen"],
                fee_of(line["refund_fen"]),
                line["out_request_no"],
            )
            refunded, refund_n = refunded + received, refund_n + 1
        rows.append(
            [
                line["trade_no"],
                line["out_trade_no"],
                kind,
                line["subject"],
                line["created_at"],
                line["at"],
                "",
                "",
                "",
                "",
                line["buyer"][:4] + "****",
                yuan(line["amount_fen"]),
                yuan(received),
                "0.00",
                "0.00",
                "0.00",
                "0.00",
                "0.00",
                "",
                "0.00",
                "0.00",
                request_no,
                yuan(fee),
                "0.00",
                "",
            ]
        )
    detail = io.StringIO()
    detail.write(
        f"#支付宝业务明细查询\n#账号：[{seller_id}]\n#起始日期：[{day[:4]}年{day[5:7]}月{day[8:]}日 00:00:00]"
        f"   终止日期：[{day[:4]}年{day[5:7]}月{day[8:]}日 23:59:59]\n"
        "#-----------------------------------------业务明细列表----------------------------------------\n"
    )
    detail.write(DETAIL_HEADER + "\n")
    csv.writer(detail, lineterminator="\n").writerows(rows)
    detail.write(
        "#-----------------------------------------业务明细列表结束------------------------------------\n"
        f"#交易合计：{paid_n}笔，商家实收共：{yuan(paid)}元，商家优惠共：0.00元\n"
        f"#退款合计：{refund_n}笔，商家实收退款共：{yuan(refunded)}元，商家优惠退款共：0.00元\n"
        f"#导出时间：[{beijing_now().strftime('%Y年%m月%d日 %H:%M:%S')}]\n"
    )
    fees = sum(-fee_of(x["amount_fen"]) if x["kind"] == "payment" else fee_of(x["refund_fen"]) for x in lines)
    summary = (
        f"#支付宝业务汇总查询\n#账号：[{seller_id}]\n门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,"
        f"商家实收（元）,服务费（元）\n,,{paid_n},{refund_n},{yuan(paid)},{yuan(paid + refunded)},"
        f"{yuan(fees)}\n"
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{seller_id}_{stamp}_业务明细.csv", detail.getvalue().encode("gbk"))
        archive.writestr(f"{seller_id}_{stamp}_业务明细(汇总).csv", summary.encode("gbk"))
    return out.getvalue()


@trade_method("alipay.data.dataservice.bill.downloadurl.query")
async def bill_url(request: Request, params: dict, biz: dict) -> dict:
    day = str(biz.get("bill_date") or "")
    if biz.get("bill_type") != "trade" or len(day) != 10:
        raise invalid_arguments("isv.invalid-parameter", "bill_type 仅支持 trade，bill_date 格式 yyyy-MM-dd")
    account = await mock.merchant(request)
    lines = await mock.bill_lines(request, account.merchant_id, day)
    if not lines:
        raise business_failed("isp.bill_not_exist", "账单不存在")
    token = secrets.token_hex(16)
    await cache(request).set(
        mock.key("billfile", token), dumps({"seller": account.merchant_id, "day": day}), ex=BILL_TTL_S
    )
    return {
        "code": "10000",
        "msg": "Success",
        "bill_download_url": f"{settings_of(request).base_url.rstrip('/')}/_mock/alipay/bills/{token}",
    }


@bp.get("/bills/<token>")
async def bill_file(request: Request, token: str):
    record = loads(await cache(request).get(mock.key("billfile", token)))
    if record is None:
        return HTTPResponse(b"not found", status=404)
    lines = await mock.bill_lines(request, record["seller"], record["day"])
    data = await asyncio.to_thread(bill_zip, record["seller"], record["day"], lines)
    return HTTPResponse(
        data,
        content_type="application/zip",
        headers={"Content-Disposition": f"attachment; filename={record['seller']}.csv.zip"},
    )
