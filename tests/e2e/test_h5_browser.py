"""The resident's whole H5 journey in a real browser (Debian's chromium, mobile viewport):
WeChat OAuth login, claim, SMS strong auth, the card page's live dynamic code read from
a screenshot, verified by a terminal, and replaced on the page without a reload.

Screenshots of every step go to test-artifacts/browser/.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import httpx
import zxingcpp
from PIL import Image

from openplatform.sdk import PlatformClient
from tests.servers import shot
from tests.factories import resident

WECHAT_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 MicroMessenger/8.0.50(0x1800322a) NetType/WIFI Language/zh_CN"
)


def decode(png: bytes) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]


def sms_code(base_url: str, phone: str) -> str:
    return httpx.get(f"{base_url}/_mock/sms/messages", params={"phone": phone}).json()["items"][0]["code"]


def test_resident_claims_authenticates_and_shows_a_live_dynamic_code(live_server, browser):
    base = live_server.base_url
    seeded = subprocess.run(
        [sys.executable, "-m", "openplatform", "seed-demo", "--json"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("EHC_")}, **live_server.env},
        capture_output=True, text=True, check=True,
    )
    terminal = json.loads(seeded.stdout)["terminal"]
    person = resident()
    assert httpx.post(f"{base}/_mock/registry/people", json=person).status_code in (200, 201)

    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True,
        user_agent=WECHAT_UA, locale="zh-CN",
    )
    page = context.new_page()

    # 1. Log in through WeChat's web authorisation (the mock consent screen).
    page.goto(f"{base}/h5/")
    assert page.url.endswith("/h5/login")
    shot(page, "01-login")
    page.click("#wechat-login")
    # WeChat keeps its "#wechat_redirect" fragment through the redirects, as a real browser does.
    page.wait_for_url(lambda url: url.split("#")[0] == f"{base}/h5/")
    shot(page, "02-home-empty")

    # 2. Claim the card; a wrong check digit is caught inline first.
    page.click("#claim-self")
    page.fill("input[name=name]", person["name"])
    page.fill("input[name=id_number]", person["id_number"][:-1] + ("0" if person["id_number"][-1] != "0" else "1"))
    page.select_option("select[name=gender]", person["gender"])
    page.fill("input[name=birth_date]", person["birth_date"])
    page.fill("input[name=phone]", person["phone"])
    page.click("#claim-submit")
    assert "校验位" in page.inner_text("[data-for=id_number]")
    shot(page, "03-claim-inline-error")
    page.fill("input[name=id_number]", person["id_number"])
    page.click("#claim-submit")
    page.wait_for_url(f"{base}/h5/cards/*")
    card_id = page.url.rsplit("/", 1)[1]
    shot(page, "04-card-weak")

    # 3. SMS strong authentication.
    page.goto(f"{base}/h5/auth?card={card_id}")
    page.click("#send-sms")
    page.wait_for_selector("#auth-notice.ok")
    page.fill("#sms-code", sms_code(base, person["phone"]))
    page.click("#verify-sms")
    page.wait_for_function("document.getElementById('level').textContent === '强认证'")
    shot(page, "05-strong-auth")

    # 4. The card page shows a dynamic code; read it from the rendered image.
    page.goto(f"{base}/h5/cards/{card_id}")
    page.wait_for_function("document.getElementById('dynamic-qr').dataset.code.length > 0")
    qr = page.locator("#dynamic-qr svg")
    shown = page.get_attribute("#dynamic-qr", "data-code")
    decoded = decode(qr.screenshot())
    shot(page, "06-dynamic-code")
    assert decoded == [shown] and shown.startswith(f"{card_id}:0:")

    # 5. A terminal verifies it; the page replaces the used code without a reload.
    with PlatformClient(base, terminal["client_id"], terminal["secret"]) as scanner:
        reply = scanner.post("/inst/v1/codes/verify", {"qr_code_text": decoded[0], "scene": "consultation"})
    assert reply.status_code == 200 and reply.json()["health_card_id"] == card_id
    assert reply.json()["auth_level"] == "strong"
    page.evaluate("window.__sameDocument = true")
    page.wait_for_function(f"document.getElementById('dynamic-qr').dataset.code !== {json.dumps(shown)}", timeout=15_000)
    assert page.evaluate("window.__sameDocument") is True
    fresh = page.get_attribute("#dynamic-qr", "data-code")
    page.wait_for_timeout(200)
    assert decode(page.locator("#dynamic-qr svg").screenshot()) == [fresh]
    assert page.is_visible("#code-notice") and "已使用" in page.inner_text("#code-notice")
    shot(page, "07-code-replaced")
    context.close()


def test_face_verification_round_trip_in_the_browser(live_server, browser):
    base = live_server.base_url
    person = resident()
    httpx.post(f"{base}/_mock/registry/people", json=person)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, user_agent=WECHAT_UA)
    page = context.new_page()
    page.goto(f"{base}/h5/login")
    page.click("#wechat-login")
    page.wait_for_url(lambda url: url.split("#")[0] == f"{base}/h5/")
    page.click("#claim-self")
    for field in ("name", "id_number", "birth_date", "phone"):
        page.fill(f"input[name={field}]", person[field])
    page.select_option("select[name=gender]", person["gender"])
    page.click("#claim-submit")
    page.wait_for_url(f"{base}/h5/cards/*")
    card_id = page.url.rsplit("/", 1)[1]
    page.goto(f"{base}/h5/auth?card={card_id}")
    page.click("#face")
    page.wait_for_url(f"{base}/_mock/face/verify/*")
    shot(page, "08-face-provider")
    page.click("text=通过")
    page.wait_for_function("document.getElementById('level').textContent === '强认证'")
    shot(page, "09-face-passed")
    context.close()
