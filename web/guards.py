"""What every request meets before the token is looked at, and every response leaves with.

- The `Host` must be one of the page's names (web.allowed_hosts, web.public_url): a page on
  loopback cannot be reached through DNS rebinding. `/healthz` answers any Host, with no
  data but ok or not (a load balancer may probe it by address).
- Every header must be UTF-8 text, so no byte a client sends reaches a comparison undecoded.
- A POST whose `Origin` (or, without one, `Referer`) is another site's is refused, before
  and beside the CSRF check.
- `BadInput` anywhere becomes its status with words in the reader's language; anything
  unexpected is logged and answered 500 with no detail: no traceback reaches a client.
- Every response carries a strict Content-Security-Policy, `nosniff`, a referrer policy and,
  but for the stylesheet, `Cache-Control: no-store`; API answers are attachments.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from db.unreadable import RowUnreadable
from web.inputs import kept_query
from web.page import LANGUAGES, TEMPLATES, TEXTS, language
from web.problems import BadInput, explain
from web.settings import SETTINGS

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HEALTHZ = "/healthz"
STATIC = "/static/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSP = "; ".join((
    "default-src 'none'", "style-src 'self'", "img-src 'self'", "form-action 'self'",
    "frame-ancestors 'none'", "base-uri 'none'"))
"""Nothing runs on the page and nothing loads from elsewhere; its forms post only to it."""
REFERRER_POLICY = "same-origin"
"""No Referer ever leaves for another site. Not "no-referrer": under it Chromium sends
`Origin: null` with the page's own forms, and the Origin check could not tell them apart."""


def wants_html(request: web.Request) -> bool:
    """A browser asking for a page gets HTML; API clients and probes get JSON."""
    return not request.path.startswith(("/api/", "/metrics", HEALTHZ))


def reply_language(request: web.Request) -> str:
    """The reader's language: the page's (?lang=, Persian by default); JSON is English
    unless ?lang=fa asks otherwise."""
    asked = request.query.get("lang")
    return language(asked) if wants_html(request) or asked in LANGUAGES else "en"


def html(text: str, status: int = 200) -> web.Response:
    """A page of the status site (its headers are added on the way out)."""
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def problem_reply(request: web.Request, problem: BadInput) -> web.Response:
    """A refused request, answered in the reader's language."""
    lang = reply_language(request)
    message = explain(problem, lang)
    if not wants_html(request):
        return web.json_response({"error": message, "code": problem.code},
                                 status=problem.status)
    back = "/?" + urlencode(kept_query(request.query))
    return html(TEMPLATES.get_template("error.html").render(
        lang=lang, t=TEXTS[lang], message=message, back=back), problem.status)


def _check_headers(request: web.Request) -> None:
    for name, value in request.raw_headers:
        try:
            name.decode("utf-8")
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput("header_not_text", name.decode("latin-1")) from None


def _check_origin(request: web.Request) -> None:
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("Origin")
    if origin is None:
        referer = request.headers.get("Referer")
        if referer is None:
            return  # not sent by a browser's form: the token or the CSRF value decides
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    own = {f"{request.scheme}://{request.host}".lower(), request.app[SETTINGS].public_url}
    if origin.lower() not in own:
        raise BadInput("origin", origin, status=403)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The checks above, and the one place a problem or a failure becomes a reply."""
    try:
        _check_headers(request)
        host = request.headers.get("Host")  # not request.host: it falls back to our name
        if request.path != HEALTHZ and not request.app[SETTINGS].allows_host(host):
            raise BadInput("host", host or "")
        _check_origin(request)
        return await handler(request)
    except BadInput as problem:
        return problem_reply(request, problem)
    except RowUnreadable:  # a practice's own login, its row edited by hand: it, not a 500
        return problem_reply(request, BadInput("practice_unreadable", status=503))
    except web.HTTPException:
        raise
    except Exception:
        log.exception("status page: %s %s failed", request.method, request.path)
        return problem_reply(request, BadInput("error", status=500))


async def protect(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the headers every response leaves with, errors included."""
    headers = response.headers
    headers["Content-Security-Policy"] = CSP
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = REFERRER_POLICY
    headers["X-Frame-Options"] = "DENY"
    headers["Server"] = "nobat"  # not aiohttp's name and version
    if not request.path.startswith(STATIC):
        headers["Cache-Control"] = "no-store"
    if not wants_html(request):  # a browser sent to the API saves it, never renders it
        name = "metrics.txt" if request.path.startswith("/metrics") else "api.json"
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    if request.app[SETTINGS].secure:
        headers["Strict-Transport-Security"] = "max-age=31536000"
