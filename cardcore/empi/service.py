"""Person index service: find or create a person by identity document (the EMPI minimum)."""

from __future__ import annotations

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from cardcore.codes import new_empi_id
from cardcore.empi.models import Person, PersonIdentifier
from cardcore.identity import Identity
from cardcore.runtime import Runtime


def identifier_index(rt: Runtime, id_type: str, id_number: str) -> str:
    return rt.vault.blind_index("id_number", f"{id_type}:{id_number}")


def phone_index(rt: Runtime, phone: str) -> str:
    return rt.vault.blind_index("phone", phone)


async def find_identifier(rt: Runtime, id_type: str, id_number: str) -> PersonIdentifier | None:
    return await PersonIdentifier.get_or_none(
        id_type=id_type, number_index=identifier_index(rt, id_type, id_number)
    ).select_related("person")


def seal_person_fields(rt: Runtime, identity: Identity) -> dict:
    seal = rt.vault.encrypt_text
    return {
        "name_sealed": seal(identity.name),
        "gender": identity.gender,
        "birth_date": identity.birth_date,
        "nation": identity.nation,
        "address_sealed": seal(identity.address) if identity.address else "",
        "phone_sealed": seal(identity.phone),
        "phone_index": phone_index(rt, identity.phone),
    }


async def find_or_create_person(rt: Runtime, identity: Identity) -> tuple[PersonIdentifier, bool]:
    """The identifier (with its person) of this document; a document never gets two persons."""
    found = await find_identifier(rt, identity.id_type, identity.id_number)
    if found is not None:
        return found, False
    try:
        async with in_transaction():
            person = await Person.create(empi_id=new_empi_id(), **seal_person_fields(rt, identity))
            identifier = await PersonIdentifier.create(
                person=person,
                id_type=identity.id_type,
                number_index=identifier_index(rt, identity.id_type, identity.id_number),
                number_sealed=rt.vault.encrypt_text(identity.id_number),
            )
    except IntegrityError:
        # The same document was registered concurrently: the first one wins.
        found = await find_identifier(rt, identity.id_type, identity.id_number)
        if found is None:
            raise
        return found, False
    return identifier, True


def open_person(rt: Runtime, identifier: PersonIdentifier) -> dict:
    """The person's real-name data in clear, for callers entitled to it."""
    person = identifier.person
    open_ = rt.vault.decrypt_text
    return {
        "empi_id": person.empi_id,
        "name": open_(person.name_sealed),
        "gender": person.gender,
        "nation": person.nation,
        "birth_date": person.birth_date.isoformat(),
        "id_type": identifier.id_type,
        "id_number": open_(identifier.number_sealed),
        "phone": open_(person.phone_sealed) if person.phone_sealed else "",
        "address": open_(person.address_sealed) if person.address_sealed else "",
    }
