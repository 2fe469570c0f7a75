"""Resident accounts, claim and family rules (SPEC §2), at the service layer.

The population registry and the SMS gateway are the mocks under /_mock/, reached over
HTTP through the platform's own provider clients (routed in process by tests/conftest.py).
"""

import secrets

import pytest

from cardcore import errors, otp, residents, strongauth
from cardcore.identity import Identity
from cardcore.models import AuditEvent, LoginChannel, Relation
from cardcore.providers import IdentityUnknown
from tests.factories import resident


class Registry:
    """The population registry as the platform sees it, plus the mock's control endpoint."""

    def __init__(self, http, client):
        self.http = http
        self.client = client

    async def add(self, person: dict) -> Identity:
        reply = await self.http.post("/_mock/registry/people", json=person)
        assert reply.status_code in (200, 201), reply.text
        return Identity(**person)

    async def require_match(self, identity: Identity) -> None:
        await self.client.require_match(identity)


class Phone:
    """The SMS gateway, and the residents' phones read through the mock inbox."""

    def __init__(self, http, sms):
        self.http = http
        self.sms = sms
        self.last_phone = ""

    async def send(self, phone: str, text: str) -> None:
        self.last_phone = phone
        await self.sms.send(phone, text)

    async def last_code(self) -> str:
        inbox = (await self.http.get("/_mock/sms/messages", params={"phone": self.last_phone})).json()["items"]
        return inbox[0]["code"]


@pytest.fixture
def registry(app, http):
    return Registry(http, app.ctx.providers.registry)


@pytest.fixture
def phone(app, http):
    return Phone(http, app.ctx.providers.sms)


async def new_account(rt):
    return await residents.account_for(rt, LoginChannel.wechat, "openid-" + secrets.token_hex(8))


async def strong_account(rt, registry, phone):
    account = await new_account(rt)
    card, _ = await residents.claim_for_self(rt, account, await registry.add(resident()), registry)
    await strongauth.start_sms(rt, account, card.health_card_id, phone)
    await strongauth.finish_sms(rt, account, card.health_card_id, await phone.last_code())
    return account, card


async def test_same_channel_user_is_the_same_account(rt):
    first = await residents.account_for(rt, LoginChannel.alipay, "2088000000000001")
    again = await residents.account_for(rt, LoginChannel.alipay, "2088000000000001")
    other_channel = await residents.account_for(rt, LoginChannel.wechat, "2088000000000001")
    assert first.account_id == again.account_id != other_channel.account_id


async def test_claim_needs_a_registry_match(rt, registry):
    account = await new_account(rt)
    stranger = Identity(**resident())
    with pytest.raises(IdentityUnknown):
        await residents.claim_for_self(rt, account, stranger, registry)
    known = await registry.add(resident())
    with pytest.raises(errors.PlatformError) as refused:
        await residents.claim_for_self(rt, account, known.model_copy(update={"name": "别人"}), registry)
    assert refused.value.code == "IDENTITY_MISMATCH"
    card, created = await residents.claim_for_self(rt, account, known, registry)
    assert created and card.holder_account_id == account.account_id and card.auth_level.value == "weak"
    again, created = await residents.claim_for_self(rt, account, known, registry)
    assert again.health_card_id == card.health_card_id and not created


async def test_second_account_cannot_claim_the_same_person(rt, registry):
    person = await registry.add(resident())
    await residents.claim_for_self(rt, await new_account(rt), person, registry)
    with pytest.raises(residents.CardAlreadyClaimed):
        await residents.claim_for_self(rt, await new_account(rt), person, registry)


async def test_one_own_card_per_account(rt, registry):
    account = await new_account(rt)
    await residents.claim_for_self(rt, account, await registry.add(resident()), registry)
    with pytest.raises(residents.OwnCardExists):
        await residents.claim_for_self(rt, account, await registry.add(resident()), registry)


async def test_family_needs_strong_auth(rt, registry):
    account = await new_account(rt)
    await residents.claim_for_self(rt, account, await registry.add(resident()), registry)
    with pytest.raises(residents.StrongAuthRequired):
        await residents.claim_for_family(rt, account, await registry.add(resident()), Relation.parent, registry)


async def test_family_limit_and_duplicates(rt, registry, phone):
    account, _ = await strong_account(rt, registry, phone)
    members = [await registry.add(resident()) for _ in range(rt.settings.family_limit + 1)]
    for member in members[:-1]:
        await residents.claim_for_family(rt, account, member, Relation.child, registry)
    with pytest.raises(residents.AlreadyManaged):
        await residents.claim_for_family(rt, account, members[0], Relation.child, registry)
    with pytest.raises(residents.FamilyLimitReached):
        await residents.claim_for_family(rt, account, members[-1], Relation.child, registry)
    listed = await residents.cards_of(account)
    assert [relation for _, relation in listed] == ["self"] + ["child"] * rt.settings.family_limit


async def test_two_parents_manage_one_child_and_the_child_takes_over(rt, registry, phone):
    mother, _ = await strong_account(rt, registry, phone)
    father, _ = await strong_account(rt, registry, phone)
    child = await registry.add(resident())
    card, created = await residents.claim_for_family(rt, mother, child, Relation.child, registry)
    same, created_again = await residents.claim_for_family(rt, father, child, Relation.child, registry)
    assert created and not created_again and same.health_card_id == card.health_card_id
    grown_up = await new_account(rt)
    taken, _ = await residents.claim_for_self(rt, grown_up, child, registry)
    assert taken.holder_account_id == grown_up.account_id
    managers = await residents.managers_of(grown_up, card.health_card_id)
    assert {m.account_id for m in managers} == {mother.account_id, father.account_id}
    await residents.remove_manager(grown_up, card.health_card_id, father.account_id)
    with pytest.raises(errors.CardNotFound):
        await residents.card_for(father, card.health_card_id)
    await residents.stop_managing(mother, card.health_card_id)
    with pytest.raises(errors.CardNotFound):
        await residents.card_for(mother, card.health_card_id)


async def test_child_without_id_is_registered_with_guardian_data(rt, registry, phone):
    account, _ = await strong_account(rt, registry, phone)
    guardian = await registry.add(resident())
    child = residents.ChildWithoutId(
        name="小宝", gender="1", birth_date="2025-06-01", parity=1,
        guardian={"name": guardian.name, "id_type": guardian.id_type, "id_number": guardian.id_number, "phone": guardian.phone},
    )
    card, created = await residents.claim_child_without_id(rt, account, child, registry)
    assert created and len(card.health_card_id) == 64
    with pytest.raises(residents.AlreadyManaged):
        await residents.claim_child_without_id(rt, account, child, registry)
    second_child = child.model_copy(update={"parity": 2, "name": "二宝"})
    other, _ = await residents.claim_child_without_id(rt, account, second_child, registry)
    assert other.health_card_id != card.health_card_id
    wrong_guardian = child.model_copy(update={"guardian": child.guardian.model_copy(update={"name": "别人"})})
    with pytest.raises(errors.PlatformError):
        await residents.claim_child_without_id(rt, account, wrong_guardian, registry)


async def test_cards_of_other_accounts_are_not_found(rt, registry):
    owner = await new_account(rt)
    card, _ = await residents.claim_for_self(rt, owner, await registry.add(resident()), registry)
    with pytest.raises(errors.CardNotFound):
        await residents.card_for(await new_account(rt), card.health_card_id)


async def test_sms_strong_auth_and_audit(rt, registry, phone):
    account = await new_account(rt)
    identity = await registry.add(resident())
    card, _ = await residents.claim_for_self(rt, account, identity, registry)
    sent = await strongauth.start_sms(rt, account, card.health_card_id, phone)
    assert phone.last_phone == identity.phone and sent["phone"].endswith(identity.phone[-4:])
    with pytest.raises(otp.OtpInvalid):
        code = await phone.last_code()
        await strongauth.finish_sms(rt, account, card.health_card_id, "000000" if code != "000000" else "111111")
    strong = await strongauth.finish_sms(rt, account, card.health_card_id, await phone.last_code())
    assert strong.auth_level.value == "strong"
    actions = [e.action for e in await AuditEvent.filter(subject=card.health_card_id).order_by("id")]
    assert actions == ["card.register", "card.claim.self", "auth.sms.sent", "auth.strong"]


async def test_sms_is_rate_limited_per_phone(rt, registry, phone):
    account = await new_account(rt)
    card, _ = await residents.claim_for_self(rt, account, await registry.add(resident()), registry)
    await strongauth.start_sms(rt, account, card.health_card_id, phone)
    with pytest.raises(errors.RateLimited):
        await strongauth.start_sms(rt, account, card.health_card_id, phone)


async def test_acting_for_a_member_is_audited(rt, registry, phone):
    account, _ = await strong_account(rt, registry, phone)
    member, _ = await residents.claim_for_family(rt, account, await registry.add(resident()), Relation.parent, registry)
    await residents.act_on_card(account, member.health_card_id, "code.dynamic.issue")
    event = await AuditEvent.filter(subject=member.health_card_id, action="code.dynamic.issue").first()
    assert event.actor == account.account_id and event.detail == {"relation": "parent"}
