"""GET /dashboard: the live campaign dashboard, a static page that calls the API from the browser.

The page holds no data, so it loads without a key; it asks for the API key and sends it only as an
``Authorization: Bearer`` header on its own requests. Its assets are files of the package
(``api/static/``) served as they are: no build step, nothing fetched from elsewhere, which the
Content-Security-Policy below also enforces.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

routes = web.RouteTableDef()

STATIC = Path(__file__).parent / "static"
PAGE = "dashboard.html"
# Served below /dashboard/; anything else there is a 404, so no path ever reaches the file system.
ASSETS = frozenset({"dashboard.js", "dashboard.css", "sse.js", "chart.js"})

# Fixed here rather than guessed from the system's MIME table, which differs between machines.
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# 'self' only: the page may load its own scripts and styles and talk to this server, nothing else.
# form-action 'none' means even a script failure cannot turn the key form into a GET with the key in it.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _file(name: str) -> web.FileResponse:
    path = STATIC / name
    return web.FileResponse(path, headers={**HEADERS, "Content-Type": TYPES[path.suffix]})


@routes.get("/dashboard")
async def page(request: web.Request) -> web.FileResponse:
    return _file(PAGE)


@routes.get("/dashboard/")
async def page_slash(request: web.Request) -> web.Response:
    # The page's URLs are relative (so it also works below a proxy prefix); they resolve from /dashboard.
    raise web.HTTPMovedPermanently("../dashboard")


@routes.get("/dashboard/{name}")
async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return _file(name)
