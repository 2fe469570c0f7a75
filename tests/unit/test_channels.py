"""Channel helpers that need no gateway: payment-code formats, yuan and fen, WeChat's req_info."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from cashier.channels import all_methods, channel_of_method, channel_of_payment_code, unionpay
from cashier.channels._common import BEIJING, fen_to_yuan, yuan_to_fen, yuan_to_fen_rounded
from cashier.channels.base import BadCallback, issued_at, new_order_no
from cashier.channels.wechat import decrypt_req_info, read_fields


@pytest.mark.parametrize(
    "code, channel",
    [
        ("134567890123456789", "wechat"),
        ("101234567890123456", "wechat"),
        ("151234567890123456", "wechat"),
        ("2812345678901234", "alipay"),  # 16 digits
        ("301234567890123456789012", "alipay"),  # 24 digits
        ("251234567890123456", "alipay"),
        ("6212345678901234567", "unionpay"),
        ("91123456789012345678", "insurance"),
    ],
)
def test_payment_codes_are_told_apart_by_format(code, channel):
    assert channel_of_payment_code(code) == channel


@pytest.mark.parametrize(
    "code",
    [
        "",
        "16123456789012345",
        "161234567890123456",
        "1345678901234567890",
        "231234567890123456",
        "3112345678901234",
        "2812345678901",
        "3012345678901234567890123",
        "621234567890123456",
        "6312345678901234567",
        "9112345678901234567",
        "13456789012345678a",
        "１３４５６７８９０１２３４５６７８９",
    ],
)
def test_other_codes_are_no_payment_codes(code):
    with pytest.raises(LookupError):
        channel_of_payment_code(code)


def test_every_pay_method_has_its_channel():
    assert {channel_of_method(m) for m in all_methods()} == {"wechat", "alipay", "unionpay", "insurance"}
    assert channel_of_method("wechat_h5") == "wechat" and channel_of_method("alipay_app") == "alipay"


@pytest.mark.parametrize(
    "text, fen",
    [
        ("0.01", 1),
        ("12.3", 1230),
        ("12.30", 1230),
        ("100", 10000),
        ("0.10", 10),
        ("-1.05", -105),
        ("99999999.99", 9999999999),
        ("0.29", 29),
        ("1.13", 113),
    ],
)
def test_yuan_to_fen_is_exact(text, fen):
    assert yuan_to_fen(text) == fen


@pytest.mark.parametrize("text", ["", "1.234", "abc", "1e3", "1,00", ".5", "1.", "NaN", "０.５"])
def test_yuan_to_fen_refuses_what_is_no_amount(text):
    with pytest.raises(ValueError):
        yuan_to_fen(text)


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_fen_to_yuan_round_trips(fen):
    assert yuan_to_fen(fen_to_yuan(fen)) == fen


def test_fee_with_more_decimals_rounds_half_up():
    assert (
        yuan_to_fen_rounded("0.00500"),
        yuan_to_fen_rounded("0.00499"),
        yuan_to_fen_rounded("-0.015"),
    ) == (1, 0, -2)


def test_fen_to_yuan_takes_only_integers():
    with pytest.raises(TypeError):
        fen_to_yuan(12.3)


def _req_info(api_key: str, xml: str) -> str:
    key = hashlib.md5(api_key.encode()).hexdigest().encode()
    data = xml.encode()
    pad = 16 - len(data) % 16
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return base64.b64encode(encryptor.update(data + bytes([pad]) * pad) + encryptor.finalize()).decode()


def test_wechat_refund_req_info_decrypts_with_md5_of_the_api_key():
    xml = (
        "<root><out_refund_no><![CDATA[R1]]></out_refund_no><refund_fee><![CDATA[300]]></refund_fee>"
        "<refund_status><![CDATA[SUCCESS]]></refund_status></root>"
    )
    info = decrypt_req_info("k" * 32, _req_info("k" * 32, xml))
    assert info == {"out_refund_no": "R1", "refund_fee": "300", "refund_status": "SUCCESS"}


@pytest.mark.parametrize(
    "req_info", [_req_info("x" * 32, "<root><a>1</a></root>"), "not base64!", "", "AAAA"]
)
def test_wechat_req_info_under_another_key_or_garbled_is_refused(req_info):
    with pytest.raises(BadCallback):
        decrypt_req_info("k" * 32, req_info)


def test_wechat_messages_are_read_field_by_field_with_values_as_sent():
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<xml>\n  <return_code><![CDATA[SUCCESS]]></return_code>\n'
        "  <attach><![CDATA[ 门诊 & <药房> ]]></attach>\n  <total_fee>1</total_fee>\n  <coupon_fee></coupon_fee>\n</xml>"
    ).encode()
    assert read_fields(body) == {"return_code": "SUCCESS", "attach": " 门诊 & <药房> ", "total_fee": "1", "coupon_fee": None}
    assert read_fields(b"<root><refund_fee>300</refund_fee></root>", root="root") == {"refund_fee": "300"}


LAUGHS = b"""<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]><xml><return_code>&c;</return_code></xml>"""


@pytest.mark.parametrize(
    "body",
    [
        LAUGHS,  # entity declarations: never in a WeChat Pay message
        b'<!DOCTYPE xml SYSTEM "http://127.0.0.1:9/evil.dtd"><xml><a>1</a></xml>',
        b"<xml><a>1</a><b><c>2</c></b></xml>",  # not flat
        b"<root><a>1</a></root>",  # another root
        b"<xml></xml>",
        b"<xml><a>1</a>",
        b"<xml><a>&undefined;</a></xml>",
        b"SUCCESS",
        b"",
    ],
)
def test_wechat_messages_of_another_shape_are_refused(body):
    with pytest.raises(ValueError):
        read_fields(body)


def test_an_order_number_says_when_it_was_issued():
    before = datetime.now(timezone.utc).replace(microsecond=0)
    number = new_order_no("R")
    after = datetime.now(timezone.utc)
    assert re.fullmatch(r"R\d{28}", number)
    assert before <= issued_at(number) <= after
    assert new_order_no() != new_order_no()


@pytest.mark.parametrize("number", ["", "NO-SUCH-ORDER", "2026", "T20261399000000ABC", "ABCDE20261123000000"])
def test_numbers_of_another_form_say_nothing_of_their_time(number):
    assert issued_at(number) is None


@pytest.mark.parametrize(
    "txn_time, trace_time, settled",
    [
        ("20261123101500", "1123101502", "2026-11-23 10:15:02"),
        ("20261231235959", "0101000003", "2027-01-01 00:00:03"),  # went through after New Year's Eve
        ("20240228235959", "0229000001", "2024-02-29 00:00:01"),
        ("20261123101500", "", "2026-11-23 10:15:00"),  # no traceTime: the send time is all there is
        ("20261123101500", "11231015", "2026-11-23 10:15:00"),
        ("", "1123101502", None),
    ],
)
def test_unionpay_settlement_time_is_trace_time_in_the_year_it_was_sent(txn_time, trace_time, settled):
    at = unionpay.settled_at({"txnTime": txn_time, "traceTime": trace_time})
    assert (at and at.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")) == settled
