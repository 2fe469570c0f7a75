"""QR images of card codes: SVG for pages, PNG with a centre logo for screens, print labels.

Symbols always use error correction level H (30 %), which is what lets a centre logo
cover a few percent of the modules and still decode. Every bitmap is drawn with whole
pixels per module and scaled only by integer nearest-neighbour, because a resampled,
blurred module edge is what makes cheap scanners fail.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import segno
from PIL import Image, ImageDraw, ImageFont

QUIET_ZONE_MODULES = 4

# The logo side as a share of the symbol side: 0.25² ≈ 6 % of the area at most, well inside
# what level H restores (it also has to absorb print and camera damage).
LOGO_SIDE_FRACTION = 0.25
LOGO_RED = (230, 0, 18)

LABEL_DPI = 200
LABEL_SIZE_PX = (394, 236)  # 50 mm × 30 mm at 200 dpi
LABEL_MIN_MODULE_PX = 2  # one pixel is 0.127 mm at 200 dpi: too small for handheld scanners
LABEL_TEXT_GAP_PX = 8
LABEL_MARGIN_PX = 10
LABEL_TITLE_SIZES = (36, 32, 28, 24, 20)
LABEL_SUBTITLE_SIZES = (22, 20, 18, 16, 14)

CJK_FONT_PATH = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")


def qr_svg(text: str, *, scale: int = 4) -> str:
    """The code as an SVG document fit to inline into an HTML page (no XML declaration)."""
    buffer = io.BytesIO()
    _make(text).save(buffer, kind="svg", scale=scale, border=QUIET_ZONE_MODULES, xmldecl=False)
    return buffer.getvalue().decode("utf-8")


def qr_png(text: str, *, scale: int = 8, with_logo: bool = True) -> bytes:
    """The code as a PNG with ``scale`` pixels per module, by default with the centre logo."""
    qr = _make(text)
    image = _render(qr, scale).convert("RGB")
    if with_logo:
        _draw_logo(image, qr, scale)
    return _png_bytes(image)


def label_png(text: str, title: str, subtitle: str) -> bytes:
    """A 50 × 30 mm sticker for a 200 dpi label printer: the code on the left, text on the right.

    No logo: a sticker is scanned worn and at an angle, so the code keeps all of its
    error-correction budget for that.
    """
    qr = _make(text)
    label_width, label_height = LABEL_SIZE_PX
    modules = qr.symbol_size(scale=1, border=QUIET_ZONE_MODULES)[0]
    scale = label_height // modules
    if scale < LABEL_MIN_MODULE_PX:
        raise ValueError("code text is too long to print legibly on a 50 × 30 mm label")

    label = Image.new("L", LABEL_SIZE_PX, 255)
    symbol = _render(qr, scale)
    label.paste(symbol, (0, (label_height - symbol.height) // 2))

    draw = ImageDraw.Draw(label)
    text_left = symbol.width + LABEL_TEXT_GAP_PX
    text_width = label_width - text_left - LABEL_MARGIN_PX
    title_line, title_font = _fit_line(draw, title, LABEL_TITLE_SIZES, text_width)
    subtitle_line, subtitle_font = _fit_line(draw, subtitle, LABEL_SUBTITLE_SIZES, text_width)
    title_height = _line_height(draw, title_font)
    block_height = title_height + LABEL_TEXT_GAP_PX + _line_height(draw, subtitle_font)
    top = (label_height - block_height) // 2
    draw.text((text_left, top), title_line, font=title_font, fill=0)
    draw.text((text_left, top + title_height + LABEL_TEXT_GAP_PX), subtitle_line, font=subtitle_font, fill=0)
    return _png_bytes(label, dpi=(LABEL_DPI, LABEL_DPI))


def _make(text: str) -> segno.QRCode:
    return segno.make(text, error="h", micro=False)


def _render(qr: segno.QRCode, scale: int) -> Image.Image:
    """Black-on-white greyscale image of the symbol with its quiet zone, ``scale`` px per module."""
    rows = qr.matrix_iter(scale=1, border=QUIET_ZONE_MODULES)
    pixels = bytes(0 if dark else 255 for row in rows for dark in row)
    side = qr.symbol_size(scale=1, border=QUIET_ZONE_MODULES)[0]
    image = Image.frombytes("L", (side, side), pixels)
    return image.resize((side * scale, side * scale), Image.Resampling.NEAREST)


def _draw_logo(image: Image.Image, qr: segno.QRCode, scale: int) -> None:
    """A white rounded square with a red cross over whole modules at the symbol's centre."""
    modules = qr.symbol_size(scale=1, border=0)[0]
    logo_modules = int(modules * LOGO_SIDE_FRACTION)
    if logo_modules % 2 == 0:  # symbols have an odd side: an odd logo sits exactly centred
        logo_modules -= 1
    first_module = QUIET_ZONE_MODULES + (modules - logo_modules) // 2
    left = top = first_module * scale
    side = logo_modules * scale
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((left, top, left + side - 1, top + side - 1), radius=side // 5, fill="white")

    centre = left + side // 2
    half_length = side * 3 // 10
    half_width = side // 10
    for half_x, half_y in ((half_width, half_length), (half_length, half_width)):
        draw.rectangle((centre - half_x, centre - half_y, centre + half_x, centre + half_y), fill=LOGO_RED)


def _fit_line(
    draw: ImageDraw.ImageDraw, text: str, sizes: tuple[int, ...], max_width: int
) -> tuple[str, ImageFont.FreeTypeFont | ImageFont.ImageFont]:
    """The largest listed font size that fits the line; at the smallest, cut it with '…'."""
    for size in sizes:
        font = _font(size)
        if draw.textlength(text, font=font) <= max_width:
            return text, font
    line = text
    while line and draw.textlength(line + "…", font=font) > max_width:
        line = line[:-1]
    return line + "…", font


def _line_height(draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    return draw.textbbox((0, 0), "健Ag", font=font)[3]


@lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Noto Sans CJK SC when installed (Chinese names need it), else Pillow's built-in font."""
    if CJK_FONT_PATH.exists():
        return ImageFont.truetype(str(CJK_FONT_PATH), size, index=_simplified_chinese_face_index())
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=1)
def _simplified_chinese_face_index() -> int:
    """Which face of the CJK collection is the Simplified Chinese one (JP comes first)."""
    for index in range(10):
        try:
            family, _style = ImageFont.truetype(str(CJK_FONT_PATH), 12, index=index).getname()
        except OSError:
            break
        if family and family.endswith(" SC"):
            return index
    return 0


def _png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()
