"""Resident API ``/mp/v1`` over HTTP: sessions, claim, strong auth, family, codes, access.

Residents log in by phone here (the SMS mock answers in process); WeChat and Alipay
logins drive the real SDKs against a running server in tests/e2e.
"""

from urllib.parse import quote

from tests.factories import resident
from tests.flows import assert_refused, claimed, known_person, log_in, new_phone, strong_account


async def test_login_is_required(http):
    assert_refused(await http.get("/mp/v1/cards"), 401, "UNAUTHENTICATED")
    assert_refused(await http.get("/mp/v1/cards", headers={"Authorization": "Bearer nonsense"}), 401, "UNAUTHENTICATED")
    # Regression (header fuzz): undecodable bytes reach the handler as surrogates, which
    # could not be hashed into a session key (a 500).
    for headers in ([(b"Authorization", b"Bearer " + b"\xff" * 43)], [(b"Cookie", b"ehc_session=" + b"\xff" * 43 + b"." + b"\xff" * 32)]):
        assert_refused(await http.get("/mp/v1/cards", headers=headers), 401, "UNAUTHENTICATED")


async def test_wrong_login_code_and_lockout(http):
    phone = new_phone()
    await http.post("/mp/v1/login/sms/send", json={"phone": phone})
    for _ in range(2):
        assert_refused(await http.post("/mp/v1/login/sms", json={"phone": phone, "code": "000000"}), 422, "OTP_INVALID")
    assert_refused(await http.post("/mp/v1/login/sms", json={"phone": phone, "code": "000000"}), 423, "OTP_LOCKED")


async def test_login_sms_is_rate_limited_per_phone(http):
    phone = new_phone()
    assert (await http.post("/mp/v1/login/sms/send", json={"phone": phone})).status_code == 200
    assert_refused(await http.post("/mp/v1/login/sms/send", json={"phone": phone}), 429, "RATE_LIMITED")


async def test_logout_ends_the_session(http):
    account = await log_in(http)
    assert (await account.post("/mp/v1/logout")).status_code == 200
    assert_refused(await account.get("/mp/v1/cards"), 401, "UNAUTHENTICATED")


async def test_claim_lists_and_shows_the_card(http):
    account, card = await claimed(http)
    assert card["relation"] == "self" and card["auth_level"] == "weak"
    assert "*" in card["id_number"] and "address" not in card
    listed = (await account.get("/mp/v1/cards")).json()["items"]
    assert [c["health_card_id"] for c in listed] == [card["health_card_id"]]


async def test_claim_refusals(http):
    account = await log_in(http)
    stranger = resident()
    assert_refused(await account.post("/mp/v1/cards", {**stranger, "relation": "self"}), 422, "IDENTITY_UNKNOWN")
    person = await known_person(http)
    assert_refused(await account.post("/mp/v1/cards", {**person, "name": "李鬼", "relation": "self"}), 409, "IDENTITY_MISMATCH")
    assert_refused(await account.post("/mp/v1/cards", {**person, "relation": "cousin"}), 422, "VALIDATION_ERROR")
    assert (await account.post("/mp/v1/cards", {**person, "relation": "self"})).status_code == 201
    other = await log_in(http)
    assert_refused(await other.post("/mp/v1/cards", {**person, "relation": "self"}), 409, "CARD_ALREADY_CLAIMED")


async def test_another_accounts_card_is_not_found(http):
    owner, card = await claimed(http)
    stranger = await log_in(http)
    card_id = card["health_card_id"]
    for path in (f"/mp/v1/cards/{card_id}", f"/mp/v1/cards/{card_id}/codes/static", f"/mp/v1/cards/{card_id}/usage"):
        reply = await stranger.get(path)
        assert_refused(reply, 404, "CARD_NOT_FOUND")
        assert card_id not in reply.text.replace(path, "")
    assert_refused(await stranger.post(f"/mp/v1/cards/{card_id}/codes/dynamic"), 404, "CARD_NOT_FOUND")
    assert_refused(await stranger.post("/mp/v1/auth/sms", {"health_card_id": card_id}), 404, "CARD_NOT_FOUND")


async def test_ids_no_card_or_account_can_have_are_not_found(http):
    """Regression (fuzz): ids longer than their column were a 500 (the ORM checks a filter's length)."""
    owner, card = await claimed(http)
    for card_id in ("A" * 65, quote("健康卡" * 10, safe="")):
        for path in (f"/mp/v1/cards/{card_id}", f"/mp/v1/cards/{card_id}/managers", f"/mp/v1/cards/{card_id}/usage"):
            assert_refused(await owner.get(path), 404, "CARD_NOT_FOUND")
        assert_refused(await owner.delete(f"/mp/v1/cards/{card_id}/managers/me"), 404, "CARD_NOT_FOUND")
    for account_id in ("acc_" + "0" * 40, quote("健康卡", safe="")):
        reply = await owner.delete(f"/mp/v1/cards/{card['health_card_id']}/managers/{account_id}")
        assert_refused(reply, 404, "NOT_FOUND")


async def test_sms_strong_auth_limits_and_lockout(http):
    account, card = await claimed(http)
    card_id = card["health_card_id"]
    sent = await account.post("/mp/v1/auth/sms", {"health_card_id": card_id})
    assert sent.status_code == 200 and "*" in sent.json()["phone"]
    assert_refused(await account.post("/mp/v1/auth/sms", {"health_card_id": card_id}), 429, "RATE_LIMITED")
    for _ in range(2):
        assert_refused(await account.post("/mp/v1/auth/sms/verify", {"health_card_id": card_id, "code": "000000"}), 422, "OTP_INVALID")
    assert_refused(await account.post("/mp/v1/auth/sms/verify", {"health_card_id": card_id, "code": "000000"}), 423, "OTP_LOCKED")


async def test_strong_auth_by_sms(http):
    account, card = await strong_account(http)
    shown = (await account.get(f"/mp/v1/cards/{card['health_card_id']}")).json()
    assert shown["auth_level"] == "strong"


async def test_face_strong_auth(http):
    account, card = await claimed(http)
    started = await account.post("/mp/v1/auth/face", {"health_card_id": card["health_card_id"]})
    assert started.status_code == 200
    order_id = started.json()["order_id"]
    assert started.json()["verify_url"]
    assert (await account.get(f"/mp/v1/auth/face/{order_id}")).json()["status"] == "pending"
    await http.post(f"/_mock/face/orders/{order_id}/complete", json={"result": "pass"})
    result = (await account.get(f"/mp/v1/auth/face/{order_id}")).json()
    assert result == {"order_id": order_id, "status": "pass", "auth_level": "strong"}
    stranger = await log_in(http)
    assert_refused(await stranger.get(f"/mp/v1/auth/face/{order_id}"), 404, "NOT_FOUND")


async def test_family_members_limit_duplicates_and_strong_auth(http, rt):
    weak_account, _ = await claimed(http)
    member = await known_person(http)
    assert_refused(await weak_account.post("/mp/v1/cards", {**member, "relation": "parent"}), 403, "STRONG_AUTH_REQUIRED")
    account, _ = await strong_account(http)
    for _ in range(rt.settings.family_limit):
        relative = await known_person(http)
        assert (await account.post("/mp/v1/cards", {**relative, "relation": "child"})).status_code == 201
    assert_refused(await account.post("/mp/v1/cards", {**relative, "relation": "child"}), 409, "ALREADY_MANAGED")
    assert_refused(await account.post("/mp/v1/cards", {**member, "relation": "parent"}), 409, "FAMILY_LIMIT")
    listed = (await account.get("/mp/v1/cards")).json()["items"]
    assert [c["relation"] for c in listed] == ["self"] + ["child"] * rt.settings.family_limit


async def test_child_without_id_and_both_parents(http):
    mother, mother_card = await strong_account(http)
    father, _ = await strong_account(http)
    guardian = await known_person(http)
    child = {
        "name": "小明", "gender": "1", "birth_date": "2025-08-08", "relation": "child", "parity": 1,
        "guardian": {k: guardian[k] for k in ("name", "id_type", "id_number", "phone")},
    }
    first = await mother.post("/mp/v1/cards", child)
    assert first.status_code == 201, first.text
    second = await father.post("/mp/v1/cards", child)
    assert second.status_code == 200 and second.json()["health_card_id"] == first.json()["health_card_id"]
    assert second.json()["relation"] == "child"
    assert (await father.delete(f"/mp/v1/cards/{first.json()['health_card_id']}/managers/me")).status_code == 200
    assert_refused(await father.get(f"/mp/v1/cards/{first.json()['health_card_id']}"), 404, "CARD_NOT_FOUND")
    assert_refused(await mother.delete(f"/mp/v1/cards/{mother_card['health_card_id']}/managers/me"), 409, "CARD_STATE_CONFLICT")


async def test_managed_person_takes_the_card_over_and_removes_a_manager(http):
    parent, _ = await strong_account(http)
    person = await known_person(http)
    added = (await parent.post("/mp/v1/cards", {**person, "relation": "child"})).json()
    grown_up = await log_in(http)
    taken = await grown_up.post("/mp/v1/cards", {**person, "relation": "self"})
    assert taken.status_code == 200 and taken.json()["relation"] == "self"
    assert taken.json()["health_card_id"] == added["health_card_id"]
    managers = (await grown_up.get(f"/mp/v1/cards/{added['health_card_id']}/managers")).json()["items"]
    assert len(managers) == 1
    removed = await grown_up.delete(f"/mp/v1/cards/{added['health_card_id']}/managers/{managers[0]['account_id']}")
    assert removed.status_code == 200
    assert_refused(await parent.get(f"/mp/v1/cards/{added['health_card_id']}"), 404, "CARD_NOT_FOUND")


async def test_static_and_dynamic_codes(http, terminal):
    account, card = await claimed(http)
    card_id = card["health_card_id"]
    static = (await account.get(f"/mp/v1/cards/{card_id}/codes/static")).json()
    assert static["qr_code_text"] == f"{card_id}:1" and static["svg"].startswith("<svg")
    dynamic = (await account.post(f"/mp/v1/cards/{card_id}/codes/dynamic")).json()
    assert dynamic["qr_code_text"].startswith(f"{card_id}:0:") and 0 < dynamic["refresh_in"] < 60
    state_path = f"/mp/v1/cards/{card_id}/codes/dynamic/state"
    assert (await account.get(state_path, params={"code": dynamic["qr_code_text"]})).json() == {"state": "fresh"}
    verified = await terminal.post("/inst/v1/codes/verify", {"qr_code_text": dynamic["qr_code_text"], "scene": "consultation"})
    assert verified.status_code == 200
    assert (await account.get(state_path, params={"code": dynamic["qr_code_text"]})).json() == {"state": "used"}
    history = (await account.get(f"/mp/v1/cards/{card_id}/usage")).json()
    assert history["verifications"][0]["result"] == "ok"
    assert_refused(await account.post(f"/mp/v1/cards/{card_id}/codes/dynamic?with_payment=1"), 409, "PAYMENT_ACCOUNT_NOT_BOUND")


async def test_acting_for_a_family_member_needs_strong_auth(http):
    account, own = await strong_account(http)
    member = await known_person(http)
    added = (await account.post("/mp/v1/cards", {**member, "relation": "parent"})).json()
    code = await account.post(f"/mp/v1/cards/{added['health_card_id']}/codes/dynamic")
    assert code.status_code == 200


async def test_h5_cookie_session_and_its_header_rule(http):
    phone = new_phone()
    await http.post("/mp/v1/login/sms/send", json={"phone": phone})
    code = (await http.get("/_mock/sms/messages", params={"phone": phone})).json()["items"][0]["code"]
    login = await http.post("/mp/v1/login/sms", json={"phone": phone, "code": code})
    http.cookies.clear()
    set_cookie = login.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
    cookie = {"Cookie": set_cookie.split(";")[0]}
    assert (await http.get("/mp/v1/cards", headers=cookie)).status_code == 200
    # A change needs the header only the platform's own pages send (no cross-site forms).
    refused = await http.post("/mp/v1/auth/sms", json={"health_card_id": "A" * 64}, headers=cookie)
    assert_refused(refused, 401, "UNAUTHENTICATED")
    allowed = await http.post("/mp/v1/auth/sms", json={"health_card_id": "A" * 64}, headers={**cookie, "X-EHC-H5": "1"})
    assert_refused(allowed, 404, "CARD_NOT_FOUND")
    forged = {"Cookie": cookie["Cookie"][:-4] + "0000"}
    assert_refused(await http.get("/mp/v1/cards", headers=forged), 401, "UNAUTHENTICATED")
