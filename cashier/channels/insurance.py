"""Medical-insurance mobile pay (医保移动支付): the fund pays part, the insured the rest.

No public SDK or single national wire format exists for the platform's side, so the
protocol is this platform's own, JSON over HTTPS, shaped like the provincial gateways:

- request: ``POST <gateway>/api/v1/<name>`` with the JSON body
  ``{"app_id", "org_code", "timestamp" (Unix ms), "nonce", "data": {…}}`` and the header
  ``X-YB-Signature: hex(HMAC-SM3(hmac_key, raw body))`` (``hmac_key``: hex in the secrets);
- answer: ``{"code": "0" | error code, "message", "data": {…}}`` signed the same way in
  ``X-YB-Signature``; ``SYSTEM_BUSY`` means the outcome is unknown;
- notifications: a JSON POST ``{"event": "PAY_SUCCESS" | "REFUND_SUCCESS", "app_id",
  "org_code", "timestamp", "nonce", …}`` signed the same way; answered ``SUCCESS`` (HTTP 200).

Calls: ``orders`` (-> ``pay_url``, the page where the insured confirms with the 医保电子凭证:
``redirect`` action), ``orders/query``, ``orders/close``, ``micropay`` (``pay_code``),
``refunds``, ``refunds/query``, ``agreements`` (授权, -> ``agreement_id``), ``paycodes``
(-> ``pay_code``, 20 digits starting 91), ``bills`` (-> ``content``: CSV, UTF-8, header
``交易时间,交易类型,机构订单号,医保交易号,退款单号,医保退款号,金额(分),统筹支付(分),个人自付(分),手续费(分),状态``,
交易类型 ``支付`` or ``退款``, no fee). A paid order reports ``amount_fen``,
``insurance_fen`` (the fund) and ``self_pay_fen``, which must add up to ``amount_fen``.
Merchant config: ``app_id``, ``merchant_id`` (定点医药机构编码 org_code), ``gateway``.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import time
from datetime import datetime


from cardcore.crypto import constant_time_equal, hmac_sm3
from cashier.channels import register
from cashier.channels._common import field, http_post, refused, unreachable
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

CHANNEL = "insurance"
SIGNATURE_HEADER = "X-YB-Signature"
UNKNOWN_OUTCOME = {"SYSTEM_BUSY"}
ORDER_STATES = {"PAID": "paid", "PAYING": "paying", "CLOSED": "closed", "FAILED": "failed"}
REFUND_STATES = {"SUCCESS": "succeeded", "PROCESSING": "processing", "FAILED": "failed"}


def body_signature(key: bytes, body: bytes) -> str:
    return hmac_sm3(key, body).hex()


def _time(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _header(headers: dict[str, str], name: str) -> str:
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), "")


@register
class InsuranceChannel(Channel):
    code = CHANNEL
    methods = ("insurance",)

    def __init__(self, config: MerchantConfig, *, timeout: float = 10) -> None:
        super().__init__(config)
        self._key = bytes.fromhex(config.secrets["hmac_key"])
        self.timeout = timeout
        self.gateway = config.gateway.rstrip("/")

    def __repr__(self) -> str:
        return f"InsuranceChannel(org_code={self.config.merchant_id!r}, gateway={self.gateway!r})"

    async def _call(self, name: str, data: dict, *, accept: frozenset[str] = frozenset()) -> dict:
        body = json.dumps(
            {
                "app_id": self.config.app_id,
                "org_code": self.config.merchant_id,
                "timestamp": int(time.time() * 1000),
                "nonce": secrets.token_hex(16),
                "data": data,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        reply = await http_post(
            CHANNEL,
            f"{self.gateway}/api/v1/{name}",
            self.timeout,
            data=body,
            headers={
                "Content-Type": "application/json; charset=utf-8",
                SIGNATURE_HEADER: body_signature(self._key, body),
            },
        )
        try:
            answer = reply.json()
        except ValueError:
            raise unreachable(CHANNEL, f"unreadable answer (HTTP {reply.status_code})") from None
        if not isinstance(answer, dict) or "code" not in answer:
            raise unreachable(CHANNEL, "unreadable answer")
        signature = reply.headers.get(SIGNATURE_HEADER, "")
        if not signature:  # refused before the gateway knew whose call it was
            raise refused(CHANNEL, str(answer["code"]), str(answer.get("message", "")))
        if not constant_time_equal(signature, body_signature(self._key, reply.content)):
            raise unreachable(CHANNEL, "answer signature does not verify")
        code = str(answer["code"])
        if code == "0" or code in accept:
            return {"code": code, **(answer.get("data") or {})}
        if code in UNKNOWN_OUTCOME:
            raise unreachable(CHANNEL, f"{code}: {answer.get('message', '')}")
        raise refused(CHANNEL, code, str(answer.get("message", "")))

    # --- payments -----------------------------------------------------------------------

    def _order(self, request: PaymentRequest) -> dict:
        return {
            "out_trade_no": request.order_no,
            "amount_fen": request.amount_fen,
            "subject": request.subject,
            "notify_url": request.notify_url,
            "return_url": request.return_url,
            "expires_at": request.expires_at.isoformat(),
            "client_ip": request.client_ip,
            "insured_id": request.payer_id,
        }

    async def create_payment(self, request: PaymentRequest) -> PayAction:
        if request.method != "insurance":
            raise ValueError(f"medical insurance does not serve {request.method}")
        answer = await self._call("orders", self._order(request))
        return PayAction("redirect", {"url": field(answer, "pay_url", CHANNEL)})

    async def micropay(self, request: PaymentRequest, auth_code: str) -> PaymentState:
        answer = await self._call("micropay", {**self._order(request), "pay_code": auth_code})
        return self._state(request.order_no, answer)

    async def query(self, order_no: str) -> PaymentState:
        answer = await self._call(
            "orders/query", {"out_trade_no": order_no}, accept=frozenset({"ORDER_NOT_FOUND"})
        )
        if answer["code"] == "ORDER_NOT_FOUND":
            return PaymentState("not_found", order_no)
        return self._state(order_no, answer)

    @staticmethod
    def _state(order_no: str, data: dict) -> PaymentState:
        status = ORDER_STATES.get(str(data.get("status", "")))
        if status is None:
            raise unreachable(CHANNEL, f"unknown order status {data.get('status')!r}")
        if status != "paid":
            return PaymentState(status, order_no, amount_fen=data.get("amount_fen"))
        amount, fund, own = data.get("amount_fen"), data.get("insurance_fen"), data.get("self_pay_fen")
        if not all(isinstance(x, int) and x >= 0 for x in (amount, fund, own)) or fund + own != amount:
            raise ValueError("insurance split does not add up")
        return PaymentState(
            "paid",
            order_no,
            amount_fen=amount,
            channel_trade_no=str(data.get("trade_no", "")),
            paid_at=_time(data.get("paid_at")),
            insurance_fen=fund,
            self_pay_fen=own,
        )

    async def close(self, order_no: str) -> None:
        await self._call("orders/close", {"out_trade_no": order_no}, accept=frozenset({"ORDER_NOT_FOUND"}))

    # --- refunds ------------------------------------------------------------------------

    async def refund(self, order_no, refund_no, total_fen, refund_fen, reason, notify_url=""):
        answer = await self._call(
            "refunds",
            {
                "out_trade_no": order_no,
                "out_refund_no": refund_no,
                "total_fen": total_fen,
                "refund_fen": refund_fen,
                "reason": reason,
                "notify_url": notify_url,
            },
        )
        return self._refund_state(refund_no, answer)

    async def query_refund(self, order_no: str, refund_no: str) -> RefundState:
        answer = await self._call(
            "refunds/query",
            {"out_trade_no": order_no, "out_refund_no": refund_no},
            accept=frozenset({"REFUND_NOT_FOUND", "ORDER_NOT_FOUND"}),
        )
        if answer["code"] != "0":
            return RefundState("not_found", refund_no)
        return self._refund_state(refund_no, answer)

    @staticmethod
    def _refund_state(refund_no: str, data: dict) -> RefundState:
        status = REFUND_STATES.get(str(data.get("status", "")), "processing")
        amount = data.get("refund_fen")
        return RefundState(
            status,
            refund_no,
            amount_fen=amount if isinstance(amount, int) else None,
            channel_refund_no=str(data.get("refund_id", "")),
            finished_at=_time(data.get("finished_at")),
        )

    # --- callbacks ----------------------------------------------------------------------

    @classmethod
    def peek_callback(cls, headers: dict[str, str], body: bytes) -> CallbackHint:
        try:
            data = json.loads(body)
        except ValueError:
            return CallbackHint()
        if not isinstance(data, dict):
            return CallbackHint()
        return CallbackHint(
            order_no=str(data.get("out_trade_no", "")), merchant_id=str(data.get("org_code", ""))
        )

    async def parse_callback(self, headers: dict[str, str], body: bytes) -> CallbackEvent:
        if not constant_time_equal(_header(headers, SIGNATURE_HEADER), body_signature(self._key, body)):
            raise BadCallback("signature does not verify")
        try:
            data = json.loads(body)
            if data.get("org_code") != self.config.merchant_id or data.get("app_id") != self.config.app_id:
                raise BadCallback("notification for another institution")
            if data.get("event") == "PAY_SUCCESS":
                return CallbackEvent(payment=self._state(data["out_trade_no"], {**data, "status": "PAID"}))
            if data.get("event") == "REFUND_SUCCESS":
                return CallbackEvent(
                    refund=self._refund_state(data["out_refund_no"], {**data, "status": "SUCCESS"})
                )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise BadCallback("notification unreadable") from None
        raise BadCallback("unknown notification event")

    @classmethod
    def callback_reply(cls, accepted: bool) -> CallbackReply:
        return CallbackReply(200, "text/plain; charset=utf-8", b"SUCCESS" if accepted else b"FAIL")

    # --- agreements and payment codes ------------------------------------------------------

    async def sign_agreement(self, payer_id: str) -> str:
        return field(await self._call("agreements", {"payer_id": payer_id}), "agreement_id", CHANNEL)

    async def payment_token(self, agreement_id: str) -> str:
        return field(await self._call("paycodes", {"agreement_id": agreement_id}), "pay_code", CHANNEL)

    # --- statements ---------------------------------------------------------------------

    async def download_bill(self, day: str) -> str:
        answer = await self._call("bills", {"bill_date": day}, accept=frozenset({"BILL_NOT_FOUND"}))
        return "" if answer["code"] == "BILL_NOT_FOUND" else field(answer, "content", CHANNEL)

    def parse_bill(self, text: str) -> list[BillRecord]:
        records = []
        for row in list(csv.reader(io.StringIO(text)))[1:]:
            if len(row) < 11:
                continue
            at, kind, order_no, trade_no, refund_no, refund_id, amount, fund, _own, fee, status = row[:11]
            if kind == "退款":
                records.append(
                    BillRecord(
                        "refund",
                        order_no,
                        int(amount),
                        channel_trade_no=trade_no,
                        refund_no=refund_no,
                        channel_refund_no=refund_id,
                        fee_fen=int(fee),
                        status=status,
                        at=_time(at),
                        insurance_fen=int(fund),
                    )
                )
            else:
                records.append(
                    BillRecord(
                        "payment",
                        order_no,
                        int(amount),
                        channel_trade_no=trade_no,
                        fee_fen=int(fee),
                        status=status,
                        at=_time(at),
                        insurance_fen=int(fund),
                    )
                )
        return records
