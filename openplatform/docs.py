"""``/docs``: a browsable page over ``/docs/openapi.json`` that needs no external CDN."""

from __future__ import annotations

from pathlib import Path

from sanic import Blueprint, Request
from sanic.response import html

bp = Blueprint("docs")
_PAGE = Path(__file__).resolve().parent.parent / "templates" / "docs.html"


@bp.get("/docs", strict_slashes=False)
async def docs_page(request: Request):
    return html(_PAGE.read_text(encoding="utf-8"))
