"""Synthetic residents with valid GB 11643 identity numbers."""

from __future__ import annotations

import random
from datetime import date, timedelta

from cardcore.identity import gb11643_check_char

_SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英"


def resident(rng: random.Random | None = None, **overrides) -> dict:
    rng = rng or random.Random()
    birth = date(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 70))
    gender = overrides.get("gender") or rng.choice("12")
    sequence = rng.randrange(0, 100) * 10 + rng.choice([1, 3, 5, 7, 9] if gender == "1" else [0, 2, 4, 6, 8])
    first17 = f"610102{birth:%Y%m%d}{sequence:03d}"
    person = {
        "name": rng.choice(_SURNAMES) + "".join(rng.choice(_GIVEN) for _ in range(rng.choice([1, 2]))),
        "gender": gender,
        "nation": "01",
        "birth_date": birth.isoformat(),
        "id_type": "01",
        "id_number": first17 + gb11643_check_char(first17),
        "phone": f"1{rng.choice('3589')}{rng.randrange(0, 10**9):09d}",
        "address": "陕西省西安市新城区" + str(rng.randrange(1, 999)) + "号",
    }
    person.update(overrides)
    return person
