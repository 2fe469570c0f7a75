"""H5 pages for residents (jinja2, mobile-first, every asset served from here)."""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sanic import Blueprint, Request
from sanic.response import html, redirect

from cardcore import errors, residents
from cardcore.identity import ID_TYPES
from cardcore.models import AuthLevel, LoginChannel
from openplatform import sessions
from openplatform.resident import resident_card_view

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
bp = Blueprint("h5")
bp.static("/static", TEMPLATES / "static", name="assets")

_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), enable_async=True)
RELATION_NAMES = {
    "self": "本人", "spouse": "配偶", "child": "子女", "parent": "父母", "grandparent": "祖父母/外祖父母",
    "grandchild": "孙子女/外孙子女", "sibling": "兄弟姐妹", "other": "其他",
}
STATUS_NAMES = {"active": "正常", "frozen": "已挂失", "cancelled": "已注销"}
OAUTH_STATE_TTL_S = 600


async def render(template: str, **context) -> str:
    context.setdefault("relation_names", RELATION_NAMES)
    context.setdefault("status_names", STATUS_NAMES)
    return await _env.get_template(template).render_async(**context)


def in_app(request: Request) -> tuple[bool, bool]:
    agent = request.headers.get("User-Agent", "")
    return "MicroMessenger" in agent, "AlipayClient" in agent


async def _page_account(request: Request):
    account = await sessions.current_account(request)
    request.ctx.account = account
    return account


def _login_redirect():
    return redirect("/h5/login")


@bp.get("/h5/login")
async def login_page(request: Request):
    wechat, alipay = in_app(request)
    return html(await render("h5/login.html", in_wechat=wechat, in_alipay=alipay))


# Channel -> (login channel, the provider client on app.ctx.providers, its code parameter).
OAUTH_CHANNELS = {
    "wechat": (LoginChannel.wechat, "wechat", "code"),
    "alipay": (LoginChannel.alipay, "alipay", "auth_code"),
}


@bp.get("/h5/login/<channel:wechat|alipay>")
async def oauth_start(request: Request, channel: str):
    """Web authorisation inside WeChat or Alipay: off to the consent page, back to /h5/oauth/…"""
    rt = request.app.ctx.rt
    state = secrets.token_urlsafe(16)
    await rt.redis.set(f"oauth_state:{state}", channel.encode(), ex=OAUTH_STATE_TTL_S)
    client = getattr(request.app.ctx.providers, OAUTH_CHANNELS[channel][1])
    return redirect(client.authorize_url(f"{rt.settings.base_url}/h5/oauth/{channel}", state))


@bp.get("/h5/oauth/<channel:wechat|alipay>")
async def oauth_callback(request: Request, channel: str):
    rt = request.app.ctx.rt
    login_channel, provider, code_parameter = OAUTH_CHANNELS[channel]
    code, state = request.args.get(code_parameter), request.args.get("state", "")
    stored = await rt.redis.getdel(f"oauth_state:{state}") if sessions.token_shaped(state) else None
    if not code or stored != channel.encode():
        raise errors.BadRequest("the authorisation is missing or has expired; log in again")
    client = getattr(request.app.ctx.providers, provider)
    if channel == "wechat":
        subject = await client.openid_from_oauth_code(code)
    else:
        subject = await client.user_id_from_auth_code(code)
    account = await residents.account_for(rt, login_channel, subject)
    token = await sessions.create(rt, account)
    response = redirect("/h5/")
    sessions.set_cookie(request, response, token)
    return response


@bp.get("/h5", strict_slashes=True, name="home_bare")
@bp.get("/h5/", strict_slashes=True)
async def home(request: Request):
    account = await _page_account(request)
    if account is None:
        return _login_redirect()
    held = [resident_card_view(request, card, relation) for card, relation in await residents.cards_of(account)]
    has_own = any(card["relation"] == "self" for card in held)
    return html(await render("h5/home.html", cards=held, has_own=has_own))


@bp.get("/h5/claim")
async def claim_page(request: Request):
    if await _page_account(request) is None:
        return _login_redirect()
    relation = request.args.get("relation", "self")
    if relation not in RELATION_NAMES:
        relation = "self"
    relations = [(code, label) for code, label in RELATION_NAMES.items() if code != "self"]
    return html(await render("h5/claim.html", relation=relation, relations=relations, id_types=list(ID_TYPES.items())))


@bp.get("/h5/cards/<health_card_id:str>")
async def card_page(request: Request, health_card_id: str):
    account = await _page_account(request)
    if account is None:
        return _login_redirect()
    card, relation = await residents.card_for(account, health_card_id)
    return html(await render("h5/card.html", card=resident_card_view(request, card, relation)))


@bp.get("/h5/family")
async def family_page(request: Request):
    account = await _page_account(request)
    if account is None:
        return _login_redirect()
    held = [resident_card_view(request, card, relation) for card, relation in await residents.cards_of(account)]
    own = next((card for card in held if card["relation"] == "self"), None)
    return html(
        await render(
            "h5/family.html",
            members=[card for card in held if card["relation"] != "self"],
            family_limit=request.app.ctx.rt.settings.family_limit,
            strong=own is not None and own["auth_level"] == AuthLevel.strong.value,
        )
    )


@bp.get("/h5/auth")
async def auth_page(request: Request):
    account = await _page_account(request)
    if account is None:
        return _login_redirect()
    health_card_id = request.args.get("card", "")
    if not health_card_id:
        own = await residents.own_card(account)
        if own is None:
            return redirect("/h5/claim")
        return redirect(f"/h5/auth?card={quote(own.health_card_id)}")
    card, relation = await residents.card_for(account, health_card_id)
    return html(await render("h5/auth.html", card=resident_card_view(request, card, relation)))
