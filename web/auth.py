"""Who may see the page: the token from config.toml, in a header or through the login form.

The form sets a session cookie derived from the token (HttpOnly, SameSite=Strict), never the
token itself and never a query string that would land in access logs. Every write (the flow
reload, the absence forms, logging out) needs the page's CSRF value too when it comes with
the cookie; a Bearer header cannot be sent by another site's form, so API clients need
nothing more.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

TOKEN = web.AppKey("token", str)
SESSION_COOKIE = "nobat_session"
OPEN_PATHS = frozenset({"/healthz", "/login"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Render = Callable[[web.Request, str, int], web.StreamResponse]
LOGIN_PAGE = web.AppKey("login_page", Render)
"""Shows the login form with a message and a status (401 when the visitor is not let in)."""


def _derived(token: str, purpose: str) -> str:
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def session_value(token: str) -> str:
    """The cookie's value: proves the token was given without being the token."""
    return _derived(token, "nobat-session")


def csrf_value(token: str) -> str:
    """What the page's forms carry back with a POST made with the session cookie."""
    return _derived(token, "nobat-csrf")


def _matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def by_bearer(request: web.Request) -> bool:
    """Whether the request carries the token in an Authorization: Bearer header."""
    token = request.app[TOKEN]
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return bool(given) and _matches(given, token)


def by_cookie(request: web.Request) -> bool:
    """Whether the request carries the session cookie the login form set."""
    given = request.cookies.get(SESSION_COOKIE, "")
    return bool(given) and _matches(given, session_value(request.app[TOKEN]))


def wants_html(request: web.Request) -> bool:
    """A browser asking for a page gets the login form; API clients get JSON."""
    return not request.path.startswith(("/api/", "/metrics"))


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Everything but /healthz and /login needs the token (header or session cookie)."""
    if request.path in OPEN_PATHS:
        return await handler(request)
    if not request.app[TOKEN]:
        message = "set web.token (or NOBAT_WEB_TOKEN) to use this"
        if wants_html(request):
            return request.app[LOGIN_PAGE](request, message, 403)
        return web.json_response({"error": message}, status=403)
    if by_bearer(request):
        return await handler(request)
    if by_cookie(request):
        if request.method == "POST" and not await _csrf_ok(request):
            return web.json_response({"error": "missing or wrong CSRF value"}, status=403)
        return await handler(request)
    if wants_html(request):
        return request.app[LOGIN_PAGE](request, "", 401)
    return web.json_response({"error": "token required"}, status=401,
                             headers={"WWW-Authenticate": "Bearer"})


async def _csrf_ok(request: web.Request) -> bool:
    given = request.headers.get("X-CSRF-Token", "")
    if not given and request.content_type == "application/x-www-form-urlencoded":
        given = str((await request.post()).get("csrf", ""))
    return bool(given) and _matches(given, csrf_value(request.app[TOKEN]))


async def login(request: web.Request) -> web.StreamResponse:
    """The form posts the token; a right one sets the session cookie and opens the page."""
    if request.method == "GET":
        return request.app[LOGIN_PAGE](request, "", 200)
    token = request.app[TOKEN]
    given = str((await request.post()).get("token", ""))
    if not token or not given or not _matches(given, token):
        return request.app[LOGIN_PAGE](request, "wrong", 401)
    lang = request.query.get("lang", "")
    response = web.HTTPSeeOther("/" + (f"?lang={lang}" if lang in ("fa", "en") else ""))
    response.set_cookie(SESSION_COOKIE, session_value(token), httponly=True,
                        samesite="Strict", path="/")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """Forget the session cookie."""
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response
