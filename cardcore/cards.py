"""Card accounts: register (idempotent per person), read, update, freeze, unfreeze, cancel."""

from __future__ import annotations

import json

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from cardcore import audit, errors
from cardcore.cache import StampedRecords
from cardcore.codes import CodeText, derive_vuid, is_vuid
from cardcore.empi import service as empi
from cardcore.identity import Identity
from cardcore.models import Card, CardStatus, PersonIdentifier
from cardcore.pii import mask_field
from cardcore.runtime import Runtime

# Fields an update may change; the identity document itself never changes a card.
UPDATABLE_FIELDS = ("name", "nation", "phone", "address")
CARD_RECORD_S = 300


class IdentityMismatch(errors.PlatformError):
    code, status, message = "IDENTITY_MISMATCH", 409, "the identity number is registered under another name"


def static_code_text(card: Card) -> str:
    return CodeText.static(card.health_card_id).format()


async def _existing_card(identifier: PersonIdentifier) -> Card | None:
    return await Card.get_or_none(person_id=identifier.person_id).prefetch_related("identifier__person")


async def register_card(rt: Runtime, identity: Identity, actor: audit.Actor) -> tuple[Card, bool]:
    """The person's card, created on first registration; the same person always gets the same card."""
    identifier, _ = await empi.find_or_create_person(rt, identity)
    existing = await _existing_card(identifier)
    if existing is not None:
        if rt.vault.decrypt_text(identifier.person.name_sealed) != identity.name:
            raise IdentityMismatch()
        return existing, False
    version = rt.vault.current_version("security")
    vuid = derive_vuid(rt.vault, identifier.person.empi_id, identity.id_type, identity.id_number, version)
    try:
        async with in_transaction():
            await Card.create(
                health_card_id=vuid,
                person_id=identifier.person_id,
                identifier=identifier,
                security_key_version=version,
                registered_by=actor.client_id,
            )
            await audit.record(actor, "card.register", vuid, terminal=actor.terminal_id)
    except IntegrityError:
        existing = await _existing_card(identifier)
        if existing is None:
            raise
        return existing, False
    await CARD_RECORDS.changed(rt, vuid)  # it may be remembered as unknown
    return await get_card(vuid), True


async def get_card(health_card_id: str) -> Card:
    if not is_vuid(health_card_id):  # from a URL: anything at all, which no card has as its ID
        raise errors.CardNotFound()
    card = await Card.get_or_none(health_card_id=health_card_id).prefetch_related("identifier__person")
    if card is None:
        raise errors.CardNotFound()
    return card


def card_view(rt: Runtime, card: Card, *, full_identity: bool) -> dict:
    """A card with its holder's data; identity number, phone and address masked unless entitled."""
    person = empi.open_person(rt, card.identifier)
    if not full_identity:
        for field in ("id_number", "phone", "address"):
            person[field] = mask_field(field, person[field]) if person[field] else ""
    return {
        "health_card_id": card.health_card_id,
        "status": card.status.value,
        "auth_level": card.auth_level.value,
        "qr_code_text": static_code_text(card),
        **person,
        "created_at": card.created_at.isoformat(),
        "updated_at": card.updated_at.isoformat(),
    }


async def read_card(rt: Runtime, health_card_id: str, actor: audit.Actor, reason: str) -> Card:
    card = await get_card(health_card_id)
    await audit.record(actor, "card.read", health_card_id, reason=reason)
    return card


async def update_person(rt: Runtime, health_card_id: str, changes: dict, actor: audit.Actor) -> Card:
    unknown = set(changes) - set(UPDATABLE_FIELDS)
    if unknown:
        raise errors.ValidationFailed(f"cannot change {', '.join(sorted(unknown))}")
    card = await get_card(health_card_id)
    person = card.identifier.person
    if "name" in changes:
        person.name_sealed = rt.vault.encrypt_text(changes["name"])
    if "nation" in changes:
        person.nation = changes["nation"]
    if "address" in changes:
        person.address_sealed = rt.vault.encrypt_text(changes["address"]) if changes["address"] else ""
    if "phone" in changes:
        person.phone_sealed = rt.vault.encrypt_text(changes["phone"])
        person.phone_index = empi.phone_index(rt, changes["phone"])
    async with in_transaction():
        await person.save()
        await audit.record(actor, "card.update", health_card_id, fields=sorted(changes))
    await CARD_RECORDS.changed(rt, health_card_id)
    return await get_card(health_card_id)


# (from statuses, to status): the allowed status changes and the audit action of each.
_TRANSITIONS = {
    "freeze": ({CardStatus.active}, CardStatus.frozen),
    "unfreeze": ({CardStatus.frozen}, CardStatus.active),
    "cancel": ({CardStatus.active, CardStatus.frozen}, CardStatus.cancelled),
}


async def change_status(rt: Runtime, health_card_id: str, action: str, actor: audit.Actor, reason: str = "") -> Card:
    allowed_from, target = _TRANSITIONS[action]
    if not is_vuid(health_card_id):
        raise errors.CardNotFound()
    async with in_transaction():
        updated = await Card.filter(health_card_id=health_card_id, status__in=list(allowed_from)).update(status=target)
        if not updated:
            card = await get_card(health_card_id)
            raise errors.Conflict(f"a {card.status.value} card cannot {action}", code="CARD_STATE_CONFLICT")
        await audit.record(actor, f"card.{action}", health_card_id, reason=reason)
    await CARD_RECORDS.changed(rt, health_card_id)
    return await get_card(health_card_id)


# --- what verification needs of a card, as a stamped record ---------------------------------


async def _read_facts(rt: Runtime, health_card_id: str) -> bytes:
    card = await Card.get_or_none(health_card_id=health_card_id).prefetch_related("identifier__person")
    if card is None:
        return b"null"  # unknown cards are remembered too; registering one replaces the record
    person = card.identifier.person
    facts = {
        "health_card_id": card.health_card_id,
        "status": card.status.value,
        "auth_level": card.auth_level.value,
        "empi_id": person.empi_id,
        "name_sealed": person.name_sealed,
        "gender": person.gender,
        "id_type": card.identifier.id_type,
        "number_sealed": card.identifier.number_sealed,
    }
    return json.dumps(facts).encode()


def _opened_facts(rt: Runtime, payload: bytes) -> dict | None:
    facts = json.loads(payload)
    if facts is None:
        return None
    return {
        **{k: v for k, v in facts.items() if not k.endswith("_sealed")},
        "name": rt.vault.decrypt_text(facts["name_sealed"]),
        "id_number": rt.vault.decrypt_text(facts["number_sealed"]),
    }


# Status, auth level and identity of a card (None: no such card). The shared cache keeps
# them sealed; a worker's copy is opened. Every change to a card or its holder calls
# CARD_RECORDS.changed() after it commits.
CARD_RECORDS: StampedRecords[dict | None] = StampedRecords(
    "card:", ttl_s=CARD_RECORD_S, read=_read_facts, decode=_opened_facts
)
