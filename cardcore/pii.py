"""Masking of personal data for logs and for responses that do not need it in full."""

from __future__ import annotations

import re

# 18-digit resident ID (GB 11643) and 15-digit legacy ID; mainland mobile numbers.
_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])\d{6}(?:\d{11}[\dXx]|\d{9})(?![0-9A-Za-z])")
_PHONE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")

PERSONAL_FIELDS = frozenset({"name", "id_number", "phone", "address", "guardian_id_number", "guardian_name"})


def mask_id_number(value: str) -> str:
    if len(value) <= 4:
        return "*" * len(value)
    keep_head = 6 if len(value) >= 15 else 1
    return value[:keep_head] + "*" * (len(value) - keep_head - 4) + value[-4:]


def mask_phone(value: str) -> str:
    if len(value) < 7:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


def mask_name(value: str) -> str:
    if len(value) <= 1:
        return "*"
    return value[0] + "*" * (len(value) - 1)


def mask_address(value: str) -> str:
    return value[:6] + "****" if len(value) > 6 else "****"


_FIELD_MASKS = {
    "name": mask_name,
    "guardian_name": mask_name,
    "id_number": mask_id_number,
    "guardian_id_number": mask_id_number,
    "phone": mask_phone,
    "address": mask_address,
}


def mask_field(field: str, value: str) -> str:
    return _FIELD_MASKS.get(field, lambda v: v)(value)


def mask_text(text: str) -> str:
    """Mask anything in free text that looks like an identity number or a phone number."""
    text = _ID_NUMBER.sub(lambda m: mask_id_number(m.group(0)), text)
    return _PHONE.sub(r"\1****\2", text)


def mask_mapping(data):
    """A copy of nested dicts/lists with personal fields and look-alike numbers masked."""
    if isinstance(data, dict):
        return {
            k: mask_field(k, v) if k in PERSONAL_FIELDS and isinstance(v, str) else mask_mapping(v)
            for k, v in data.items()
        }
    if isinstance(data, (list, tuple)):
        return [mask_mapping(v) for v in data]
    if isinstance(data, str):
        return mask_text(data)
    return data
