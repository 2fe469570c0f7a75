"""Alipay open-platform trade APIs (RSA2), through python-alipay-sdk.

Merchant config: ``app_id``, ``merchant_id`` (seller id, 2088…), ``gateway`` (``…/gateway.do``,
set as the SDK's ``_gateway``), ``secrets``: ``app_private_key`` and ``alipay_public_key`` (PEM).

Methods: ``alipay_wap`` (alipay.trade.wap.pay -> ``redirect`` to the gateway URL with the
signed query, Alipay's cashier page), ``alipay_app`` (alipay.trade.app.pay -> ``app`` with
``order_string`` for the Alipay app SDK); ``micropay`` is alipay.trade.pay, scene bar_code.
Amounts go out as yuan strings made exactly from fen and come back the same way, never
through float. Refunds are synchronous at Alipay: an accepted one has succeeded.

Asynchronous notifications are form posts signed RSA2 (``sign``, ``sign_type``), verified
with the SDK's ``verify``; the reply is ``success`` or ``fail``. A refund notification
carries ``out_biz_no`` (our refund number) and the order's total ``refund_fee``, so its
event has no amount of its own.

Payment agreements (simplified from the 商家扣款 agreement APIs, which need a signing page):
``alipay.user.agreement.sign`` {external_logon_id} -> ``agreement_no``;
``alipay.user.agreement.paycode.create`` {agreement_no} -> ``pay_code`` (a bar-code payment code).
"""

from __future__ import annotations

import csv
import http.client
import io
import secrets
import threading
import zipfile
from urllib.parse import parse_qsl

from alipay import AliPay
from alipay.exceptions import AliPayException, AliPayValidationError
from alipay.utils import AliPayConfig

from cardcore import outbound
from cardcore.providers._threads import run_sync
from cardcore.providers.alipay import error_of
from cashier.channels import register
from cashier.channels._common import (
    beijing,
    fen_to_yuan,
    field,
    parse_beijing,
    refused,
    unreachable,
    yuan_to_fen,
)
from cashier.channels.base import (
    BadCallback,
    BillRecord,
    CallbackEvent,
    CallbackHint,
    CallbackReply,
    Channel,
    MerchantConfig,
    PayAction,
    PaymentRequest,
    PaymentState,
    RefundState,
)

CHANNEL = "alipay"
TIME = "%Y-%m-%d %H:%M:%S"
TRADE_STATES = {
    "TRADE_SUCCESS": "paid",
    "TRADE_FINISHED": "paid",
    "WAIT_BUYER_PAY": "paying",
    "TRADE_CLOSED": "closed",  # unpaid and closed, or paid and fully refunded
}
SUCCESS, PAYING = "10000", "10003"


@register
class AlipayChannel(Channel):
    code = CHANNEL
    methods = ("alipay_wap", "alipay_app")

    def __init__(self, config: MerchantConfig, *, timeout: float = 10) -> None:
        super().__init__(config)
        self.timeout = timeout
        self._sdk: AliPay | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AlipayChannel(app_id={self.config.app_id!r}, gateway={self.config.gateway!r})"

    def _client(self) -> AliPay:
        """The SDK object, built on first use (it parses the keys): call it off the event loop."""
        with self._lock:
            if self._sdk is None:
                sdk = AliPay(
                    appid=self.config.app_id,
                    app_private_key_string=self.config.secrets["app_private_key"],
                    alipay_public_key_string=self.config.secrets["alipay_public_key"],
                    sign_type="RSA2",
                    config=AliPayConfig(timeout=self.timeout),
                )
                sdk._gateway = self.config.gateway
                self._sdk = sdk
            return self._sdk

    async def _call(self, fn, *, accept: frozenset[str] = frozenset()) -> dict:
        """One gateway call; the answer when its code is 10000 (or its sub_code is in ``accept``)."""
        try:
            answer = await run_sync(fn)
        except AliPayValidationError:
            raise unreachable(CHANNEL, "answer signature does not verify") from None
        except AliPayException as exc:  # an unsigned error answer: the gateway refused the call
            error = error_of(exc)
            raise refused(
                CHANNEL,
                str(error.get("sub_code") or error.get("code") or "unknown"),
                str(error.get("sub_msg") or error.get("msg") or ""),
            ) from None
        except (
            OSError,
            http.client.HTTPException,
        ) as exc:  # URLError, HTTPError, timeouts, dropped connections
            raise unreachable(CHANNEL, exc.__class__.__name__) from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise unreachable(CHANNEL, f"unreadable answer: {exc.__class__.__name__}") from None
        if not isinstance(answer, dict):
            raise unreachable(CHANNEL, "unreadable answer")
        code, sub_code = str(answer.get("code", "")), str(answer.get("sub_code", ""))
        if code == SUCCESS or code == PAYING or sub_code in accept:
            return answer
        if code == "20000" or sub_code in ("ACQ.SYSTEM_ERROR", "aop.ACQ.SYSTEM_ERROR"):
            raise unreachable(CHANNEL, f"{code} {sub_code}")  # outcome unknown: query
        raise refused(CHANNEL, sub_code or code, str(answer.get("sub_msg") or answer.get("msg") or ""))

    # --- payments -----------------------------------------------------------------------

    async def create_payment(self, request: PaymentRequest) -> PayAction:
        if request.method not in self.methods:
            raise ValueError(f"Alipay does not serve {request.method}")
        common = dict(
            subject=request.subject[:256],
            out_trade_no=request.order_no,
            total_amount=fen_to_yuan(request.amount_fen),
            notify_url=request.notify_url,
            time_expire=beijing(request.expires_at).strftime(TIME),
        )

        def signed() -> str:  # signing only, no call: RSA off the event loop all the same
            if request.method == "alipay_app":
                return self._client().api_alipay_trade_app_pay(**common)
            return self._client().api_alipay_trade_wap_pay(
                return_url=request.return_url or None, quit_url=request.return_url, **common
            )

        order_string = await run_sync(signed)
        if request.method == "alipay_app":
            return PayAction("app", {"order_string": order_string})
        return PayAction("redirect", {"url": f"{self.config.gateway}?{order_string}"})

    async def micropay(self, request: PaymentRequest, auth_code: str) -> PaymentState:
        sdk = await run_sync(self._client)
        answer = await self._call(
            lambda: sdk.api_alipay_trade_pay(
                request.order_no,
                "bar_code",
                auth_code,
                request.subject[:256],
                notify_url=request.notify_url or None,
                total_amount=fen_to_yuan(request.amount_fen),
            )
        )
        if answer["code"] == PAYING:  # waiting for the payer's password: query until it is done
            return PaymentState("paying", request.order_no)
        return self._state(
            request.order_no,
            {**answer, "trade_status": "TRADE_SUCCESS", "send_pay_date": answer.get("gmt_payment", "")},
        )

    async def query(self, order_no: str) -> PaymentState:
        sdk = await run_sync(self._client)
        answer = await self._call(
            lambda: sdk.api_alipay_trade_query(out_trade_no=order_no),
            accept=frozenset({"ACQ.TRADE_NOT_EXIST"}),
        )
        if answer.get("sub_code") == "ACQ.TRADE_NOT_EXIST":
            return PaymentState("not_found", order_no)
        return self._state(order_no, answer)

    @staticmethod
    def _state(order_no: str, answer: dict) -> PaymentState:
        status = TRADE_STATES.get(str(answer.get("trade_status", "")))
        if status is None:
            raise unreachable(CHANNEL, f"unknown trade_status {answer.get('trade_status')!r}")
        try:
            amount = yuan_to_fen(answer["total_amount"]) if answer.get("total_amount") else None
        except ValueError:
            raise unreachable(CHANNEL, "unreadable total_amount") from None
        paid = status == "paid"
        return PaymentState(
            status,
            order_no,
            amount_fen=amount,
            channel_trade_no=str(answer.get("trade_no") or ""),
            paid_at=parse_beijing(str(answer.get("send_pay_date") or answer.get("gmt_payment") or ""), TIME)
            if paid
            else None,
            self_pay_fen=amount if paid else None,
        )

    async def close(self, order_no: str) -> None:
        sdk = await run_sync(self._client)
        await self._call(
            lambda: sdk.api_alipay_trade_close(out_trade_no=order_no),
            accept=frozenset({"ACQ.TRADE_NOT_EXIST"}),
        )

    # --- refunds ------------------------------------------------------------------------

    async def refund(self, order_no, refund_no, total_fen, refund_fen, reason, notify_url=""):
        sdk = await run_sync(self._client)
        answer = await self._call(
            lambda: sdk.api_alipay_trade_refund(
                fen_to_yuan(refund_fen),
                out_trade_no=order_no,
                out_request_no=refund_no,
                refund_reason=reason[:256],
            )
        )
        return RefundState(
            "succeeded",
            refund_no,
            amount_fen=refund_fen,
            finished_at=parse_beijing(str(answer.get("gmt_refund_pay") or ""), TIME),
        )

    async def query_refund(self, order_no: str, refund_no: str) -> RefundState:
        sdk = await run_sync(self._client)
        answer = await self._call(
            lambda: sdk.api_alipay_trade_fastpay_refund_query(refund_no, out_trade_no=order_no),
            accept=frozenset({"ACQ.TRADE_NOT_EXIST"}),
        )
        if not answer.get("refund_amount"):  # Alipay's answer for a refund it does not know
            return RefundState("not_found", refund_no)
        status = (
            "succeeded" if answer.get("refund_status", "REFUND_SUCCESS") == "REFUND_SUCCESS" else "processing"
        )
        return RefundState(
            status,
            refund_no,
            amount_fen=yuan_to_fen(answer["refund_amount"]),
            finished_at=parse_beijing(str(answer.get("gmt_refund_pay") or ""), TIME),
        )

    # --- callbacks ----------------------------------------------------------------------

    @classmethod
    def peek_callback(cls, headers: dict[str, str], body: bytes) -> CallbackHint:
        fields = _form(body)
        return CallbackHint(order_no=fields.get("out_trade_no", ""), merchant_id=fields.get("seller_id", ""))

    async def parse_callback(self, headers: dict[str, str], body: bytes) -> CallbackEvent:
        fields = _form(body)
        signature = fields.pop("sign", "")
        if not signature or fields.get("sign_type", "RSA2") != "RSA2":
            raise BadCallback("unsigned notification")
        try:
            verified = await run_sync(lambda: self._client().verify(dict(fields), signature))
        except (AliPayException, ValueError, TypeError):
            verified = False
        if not verified:
            raise BadCallback("signature does not verify")
        fields.pop("sign_type", None)
        if fields.get("app_id") != self.config.app_id or fields.get("seller_id", self.config.merchant_id) != (
            self.config.merchant_id
        ):
            raise BadCallback("notification for another merchant")
        order_no = fields.get("out_trade_no", "")
        try:
            if fields.get("out_biz_no") and fields.get("refund_fee"):
                return CallbackEvent(
                    refund=RefundState(
                        "succeeded",
                        fields["out_biz_no"],
                        finished_at=parse_beijing(fields.get("gmt_refund", "")[:19], TIME),
                    )
                )
            return CallbackEvent(payment=self._state(order_no, fields))
        except ValueError:
            raise BadCallback("notification fields unreadable") from None

    @classmethod
    def callback_reply(cls, accepted: bool) -> CallbackReply:
        return CallbackReply(200, "text/plain; charset=utf-8", b"success" if accepted else b"fail")

    # --- agreements and payment codes ------------------------------------------------------

    async def sign_agreement(self, payer_id: str) -> str:
        sdk = await run_sync(self._client)
        biz = {
            "personal_product_code": "GENERAL_WITHHOLDING_P",
            "sign_scene": "INDUSTRY|MEDICAL",
            "external_logon_id": payer_id,
            "external_agreement_no": secrets.token_hex(16),
        }
        answer = await self._call(lambda: sdk.server_api("alipay.user.agreement.sign", biz_content=biz))
        return field(answer, "agreement_no", CHANNEL)

    async def payment_token(self, agreement_id: str) -> str:
        sdk = await run_sync(self._client)
        answer = await self._call(
            lambda: sdk.server_api(
                "alipay.user.agreement.paycode.create", biz_content={"agreement_no": agreement_id}
            )
        )
        return field(answer, "pay_code", CHANNEL)

    # --- statements ---------------------------------------------------------------------

    async def download_bill(self, day: str) -> str:
        """The 业务明细 CSV of the day's trade bill (fetched as a zip of GBK files), decoded."""
        sdk = await run_sync(self._client)
        answer = await self._call(
            lambda: sdk.server_api(
                "alipay.data.dataservice.bill.downloadurl.query",
                biz_content={"bill_type": "trade", "bill_date": day},
            ),
            accept=frozenset({"isp.bill_not_exist"}),
        )
        if answer.get("sub_code") == "isp.bill_not_exist":
            return ""
        url = field(answer, "bill_download_url", CHANNEL)
        try:
            reply = await outbound.fetch(None, "GET", url, timeout_s=self.timeout)
            if reply.status_code != 200:
                raise unreachable(CHANNEL, f"bill file: HTTP {reply.status_code}")
            with zipfile.ZipFile(io.BytesIO(reply.content)) as archive:
                name = next(n for n in archive.namelist() if "业务明细" in n and "汇总" not in n)
                return archive.read(name).decode("gbk")
        except outbound.FAILURES as exc:
            raise unreachable(CHANNEL, f"bill file: {exc.__class__.__name__}") from None
        except (zipfile.BadZipFile, StopIteration, UnicodeDecodeError, KeyError):
            raise unreachable(CHANNEL, "bill file unreadable") from None

    def parse_bill(self, text: str) -> list[BillRecord]:
        """业务明细 rows: 交易 lines are payments, 退款 lines refunds (商家实收 negative)."""
        rows = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
        records = []
        for cells in csv.reader(rows[1:]):
            cells = [cell.strip() for cell in cells]
            if len(cells) < 23:
                continue
            at = parse_beijing(cells[5], TIME)
            received, fee = yuan_to_fen(cells[12]), -yuan_to_fen(cells[22] or "0")
            if cells[2] == "退款":
                records.append(
                    BillRecord(
                        "refund",
                        cells[1],
                        -received,
                        channel_trade_no=cells[0],
                        refund_no=cells[21],
                        fee_fen=fee,
                        status=cells[2],
                        at=at,
                    )
                )
            else:
                records.append(
                    BillRecord(
                        "payment",
                        cells[1],
                        received,
                        channel_trade_no=cells[0],
                        fee_fen=fee,
                        status=cells[2],
                        at=at,
                    )
                )
        return records


def _form(body: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        return {}
