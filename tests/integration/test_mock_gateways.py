"""The identity-side mocks: protocol details the SDK tests do not reach, and the HTTP
provider clients calling the mocks of the app under test."""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import parse_qsl

import pytest
from alipay import AliPay

from cardcore.providers import Providers
from cardcore.providers.alipay import ensure_dev_keys
from tests.factories import resident


@pytest.fixture
def in_process(app, settings):
    """Provider clients calling the app under test (its mocks)."""
    return Providers.from_settings(settings)


async def test_every_identity_side_mock_is_mounted(http):
    mocks = (await http.get("/_mock/")).json()["mocks"]
    assert {"mock_wechat", "mock_alipay", "mock_sms", "mock_face", "mock_registry"} <= set(mocks)


async def test_http_providers_work_through_the_app_itself(http, in_process):
    person = resident()
    assert (await http.post("/_mock/registry/people", json=person)).status_code == 201
    assert await in_process.registry.verify(SimpleNamespace(**person)) == "match"

    await in_process.sms.send(person["phone"], "您的验证码为 550011。")
    inbox = (await http.get("/_mock/sms/messages", params={"phone": person["phone"]})).json()["items"]
    assert inbox[0]["code"] == "550011"

    order = await in_process.face.create_order(
        name=person["name"], id_number=person["id_number"], return_url="http://x.cn/"
    )
    await http.post(f"/_mock/face/orders/{order.order_id}/complete", json={"result": "pass"})
    assert await in_process.face.result(order.order_id) == "pass"


async def test_adding_the_same_person_again_replaces_the_record(http):
    person = resident()
    assert (await http.post("/_mock/registry/people", json=person)).status_code == 201
    again = await http.post("/_mock/registry/people", json={**person, "phone": "13900001111"})
    assert again.status_code == 200 and again.json()["phone"] == "13900001111"


@pytest.mark.parametrize(
    "params, errcode",
    [
        ({"secret": "s", "js_code": "c", "grant_type": "authorization_code"}, 41002),
        ({"appid": "WX", "secret": "s", "js_code": "c", "grant_type": "authorization_code"}, 40013),
        ({"appid": "MINI", "secret": "SECRET", "grant_type": "authorization_code"}, 41008),
        ({"appid": "MINI", "secret": "SECRET", "js_code": "c", "grant_type": "other"}, 40002),
        ({"appid": "H5", "secret": "H5SECRET", "js_code": "c", "grant_type": "authorization_code"}, 40013),
    ],
)
async def test_code2session_answers_wechats_errcodes(http, settings, params, errcode):
    names = {
        "MINI": settings.wechat_mini_app_id,
        "SECRET": settings.wechat_mini_app_secret,
        "H5": settings.wechat_app_id,
        "H5SECRET": settings.wechat_app_secret,
    }
    params = {k: names.get(v, v) for k, v in params.items()}
    reply = await http.get("/_mock/wechat/sns/jscode2session", params=params)
    assert reply.status_code == 200 and reply.json()["errcode"] == errcode


async def test_app_access_token(http, settings):
    params = {"grant_type": "client_credential", "appid": settings.wechat_app_id, "secret": settings.wechat_app_secret}
    token = (await http.get("/_mock/wechat/cgi-bin/token", params=params)).json()
    assert token["expires_in"] == 7200 and token["access_token"]


def sdk(settings) -> AliPay:
    ensure_dev_keys(settings.var_dir)  # AlipayLogin does this on first use
    return AliPay(
        appid=settings.alipay_app_id,
        app_private_key_string=open(settings.alipay_app_private_key_file).read(),
        alipay_public_key_string=open(settings.alipay_public_key_file).read(),
    )


async def test_the_gateway_takes_form_posts_as_alipays_other_sdks_send_them(http, settings):
    alipay = sdk(settings)
    auth_code = (await http.post("/_mock/alipay/auth", json={"user_id": "2088000000007777"})).json()["auth_code"]
    body = alipay.build_body("alipay.system.oauth.token", grant_type="authorization_code", code=auth_code)
    form = dict(parse_qsl(alipay.sign_data(body), keep_blank_values=True))
    reply = await http.post("/_mock/alipay/gateway.do?charset=utf-8", data=form)
    token = alipay._verify_and_return_sync_response(reply.text, "alipay_system_oauth_token_response")
    assert token["user_id"] == "2088000000007777"


async def test_the_gateway_wants_the_common_parameters(http, settings):
    reply = await http.get("/_mock/alipay/gateway.do", params={"app_id": settings.alipay_app_id, "method": "x"})
    error = reply.json()["x_response"]
    assert (error["code"], error["sub_code"]) == ("40001", "isv.missing-signature")
    assert "sign" not in reply.json()


async def test_wechat_login_control_refuses_an_official_account_appid(http, settings):
    reply = await http.post("/_mock/wechat/wxa/login", json={"appid": settings.wechat_app_id})
    assert reply.status_code == 400 and reply.json()["errcode"] == 40013
