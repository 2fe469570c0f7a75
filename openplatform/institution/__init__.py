"""Institution and terminal API — ``/inst/v1``: registration, identity, terminals."""

from __future__ import annotations

import asyncio
from typing import Annotated

from pydantic import Field, model_validator
from sanic import Blueprint, Request
from sanic.response import json, raw

from cardcore import access, cards, qrimage, ratelimit, reports, strongauth, usage
from cardcore.identity import Identity, PersonUpdate
from cardcore.models import ClientKind
from cardcore.pii import mask_name
from cardcore.text import Readable
from cardcore.verify import verify_code
from openplatform.auth import authorise_terminal, signed
from openplatform.presenters import client_view, credentials_view, page
from openplatform.validation import EventQuery, Moment, PageQuery, StatsQuery, StrictModel, json_body, parse_query

bp = Blueprint("institution", url_prefix="/inst/v1")


class RegistrationBody(StrictModel):
    name: Annotated[str, Field(min_length=2, max_length=128, description="institution name, e.g. 西安市第一医院"), Readable]


class TerminalBody(StrictModel):
    name: Annotated[str, Field(min_length=1, max_length=128, description="where it stands, e.g. 门诊一楼挂号窗口 3"), Readable]
    ip_allowlist: list[str] = Field(default_factory=list, max_length=64)


async def limit_registrations(request: Request) -> None:
    settings = request.app.ctx.rt.settings
    await ratelimit.enforce(
        request.app.ctx.rt.redis,
        f"register:{request.remote_addr or request.ip}",
        settings.registrations_per_hour,
        3600,
        "too many registrations from this address; try again later",
    )


@bp.post("/register")
@json_body(RegistrationBody)
async def register_institution(request: Request, body: RegistrationBody):
    """Apply for access. The credentials work once an admin approves them."""
    await limit_registrations(request)
    client, secret = await access.register_client(request.app.ctx.rt, ClientKind.institution, body.name)
    return json(credentials_view(client, secret), status=201)


@bp.get("/me")
@signed(ClientKind.institution, ClientKind.terminal)
async def whoami(request: Request):
    """The caller as the platform sees it (useful to check signing)."""
    caller = request.ctx.caller
    return json(
        {
            "client_id": caller.client_id,
            "kind": caller.client.kind.value,
            "institution_id": caller.institution_id,
            "terminal_id": caller.terminal_id,
            "disabled_functions": sorted(caller.client.disabled_functions),
            "scopes": sorted(caller.client.scopes),
        }
    )


@bp.post("/terminals")
@signed(ClientKind.institution, function="terminals.manage")
@json_body(TerminalBody)
async def register_terminal(request: Request, body: TerminalBody):
    """Register a reader terminal of the calling institution; an admin approves it."""
    client, secret = await access.register_client(
        request.app.ctx.rt,
        ClientKind.terminal,
        body.name,
        institution_id=request.ctx.caller.institution_id,
        ip_allowlist=body.ip_allowlist,
    )
    return json(credentials_view(client, secret), status=201)


@bp.get("/terminals")
@signed(ClientKind.institution, function="terminals.manage")
async def list_terminals(request: Request):
    query = parse_query(request, PageQuery)
    rows, cursor = await access.list_clients(
        ClientKind.terminal,
        institution_id=request.ctx.caller.institution_id,
        limit=query.limit,
        cursor=query.cursor,
    )
    return json(page([client_view(c) for c in rows], cursor))


# --- cards, codes, usage ------------------------------------------------------------

institution_or_terminal = (ClientKind.institution, ClientKind.terminal)


class VerifyBody(StrictModel):
    qr_code_text: str = Field(min_length=1, max_length=512, description="the decoded QR text, as scanned")
    scene: str = Field(description="registration, consultation, payment, pharmacy, examination, report, admission, record_access, other")
    terminal_id: str | None = Field(None, max_length=40, description="the reader, when an institution forwards its scan")
    otp: str | None = Field(None, pattern=r"^\d{6}$", description="the resident's SMS code: second check of a static code in critical scenes")


class SecondCheckBody(StrictModel):
    qr_code_text: str = Field(min_length=1, max_length=512, description="the scanned static code, as decoded")
    scene: str = Field(description="the critical scene it is used in: payment or record_access")
    terminal_id: str | None = Field(None, max_length=40, description="the reader, when an institution forwards its scan")


class UsageBody(StrictModel):
    health_card_id: str | None = Field(None, pattern=r"^[0-9A-F]{64}$")
    qr_code_text: str | None = Field(None, max_length=512)
    scene: str
    department: Annotated[str, Field(max_length=64), Readable] = ""
    occurred_at: Moment

    @model_validator(mode="after")
    def _one_card_reference(self) -> "UsageBody":
        if bool(self.health_card_id) == bool(self.qr_code_text):
            raise ValueError("give either health_card_id or qr_code_text")
        return self


class StatusChangeBody(StrictModel):
    reason: Annotated[str, Field(max_length=255), Readable] = ""


def _card_response(request: Request, card, status: int = 200):
    rt = request.app.ctx.rt
    return json(cards.card_view(rt, card, full_identity=request.ctx.caller.has_scope("identity.full")), status=status)


@bp.post("/cards")
@signed(*institution_or_terminal, function="cards.register")
@json_body(Identity)
async def register_card(request: Request, body: Identity):
    """Counter registration 发码建档: 201 with a new card, 200 with the person's existing card."""
    card, created = await cards.register_card(request.app.ctx.rt, body, request.ctx.caller.actor)
    return _card_response(request, card, 201 if created else 200)


@bp.get("/cards/<health_card_id:str>")
@signed(*institution_or_terminal, function="cards.read")
async def read_card(request: Request, health_card_id: str):
    card = await cards.read_card(request.app.ctx.rt, health_card_id, request.ctx.caller.actor, reason="institution read")
    return _card_response(request, card)


@bp.patch("/cards/<health_card_id:str>")
@signed(ClientKind.institution, function="cards.manage")
@json_body(PersonUpdate)
async def update_card(request: Request, health_card_id: str, body: PersonUpdate):
    """Update the holder's name, nation, phone or address."""
    card = await cards.update_person(request.app.ctx.rt, health_card_id, body.changes(), request.ctx.caller.actor)
    return _card_response(request, card)


@bp.post("/cards/<health_card_id:str>/<action:freeze|unfreeze|cancel>")
@signed(ClientKind.institution, function="cards.manage")
@json_body(StatusChangeBody)
async def change_card_status(request: Request, health_card_id: str, action: str, body: StatusChangeBody):
    """Freeze (挂失), unfreeze or cancel (注销) a card; a cancelled card stays cancelled."""
    rt = request.app.ctx.rt
    card = await cards.change_status(rt, health_card_id, action, request.ctx.caller.actor, body.reason)
    return _card_response(request, card)


@bp.get("/cards/<health_card_id:str>/label.png")
@signed(*institution_or_terminal, function="cards.read")
async def card_label(request: Request, health_card_id: str):
    """Static-code sticker for a 200 dpi label printer."""
    rt = request.app.ctx.rt
    card = await cards.read_card(rt, health_card_id, request.ctx.caller.actor, reason="label print")
    view = cards.card_view(rt, card, full_identity=False)
    png = await asyncio.to_thread(
        qrimage.label_png, view["qr_code_text"], mask_name(view["name"]), "居民电子健康卡"
    )
    return raw(png, content_type="image/png", headers={"Cache-Control": "no-store"})


@bp.post("/codes/verify")
@signed(*institution_or_terminal, function="codes.verify", defer_nonce=True)
@json_body(VerifyBody)
async def verify(request: Request, body: VerifyBody):
    """Verify a scanned static, dynamic or combined code for a scene."""
    caller = request.ctx.caller
    if body.terminal_id and body.terminal_id != caller.terminal_id:
        caller = await authorise_terminal(request, body.terminal_id, "codes.verify")
    result = await verify_code(
        request.app.ctx.rt, body.qr_code_text, body.scene, caller.actor, body.otp, guard=request.ctx.guard
    )
    return json(result.view(caller.has_scope("identity.full")))


@bp.post("/codes/otp")
@signed(*institution_or_terminal, function="codes.verify")
@json_body(SecondCheckBody)
async def send_second_check(request: Request, body: SecondCheckBody):
    """Second check of a static code in a critical scene (静态二维码二次校验): text its holder a one-time code.

    The resident reads the code out; the terminal verifies the static code again with it as ``otp``.
    Answers where the code went (masked) and how long it is valid.
    """
    caller = request.ctx.caller
    if body.terminal_id and body.terminal_id != caller.terminal_id:
        caller = await authorise_terminal(request, body.terminal_id, "codes.verify")
    sms = request.app.ctx.providers.sms
    sent = await strongauth.send_second_check(request.app.ctx.rt, body.qr_code_text, body.scene, caller.actor, sms)
    return json(sent)


@bp.post("/usage")
@signed(*institution_or_terminal, function="usage.report")
@json_body(UsageBody)
async def report_usage(request: Request, body: UsageBody):
    """Card usage report 用卡数据上报."""
    report = await usage.report(
        request.app.ctx.rt,
        request.ctx.caller.actor,
        health_card_id=body.health_card_id,
        qr_code_text=body.qr_code_text,
        scene=body.scene,
        department=body.department,
        occurred_at=body.occurred_at,
    )
    return json(usage.report_view(report), status=201)


@bp.get("/code-events")
@signed(ClientKind.institution, function="cards.read")
async def code_events(request: Request):
    """The institution's own record of code issuance and verification, newest first."""
    query = parse_query(request, EventQuery)
    rows, cursor = await reports.list_code_events(
        request.app.ctx.rt,
        limit=query.limit,
        cursor=query.cursor,
        institution_id=request.ctx.caller.institution_id,
        health_card_id=query.health_card_id,
        result=query.result,
        since=query.since,
        until=query.until,
    )
    return json(page([reports.event_view(e) for e in rows], cursor))


@bp.get("/code-stats")
@signed(ClientKind.institution, function="cards.read")
async def code_stats(request: Request):
    """Counts of the institution's verifications, grouped as asked."""
    query = parse_query(request, StatsQuery)
    rows = await reports.code_stats(
        request.app.ctx.rt,
        query.fields(tuple(f for f in reports.GROUP_FIELDS if f != "institution_id")),
        institution_id=request.ctx.caller.institution_id,
        since=query.since,
        until=query.until,
    )
    return json({"items": rows})
