"""Admin API — ``/admin/v1`` (admin-signed): access management."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from sanic import Blueprint, Request
from sanic.response import json

from cardcore import access, audit, reports
from cardcore.verify import lockouts as verify_lockouts
from cardcore.models import ClientKind, ClientStatus
from cardcore.text import Readable
from openplatform.auth import signed
from openplatform.presenters import client_view, credentials_view, page
from openplatform.validation import EventQuery, Moment, PageQuery, StatsQuery, StrictModel, json_body, parse_query

bp = Blueprint("admin", url_prefix="/admin/v1")

# URL segment -> client kind.
KINDS = {
    "institutions": ClientKind.institution,
    "terminals": ClientKind.terminal,
    "partner-apps": ClientKind.partner_app,
    "admins": ClientKind.admin,
}
KIND_PATTERN = "<kind:institutions|terminals|partner-apps|admins>"

admin_only = signed(ClientKind.admin, function="access.manage")


class ClientListQuery(PageQuery):
    status: ClientStatus | None = None


class DisableBody(StrictModel):
    reason: Annotated[str, Field(max_length=255), Readable] = ""


class PolicyBody(StrictModel):
    disabled_functions: list[str] | None = Field(None, max_length=64)
    ip_allowlist: list[str] | None = Field(None, max_length=64)
    scopes: list[str] | None = Field(None, max_length=16)


class NewAdminBody(StrictModel):
    name: Annotated[str, Field(min_length=1, max_length=128), Readable]


@bp.get("/functions")
@admin_only
async def list_functions(request: Request):
    """Function switches and scopes that can be set per client."""
    return json({"functions": access.FUNCTIONS, "scopes": access.SCOPES})


@bp.get(f"/{KIND_PATTERN}")
@admin_only
async def list_clients(request: Request, kind: str):
    query = parse_query(request, ClientListQuery)
    rows, cursor = await access.list_clients(
        KINDS[kind], limit=query.limit, cursor=query.cursor, status=query.status
    )
    return json(page([client_view(c) for c in rows], cursor))


@bp.get(f"/{KIND_PATTERN}/<client_id:str>")
@admin_only
async def get_client(request: Request, kind: str, client_id: str):
    return json(client_view(await access.get_client(client_id, KINDS[kind])))


@bp.post(f"/{KIND_PATTERN}/<client_id:str>/approve")
@admin_only
async def approve(request: Request, kind: str, client_id: str):
    rt = request.app.ctx.rt
    client = await access.set_status(rt, client_id, KINDS[kind], ClientStatus.approved)
    return json(client_view(client))


@bp.post(f"/{KIND_PATTERN}/<client_id:str>/disable")
@admin_only
@json_body(DisableBody)
async def disable(request: Request, kind: str, client_id: str, body: DisableBody):
    rt = request.app.ctx.rt
    client = await access.set_status(rt, client_id, KINDS[kind], ClientStatus.disabled, body.reason)
    return json(client_view(client))


@bp.post(f"/{KIND_PATTERN}/<client_id:str>/secret")
@admin_only
async def rotate_secret(request: Request, kind: str, client_id: str):
    """Issue a new secret (shown once); the old one stops working at once."""
    client, secret = await access.rotate_secret(request.app.ctx.rt, client_id, KINDS[kind])
    return json(credentials_view(client, secret))


@bp.patch(f"/{KIND_PATTERN}/<client_id:str>")
@admin_only
@json_body(PolicyBody)
async def update_policy(request: Request, kind: str, client_id: str, body: PolicyBody):
    """Switch functions off, set the IP allow-list, grant scopes."""
    client = await access.update_policy(
        request.app.ctx.rt,
        client_id,
        KINDS[kind],
        disabled_functions=body.disabled_functions,
        ip_allowlist=body.ip_allowlist,
        scopes=body.scopes,
    )
    return json(client_view(client))


@bp.post("/admins")
@admin_only
@json_body(NewAdminBody)
async def create_admin(request: Request, body: NewAdminBody):
    """A further admin client, approved at once because an admin created it."""
    client, secret = await access.register_client(
        request.app.ctx.rt, ClientKind.admin, body.name, status=ClientStatus.approved
    )
    return json(credentials_view(client, secret), status=201)


class AdminEventQuery(EventQuery):
    institution_id: str | None = Field(None, max_length=40)


@bp.get("/code-events")
@admin_only
async def code_events(request: Request):
    """Every issuance and verification, newest first, filterable."""
    query = parse_query(request, AdminEventQuery)
    rows, cursor = await reports.list_code_events(
        request.app.ctx.rt,
        limit=query.limit,
        cursor=query.cursor,
        institution_id=query.institution_id,
        health_card_id=query.health_card_id,
        result=query.result,
        since=query.since,
        until=query.until,
    )
    return json(page([reports.event_view(e) for e in rows], cursor))


class AuditQuery(PageQuery):
    subject: str | None = Field(None, max_length=64, description="health card id or EMPI id")
    actor: str | None = Field(None, max_length=40, description="client id of who acted")
    action: str | None = Field(None, max_length=32, description="an action, or a prefix ending in '.' (card.)")
    since: Moment | None = None
    until: Moment | None = None


@bp.get("/audit-events")
@admin_only
async def audit_events(request: Request):
    """Who read or changed a person's data, for whom and why (SPEC §8), newest first."""
    query = parse_query(request, AuditQuery)
    rows, cursor = await audit.list_events(
        limit=query.limit,
        cursor=query.cursor,
        subject=query.subject,
        actor=query.actor,
        action=query.action,
        since=query.since,
        until=query.until,
    )
    return json(page([audit.event_view(e) for e in rows], cursor))


@bp.get("/code-stats")
@admin_only
async def code_stats(request: Request):
    """Code-usage statistics grouped by any combination of action, result, scene, type, institution, terminal."""
    query = parse_query(request, StatsQuery)
    rows = await reports.code_stats(request.app.ctx.rt, query.fields(reports.GROUP_FIELDS), since=query.since, until=query.until)
    return json({"items": rows})


@bp.get("/lockouts")
@admin_only
async def lockouts(request: Request):
    """Codes and second checks locked after repeated failures; each expires by itself."""
    return json({"items": await verify_lockouts(request.app.ctx.rt)})
