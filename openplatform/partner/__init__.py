"""Partner API — ``/open/v1``: partner apps apply for access here."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import json

from cardcore import access
from cardcore.models import ClientKind
from openplatform.institution import RegistrationBody, limit_registrations
from openplatform.presenters import credentials_view
from openplatform.validation import json_body

bp = Blueprint("partner", url_prefix="/open/v1")


@bp.post("/apps/register")
@json_body(RegistrationBody)
async def register_app(request: Request, body: RegistrationBody):
    """Apply for a partner app. The credentials work once an admin approves them."""
    await limit_registrations(request)
    client, secret = await access.register_client(request.app.ctx.rt, ClientKind.partner_app, body.name)
    return json(credentials_view(client, secret), status=201)
