"""The icon browsers ask for at /favicon.ico whatever the page links (pages link the SVG)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from conveyor.web.pages import STATIC

router = APIRouter(include_in_schema=False)
ICON = STATIC / "favicon.svg"


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    return FileResponse(
        ICON, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"}
    )
