"""Mini-program logins through the real SDKs against the mocks on a running server."""

import httpx


def test_wechat_mini_program_login(live_server):
    base = live_server.base_url
    code = httpx.post(f"{base}/_mock/wechat/wxa/login", json={"openid": "o-mini-resident-1"}).json()["code"]
    reply = httpx.post(f"{base}/mp/v1/login/wechat", json={"code": code})
    assert reply.status_code == 200, reply.text
    token = reply.json()["token"]
    assert reply.json()["expires_in"] == 7200
    cards = httpx.get(f"{base}/mp/v1/cards", headers={"Authorization": f"Bearer {token}"})
    assert cards.status_code == 200 and cards.json() == {"items": []}
    # The same WeChat user logs in to the same account; a used code is refused.
    again_code = httpx.post(f"{base}/_mock/wechat/wxa/login", json={"openid": "o-mini-resident-1"}).json()["code"]
    again = httpx.post(f"{base}/mp/v1/login/wechat", json={"code": again_code}).json()
    assert again["account_id"] == reply.json()["account_id"]
    reused = httpx.post(f"{base}/mp/v1/login/wechat", json={"code": code})
    assert (reused.status_code, reused.json()["code"]) == (401, "LOGIN_FAILED")


def test_alipay_login(live_server):
    base = live_server.base_url
    auth_code = httpx.post(f"{base}/_mock/alipay/auth", json={"user_id": "2088102000000001"}).json()["auth_code"]
    reply = httpx.post(f"{base}/mp/v1/login/alipay", json={"auth_code": auth_code})
    assert reply.status_code == 200, reply.text
    assert httpx.get(f"{base}/mp/v1/cards", headers={"Authorization": f"Bearer {reply.json()['token']}"}).status_code == 200
    refused = httpx.post(f"{base}/mp/v1/login/alipay", json={"auth_code": "not-a-code"})
    assert (refused.status_code, refused.json()["code"]) == (401, "LOGIN_FAILED")


def test_h5_login_inside_the_alipay_app(live_server):
    base = live_server.base_url
    with httpx.Client(base_url=base, follow_redirects=True, headers={"User-Agent": "Mozilla/5.0 AlipayClient/10.5"}) as browser:
        page = browser.get("/h5/login")
        assert "支付宝授权登录" in page.text and "微信授权登录" not in page.text
        home = browser.get("/h5/login/alipay", params={})
        assert home.status_code == 200 and str(home.url).endswith("/h5/")
        assert "领取本人健康卡" in home.text
        # The same Alipay user (the mock keeps it in a cookie) comes back to the same account.
        cards = browser.get("/mp/v1/cards")
        assert cards.status_code == 200


def test_oauth_callback_refuses_a_forged_state(live_server):
    reply = httpx.get(f"{live_server.base_url}/h5/oauth/alipay", params={"auth_code": "x", "state": "forged"})
    assert (reply.status_code, reply.json()["code"]) == (400, "BAD_REQUEST")
