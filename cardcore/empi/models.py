"""EMPI storage: the person index (人索引) and the identifiers that point at a person.

Personal fields are sealed under the vault's data key; identifiers are found through a
keyed SM3 blind index, so no table holds an identity number or a phone in clear.
"""

from __future__ import annotations

from enum import Enum

from tortoise import fields
from tortoise.models import Model


class PersonStatus(str, Enum):
    active = "active"
    voided = "voided"


class Person(Model):
    empi_id = fields.CharField(max_length=16, primary_key=True)
    name_sealed = fields.TextField()
    gender = fields.CharField(max_length=1)  # GB/T 2261.1: 0 unknown, 1 male, 2 female, 9 unspecified
    birth_date = fields.DateField()
    nation = fields.CharField(max_length=2, default="")  # GB 3304 code, e.g. 01 汉族
    address_sealed = fields.TextField(default="")
    phone_sealed = fields.TextField(default="")
    phone_index = fields.CharField(max_length=64, default="", db_index=True)
    status = fields.CharEnumField(PersonStatus, max_length=8, default=PersonStatus.active)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "empi_person"


# An identity document of a person; (id_type, number) belongs to at most one person.
class PersonIdentifier(Model):

    id = fields.BigIntField(primary_key=True)
    person: fields.ForeignKeyRelation[Person] = fields.ForeignKeyField(
        "cardcore.Person", related_name="identifiers", on_delete=fields.RESTRICT
    )
    id_type = fields.CharField(max_length=2)  # WS 364 CV02.01.101
    number_index = fields.CharField(max_length=64)
    number_sealed = fields.TextField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "empi_identifier"
        unique_together = (("id_type", "number_index"),)
