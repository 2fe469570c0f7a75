"""Workers act on their own decoded copies of clients and cards (cardcore.cache), yet a change
made anywhere holds from the very next request on every worker.

"Another worker" is played by a second Runtime on the same shared cache and database: it
has its own copies, as a second process would.
"""

import asyncio

import pytest

from cardcore import access, codeevents, errors
from cardcore.audit import Actor
from cardcore.cards import CARD_RECORDS
from cardcore.models import CodeEvent
from cardcore.runtime import Runtime
from cardcore.verify import verify_code
from tests.conftest import Signer
from tests.integration.test_access import assert_refused
from tests.integration.test_cards import dynamic_code


@pytest.fixture
def other_worker(rt) -> Runtime:
    return Runtime(settings=rt.settings, vault=rt.vault, redis=rt.redis)


async def test_a_card_frozen_on_one_worker_is_refused_by_the_next_verification_on_another(
    rt, other_worker, institution, terminal, card
):
    actor = Actor(client_id=terminal.client_id, institution_id=institution.client_id, terminal_id=terminal.client_id)
    verified = await verify_code(other_worker, await dynamic_code(rt, card), "consultation", actor)
    assert verified.card["status"] == "active"
    assert CARD_RECORDS.local(other_worker, card["health_card_id"]) is not None  # its copy says "active"
    issued_before = await dynamic_code(rt, card)

    reply = await institution.post(f"/inst/v1/cards/{card['health_card_id']}/freeze", {"reason": "挂失"})
    assert reply.json()["status"] == "frozen"
    with pytest.raises(errors.CardInactive):
        await verify_code(other_worker, issued_before, "consultation", actor)

    await institution.post(f"/inst/v1/cards/{card['health_card_id']}/unfreeze", {})
    assert (await verify_code(other_worker, issued_before, "consultation", actor)).card["status"] == "active"


async def test_a_stale_copy_of_a_card_is_never_acted_on(rt, institution, terminal, card):
    """A worker that still holds the card as active (its copy from before the freeze) refuses."""
    text = await dynamic_code(rt, card)
    before = await CARD_RECORDS.current(rt, card["health_card_id"])
    await institution.post(f"/inst/v1/cards/{card['health_card_id']}/freeze", {})
    rt.copies.put(before)  # as if this worker had not heard of the freeze
    assert_refused(await terminal.post("/inst/v1/codes/verify", {"qr_code_text": text, "scene": "consultation"}), 403, "CARD_INACTIVE")
    assert (await CARD_RECORDS.current(rt, card["health_card_id"])).value["status"] == "frozen"


async def test_a_stale_copy_of_a_disabled_client_is_never_acted_on(rt, admin, institution, terminal, card):
    text = await dynamic_code(rt, card)
    assert (await terminal.get("/inst/v1/me")).status_code == 200
    before = access.CLIENT_RECORDS.local(rt, terminal.client_id)
    assert before is not None and before.value.active
    await admin.post(f"/admin/v1/terminals/{terminal.client_id}/disable", {})
    rt.copies.put(before)  # another worker's memory: still approved
    verify = {"qr_code_text": text, "scene": "consultation"}
    assert_refused(await terminal.post("/inst/v1/codes/verify", verify), 403, "CLIENT_DISABLED")
    rt.copies.put(before)
    assert_refused(await terminal.get("/inst/v1/me"), 403, "CLIENT_DISABLED")
    await admin.post(f"/admin/v1/terminals/{terminal.client_id}/approve")
    # The refused scan did not spend the code.
    assert (await terminal.post("/inst/v1/codes/verify", verify)).status_code == 200


async def test_a_stale_copy_of_a_rotated_secret_is_never_acted_on(rt, http, admin, institution):
    assert (await institution.get("/inst/v1/me")).status_code == 200
    before = access.CLIENT_RECORDS.local(rt, institution.client_id)
    reply = await admin.post(f"/admin/v1/institutions/{institution.client_id}/secret")
    assert reply.status_code == 200, reply.text
    rt.copies.put(before)  # still holds the old secret
    assert_refused(await institution.get("/inst/v1/me"), 401, "BAD_SIGNATURE")
    rt.copies.put(before)
    assert (await Signer(http, institution.client_id, reply.json()["secret"]).get("/inst/v1/me")).status_code == 200


async def test_a_verification_on_a_stale_client_copy_claims_the_nonce_once(rt, http, admin, institution, terminal, card):
    """Retried on current records after a change, a request still counts its nonce once."""
    text = await dynamic_code(rt, card)
    assert (await terminal.get("/inst/v1/me")).status_code == 200
    before = access.CLIENT_RECORDS.local(rt, institution.client_id)
    await admin.patch(f"/admin/v1/institutions/{institution.client_id}", {"scopes": ["identity.full"]})
    rt.copies.put(before)  # without the new scope
    headers, body = terminal.build("POST", "/inst/v1/codes/verify", {"qr_code_text": text, "scene": "consultation"})
    first = await http.post("/inst/v1/codes/verify", content=body, headers=headers)
    assert first.status_code == 200 and "*" not in first.json()["id_number"]  # the new scope applies
    assert_refused(await http.post("/inst/v1/codes/verify", content=body, headers=headers), 401, "REPLAYED_REQUEST")


async def test_a_replayed_verification_is_refused_before_anything_is_recorded(rt, http, terminal, card):
    text = await dynamic_code(rt, card)
    headers, body = terminal.build("POST", "/inst/v1/codes/verify", {"qr_code_text": text, "scene": "consultation"})
    assert (await http.post("/inst/v1/codes/verify", content=body, headers=headers)).status_code == 200
    assert_refused(await http.post("/inst/v1/codes/verify", content=body, headers=headers), 401, "REPLAYED_REQUEST")
    await codeevents.flush(rt)
    events = await CodeEvent.filter(health_card_id=card["health_card_id"], action="verify")
    assert [e.result for e in events] == ["ok"]
    # A request refused for its body still uses its nonce up.
    headers, body = terminal.build("POST", "/inst/v1/codes/verify", {"qr_code_text": text, "scene": "dance"})
    assert_refused(await http.post("/inst/v1/codes/verify", content=body, headers=headers), 422, "VALIDATION_ERROR")
    assert_refused(await http.post("/inst/v1/codes/verify", content=body, headers=headers), 401, "REPLAYED_REQUEST")


async def test_concurrent_scans_on_two_workers_spend_a_code_once(rt, other_worker, terminal, card):
    actor = Actor(client_id=terminal.client_id)
    text = await dynamic_code(rt, card)
    outcomes = await asyncio.gather(
        *(verify_code(worker, text, "consultation", actor) for worker in (rt, other_worker) * 5), return_exceptions=True
    )
    assert sum(not isinstance(o, Exception) for o in outcomes) == 1
    assert {o.code for o in outcomes if isinstance(o, Exception)} <= {"CODE_USED", "CODE_LOCKED"}
