"""What residents, hospitals and payers do over HTTP, shared by the integration suite (the
app in process) and the acceptance suite (a running server).

Every helper takes an ``httpx.AsyncClient`` whose base URL is the platform, and signed
callers (``tests.conftest.Signer``) for the hospital side.
"""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import urlsplit

from tests.factories import resident


def assert_refused(reply, status: int, code: str) -> None:
    """The platform's error envelope with this status and code, carrying the request id."""
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["code"] == code, body
    assert body["request_id"] == reply.headers["X-Request-Id"]


async def eventually(check, timeout_s: float = 15.0, interval_s: float = 0.05):
    """Poll ``check`` (async, returns a truthy value when done) until it succeeds."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(interval_s)


def scanned(report, status: int, code: str | None = None) -> dict:
    """A reader's scan (``mocks.scanner.ScanReport``) decoded; the platform answered ``status``/``code``."""
    assert report.decoded, f"{report.preset} seed {report.seed} did not decode"
    assert report.status == status, report.reply
    if code is not None:
        assert report.reply["code"] == code, report.reply
    return report.reply


# --- residents ---------------------------------------------------------------------------


class Resident:
    """A resident's phone and browser: a bearer token after SMS login."""

    def __init__(self, http, token: str, phone: str):
        self.http = http
        self.phone = phone
        self.headers = {"Authorization": f"Bearer {token}"}

    async def get(self, path, **kw):
        return await self.http.get(path, headers=self.headers, **kw)

    async def post(self, path, body=None):
        return await self.http.post(path, json=body, headers=self.headers)

    async def delete(self, path):
        return await self.http.delete(path, headers=self.headers)

    async def last_sms_code(self, phone: str | None = None) -> str:
        inbox = (await self.http.get("/_mock/sms/messages", params={"phone": phone or self.phone})).json()["items"]
        return inbox[0]["code"]


def new_phone() -> str:
    return "139" + f"{secrets.randbelow(10**8):08d}"


async def log_in(http, phone: str | None = None) -> Resident:
    phone = phone or new_phone()
    assert (await http.post("/mp/v1/login/sms/send", json={"phone": phone})).status_code == 200
    inbox = (await http.get("/_mock/sms/messages", params={"phone": phone})).json()["items"]
    reply = await http.post("/mp/v1/login/sms", json={"phone": phone, "code": inbox[0]["code"]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["expires_in"] == 7200
    http.cookies.clear()  # the shared client must not carry this resident's H5 cookie into other tests
    return Resident(http, reply.json()["token"], phone)


async def known_person(http, **overrides) -> dict:
    """A person the (mock) population registry knows, so a claim's real-name check passes."""
    person = resident(**overrides)
    assert (await http.post("/_mock/registry/people", json=person)).status_code in (200, 201)
    return person


async def claimed(http, **overrides) -> tuple[Resident, dict]:
    account = await log_in(http)
    person = await known_person(http, **overrides)
    reply = await account.post("/mp/v1/cards", {**person, "relation": "self"})
    assert reply.status_code == 201, reply.text
    return account, reply.json()


async def strong_account(http, person: dict | None = None) -> tuple[Resident, dict]:
    """A resident (``person`` or someone new) who claimed their own card and made it strong by SMS."""
    person = person or await known_person(http)
    account = await log_in(http)
    card = (await account.post("/mp/v1/cards", {**person, "relation": "self"})).json()
    await account.post("/mp/v1/auth/sms", {"health_card_id": card["health_card_id"]})
    code = await account.last_sms_code(person["phone"])
    reply = await account.post("/mp/v1/auth/sms/verify", {"health_card_id": card["health_card_id"], "code": code})
    assert reply.status_code == 200 and reply.json()["auth_level"] == "strong", reply.text
    return account, card


# --- the cashier: orders, the cashier page, the payer at the mock channel --------------------


def order_body(base_url: str, **overrides) -> dict:
    """A hospital's create-order body whose notifications go to the mock institution at ``base_url``."""
    return {
        "out_trade_no": "HIS" + secrets.token_hex(8),
        "amount_fen": 12_345,
        "subject": "门诊缴费 处方 3 项",
        "order_type": "outpatient",
        "notify_url": f"{base_url}/_mock/institution/notify",
        "return_url": "https://his.example.org/paid",
        **overrides,
    }


async def new_order(hospital, settings, **overrides) -> dict:
    reply = await hospital.post("/cashier/v1/orders", order_body(settings.base_url, **overrides))
    assert reply.status_code == 201, reply.text
    return reply.json()


async def received(http, out_trade_no: str) -> list[dict]:
    """What the mock institution's notify URL received for this order, in arrival order."""
    return (await http.get("/_mock/institution/notifications", params={"out_trade_no": out_trade_no})).json()["items"]


async def pay_through(http, order: dict, method: str) -> dict:
    """Choose a method on the cashier page; a redirect is followed the way the browser would."""
    reply = await http.post(f"/cashier/{order['order_no']}/pay", json={"channel": method})
    assert reply.status_code == 200, reply.text
    action = reply.json()
    if action["action"] == "redirect" and "oauth2" not in action["url"]:
        await open_pay_page(http, action)
    return action


async def open_pay_page(http, action: dict) -> None:
    """The payer's browser arriving at the channel's payment page (which opens the trade there)."""
    parts = urlsplit(action["url"])
    if action.get("method") == "POST":
        page = await http.post(parts.path, data=action["fields"])
    else:
        page = await http.get(f"{parts.path}?{parts.query}")
    assert page.status_code == 200, page.text


async def confirm(http, channel: str, order_no: str) -> None:
    """The payer confirming in the channel's app; the mock then calls the platform back."""
    reply = await http.post(f"/_mock/{channel}/pay/orders/{order_no}/confirm")
    assert reply.status_code in (200, 302, 303), reply.text
