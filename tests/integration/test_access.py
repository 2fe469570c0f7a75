"""Signed access (API.md "Conventions") and access management (SPEC §5) over HTTP."""

import logging
from urllib.parse import quote

import pytest

from cardcore import signing
from cardcore.models import Client
from tests.conftest import Signer, register_institution, register_terminal
from tests.flows import assert_refused


async def test_signed_request_is_accepted(institution):
    reply = await institution.get("/inst/v1/me")
    assert reply.status_code == 200, reply.text
    assert reply.json()["client_id"] == institution.client_id
    assert reply.json()["kind"] == "institution"


async def test_replayed_request_is_refused(http, institution):
    headers, body = institution.build("GET", "/inst/v1/me")
    assert (await http.get("/inst/v1/me", headers=headers)).status_code == 200
    assert_refused(await http.get("/inst/v1/me", headers=headers), 401, "REPLAYED_REQUEST")


@pytest.mark.parametrize("shift_s", [-301, 301])
async def test_request_retimed_by_301_seconds_is_stale(institution, shift_s):
    reply = await institution.get("/inst/v1/me", timestamp_ms=signing.now_ms() + shift_s * 1000)
    assert_refused(reply, 401, "STALE_REQUEST")


async def test_request_inside_the_window_is_accepted(institution):
    reply = await institution.get("/inst/v1/me", timestamp_ms=signing.now_ms() - 290_000)
    assert reply.status_code == 200


async def test_one_byte_of_body_changed_is_refused(http, institution):
    headers, body = institution.build("POST", "/inst/v1/terminals", {"name": "窗口 1"})
    tampered = body.replace(b"1", b"2")
    assert len(tampered) == len(body) and tampered != body
    assert_refused(await http.post("/inst/v1/terminals", content=tampered, headers=headers), 401, "BAD_SIGNATURE")


async def test_changed_query_is_refused(http, admin):
    headers, _ = admin.build("GET", "/admin/v1/institutions?status=pending")
    assert_refused(await http.get("/admin/v1/institutions?status=approved", headers=headers), 401, "BAD_SIGNATURE")


async def test_query_is_part_of_the_signature(admin, institution):
    reply = await admin.get("/admin/v1/institutions?status=approved&limit=200")
    assert reply.status_code == 200
    assert institution.client_id in [c["client_id"] for c in reply.json()["items"]]


async def test_wrong_secret_unknown_client_and_missing_headers(http, institution):
    assert_refused(await Signer(http, institution.client_id, "not-the-secret").get("/inst/v1/me"), 401, "BAD_SIGNATURE")
    assert_refused(await Signer(http, "ins_doesnotexist", "x").get("/inst/v1/me"), 401, "BAD_SIGNATURE")
    assert_refused(await http.get("/inst/v1/me"), 401, "BAD_SIGNATURE")
    headers, _ = institution.build("GET", "/inst/v1/me")
    headers[signing.HEADER_NONCE] = "short"
    assert_refused(await http.get("/inst/v1/me", headers=headers), 401, "BAD_SIGNATURE")


@pytest.mark.parametrize("header", [signing.HEADER_CLIENT, signing.HEADER_TERMINAL, signing.HEADER_TIMESTAMP])
async def test_client_and_terminal_ids_and_timestamps_that_are_not_ascii_are_refused(http, institution, header):
    """Regression (header fuzz): undecodable bytes reach the handler as surrogates, which
    could not be a cache key; a timestamp of '²' passed isdigit() but not int(): 500s."""
    headers, _ = institution.build("GET", "/inst/v1/me")
    sent = [(name.encode(), value.encode()) for name, value in headers.items() if name != header]
    value = "²".encode() if header == signing.HEADER_TIMESTAMP else b"\xff" * 12
    reply = await http.get("/inst/v1/me", headers=[*sent, (header.encode(), value)])
    expected = (403, "TERMINAL_NOT_ALLOWED") if header == signing.HEADER_TERMINAL else (401, "BAD_SIGNATURE")
    assert_refused(reply, *expected)


async def test_pending_institution_is_disabled_until_approved(http, admin):
    institution = await register_institution(http, admin, approve=False)
    assert_refused(await institution.get("/inst/v1/me"), 403, "CLIENT_DISABLED")
    assert (await admin.post(f"/admin/v1/institutions/{institution.client_id}/approve")).status_code == 200
    assert (await institution.get("/inst/v1/me")).status_code == 200


async def test_disable_takes_effect_on_the_next_request(admin, institution):
    assert (await institution.get("/inst/v1/me")).status_code == 200
    reply = await admin.post(f"/admin/v1/institutions/{institution.client_id}/disable", {"reason": "contract ended"})
    assert reply.status_code == 200 and reply.json()["status"] == "disabled"
    assert_refused(await institution.get("/inst/v1/me"), 403, "CLIENT_DISABLED")
    assert (await admin.post(f"/admin/v1/institutions/{institution.client_id}/approve")).status_code == 200
    assert (await institution.get("/inst/v1/me")).status_code == 200


async def test_terminal_signs_for_itself_and_a_disabled_terminal_is_refused(http, admin, institution):
    terminal = await register_terminal(http, admin, institution, approve=False)
    assert_refused(await terminal.get("/inst/v1/me"), 403, "CLIENT_DISABLED")
    await admin.post(f"/admin/v1/terminals/{terminal.client_id}/approve")
    me = (await terminal.get("/inst/v1/me")).json()
    assert me["terminal_id"] == terminal.client_id and me["institution_id"] == institution.client_id
    await admin.post(f"/admin/v1/terminals/{terminal.client_id}/disable", {})
    assert_refused(await terminal.get("/inst/v1/me"), 403, "CLIENT_DISABLED")
    # Forwarded by its institution, a disabled terminal is refused as well.
    assert_refused(await institution.acting_for(terminal.client_id).get("/inst/v1/me"), 403, "CLIENT_DISABLED")


async def test_terminal_of_a_disabled_institution_is_refused(admin, institution, terminal):
    assert (await terminal.get("/inst/v1/me")).status_code == 200
    await admin.post(f"/admin/v1/institutions/{institution.client_id}/disable", {})
    assert_refused(await terminal.get("/inst/v1/me"), 403, "CLIENT_DISABLED")


async def test_institution_acts_for_its_own_terminals_only(http, admin, institution, terminal):
    me = (await institution.acting_for(terminal.client_id).get("/inst/v1/me")).json()
    assert me["terminal_id"] == terminal.client_id
    other = await register_institution(http, admin)
    assert_refused(await other.acting_for(terminal.client_id).get("/inst/v1/me"), 403, "TERMINAL_NOT_ALLOWED")
    assert_refused(await institution.acting_for("trm_nosuchterminal").get("/inst/v1/me"), 403, "TERMINAL_NOT_ALLOWED")


async def test_function_switch(admin, institution):
    path = f"/admin/v1/institutions/{institution.client_id}"
    assert (await admin.patch(path, {"disabled_functions": ["terminals.manage"]})).status_code == 200
    assert_refused(await institution.post("/inst/v1/terminals", {"name": "窗口"}), 403, "FORBIDDEN")
    assert (await institution.get("/inst/v1/me")).status_code == 200
    assert (await admin.patch(path, {"disabled_functions": []})).status_code == 200
    assert (await institution.post("/inst/v1/terminals", {"name": "窗口"})).status_code == 201


async def test_unknown_function_name_is_a_validation_error(admin, institution):
    reply = await admin.patch(f"/admin/v1/institutions/{institution.client_id}", {"disabled_functions": ["fly"]})
    assert_refused(reply, 422, "VALIDATION_ERROR")


async def test_ip_allow_list(admin, institution):
    path = f"/admin/v1/institutions/{institution.client_id}"
    assert (await admin.patch(path, {"ip_allowlist": ["10.0.0.0/8"]})).status_code == 200
    assert_refused(await institution.get("/inst/v1/me"), 403, "FORBIDDEN")
    assert (await admin.patch(path, {"ip_allowlist": ["127.0.0.1"]})).status_code == 200
    assert (await institution.get("/inst/v1/me")).status_code == 200
    assert_refused(await admin.patch(path, {"ip_allowlist": ["not-an-ip"]}), 422, "VALIDATION_ERROR")


async def test_clients_reach_only_their_own_apis(admin, institution, terminal):
    assert_refused(await institution.get("/admin/v1/institutions"), 403, "FORBIDDEN")
    assert_refused(await terminal.post("/inst/v1/terminals", {"name": "x"}), 403, "FORBIDDEN")


async def test_rotated_secret_replaces_the_old_one(http, admin, institution):
    reply = await admin.post(f"/admin/v1/institutions/{institution.client_id}/secret")
    assert reply.status_code == 200
    new_secret = reply.json()["secret"]
    assert_refused(await institution.get("/inst/v1/me"), 401, "BAD_SIGNATURE")
    assert (await Signer(http, institution.client_id, new_secret).get("/inst/v1/me")).status_code == 200


async def test_secrets_are_not_stored_in_plaintext(institution):
    row = await Client.get(client_id=institution.client_id)
    assert institution.secret not in row.secret_sealed
    assert row.secret_sealed.startswith("v1:")


async def test_secret_is_shown_at_registration_only(admin, institution):
    listed = (await admin.get(f"/admin/v1/institutions/{institution.client_id}")).json()
    assert "secret" not in listed and "secret_sealed" not in listed


async def test_refusals_are_logged_with_the_client_id(caplog, institution):
    logger = logging.getLogger("ehc.auth")
    logger.addHandler(caplog.handler)
    try:
        await institution.get("/inst/v1/me", timestamp_ms=1)
    finally:
        logger.removeHandler(caplog.handler)
    refusals = [r for r in caplog.records if r.name == "ehc.auth"]
    assert refusals and refusals[-1].client_id == institution.client_id
    assert refusals[-1].refusal == "STALE_REQUEST"


async def test_partner_app_and_admin_lifecycle(http, admin):
    reply = await http.post("/open/v1/apps/register", json={"name": "城市 APP"})
    assert reply.status_code == 201 and reply.json()["status"] == "pending"
    app_id = reply.json()["client_id"]
    pending = (await admin.get("/admin/v1/partner-apps?status=pending&limit=200")).json()["items"]
    assert app_id in [c["client_id"] for c in pending]
    assert (await admin.post(f"/admin/v1/partner-apps/{app_id}/approve")).json()["status"] == "approved"
    created = await admin.post("/admin/v1/admins", {"name": "值班运营"})
    assert created.status_code == 201
    second = Signer(http, created.json()["client_id"], created.json()["secret"])
    assert (await second.get("/admin/v1/functions")).status_code == 200


async def test_bad_bodies_get_clear_errors(http, admin):
    assert_refused(await http.post("/inst/v1/register", json={"name": "医院", "extra": 1}), 422, "VALIDATION_ERROR")
    assert_refused(await http.post("/inst/v1/register", content=b"{not json"), 400, "BAD_REQUEST")
    assert_refused(await http.post("/inst/v1/register"), 422, "VALIDATION_ERROR")
    assert_refused(await admin.post("/admin/v1/institutions/ins_nobody/approve"), 404, "NOT_FOUND")


async def test_client_ids_and_cursors_no_client_can_have_are_refused(admin):
    """Regression (fuzz): ids and cursors longer than the column were a 500."""
    for client_id in ("ins_" + "0" * 40, quote("健康卡" * 5, safe="")):
        for reply in (
            await admin.get(f"/admin/v1/institutions/{client_id}"),
            await admin.post(f"/admin/v1/institutions/{client_id}/approve"),
            await admin.patch(f"/admin/v1/institutions/{client_id}", {"scopes": []}),
            await admin.get(f"/admin/v1/institutions/{client_id}/channels"),
        ):
            assert_refused(reply, 404, "NOT_FOUND")
    assert_refused(await admin.get("/admin/v1/institutions?cursor=" + "0" * 41), 422, "VALIDATION_ERROR")


@pytest.mark.parametrize("hidden", ["\x00", "\x1b", "\u202e"])
async def test_names_with_hidden_characters_are_refused_and_not_stored(http, admin, institution, hidden):
    """Regression (fuzz): PostgreSQL cannot store NUL, so these were a 500 there; control and
    bidirectional formatting characters make a name read as something it is not."""
    clients = await Client.all().count()
    for reply in (
        await http.post("/inst/v1/register", json={"name": f"测试{hidden}医院"}),
        await institution.post("/inst/v1/terminals", {"name": f"窗口{hidden}"}),
        await admin.post("/admin/v1/admins", {"name": hidden}),
        await admin.post(f"/admin/v1/institutions/{institution.client_id}/disable", {"reason": f"违规{hidden}"}),
    ):
        assert_refused(reply, 422, "VALIDATION_ERROR")
        problem = reply.json()["details"][0]["problem"]
        assert problem == f"must not contain control or bidirectional formatting characters (found U+{ord(hidden):04X})"
    assert await Client.all().count() == clients
    assert (await institution.get("/inst/v1/me")).status_code == 200  # not disabled


async def test_registration_is_rate_limited_per_address(app, http):
    from dataclasses import replace

    rt = app.ctx.rt
    original = rt.settings
    rt.settings = replace(original, registrations_per_hour=2)
    try:
        transport_ip = {"X-Forwarded-For": "ignored"}  # no proxies configured: the socket address counts
        await rt.redis.delete("rl:register:127.0.0.1")
        codes = [(await http.post("/inst/v1/register", json={"name": "限流医院"}, headers=transport_ip)).status_code for _ in range(3)]
    finally:
        rt.settings = original
        await rt.redis.delete("rl:register:127.0.0.1")
    assert codes == [201, 201, 429]


def test_secrets_never_read_as_command_line_options():
    from cardcore.access import new_secret

    made = {new_secret() for _ in range(2000)}
    assert len(made) == 2000 and not any(secret.startswith("-") for secret in made)
    assert all(len(secret) >= 40 for secret in made)
