"""The web page: ``/`` and its assets under ``/ui/``, served by the Ingress itself (no CDN, no
build step), with a Content-Security-Policy that lets it load nothing from elsewhere."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from serve_app.core.errors import ServiceError

router = APIRouter(include_in_schema=False)

WEB = Path(__file__).resolve().parents[2] / "web"
ASSETS = {"app.js": "text/javascript", "app.css": "text/css", "icon.svg": "image/svg+xml"}
# blob: for the audio the page fetches with the API key in a header and plays from memory
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated (ETag): a new release shows at the next load
}


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(WEB / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/ui/{name}")
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:  # a fixed list: no path from the request reaches the file system
        raise ServiceError(f"No asset '{name}'.", code="not_found", status_code=404)
    return FileResponse(WEB / name, media_type=ASSETS[name], headers=HEADERS)
