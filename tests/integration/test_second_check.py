"""Second check of a static code in a critical scene (静态二维码二次校验) over HTTP: the terminal
has the platform text the holder a one-time code, and verifies the static code with it."""

import pytest

from cardcore.audit import Actor
from cardcore.verify import issue_dynamic_code
from tests.factories import resident
from tests.flows import assert_refused


@pytest.fixture
async def card(terminal):
    reply = await terminal.post("/inst/v1/cards", resident())
    assert reply.status_code == 201, reply.text
    return reply.json()


async def inbox(http, phone: str) -> list[dict]:
    return (await http.get("/_mock/sms/messages", params={"phone": phone})).json()["items"]


async def test_holder_receives_the_code_and_the_static_code_passes_with_it(http, admin, institution, terminal, card):
    static = card["qr_code_text"]
    verify = {"qr_code_text": static, "scene": "payment"}
    assert_refused(await terminal.post("/inst/v1/codes/verify", verify), 403, "SCENE_REQUIRES_DYNAMIC")

    sent = await terminal.post("/inst/v1/codes/otp", verify)
    assert sent.status_code == 200, sent.text
    assert sent.json()["expires_in"] == 300
    await admin.patch(f"/admin/v1/institutions/{institution.client_id}", {"scopes": ["identity.full"]})
    phone = (await institution.get(f"/inst/v1/cards/{card['health_card_id']}")).json()["phone"]
    assert sent.json()["phone"] == phone[:3] + "****" + phone[-4:]
    message = (await inbox(http, phone))[0]
    assert "缴费" in message["text"] and message["code"]

    passed = await terminal.post("/inst/v1/codes/verify", {**verify, "otp": message["code"]})
    assert passed.status_code == 200, passed.text
    assert passed.json()["code_type"] == "static" and passed.json()["health_card_id"] == card["health_card_id"]
    # One code, one use.
    assert_refused(await terminal.post("/inst/v1/codes/verify", {**verify, "otp": message["code"]}), 422, "OTP_INVALID")


async def test_institution_asks_on_behalf_of_its_terminal(institution, terminal, card):
    body = {"qr_code_text": card["qr_code_text"], "scene": "record_access", "terminal_id": terminal.client_id}
    assert (await institution.post("/inst/v1/codes/otp", body)).status_code == 200


async def test_a_second_message_within_a_minute_is_refused(terminal, card):
    body = {"qr_code_text": card["qr_code_text"], "scene": "payment"}
    assert (await terminal.post("/inst/v1/codes/otp", body)).status_code == 200
    assert_refused(await terminal.post("/inst/v1/codes/otp", body), 429, "RATE_LIMITED")


async def test_only_a_static_code_of_an_active_card_in_a_critical_scene_gets_one(rt, institution, terminal, card):
    static = card["qr_code_text"]
    dynamic = (await issue_dynamic_code(rt, card["health_card_id"], Actor(client_id="wallet"))).qr_code_text

    async def ask(text, scene="payment"):
        return await terminal.post("/inst/v1/codes/otp", {"qr_code_text": text, "scene": scene})

    assert_refused(await ask(static, "consultation"), 422, "VALIDATION_ERROR")
    assert_refused(await ask(static, "dance"), 422, "VALIDATION_ERROR")
    assert_refused(await ask(dynamic), 422, "VALIDATION_ERROR")
    assert_refused(await ask("not a code"), 422, "CODE_MALFORMED")
    assert_refused(await ask("0" * 64 + ":1"), 404, "CARD_NOT_FOUND")
    assert (await institution.post(f"/inst/v1/cards/{card['health_card_id']}/cancel", {"reason": "注销"})).status_code == 200
    assert_refused(await ask(static), 403, "CARD_INACTIVE")
