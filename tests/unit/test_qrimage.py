"""QR images decode back to the exact code text with a real decoder (zxing-cpp)."""

import io
import xml.etree.ElementTree as ElementTree

import pytest
import zxingcpp
from PIL import Image

from cardcore import qrimage
from cardcore.codes import CodeText

VUID = "04199236679E6CE4971932CC229E455AA8F20B7D1CC9C13958FD000C334A2439"
VALID = "383C75866264B4C6EDD1D252A7692F22"

CODE_TEXTS = {
    "static": CodeText.static(VUID).format(),
    "static-with-issuer": CodeText.static(VUID, issuer="ehc.sn.gov.cn").format(),
    "dynamic": CodeText.dynamic(VUID, VALID).format(),
    "combined": CodeText.dynamic(VUID, VALID, token="134567890123456789").format(),
    "longest": CodeText.dynamic(VUID, VALID, token="a1" * 32, issuer="ehc." + "x" * 60).format(),
}


def decoded_texts(png: bytes) -> list[str]:
    return [barcode.text for barcode in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]


@pytest.mark.parametrize("text", CODE_TEXTS.values(), ids=CODE_TEXTS.keys())
@pytest.mark.parametrize("scale", [3, 8])
def test_png_with_logo_decodes_to_the_exact_text(text, scale):
    assert decoded_texts(qrimage.qr_png(text, scale=scale)) == [text]


@pytest.mark.parametrize("text", CODE_TEXTS.values(), ids=CODE_TEXTS.keys())
def test_png_without_logo_decodes_to_the_exact_text(text):
    assert decoded_texts(qrimage.qr_png(text, with_logo=False)) == [text]


def test_logo_is_drawn_only_when_asked_and_stays_small():
    def red_share(png: bytes) -> float:
        image = Image.open(io.BytesIO(png)).convert("RGB")
        counts = {colour: count for count, colour in image.getcolors(maxcolors=image.width * image.height)}
        return counts.get(qrimage.LOGO_RED, 0) / (image.width * image.height)

    assert red_share(qrimage.qr_png(CODE_TEXTS["dynamic"], with_logo=False)) == 0
    assert 0 < red_share(qrimage.qr_png(CODE_TEXTS["dynamic"])) < 0.08


def test_png_modules_are_whole_pixels():
    image = Image.open(io.BytesIO(qrimage.qr_png(CODE_TEXTS["static"], scale=5, with_logo=False)))
    assert {colour for _count, colour in image.convert("L").getcolors()} == {0, 255}
    assert image.width % 5 == 0


def test_svg_is_well_formed_xml_with_an_svg_root():
    root = ElementTree.fromstring(qrimage.qr_svg(CODE_TEXTS["dynamic"]))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"


@pytest.mark.parametrize("text", CODE_TEXTS.values(), ids=CODE_TEXTS.keys())
def test_label_is_50_by_30_mm_at_200_dpi_and_decodes(text):
    png = qrimage.label_png(text, title="张三 Zhang San", subtitle="居民电子健康卡 6101**********1234")
    image = Image.open(io.BytesIO(png))
    assert image.size == (394, 236)
    assert tuple(round(value) for value in image.info["dpi"]) == (200, 200)
    assert decoded_texts(png) == [text]


def test_label_fits_a_title_too_long_for_one_line():
    png = qrimage.label_png(CODE_TEXTS["static"], title="Wolfeschlegelsteinhausenbergerdorff", subtitle="")
    assert decoded_texts(png) == [CODE_TEXTS["static"]]


def test_label_refuses_text_too_long_to_print_legibly():
    with pytest.raises(ValueError):
        qrimage.label_png("A" * 1000, title="", subtitle="")
