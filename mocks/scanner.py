"""Scanner simulator: a hospital reader terminal (扫码墩, scanner gun) as the platform sees one.

It shows a code to a simulated camera — on a phone screen or as a 200 dpi paper sticker,
dimmed, tilted, blurred, noisy, glared, far away — decodes the frame with a real decoder
(zxing-cpp), and submits what it read to the platform with its own terminal credentials,
exactly as a registered and approved terminal would::

    with Scanner("http://127.0.0.1:8000", "trm_demo", secret) as scanner:
        report = scanner.verify("…:1", "consultation", preset="phone_tilted", seed=7)

A terminal of its own is registered by its institution and approved by an operator, as
any real reader is, with ``Scanner.register(base_url, institution, admin, "门诊一楼 3 号窗")``.

From the command line (``--client-id`` omitted: the demo terminal from ``seed-demo``;
``--register NAME``: a new terminal of the demo institution, approved by the demo admin)::

    python -m mocks.scanner --preset sticker_200dpi --text 'VUID:1' --scene registration
    python -m mocks.scanner --register '门诊一楼 3 号窗' --image-url /inst/v1/cards/VUID/label.png
    python -m mocks.scanner --micropay --amount-fen 2580 --text 'VUID:0:VALID:TOKEN'

Like every mock it talks to the platform only over HTTP; cardcore is used here only to
draw the codes (``cardcore.qrimage``). Every random choice of a reading comes from
``random.Random(seed)``, so a reading can be repeated exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Literal

import httpx
import zxingcpp
from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFilter

from cardcore import qrimage
from openplatform.sdk import build_request

Medium = Literal["phone", "sticker"]
Range = tuple[float, float]
Point = tuple[float, float]
Source = str | bytes | Image.Image

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
# What a counter label carries besides the code (the platform prints the masked name).
STICKER_TITLE = "王*芳"
STICKER_SUBTITLE = "居民电子健康卡"
# A phone page shows the code with a white margin; the dark phone body frames the screen.
SCREEN_MARGIN_FRACTION = 0.08
BEZEL_FRACTION = 0.06
BEZEL_GREY = 25


@dataclass(frozen=True)
class Preset:
    """How one reading situation distorts a code. Each range is sampled uniformly per seed.

    ``scale`` maps picture pixels to camera pixels (a phone page draws 8 px per module, a
    label about 4); ``tilt`` is the keystone of a code seen at an angle: its far edge appears
    shorter by that fraction. Brightness and contrast act on the screen or the print,
    glare is a soft reflection over part of it, blur and noise belong to the camera.
    """

    name: str
    medium: Medium
    description: str
    scale: Range
    brightness: Range = (1.0, 1.0)
    contrast: Range = (1.0, 1.0)
    rotation_deg: Range = (0.0, 0.0)
    tilt: Range = (0.0, 0.0)
    glare: Range = (0.0, 0.0)
    scratches: tuple[int, int] = (0, 0)
    blur_radius: Range = (0.0, 0.0)
    noise_sigma: Range = (0.0, 0.0)
    frame: tuple[int, int] = (640, 480)  # a VGA monochrome sensor, usual in counter readers
    background: tuple[int, int] = (60, 190)  # grey of whatever is behind the code


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "phone_bright", "phone", "phone at full brightness: whites clip, blacks wash out",
            scale=(0.4, 0.55), brightness=(1.25, 1.45), contrast=(0.5, 0.7), rotation_deg=(0, 10),
            blur_radius=(0.3, 0.6), noise_sigma=(2, 5),
        ),
        Preset(
            "phone_dim", "phone", "phone in power-saving mode: dark screen, more sensor noise",
            scale=(0.4, 0.55), brightness=(0.35, 0.55), contrast=(0.65, 0.85),
            rotation_deg=(0, 10), blur_radius=(0.3, 0.6), noise_sigma=(4, 8),
        ),
        Preset(
            "phone_tilted", "phone", "phone held at an angle and turned in the hand",
            scale=(0.4, 0.55), rotation_deg=(10, 30), tilt=(0.05, 0.2), blur_radius=(0.3, 0.6),
            noise_sigma=(2, 5),
        ),
        Preset(
            "phone_glare", "phone", "ceiling light reflected on the screen",
            scale=(0.4, 0.55), contrast=(0.8, 1.0), rotation_deg=(0, 10), glare=(0.55, 0.8),
            blur_radius=(0.3, 0.6), noise_sigma=(2, 5),
        ),
        Preset(
            "phone_far", "phone", "phone held high above the reader window: small, soft code",
            scale=(0.3, 0.36), rotation_deg=(0, 10), blur_radius=(0.3, 0.5), noise_sigma=(2, 4),
        ),
        Preset(
            "phone_near", "phone", "phone pressed close to the window: large code",
            scale=(0.7, 0.85), rotation_deg=(0, 8), blur_radius=(0.8, 1.4), noise_sigma=(2, 5),
            frame=(800, 600),
        ),
        Preset(
            "sticker_200dpi", "sticker", "fresh 200 dpi label held under the reader",
            scale=(0.8, 1.25), contrast=(0.85, 1.0), rotation_deg=(0, 8), blur_radius=(0.3, 0.7),
            noise_sigma=(2, 5),
        ),
        Preset(
            "sticker_worn", "sticker", "label carried for months: faded print, scratches",
            scale=(0.9, 1.2), brightness=(0.9, 1.05), contrast=(0.5, 0.7), rotation_deg=(0, 10),
            scratches=(2, 6), blur_radius=(0.4, 0.8), noise_sigma=(3, 7),
        ),
        Preset(
            "sticker_rotated", "sticker", "label on a card held crooked",
            scale=(0.85, 1.15), rotation_deg=(15, 30), blur_radius=(0.3, 0.6), noise_sigma=(2, 5),
        ),
        Preset(
            "perspective_counter", "sticker", "label lying on the counter, read at a slant",
            scale=(0.9, 1.2), rotation_deg=(0, 15), tilt=(0.15, 0.3), blur_radius=(0.3, 0.6),
            noise_sigma=(2, 5),
        ),
    )
}


# --- pictures of codes and what the camera makes of them ------------------------------


def code_picture(text: str, medium: Medium) -> Image.Image:
    """The code as the platform draws it: the phone page's PNG, or the printed label."""
    if medium == "phone":
        png = qrimage.qr_png(text)
    else:
        png = qrimage.label_png(text, STICKER_TITLE, STICKER_SUBTITLE)
    return Image.open(io.BytesIO(png))


def camera_view(picture: Image.Image, preset: Preset, seed: int) -> Image.Image:
    """The greyscale frame a reader's camera captures of ``picture`` in this situation.

    Greyscale because counter readers use monochrome sensors. The steps follow the light:
    what the screen or print does, then distance, angle, where it sits in the frame, and
    last the camera's own focus blur and sensor noise.
    """
    rng = random.Random(seed)
    image = picture.convert("L")
    if preset.medium == "phone":
        image = _on_screen_page(image)
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(*preset.contrast))
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(*preset.brightness))
    _scratch(image, rng, rng.randint(*preset.scratches))
    if preset.medium == "phone":
        image = _in_phone_body(image)
    image = _glare(image, rng, rng.uniform(*preset.glare))
    image = _scaled(image, rng.uniform(*preset.scale))
    tilt, rotation_deg = rng.uniform(*preset.tilt), rng.uniform(*preset.rotation_deg)
    image, mask = _tilted_and_rotated(image, rng, tilt, rotation_deg)
    frame = _in_frame(image, mask, rng, preset)
    blur_radius = rng.uniform(*preset.blur_radius)
    if blur_radius > 0:
        frame = frame.filter(ImageFilter.GaussianBlur(blur_radius))
    return _with_noise(frame, rng, rng.uniform(*preset.noise_sigma))


def _on_screen_page(code: Image.Image) -> Image.Image:
    """The code on the white page the phone displays (brightness acts on all of it)."""
    margin = round(code.width * SCREEN_MARGIN_FRACTION)
    page = Image.new("L", (code.width + 2 * margin, code.height + 2 * margin), 255)
    page.paste(code, (margin, margin))
    return page


def _in_phone_body(screen: Image.Image) -> Image.Image:
    """The lit screen framed by the phone's dark body."""
    bezel = round(screen.width * BEZEL_FRACTION)
    phone = Image.new("L", (screen.width + 2 * bezel, screen.height + 2 * bezel), BEZEL_GREY)
    phone.paste(screen, (bezel, bezel))
    return phone


def _scratch(image: Image.Image, rng: random.Random, count: int) -> None:
    """Light scratches across a worn print, each a short line one picture pixel wide."""
    draw = ImageDraw.Draw(image)
    for _ in range(count):
        x, y = rng.uniform(0, image.width), rng.uniform(0, image.height)
        length = rng.uniform(0.1, 0.3) * image.width
        angle = rng.uniform(0, math.pi)
        end = (x + length * math.cos(angle), y + length * math.sin(angle))
        draw.line(((x, y), end), fill=rng.randint(170, 230), width=1)


def _glare(image: Image.Image, rng: random.Random, strength: float) -> Image.Image:
    """A bright soft ellipse over part of the picture; ``strength`` 1 would be pure white."""
    if strength <= 0:
        return image
    width, height = image.size
    centre_x, centre_y = rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height
    radius_x, radius_y = rng.uniform(0.12, 0.25) * width, rng.uniform(0.08, 0.2) * height
    mask = Image.new("L", image.size, 0)
    peak = round(255 * strength)
    ImageDraw.Draw(mask).ellipse(
        (centre_x - radius_x, centre_y - radius_y, centre_x + radius_x, centre_y + radius_y), fill=peak
    )
    mask = mask.filter(ImageFilter.GaussianBlur(min(radius_x, radius_y) / 2))
    return Image.composite(Image.new("L", image.size, 255), image, mask)


def _scaled(image: Image.Image, factor: float) -> Image.Image:
    """The picture at the size the camera sees it; Pillow's filter averages like a sensor pixel."""
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.BILINEAR)


def _tilted_and_rotated(
    image: Image.Image, rng: random.Random, tilt: float, rotation_deg: float
) -> tuple[Image.Image, Image.Image]:
    """The picture seen at a slant (its far edge ``tilt`` shorter) and turned; also its outline mask.

    One projective map does both, so the picture is resampled only once.
    """
    width, height = image.size
    corners = [(0.0, 0.0), (float(width), 0.0), (float(width), float(height)), (0.0, float(height))]
    centre = (width / 2, height / 2)
    far_edge = rng.randrange(4)  # the top, right, bottom or left edge is the one farther from the lens
    angle = math.radians(rotation_deg * rng.choice((-1, 1)))
    seen = _rotated(_keystoned(corners, centre, far_edge, tilt), centre, angle)
    left, top = min(x for x, _ in seen), min(y for _, y in seen)
    seen = [(x - left, y - top) for x, y in seen]
    size = (math.ceil(max(x for x, _ in seen)), math.ceil(max(y for _, y in seen)))
    # Image.transform asks, for each output pixel, where in the input to look: seen → corners.
    coefficients = perspective_coefficients(seen, corners)
    warped = image.transform(size, Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BICUBIC)
    outline = Image.new("L", image.size, 255)
    outline = outline.transform(size, Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BILINEAR)
    return warped, outline


def _keystoned(corners: list[Point], centre: Point, far_edge: int, tilt: float) -> list[Point]:
    """The corners with the far edge's two pulled towards the centre by the fraction ``tilt``."""
    far_corners = (far_edge, (far_edge + 1) % 4)
    return [
        (x + tilt * (centre[0] - x), y + tilt * (centre[1] - y)) if index in far_corners else (x, y)
        for index, (x, y) in enumerate(corners)
    ]


def _rotated(points: list[Point], centre: Point, angle: float) -> list[Point]:
    cos, sin = math.cos(angle), math.sin(angle)
    return [
        (
            centre[0] + (x - centre[0]) * cos - (y - centre[1]) * sin,
            centre[1] + (x - centre[0]) * sin + (y - centre[1]) * cos,
        )
        for x, y in points
    ]


def _in_frame(image: Image.Image, mask: Image.Image, rng: random.Random, preset: Preset) -> Image.Image:
    """The picture somewhere in the camera frame, wholly in view.

    A reader decodes only a code it sees whole, and the person holding it moves it until
    it does, so a picture larger than the frame widens the frame rather than being cut.
    """
    margin = 8
    width = max(preset.frame[0], image.width + 2 * margin)
    height = max(preset.frame[1], image.height + 2 * margin)
    frame = Image.new("L", (width, height), rng.randint(*preset.background))
    left = rng.randint(margin, width - image.width - margin)
    top = rng.randint(margin, height - image.height - margin)
    frame.paste(image, (left, top), mask)
    return frame


def _with_noise(frame: Image.Image, rng: random.Random, sigma: float) -> Image.Image:
    """Gaussian sensor noise: random bytes through the normal quantile table, added around 128."""
    if sigma <= 0:
        return frame
    noise = Image.frombytes("L", frame.size, rng.randbytes(frame.width * frame.height))
    return ImageChops.add(frame, noise.point(_gaussian_table(round(sigma, 1))), scale=1.0, offset=-128)


@lru_cache(maxsize=256)
def _gaussian_table(sigma: float) -> list[int]:
    """Maps a uniform byte to 128 + a normal deviate of this sigma, clipped to a byte."""
    normal = NormalDist(128, sigma)
    return [min(255, max(0, round(normal.inv_cdf((byte + 0.5) / 256)))) for byte in range(256)]


def perspective_coefficients(from_points: list[Point], to_points: list[Point]) -> tuple[float, ...]:
    """The 8 coefficients (a…h) of the projective map sending each of 4 ``from_points`` to its ``to_point``.

    The map is x' = (a·x + b·y + c) / (g·x + h·y + 1), y' = (d·x + e·y + f) / (g·x + h·y + 1),
    the form ``Image.transform(..., Image.Transform.PERSPECTIVE, ...)`` takes (from output
    pixel to input pixel). Raises ValueError when three points are in a line.
    """
    if len(from_points) != 4 or len(to_points) != 4:
        raise ValueError("a perspective map needs exactly 4 point pairs")
    rows = []
    for (x, y), (u, v) in zip(from_points, to_points):
        rows.append([x, y, 1.0, 0.0, 0.0, 0.0, -x * u, -y * u, u])
        rows.append([0.0, 0.0, 0.0, x, y, 1.0, -x * v, -y * v, v])
    return tuple(_solve(rows))


def _solve(rows: list[list[float]]) -> list[float]:
    """Gauss-Jordan elimination with partial pivoting of an n × (n+1) augmented matrix."""
    size = len(rows)
    scale = max(abs(value) for row in rows for value in row[:size]) or 1.0
    for column in range(size):
        pivot = max(range(column, size), key=lambda r: abs(rows[r][column]))
        if abs(rows[pivot][column]) < 1e-12 * scale:
            raise ValueError("the points do not define a perspective map (three of them are in a line)")
        rows[column], rows[pivot] = rows[pivot], rows[column]
        lead = rows[column][column]
        rows[column] = [value / lead for value in rows[column]]
        for other in range(size):
            factor = rows[other][column]
            if other != column and factor:
                rows[other] = [value - factor * top for value, top in zip(rows[other], rows[column])]
    return [row[size] for row in rows]


# --- decoding --------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """What the reader's decoder made of one frame."""

    text: str | None
    decode_ms: float

    @property
    def decoded(self) -> bool:
        return self.text is not None


def decode(frame: Image.Image) -> Reading:
    """Decode a camera frame with zxing-cpp, as a reader set to QR codes does."""
    started = time.perf_counter()
    barcodes = zxingcpp.read_barcodes(frame, formats=zxingcpp.BarcodeFormat.QRCode)
    elapsed_ms = (time.perf_counter() - started) * 1000
    return Reading(barcodes[0].text if barcodes else None, elapsed_ms)


def read(source: Source, preset: Preset | str, seed: int = 0) -> Reading:
    """Show ``source`` to the camera and decode the frame.

    ``source`` is the code text (drawn as the preset's medium shows it), or a picture of
    a code — PNG bytes such as the platform's label.png, or a PIL image.
    """
    preset = PRESETS[preset] if isinstance(preset, str) else preset
    if isinstance(source, str):
        picture = code_picture(source, preset.medium)
    elif isinstance(source, bytes):
        picture = Image.open(io.BytesIO(source))
    else:
        picture = source
    return decode(camera_view(picture, preset, seed))


# --- the terminal ----------------------------------------------------------------------

VERIFY_PATH = "/inst/v1/codes/verify"
SECOND_CHECK_PATH = "/inst/v1/codes/otp"
MICROPAY_PATH = "/cashier/v1/micropay"
TERMINALS_PATH = "/inst/v1/terminals"
DEFAULT_PRESET = "phone_bright"


@dataclass(frozen=True)
class ScanReport:
    """One scan as the terminal saw it: the decode, and the platform's answer if it was asked."""

    preset: str
    seed: int
    decoded: bool
    decode_ms: float
    text: str | None
    status: int | None = None
    reply: dict | None = None
    answer_ms: float | None = None  # from sending the request to the platform's whole answer

    def as_dict(self) -> dict:
        return asdict(self)


def _report(
    preset: str,
    seed: int,
    reading: Reading,
    response: httpx.Response | None = None,
    answer_ms: float | None = None,
) -> ScanReport:
    reply = None
    if response is not None and response.headers.get("content-type", "").startswith("application/json"):
        reply = response.json()
    return ScanReport(
        preset=preset,
        seed=seed,
        decoded=reading.decoded,
        decode_ms=round(reading.decode_ms, 3),
        text=reading.text,
        status=response.status_code if response is not None else None,
        reply=reply,
        answer_ms=round(answer_ms, 3) if answer_ms is not None else None,
    )


@dataclass(frozen=True)
class Credentials:
    """A signed client's id and secret, as the platform hands them out (the secret only once)."""

    client_id: str
    secret: str


class RegistrationRefused(RuntimeError):
    """The platform did not register or approve the terminal; ``response`` says why."""

    def __init__(self, step: str, response: httpx.Response):
        super().__init__(f"{step}: {response.status_code} {response.text[:300]}")
        self.response = response


def _checked(step: str, response: httpx.Response) -> dict:
    if response.status_code >= 300:
        raise RegistrationRefused(step, response)
    return response.json()


class _Terminal:
    """A terminal's credentials, and the signed requests it makes of what it read."""

    def __init__(self, base_url: str, client_id: str, secret: str, terminal_id: str | None):
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._secret = secret
        self._terminal_id = terminal_id

    def _signed(self, method: str, path: str, payload=None) -> dict:
        """httpx request arguments for a path (or full URL); the signature covers the raw path as sent."""
        url = httpx.URL(self.base_url).join(path)
        path_with_query = url.raw_path.decode("ascii")
        headers, body = build_request(
            self.client_id, self._secret, method, path_with_query, payload, terminal_id=self._terminal_id
        )
        return {"method": method, "url": url, "headers": headers, "content": body}

    def _verify_request(self, text: str, scene: str, otp: str | None) -> dict:
        body = {"qr_code_text": text, "scene": scene}
        if otp:
            body["otp"] = otp
        return self._signed("POST", VERIFY_PATH, body)

    def _second_check_request(self, text: str, scene: str) -> dict:
        return self._signed("POST", SECOND_CHECK_PATH, {"qr_code_text": text, "scene": scene})

    def _micropay_request(self, text: str, out_trade_no: str, amount_fen: int, subject: str) -> dict:
        body = {"qr_code_text": text, "out_trade_no": out_trade_no, "amount_fen": amount_fen}
        return self._signed("POST", MICROPAY_PATH, {**body, "subject": subject})

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.client_id, self._secret)

    def _as(self, client: Credentials) -> "_Terminal":
        return _Terminal(self.base_url, client.client_id, client.secret, None)

    def _registration_request(self, institution: Credentials, name: str) -> dict:
        return self._as(institution)._signed("POST", TERMINALS_PATH, {"name": name})

    def _approval_request(self, admin: Credentials) -> dict:
        return self._as(admin)._signed("POST", f"/admin/v1/terminals/{self.client_id}/approve")

    def _adopt(self, registered: dict) -> None:
        self.client_id, self._secret = registered["client_id"], registered["secret"]


class Scanner(_Terminal):
    """A reader terminal calling the platform synchronously (the command line uses it).

    ``verify`` and ``micropay`` take the code text or a picture of the code (PNG bytes or a
    PIL image, e.g. from ``fetch_image``); a frame that does not decode is not submitted,
    as a real reader sends nothing until it has read a code.
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        secret: str,
        *,
        terminal_id: str | None = None,
        http: httpx.Client | None = None,
        timeout: float = 10.0,
    ):
        super().__init__(base_url, client_id, secret, terminal_id)
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=timeout)

    @classmethod
    def register(
        cls,
        base_url: str,
        institution: Credentials,
        admin: Credentials | None,
        name: str,
        *,
        http: httpx.Client | None = None,
        timeout: float = 10.0,
    ) -> "Scanner":
        """A new terminal of ``institution`` (``POST /inst/v1/terminals``), approved by ``admin``.

        Without an admin the terminal stays pending, and the platform refuses its requests
        until an operator approves it. Its secret is in ``credentials``, shown only now.
        """
        scanner = cls(base_url, "", "", http=http, timeout=timeout)
        try:
            registered = scanner._http.request(**scanner._registration_request(institution, name))
            scanner._adopt(_checked("register", registered))
            if admin is not None:
                _checked("approve", scanner._http.request(**scanner._approval_request(admin)))
        except BaseException:
            scanner.close()
            raise
        return scanner

    def fetch_image(self, path: str) -> bytes:
        """A picture the platform serves this terminal (path or URL): ``/inst/v1/cards/{id}/label.png``."""
        response = self._http.request(**self._signed("GET", path))
        response.raise_for_status()
        return response.content

    def _ask(self, request: dict) -> tuple[httpx.Response, float]:
        """The platform's answer, and the milliseconds it took."""
        started = time.perf_counter()
        response = self._http.request(**request)
        return response, (time.perf_counter() - started) * 1000

    def verify(
        self,
        source: Source,
        scene: str,
        *,
        preset: str = DEFAULT_PRESET,
        seed: int = 0,
        otp: str | None = None,
    ) -> ScanReport:
        """Scan, then ask ``POST /inst/v1/codes/verify`` whose code it is."""
        reading = read(source, preset, seed)
        if not reading.decoded:
            return _report(preset, seed, reading)
        return _report(preset, seed, reading, *self._ask(self._verify_request(reading.text, scene, otp)))

    def send_second_check(self, text: str, scene: str) -> httpx.Response:
        """Have the platform text the holder of a static code the one-time code for ``scene``.

        What the clerk asks for when a static code is refused in a critical scene
        (``SCENE_REQUIRES_DYNAMIC``); the resident reads the code out and it goes with the
        next ``verify`` as ``otp``.
        """
        return self._http.request(**self._second_check_request(text, scene))

    def micropay(
        self,
        source: Source,
        *,
        out_trade_no: str,
        amount_fen: int,
        subject: str,
        preset: str = DEFAULT_PRESET,
        seed: int = 0,
    ) -> ScanReport:
        """Scan a combined or channel pay code, then charge it with ``POST /cashier/v1/micropay``."""
        reading = read(source, preset, seed)
        if not reading.decoded:
            return _report(preset, seed, reading)
        request = self._micropay_request(reading.text, out_trade_no, amount_fen, subject)
        return _report(preset, seed, reading, *self._ask(request))

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> "Scanner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncScanner(_Terminal):
    """The same terminal over ``httpx.AsyncClient``; pass ``http`` to send through a given client.

    Drawing and decoding run in a worker thread, so many simulated readers can share one
    event loop with the platform under test.
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        secret: str,
        *,
        terminal_id: str | None = None,
        http: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
    ):
        super().__init__(base_url, client_id, secret, terminal_id)
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)

    @classmethod
    async def register(
        cls,
        base_url: str,
        institution: Credentials,
        admin: Credentials | None,
        name: str,
        *,
        http: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
    ) -> "AsyncScanner":
        """A new terminal of ``institution``, approved by ``admin`` (see ``Scanner.register``)."""
        scanner = cls(base_url, "", "", http=http, timeout=timeout)
        try:
            registered = await scanner._http.request(**scanner._registration_request(institution, name))
            scanner._adopt(_checked("register", registered))
            if admin is not None:
                _checked("approve", await scanner._http.request(**scanner._approval_request(admin)))
        except BaseException:
            await scanner.aclose()
            raise
        return scanner

    async def fetch_image(self, path: str) -> bytes:
        """A picture the platform serves this terminal (path or URL): ``/inst/v1/cards/{id}/label.png``."""
        response = await self._http.request(**self._signed("GET", path))
        response.raise_for_status()
        return response.content

    async def _ask(self, request: dict) -> tuple[httpx.Response, float]:
        """The platform's answer, and the milliseconds it took."""
        started = time.perf_counter()
        response = await self._http.request(**request)
        return response, (time.perf_counter() - started) * 1000

    async def verify(
        self,
        source: Source,
        scene: str,
        *,
        preset: str = DEFAULT_PRESET,
        seed: int = 0,
        otp: str | None = None,
    ) -> ScanReport:
        """Scan, then ask ``POST /inst/v1/codes/verify`` whose code it is."""
        reading = await asyncio.to_thread(read, source, preset, seed)
        if not reading.decoded:
            return _report(preset, seed, reading)
        request = self._verify_request(reading.text, scene, otp)
        return _report(preset, seed, reading, *await self._ask(request))

    async def send_second_check(self, text: str, scene: str) -> httpx.Response:
        """Have the platform text the holder of a static code the one-time code (see ``Scanner``)."""
        return await self._http.request(**self._second_check_request(text, scene))

    async def micropay(
        self,
        source: Source,
        *,
        out_trade_no: str,
        amount_fen: int,
        subject: str,
        preset: str = DEFAULT_PRESET,
        seed: int = 0,
    ) -> ScanReport:
        """Scan a combined or channel pay code, then charge it with ``POST /cashier/v1/micropay``."""
        reading = await asyncio.to_thread(read, source, preset, seed)
        if not reading.decoded:
            return _report(preset, seed, reading)
        request = self._micropay_request(reading.text, out_trade_no, amount_fen, subject)
        return _report(preset, seed, reading, *await self._ask(request))

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> "AsyncScanner":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


# --- command line ----------------------------------------------------------------------


class _Demo:
    """The demo clients from ``seed-demo --json``, asked for only when a credential is missing."""

    def __init__(self) -> None:
        self._seeded: dict | None = None

    @property
    def seeded(self) -> bool:
        return self._seeded is not None

    def __getitem__(self, key: str):
        if self._seeded is None:
            command = [sys.executable, "-m", "openplatform", "seed-demo", "--json"]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            self._seeded = json.loads(output)
        return self._seeded[key]

    def credentials(self, key: str, client_id: str | None, secret: str | None) -> Credentials:
        if client_id:
            return Credentials(client_id, secret or "")
        return Credentials(self[key]["client_id"], self[key]["secret"])


def _new_out_trade_no() -> str:
    """The counter's own order number: time of the scan and six random digits."""
    return f"SCAN{time.strftime('%Y%m%d%H%M%S')}{random.randrange(10**6):06d}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mocks.scanner",
        description="Scan a code as a simulated reader terminal and print the report as JSON.",
        epilog="Credentials left out are the demo's (seed-demo). "
        "Exit status 0 when the code was read and the platform accepted it, else 1.",
    )
    parser.add_argument("--base-url", help=f"platform address (default: the demo's, else {DEFAULT_BASE_URL})")
    terminal = parser.add_argument_group("the terminal")
    terminal.add_argument("--client-id", help="terminal client id (default: the demo terminal)")
    terminal.add_argument("--secret", help="terminal secret (required with --client-id)")
    terminal.add_argument("--terminal-id", help="terminal to act for when signing as its institution")
    terminal.add_argument(
        "--register", metavar="NAME", help="scan as a new terminal of the institution, approved by the admin"
    )
    terminal.add_argument("--institution-id", help="with --register: the institution (default: the demo's)")
    terminal.add_argument("--institution-secret")
    terminal.add_argument("--admin-id", help="with --register: the approving operator (default: the demo's)")
    terminal.add_argument("--admin-secret")
    scan = parser.add_argument_group("the scan")
    scan.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS), help="reading situation")
    scan.add_argument("--seed", type=int, default=0, help="seed of the perturbations (default: 0)")
    scan.add_argument("--list-presets", action="store_true", help="print the presets, then exit")
    code = scan.add_mutually_exclusive_group()
    code.add_argument("--text", help="the QR code text, drawn as the preset's medium shows it")
    code.add_argument(
        "--image-url", help="the code's picture on the platform (path or URL): /inst/v1/cards/<id>/label.png"
    )
    ask = parser.add_argument_group("what the platform is asked")
    ask.add_argument("--scene", default="consultation", help="verification scene (default: consultation)")
    ask.add_argument("--otp", help="the resident's SMS code, for a static code in a critical scene")
    ask.add_argument(
        "--send-otp", action="store_true", help="static code needing a second check: text its holder the code"
    )
    ask.add_argument(
        "--micropay", action="store_true", help="charge the code (/cashier/v1/micropay), not verify it"
    )
    ask.add_argument("--amount-fen", type=int, default=100, help="--micropay: fen to charge (default 100)")
    ask.add_argument("--out-trade-no", help="with --micropay: the counter's order number (default: new)")
    ask.add_argument("--subject", default="门诊缴费", help="with --micropay: what is paid for")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list_presets:
        presets = {name: asdict(preset) for name, preset in PRESETS.items()}
        print(json.dumps(presets, ensure_ascii=False, indent=2))
        return 0
    if args.text is None and args.image_url is None:
        parser.error("give the code: --text or --image-url")
    if args.client_id and not args.secret:
        parser.error("--secret is required with --client-id")
    if args.register and args.client_id:
        parser.error("--register makes a new terminal; leave out --client-id")
    demo = _Demo()
    if args.register:
        institution = demo.credentials("institution", args.institution_id, args.institution_secret)
        admin = demo.credentials("admin", args.admin_id, args.admin_secret)
    else:
        terminal = demo.credentials("terminal", args.client_id, args.secret)
    base_url = args.base_url or (demo["base_url"] if demo.seeded else DEFAULT_BASE_URL)
    second_check = None
    try:
        if args.register:
            scanner = Scanner.register(base_url, institution, admin, args.register)
        else:
            scanner = Scanner(base_url, terminal.client_id, terminal.secret, terminal_id=args.terminal_id)
        with scanner:
            source = args.text if args.text is not None else scanner.fetch_image(args.image_url)
            if args.micropay:
                report = scanner.micropay(
                    source, out_trade_no=args.out_trade_no or _new_out_trade_no(), amount_fen=args.amount_fen,
                    subject=args.subject,
                    preset=args.preset, seed=args.seed,
                )
            else:
                report = scanner.verify(source, args.scene, preset=args.preset, seed=args.seed, otp=args.otp)
                if args.send_otp and (report.reply or {}).get("code") == "SCENE_REQUIRES_DYNAMIC":
                    sent = scanner.send_second_check(report.text, args.scene)
                    second_check = {"status": sent.status_code, "reply": sent.json()}
    except RegistrationRefused as exc:
        parser.exit(1, f"the terminal was not registered: {exc}\n")
    except httpx.HTTPStatusError as exc:
        parser.exit(1, f"{exc.request.url}: {exc.response.status_code} {exc.response.text}\n")
    except httpx.TransportError as exc:
        parser.exit(1, f"cannot reach the platform at {base_url}: {exc}\n")
    output = report.as_dict()
    if second_check:
        output["second_check"] = second_check  # run again with --otp and the code the holder received
    if args.register:
        # The secret is shown once: without it the new terminal could not sign again.
        output["terminal"] = asdict(scanner.credentials)
    print(json.dumps(output, ensure_ascii=False, indent=2))
    return 0 if report.status is not None and report.status < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
