"""UnionPay online/mobile gateway (全渠道, field layout of version 5.1.0), over HTTP (cardcore.outbound).

Every message is a form (``application/x-www-form-urlencoded``) of UnionPay's fields plus
``signMethod=01``, ``certId`` (the decimal serial number of the signer's certificate) and
``signature``: the fields but ``signature``, sorted, joined as ``k=v&…``; its SHA-256 in
lower-case hex is signed SHA256withRSA (PKCS#1 v1.5) and base64-encoded. Requests are
signed with the merchant's key; answers and notifications carry the certId of UnionPay's
certificate (``verify_cert``), which checks them. Amounts (``txnAmt``) are fen.

Merchant config: ``merchant_id`` (merId), ``gateway`` (base URL; paths ``/gateway/api/…``),
``secrets``: ``sign_key`` (PEM private key), ``sign_cert`` (its certificate), ``verify_cert``.

- pay (method ``unionpay``): ``frontTransReq.do`` txnType 01/01, the browser posts the
  signed form -> ``redirect`` action with ``method: POST`` and ``fields``; ``backUrl`` is
  the async notification (answered ``ok``, HTTP 200), ``frontUrl`` the return page,
  ``payTimeout`` the order's expiry;
- micropay: ``backTransReq.do`` txnType 01/06 with ``qrNo`` (payment code), then a query;
- query: ``queryTrans.do`` txnType 00 by ``orderId`` and the original ``txnTime``
  (UnionPay names a transaction by both; a query with another time finds nothing, respCode
  34): ``origRespCode`` 00 paid, 03/04/05 in progress, anything else closed. So that the
  time is the same whenever a transaction is named, a payment's or refund's ``txnTime`` is
  read from its number, which starts with its issue time (``base.issued_at``). Answers
  and notifications carry that original ``txnTime``; when the transaction went through is
  ``traceTime`` (MMDDhhmmss, Beijing, no year: ``settled_at``);
- close: UnionPay has no close for unpaid orders (they lapse at ``payTimeout``); the
  adapter sends 消费撤销 txnType 31 without ``origQryId``, which the mock takes as closing
  an unpaid order and refuses (respCode 12) for a paid one;
- refund: ``backTransReq.do`` txnType 04 with ``origQryId`` (queried first) and the
  refund's own ``orderId``; the outcome comes by notification or by querying that orderId;
- agreements (simplified): txnType 79 (开通, bizType 000902) -> ``tokenPayData`` {token};
  payment code: txnType 77 (C2B 码申请, simplified) with the token -> ``qrNo`` (19 digits);
- bill: ``fileTransfer.do`` txnType 76, ``settleDate`` MMDD -> ``fileContent``: base64 of a
  zip holding one UTF-8 text file: a ``#`` header, then lines
  ``txnType|orderId|origOrderId|queryId|txnAmt|fee|txnTime|respCode`` (fee in fen, 0.6 %).
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from datetime import datetime
from urllib.parse import parse_qsl

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from cashier.channels import register
from cashier.channels._common import BEIJING, beijing, http_post, parse_beijing, refused, unreachable
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
    issued_at,
)

CHANNEL = "unionpay"
TIME = "%Y%m%d%H%M%S"
VERSION = "5.1.0"
IN_PROGRESS = {"03", "04", "05"}  # 交易状态未明 / 处理中: ask again later
FRONT, BACK, QUERY, FILE = "frontTransReq.do", "backTransReq.do", "queryTrans.do", "fileTransfer.do"


def txn_time(number: str) -> str:
    """``txnTime`` of the transaction named ``number``: when the number was issued, Beijing
    time; now for a number that does not say (UnionPay then knows it only by the answer)."""
    moment = issued_at(number)
    return (beijing(moment) if moment else datetime.now(BEIJING)).strftime(TIME)


def settled_at(fields: dict[str, str]) -> datetime | None:
    """When UnionPay put the transaction through: ``traceTime`` (MMDDhhmmss, Beijing) in the
    year of the ``txnTime`` it was sent with, or the next one when it went through after New
    Year's Eve. ``txnTime`` alone when there is no readable ``traceTime``."""
    sent_at = parse_beijing(fields.get("txnTime", ""), TIME)
    trace = fields.get("traceTime", "")
    if sent_at is None or len(trace) != 10 or not trace.isdigit():
        return sent_at
    for year in (sent_at.year, sent_at.year + 1):
        at = parse_beijing(f"{year}{trace}", TIME)  # None for 29 February of a common year
        if at is not None and at >= sent_at:
            return at
    return sent_at


def signing_text(fields: dict[str, str]) -> str:
    return "&".join(f"{k}={v}" for k, v in sorted(fields.items()) if k != "signature")


def sign(private_key, fields: dict[str, str]) -> str:
    digest = hashlib.sha256(signing_text(fields).encode()).hexdigest().encode()
    return base64.b64encode(private_key.sign(digest, padding.PKCS1v15(), hashes.SHA256())).decode()


def signature_ok(public_key, fields: dict[str, str]) -> bool:
    try:
        digest = hashlib.sha256(signing_text(fields).encode()).hexdigest().encode()
        public_key.verify(
            base64.b64decode(fields.get("signature", ""), validate=True),
            digest,
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        return True
    except (InvalidSignature, ValueError):
        return False


def cert_id(certificate: x509.Certificate) -> str:
    return str(certificate.serial_number)


def parse_form(body: bytes | str) -> dict[str, str]:
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    return dict(parse_qsl(text, keep_blank_values=True))


@register
class UnionPayChannel(Channel):
    code = CHANNEL
    methods = ("unionpay",)

    def __init__(self, config: MerchantConfig, *, timeout: float = 10) -> None:
        super().__init__(config)
        secrets = config.secrets
        self._key = serialization.load_pem_private_key(secrets["sign_key"].encode(), password=None)
        self._cert_id = cert_id(x509.load_pem_x509_certificate(secrets["sign_cert"].encode()))
        verify_cert = x509.load_pem_x509_certificate(secrets["verify_cert"].encode())
        self._verify_key, self._verify_cert_id = verify_cert.public_key(), cert_id(verify_cert)
        self.timeout = timeout
        self.gateway = config.gateway.rstrip("/")

    def __repr__(self) -> str:
        return f"UnionPayChannel(merId={self.config.merchant_id!r}, gateway={self.gateway!r})"

    def _signed(self, fields: dict[str, str]) -> dict[str, str]:
        fields = {
            "version": VERSION,
            "encoding": "UTF-8",
            "signMethod": "01",
            "certId": self._cert_id,
            "accessType": "0",
            "merId": self.config.merchant_id,
            "currencyCode": "156",
            "txnTime": datetime.now(BEIJING).strftime(TIME),
            **fields,
        }
        fields = {k: str(v) for k, v in fields.items() if v not in (None, "")}
        fields["signature"] = sign(self._key, fields)
        return fields

    def _verified(self, fields: dict[str, str]) -> bool:
        return fields.get("certId") == self._verify_cert_id and signature_ok(self._verify_key, fields)

    async def _post(self, path: str, fields: dict, *, accept: frozenset[str] = frozenset()) -> dict[str, str]:
        """A signed back-end call; the verified answer when respCode is 00 (or in ``accept``)."""
        url = f"{self.gateway}/gateway/api/{path}"
        reply = await http_post(CHANNEL, url, self.timeout, data=self._signed(fields))
        if reply.status_code != 200:
            raise unreachable(CHANNEL, f"HTTP {reply.status_code}")
        answer = parse_form(reply.content)
        if not answer.get("respCode"):
            raise unreachable(CHANNEL, "unreadable answer")
        if not self._verified(answer):
            if answer["respCode"] != "00" and "signature" not in answer:  # refused before it knew us
                raise refused(CHANNEL, answer["respCode"], answer.get("respMsg", ""))
            raise unreachable(CHANNEL, "answer signature does not verify")
        code = answer["respCode"]
        if code == "00" or code in accept:
            return answer
        if code in IN_PROGRESS:
            raise unreachable(CHANNEL, f"{code}: {answer.get('respMsg', '')}")
        raise refused(CHANNEL, code, answer.get("respMsg", ""))

    # --- payments -----------------------------------------------------------------------

    async def create_payment(self, request: PaymentRequest) -> PayAction:
        if request.method != "unionpay":
            raise ValueError(f"UnionPay does not serve {request.method}")
        fields = self._signed(
            {
                "txnType": "01",
                "txnSubType": "01",
                "bizType": "000201",
                "channelType": "08",
                "orderId": request.order_no,
                "txnTime": txn_time(request.order_no),
                "txnAmt": request.amount_fen,
                "frontUrl": request.return_url,
                "backUrl": request.notify_url,
                "payTimeout": beijing(request.expires_at).strftime(TIME),
                "riskRateInfo": "{commodityName="
                + request.subject[:60].replace("&", " ").replace("}", " ")
                + "}",
            }
        )
        return PayAction(
            "redirect", {"url": f"{self.gateway}/gateway/api/{FRONT}", "method": "POST", "fields": fields}
        )

    async def micropay(self, request: PaymentRequest, auth_code: str) -> PaymentState:
        await self._post(
            BACK,
            {
                "txnType": "01",
                "txnSubType": "06",
                "bizType": "000000",
                "channelType": "08",
                "orderId": request.order_no,
                "txnTime": txn_time(request.order_no),
                "txnAmt": request.amount_fen,
                "qrNo": auth_code,
                "backUrl": request.notify_url,
                "termId": "00000001",
            },
        )
        return await self.query(request.order_no)  # accepted; the charge's outcome is queried

    async def query(self, order_no: str) -> PaymentState:
        answer = await self._query(order_no)
        if answer is None:
            return PaymentState("not_found", order_no)
        return self._state(order_no, answer, answer.get("origRespCode", ""))

    async def _query(self, order_no: str) -> dict | None:
        answer = await self._post(
            QUERY,
            {
                "txnType": "00",
                "txnSubType": "00",
                "bizType": "000000",
                "orderId": order_no,
                "txnTime": txn_time(order_no),
            },
            accept=frozenset({"34"}),
        )
        return None if answer["respCode"] == "34" else answer

    @staticmethod
    def _state(order_no: str, fields: dict, result: str) -> PaymentState:
        status = "paid" if result == "00" else "paying" if result in IN_PROGRESS else "closed"
        amount = int(fields["txnAmt"]) if fields.get("txnAmt", "").isdigit() else None
        paid = status == "paid"
        return PaymentState(
            status,
            order_no,
            amount_fen=amount,
            channel_trade_no=fields.get("queryId", ""),
            paid_at=settled_at(fields) if paid else None,
            self_pay_fen=amount if paid else None,
        )

    async def close(self, order_no: str) -> None:
        await self._post(
            BACK,
            {
                "txnType": "31",
                "txnSubType": "00",
                "bizType": "000201",
                "channelType": "08",
                "orderId": f"C{order_no}"[:40],
                "origOrderId": order_no,
                "txnAmt": "0",
            },
            accept=frozenset({"34"}),
        )

    # --- refunds ------------------------------------------------------------------------

    async def refund(self, order_no, refund_no, total_fen, refund_fen, reason, notify_url=""):
        original = await self._query(order_no)
        if original is None or original.get("origRespCode") != "00":
            raise refused(CHANNEL, "35", "原交易不存在或状态不正确")
        answer = await self._post(
            BACK,
            {
                "txnType": "04",
                "txnSubType": "00",
                "bizType": "000201",
                "channelType": "08",
                "orderId": refund_no,
                "txnTime": txn_time(refund_no),
                "origQryId": original["queryId"],
                "txnAmt": refund_fen,
                "backUrl": notify_url,
            },
            accept=frozenset({"12"}),
        )
        if answer["respCode"] == "12":  # this refund number was sent before: report that refund
            state = await self.query_refund(order_no, refund_no)
            if state.amount_fen != refund_fen:
                raise refused(CHANNEL, "12", "重复交易")
            return state
        return RefundState(
            "processing", refund_no, amount_fen=refund_fen, channel_refund_no=answer.get("queryId", "")
        )

    async def query_refund(self, order_no: str, refund_no: str) -> RefundState:
        answer = await self._query(refund_no)
        if answer is None or answer.get("txnType") != "04":
            return RefundState("not_found", refund_no)
        return self._refund_state(refund_no, answer, answer.get("origRespCode", ""))

    @staticmethod
    def _refund_state(refund_no: str, fields: dict, result: str) -> RefundState:
        status = "succeeded" if result == "00" else "processing" if result in IN_PROGRESS else "failed"
        return RefundState(
            status,
            refund_no,
            amount_fen=int(fields["txnAmt"]) if fields.get("txnAmt", "").isdigit() else None,
            channel_refund_no=fields.get("queryId", ""),
            finished_at=settled_at(fields) if status == "succeeded" else None,
        )

    # --- callbacks ----------------------------------------------------------------------

    @classmethod
    def peek_callback(cls, headers: dict[str, str], body: bytes) -> CallbackHint:
        try:
            fields = parse_form(body)
        except (UnicodeDecodeError, ValueError):
            return CallbackHint()
        order_no = (
            fields.get("orderId", "") if fields.get("txnType") == "01" else ""
        )  # a refund names its own id
        return CallbackHint(order_no=order_no, merchant_id=fields.get("merId", ""))

    async def parse_callback(self, headers: dict[str, str], body: bytes) -> CallbackEvent:
        try:
            fields = parse_form(body)
        except (UnicodeDecodeError, ValueError):
            raise BadCallback("not a UnionPay notification") from None
        if not self._verified(fields):
            raise BadCallback("signature does not verify")
        if fields.get("merId") != self.config.merchant_id:
            raise BadCallback("notification for another merchant")
        try:
            if fields.get("txnType") == "04":
                return CallbackEvent(
                    refund=self._refund_state(fields["orderId"], fields, fields.get("respCode", ""))
                )
            if fields.get("txnType") == "01":
                return CallbackEvent(
                    payment=self._state(fields["orderId"], fields, fields.get("respCode", ""))
                )
        except (KeyError, ValueError):
            raise BadCallback("notification fields unreadable") from None
        raise BadCallback("not a payment or refund notification")

    @classmethod
    def callback_reply(cls, accepted: bool) -> CallbackReply:
        # UnionPay takes HTTP 200 as received; anything else is sent again.
        return CallbackReply(
            200 if accepted else 400, "text/plain; charset=utf-8", b"ok" if accepted else b"fail"
        )

    # --- agreements and payment codes ------------------------------------------------------

    async def sign_agreement(self, payer_id: str) -> str:
        answer = await self._post(
            BACK,
            {
                "txnType": "79",
                "txnSubType": "00",
                "bizType": "000902",
                "channelType": "08",
                "orderId": "A"
                + hashlib.sha256(f"{payer_id}{datetime.now().timestamp()}".encode()).hexdigest()[:30],
                "customerInfo": "{" + f"customerNm={payer_id[:40]}" + "}",
                "tokenPayData": "{trId=62000000001&tokenType=01}",
            },
        )
        token = parse_form(answer.get("tokenPayData", "").strip("{}")).get("token", "")
        if not token:
            raise unreachable(CHANNEL, "answer without token")
        return token

    async def payment_token(self, agreement_id: str) -> str:
        answer = await self._post(
            BACK,
            {
                "txnType": "77",
                "txnSubType": "01",
                "bizType": "000000",
                "channelType": "08",
                "tokenPayData": "{token=" + agreement_id + "}",
            },
        )
        if not answer.get("qrNo"):
            raise unreachable(CHANNEL, "answer without qrNo")
        return answer["qrNo"]

    # --- statements ---------------------------------------------------------------------

    async def download_bill(self, day: str) -> str:
        answer = await self._post(
            FILE,
            {
                "txnType": "76",
                "txnSubType": "01",
                "bizType": "000000",
                "fileType": "00",
                "settleDate": day[5:7] + day[8:10],
            },
            accept=frozenset({"98"}),
        )
        if answer["respCode"] == "98":  # 文件不存在: nothing settled that day
            return ""
        try:
            with zipfile.ZipFile(io.BytesIO(base64.b64decode(answer["fileContent"]))) as archive:
                return archive.read(archive.namelist()[0]).decode("utf-8")
        except (KeyError, ValueError, IndexError, zipfile.BadZipFile, UnicodeDecodeError):
            raise unreachable(CHANNEL, "settlement file unreadable") from None

    def parse_bill(self, text: str) -> list[BillRecord]:
        records = []
        for line in text.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            txn_type, order_id, orig_order_id, query_id, amount, fee, time_text, resp = line.split("|")[:8]
            at = parse_beijing(time_text, TIME)
            if txn_type == "04":
                records.append(
                    BillRecord(
                        "refund",
                        orig_order_id,
                        int(amount),
                        refund_no=order_id,
                        channel_refund_no=query_id,
                        fee_fen=int(fee),
                        status=resp,
                        at=at,
                    )
                )
            else:
                records.append(
                    BillRecord(
                        "payment",
                        order_id,
                        int(amount),
                        channel_trade_no=query_id,
                        fee_fen=int(fee),
                        status=resp,
                        at=at,
                    )
                )
        return records
