"""At the hospital counter: registration with a printed label (发码建档), the static code's
second check in payment, cards frozen and cancelled, terminals of a disabled institution."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from mocks.scanner import Credentials
from tests.conftest import Signer
from tests.factories import resident
from tests.flows import assert_refused, scanned, strong_account

ROOT = Path(__file__).resolve().parents[2]


async def test_registration_at_the_counter_and_its_printed_label(platform, demo, hospital, new_reader):
    window = await new_reader("门诊一楼挂号窗口 1")
    counter_his = hospital.acting_for(window.client_id)  # the HIS registers at this window
    person = resident()
    registered = await counter_his.post("/inst/v1/cards", person)
    assert registered.status_code == 201, registered.text
    card = registered.json()
    card_id = card["health_card_id"]
    assert card["status"] == "active" and card["auth_level"] == "weak"
    assert card["qr_code_text"] == f"{card_id}:1"
    assert card["id_number"] != person["id_number"] and "*" in card["id_number"]
    again = await counter_his.post("/inst/v1/cards", person)
    assert again.status_code == 200 and again.json()["health_card_id"] == card_id

    # The label printer's picture: 200 dpi, read back at this window and at the next counter.
    label = await window.fetch_image(f"/inst/v1/cards/{card_id}/label.png")
    assert [round(d) for d in Image.open(io.BytesIO(label)).info["dpi"]] == [200, 200]
    first = scanned(await window.verify(label, "registration", preset="sticker_200dpi", seed=1), 200)
    assert first["health_card_id"] == card_id and first["code_type"] == "static"
    assert first["name"] == person["name"] and "*" in first["id_number"]
    clinic = await new_reader("内科诊室 2")
    worn = await clinic.verify(label, "consultation", preset="sticker_worn", seed=2)
    assert scanned(worn, 200)["health_card_id"] == card_id

    # The same from the command line: a new self-service kiosk registers itself and reads the label.
    command = [
        sys.executable, "-m", "mocks.scanner", "--base-url", platform.base_url,
        "--register", "自助机 3", "--institution-id", demo["institution"]["client_id"],
        "--institution-secret", demo["institution"]["secret"], "--admin-id", demo["admin"]["client_id"],
        "--admin-secret", demo["admin"]["secret"], "--image-url", f"/inst/v1/cards/{card_id}/label.png",
        "--preset", "perspective_counter", "--seed", "3", "--scene", "registration",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["decoded"] and report["text"] == card["qr_code_text"] and report["status"] == 200
    assert report["reply"]["health_card_id"] == card_id
    assert report["terminal"]["client_id"].startswith("trm_") and report["terminal"]["secret"]


async def test_static_code_in_payment_needs_the_holders_sms_code(http, hospital, new_reader):
    person = resident()
    static = (await hospital.post("/inst/v1/cards", person)).json()["qr_code_text"]
    cashier_window = await new_reader("门诊收费窗口 2")

    def pay_with(seed: int, otp: str | None = None):
        return cashier_window.verify(static, "payment", preset="sticker_rotated", seed=seed, otp=otp)

    refused = await pay_with(4)
    scanned(refused, 403, "SCENE_REQUIRES_DYNAMIC")
    sent = await cashier_window.send_second_check(refused.text, "payment")
    assert sent.status_code == 200, sent.text
    assert sent.json()["phone"] == person["phone"][:3] + "****" + person["phone"][-4:]
    inbox = (await http.get("/_mock/sms/messages", params={"phone": person["phone"]})).json()["items"]
    message = inbox[0]
    assert "缴费" in message["text"] and message["code"]

    wrong = "000000" if message["code"] != "000000" else "111111"
    scanned(await pay_with(5, wrong), 422, "OTP_INVALID")
    reply = scanned(await pay_with(6, message["code"]), 200)
    assert reply["code_type"] == "static" and reply["name"] == person["name"]
    # The code was spent by that payment; a non-critical scene needs none.
    scanned(await pay_with(7, message["code"]), 422, "OTP_INVALID")
    scanned(await cashier_window.verify(static, "registration", preset="sticker_200dpi", seed=8), 200)


async def test_codes_of_a_frozen_or_cancelled_card_are_refused(http, hospital, new_reader):
    account, card = await strong_account(http)
    card_id = card["health_card_id"]
    reader = await new_reader("门诊二楼分诊台")
    static = (await account.get(f"/mp/v1/cards/{card_id}/codes/static")).json()["qr_code_text"]
    shown = (await account.post(f"/mp/v1/cards/{card_id}/codes/dynamic")).json()["qr_code_text"]

    async def change(action: str, reason: str) -> str:
        reply = await hospital.post(f"/inst/v1/cards/{card_id}/{action}", {"reason": reason})
        assert reply.status_code == 200, reply.text
        return reply.json()["status"]

    # Reported lost (挂失): nothing of the card reads until it is found again.
    assert await change("freeze", "挂失") == "frozen"
    scanned(await reader.verify(static, "consultation", preset="phone_bright", seed=9), 403, "CARD_INACTIVE")
    assert await change("unfreeze", "找回") == "active"
    scanned(await reader.verify(static, "consultation", preset="phone_bright", seed=10), 200)

    assert await change("cancel", "本人申请注销") == "cancelled"
    scanned(await reader.verify(shown, "consultation", preset="phone_bright", seed=11), 403, "CARD_INACTIVE")
    scanned(await reader.verify(static, "registration", preset="phone_bright", seed=12), 403, "CARD_INACTIVE")
    assert_refused(await account.post(f"/mp/v1/cards/{card_id}/codes/dynamic"), 403, "CARD_INACTIVE")
    listed = (await account.get("/mp/v1/cards")).json()["items"]
    assert [c["status"] for c in listed if c["health_card_id"] == card_id] == ["cancelled"]
    assert_refused(await hospital.post(f"/inst/v1/cards/{card_id}/unfreeze", {}), 409, "CARD_STATE_CONFLICT")


async def test_terminal_of_a_disabled_institution_is_refused(http, platform, demo, operator, new_reader):
    applied = await http.post("/inst/v1/register", json={"name": "城东社区卫生服务中心"})
    assert applied.status_code == 201, applied.text
    clinic = Credentials(applied.json()["client_id"], applied.json()["secret"])
    his = Signer(http, clinic.client_id, clinic.secret)
    assert_refused(await his.get("/inst/v1/me"), 403, "CLIENT_DISABLED")  # until an operator approves it
    approved = await operator.post(f"/admin/v1/institutions/{clinic.client_id}/approve")
    assert approved.json()["status"] == "approved"

    reader = await new_reader("社区门诊扫码墩", institution=clinic)
    static = (await his.post("/inst/v1/cards", resident())).json()["qr_code_text"]
    scanned(await reader.verify(static, "registration", preset="sticker_200dpi", seed=13), 200)

    disabled = await operator.post(f"/admin/v1/institutions/{clinic.client_id}/disable", {"reason": "停用"})
    assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"
    refused = await reader.verify(static, "registration", preset="sticker_200dpi", seed=14)
    assert "institution" in scanned(refused, 403, "CLIENT_DISABLED")["message"]
    assert_refused(await his.get("/inst/v1/me"), 403, "CLIENT_DISABLED")
    # Other hospitals' terminals go on reading the same card.
    elsewhere = await new_reader("演示医院 急诊分诊台")
    scanned(await elsewhere.verify(static, "registration", preset="sticker_200dpi", seed=15), 200)
