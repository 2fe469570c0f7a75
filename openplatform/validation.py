"""Request parsing with pydantic: one place turns bad input into VALIDATION_ERROR."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import wraps
from typing import Annotated, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sanic import Request
from sanic_ext.extensions.openapi.builders import OperationStore

from cardcore.errors import BadRequest, ValidationFailed
from openplatform.errors import validation_details

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Request bodies refuse unknown fields, so a misspelt field is an error, not silence."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _utc_representable(moment: datetime) -> datetime:
    try:
        moment.astimezone(timezone.utc)  # how the database takes it
    except OverflowError:
        raise ValueError("is out of range once taken to UTC") from None
    return moment


# A time as API.md writes times (ISO 8601 with its offset: the hours of a day differ by
# place), and one the database can hold.
Moment = Annotated[AwareDatetime, AfterValidator(_utc_representable)]


class PageQuery(BaseModel):
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=128)


class EventQuery(PageQuery):
    health_card_id: str | None = Field(None, pattern=r"^[0-9A-F]{64}$")
    result: str | None = Field(None, max_length=32, description="ok or an error code")
    since: Moment | None = None
    until: Moment | None = None


class StatsQuery(BaseModel):
    group_by: str = Field("action,result", description="comma-separated: action, result, scene, code_type, institution_id, terminal_id")
    since: Moment | None = None
    until: Moment | None = None

    def fields(self, allowed: tuple[str, ...]) -> list[str]:
        names = list(dict.fromkeys(n.strip() for n in self.group_by.split(",") if n.strip()))
        unknown = sorted(set(names) - set(allowed))
        if not names or unknown:
            raise ValidationFailed(f"group_by takes {', '.join(allowed)}")
        return names


def _nul_field(value, path: str = "") -> str | None:
    """Where a NUL character is in parsed JSON (a field path), or None."""
    if isinstance(value, str):
        return (path or "(body)") if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        where = f"{path}.{key}" if path else str(key)
        found = where if "\x00" in where else _nul_field(item, where)
        if found:
            return found
    return None


def _refuse_nul(data) -> None:
    """No text of this API holds NUL: PostgreSQL cannot store it, so it is refused here."""
    where = _nul_field(data)
    if where is not None:
        raise ValidationFailed(details=[{"field": where.replace("\x00", "\\u0000"), "problem": "NUL characters (\\u0000) are not allowed"}])


def parse_model(model: type[M], data) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(details=validation_details(exc)) from None


def parse_json(request: Request, model: type[M]) -> M:
    if not request.body:
        raise ValidationFailed("a JSON body is required")
    try:
        # pydantic reads the JSON and validates in one pass: a third of json.loads + model_validate.
        parsed = model.model_validate_json(request.body)
    except ValidationError as exc:
        problem = exc.errors(include_url=False, include_input=False)[0]
        if problem["type"] == "json_invalid":
            raise BadRequest("the body is not valid JSON (UTF-8)") from None
        if problem["type"] == "model_type" and not problem["loc"]:
            raise ValidationFailed("the JSON body must be an object") from None
        raise ValidationFailed(details=validation_details(exc)) from None
    if b"\\u0000" in request.body:  # a NUL can only come escaped; read again only then
        _refuse_nul(json.loads(request.body))
    return parsed


def parse_optional_json(request: Request, model: type[M]) -> M:
    """Like ``parse_json``, but an empty body means every field at its default."""
    return parse_json(request, model) if request.body else model()


def parse_query(request: Request, model: type[M]) -> M:
    # Repeated parameters are not part of the API; the first value counts.
    data = {k: v[0] for k, v in request.args.items()}
    _refuse_nul(data)
    return parse_model(model, data)


def openapi_schema(model: type[BaseModel]) -> dict:
    """The model's JSON schema with nested models written inline (OpenAPI 3.0 has no $defs)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node):
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


def keep_openapi(wrapper, handler):
    """Give a decorator's wrapper the OpenAPI description gathered on the handler it wraps:
    sanic-ext keeps descriptions per function object, so a second decorator would drop them."""
    store = OperationStore()
    if handler in store:
        store[wrapper] = store[handler]
    return wrapper


def json_body(model: type[BaseModel], *, required: bool = True):
    """Parse and validate the JSON body into ``body=``, and document it in OpenAPI.

    With ``required=False`` an empty body means every field at its default.
    """
    parse = parse_json if required else parse_optional_json

    def decorator(handler):
        @wraps(handler)
        async def wrapper(request: Request, *args, **kwargs):
            return await handler(request, *args, body=parse(request, model), **kwargs)

        # Described in sanic-ext's store directly: its openapi.body decorator would also wrap
        # the handler in a layer of its own that runs on every request.
        keep_openapi(wrapper, handler)
        OperationStore()[wrapper].body({"application/json": openapi_schema(model)}, required=required)
        return wrapper

    return decorator
