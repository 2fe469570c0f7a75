"""Mock identity registry (population registry real-name check, 实名核验).

- ``POST /_mock/registry/verify {name, id_type, id_number}`` → ``{result: "match"|"mismatch"|"unknown"}``
  (the provider API the platform calls): ``mismatch`` means the document is registered
  under another name.
- ``POST /_mock/registry/people {name, id_type, id_number, gender, birth_date, phone, nation?, address?}``
  → 201 with the person (mock control, API.md); the same document again replaces the
  record and answers 200. Invalid data (e.g. a wrong GB 11643 check digit) → 422.
- ``GET /_mock/registry/people?limit=`` → ``{items: [...]}``: who is registered, for demos.

On first use the registry is seeded with ``SEED_SIZE`` synthetic residents with valid
identity numbers, the same ones on every installation (a fixed random seed).
"""

from __future__ import annotations

import random
from datetime import date, timedelta

from pydantic import ValidationError
from sanic import Blueprint, Request
from sanic.response import json

from cardcore.identity import Identity, gb11643_check_char, normalise_id_number
from mocks._common import body_of, cache, dumps, loads, now_iso

bp = Blueprint("mock_registry", url_prefix="/_mock/registry")

SEED_SIZE = 50
REGISTRY_TTL_S = 7 * 86400
_KEY_PEOPLE = "mock:registry:people"

_SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕"
_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂华建国志红玉梅鹏飞婷雪慧晨阳宇浩欣怡"
# 陕西省 county codes (GB/T 2260): 新城 碑林 莲湖 灞桥 未央 雁塔 渭滨 秦都 宝塔 榆阳
_REGIONS = ("610102", "610103", "610104", "610111", "610112", "610113", "610302", "610402", "610602", "610802")


def seed_people(count: int = SEED_SIZE, seed: str = "ehc-mock-registry-1") -> list[dict]:
    """The synthetic population: deterministic, valid GB 11643 numbers, distinct documents."""
    rng = random.Random(seed)
    people: list[dict] = []
    seen: set[str] = set()
    while len(people) < count:
        birth = date(1940, 1, 1) + timedelta(days=rng.randrange(0, 365 * 80))
        gender = rng.choice("12")
        sequence = rng.randrange(0, 100) * 10 + rng.choice((1, 3, 5, 7, 9) if gender == "1" else (0, 2, 4, 6, 8))
        region = rng.choice(_REGIONS)
        first17 = f"{region}{birth:%Y%m%d}{sequence:03d}"
        id_number = first17 + gb11643_check_char(first17)
        if id_number in seen:
            continue
        seen.add(id_number)
        people.append(
            {
                "name": rng.choice(_SURNAMES) + "".join(rng.choice(_GIVEN) for _ in range(rng.choice((1, 2)))),
                "gender": gender,
                "nation": "01",
                "birth_date": birth.isoformat(),
                "id_type": "01",
                "id_number": id_number,
                "phone": f"1{rng.choice('3589')}{rng.randrange(0, 10**9):09d}",
                "address": f"陕西省西安市{rng.choice(('新城区', '碑林区', '莲湖区', '雁塔区'))}{rng.randrange(1, 999)}号",
            }
        )
    return people


def _field(id_type: str, id_number: str) -> str:
    return f"{id_type}:{normalise_id_number(id_number)}"


async def _ensure_seeded(request: Request):
    """Seed the registry if it is empty (idempotent, so several workers may race here)."""
    redis = cache(request)
    if await redis.exists(_KEY_PEOPLE):
        return redis
    pipe = redis.pipeline(transaction=True)
    for person in seed_people():
        pipe.hsetnx(_KEY_PEOPLE, _field(person["id_type"], person["id_number"]), dumps(person))
    pipe.expire(_KEY_PEOPLE, REGISTRY_TTL_S)
    await pipe.execute()
    return redis


def _refuse(status: int, code: str, message: str, details=None):
    body = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return json(body, status=status)


@bp.post("/verify")
async def verify(request: Request):
    body = body_of(request)
    name = str(body.get("name") or "").strip()
    id_type = str(body.get("id_type") or "")
    id_number = str(body.get("id_number") or "")
    if not (name and id_type and id_number):
        return _refuse(400, "INVALID_PARAMETER", "name, id_type and id_number are required")
    redis = await _ensure_seeded(request)
    person = loads(await redis.hget(_KEY_PEOPLE, _field(id_type, id_number)))
    if person is None:
        result = "unknown"
    elif person["name"] != name:
        result = "mismatch"
    else:
        result = "match"
    return json({"result": result})


@bp.post("/people")
async def add_person(request: Request):
    body = body_of(request)
    try:
        identity = Identity.model_validate(body)
    except ValidationError as exc:
        problems = [{"field": ".".join(map(str, e["loc"])) or "(body)", "problem": e["msg"]} for e in exc.errors()]
        return _refuse(422, "INVALID_PERSON", "the person's data is not valid", problems)
    person = identity.model_dump(mode="json")
    person["added_at"] = now_iso()
    redis = await _ensure_seeded(request)
    pipe = redis.pipeline(transaction=True)
    pipe.hset(_KEY_PEOPLE, _field(identity.id_type, identity.id_number), dumps(person))
    pipe.expire(_KEY_PEOPLE, REGISTRY_TTL_S)
    created, _ = await pipe.execute()
    return json(person, status=201 if created else 200)


@bp.get("/people")
async def list_people(request: Request):
    try:
        limit = max(1, min(int(request.args.get("limit", "20")), 500))
    except ValueError:
        return _refuse(400, "INVALID_PARAMETER", "limit is a number")
    redis = await _ensure_seeded(request)
    people = [loads(raw) for raw in (await redis.hgetall(_KEY_PEOPLE)).values()]
    people.sort(key=lambda p: (p.get("added_at", ""), p["id_number"]))
    return json({"items": people[:limit]})
