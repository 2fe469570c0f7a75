"""Resident accounts, card claim and family management (SPEC §2, 统一用户体系).

Rules kept here, not in handlers:
- an account holds at most one card as its own, and a card has at most one holder;
- the same person claimed by a second account for themselves is refused; family
  management is the way several accounts reach one card (both parents);
- an account manages at most ``family_limit`` members, each once;
- a managed person who claims their own card takes it over and may remove managers;
- acting on family members needs the manager's strong authentication; every act is audited.
"""

from __future__ import annotations

import secrets
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from cardcore import audit, cards, codes, errors
from cardcore.identity import BirthDate, Gender, Identity, IdType, Name, Phone, normalise_id_number
from cardcore.models import AuthLevel, Card, CardManager, LoginChannel, Relation, ResidentAccount
from cardcore.runtime import Runtime


class CardAlreadyClaimed(errors.PlatformError):
    code, status, message = "CARD_ALREADY_CLAIMED", 409, "this person's card is held by another account"


class OwnCardExists(errors.PlatformError):
    code, status, message = "OWN_CARD_EXISTS", 409, "this account already holds a card of its own"


class FamilyLimitReached(errors.PlatformError):
    code, status, message = "FAMILY_LIMIT", 409, "the account manages the largest number of family members allowed"


class AlreadyManaged(errors.PlatformError):
    code, status, message = "ALREADY_MANAGED", 409, "this family member is already on the account"


class StrongAuthRequired(errors.PlatformError):
    code, status, message = "STRONG_AUTH_REQUIRED", 403, "this needs strong authentication (SMS or face) first"


class RegistryCheck(Protocol):
    async def require_match(self, identity: Identity) -> None:
        """Raise IDENTITY_UNKNOWN or IDENTITY_MISMATCH unless the registry confirms the identity."""


class Guardian(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Name
    id_type: IdType
    id_number: str = Field(min_length=4, max_length=32)
    phone: Phone


class ChildWithoutId(BaseModel):
    """A child without an identity document, registered with guardian data (seed 002 §4.2.1.3)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Name
    gender: Gender
    birth_date: BirthDate
    parity: int = Field(1, ge=1, le=9, description="birth order among the guardian's children (胎次)")
    guardian: Guardian

    def domain_identity(self) -> Identity:
        """The child as an identity under an EMPI domain index derived from the guardian."""
        guardian_number = normalise_id_number(self.guardian.id_number)
        index = f"CH{self.guardian.id_type}{guardian_number}{self.birth_date:%Y%m%d}{self.parity}"
        return Identity(
            name=self.name,
            gender=self.gender,
            birth_date=self.birth_date,
            id_type="99",
            id_number=index,
            phone=self.guardian.phone,
        )


def new_account_id() -> str:
    return "acc_" + secrets.token_hex(10)


async def account_for(rt: Runtime, channel: LoginChannel, subject: str) -> ResidentAccount:
    """The account behind a channel user id, created at first login."""
    index = rt.vault.blind_index(f"login:{channel.value}", subject)
    account = await ResidentAccount.get_or_none(channel=channel, subject_index=index)
    if account is not None:
        return account
    try:
        return await ResidentAccount.create(account_id=new_account_id(), channel=channel, subject_index=index)
    except IntegrityError:
        return await ResidentAccount.get(channel=channel, subject_index=index)


def actor_for(account: ResidentAccount) -> audit.Actor:
    return audit.Actor(client_id=account.account_id)


async def own_card(account: ResidentAccount) -> Card | None:
    return await Card.get_or_none(holder_account_id=account.account_id)


async def require_strong_auth(account: ResidentAccount) -> None:
    """Strong authentication of the account's own card (L2) unlocks family management."""
    card = await own_card(account)
    if card is None or card.auth_level is not AuthLevel.strong:
        raise StrongAuthRequired()


async def claim_for_self(rt: Runtime, account: ResidentAccount, identity: Identity, registry: RegistryCheck) -> tuple[Card, bool]:
    """Claim (领卡) the account's own card; a managed card is taken over by its person."""
    await registry.require_match(identity)
    card, created = await cards.register_card(rt, identity, actor_for(account))
    if card.holder_account_id == account.account_id:
        return card, created
    if card.holder_account_id is not None:
        raise CardAlreadyClaimed()
    if await own_card(account) is not None:
        raise OwnCardExists()
    async with in_transaction():
        taken = await Card.filter(health_card_id=card.health_card_id, holder_account_id=None).update(
            holder_account_id=account.account_id
        )
        if not taken:
            raise CardAlreadyClaimed()
        # Holding a card replaces managing it.
        await CardManager.filter(account_id=account.account_id, card_id=card.health_card_id).delete()
        await audit.record(actor_for(account), "card.claim.self", card.health_card_id, took_over=not created)
    return await cards.get_card(card.health_card_id), created


async def claim_for_family(
    rt: Runtime,
    account: ResidentAccount,
    identity: Identity,
    relation: Relation,
    registry: RegistryCheck,
    *,
    verify_with_registry: bool = True,
) -> tuple[Card, bool]:
    """Add a family member's card to the account (registering it if the person has none)."""
    await require_strong_auth(account)
    if verify_with_registry:
        await registry.require_match(identity)
    card, created = await cards.register_card(rt, identity, actor_for(account))
    if card.holder_account_id == account.account_id:
        raise AlreadyManaged("this is the account's own card")
    limit = rt.settings.family_limit
    async with in_transaction():
        if await CardManager.filter(account_id=account.account_id, card_id=card.health_card_id).exists():
            raise AlreadyManaged()
        if await CardManager.filter(account_id=account.account_id).count() >= limit:
            raise FamilyLimitReached(f"an account manages at most {limit} family members")
        try:
            await CardManager.create(account_id=account.account_id, card_id=card.health_card_id, relation=relation)
        except IntegrityError:
            raise AlreadyManaged() from None
        await audit.record(actor_for(account), "card.claim.family", card.health_card_id, relation=relation.value)
    return card, created


async def claim_child_without_id(rt: Runtime, account: ResidentAccount, child: ChildWithoutId, registry: RegistryCheck) -> tuple[Card, bool]:
    """A child with no document: the guardian is checked against the registry instead."""
    guardian = child.guardian
    guardian_identity = Identity.model_construct(
        name=guardian.name, id_type=guardian.id_type, id_number=normalise_id_number(guardian.id_number)
    )
    await registry.require_match(guardian_identity)
    return await claim_for_family(
        rt, account, child.domain_identity(), Relation.child, registry, verify_with_registry=False
    )


async def cards_of(account: ResidentAccount) -> list[tuple[Card, str]]:
    """The account's own card first, then the managed family cards, with the relation."""
    result: list[tuple[Card, str]] = []
    mine = await Card.get_or_none(holder_account_id=account.account_id).prefetch_related("identifier__person")
    if mine is not None:
        result.append((mine, "self"))
    links = await CardManager.filter(account_id=account.account_id).order_by("id").prefetch_related(
        "card__identifier__person"
    )
    result.extend((link.card, link.relation.value) for link in links)
    return result


async def card_for(account: ResidentAccount, health_card_id: str) -> tuple[Card, str]:
    """A card the account holds or manages; anything else is CARD_NOT_FOUND (never a hint)."""
    if not codes.is_vuid(health_card_id):
        raise errors.CardNotFound()
    card = await Card.get_or_none(health_card_id=health_card_id).prefetch_related("identifier__person")
    if card is not None:
        if card.holder_account_id == account.account_id:
            return card, "self"
        link = await CardManager.get_or_none(account_id=account.account_id, card_id=health_card_id)
        if link is not None:
            return card, link.relation.value
    raise errors.CardNotFound()


async def stop_managing(account: ResidentAccount, health_card_id: str) -> None:
    card, relation = await card_for(account, health_card_id)
    if relation == "self":
        raise errors.Conflict("an account cannot stop holding its own card", code="CARD_STATE_CONFLICT")
    await CardManager.filter(account_id=account.account_id, card_id=health_card_id).delete()
    await audit.record(actor_for(account), "card.manager.leave", health_card_id)


async def managers_of(holder: ResidentAccount, health_card_id: str) -> list[CardManager]:
    card, relation = await card_for(holder, health_card_id)
    if relation != "self":
        raise errors.CardNotFound()
    return await CardManager.filter(card_id=health_card_id).order_by("id")


async def remove_manager(holder: ResidentAccount, health_card_id: str, manager_account_id: str) -> None:
    """The holder removes another account's management of their card."""
    managers = await managers_of(holder, health_card_id)
    # The id comes from the URL and may be anything: looked for among the card's managers first.
    if manager_account_id not in {manager.account_id for manager in managers}:
        raise errors.NotFound("no such manager")
    removed = await CardManager.filter(card_id=health_card_id, account_id=manager_account_id).delete()
    if not removed:
        raise errors.NotFound("no such manager")
    await audit.record(actor_for(holder), "card.manager.remove", health_card_id, manager=manager_account_id)


async def act_on_card(account: ResidentAccount, health_card_id: str, action: str) -> Card:
    """Reach a card for an act; acting for a family member needs strong auth and is audited."""
    card, relation = await card_for(account, health_card_id)
    if relation != "self":
        await require_strong_auth(account)
        await audit.record(actor_for(account), action, health_card_id, relation=relation)
    return card

