"""Real-name data of a resident: codes, normalisation and the GB 11643 identity-number rules."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from cardcore.text import Readable

# WS 364 CV02.01.101 身份证件类别代码
ID_TYPES = {
    "01": "居民身份证",
    "02": "居民户口簿",
    "03": "护照",
    "04": "军官证",
    "05": "驾驶证",
    "06": "港澳居民来往内地通行证",
    "07": "台湾居民来往内地通行证",
    "99": "其他法定有效证件",
}
RESIDENT_ID_CARD = "01"

# GB/T 2261.1 人的性别代码
GENDERS = {"0": "未知的性别", "1": "男", "2": "女", "9": "未说明的性别"}

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_RESIDENT_ID = re.compile(r"^\d{17}[\dX]$")
_OTHER_ID = re.compile(r"^[0-9A-Z()\-]{4,32}$")
_PHONE = re.compile(r"^1[3-9]\d{9}$")


def gb11643_check_char(first17: str) -> str:
    """The MOD 11-2 check character of an 18-digit resident identity number."""
    return _CHECK_CHARS[sum(int(d) * w for d, w in zip(first17, _WEIGHTS)) % 11]


def resident_id_problem(number: str, birth_date: date | None, gender: str | None) -> str | None:
    """Why an 18-digit 居民身份证 number is wrong for this person, or None when it is right."""
    if not _RESIDENT_ID.match(number):
        return "a resident identity number has 17 digits and a check digit or X"
    if gb11643_check_char(number[:17]) != number[17]:
        return "the check digit of the identity number is wrong"
    try:
        embedded = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return "the identity number holds no valid birth date"
    if birth_date is not None and embedded != birth_date:
        return "birth_date does not match the identity number"
    embedded_gender = "1" if int(number[16]) % 2 else "2"
    if gender in ("1", "2") and gender != embedded_gender:
        return "gender does not match the identity number"
    return None


def normalise_id_number(value: str) -> str:
    return value.strip().upper().replace(" ", "")


def _check_name(value: str) -> str:
    if any(ch.isdigit() for ch in value):
        raise ValueError("a name has no digits")
    return value


def _check_gender(value: str) -> str:
    if value not in GENDERS:
        raise ValueError(f"gender is one of {', '.join(GENDERS)}")
    return value


def _check_id_type(value: str) -> str:
    if value not in ID_TYPES:
        raise ValueError(f"id_type is one of {', '.join(ID_TYPES)}")
    return value


def _check_phone(value: str) -> str:
    value = value.replace(" ", "").removeprefix("+86")
    if not _PHONE.match(value):
        raise ValueError("phone must be an 11-digit mainland mobile number")
    return value


def _check_birth_date(value: date) -> date:
    if value > date.today() or value.year < 1880:
        raise ValueError("birth_date is not plausible")
    return value


Name = Annotated[str, Field(min_length=1, max_length=64, description="姓名"), Readable, AfterValidator(_check_name)]
Gender = Annotated[str, Field(description="GB/T 2261.1: 1 男, 2 女, 0 未知, 9 未说明"), AfterValidator(_check_gender)]
Nation = Annotated[str, Field(pattern=r"^(\d{2})?$", description="民族, GB 3304 code, e.g. 01 汉族")]
BirthDate = Annotated[date, AfterValidator(_check_birth_date)]
IdType = Annotated[str, Field(description="WS 364 CV02.01.101: 01 居民身份证 … 99 其他"), AfterValidator(_check_id_type)]
Phone = Annotated[str, Field(description="mainland mobile number"), AfterValidator(_check_phone)]
Address = Annotated[str, Field(max_length=200), Readable]


class Identity(BaseModel):
    """Real-name data as a counter, a resident or a registry gives it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Name
    gender: Gender
    nation: Nation = ""
    birth_date: BirthDate
    id_type: IdType
    id_number: str = Field(min_length=4, max_length=32)
    phone: Phone
    address: Address = ""

    @model_validator(mode="after")
    def _document(self) -> "Identity":
        self.id_number = normalise_id_number(self.id_number)
        if self.id_type == RESIDENT_ID_CARD:
            problem = resident_id_problem(self.id_number, self.birth_date, self.gender)
            if problem:
                raise ValueError(problem)
        elif not _OTHER_ID.match(self.id_number):
            raise ValueError("id_number holds characters a document number does not have")
        return self


class PersonUpdate(BaseModel):
    """Personal data a card holder may change; the identity document stays."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Name | None = None
    nation: Nation | None = None
    phone: Phone | None = None
    address: Address | None = None

    def changes(self) -> dict:
        return self.model_dump(exclude_unset=True, exclude_none=True)
