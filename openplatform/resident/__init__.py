"""Resident API — ``/mp/v1`` (mini-program JSON; the H5 pages call the same services)."""

from __future__ import annotations

import asyncio
import json as jsonlib

from pydantic import Field, model_validator
from sanic import Blueprint, Request
from sanic.response import json

from cardcore import audit, cards, errors, otp, qrimage, ratelimit, reports, residents, strongauth
from cardcore.identity import Address, BirthDate, Gender, Identity, Name, Nation, Phone
from cardcore.models import LoginChannel, Relation, UsageReport
from cardcore.reports import event_view
from cardcore.usage import report_view
from cardcore.verify import code_state, issue_dynamic_code
from cashier import agreements
from openplatform import sessions
from openplatform.sessions import resident_required
from openplatform.validation import StrictModel, json_body

bp = Blueprint("resident", url_prefix="/mp/v1")

LOGIN_OTP = "login"
FACE_ORDER_TTL_S = 900


class PaymentAccountNotBound(errors.PlatformError):
    code, status, message = "PAYMENT_ACCOUNT_NOT_BOUND", 409, "bind a payment account before asking for a pay code"


class PaymentAccountBody(StrictModel):
    channel: str = Field(pattern="^(wechat|alipay|unionpay)$", description="the channel whose payment code the combined code carries")


# --- bodies -------------------------------------------------------------------------


class WeChatLoginBody(StrictModel):
    code: str = Field(min_length=1, max_length=128, description="wx.login() code")


class AlipayLoginBody(StrictModel):
    auth_code: str = Field(min_length=1, max_length=128)


class PhoneBody(StrictModel):
    phone: Phone


class PhoneLoginBody(StrictModel):
    phone: Phone
    code: str = Field(pattern=r"^\d{6}$")


class GuardianBody(StrictModel):
    name: Name
    id_type: str
    id_number: str = Field(min_length=4, max_length=32)
    phone: Phone


class ClaimBody(StrictModel):
    """Claim a card for oneself (relation "self") or a family member; a child without an
    identity document is claimed with ``guardian`` instead of id_type/id_number."""

    name: Name
    gender: Gender
    nation: Nation = ""
    birth_date: BirthDate
    id_type: str | None = None
    id_number: str | None = Field(None, min_length=4, max_length=32)
    phone: Phone | None = None
    address: Address = ""
    relation: str = Field("self", description="self, spouse, child, parent, grandparent, grandchild, sibling, other")
    guardian: GuardianBody | None = None
    parity: int = Field(1, ge=1, le=9)

    @model_validator(mode="after")
    def _shape(self) -> "ClaimBody":
        if self.relation != "self" and self.relation not in Relation.__members__:
            raise ValueError("relation is self, spouse, child, parent, grandparent, grandchild, sibling or other")
        if self.guardian is None and not (self.id_type and self.id_number and self.phone):
            raise ValueError("give id_type, id_number and phone, or guardian data for a child without a document")
        if self.guardian is not None and self.relation != "child":
            raise ValueError("guardian data is for a child (relation child) without an identity document")
        return self

    def identity(self) -> Identity:
        return Identity(
            name=self.name, gender=self.gender, nation=self.nation, birth_date=self.birth_date,
            id_type=self.id_type, id_number=self.id_number, phone=self.phone, address=self.address,
        )

    def child(self) -> residents.ChildWithoutId:
        return residents.ChildWithoutId(
            name=self.name, gender=self.gender, birth_date=self.birth_date, parity=self.parity,
            guardian=self.guardian.model_dump(),
        )


class CardRef(StrictModel):
    health_card_id: str = Field(pattern=r"^[0-9A-F]{64}$")


class SmsVerifyBody(CardRef):
    code: str = Field(pattern=r"^\d{6}$")


# --- helpers ------------------------------------------------------------------------


def providers(request: Request):
    return request.app.ctx.providers


async def _login(request: Request, channel: LoginChannel, subject: str):
    rt = request.app.ctx.rt
    account = await residents.account_for(rt, channel, subject)
    token = await sessions.create(rt, account)
    response = json({"token": token, "expires_in": sessions.SESSION_TTL_S, "account_id": account.account_id})
    sessions.set_cookie(request, response, token)
    return response


def resident_card_view(request: Request, card, relation: str) -> dict:
    view = cards.card_view(request.app.ctx.rt, card, full_identity=False)
    view.pop("address", None)
    return {**view, "relation": relation}


# --- login --------------------------------------------------------------------------


@bp.post("/login/wechat")
@json_body(WeChatLoginBody)
async def login_wechat(request: Request, body: WeChatLoginBody):
    """Mini-program login: the wx.login() code becomes a bearer token."""
    openid, _session_key = await providers(request).wechat.openid_from_mini_code(body.code)
    return await _login(request, LoginChannel.wechat_mini, openid)


@bp.post("/login/alipay")
@json_body(AlipayLoginBody)
async def login_alipay(request: Request, body: AlipayLoginBody):
    user_id = await providers(request).alipay.user_id_from_auth_code(body.auth_code)
    return await _login(request, LoginChannel.alipay, user_id)


@bp.post("/login/sms/send")
@json_body(PhoneBody)
async def login_sms_send(request: Request, body: PhoneBody):
    """Phone login for plain browsers: send a code to the phone."""
    rt = request.app.ctx.rt
    subject = rt.vault.blind_index("phone", body.phone)
    for window, limit in strongauth.PHONE_LIMITS:
        await ratelimit.enforce(rt.redis, f"sms:phone:{subject}:{window}", limit, window, "too many codes sent to this phone; wait a little")
    code = await otp.issue(rt, LOGIN_OTP, subject)
    await providers(request).sms.send(body.phone, strongauth.sms_text(code))
    return json({"expires_in": otp.OTP_TTL_S})


@bp.post("/login/sms")
@json_body(PhoneLoginBody)
async def login_sms(request: Request, body: PhoneLoginBody):
    rt = request.app.ctx.rt
    await otp.check(rt, LOGIN_OTP, rt.vault.blind_index("phone", body.phone), body.code)
    return await _login(request, LoginChannel.phone, body.phone)


@bp.post("/logout")
async def logout(request: Request):
    token = sessions.request_token(request)
    if token:
        await sessions.end(request.app.ctx.rt, token)
    response = json({"logged_out": True})
    response.delete_cookie(sessions.COOKIE_NAME, path="/")
    return response


# --- cards --------------------------------------------------------------------------


@bp.post("/cards")
@resident_required
@json_body(ClaimBody)
async def claim(request: Request, body: ClaimBody):
    """Claim a card (领卡) for oneself or a family member; checked against the population registry."""
    rt, account, registry = request.app.ctx.rt, request.ctx.account, providers(request).registry
    if body.guardian is not None:
        card, created = await residents.claim_child_without_id(rt, account, body.child(), registry)
    elif body.relation == "self":
        card, created = await residents.claim_for_self(rt, account, body.identity(), registry)
    else:
        card, created = await residents.claim_for_family(rt, account, body.identity(), Relation(body.relation), registry)
    card, relation = await residents.card_for(account, card.health_card_id)
    return json(resident_card_view(request, card, relation), status=201 if created else 200)


@bp.get("/cards")
@resident_required
async def list_cards(request: Request):
    """The account's own card and the family cards it manages."""
    held = await residents.cards_of(request.ctx.account)
    return json({"items": [resident_card_view(request, card, relation) for card, relation in held]})


@bp.get("/cards/<health_card_id:str>")
@resident_required
async def get_card(request: Request, health_card_id: str):
    card, relation = await residents.card_for(request.ctx.account, health_card_id)
    return json(resident_card_view(request, card, relation))


@bp.get("/cards/<health_card_id:str>/codes/static")
@resident_required
async def static_code(request: Request, health_card_id: str):
    card = await residents.act_on_card(request.ctx.account, health_card_id, "code.static.show")
    text = cards.static_code_text(card)
    return json({"qr_code_text": text, "svg": await asyncio.to_thread(qrimage.qr_svg, text)})


@bp.post("/cards/<health_card_id:str>/codes/dynamic")
@resident_required
async def dynamic_code(request: Request, health_card_id: str):
    """A fresh single-use dynamic code; the page shows it until ``refresh_in`` seconds pass."""
    rt, account = request.app.ctx.rt, request.ctx.account
    await residents.act_on_card(account, health_card_id, "code.dynamic.issue")
    token = None
    if request.args.get("with_payment") == "1":
        token = await agreements.payment_token(rt, account.account_id)
        if token is None:
            raise PaymentAccountNotBound()
    issued = await issue_dynamic_code(rt, health_card_id, residents.actor_for(account), token=token)
    return json(
        {
            "qr_code_text": issued.qr_code_text,
            "expires_at": issued.expires_at.isoformat(),
            "refresh_in": issued.refresh_in,
            "svg": await asyncio.to_thread(qrimage.qr_svg, issued.qr_code_text),
        }
    )


@bp.get("/cards/<health_card_id:str>/codes/dynamic/state")
@resident_required
async def dynamic_code_state(request: Request, health_card_id: str):
    """Whether a shown dynamic code is still fresh, so the page replaces a used one at once."""
    await residents.card_for(request.ctx.account, health_card_id)
    state = await code_state(request.app.ctx.rt, health_card_id, request.args.get("code", ""))
    return json({"state": state})


@bp.get("/cards/<health_card_id:str>/usage")
@resident_required
async def usage_history(request: Request, health_card_id: str):
    """Where the card was verified and used, newest first."""
    await residents.act_on_card(request.ctx.account, health_card_id, "card.usage.read")
    events, _ = await reports.list_code_events(
        request.app.ctx.rt, limit=100, health_card_id=health_card_id, action="verify"
    )
    usage_reports = await UsageReport.filter(health_card_id=health_card_id).order_by("-id").limit(100)
    return json({"verifications": [event_view(e) for e in events], "usage": [report_view(r) for r in usage_reports]})


@bp.get("/cards/<health_card_id:str>/managers")
@resident_required
async def list_managers(request: Request, health_card_id: str):
    """Accounts managing the caller's own card."""
    managers = await residents.managers_of(request.ctx.account, health_card_id)
    return json({"items": [{"account_id": m.account_id, "relation": m.relation.value, "since": m.created_at.isoformat()} for m in managers]})


@bp.delete("/cards/<health_card_id:str>/managers/me")
@resident_required
async def stop_managing(request: Request, health_card_id: str):
    await residents.stop_managing(request.ctx.account, health_card_id)
    return json({"managing": False})


@bp.delete("/cards/<health_card_id:str>/managers/<account_id:str>")
@resident_required
async def remove_manager(request: Request, health_card_id: str, account_id: str):
    """The holder removes another account's management of their card."""
    await residents.remove_manager(request.ctx.account, health_card_id, account_id)
    return json({"removed": account_id})


# --- payment accounts (二码合一) ----------------------------------------------------------


@bp.get("/payment-accounts")
@resident_required
async def list_payment_accounts(request: Request):
    """Payment accounts bound to this account, whose codes a combined code can carry."""
    bound = await agreements.list_bound(request.ctx.account.account_id)
    return json({"items": [agreements.agreement_view(a) for a in bound]})


@bp.post("/payment-accounts")
@resident_required
@json_body(PaymentAccountBody)
async def bind_payment_account(request: Request, body: PaymentAccountBody):
    """Bind a payment account (needs strong authentication), so the dynamic code can pay at counters."""
    account = request.ctx.account
    await residents.require_strong_auth(account)
    agreement = await agreements.bind(request.app.ctx.rt, account.account_id, body.channel)
    await audit.record(residents.actor_for(account), "payment_account.bind", account.account_id, channel=body.channel)
    return json(agreements.agreement_view(agreement), status=201)


@bp.delete("/payment-accounts/<channel:wechat|alipay|unionpay>")
@resident_required
async def unbind_payment_account(request: Request, channel: str):
    account = request.ctx.account
    removed = await agreements.unbind(account.account_id, channel)
    if not removed:
        raise errors.NotFound("no payment account of that channel is bound")
    await audit.record(residents.actor_for(account), "payment_account.unbind", account.account_id, channel=channel)
    return json({"channel": channel, "bound": False})


# --- strong authentication -----------------------------------------------------------


@bp.post("/auth/sms")
@resident_required
@json_body(CardRef)
async def sms_start(request: Request, body: CardRef):
    """Send an SMS code to the card's verified phone."""
    rt = request.app.ctx.rt
    sent = await strongauth.start_sms(rt, request.ctx.account, body.health_card_id, providers(request).sms)
    return json(sent)


@bp.post("/auth/sms/verify")
@resident_required
@json_body(SmsVerifyBody)
async def sms_verify(request: Request, body: SmsVerifyBody):
    card = await strongauth.finish_sms(request.app.ctx.rt, request.ctx.account, body.health_card_id, body.code)
    return json({"health_card_id": card.health_card_id, "auth_level": card.auth_level.value})


def _face_key(order_id: str) -> str:
    return f"face:{order_id}"


@bp.post("/auth/face")
@resident_required
@json_body(CardRef)
async def face_start(request: Request, body: CardRef):
    """Start face verification at the provider; the resident finishes it at ``verify_url``."""
    rt, account = request.app.ctx.rt, request.ctx.account
    card, _ = await residents.card_for(account, body.health_card_id)
    person = cards.card_view(rt, card, full_identity=True)
    order = await providers(request).face.create_order(
        name=person["name"], id_number=person["id_number"], return_url=f"{rt.settings.base_url}/h5/auth?card={card.health_card_id}"
    )
    binding = {"account_id": account.account_id, "health_card_id": card.health_card_id}
    await rt.redis.set(_face_key(order.order_id), jsonlib.dumps(binding), ex=FACE_ORDER_TTL_S)
    await audit.record(residents.actor_for(account), "auth.face.start", card.health_card_id)
    return json({"order_id": order.order_id, "verify_url": order.verify_url})


@bp.get("/auth/face/<order_id:str>")
@resident_required
async def face_result(request: Request, order_id: str):
    """The face result; a pass raises the card to strong authentication."""
    rt, account = request.app.ctx.rt, request.ctx.account
    binding = await rt.redis.get(_face_key(order_id))
    if binding is None or jsonlib.loads(binding)["account_id"] != account.account_id:
        raise errors.NotFound("no such face verification")
    health_card_id = jsonlib.loads(binding)["health_card_id"]
    status = await providers(request).face.result(order_id)
    if status == "pass":
        card = await strongauth.mark_strong(rt, account, health_card_id, "face")
        return json({"order_id": order_id, "status": status, "auth_level": card.auth_level.value})
    return json({"order_id": order_id, "status": status})

