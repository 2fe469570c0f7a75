"""The identity-side outside services, through the platform's provider clients and the
real SDKs, against the mocks of a running server (one per module, see ``live_server``)."""

from __future__ import annotations

import base64
import random
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from alipay import AliPay
from alipay.exceptions import AliPayException
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from wechatpy import WeChatOAuth

from cardcore.cards import IdentityMismatch
from cardcore.providers import (
    AlipayLogin,
    FaceOrderNotFound,
    FaceProvider,
    IdentityRegistry,
    IdentityUnknown,
    LoginFailed,
    ProviderError,
    Providers,
    ProviderUnavailable,
    SmsGateway,
    WeChatLogin,
)
from cardcore.providers.alipay import error_of
from tests.servers import free_port
from tests.factories import resident


@pytest.fixture(scope="module")
def settings(live_server):
    return live_server.settings


@pytest.fixture(scope="module")
def base_url(live_server):
    return live_server.base_url


@pytest.fixture
async def browser():
    """The resident's browser / phone: follows nothing by itself, keeps cookies."""
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
async def providers(settings):
    return Providers.from_settings(settings)


def new_openid() -> str:
    return "o" + "".join(random.choice("abcdefghijkmnpqrstuvwxyzABCDEFGH0123456789_-") for _ in range(27))


async def consent(browser: httpx.AsyncClient, authorize_url: str, openid: str | None = None) -> dict:
    """Open WeChat's consent page as the resident; return the query WeChat redirects back with."""
    url = authorize_url.split("#", 1)[0]
    if openid:
        url += "&openid=" + openid
    reply = await browser.get(url)
    assert reply.status_code == 302, reply.text
    location = urlsplit(reply.headers["location"])
    return {"path": location.path, **{k: v[0] for k, v in parse_qs(location.query).items()}}


def unreachable(settings):
    """The same settings with every outside service on a port where nothing listens."""
    dead = f"http://127.0.0.1:{free_port()}/"
    return replace(
        settings,
        wechat_api_base=dead,
        alipay_gateway=dead + "gateway.do",
        sms_url=dead + "sms",
        face_url=dead + "face",
        registry_url=dead + "registry",
    )


# --- WeChat H5 OAuth ------------------------------------------------------------------


async def test_wechat_h5_oauth_code_gives_the_residents_openid_once(providers, browser, base_url, settings):
    wechat = providers.wechat
    url = wechat.authorize_url(f"{base_url}/h5/login/wechat?next=%2Fh5%2F", state="st-42")
    assert url.startswith(f"{base_url}/_mock/wechat/connect/oauth2/authorize?appid={settings.wechat_app_id}&")

    openid = new_openid()
    back = await consent(browser, url, openid)
    assert (back["path"], back["state"], back["next"]) == ("/h5/login/wechat", "st-42", "/h5/")
    assert await wechat.openid_from_oauth_code(back["code"]) == openid

    with pytest.raises(LoginFailed) as used:
        await wechat.openid_from_oauth_code(back["code"])
    assert (used.value.status, used.value.code, used.value.provider_code) == (401, "LOGIN_FAILED", "40163")
    with pytest.raises(LoginFailed) as invalid:
        await wechat.openid_from_oauth_code("not-a-code")
    assert invalid.value.provider_code == "40029"


async def test_wechat_consent_keeps_one_user_per_browser(providers, base_url):
    url = providers.wechat.authorize_url(f"{base_url}/h5/login/wechat", state="s")
    openids = []
    for _ in range(2):
        async with httpx.AsyncClient() as browser:
            first = await consent(browser, url)
            again = await consent(browser, url)
            openids.append(await providers.wechat.openid_from_oauth_code(first["code"]))
            assert await providers.wechat.openid_from_oauth_code(again["code"]) == openids[-1]
    assert openids[0] != openids[1]


async def test_wechatpy_userinfo_needs_the_userinfo_scope(settings, browser, base_url):
    def oauth(scope):
        client = WeChatOAuth(settings.wechat_app_id, settings.wechat_app_secret, f"{base_url}/cb", scope=scope)
        client.API_BASE_URL = settings.wechat_api_base
        client.OAUTH_BASE_URL = settings.wechat_oauth_base
        return client

    openid = new_openid()
    sdk = oauth("snsapi_userinfo")
    back = await consent(browser, sdk.authorize_url, openid)
    token = sdk.fetch_access_token(back["code"])
    assert token["scope"] == "snsapi_userinfo" and token["expires_in"] == 7200
    assert sdk.get_user_info()["openid"] == openid
    assert sdk.check_access_token() is True

    base = oauth("snsapi_base")
    back = await consent(browser, base.authorize_url, openid)
    base.fetch_access_token(back["code"])
    with pytest.raises(Exception) as refused:
        base.get_user_info()
    assert refused.value.errcode == 48001


@pytest.mark.parametrize(
    "field, value, errcode", [("wechat_app_id", "wx0000000000000bad", "40013"), ("wechat_app_secret", "wrong", "40125")]
)
async def test_wechat_refuses_a_wrong_app_id_or_secret(providers, browser, settings, base_url, field, value, errcode):
    back = await consent(browser, providers.wechat.authorize_url(f"{base_url}/cb", state="x"), new_openid())
    wrong = WeChatLogin.from_settings(replace(settings, **{field: value}))
    with pytest.raises(ProviderError) as refused:
        await wrong.openid_from_oauth_code(back["code"])
    assert (refused.value.status, refused.value.code, refused.value.provider_code) == (502, "PROVIDER_ERROR", errcode)


async def test_wechat_consent_screen_refuses_an_unknown_app(browser, base_url):
    reply = await browser.get(
        f"{base_url}/_mock/wechat/connect/oauth2/authorize",
        params={"appid": "wxunknown", "redirect_uri": f"{base_url}/cb", "response_type": "code", "scope": "snsapi_base"},
    )
    assert reply.status_code == 400 and "40013" in reply.text


# --- WeChat mini-program --------------------------------------------------------------


async def test_wechat_mini_program_code_gives_openid_and_session_key_once(providers, browser, base_url):
    openid = new_openid()
    login = await browser.post(f"{base_url}/_mock/wechat/wxa/login", json={"openid": openid})
    assert login.status_code == 200
    code = login.json()["code"]

    got_openid, session_key = await providers.wechat.openid_from_mini_code(code)
    assert got_openid == openid and len(base64.b64decode(session_key)) == 16

    with pytest.raises(LoginFailed) as used:
        await providers.wechat.openid_from_mini_code(code)
    assert used.value.provider_code == "40163"


async def test_an_h5_code_is_no_mini_program_code(providers, browser, base_url):
    back = await consent(browser, providers.wechat.authorize_url(f"{base_url}/cb", state="x"), new_openid())
    with pytest.raises(LoginFailed) as refused:
        await providers.wechat.openid_from_mini_code(back["code"])
    assert refused.value.provider_code == "40029"


async def test_mini_program_login_with_a_wrong_secret_is_refused(browser, settings, base_url):
    code = (await browser.post(f"{base_url}/_mock/wechat/wxa/login", json={})).json()["code"]
    wrong = WeChatLogin.from_settings(replace(settings, wechat_mini_app_secret="wrong"))
    with pytest.raises(ProviderError) as refused:
        await wrong.openid_from_mini_code(code)
    assert refused.value.provider_code == "40125"


# --- Alipay ---------------------------------------------------------------------------


async def alipay_auth_code(browser, base_url, **body) -> dict:
    reply = await browser.post(f"{base_url}/_mock/alipay/auth", json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()


async def test_alipay_auth_code_gives_the_user_id_once(providers, browser, base_url):
    granted = await alipay_auth_code(browser, base_url, user_id="2088000000004242")
    assert await providers.alipay.user_id_from_auth_code(granted["auth_code"]) == "2088000000004242"

    with pytest.raises(LoginFailed) as used:
        await providers.alipay.user_id_from_auth_code(granted["auth_code"])
    assert (used.value.status, used.value.provider_code) == (401, "isv.code-invalid")


async def test_the_sdk_refuses_an_answer_altered_after_signing(providers, browser, base_url):
    granted = await alipay_auth_code(browser, base_url, user_id="2088000000005151", tamper_response=True)
    with pytest.raises(ProviderError) as refused:
        await providers.alipay.user_id_from_auth_code(granted["auth_code"])
    assert (refused.value.status, refused.value.provider_code) == (502, "bad-sign")


def fresh_key_file(tmp_path, name: str, public: bool = False) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if public:
        pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    path = tmp_path / name
    path.write_bytes(pem)
    return str(path)


async def test_the_gateway_refuses_a_request_signed_with_another_app_key(browser, settings, base_url, tmp_path):
    granted = await alipay_auth_code(browser, base_url)
    wrong = AlipayLogin.from_settings(
        replace(settings, alipay_app_private_key_file=fresh_key_file(tmp_path, "other-app.pem"))
    )
    with pytest.raises(ProviderError) as refused:
        await wrong.user_id_from_auth_code(granted["auth_code"])
    assert refused.value.provider_code == "isv.invalid-signature"


async def test_the_sdk_refuses_an_answer_signed_by_another_gateway(browser, settings, base_url, tmp_path):
    granted = await alipay_auth_code(browser, base_url)
    wrong = AlipayLogin.from_settings(
        replace(settings, alipay_public_key_file=fresh_key_file(tmp_path, "other-gateway.pub.pem", public=True))
    )
    with pytest.raises(ProviderError) as refused:
        await wrong.user_id_from_auth_code(granted["auth_code"])
    assert refused.value.provider_code == "bad-sign"


async def test_the_gateway_refuses_a_wrong_app_id_and_an_unknown_method(providers, settings):
    wrong = AlipayLogin.from_settings(replace(settings, alipay_app_id="2021000000009999"))
    with pytest.raises(ProviderError) as refused:
        await wrong.user_id_from_auth_code("whatever")
    assert refused.value.provider_code == "isv.invalid-app-id"

    sdk = AliPay(
        appid=settings.alipay_app_id,
        app_private_key_string=open(settings.alipay_app_private_key_file).read(),
        alipay_public_key_string=open(settings.alipay_public_key_file).read(),
    )
    sdk._gateway = settings.alipay_gateway
    with pytest.raises(AliPayException) as unknown:
        sdk.server_api("alipay.no.such.method", {"x": 1})
    assert error_of(unknown.value)["sub_code"] == "isv.invalid-method"


# --- SMS ------------------------------------------------------------------------------


async def test_sms_reaches_the_residents_inbox_with_its_code(providers, browser, base_url):
    phone = f"139{random.randrange(10**8):08d}"
    request_id = await providers.sms.send(phone, "您的验证码为 482913，5 分钟内有效。")
    assert request_id
    await providers.sms.send(phone, "您的验证码为 7301，5 分钟内有效。")

    inbox = (await browser.get(f"{base_url}/_mock/sms/messages", params={"phone": phone})).json()["items"]
    assert [m["code"] for m in inbox] == ["7301", "482913"]  # newest first
    assert inbox[1]["phone"] == phone
    assert inbox[1]["text"] == "【电子健康卡】您的验证码为 482913，5 分钟内有效。"
    assert inbox[1]["sent_at"]
    other = (await browser.get(f"{base_url}/_mock/sms/messages", params={"phone": "13800000000"})).json()
    assert all(m["phone"] == "13800000000" for m in other["items"])


async def test_sms_gateway_refuses_a_bad_phone(providers):
    with pytest.raises(ProviderError) as refused:
        await providers.sms.send("12345", "hello 1234")
    assert refused.value.provider_code == "INVALID_PHONE"


# --- face verification ----------------------------------------------------------------


async def test_face_order_passes_when_the_resident_completes_it(providers, browser, base_url):
    order = await providers.face.create_order(name="张三", id_number="610102199001011234", return_url=f"{base_url}/h5/auth")
    assert order.verify_url == f"{base_url}/_mock/face/verify/{order.order_id}"
    assert await providers.face.result(order.order_id) == "pending"

    done = await browser.post(f"{base_url}/_mock/face/orders/{order.order_id}/complete", json={"result": "pass"})
    assert done.json() == {"order_id": order.order_id, "status": "pass"}
    assert await providers.face.result(order.order_id) == "pass"

    again = await browser.post(f"{base_url}/_mock/face/orders/{order.order_id}/complete", json={"result": "fail"})
    assert again.status_code == 409
    assert await providers.face.result(order.order_id) == "pass"


async def test_face_page_posts_the_residents_choice_and_returns(providers, browser, base_url):
    order = await providers.face.create_order(name="李四", id_number="x", return_url=f"{base_url}/h5/auth?step=face")
    page = await browser.get(order.verify_url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="face-pass"' in page.text and 'id="face-fail"' in page.text and "李*" in page.text
    assert "http" not in page.text.replace(base_url, "")  # no external assets

    posted = await browser.post(f"{base_url}/_mock/face/orders/{order.order_id}/complete", data={"result": "fail"})
    assert posted.status_code == 303
    back = urlsplit(posted.headers["location"])
    assert back.path == "/h5/auth" and parse_qs(back.query) == {"step": ["face"], "order_id": [order.order_id]}
    assert await providers.face.result(order.order_id) == "fail"


async def test_an_unknown_face_order_is_not_found(providers):
    with pytest.raises(FaceOrderNotFound):
        await providers.face.result("0" * 32)


# --- identity registry ----------------------------------------------------------------


class Person:
    def __init__(self, data: dict):
        self.name, self.id_type, self.id_number = data["name"], data["id_type"], data["id_number"]


async def test_registry_matches_known_people_only(providers, browser, base_url):
    person = resident()
    added = await browser.post(f"{base_url}/_mock/registry/people", json=person)
    assert added.status_code == 201, added.text
    registry = providers.registry

    assert await registry.verify(Person(person)) == "match"
    await registry.require_match(Person(person))

    renamed = Person({**person, "name": person["name"] + "某"})
    assert await registry.verify(renamed) == "mismatch"
    with pytest.raises(IdentityMismatch) as mismatch:
        await registry.require_match(renamed)
    assert (mismatch.value.status, mismatch.value.code) == (409, "IDENTITY_MISMATCH")

    stranger = Person(resident())
    assert await registry.verify(stranger) == "unknown"
    with pytest.raises(IdentityUnknown) as unknown:
        await registry.require_match(stranger)
    assert (unknown.value.status, unknown.value.code) == (422, "IDENTITY_UNKNOWN")


async def test_registry_is_seeded_with_valid_people_for_demos(providers, browser, base_url):
    people = (await browser.get(f"{base_url}/_mock/registry/people", params={"limit": 5})).json()["items"]
    assert len(people) == 5
    for person in people:
        assert await providers.registry.verify(Person(person)) == "match"


async def test_registry_refuses_an_invalid_identity_number(browser, base_url):
    person = resident()
    person["id_number"] = person["id_number"][:17] + ("0" if person["id_number"][17] != "0" else "1")
    reply = await browser.post(f"{base_url}/_mock/registry/people", json=person)
    assert reply.status_code == 422 and reply.json()["code"] == "INVALID_PERSON"


# --- unreachable providers ------------------------------------------------------------


async def test_unreachable_providers_are_unavailable(settings, browser, base_url):
    dead = Providers.from_settings(unreachable(settings))
    code = (await browser.post(f"{base_url}/_mock/wechat/wxa/login", json={})).json()["code"]
    calls = {
        "wechat": dead.wechat.openid_from_mini_code(code),
        "alipay": dead.alipay.user_id_from_auth_code("code"),
        "sms": dead.sms.send("13900000000", "1234"),
        "face": dead.face.result("x"),
        "registry": dead.registry.verify(Person(resident())),
    }
    for name, call in calls.items():
        with pytest.raises(ProviderUnavailable) as down:
            await call
        assert (down.value.status, down.value.code, down.value.details) == (
            503,
            "PROVIDER_UNAVAILABLE",
            {"provider": name},
        )


async def test_clients_built_alone_work_the_same(settings):
    sms = SmsGateway.from_settings(settings)
    face = FaceProvider.from_settings(settings)
    registry = IdentityRegistry.from_settings(settings)
    assert await sms.send("13700000000", "验证码 123456")
    assert (await face.create_order(name="王五", id_number="1", return_url="http://127.0.0.1/x")).order_id
    assert await registry.verify(Person(resident())) == "unknown"
