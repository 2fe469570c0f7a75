"""Storage models of the card core (tortoise app label ``cardcore``)."""

from cardcore.empi.models import Person, PersonIdentifier, PersonStatus
from cardcore.models.access import Client, ClientKind, ClientStatus
from cardcore.models.cards import AuditEvent, AuthLevel, Card, CardStatus, CodeEvent, UsageReport
from cardcore.models.residents import CardManager, LoginChannel, Relation, ResidentAccount

__all__ = [
    "AuditEvent",
    "AuthLevel",
    "Card",
    "CardManager",
    "CardStatus",
    "Client",
    "ClientKind",
    "ClientStatus",
    "CodeEvent",
    "LoginChannel",
    "Person",
    "PersonIdentifier",
    "PersonStatus",
    "Relation",
    "ResidentAccount",
    "UsageReport",
]
