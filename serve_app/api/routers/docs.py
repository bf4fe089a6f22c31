"""``/docs``: Swagger UI with its files served by the service itself. FastAPI's default loads
them from a CDN, onto the origin whose local storage holds the web page's API key; here nothing
of the page comes from elsewhere. (ReDoc, CDN-only, is not served.)"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from serve_app.core.errors import ServiceError

router = APIRouter(include_in_schema=False)

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
_FILES = resources.files("fastapi_swagger") / "resources"


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - API",
        swagger_js_url="/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/docs/assets/swagger-ui.css",
        swagger_favicon_url="/docs/assets/favicon-32x32.png",
    )


@router.get("/docs/assets/{name}")
async def swagger_asset(name: str) -> Response:
    if name not in ASSETS:  # a fixed list: no path from the request reaches the file system
        raise ServiceError(f"No asset '{name}'.", code="not_found", status_code=404)
    # FileResponse reads in a thread pool: 1.6 MB of JavaScript never blocks the event loop.
    return FileResponse(str(_FILES / name), media_type=ASSETS[name], headers={"Cache-Control": "public, max-age=86400"})
