"""WeChat Pay, API v2 (XML, MD5 or HMAC-SHA256 signatures), through wechatpy's ``WeChatPay``.

Merchant config: ``app_id`` (official account), ``merchant_id`` (mch_id), ``gateway`` (API base
URL, e.g. ``https://api.mch.weixin.qq.com/``), ``secrets``: ``api_key``, ``sign_type``
(``MD5`` default, or ``HMAC-SHA256``), ``mini_app_id`` (for ``wechat_mini``), ``mch_cert`` and
``mch_key`` (PEM of the merchant API certificate, needed for refunds).

Methods: ``wechat_jsapi`` / ``wechat_mini`` (unifiedorder JSAPI with the payer's openid ->
``jsapi`` action with the signed parameters for ``WeixinJSBridge`` / ``wx.requestPayment``),
``wechat_h5`` (MWEB -> ``redirect`` to ``mweb_url`` with ``redirect_url``). Answers are checked
against their signature (wechatpy does not), with the sign type of the request.

Client certificate: wechatpy hands ``(mch_cert, mch_key)`` file paths to requests, which
presents them only on https; over plain http (the mock) the files must still exist but are
not used. The PEM texts from the sealed secrets are therefore written once, 0600, into a
private directory and given only to the client used for ``secapi/`` calls; an https gateway
without a certificate is refused before any call.

Payment agreements (simplified from papay 委托代扣): ``papay/contract/sign`` {openid} ->
``contract_id``; ``pay/authcode/issue`` {contract_id} -> ``auth_code``, an 18-digit payment
code charged with ``pay/micropay``. Both are signed like every other call.
"""

from __future__ import annotations

import base64
import csv
import functools
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

import requests
import xmltodict
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from wechatpy.exceptions import WeChatPayException
from wechatpy.pay import WeChatPay
from wechatpy.pay.utils import calculate_signature, calculate_signature_hmac
from wechatpy.utils import random_string

from cardcore.crypto import constant_time_equal
from cardcore.providers._threads import run_sync
from cashier.channels import register
from cashier.channels._common import (
    BEIJING,
    GatewaySession,
    beijing,
    create_once,
    field,
    parse_beijing,
    refused,
    unreachable,
    yuan_to_fen,
    yuan_to_fen_rounded,
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

CHANNEL = "wechat"
SIGN_TYPES = ("MD5", "HMAC-SHA256")
# err_codes after which the outcome is unknown: query before deciding.
UNKNOWN_OUTCOME = {"SYSTEMERROR", "BANKERROR"}
TRADE_STATES = {
    "SUCCESS": "paid",
    "REFUND": "paid",  # paid, with refunds since
    "NOTPAY": "paying",
    "USERPAYING": "paying",
    "CLOSED": "closed",
    "REVOKED": "closed",
    "PAYERROR": "failed",
}
REFUND_STATES = {
    "SUCCESS": "succeeded",
    "PROCESSING": "processing",
    "REFUNDCLOSE": "failed",
    "CHANGE": "failed",
}


def sign(params: dict, api_key: str, sign_type: str = "MD5") -> str:
    """WeChat Pay v2 signature of the non-empty parameters except ``sign``."""
    fields = {k: v for k, v in params.items() if k != "sign" and v not in (None, "")}
    if sign_type == "HMAC-SHA256":
        return calculate_signature_hmac(fields, api_key)
    return calculate_signature(fields, api_key)


def refund_info_key(api_key: str) -> bytes:
    """The AES-256 key of a refund notification's ``req_info``: lower-case hex MD5 of the API key."""
    return hashlib.md5(api_key.encode()).hexdigest().encode()


def decrypt_req_info(api_key: str, req_info: str) -> dict:
    """The ``<root>`` fields of a refund notification (AES-256-ECB, PKCS#7, base64)."""
    try:
        data = base64.b64decode(req_info, validate=True)
        decryptor = Cipher(algorithms.AES(refund_info_key(api_key)), modes.ECB()).decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= 16 or plain[-pad:] != bytes([pad]) * pad:
            raise ValueError("bad padding")
        return read_fields(plain[:-pad], root="root")
    except Exception as exc:  # noqa: BLE001 - anything unreadable is a forged or broken callback
        raise BadCallback("refund notification cannot be decrypted") from exc


class _InvalidAnswer(Exception):
    """An answer whose signature does not verify."""


class _Pay(WeChatPay):
    """wechatpy's client, with the merchant's sign type on every call and signed answers checked."""

    def __init__(self, *args, sign_type: str = "MD5", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sign_type = sign_type

    def _request(self, method, url_or_endpoint, **kwargs):
        if isinstance(kwargs.get("data"), dict):
            kwargs["data"]["sign_type"] = self.sign_type
        return super()._request(method, url_or_endpoint, **kwargs)

    def _handle_result(self, res):
        try:
            data = super()._handle_result(res)  # the answer's fields, or its text when not XML (a bill)
        except WeChatPayException:
            # A refusal is signed too; read it again only then (rare), not every answer twice.
            self._verify(xmltodict.parse(res.text)["xml"])
            raise
        self._verify(data)
        return data

    def _verify(self, data) -> None:
        if isinstance(data, dict) and data.get("return_code") == "SUCCESS" and "sign" in data:
            if not constant_time_equal(data["sign"] or "", sign(data, self.api_key, self.sign_type)):
                raise _InvalidAnswer()


_cert_lock = threading.Lock()


def _certificate_files(cert_pem: str, key_pem: str) -> tuple[str, str]:
    """The certificate and key as files (0600) in a private directory, written once per content."""
    digest = hashlib.sha256((cert_pem + "\0" + key_pem).encode()).hexdigest()[:24]
    directory = Path(tempfile.gettempdir()) / f"ehc-wechatpay-{os.getuid()}"
    with _cert_lock:
        directory.mkdir(mode=0o700, exist_ok=True)
        if directory.stat().st_uid != os.getuid() or directory.stat().st_mode & 0o077:
            raise PermissionError(f"{directory} is not private")
        cert = directory / f"{digest}.crt.pem"
        key = directory / f"{digest}.key.pem"
        create_once(cert, cert_pem.encode)
        create_once(key, key_pem.encode)
    return str(cert), str(key)


@register
class WeChatChannel(Channel):
    code = CHANNEL
    methods = ("wechat_jsapi", "wechat_mini", "wechat_h5")

    def __init__(self, config: MerchantConfig, *, timeout: float = 10) -> None:
        super().__init__(config)
        secrets = config.secrets
        self.api_key = secrets["api_key"]
        self.sign_type = secrets.get("sign_type") or "MD5"
        if self.sign_type not in SIGN_TYPES:
            raise ValueError(f"WeChat Pay sign_type is one of {', '.join(SIGN_TYPES)}")
        self.mini_app_id = secrets.get("mini_app_id") or ""
        self.timeout = timeout
        self.gateway = config.gateway if config.gateway.endswith("/") else config.gateway + "/"
        self._clients: dict[tuple[str, bool], _Pay] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"WeChatChannel(mch_id={self.config.merchant_id!r}, gateway={self.gateway!r})"

    def _client(self, app_id: str = "", with_certificate: bool = False) -> _Pay:
        app_id = app_id or self.config.app_id
        with self._lock:
            client = self._clients.get((app_id, with_certificate))
            if client is None:
                cert = key = None
                if with_certificate:
                    cert_pem, key_pem = (
                        self.config.secrets.get("mch_cert"),
                        self.config.secrets.get("mch_key"),
                    )
                    if cert_pem and key_pem:
                        cert, key = _certificate_files(cert_pem, key_pem)
                    elif self.gateway.startswith("https://"):
                        raise refused(CHANNEL, "CERT_MISSING", "no merchant API certificate configured")
                client = _Pay(
                    app_id,
                    self.api_key,
                    self.config.merchant_id,
                    sub_mch_id=self.config.sub_merchant_id or None,
                    mch_cert=cert,
                    mch_key=key,
                    timeout=self.timeout,
                    sign_type=self.sign_type,
                )
                client.API_BASE_URL = self.gateway
                client._http = GatewaySession(self.gateway, cert=(cert, key) if cert else None)
                self._clients[(app_id, with_certificate)] = client
            return client

    async def _call(self, fn, *, accept: frozenset[str] = frozenset(), text: bool = False):
        """Run one SDK call; map failures. err_codes in ``accept`` come back as ``{"err_code": …}``;
        an answer that is not XML is the answer only with ``text`` (a bill file)."""
        try:
            answer = await run_sync(fn)
        except WeChatPayException as exc:
            if exc.return_code is None:  # HTTP error status
                raise unreachable(CHANNEL, f"HTTP {getattr(exc.response, 'status_code', '?')}") from None
            # a business refusal has an err_code; a refused call (signature, parameters) only a return_msg
            code = exc.errcode or exc.return_msg or exc.return_code
            if code in accept:
                return {"err_code": code}
            if code in UNKNOWN_OUTCOME:
                raise unreachable(CHANNEL, f"{code}: {exc.errmsg or ''}") from None
            raise refused(CHANNEL, str(code), str(exc.errmsg or exc.return_msg or "")) from None
        except _InvalidAnswer:
            raise unreachable(CHANNEL, "answer signature does not verify") from None
        except (requests.RequestException, OSError) as exc:
            raise unreachable(CHANNEL, exc.__class__.__name__) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise unreachable(CHANNEL, f"unreadable answer: {exc.__class__.__name__}") from None
        if not isinstance(answer, dict) and not (text and isinstance(answer, str)):
            raise unreachable(CHANNEL, "unreadable answer")
        return answer

    # --- payments -----------------------------------------------------------------------

    async def create_payment(self, request: PaymentRequest) -> PayAction:
        if request.method not in self.methods:
            raise ValueError(f"WeChat Pay does not serve {request.method}")
        app_id = self.mini_app_id if request.method == "wechat_mini" else self.config.app_id
        client = self._client(app_id)
        start = datetime.now(BEIJING)
        common = dict(
            body=request.subject[:40],
            total_fee=request.amount_fen,
            notify_url=request.notify_url,
            client_ip=request.client_ip,
            out_trade_no=request.order_no,
            time_start=start,
            time_expire=beijing(request.expires_at),
        )
        if request.method == "wechat_h5":
            scene = {
                "h5_info": {"type": "Wap", "wap_url": request.return_url, "wap_name": request.subject[:32]}
            }
            answer = await self._call(lambda: client.order.create("MWEB", scene_info=scene, **common))
            url = answer.get("mweb_url") or ""
            if not url:
                raise unreachable(CHANNEL, "answer without mweb_url")
            if request.return_url:
                url += ("&" if "?" in url else "?") + "redirect_url=" + quote(request.return_url, safe="")
            return PayAction("redirect", {"url": url})
        answer = await self._call(
            lambda: client.order.create("JSAPI", user_id=request.payer_id or None, **common)
        )
        prepay_id = answer.get("prepay_id") or ""
        if not prepay_id:
            raise unreachable(CHANNEL, "answer without prepay_id")
        return PayAction("jsapi", self.jsapi_parameters(app_id, prepay_id))

    def jsapi_parameters(self, app_id: str, prepay_id: str) -> dict:
        """What ``WeixinJSBridge.invoke('getBrandWCPayRequest', …)`` / ``wx.requestPayment`` take."""
        params = {
            "appId": app_id,
            "timeStamp": str(int(time.time())),
            "nonceStr": random_string(32),
            "package": f"prepay_id={prepay_id}",
            "signType": self.sign_type,
        }
        params["paySign"] = sign(params, self.api_key, self.sign_type)
        return params

    async def micropay(self, request: PaymentRequest, auth_code: str) -> PaymentState:
        client = self._client()
        answer = await self._call(
            lambda: client.micropay.create(
                body=request.subject[:40],
                total_fee=request.amount_fen,
                auth_code=auth_code,
                client_ip=request.client_ip,
                out_trade_no=request.order_no,
            ),
            accept=frozenset({"USERPAYING"}),
        )
        if answer.get("err_code") == "USERPAYING":
            return PaymentState("paying", request.order_no)
        return self._state(request.order_no, {**answer, "trade_state": "SUCCESS"})

    async def query(self, order_no: str) -> PaymentState:
        client = self._client()
        answer = await self._call(
            lambda: client.order.query(out_trade_no=order_no), accept=frozenset({"ORDERNOTEXIST"})
        )
        if answer.get("err_code") == "ORDERNOTEXIST":
            return PaymentState("not_found", order_no)
        return self._state(order_no, answer)

    @staticmethod
    def _state(order_no: str, answer: dict) -> PaymentState:
        status = TRADE_STATES.get(answer.get("trade_state", ""))
        if status is None:
            raise unreachable(CHANNEL, f"unknown trade_state {answer.get('trade_state')!r}")
        paid = status == "paid"
        return PaymentState(
            status,
            order_no,
            amount_fen=int(answer["total_fee"]) if answer.get("total_fee") else None,
            channel_trade_no=answer.get("transaction_id") or "",
            paid_at=parse_beijing(answer.get("time_end") or "", "%Y%m%d%H%M%S") if paid else None,
            self_pay_fen=int(answer["total_fee"]) if paid and answer.get("total_fee") else None,
        )

    async def close(self, order_no: str) -> None:
        client = self._client()
        await self._call(
            lambda: client.order.close(order_no), accept=frozenset({"ORDERNOTEXIST", "ORDERCLOSED"})
        )

    # --- agreements and payment codes ------------------------------------------------------

    async def sign_agreement(self, payer_id: str) -> str:
        client = self._client()
        data = {"appid": client.appid, "openid": payer_id, "contract_code": random_string(32)}
        answer = await self._call(lambda: client.post("papay/contract/sign", data=data))
        return field(answer, "contract_id", CHANNEL)

    async def payment_token(self, agreement_id: str) -> str:
        client = self._client()
        answer = await self._call(
            lambda: client.post(
                "pay/authcode/issue", data={"appid": client.appid, "contract_id": agreement_id}
            )
        )
        return field(answer, "auth_code", CHANNEL)

    # --- refunds ------------------------------------------------------------------------

    async def refund(self, order_no, refund_no, total_fen, refund_fen, reason, notify_url=""):
        client = self._client(with_certificate=True)
        answer = await self._call(
            lambda: client.refund.apply(
                total_fee=total_fen,
                refund_fee=refund_fen,
                out_refund_no=refund_no,
                out_trade_no=order_no,
                refund_desc=reason[:80] or None,
                notify_url=notify_url or None,
            )
        )
        # Accepted: WeChat reports the outcome later (notification or refundquery).
        return RefundState(
            "processing",
            refund_no,
            amount_fen=int(answer.get("refund_fee") or refund_fen),
            channel_refund_no=answer.get("refund_id") or "",
        )

    async def query_refund(self, order_no: str, refund_no: str) -> RefundState:
        client = self._client()
        answer = await self._call(
            lambda: client.refund.query(out_refund_no=refund_no), accept=frozenset({"REFUNDNOTEXIST"})
        )
        if answer.get("err_code") == "REFUNDNOTEXIST":
            return RefundState("not_found", refund_no)
        count = int(answer.get("refund_count") or 0)
        for n in range(count):
            if answer.get(f"out_refund_no_{n}") == refund_no:
                status = REFUND_STATES.get(answer.get(f"refund_status_{n}", ""), "processing")
                return RefundState(
                    status,
                    refund_no,
                    amount_fen=int(answer[f"refund_fee_{n}"]),
                    channel_refund_no=answer.get(f"refund_id_{n}", ""),
                    finished_at=parse_beijing(
                        answer.get(f"refund_success_time_{n}", ""), "%Y-%m-%d %H:%M:%S"
                    ),
                )
        return RefundState("not_found", refund_no)

    # --- callbacks ----------------------------------------------------------------------

    @classmethod
    def peek_callback(cls, headers: dict[str, str], body: bytes) -> CallbackHint:
        try:
            data = _xml(body)
        except BadCallback:
            return CallbackHint()
        # a refund notification carries its order number only inside the encrypted req_info
        return CallbackHint(
            order_no=str(data.get("out_trade_no") or ""), merchant_id=str(data.get("mch_id") or "")
        )

    async def parse_callback(self, headers: dict[str, str], body: bytes) -> CallbackEvent:
        data = _xml(body)
        if data.get("return_code") != "SUCCESS":
            raise BadCallback("not a successful WeChat Pay notification")
        if data.get("mch_id") != self.config.merchant_id or data.get("appid") not in self._app_ids():
            raise BadCallback("notification for another merchant")
        if "req_info" in data:
            return CallbackEvent(refund=self._refund_event(decrypt_req_info(self.api_key, data["req_info"])))
        sign_type = data.get("sign_type") or "MD5"
        if (
            sign_type not in SIGN_TYPES
            or not data.get("sign")
            or not constant_time_equal(data["sign"], sign(data, self.api_key, sign_type))
        ):
            raise BadCallback("signature does not verify")
        order_no = data.get("out_trade_no") or ""
        try:
            if data.get("result_code") != "SUCCESS":
                return CallbackEvent(
                    payment=PaymentState("failed", order_no, channel_trade_no=data.get("transaction_id", ""))
                )
            return CallbackEvent(payment=self._state(order_no, {**data, "trade_state": "SUCCESS"}))
        except (ValueError, KeyError):
            raise BadCallback("notification fields unreadable") from None

    def _app_ids(self) -> set[str]:
        return {self.config.app_id, self.mini_app_id} - {""}

    @staticmethod
    def _refund_event(info: dict) -> RefundState:
        try:
            return RefundState(
                REFUND_STATES.get(info.get("refund_status", ""), "failed"),
                info["out_refund_no"],
                amount_fen=int(info["refund_fee"]),
                channel_refund_no=info.get("refund_id", ""),
                finished_at=parse_beijing(info.get("success_time", ""), "%Y-%m-%d %H:%M:%S"),
            )
        except (KeyError, ValueError, TypeError):
            raise BadCallback("refund notification fields unreadable") from None

    @classmethod
    def callback_reply(cls, accepted: bool) -> CallbackReply:
        code, msg = ("SUCCESS", "OK") if accepted else ("FAIL", "ERROR")
        body = (
            f"<xml><return_code><![CDATA[{code}]]></return_code>"
            f"<return_msg><![CDATA[{msg}]]></return_msg></xml>"
        )
        return CallbackReply(200, "text/xml; charset=utf-8", body.encode())

    # --- statements ---------------------------------------------------------------------

    async def download_bill(self, day: str) -> str:
        client = self._client()
        answer = await self._call(
            lambda: client.tools.download_bill(day.replace("-", ""), bill_type="ALL"),
            accept=frozenset({"No Bill Exist"}),
            text=True,
        )
        if isinstance(answer, dict):  # nothing happened that day
            return ""
        if not answer.lstrip("\ufeff").startswith("交易时间"):  # a bill opens with its column names
            raise unreachable(CHANNEL, "answer is not a bill")
        return answer

    def parse_bill(self, text: str) -> list[BillRecord]:
        """Rows of an ``ALL`` bill: 27 back-quoted columns; the two summary lines are skipped."""
        records = []
        lines = [line for line in text.splitlines() if line.strip()]
        for row in csv.reader(lines[1:]):
            if not row or not row[0].startswith("`"):
                continue
            cells = [cell.lstrip("`") for cell in row]
            if len(cells) < 27 or not cells[6]:  # the summary line has 7 columns
                continue
            at = parse_beijing(cells[0], "%Y-%m-%d %H:%M:%S")
            fee = yuan_to_fen_rounded(cells[22] or "0")
            if cells[9] == "REFUND":
                records.append(
                    BillRecord(
                        "refund",
                        cells[6],
                        yuan_to_fen(cells[16]),
                        channel_trade_no=cells[5],
                        refund_no=cells[15],
                        channel_refund_no=cells[14],
                        fee_fen=fee,
                        status=cells[19],
                        at=at,
                    )
                )
            else:
                records.append(
                    BillRecord(
                        "payment",
                        cells[6],
                        yuan_to_fen(cells[12]),
                        channel_trade_no=cells[5],
                        fee_fen=fee,
                        status=cells[9],
                        at=at,
                    )
                )
        return records


@functools.lru_cache(maxsize=64)
def _xml(body: bytes) -> Mapping[str, Any]:
    """The fields of a notification, read-only. Remembered for a few bodies: a callback's body
    is read by ``peek_callback`` and again by ``parse_callback``."""
    return MappingProxyType(_read_xml(body))


def _read_xml(body: bytes) -> dict:
    try:
        return read_fields(body)
    except ValueError:
        raise BadCallback("not a WeChat Pay notification") from None


def read_fields(body: bytes, root: str = "xml") -> dict[str, str | None]:
    """The fields of a WeChat Pay v2 message (``<xml><name>value</name>…</xml>``, flat, CDATA
    or not), values as sent; an empty element reads as None. ValueError for anything else,
    a document type declaration included: WeChat Pay sends none, and refusing it keeps entity
    declarations out. ElementTree, not xmltodict: a third of the CPU (the mock gateway reads
    its requests with this too)."""
    if b"<!DOCTYPE" in body:
        raise ValueError("a WeChat Pay message has no document type declaration")
    try:
        element = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise ValueError(f"not XML: {exc}") from None
    if element.tag != root or len(element) == 0 or any(len(field) for field in element):
        raise ValueError(f"not a flat <{root}> message")
    return {field.tag: field.text for field in element}
