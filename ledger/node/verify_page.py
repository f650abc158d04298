"""How a node serves the verification page (``/verify``), also used by the browser test.

The page is static package data in ``ledger/static/`` and is served with a strict
Content-Security-Policy, so that
even a compromised asset could not load a foreign script or send anything anywhere but to the
node itself (and the page only ever asks it for ``/v1/policy``).

``/verify`` redirects to ``/verify/`` so that the page's relative asset URLs (``verify.js``,
``verify.css``, the same ones that work when the file is opened from disk) resolve under
``/verify/``.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

#: The page's assets and their content types; nothing else under /verify/ exists.
VERIFY_ASSETS = {
    "verify.html": "text/html; charset=utf-8",
    "verify.js": "text/javascript; charset=utf-8",
    "verify.css": "text/css; charset=utf-8",
    "verify.svg": "image/svg+xml",
}

#: default-src 'self'; connect-src 'self' as the brief asks, made explicit per directive, plus
#: what no part of the page needs: plugins, <base>, form posts, framing by another site.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _asset(name: str) -> bytes:
    return resources.files("ledger").joinpath("static", name).read_bytes()


def _response(name: str) -> web.Response:
    response = web.Response(body=_asset(name), headers=SECURITY_HEADERS)
    response.headers["Content-Type"] = VERIFY_ASSETS[name]
    return response


async def _redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect("/verify/")


async def _page(request: web.Request) -> web.StreamResponse:
    return _response("verify.html")


async def _file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in VERIFY_ASSETS:
        raise web.HTTPNotFound()
    return _response(name)


def add_verify_routes(app: web.Application) -> None:
    """GET /verify -> 308 /verify/; GET /verify/ -> the page; GET /verify/{asset}."""
    app.router.add_get("/verify", _redirect)
    app.router.add_get("/verify/", _page)
    app.router.add_get("/verify/{name}", _file)
