"""Mock WeChat: web-page OAuth (公众号网页授权), mini-program login (code2Session), access tokens.

Real protocol, so wechatpy talks to it unchanged with its base URLs set to
``<base_url>/_mock/wechat/`` (API) and ``<base_url>/_mock/wechat/connect/`` (OAuth):

- ``GET  connect/oauth2/authorize?appid&redirect_uri&response_type=code&scope&state[&openid]``
  the consent screen: 302 to ``redirect_uri?code=…&state=…``. ``openid`` (mock only) picks
  the WeChat user; without it the browser keeps one user per app (a cookie), or a new one.
- ``GET  sns/oauth2/access_token?appid&secret&code&grant_type=authorization_code``
- ``GET  sns/userinfo?access_token&openid`` (scope ``snsapi_userinfo`` only) · ``GET sns/auth``
- ``POST wxa/login {openid?, appid?, unionid?}`` → ``{code, openid}`` (mock control: ``wx.login``)
- ``GET  sns/jscode2session?appid&secret&js_code&grant_type=authorization_code``
- ``GET  cgi-bin/token?grant_type=client_credential&appid&secret``

Codes are single-use and live 5 minutes; a used one answers 40163, an unknown one 40029.
Wrong app ids answer 40013, wrong secrets 40125 — all as HTTP 200 with WeChat's error JSON.
The accepted apps are those of the platform's settings (``EHC_WECHAT_*``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sanic import Blueprint, Request
from sanic.response import html, json, redirect

from mocks._common import body_of, cache, dumps, loads, settings_of, token

bp = Blueprint("mock_wechat", url_prefix="/_mock/wechat")

CODE_TTL_S = 300
TOKEN_TTL_S = 7200
USER_COOKIE = "mock_wechat_user"
SCOPES = ("snsapi_base", "snsapi_userinfo")

_KEY_OAUTH_CODE = "mock:wechat:oauth_code:{}"
_KEY_JS_CODE = "mock:wechat:js_code:{}"
_KEY_USED_CODE = "mock:wechat:used_code:{}"
_KEY_SNS_TOKEN = "mock:wechat:sns_token:{}"


def error(errcode: int, errmsg: str):
    """WeChat answers errors with HTTP 200 and this body."""
    return json({"errcode": errcode, "errmsg": f"{errmsg} rid: {secrets.token_hex(12)}"})


def apps(settings) -> dict[str, tuple[str, str]]:
    """appid -> (secret, kind) of the apps this mock WeChat knows."""
    known = {}
    if settings.wechat_app_id:
        known[settings.wechat_app_id] = (settings.wechat_app_secret, "official_account")
    if settings.wechat_mini_app_id:
        known[settings.wechat_mini_app_id] = (settings.wechat_mini_app_secret, "mini_program")
    return known


def random_openid() -> str:
    return "o" + base64.urlsafe_b64encode(secrets.token_bytes(21)).decode()[:27]


def openid_for(appid: str, user: str) -> str:
    """One WeChat user has a different, stable openid in each app."""
    digest = hashlib.sha256(f"{appid}\x00{user}".encode()).digest()
    return "o" + base64.urlsafe_b64encode(digest).decode()[:27]


def _check_app(request: Request, kind: str | None):
    """The WeChat error for a missing or wrong appid/secret (of this kind of app), or None when right."""
    appid = request.args.get("appid", "")
    secret = request.args.get("secret", "")
    if not appid:
        return error(41002, "appid missing")
    known = apps(settings_of(request)).get(appid)
    if known is None or kind not in (None, known[1]):
        return error(40013, "invalid appid")
    if not secret:
        return error(41004, "appsecret missing")
    if not hmac.compare_digest(secret.encode(), known[0].encode()):
        return error(40125, "invalid appsecret")
    return None


async def _take_code(request: Request, key_pattern: str, code: str, appid: str):
    """The code's record, consumed (single use); or the WeChat error."""
    redis = cache(request)
    record = loads(await redis.getdel(key_pattern.format(code)))
    if record is None:
        if await redis.exists(_KEY_USED_CODE.format(code)):
            return None, error(40163, "code been used")
        return None, error(40029, "invalid code")
    await redis.set(_KEY_USED_CODE.format(code), b"1", ex=CODE_TTL_S)
    if record["appid"] != appid:
        return None, error(40029, "invalid code")
    return record, None


# --- web-page OAuth ------------------------------------------------------------


def _consent_error(message: str):
    return html(f"<!doctype html><meta charset='utf-8'><title>微信授权</title><p>{message}</p>", status=400)


@bp.get("/connect/oauth2/authorize")
async def authorize(request: Request):
    """The consent screen: the user agrees at once and goes back with a code."""
    appid = request.args.get("appid", "")
    redirect_uri = request.args.get("redirect_uri", "")
    scope = request.args.get("scope", "")
    state = request.args.get("state", "")
    known = apps(settings_of(request)).get(appid)
    if known is None or known[1] != "official_account":
        return _consent_error("appid 参数错误 (40013 invalid appid)")
    if request.args.get("response_type") != "code":
        return _consent_error("response_type 参数错误")
    if scope not in SCOPES:
        return _consent_error("scope 参数错误或没有 scope 权限 (10005)")
    target = urlsplit(redirect_uri)
    if target.scheme not in ("http", "https") or not target.netloc:
        return _consent_error("redirect_uri 参数错误 (10003)")

    user = request.cookies.get(USER_COOKIE) or ""
    openid = request.args.get("openid", "")
    if not openid:
        user = user or token(24)
        openid = openid_for(appid, user)
    code = token(32)
    record = {"appid": appid, "openid": openid, "scope": scope}
    await cache(request).set(_KEY_OAUTH_CODE.format(code), dumps(record), ex=CODE_TTL_S)

    query = parse_qsl(target.query, keep_blank_values=True) + [("code", code), ("state", state)]
    location = urlunsplit((target.scheme, target.netloc, target.path, urlencode(query), ""))
    response = redirect(location, status=302)
    if user:
        response.add_cookie(
            USER_COOKIE,
            user,
            path="/_mock/wechat/",
            httponly=True,
            samesite="Lax",
            secure=request.scheme == "https",
            max_age=30 * 86400,
        )
    return response


@bp.get("/sns/oauth2/access_token")
async def oauth_access_token(request: Request):
    problem = _check_app(request, "official_account")
    if problem:
        return problem
    if request.args.get("grant_type") != "authorization_code":
        return error(40002, "invalid grant_type")
    code = request.args.get("code", "")
    if not code:
        return error(41008, "missing code")
    record, problem = await _take_code(request, _KEY_OAUTH_CODE, code, request.args.get("appid"))
    if problem:
        return problem
    access_token, refresh_token = token(64), token(64)
    await cache(request).set(_KEY_SNS_TOKEN.format(access_token), dumps(record), ex=TOKEN_TTL_S)
    return json(
        {
            "access_token": access_token,
            "expires_in": TOKEN_TTL_S,
            "refresh_token": refresh_token,
            "openid": record["openid"],
            "scope": record["scope"],
        }
    )


async def _token_record(request: Request):
    record = loads(await cache(request).get(_KEY_SNS_TOKEN.format(request.args.get("access_token", ""))))
    if record is None:
        return None, error(40001, "invalid credential, access_token is invalid or not latest")
    if request.args.get("openid") != record["openid"]:
        return None, error(40003, "invalid openid")
    return record, None


@bp.get("/sns/userinfo")
async def userinfo(request: Request):
    record, problem = await _token_record(request)
    if problem:
        return problem
    if record["scope"] != "snsapi_userinfo":
        return error(48001, "api unauthorized")
    return json(
        {
            "openid": record["openid"],
            "nickname": "微信用户",
            "sex": 0,
            "province": "",
            "city": "",
            "country": "",
            "headimgurl": "",
            "privilege": [],
        }
    )


@bp.get("/sns/auth")
async def check_token(request: Request):
    _, problem = await _token_record(request)
    return problem or json({"errcode": 0, "errmsg": "ok"})


# --- mini-program ----------------------------------------------------------------


@bp.post("/wxa/login")
async def wx_login(request: Request):
    """Mock control: what ``wx.login()`` gives the mini-program — a code for this user."""
    body = body_of(request)
    settings = settings_of(request)
    appid = str(body.get("appid") or settings.wechat_mini_app_id)
    known = apps(settings).get(appid)
    if known is None or known[1] != "mini_program":
        return json({"errcode": 40013, "errmsg": "invalid appid"}, status=400)
    openid = str(body.get("openid") or random_openid())
    record = {"appid": appid, "openid": openid}
    if body.get("unionid"):
        record["unionid"] = str(body["unionid"])
    code = token(32)
    await cache(request).set(_KEY_JS_CODE.format(code), dumps(record), ex=CODE_TTL_S)
    return json({"code": code, "openid": openid})


@bp.get("/sns/jscode2session")
async def jscode2session(request: Request):
    problem = _check_app(request, "mini_program")
    if problem:
        return problem
    if request.args.get("grant_type") != "authorization_code":
        return error(40002, "invalid grant_type")
    js_code = request.args.get("js_code", "")
    if not js_code:
        return error(41008, "missing code")
    record, problem = await _take_code(request, _KEY_JS_CODE, js_code, request.args.get("appid"))
    if problem:
        return problem
    answer = {"session_key": base64.b64encode(secrets.token_bytes(16)).decode(), "openid": record["openid"]}
    if "unionid" in record:
        answer["unionid"] = record["unionid"]
    return json(answer)


# --- app access token ---------------------------------------------------------------


@bp.get("/cgi-bin/token")
async def app_access_token(request: Request):
    problem = _check_app(request, None)
    if problem:
        return problem
    if request.args.get("grant_type") != "client_credential":
        return error(40002, "invalid grant_type")
    return json({"access_token": token(128), "expires_in": TOKEN_TTL_S})
