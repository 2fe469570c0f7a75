"""Malformed input at every route of the platform's own API: never a 500, every refusal in
the error envelope of API.md with one of its codes, and a refused request leaves the
database as it was.

Every route the router knows is fuzzed here or excluded below with the reason, so a new
route cannot escape. Requests are signed by the kind of client the route is for (or carry
a resident's bearer token), so the input reaches validation and the handler. Per route:

- bodies: each documented field with each wrong value (strings for numbers, 2**70,
  negative and zero, floats, booleans, null, nested objects and arrays, long strings,
  non-ASCII, control characters, NUL, lone surrogates), fields missing, extra fields,
  bodies that are not JSON objects or not JSON at all;
- query strings: each documented parameter with garbage, repeated and unknown parameters;
- path parameters: long, non-hex, unicode, percent-encoded slashes, invalid UTF-8;
- credentials: each signature header (a resident's bearer token or H5 cookie, the cashier's
  payer cookie) left out, empty, too long, with non-ASCII digits or bytes that are not UTF-8.

``test_every_field_and_parameter_one_by_one`` goes through those lists systematically;
the hypothesis tests mix them with generated values. Nothing here is SQLite's own: on
SQLite, ``stored_problems`` flags what PostgreSQL would refuse to store (a 500 there).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tortoise import Tortoise, connections
from tortoise import fields as orm_fields

from cardcore import signing
from openplatform.admin import KIND_PATTERN as KIND
from openplatform.cashier import NOTIFICATION_ID, ORDER_NO
from tests.conftest import register_institution, register_terminal
from tests.factories import resident
from tests.flows import known_person, log_in, new_order, new_phone, order_body

# A naive time reaching the database (taken as UTC, 8 hours off China time) fails the request.
pytestmark = pytest.mark.filterwarnings("error:.*received a naive datetime:RuntimeWarning")

# --- which routes --------------------------------------------------------------------------

EXCLUDED_PREFIXES = {
    "/_mock": "mock outside services, not the platform's API",
    "/cashier/notify/": "channel callbacks answer in the channels' formats (test_cashier.py: test_malformed_callbacks_…)",
    "/metrics": "Prometheus text, no input",
    "/docs": "the OpenAPI document and its page, no input",
    "/h5": "H5 pages (HTML)",
    "/static/": "static files",
    "/healthz": "no input",
    "/readyz": "no input",
}
EXCLUDED = {
    ("GET", f"/cashier/{ORDER_NO}"): "the cashier page (HTML)",
    ("GET", f"/cashier/{ORDER_NO}/result"): "the result page (HTML)",
}


def excluded(method: str, path: str) -> bool:
    return (method, path) in EXCLUDED or any(path.startswith(prefix) for prefix in EXCLUDED_PREFIXES)


# --- garbage -------------------------------------------------------------------------------

LONG = 20_000
# Placeholders that encode() replaces by raw JSON text json.dumps cannot write.
RAW = {
    "\x01raw:1e400\x01": "1e400",
    "\x01raw:-0\x01": "-0",
    "\x01raw:1.0\x01": "1.0",
    "\x01raw:digits\x01": "9" * 5000,
    "\x01raw:deep\x01": "[" * 3000 + "]" * 3000,
    "\x01raw:deepobj\x01": '{"a":' * 3000 + "1" + "}" * 3000,
}
# In a valid body: a new value in each request (each order its own out_trade_no).
FRESH = "\x01fresh\x01"

# One by one, each documented field gets each of these; the fuzz mixes them with more.
WRONG_VALUES = [
    "12", "", 2**70, -(2**70), -1, 0, 1.5, True, None, {"a": {"b": [1]}}, [1, "2"], ["12", "健康卡", "x" * 300],
    "x" * LONG, "健康卡🩺", "\x00", "a\x00b", "a\ud800b", "\u0007\u001b\u202e", "0001-01-01T00:00:00+01:00",
    "\x01raw:1e400\x01", "\x01raw:deep\x01",
]
ODD_BODIES = [
    b"", b"null", b"[]", b'"x"', b"1", b"{", b"\xff", b"{}", b'{"a":1}{"b":2}', b'"\\ud800"', b'{"a":"\x00"}',
]
ODD_STRINGS = [
    "", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\ufeff", "\u202e", "\r\n", "\t", "%", "%00", "../..",
    "健康卡", "🩺" * 3, "null", "true", "0", "-1", "1e400", "NaN", "Infinity", "A" * 64, "a" * 64, "G" * 64,
    "2" * 28, "R" + "2" * 28, "<script>", "' OR 1=1 --", "${jndi}", "x" * LONG, "健" * 3000,
]
BIG_INTS = [2**70, -(2**70), 2**63, 2**63 - 1, -(2**63) - 1, 10**30]
ODD_NUMBERS = [0, -1, 1, -0.0, 0.5, 1.0, 12.345, 1e308, -1e-308, float("inf"), float("nan"), *BIG_INTS]
RAW_BODIES = [
    b"", b" ", b"{", b"}", b"[", b"null", b"true", b"0", b"-1", b'"text"', b"[]", b"{}", b"[{}]",
    b"\x00", b"\xff\xfe\x00{", b"\xef\xbb\xbf{}", b'{"a":1}{"b":2}', b'{"a":1,}', b"{'a': 1}",
    b'{"a":"\xff"}', b'{"a":"\xed\xa0\x80"}', b'{"a":"\\ud800"}', b'{"a":"\\u0000"}',
    b"NaN", b"Infinity", b"1e400", b"\n\n\n", b"<xml/>", b"a=1&b=2", b"--boundary\r\n",
]

# Query values beyond ODD_STRINGS: near misses for each kind of documented parameter.
NUMBERS = ["0", "-1", "201", "200", "1.5", "1e3", "0x10", " 5", "5 ", "٣", "²", "9" * 40, "+1", "1_0"]
CURSORS = ["0", "-1", "²", "١٢٣", "9" * 30, "9" * 128, "9" * 129, "1.5", "abc", "0" * 50, "18446744073709551616"]
DATETIMES = [
    "2024-13-01T00:00:00+08:00", "2024-02-30", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59",
    "9999-12-31T23:59:59.999999", "2024-01-01", "2024-01-01T00:00:00", "1700000000", "99999999999999999999",
    "-62135596800", "now", "2024-01-01T00:00:00Z", "2024-01-01T25:00:00+08:00", "2024-01-01 00:00:00+08:00",
]
DATES = ["2024-02-30", "0001-01-01", "9999-12-31", "20240101", "1700000000", "2024-1-1", "2024-01-01T00:00:00", "-1"]
HEX_IDS = ["A" * 64, "a" * 64, "G" * 64, "A" * 63, "A" * 65, "A" * 64 + "\n", " " + "A" * 64]
PAGE = {"limit": NUMBERS, "cursor": CURSORS}
EVENTS = {
    **PAGE, "health_card_id": HEX_IDS, "result": ["ok", "CODE_USED", "x" * 33], "since": DATETIMES, "until": DATETIMES,
}
STATS = {
    "group_by": ["", ",", "action,,result", "scene,scene", "nope", "institution_id", "ACTION"],
    "since": DATETIMES,
    "until": DATETIMES,
}
QUERY_ODD = ["", "x" * 2000, "健康卡", "\x00", "\ud800", "-1", "9" * 40, "²", "a b", "%"]
RAW_QUERIES = [
    "%", "%zz", "a=%FF", "a=%ED%A0%80", "&&&", "=", "==", "a==b", "a", "a=1&a=2&a=3", "%00=%00", "limit", "limit=&cursor=",
]
JUNK_QUERIES = ["limit=-1&cursor=%C2%B2", "x=%00&__proto__=1", "%", "a=%FF&a=%ED%A0%80", "&&=&"]
RAW_SEGMENTS = [
    "%2F", "a%2Fb", "%2E%2E", "..", "%00", "%FF", "%ED%A0%80", "%C0%AF", "%25", "%252F", "%20", "+", ";", "%3B", "%3F",
]


# Credentials as they arrive: a header's bytes need not be ASCII, nor even UTF-8 (Sanic
# hands undecodable bytes on as surrogates), and digits need not be ASCII digits. None:
# the header is left out.
ODD_HEADER_VALUES = [
    None, b"", b"x", b"-1", b"1e3", b"0x10", b"9" * 40, "²".encode(), "١٢٣٤٥٦٧٨٩٠١٢٣".encode(), "²".encode() * 64,
    b"\xff" * 8, b"\xff" * 64, "é".encode() * 20, "\u202e".encode(), b"%00", b"A" * 64, b"a" * 8000,
]


def odd_credentials(caller: str):
    """Header overrides, one odd credential each, for a caller's requests."""
    if caller == "anon":  # the cashier page's payer cookie; sessions mean nothing here
        for value in ODD_HEADER_VALUES[1:]:
            yield {"Cookie": b"ehc_payer=" + value}
            yield {"Cookie": b"ehc_session=" + value, "X-EHC-H5": b"1"}
        return
    if caller == "resident":
        for value in ODD_HEADER_VALUES:
            yield {"Authorization": value}
            if value is not None:
                yield {"Authorization": b"Bearer " + value}
                yield {"Authorization": None, "Cookie": b"ehc_session=" + value, "X-EHC-H5": b"1"}
                yield {"Authorization": None, "Cookie": b"ehc_session=" + value + b"." + value, "X-EHC-H5": b"1"}
        return
    for name in signing.SIGNATURE_HEADERS:
        for value in ODD_HEADER_VALUES:
            yield {name: value}
    if caller == "institution":  # an institution may name the terminal it forwards for
        for value in ODD_HEADER_VALUES[1:]:
            yield {signing.HEADER_TERMINAL: value}


def encode_segment(text: str) -> str:
    """Percent-encoded as sent; a lone surrogate becomes the (invalid) UTF-8 of it."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


PATH_ODD = [
    "%2F", "a%2Fb", "..", "%00", "%FF", "%ED%A0%80", "x" * 2000, encode_segment("健康卡"), "a" * 64, "G" * 64,
    "A" * 65, "9" * 30, "-1", "0", "%20",
]


def encode(payload, ascii_only: bool) -> bytes:
    text = json.dumps(payload, ensure_ascii=ascii_only).replace(json.dumps(FRESH)[1:-1], secrets.token_hex(6))
    for placeholder, raw in RAW.items():
        text = text.replace(json.dumps(placeholder, ensure_ascii=ascii_only), raw)
    # Lone surrogates: escaped in JSON ("\ud800") when ascii_only, else invalid UTF-8 bytes.
    return text.encode("utf-8", "surrogatepass")


def field_paths(base: dict) -> list[str]:
    """The fields of a body, nested ones as ``outer.inner``."""
    return sorted(base) + sorted(f"{k}.{sub}" for k, v in base.items() if isinstance(v, dict) for sub in v)


def with_value(base: dict, path: str, value) -> dict:
    body = json.loads(json.dumps(base))
    head, _, sub = path.partition(".")
    if sub:
        body[head][sub] = value
    else:
        body[head] = value
    return body


def without(base: dict, paths) -> dict:
    body = json.loads(json.dumps(base))
    for path in paths:
        head, _, sub = path.partition(".")
        if sub:
            body[head].pop(sub, None)
        else:
            body.pop(head, None)
    return body


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(ODD_NUMBERS),
    st.integers(),
    st.floats(),
    st.sampled_from(ODD_STRINGS),
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Co", "Zs", "Lo", "So"]), max_size=40),
    st.sampled_from(list(RAW)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8,
)
field_names = st.one_of(
    st.sampled_from(["", " ", "id", "__proto__", "constructor", "status", "x" * 300, "\x00", "\ud800", "名字"]),
    st.text(max_size=20),
)


def mutations(base: dict) -> st.SearchStrategy[dict]:
    """Valid ``base`` with things wrong: fields' types or values, fields missing, extra ones."""
    paths = field_paths(base)
    several_wrong = st.dictionaries(st.sampled_from(sorted(base)), values, min_size=min(2, len(base)))
    return st.one_of(
        st.builds(with_value, st.just(base), st.sampled_from(paths), values),
        st.builds(with_value, st.just(base), st.sampled_from(paths), st.sampled_from(WRONG_VALUES)),
        st.builds(without, st.just(base), st.lists(st.sampled_from(paths), min_size=1, max_size=3, unique=True)),
        st.builds(lambda k, v: {**base, k: v}, field_names, values),
        several_wrong.map(lambda wrong: {**base, **wrong}),
    )


def bad_bodies(bases: list[dict]) -> st.SearchStrategy[tuple[bytes, str]]:
    """(body, content type): a broken valid body, JSON that is no object, or no JSON at all."""
    payloads = st.one_of(
        values.filter(lambda v: not isinstance(v, dict)),
        *([st.sampled_from(bases).flatmap(mutations)] * 4 if bases else []),
    )
    encoded = st.builds(encode, payloads, st.booleans())
    raw = st.one_of(st.sampled_from(RAW_BODIES), st.binary(max_size=64))
    content_types = st.sampled_from(["application/json"] * 4 + ["text/plain", "application/x-www-form-urlencoded", ""])
    return st.tuples(st.one_of(encoded, encoded, encoded, raw), content_types)


def query_values(kind: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(kind), st.sampled_from(ODD_STRINGS), st.text(max_size=30))


def bad_queries(documented: dict[str, list[str]]) -> st.SearchStrategy[str]:
    names = sorted(documented) or ["limit"]
    pairs = st.one_of(
        st.sampled_from(names).flatmap(lambda n: st.tuples(st.just(n), query_values(documented.get(n, NUMBERS)))),
        st.tuples(field_names, query_values(NUMBERS)),
    )
    built = st.lists(pairs, min_size=1, max_size=5).map(
        lambda items: "&".join(f"{encode_segment(k)}={encode_segment(v)}" for k, v in items)
    )
    # The same parameter more than once: the first counts, and none may crash.
    repeated = st.sampled_from(names).flatmap(
        lambda n: st.lists(query_values(documented.get(n, NUMBERS)), min_size=2, max_size=3).map(
            lambda vs: "&".join(f"{n}={encode_segment(v)}" for v in vs)
        )
    )
    return st.one_of(built, built, repeated, st.sampled_from(RAW_QUERIES))


path_segments = st.one_of(
    st.sampled_from(RAW_SEGMENTS),
    st.sampled_from([s for s in ODD_STRINGS if s]).map(encode_segment),
    st.text(min_size=1, max_size=80).map(encode_segment),
    st.integers().map(str),
    st.sampled_from([str(n) for n in BIG_INTS]),
)


# --- the routes ----------------------------------------------------------------------------


@dataclass(repr=False)
class World:
    """What the fuzzed requests name: clients, cards, orders, a resident. Requests that change
    what they name (freeze, close, disable, new secret) are pointed at the victims."""

    settings: object
    admin: object
    institution: object  # approved, no payment channel open: nothing reaches a channel's gateway
    terminal: object
    person: dict  # the holder of card
    card: dict
    victim_card: dict
    victim_client_id: str  # an institution
    resident: object
    resident_person: dict  # known to the (mock) population registry, holder of resident_card
    resident_card: dict
    order: dict
    victim_order: dict
    bodies: dict = field(default_factory=dict)  # route -> its valid bodies, made once
    stored_problems: dict = field(default_factory=dict)  # as stored_problems() last found them

    def __repr__(self) -> str:
        return "World(...)"

    def params(self, key: tuple[str, str]) -> dict[str, str]:
        return {name: encode_segment(value) for name, value in ROUTES[key].params(self).items()}

    def path(self, key: tuple[str, str]) -> str:
        return render_path(key[1], self.params(key))

    def valid_body(self, key: tuple[str, str]) -> tuple[bytes, str]:
        """The first valid body (so that odd paths and queries get past the body's checks)."""
        bases = self.bodies.get(key)
        return (encode(bases[0], False), "application/json") if bases else (b"", "")


def render_path(template: str, params: dict[str, str]) -> str:
    return re.sub(r"<(\w+)(?::[^>]*)?>", lambda m: params[m.group(1)], template)


@dataclass(frozen=True)
class Route:
    caller: str  # admin | institution | resident | anon
    params: Callable[[World], dict[str, str]] = lambda w: {}
    bodies: Callable[[World], list[dict]] | None = None  # valid bodies; None: the route reads none
    query: dict[str, list[str]] = field(default_factory=dict)  # documented parameters, near misses
    answers: str = "application/json"  # content type of a success


CARD = "<health_card_id:str>"
CLIENT = f"{KIND}/<client_id:str>"
CHANNELS = "/admin/v1/institutions/<institution_id:str>/channels"


def card_of(attribute: str) -> Callable[[World], dict]:
    return lambda w: {"health_card_id": getattr(w, attribute)["health_card_id"]}


def order_of(attribute: str) -> Callable[[World], dict]:
    return lambda w: {"order_no": getattr(w, attribute)["order_no"]}


def victim_client(w: World) -> dict:
    return {"kind": "institutions", "client_id": w.victim_client_id}


def usage_bodies(w: World) -> list[dict]:
    return [
        {"health_card_id": w.card["health_card_id"], "qr_code_text": None, "scene": "consultation",
         "department": "内科", "occurred_at": "2024-05-01T08:00:00+08:00"},
        {"qr_code_text": w.card["qr_code_text"], "scene": "pharmacy", "occurred_at": "2024-05-01T08:00:00Z"},
    ]


def micropay_bodies(w: World) -> list[dict]:
    return [
        {"qr_code_text": "134567890123456789", "out_trade_no": "MP" + FRESH, "amount_fen": 100, "subject": "挂号费",
         "order_type": "registration", "terminal_id": w.terminal.client_id,
         "notify_url": f"{w.settings.base_url}/_mock/institution/notify"},
        {"qr_code_text": w.card["qr_code_text"], "out_trade_no": "MQ" + FRESH, "amount_fen": 1, "subject": "药费"},
    ]


def claim_bodies(w: World) -> list[dict]:
    child = resident(birth_date="2020-02-02", gender="1")
    return [
        {**w.resident_person, "relation": "self", "guardian": None, "parity": 1},
        {
            "name": child["name"], "gender": "1", "birth_date": "2020-02-02", "relation": "child", "parity": 1,
            "nation": "01", "address": "", "id_type": None, "id_number": None, "phone": None,
            "guardian": {k: w.resident_person[k] for k in ("name", "id_type", "id_number", "phone")},
        },
    ]


def channel_account_bodies(w: World) -> list[dict]:
    return [
        {"app_id": "", "merchant_id": "898000000000001", "sub_merchant_id": "", "gateway": "https://pay.example.org",
         "secrets": {"api_key": "k" * 32}, "enabled": False},
    ]


ROUTES: dict[tuple[str, str], Route] = {
    # institution and terminal API
    ("POST", "/inst/v1/register"): Route("anon", bodies=lambda w: [{"name": "模糊测试医院"}]),
    ("GET", "/inst/v1/me"): Route("institution"),
    ("POST", "/inst/v1/terminals"): Route(
        "institution", bodies=lambda w: [{"name": "门诊一楼 3 号窗", "ip_allowlist": ["10.0.0.0/8", "::1"]}]
    ),
    ("GET", "/inst/v1/terminals"): Route("institution", query=PAGE),
    ("POST", "/inst/v1/cards"): Route("institution", bodies=lambda w: [w.person]),
    ("GET", f"/inst/v1/cards/{CARD}"): Route("institution", params=card_of("card")),
    ("PATCH", f"/inst/v1/cards/{CARD}"): Route(
        "institution",
        params=card_of("victim_card"),
        bodies=lambda w: [{"name": "王芳", "nation": "01", "phone": "13800138000", "address": "陕西省西安市"}],
    ),
    ("POST", f"/inst/v1/cards/{CARD}/<action:freeze|unfreeze|cancel>"): Route(
        "institution",
        params=lambda w: {**card_of("victim_card")(w), "action": "freeze"},
        bodies=lambda w: [{"reason": "挂失"}],
    ),
    ("GET", f"/inst/v1/cards/{CARD}/label.png"): Route("institution", params=card_of("card"), answers="image/png"),
    ("POST", "/inst/v1/codes/verify"): Route(
        "institution",
        bodies=lambda w: [
            {"qr_code_text": w.card["qr_code_text"], "scene": "consultation", "terminal_id": w.terminal.client_id,
             "otp": "123456"},
            {"qr_code_text": w.card["qr_code_text"], "scene": "registration"},
        ],
    ),
    ("POST", "/inst/v1/codes/otp"): Route(
        "institution",
        bodies=lambda w: [{"qr_code_text": w.card["qr_code_text"], "scene": "payment", "terminal_id": w.terminal.client_id}],
    ),
    ("POST", "/inst/v1/usage"): Route("institution", bodies=usage_bodies),
    ("GET", "/inst/v1/code-events"): Route("institution", query=EVENTS),
    ("GET", "/inst/v1/code-stats"): Route("institution", query=STATS),
    # institution cashier API
    ("POST", "/cashier/v1/orders"): Route(
        "institution",
        bodies=lambda w: [
            order_body(w.settings.base_url, out_trade_no="FZ" + FRESH, health_card_id=w.card["health_card_id"],
                       expire_minutes=30)
        ],
    ),
    ("GET", "/cashier/v1/orders"): Route("institution", query={"out_trade_no": ["", "x" * 65, "HIS%", "*", "\x00"]}),
    ("GET", f"/cashier/v1/orders/{ORDER_NO}"): Route("institution", params=order_of("order")),
    ("POST", f"/cashier/v1/orders/{ORDER_NO}/close"): Route(
        "institution", params=order_of("victim_order"), bodies=lambda w: [{"reason": "患者取消"}]
    ),
    ("POST", f"/cashier/v1/orders/{ORDER_NO}/refunds"): Route(
        "institution",
        params=order_of("order"),
        bodies=lambda w: [{"out_refund_no": "RF" + FRESH, "amount_fen": 100, "reason": "退费"}],
    ),
    ("GET", "/cashier/v1/refunds/<refund_no:R[0-9]{28}>"): Route("institution", params=lambda w: {"refund_no": "R" + "0" * 28}),
    ("POST", "/cashier/v1/micropay"): Route("institution", bodies=micropay_bodies),
    ("GET", "/cashier/v1/bills"): Route("institution", query={"date": DATES}, answers="text/csv"),
    # the H5 cashier's JSON endpoints (and the return from WeChat's authorisation)
    ("POST", f"/cashier/{ORDER_NO}/pay"): Route(
        "anon",
        params=order_of("order"),
        bodies=lambda w: [{"channel": "wechat_h5", "code": None}, {"channel": "wechat_mini", "code": "0a1b2c"}],
    ),
    ("GET", f"/cashier/{ORDER_NO}/status"): Route("anon", params=order_of("order")),
    ("GET", f"/cashier/{ORDER_NO}/wechat-oauth"): Route(
        "anon", params=order_of("order"), query={"state": ["", "x" * 200], "code": ["", "x" * 200]}, answers="redirect"
    ),
    # resident API
    ("POST", "/mp/v1/login/wechat"): Route("anon", bodies=lambda w: [{"code": "0a1b2c3d"}]),
    ("POST", "/mp/v1/login/alipay"): Route("anon", bodies=lambda w: [{"auth_code": "0a1b2c3d"}]),
    ("POST", "/mp/v1/login/sms/send"): Route("anon", bodies=lambda w: [{"phone": new_phone()}]),
    ("POST", "/mp/v1/login/sms"): Route("anon", bodies=lambda w: [{"phone": new_phone(), "code": "123456"}]),
    ("POST", "/mp/v1/logout"): Route("anon"),  # not the world's resident: that would end its session
    ("POST", "/mp/v1/cards"): Route("resident", bodies=claim_bodies),
    ("GET", "/mp/v1/cards"): Route("resident"),
    ("GET", f"/mp/v1/cards/{CARD}"): Route("resident", params=card_of("resident_card")),
    ("GET", f"/mp/v1/cards/{CARD}/codes/static"): Route("resident", params=card_of("resident_card")),
    ("POST", f"/mp/v1/cards/{CARD}/codes/dynamic"): Route(
        "resident", params=card_of("resident_card"), query={"with_payment": ["1", "0", "01", "true", " 1"]}
    ),
    ("GET", f"/mp/v1/cards/{CARD}/codes/dynamic/state"): Route(
        "resident", params=card_of("resident_card"), query={"code": ["A" * 64 + ":0:" + "B" * 32, ":::", "x" * 600]}
    ),
    ("GET", f"/mp/v1/cards/{CARD}/usage"): Route("resident", params=card_of("resident_card")),
    ("GET", f"/mp/v1/cards/{CARD}/managers"): Route("resident", params=card_of("resident_card")),
    ("DELETE", f"/mp/v1/cards/{CARD}/managers/me"): Route("resident", params=card_of("resident_card")),
    ("DELETE", f"/mp/v1/cards/{CARD}/managers/<account_id:str>"): Route(
        "resident", params=lambda w: {**card_of("resident_card")(w), "account_id": "acc_" + "0" * 20}
    ),
    ("GET", "/mp/v1/payment-accounts"): Route("resident"),
    ("POST", "/mp/v1/payment-accounts"): Route("resident", bodies=lambda w: [{"channel": "wechat"}]),
    ("DELETE", "/mp/v1/payment-accounts/<channel:wechat|alipay|unionpay>"): Route(
        "resident", params=lambda w: {"channel": "alipay"}
    ),
    ("POST", "/mp/v1/auth/sms"): Route("resident", bodies=lambda w: [card_of("resident_card")(w)]),
    ("POST", "/mp/v1/auth/sms/verify"): Route(
        "resident", bodies=lambda w: [{**card_of("resident_card")(w), "code": "123456"}]
    ),
    ("POST", "/mp/v1/auth/face"): Route("resident", bodies=lambda w: [card_of("resident_card")(w)]),
    ("GET", "/mp/v1/auth/face/<order_id:str>"): Route("resident", params=lambda w: {"order_id": "F" + "0" * 31}),
    # partner apps
    ("POST", "/open/v1/apps/register"): Route("anon", bodies=lambda w: [{"name": "模糊测试应用"}]),
    # admin API
    ("GET", "/admin/v1/functions"): Route("admin"),
    ("GET", "/admin/v1/lockouts"): Route("admin"),
    ("GET", f"/admin/v1/{KIND}"): Route(
        "admin",
        params=lambda w: {"kind": "institutions"},
        query={**PAGE, "status": ["approved", "APPROVED", "deleted", ""]},
    ),
    ("GET", f"/admin/v1/{CLIENT}"): Route("admin", params=victim_client),
    ("PATCH", f"/admin/v1/{CLIENT}"): Route(
        "admin",
        params=victim_client,
        bodies=lambda w: [
            {"disabled_functions": ["cards.read"], "ip_allowlist": ["192.168.0.0/16"], "scopes": ["identity.full"]}
        ],
    ),
    ("POST", f"/admin/v1/{CLIENT}/approve"): Route("admin", params=victim_client),
    ("POST", f"/admin/v1/{CLIENT}/disable"): Route("admin", params=victim_client, bodies=lambda w: [{"reason": "违规"}]),
    ("POST", f"/admin/v1/{CLIENT}/secret"): Route("admin", params=victim_client),
    ("POST", "/admin/v1/admins"): Route("admin", bodies=lambda w: [{"name": "运营"}]),
    ("GET", "/admin/v1/code-events"): Route("admin", query={**EVENTS, "institution_id": ["x" * 41, ""]}),
    ("GET", "/admin/v1/code-stats"): Route("admin", query=STATS),
    ("GET", "/admin/v1/audit-events"): Route(
        "admin",
        query={**PAGE, "subject": ["x" * 65], "actor": ["x" * 41], "action": ["card.", ".", "%", "\\.", "x" * 33],
               "since": DATETIMES, "until": DATETIMES},
    ),
    ("GET", "/admin/v1/notifications"): Route(
        "admin",
        query={**PAGE, "status": ["failed", "FAILED", "failed\n", ""], "institution_id": ["x" * 41],
               "order_no": ["x" * 33]},
    ),
    ("GET", f"/admin/v1/notifications/{NOTIFICATION_ID}"): Route(
        "admin", params=lambda w: {"notification_id": "999999999"}
    ),
    ("POST", f"/admin/v1/notifications/{NOTIFICATION_ID}/resend"): Route(
        "admin", params=lambda w: {"notification_id": "999999999"}
    ),
    ("GET", CHANNELS): Route("admin", params=lambda w: {"institution_id": w.victim_client_id}),
    ("PUT", f"{CHANNELS}/<channel:wechat|alipay|unionpay|insurance>"): Route(
        "admin",
        params=lambda w: {"institution_id": w.victim_client_id, "channel": "unionpay"},
        bodies=channel_account_bodies,
    ),
}

BODY_ROUTES = sorted(key for key in ROUTES if key[0] in ("POST", "PUT", "PATCH"))
PATH_ROUTES = sorted(key for key in ROUTES if "<" in key[1])

# Every code a 4xx may carry: API.md's, the project's (cardcore/errors.py, cashier/errors.py,
# the services' own PlatformError subclasses) and the framework's (openplatform/errors.py).
API_CODES = {
    "BAD_REQUEST", "VALIDATION_ERROR", "NOT_FOUND", "CONFLICT", "RATE_LIMITED", "UNAUTHENTICATED", "FORBIDDEN",
    "METHOD_NOT_ALLOWED", "REQUEST_TIMEOUT", "PAYLOAD_TOO_LARGE", "RANGE_NOT_SATISFIABLE",
    "STALE_REQUEST", "REPLAYED_REQUEST", "BAD_SIGNATURE", "CLIENT_DISABLED", "TERMINAL_NOT_ALLOWED",
    "CODE_MALFORMED", "CARD_NOT_FOUND", "CODE_EXPIRED", "CODE_USED", "CODE_INVALID", "CODE_LOCKED", "CARD_INACTIVE",
    "SCENE_REQUIRES_DYNAMIC", "CARD_STATE_CONFLICT", "NO_VERIFIED_PHONE", "IDENTITY_MISMATCH", "IDENTITY_UNKNOWN",
    "CARD_ALREADY_CLAIMED", "OWN_CARD_EXISTS", "FAMILY_LIMIT", "ALREADY_MANAGED", "STRONG_AUTH_REQUIRED",
    "OTP_INVALID", "OTP_LOCKED", "FACE_ORDER_NOT_FOUND", "LOGIN_FAILED", "PAYMENT_ACCOUNT_NOT_BOUND",
    "ORDER_NOT_FOUND", "REFUND_NOT_FOUND", "NOTIFICATION_NOT_FOUND", "DUPLICATE_OUT_TRADE_NO",
    "DUPLICATE_OUT_REFUND_NO", "ORDER_NOT_PAYABLE", "ORDER_ALREADY_PAID", "ORDER_NOT_REFUNDABLE",
    "REFUND_EXCEEDS_PAID", "CHANNEL_NOT_AVAILABLE", "PAY_CODE_REQUIRED", "AMOUNT_MISMATCH", "CHANNEL_REFUSED",
}


# --- the world and the requests --------------------------------------------------------------


@pytest.fixture(scope="module")
async def world(http, admin, settings) -> World:
    institution = await register_institution(http, admin)
    terminal = await register_terminal(http, admin, institution)
    person = resident()
    card = await terminal.post("/inst/v1/cards", person)
    victim_card = await terminal.post("/inst/v1/cards", resident())
    assert card.status_code == victim_card.status_code == 201, (card.text, victim_card.text)
    resident_person = await known_person(http)
    account = await log_in(http)
    resident_card = await account.post("/mp/v1/cards", {**resident_person, "relation": "self"})
    assert resident_card.status_code == 201, resident_card.text
    w = World(
        settings=settings, admin=admin, institution=institution, terminal=terminal, person=person, card=card.json(),
        victim_card=victim_card.json(), victim_client_id=(await register_institution(http, admin)).client_id,
        resident=account, resident_person=resident_person, resident_card=resident_card.json(),
        order=await new_order(institution, settings), victim_order=await new_order(institution, settings),
    )
    w.bodies = {key: route.bodies(w) for key, route in ROUTES.items() if route.bodies}
    w.stored_problems = await stored_problems()
    return w


async def send(
    http, w: World, method: str, path: str, caller: str, body: bytes = b"", content_type: str = "", headers=None
):
    """One request as ``caller``, signed over exactly the path and bytes httpx sends, then
    with ``headers`` put in (bytes) or left out (None)."""
    sent = {"Content-Type": content_type} if content_type else {}
    if caller == "resident":
        sent.update(w.resident.headers)
    request = http.build_request(method, path, content=body, headers=sent)
    if caller in ("admin", "institution"):
        signer = w.admin if caller == "admin" else w.institution
        sent_path = request.url.raw_path.decode("ascii")
        sent.update(signing.signed_headers(signer.client_id, signer.secret, method, sent_path, body))
    if headers:
        sent = {name: value for name, value in {**sent, **headers}.items() if value is not None}
        sent = [(name.encode(), value if isinstance(value, bytes) else value.encode()) for name, value in sent.items()]
    request = http.build_request(method, path, content=body, headers=sent)
    reply = await http.send(request)
    http.cookies.clear()  # a login's H5 cookie must not ride along on the next request
    return reply


# --- what must hold --------------------------------------------------------------------------


def _text_columns() -> list[tuple[str, str, int | None, bool]]:
    """(table, column, max length or None, holds JSON) of every text column of every model."""
    columns = []
    for models in Tortoise.apps.values():
        for model in models.values():
            for name, column in model._meta.fields_map.items():
                if isinstance(column, orm_fields.CharField | orm_fields.TextField | orm_fields.JSONField):
                    is_json = isinstance(column, orm_fields.JSONField)
                    max_length = getattr(column, "max_length", None)
                    columns.append((model._meta.db_table, column.source_field or name, max_length, is_json))
    return columns


async def _select_all(parts: dict[str, str]) -> dict:
    """The scalar subqueries ``parts`` in one round trip."""
    names = list(parts)
    sql = "SELECT " + ", ".join(f"({parts[name]}) AS c{i}" for i, name in enumerate(names))
    row = (await connections.get("default").execute_query_dict(sql))[0]
    return {name: row[f"c{i}"] for i, name in enumerate(names)}


async def stored_problems() -> dict[str, int]:
    """Rows PostgreSQL would have refused: a value longer than its column, or a NUL character.

    SQLite stores both without complaint; here they show up on SQLite as well.
    """
    sqlite = connections.get("default").capabilities.dialect == "sqlite"
    checks = {}
    for table, column, max_length, is_json in _text_columns():
        text = f'CAST("{column}" AS TEXT)'
        if max_length:
            checks[f"{table}.{column} longer than {max_length}"] = (
                f'SELECT count(*) FROM "{table}" WHERE length({text}) > {max_length}'
            )
        if sqlite:  # PostgreSQL holds no NUL at all
            nul = "'\\u0000'" if is_json else "char(0)"
            checks[f"{table}.{column} holds NUL"] = f'SELECT count(*) FROM "{table}" WHERE instr({text}, {nul}) > 0'
    return {name: count for name, count in (await _select_all(checks)).items() if count}


async def data_state() -> dict:
    """Row counts and last changes of every table a request may write (code events and the
    audit trail record refusals on purpose and are left out)."""
    parts = {}
    for models in Tortoise.apps.values():
        for model in models.values():
            table = model._meta.db_table
            if table in ("code_event", "audit_event"):
                continue
            parts[f"{table} rows"] = f'SELECT count(*) FROM "{table}"'
            if "updated_at" in model._meta.fields_map:
                parts[f"{table} last change"] = f'SELECT CAST(max(updated_at) AS TEXT) FROM "{table}"'
    return await _select_all(parts)


def check_reply(reply, route: Route, what: str) -> None:
    status = reply.status_code
    context = f"{what} -> {status} {reply.headers.get('content-type')} {reply.text[:500]!r}"
    assert status < 500, context
    assert reply.headers.get("X-Request-Id"), context
    if status >= 400:
        assert reply.headers.get("content-type", "").startswith("application/json"), context
        body = reply.json()
        assert isinstance(body, dict) and set(body) <= {"code", "message", "details", "request_id"}, context
        assert body.get("code") in API_CODES, context
        assert isinstance(body.get("message"), str) and body["message"].strip(), context
        assert body.get("request_id") == reply.headers["X-Request-Id"], context
    elif status >= 300:
        assert route.answers == "redirect", context
    else:
        assert reply.headers.get("content-type", "").startswith(route.answers), context
        if route.answers == "application/json":
            reply.json()


async def exchange(
    http, w: World, key: tuple[str, str], path: str, body: bytes = b"", content_type: str = "", headers=None
):
    """Send; check the answer, that a refusal wrote nothing, and that nothing stored breaks
    PostgreSQL's rules."""
    method = key[0]
    what = f"{method} {path[:300]} body={body[:300]!r} ({len(body)} bytes, {content_type or 'no content type'})"
    if headers:
        what += f" headers={ {name: (value or b'')[:100] for name, value in headers.items()} }"
    before = await data_state() if method != "GET" else None
    reply = await send(http, w, method, path, ROUTES[key].caller, body, content_type, headers)
    check_reply(reply, ROUTES[key], what)
    if before is not None and reply.status_code >= 400:
        after = await data_state()
        changed = {name: (before[name], after[name]) for name in before if before[name] != after[name]}
        assert not changed, f"{what} was refused with {reply.text[:300]} but wrote {changed}"
    elif before is not None:
        now = await stored_problems()
        new = sorted(name for name, count in now.items() if count > w.stored_problems.get(name, 0))
        w.stored_problems = now  # each request answers for its own rows only
        assert not new, f"{what} -> {reply.status_code} stored what PostgreSQL refuses (a 500 there): {new}"


def sweep(w: World, key: tuple[str, str]):
    """(path, body, content type): every documented field with every wrong value, every
    documented query parameter with every odd value, every path parameter with every odd segment."""
    route, path = ROUTES[key], w.path(key)
    if key[0] in ("POST", "PUT", "PATCH"):
        for raw in ODD_BODIES:
            yield path, raw, "application/json"
        swept = set()
        for base in w.bodies.get(key, []):
            yield path, encode({**base, "unexpected": 1}, True), "application/json"
            for field_path in field_paths(base):
                if field_path not in swept:
                    swept.add(field_path)
                    yield path, encode(without(base, [field_path]), True), "application/json"
                    for value in WRONG_VALUES:
                        yield path, encode(with_value(base, field_path, value), True), "application/json"
    body, content_type = w.valid_body(key)
    for name, kind in route.query.items():
        for value in [*kind, *QUERY_ODD]:
            yield f"{path}?{name}={encode_segment(value)}", body, content_type
        yield f"{path}?{name}={encode_segment(kind[0])}&{name}={encode_segment(kind[-1])}", body, content_type
    for junk in JUNK_QUERIES if not route.query else ():
        yield f"{path}?{junk}", body, content_type
    params = w.params(key)
    for name in params:
        for segment in PATH_ODD:
            yield render_path(key[1], {**params, name: segment}), body, content_type


FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- the tests -----------------------------------------------------------------------------


def test_every_route_is_fuzzed_or_excluded_for_a_reason(app):
    served = {
        (method, "/" + route.path) for route in app.router.routes for method in route.methods
        if method not in ("HEAD", "OPTIONS")
    }
    assert set(ROUTES) == {key for key in served if not excluded(*key)}
    assert not {key for key in ROUTES if excluded(*key)}


async def test_valid_bodies_name_every_documented_field(http, world):
    """The fuzzed bodies start from valid ones that name every field of the route's model,
    so a field added later is fuzzed too."""
    doc = (await http.get("/docs/openapi.json")).json()
    problems = []
    for method, template in BODY_ROUTES:
        operation = doc["paths"][re.sub(r"<(\w+)(?::[^>]*)?>", r"{\1}", template)][method.lower()]
        schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        if ROUTES[(method, template)].bodies is None:
            if schema is not None:
                problems.append(f"{method} {template} takes a body: give the route valid bodies")
        elif schema is None:
            problems.append(f"{method} {template}: the body is not in the OpenAPI document")
        else:
            fields = schema["properties"]
            fuzzed = set().union(*(body.keys() for body in world.bodies[(method, template)]))
            if fuzzed != set(fields):
                problems.append(f"{method} {template}: fuzzed {sorted(fuzzed)}, the model has {sorted(fields)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("key", sorted(ROUTES), ids=" ".join)
async def test_every_field_and_parameter_one_by_one(http, world, key):
    failures = []
    for count, (path, body, content_type) in enumerate(sweep(world, key), 1):
        try:
            await exchange(http, world, key, path, body, content_type)
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0][:1500])
    assert not failures, f"{len(failures)} of {count} requests:\n" + "\n".join(failures[:12])


@pytest.mark.parametrize("key", sorted(ROUTES), ids=" ".join)
async def test_odd_credentials_in_headers(http, world, key):
    failures = []
    for count, headers in enumerate(odd_credentials(ROUTES[key].caller), 1):
        try:
            await exchange(http, world, key, world.path(key), *world.valid_body(key), headers=headers)
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0][:1500])
    assert not failures, f"{len(failures)} of {count} requests:\n" + "\n".join(failures[:12])


@pytest.mark.parametrize("key", BODY_ROUTES, ids=" ".join)
@settings(FUZZ, max_examples=25)
@given(data=st.data())
async def test_bodies(http, world, key, data):
    body, content_type = data.draw(bad_bodies(world.bodies.get(key, [])), label="body")
    await exchange(http, world, key, world.path(key), body, content_type)


@pytest.mark.parametrize("key", sorted(ROUTES), ids=" ".join)
@settings(FUZZ, max_examples=10)
@given(data=st.data())
async def test_query_strings(http, world, key, data):
    query = data.draw(bad_queries(ROUTES[key].query), label="query")
    await exchange(http, world, key, f"{world.path(key)}?{query}", *world.valid_body(key))


@pytest.mark.parametrize("key", PATH_ROUTES, ids=" ".join)
@settings(FUZZ, max_examples=10)
@given(data=st.data())
async def test_path_parameters(http, world, key, data):
    params = world.params(key)
    name = data.draw(st.sampled_from(sorted(params)), label="parameter")
    params[name] = data.draw(path_segments, label="value")
    await exchange(http, world, key, render_path(key[1], params), *world.valid_body(key))
