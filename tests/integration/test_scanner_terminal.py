"""A simulated reader terminal scans codes as a camera sees them and asks the platform, signed as itself."""

import pytest

from cardcore.audit import Actor
from cardcore.verify import issue_dynamic_code
from mocks.scanner import AsyncScanner
from tests.factories import resident

WALLET = Actor(client_id="wallet")


@pytest.fixture
async def scanner(http, terminal):
    async with AsyncScanner(str(http.base_url), terminal.client_id, terminal.secret, http=http) as reader:
        yield reader


async def register_card(terminal) -> dict:
    reply = await terminal.post("/inst/v1/cards", resident())
    assert reply.status_code == 201, reply.text
    return reply.json()


async def test_printed_label_is_read_at_the_registration_counter(terminal, scanner):
    card = await register_card(terminal)
    label = await scanner.fetch_image(f"/inst/v1/cards/{card['health_card_id']}/label.png")
    report = await scanner.verify(label, "registration", preset="sticker_200dpi", seed=5)
    assert report.decoded and report.text == card["qr_code_text"]
    assert report.status == 200, report.reply
    assert report.reply["health_card_id"] == card["health_card_id"]
    assert report.reply["code_type"] == "static"


async def test_dynamic_code_on_a_phone_verifies_once_and_its_screenshot_is_refused(rt, terminal, scanner):
    card = await register_card(terminal)
    code = (await issue_dynamic_code(rt, card["health_card_id"], WALLET)).qr_code_text

    first = await scanner.verify(code, "consultation", preset="phone_tilted", seed=1)
    assert first.text == code
    assert first.status == 200, first.reply
    assert first.reply["code_type"] == "dynamic"
    assert first.reply["health_card_id"] == card["health_card_id"]

    replay = await scanner.verify(code, "consultation", preset="phone_glare", seed=2)
    assert replay.text == code
    assert replay.status == 409 and replay.reply["code"] == "CODE_USED"
