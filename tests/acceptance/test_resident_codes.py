"""The resident's own phone: claim and strong authentication, dynamic codes through a visit,
a screenshot of a used code, and a guardian showing a family member's code."""

from __future__ import annotations

from mocks.scanner import code_picture
from tests.flows import Resident, assert_refused, known_person, log_in, scanned, strong_account


async def wechat_login(http, openid: str) -> Resident:
    """The resident opening the mini-program: ``wx.login`` (the mock), then the platform's login."""
    code = (await http.post("/_mock/wechat/wxa/login", json={"openid": openid})).json()["code"]
    reply = await http.post("/mp/v1/login/wechat", json={"code": code})
    assert reply.status_code == 200, reply.text
    http.cookies.clear()  # the H5 cookie of this login stays with this resident
    return Resident(http, reply.json()["token"], phone="")


async def test_resident_claims_authenticates_and_is_scanned_through_a_visit(http, new_reader):
    person = await known_person(http)
    phone = await wechat_login(http, "o-accept-" + person["id_number"][-8:])
    claimed = await phone.post("/mp/v1/cards", {**person, "relation": "self"})
    assert claimed.status_code == 201, claimed.text
    card_id = claimed.json()["health_card_id"]
    assert claimed.json()["auth_level"] == "weak"

    sent = await phone.post("/mp/v1/auth/sms", {"health_card_id": card_id})
    assert sent.status_code == 200 and sent.json()["phone"].endswith(person["phone"][-4:])
    sms = (await http.get("/_mock/sms/messages", params={"phone": person["phone"]})).json()["items"][0]
    strong = await phone.post("/mp/v1/auth/sms/verify", {"health_card_id": card_id, "code": sms["code"]})
    assert strong.status_code == 200 and strong.json()["auth_level"] == "strong"

    visit = [
        ("consultation", "内科诊室 5", "phone_bright"),
        ("pharmacy", "门诊西药房 1", "phone_dim"),
        ("examination", "检验科采血窗口", "phone_tilted"),
    ]
    for seed, (scene, place, preset) in enumerate(visit):
        reader = await new_reader(place)
        shown = await phone.post(f"/mp/v1/cards/{card_id}/codes/dynamic")
        assert shown.status_code == 200 and 0 < shown.json()["refresh_in"] < 60
        report = await reader.verify(shown.json()["qr_code_text"], scene, preset=preset, seed=seed)
        assert report.text == shown.json()["qr_code_text"]
        reply = scanned(report, 200)
        assert reply["health_card_id"] == card_id and reply["name"] == person["name"]
        assert (reply["code_type"], reply["auth_level"]) == ("dynamic", "strong")
        assert reply["card_status"] == "active"

    history = (await phone.get(f"/mp/v1/cards/{card_id}/usage")).json()["verifications"]
    assert [(v["scene"], v["result"], v["code_type"]) for v in history] == [
        ("examination", "ok", "dynamic"), ("pharmacy", "ok", "dynamic"), ("consultation", "ok", "dynamic"),
    ]  # fmt: skip


async def test_screenshot_of_a_used_dynamic_code_is_refused(http, operator, new_reader):
    account, card = await strong_account(http)
    card_id = card["health_card_id"]
    shown = (await account.post(f"/mp/v1/cards/{card_id}/codes/dynamic")).json()["qr_code_text"]
    screen = code_picture(shown, "phone")  # what the phone shows, and what a screenshot of it keeps

    triage = await new_reader("门诊三楼分诊台")
    scanned(await triage.verify(screen, "consultation", preset="phone_bright", seed=20), 200)
    state = await account.get(f"/mp/v1/cards/{card_id}/codes/dynamic/state", params={"code": shown})
    assert state.json() == {"state": "used"}  # the card page replaces the code at once

    # The screenshot, shown at other windows: read exactly, refused every time, then locked.
    elsewhere = await new_reader("门诊西药房 2")
    for seed in (21, 22, 23):
        replay = await elsewhere.verify(screen, "pharmacy", preset="phone_glare", seed=seed)
        assert replay.text == shown
        scanned(replay, 409, "CODE_USED")
    scanned(await elsewhere.verify(screen, "pharmacy", preset="phone_glare", seed=24), 423, "CODE_LOCKED")
    locks = (await operator.get("/admin/v1/lockouts")).json()["items"]
    assert ("code", card_id) in [(lock["kind"], lock["health_card_id"]) for lock in locks]

    # The card itself is not locked: the next code on the phone reads.
    fresh = (await account.post(f"/mp/v1/cards/{card_id}/codes/dynamic")).json()["qr_code_text"]
    scanned(await elsewhere.verify(fresh, "pharmacy", preset="phone_glare", seed=25), 200)


async def test_family_members_code_shown_by_a_guardian_is_scanned(http, new_reader):
    mother = await known_person(http, gender="2")
    guardian, own = await strong_account(http, mother)
    newborn = {
        "name": "小宝", "gender": "2", "birth_date": "2025-09-01", "relation": "child", "parity": 1,
        "guardian": {k: mother[k] for k in ("name", "id_type", "id_number", "phone")},
    }  # fmt: skip
    child = await guardian.post("/mp/v1/cards", newborn)
    assert child.status_code == 201, child.text
    assert child.json()["id_type"] == "99"  # no document yet: an EMPI domain index under the guardian
    grandmother = await known_person(http, gender="2")
    parent = await guardian.post("/mp/v1/cards", {**grandmother, "relation": "parent"})
    assert parent.status_code == 201, parent.text
    listed = (await guardian.get("/mp/v1/cards")).json()["items"]
    assert [c["relation"] for c in listed] == ["self", "child", "parent"]

    paediatrics = await new_reader("儿科诊室 1")
    family = [
        (child.json(), "小宝", "99", "consultation"),
        (parent.json(), grandmother["name"], "01", "pharmacy"),
    ]
    for seed, (member, name, id_type, scene) in enumerate(family, start=30):
        member_id = member["health_card_id"]
        shown = (await guardian.post(f"/mp/v1/cards/{member_id}/codes/dynamic")).json()["qr_code_text"]
        reply = scanned(await paediatrics.verify(shown, scene, preset="phone_far", seed=seed), 200)
        assert reply["health_card_id"] == member_id != own["health_card_id"]
        assert (reply["name"], reply["id_type"], reply["code_type"]) == (name, id_type, "dynamic")
        history = (await guardian.get(f"/mp/v1/cards/{member_id}/usage")).json()["verifications"]
        assert [(v["scene"], v["result"]) for v in history] == [(scene, "ok")]

    # Nobody else can show the child's code.
    stranger = await log_in(http)
    child_id = child.json()["health_card_id"]
    assert_refused(await stranger.post(f"/mp/v1/cards/{child_id}/codes/dynamic"), 404, "CARD_NOT_FOUND")
