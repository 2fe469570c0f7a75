"""The scanner simulator's camera: repeatable perturbations a real decoder still reads exactly."""

import json

import httpx
import pytest
from PIL import Image, ImageDraw

from cardcore import qrimage, signing
from cardcore.codes import CodeText
from mocks.scanner import (
    PRESETS,
    Credentials,
    RegistrationRefused,
    Scanner,
    camera_view,
    code_picture,
    decode,
    perspective_coefficients,
    read,
)

VUID = "04199236679E6CE4971932CC229E455AA8F20B7D1CC9C13958FD000C334A2439"
VALID = "383C75866264B4C6EDD1D252A7692F22"
STATIC = CodeText.static(VUID).format()
PHONE_CODES = (
    STATIC,
    CodeText.dynamic(VUID, VALID).format(),
    CodeText.dynamic(VUID, VALID, token="134567890123456789").format(),
)
SEEDS = range(4)


def project(coefficients, point):
    a, b, c, d, e, f, g, h = coefficients
    x, y = point
    denominator = g * x + h * y + 1
    return ((a * x + b * y + c) / denominator, (d * x + e * y + f) / denominator)


@pytest.mark.parametrize("preset", PRESETS.values(), ids=PRESETS.keys())
def test_a_seed_repeats_its_frame_exactly_and_another_seed_differs(preset):
    picture = code_picture(STATIC, preset.medium)
    first = camera_view(picture, preset, seed=11).tobytes()
    assert camera_view(picture, preset, seed=11).tobytes() == first
    assert camera_view(picture, preset, seed=12).tobytes() != first


@pytest.mark.parametrize("preset", PRESETS.values(), ids=PRESETS.keys())
def test_every_preset_reads_back_the_exact_code(preset):
    # Stickers carry only static codes; phones show every kind.
    for seed in SEEDS:
        text = STATIC if preset.medium == "sticker" else PHONE_CODES[seed % len(PHONE_CODES)]
        reading = read(text, preset, seed)
        assert reading.text == text, f"{preset.name} seed {seed} did not decode"


def test_a_label_png_from_the_platform_is_read_as_a_picture():
    label = qrimage.label_png(STATIC, "王*芳", "居民电子健康卡")
    assert read(label, "sticker_worn", seed=3).text == STATIC


def test_a_frame_without_a_code_reads_nothing():
    reading = decode(Image.new("L", (640, 480), 128))
    assert not reading.decoded and reading.text is None


def test_perspective_coefficients_map_each_of_the_four_points():
    source = [(0, 0), (394, 0), (394, 236), (0, 236)]
    target = [(40.5, 12), (350, 30.25), (380, 250), (8, 200)]
    coefficients = perspective_coefficients(source, target)
    for point, expected in zip(source, target):
        assert project(coefficients, point) == pytest.approx(expected, abs=1e-6)


def test_the_same_points_give_the_identity_map():
    square = [(0, 0), (10, 0), (10, 10), (0, 10)]
    assert perspective_coefficients(square, square) == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0), abs=1e-9)


def test_three_points_in_a_line_are_refused():
    with pytest.raises(ValueError, match="in a line"):
        perspective_coefficients([(0, 0), (5, 5), (10, 10), (0, 10)], [(0, 0), (10, 0), (10, 10), (0, 10)])


def test_coefficients_follow_pillows_output_to_input_convention():
    # A dark dot in the input lands where the forward map sends it in the transformed image.
    corners = [(0, 0), (200, 0), (200, 200), (0, 200)]
    seen = [(30, 10), (180, 40), (170, 190), (10, 160)]
    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).rectangle((145, 45, 155, 55), fill=0)
    to_input = perspective_coefficients(seen, corners)
    warped = image.transform((200, 200), Image.Transform.PERSPECTIVE, to_input, Image.Resampling.BILINEAR)
    x, y = project(perspective_coefficients(corners, seen), (150, 50))
    assert warped.getpixel((round(x), round(y))) < 64
    assert warped.getpixel((150, 50)) > 192


def test_scanner_submits_what_it_decoded_signed_as_the_terminal():
    sent = []

    def platform(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"result": "ok", "code_type": "static"})

    with httpx.Client(transport=httpx.MockTransport(platform)) as http:
        scanner = Scanner("http://platform.test", "trm_x", "s3cret", http=http)
        report = scanner.verify(STATIC, "registration", preset="phone_far", seed=2)
        blank = scanner.verify(Image.new("L", (64, 64), 255), "registration", preset="phone_far")

    assert report.decoded and report.text == STATIC
    assert report.status == 200 and report.reply == {"result": "ok", "code_type": "static"}
    assert not blank.decoded and blank.status is None and blank.reply is None
    assert len(sent) == 1, "a frame that does not decode must not be submitted"
    request = sent[0]
    assert request.url.path == "/inst/v1/codes/verify"
    assert json.loads(request.content) == {"qr_code_text": STATIC, "scene": "registration"}
    parts = signing.read_signed_parts(request.headers)
    assert parts.client_id == "trm_x"
    assert signing.signature_matches("s3cret", "POST", "/inst/v1/codes/verify", parts, request.content)


def test_a_terminal_registers_under_its_institution_is_approved_and_scans_as_itself():
    sent = []

    def platform(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if request.url.path == "/inst/v1/terminals":
            return httpx.Response(201, json={"client_id": "trm_new", "secret": "new-secret"})
        if request.url.path == "/admin/v1/terminals/trm_new/approve":
            return httpx.Response(200, json={"client_id": "trm_new", "status": "approved"})
        return httpx.Response(200, json={"result": "ok"})

    institution, admin = Credentials("ins_x", "ins-secret"), Credentials("adm_x", "adm-secret")
    with httpx.Client(transport=httpx.MockTransport(platform)) as http:
        scanner = Scanner.register("http://platform.test", institution, admin, "门诊一楼 3 号窗", http=http)
        report = scanner.verify(STATIC, "registration", preset="sticker_200dpi", seed=1)

    assert scanner.credentials == Credentials("trm_new", "new-secret")
    assert report.status == 200 and report.answer_ms is not None
    signers = [(r.url.path, signing.read_signed_parts(r.headers).client_id) for r in sent]
    assert signers == [
        ("/inst/v1/terminals", "ins_x"),
        ("/admin/v1/terminals/trm_new/approve", "adm_x"),
        ("/inst/v1/codes/verify", "trm_new"),
    ]
    assert json.loads(sent[0].content) == {"name": "门诊一楼 3 号窗"}
    for request, secret in zip(sent, ("ins-secret", "adm-secret", "new-secret")):
        parts = signing.read_signed_parts(request.headers)
        path = request.url.raw_path.decode()
        assert signing.signature_matches(secret, request.method, path, parts, request.content)


def test_a_refused_registration_says_why_and_asks_no_approval():
    sent = []

    def platform(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(403, json={"code": "CLIENT_DISABLED", "message": "client is disabled"})

    with httpx.Client(transport=httpx.MockTransport(platform)) as http:
        institution, admin = Credentials("ins_x", "s"), Credentials("adm_x", "s")
        with pytest.raises(RegistrationRefused, match="register: 403 .*CLIENT_DISABLED") as refused:
            Scanner.register("http://platform.test", institution, admin, "窗口", http=http)
    assert refused.value.response.status_code == 403
    assert len(sent) == 1
