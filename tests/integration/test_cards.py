"""Card accounts and code verification over HTTP (API.md "Institution and terminal API")."""

import asyncio
import io
import time
from urllib.parse import quote

import pytest
import zxingcpp
from PIL import Image
from tortoise import connections

from cardcore import codeevents, otp, signing
from cardcore.codes import CodeText, parse_code_text, seal_valid
from cardcore.models import CodeEvent, UsageReport
from cardcore.verify import STATIC_CODE_OTP, issue_dynamic_code
from cardcore.audit import Actor
from tests.factories import resident
from tests.flows import assert_refused

WALLET = Actor(client_id="wallet-test")


async def dynamic_code(rt, card) -> str:
    return (await issue_dynamic_code(rt, card["health_card_id"], WALLET)).qr_code_text


def verify(signer, text, scene="consultation", **extra):
    return signer.post("/inst/v1/codes/verify", {"qr_code_text": text, "scene": scene, **extra})


async def test_registration_is_idempotent_per_person(terminal, institution):
    person = resident()
    first = await terminal.post("/inst/v1/cards", person)
    assert first.status_code == 201
    body = first.json()
    assert len(body["health_card_id"]) == 64 and body["health_card_id"].isupper()
    assert body["status"] == "active" and body["auth_level"] == "weak"
    assert body["qr_code_text"] == body["health_card_id"] + ":1"
    again = await institution.post("/inst/v1/cards", {**person, "address": "别处"})
    assert again.status_code == 200
    assert again.json()["health_card_id"] == body["health_card_id"]
    assert again.json()["empi_id"] == body["empi_id"]


async def test_same_number_under_another_name_is_refused(terminal):
    # Same document, other name: registering again must not hand out the card.
    person = resident()
    assert (await terminal.post("/inst/v1/cards", person)).status_code == 201
    assert_refused(await terminal.post("/inst/v1/cards", {**person, "name": "冒名顶替"}), 409, "IDENTITY_MISMATCH")


@pytest.mark.parametrize(
    "change, field",
    [
        ({"id_number": "610102199001010010"}, "check digit"),
        ({"gender": "2", "id_number": "61010219900101001X"}, ""),
        ({"phone": "12345"}, "phone"),
        ({"id_type": "42"}, "id_type"),
        ({"birth_date": "2999-01-01"}, "birth_date"),
        ({"name": "张\u202e三"}, "U+202E"),
        ({"address": "西安市\n雁塔区"}, "U+000A"),
    ],
)
async def test_invalid_identity_is_refused_with_the_reason(terminal, change, field):
    reply = await terminal.post("/inst/v1/cards", resident(**change))
    assert_refused(reply, 422, "VALIDATION_ERROR")
    assert field in reply.text


async def test_birth_date_and_sex_must_match_the_number(terminal):
    person = resident(gender="1")
    assert_refused(await terminal.post("/inst/v1/cards", {**person, "gender": "2"}), 422, "VALIDATION_ERROR")
    assert_refused(await terminal.post("/inst/v1/cards", {**person, "birth_date": "1949-01-01"}), 422, "VALIDATION_ERROR")


async def test_read_card_masks_identity_unless_scope_allows(admin, institution, card):
    masked = (await institution.get(f"/inst/v1/cards/{card['health_card_id']}")).json()
    assert "*" in masked["id_number"] and "*" in masked["phone"]
    await admin.patch(f"/admin/v1/institutions/{institution.client_id}", {"scopes": ["identity.full"]})
    full = (await institution.get(f"/inst/v1/cards/{card['health_card_id']}")).json()
    assert "*" not in full["id_number"] and full["id_number"].startswith("610102")
    assert_refused(await institution.get("/inst/v1/cards/" + "0" * 64), 404, "CARD_NOT_FOUND")


@pytest.mark.parametrize("card_id", ["A" * 65, "a" * 64, "健康卡" * 10, "::\x80𐀀"])
async def test_a_card_id_no_card_can_have_is_not_found(institution, card_id):
    """Regression (fuzz): ids longer than the column were a 500 (the ORM checks a filter's length)."""
    path = "/inst/v1/cards/" + quote(card_id, safe="")
    for reply in (
        await institution.get(path),
        await institution.get(path + "/label.png"),
        await institution.patch(path, {"address": "西安"}),
        await institution.post(path + "/freeze", {}),
    ):
        assert_refused(reply, 404, "CARD_NOT_FOUND")


async def test_operators_read_the_audit_trail_of_a_card(admin, institution, terminal, card):
    card_id = card["health_card_id"]
    await institution.get(f"/inst/v1/cards/{card_id}")
    await institution.patch(f"/inst/v1/cards/{card_id}", {"address": "陕西省西安市雁塔区"})
    trail = (await admin.get(f"/admin/v1/audit-events?subject={card_id}")).json()
    assert [(e["action"], e["actor"]) for e in trail["items"]] == [
        ("card.update", institution.client_id),
        ("card.read", institution.client_id),
        ("card.register", institution.client_id),  # the terminal acts for its institution
    ]
    assert trail["items"][-1]["terminal_id"] == terminal.client_id and trail["items"][0]["detail"] == {"fields": ["address"]}
    # Filters and pages: an action prefix, one at a time with the cursor.
    first = (await admin.get(f"/admin/v1/audit-events?subject={card_id}&action=card.&limit=1")).json()
    second = (await admin.get(f"/admin/v1/audit-events?subject={card_id}&action=card.&limit=1&cursor={first['next_cursor']}")).json()
    assert [e["action"] for e in first["items"] + second["items"]] == ["card.update", "card.read"]
    only_reads = (await admin.get(f"/admin/v1/audit-events?subject={card_id}&action=card.read")).json()["items"]
    assert [e["action"] for e in only_reads] == ["card.read"]
    # Only operators see it; bad input gets the envelope.
    assert (await institution.get(f"/admin/v1/audit-events?subject={card_id}")).status_code == 403
    assert_refused(await admin.get("/admin/v1/audit-events?cursor=abc"), 422, "VALIDATION_ERROR")
    assert_refused(await admin.get("/admin/v1/audit-events?limit=0"), 422, "VALIDATION_ERROR")


async def test_static_code_verifies_in_registration(terminal, card):
    reply = await verify(terminal, card["qr_code_text"], "registration")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["result"] == "ok" and body["code_type"] == "static"
    assert body["health_card_id"] == card["health_card_id"] and body["empi_id"] == card["empi_id"]
    assert body["auth_level"] == "weak" and body["card_status"] == "active"
    assert "*" in body["id_number"]


@pytest.mark.parametrize("scene", ["payment", "record_access"])
async def test_static_code_needs_a_second_check_in_critical_scenes(rt, terminal, card, scene):
    assert_refused(await verify(terminal, card["qr_code_text"], scene), 403, "SCENE_REQUIRES_DYNAMIC")
    code = await otp.issue(rt, STATIC_CODE_OTP, card["health_card_id"])
    wrong = "000000" if code != "000000" else "111111"
    assert_refused(await verify(terminal, card["qr_code_text"], scene, otp=wrong), 422, "OTP_INVALID")
    reply = await verify(terminal, card["qr_code_text"], scene, otp=code)
    assert reply.status_code == 200 and reply.json()["code_type"] == "static"
    # The code is spent by its first use.
    assert_refused(await verify(terminal, card["qr_code_text"], scene, otp=code), 422, "OTP_INVALID")


async def test_three_wrong_otps_lock_the_second_check(rt, terminal, card):
    await otp.issue(rt, STATIC_CODE_OTP, card["health_card_id"])
    for _ in range(2):
        assert_refused(await verify(terminal, card["qr_code_text"], "payment", otp="999999"), 422, "OTP_INVALID")
    assert_refused(await verify(terminal, card["qr_code_text"], "payment", otp="999999"), 423, "OTP_LOCKED")


async def test_dynamic_code_verifies_once(rt, terminal, card):
    text = await dynamic_code(rt, card)
    first = await verify(terminal, text, "payment")
    assert first.status_code == 200 and first.json()["code_type"] == "dynamic"
    assert_refused(await verify(terminal, text, "payment"), 409, "CODE_USED")


async def test_expired_dynamic_code(rt, terminal, card):
    valid = seal_valid(rt.vault, card["health_card_id"], int(time.time()) - 1)
    text = CodeText.dynamic(card["health_card_id"], valid).format()
    assert_refused(await verify(terminal, text), 410, "CODE_EXPIRED")


async def test_any_hex_digit_changed_is_invalid(rt, terminal, card):
    text = await dynamic_code(rt, card)
    valid_start = len(card["health_card_id"]) + len(":0:")
    for position in (valid_start, valid_start + 15, len(text) - 1):
        digit = text[position]
        changed = text[:position] + ("0" if digit != "0" else "1") + text[position + 1 :]
        assert_refused(await verify(terminal, changed), 422, "CODE_INVALID")
    # The genuine code was never spent by the failed attempts.
    assert (await verify(terminal, text)).status_code == 200


async def test_changed_vuid_digit_is_unknown_or_invalid(rt, terminal, card):
    text = await dynamic_code(rt, card)
    changed = ("0" if text[0] != "0" else "1") + text[1:]
    reply = await verify(terminal, changed)
    assert reply.json()["code"] in ("CARD_NOT_FOUND", "CODE_INVALID")


async def test_valid_moved_onto_another_persons_vuid_is_invalid(rt, terminal, card):
    other = (await terminal.post("/inst/v1/cards", resident())).json()
    valid = parse_code_text(await dynamic_code(rt, card)).valid
    moved = CodeText.dynamic(other["health_card_id"], valid).format()
    assert_refused(await verify(terminal, moved), 422, "CODE_INVALID")


async def test_three_failures_lock_the_code(rt, terminal, card):
    text = await dynamic_code(rt, card)
    assert (await verify(terminal, text)).status_code == 200
    for _ in range(3):
        assert_refused(await verify(terminal, text), 409, "CODE_USED")
    assert_refused(await verify(terminal, text), 423, "CODE_LOCKED")


@pytest.mark.parametrize("action", ["freeze", "cancel"])
async def test_frozen_and_cancelled_cards_are_inactive(rt, institution, terminal, card, action):
    text = await dynamic_code(rt, card)
    reply = await institution.post(f"/inst/v1/cards/{card['health_card_id']}/{action}", {"reason": "挂失"})
    assert reply.status_code == 200 and reply.json()["status"] in ("frozen", "cancelled")
    assert_refused(await verify(terminal, text), 403, "CARD_INACTIVE")
    assert_refused(await verify(terminal, card["qr_code_text"], "registration"), 403, "CARD_INACTIVE")


async def test_unfreeze_restores_and_cancel_is_final(rt, institution, terminal, card):
    path = f"/inst/v1/cards/{card['health_card_id']}"
    assert (await institution.post(f"{path}/freeze", {})).json()["status"] == "frozen"
    assert (await institution.post(f"{path}/unfreeze", {})).json()["status"] == "active"
    assert (await verify(terminal, card["qr_code_text"], "registration")).status_code == 200
    assert (await institution.post(f"{path}/cancel", {})).json()["status"] == "cancelled"
    assert_refused(await institution.post(f"{path}/unfreeze", {}), 409, "CARD_STATE_CONFLICT")


async def test_update_personal_data(institution, card):
    reply = await institution.patch(f"/inst/v1/cards/{card['health_card_id']}", {"phone": "13900001111", "address": "新地址"})
    assert reply.status_code == 200
    assert reply.json()["phone"].endswith("1111")
    assert_refused(
        await institution.patch(f"/inst/v1/cards/{card['health_card_id']}", {"id_number": "x"}), 422, "VALIDATION_ERROR"
    )


async def test_concurrent_verification_succeeds_exactly_once(rt, terminal, card):
    text = await dynamic_code(rt, card)
    replies = await asyncio.gather(*(verify(terminal, text) for _ in range(20)))
    statuses = sorted(r.status_code for r in replies)
    assert statuses.count(200) == 1, statuses
    assert {r.json()["code"] for r in replies if r.status_code != 200} <= {"CODE_USED", "CODE_LOCKED"}


async def test_malformed_codes(terminal):
    for text in ("hello", "ABC:1", "A" * 64 + ":2", "a" * 64 + ":1"):
        assert_refused(await verify(terminal, text), 422, "CODE_MALFORMED")
    assert_refused(await verify(terminal, "F" * 64 + ":1"), 404, "CARD_NOT_FOUND")
    assert_refused(await verify(terminal, "F" * 64 + ":1", scene="dance"), 422, "VALIDATION_ERROR")


async def test_bodies_that_are_not_a_json_object_are_refused_with_the_reason(terminal):
    async def post_raw(body: bytes):
        headers = signing.signed_headers(terminal.client_id, terminal.secret, "POST", "/inst/v1/codes/verify", body)
        return await terminal.http.post(
            "/inst/v1/codes/verify", content=body, headers={**headers, "Content-Type": "application/json"}
        )

    for unreadable in (b'{"qr_code_text": "A', b'{"scene": "\xff"}', "{}".encode("utf-16")):
        assert_refused(await post_raw(unreadable), 400, "BAD_REQUEST")
    for not_an_object in (b'["consultation"]', b'"consultation"', b"null"):
        reply = await post_raw(not_an_object)
        assert_refused(reply, 422, "VALIDATION_ERROR")
        assert "must be an object" in reply.json()["message"]
    reply = await post_raw(b'{"qr_code_text": "A", "scene": "consultation", "colour": "red"}')
    assert_refused(reply, 422, "VALIDATION_ERROR")
    assert [detail["field"] for detail in reply.json()["details"]] == ["colour"]


async def test_foreign_issuer_is_not_verified_here(terminal, card):
    assert_refused(await verify(terminal, card["qr_code_text"] + ":other.ehc.cn", "registration"), 422, "CODE_INVALID")


async def test_institution_forwards_a_terminal_scan(rt, institution, terminal, card):
    text = await dynamic_code(rt, card)
    reply = await verify(institution, text, terminal_id=terminal.client_id)
    assert reply.status_code == 200
    await codeevents.flush(rt)  # events reach the table through a queue; readers flush it first
    event = await CodeEvent.filter(action="verify", health_card_id=card["health_card_id"]).order_by("-id").first()
    assert event.terminal_id == terminal.client_id and event.institution_id == institution.client_id


async def test_every_issuance_and_verification_is_recorded(rt, terminal, card):
    text = await dynamic_code(rt, card)
    await verify(terminal, text, "pharmacy")
    await verify(terminal, text, "pharmacy")
    await codeevents.flush(rt)
    events = await CodeEvent.filter(health_card_id=card["health_card_id"]).order_by("id")
    assert [(e.action, e.result) for e in events] == [("issue", "ok"), ("verify", "ok"), ("verify", "CODE_USED")]
    assert events[1].scene == "pharmacy" and events[1].terminal_id == terminal.client_id


async def test_usage_report(terminal, card):
    body = {"health_card_id": card["health_card_id"], "scene": "pharmacy", "department": "西药房", "occurred_at": "2026-11-22T09:30:00+08:00"}
    reply = await terminal.post("/inst/v1/usage", body)
    assert reply.status_code == 201 and reply.json()["terminal_id"] == terminal.client_id
    by_code = {"qr_code_text": card["qr_code_text"], "scene": "consultation", "occurred_at": "2026-11-22T09:31:00+08:00"}
    assert (await terminal.post("/inst/v1/usage", by_code)).status_code == 201
    assert_refused(await terminal.post("/inst/v1/usage", {**body, "health_card_id": "A" * 64}), 404, "CARD_NOT_FOUND")
    assert_refused(await terminal.post("/inst/v1/usage", {"scene": "pharmacy", "occurred_at": body["occurred_at"]}), 422, "VALIDATION_ERROR")


async def test_usage_report_with_a_nul_character_is_refused_and_not_stored(terminal, card):
    """Regression (fuzz): PostgreSQL cannot store NUL, so such a report was a 500 there."""
    body = {"health_card_id": card["health_card_id"], "scene": "pharmacy", "department": "西药\x00房", "occurred_at": "2026-11-22T09:30:00+08:00"}
    reply = await terminal.post("/inst/v1/usage", body)
    assert_refused(reply, 422, "VALIDATION_ERROR")
    assert reply.json()["details"][0]["field"] == "department"
    assert not await UsageReport.filter(health_card_id=card["health_card_id"]).exists()


@pytest.mark.parametrize("occurred_at", ["2026-11-22T09:30:00", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
async def test_usage_report_times_need_an_offset_and_a_place_in_utc(terminal, card, occurred_at):
    """Regression (fuzz): a time that has no UTC equivalent was a 500 on PostgreSQL."""
    body = {"health_card_id": card["health_card_id"], "scene": "pharmacy", "occurred_at": occurred_at}
    reply = await terminal.post("/inst/v1/usage", body)
    assert_refused(reply, 422, "VALIDATION_ERROR")
    assert reply.json()["details"][0]["field"] == "occurred_at"
    assert not await UsageReport.filter(health_card_id=card["health_card_id"]).exists()


async def test_label_png_decodes_to_the_static_code(terminal, card):
    reply = await terminal.get(f"/inst/v1/cards/{card['health_card_id']}/label.png")
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(reply.content))
    assert image.info["dpi"] == pytest.approx((200, 200), abs=0.5)
    assert [r.text for r in zxingcpp.read_barcodes(image)] == [card["qr_code_text"]]


async def test_no_plaintext_identity_number_or_phone_in_any_table(settings, terminal):
    person = resident()
    assert (await terminal.post("/inst/v1/cards", person)).status_code == 201
    conn = connections.get("default")
    tables = ["access_client", "empi_person", "empi_identifier", "card", "code_event", "card_usage", "audit_event"]
    for table in tables:
        rows = await conn.execute_query_dict(f'SELECT * FROM "{table}"')
        dump = repr(rows)
        assert person["id_number"] not in dump, table
        assert person["phone"] not in dump, table
        assert person["name"] not in dump, table
    if settings.uses_sqlite:
        raw = open(settings.database_url.removeprefix("sqlite://"), "rb").read()
        for suffix in ("-wal", "-journal"):
            try:
                raw += open(settings.database_url.removeprefix("sqlite://") + suffix, "rb").read()
            except FileNotFoundError:
                pass
        assert person["id_number"].encode() not in raw
        assert person["phone"].encode() not in raw


async def test_events_and_statistics_are_queryable(rt, admin, institution, terminal, card):
    text = await dynamic_code(rt, card)
    await verify(terminal, text, "examination")
    await verify(terminal, text, "examination")
    own = (await institution.get(f"/inst/v1/code-events?health_card_id={card['health_card_id']}")).json()
    assert [e["result"] for e in own["items"]] == ["CODE_USED", "ok"]
    first_page = (await institution.get(f"/inst/v1/code-events?health_card_id={card['health_card_id']}&limit=1")).json()
    assert len(first_page["items"]) == 1 and first_page["next_cursor"]
    stats = (await institution.get("/inst/v1/code-stats?group_by=scene,result")).json()["items"]
    assert {"scene": "examination", "result": "ok", "count": 1} in stats
    assert {"scene": "examination", "result": "CODE_USED", "count": 1} in stats
    everything = (await admin.get(f"/admin/v1/code-events?institution_id={institution.client_id}")).json()["items"]
    assert len(everything) == 2
    by_institution = (await admin.get("/admin/v1/code-stats?group_by=institution_id,action")).json()["items"]
    assert {"institution_id": institution.client_id, "action": "verify", "count": 2} in by_institution
    assert_refused(await admin.get("/admin/v1/code-stats?group_by=name"), 422, "VALIDATION_ERROR")
    # Regression (fuzz): a field named twice was a 500; it groups once.
    twice = (await institution.get("/inst/v1/code-stats?group_by=scene,result,scene")).json()["items"]
    assert {"scene": "examination", "result": "ok", "count": 1} in twice


@pytest.mark.parametrize(
    "query",
    [
        "cursor=%C2%B2",  # "²" passed str.isdigit() and failed int(): a 500
        "cursor=" + "9" * 19,  # past a 64-bit id: a 500
        "since=2026-11-22T09:30:00",  # no offset: silently read as UTC
        "until=2026-11-22",
        "since=0001-01-01T00:00:00%2B01:00",  # before the first UTC moment: a 500 on PostgreSQL
        "result=ok%00",  # NUL: a 500 on PostgreSQL
    ],
)
async def test_event_queries_refuse_what_cannot_be_meant(admin, institution, query):
    assert_refused(await institution.get(f"/inst/v1/code-events?{query}"), 422, "VALIDATION_ERROR")
    assert_refused(await admin.get(f"/admin/v1/code-events?{query}"), 422, "VALIDATION_ERROR")
    if not query.startswith("result"):
        assert_refused(await admin.get(f"/admin/v1/audit-events?{query}"), 422, "VALIDATION_ERROR")


async def test_lockouts_are_visible_to_admins(rt, admin, terminal, card):
    text = await dynamic_code(rt, card)
    await verify(terminal, text)
    for _ in range(3):
        await verify(terminal, text)
    locked = (await admin.get("/admin/v1/lockouts")).json()["items"]
    entry = next(item for item in locked if item["health_card_id"] == card["health_card_id"])
    assert entry["kind"] == "code" and 0 < entry["expires_in"] <= 600


async def test_key_rotation_keeps_issued_codes_valid(rt, terminal, card):
    before_rotation = await dynamic_code(rt, card)
    rt.vault.rotate("security")
    rt.vault.rotate("protection")
    assert (await verify(terminal, card["qr_code_text"], "registration")).status_code == 200
    assert (await verify(terminal, before_rotation)).status_code == 200
    assert (await verify(terminal, await dynamic_code(rt, card))).status_code == 200
    newer = await terminal.post("/inst/v1/cards", resident())
    assert newer.status_code == 201
    assert (await verify(terminal, newer.json()["qr_code_text"], "registration")).status_code == 200
