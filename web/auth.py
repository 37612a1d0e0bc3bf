"""Who may see the page: the token from config.toml (the platform admin's: every practice)
or a practice's staff token (`nobat page-token`: that practice only), in an `Authorization:
Bearer` header (scripts, Prometheus) or through the login form, which opens a session in the
store that remembers whose it is. Every request past this middleware carries its `SCOPE`.

The session cookie holds a random id (HttpOnly, SameSite=Strict; Secure and `__Host-`
behind TLS), never the token or anything derived from it; the store keeps only the id's
hash (db/web_sessions.py), so a logout anywhere ends the session everywhere and a copied
cookie opens nothing after it. Every write made with the cookie needs the session's own
CSRF value too; a Bearer header cannot be sent by another site's form, so API clients need
nothing more. Wrong tokens, by form or header, slow their sender down (web/throttle.py).
"""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import web

from db.page_tokens import token_practice
from db.practices import PracticeScope
from db.web_sessions import LiveSession, WebSessionStore
from web.guards import SAFE_METHODS, STATIC, Handler, html, reply_language, wants_html
from web.inputs import read_form
from web.page import LANGUAGES, TEMPLATES, TEXTS, digits, language
from web.problems import BadInput
from web.settings import SETTINGS
from web.throttle import FREE_TRIES, LoginThrottle, client_of

log = logging.getLogger(__name__)
SESSIONS = web.AppKey("sessions", WebSessionStore)
THROTTLE = web.AppKey("throttle", LoginThrottle)
SESSION = web.RequestKey("session", LiveSession)


@dataclass(frozen=True)
class Scope:
    """What one request may see and change: one practice's rows, or every practice's."""

    practice: PracticeScope | None
    """None: the platform admin (the configured token)."""

    @property
    def clinic(self) -> int | None:
        """The clinic id the store's reads are narrowed to; None: none narrowed."""
        return None if self.practice is None else self.practice.id


SCOPE = web.RequestKey("scope", Scope)
ADMIN = Scope(None)
OPEN_PATHS = frozenset({"/healthz", "/login"})
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")
"""What db/web_sessions.py hands out; anything else in the cookie is not looked up."""
LOGIN_CODES = ("wrong", "locked", "expired", "logged_out", "off", "once_spent")
"""What the login page may say (?e=...): codes, so a link cannot make it say anything else."""
JSON_ERRORS = {"off": "set web.token (or NOBAT_WEB_TOKEN) to use this",
               "wrong": "wrong token", "": "token required"}


def same(given: str, expected: str) -> bool:
    """Compare secrets in constant time, whatever characters the client sent."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8", "surrogateescape"))


def bearer(request: web.Request) -> str | None:
    """The token of `Authorization: Bearer <token>` ("Bearer" in any case, as RFC 9110 has
    it); "" for a header in another form (a bare token is refused, not tried); None when
    there is no such header."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, given = header.strip().partition(" ")
    return given.strip() if scheme.lower() == "bearer" else ""


def _home(request: web.Request, path: str = "/", **query: str) -> str:
    lang = request.query.get("lang")
    kept = {**query, **({"lang": lang} if lang in LANGUAGES else {})}
    return path + ("?" + urlencode(kept) if kept else "")


def login_page(request: web.Request, code: str, status: int, wait: int = 0) -> web.Response:
    """The login form, saying what happened (a wrong token, a lock, an ended session)."""
    lang = language(request.query.get("lang"))
    token_set = bool(request.app[SETTINGS].token)
    code = code or ("" if token_set else "off")
    t = TEXTS[lang]
    message = t[f"login_{code}"].format(seconds=digits(wait, lang)) if code else ""
    response = html(TEMPLATES.get_template("login.html").render(
        lang=lang, t=t, code=code, message=message, token_set=token_set,
        token_made=request.app[SETTINGS].token_made), status)
    if wait:
        response.headers["Retry-After"] = str(wait)
    return response


def _refuse(request: web.Request, code: str, status: int, wait: int = 0) -> web.Response:
    """Not let in: the login form for a browser, a JSON error for a script."""
    if wants_html(request):
        return login_page(request, code, status, wait)
    lang = reply_language(request)
    message = (TEXTS[lang]["login_locked"].format(seconds=digits(wait, lang)) if wait
               else JSON_ERRORS.get(code, code))
    response = web.json_response({"error": message, "code": code or "token_required"},
                                 status=status)
    if wait:
        response.headers["Retry-After"] = str(wait)
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


async def _with_bearer(request: web.Request, handler: Handler, given: str
                       ) -> web.StreamResponse:
    client, throttle = client_of(request.remote), request.app[THROTTLE]
    wait = throttle.wait(client)
    if wait:
        return _refuse(request, "locked", 429, wait)
    scope = await _scope_of(request, given, "Authorization header")
    if scope is None:
        return _refuse(request, "wrong", 401)
    request[SCOPE] = scope
    return await handler(request)


async def _scope_of(request: web.Request, given: str, how: str) -> Scope | None:
    """Whose token this is: the admin's (config.toml), a practice's (in the store), or
    nobody's (None, counted as wrong). Any token but the admin's counts against its client
    before the store is asked, and is taken back if it is a practice's: parallel guesses
    cannot slip past the lock while the store answers."""
    if given and same(given, request.app[SETTINGS].token):
        return ADMIN
    client, throttle = client_of(request.remote), request.app[THROTTLE]
    failures = throttle.failed(client)
    practice = await token_practice(request.app[SESSIONS].database, given) if given else None
    if practice is not None:
        throttle.forgive(client)
        return Scope(practice)
    _say_locked(throttle, client, failures, how)
    return None


def _count_wrong(throttle: LoginThrottle, client: str, how: str) -> None:
    """Count a wrong token (see _say_locked)."""
    _say_locked(throttle, client, throttle.failed(client), how)


def _say_locked(throttle: LoginThrottle, client: str, failures: int, how: str) -> None:
    """The log says when a client is first locked out, and then every tenth wrong token (a
    guesser fills no disk)."""
    if failures > FREE_TRIES and (failures - FREE_TRIES) % 10 == 1:
        log.warning("status page: %d wrong tokens (%s) from %s; locked out for %d s",
                    failures, how, client, throttle.wait(client))


async def _session(request: web.Request) -> LiveSession | None:
    cookie = request.cookies.get(request.app[SETTINGS].cookie)
    if cookie is None or not SESSION_ID.fullmatch(cookie):
        return None
    return await request.app[SESSIONS].find(cookie)


async def _check_csrf(request: web.Request, live: LiveSession) -> None:
    given = request.headers.get("X-CSRF-Token") or (await read_form(request)).get("csrf", "")
    if not given or not same(given, live.csrf):
        raise BadInput("csrf", status=403)


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Everything but /healthz, /login and the stylesheet needs the token (header or
    session); a write with the session needs its CSRF value too."""
    if request.path in OPEN_PATHS or request.path.startswith(STATIC):
        return await handler(request)
    settings = request.app[SETTINGS]
    if not settings.token:
        return _refuse(request, "off", 403)
    given = bearer(request)
    if given is not None:
        return await _with_bearer(request, handler, given)
    live = await _session(request)
    if live is not None:
        request[SESSION] = live
        request[SCOPE] = Scope(live.practice)
        if request.method not in SAFE_METHODS:
            await _check_csrf(request, live)
        return await handler(request)
    if settings.cookie in request.cookies and wants_html(request):
        ended = web.HTTPSeeOther(_home(request, "/login", e="expired"))
        ended.del_cookie(settings.cookie, path="/", secure=settings.secure)
        raise ended
    return _refuse(request, "", 401)


async def login(request: web.Request) -> web.StreamResponse:
    """GET: the form. POST: a right token opens a session and the page; a wrong one counts
    against the client, which past a few waits longer each time (429 and Retry-After)."""
    settings = request.app[SETTINGS]
    if request.method == "GET" and "once" in request.query:
        return await _once(request)
    if request.method in ("GET", "HEAD"):
        code = request.query.get("e", "")
        return login_page(request, code if code in LOGIN_CODES else "", 200)
    if request.method != "POST":
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD", "POST"])
    if not settings.token:
        return login_page(request, "off", 403)
    given = (await read_form(request)).get("token", "")
    client, throttle = client_of(request.remote), request.app[THROTTLE]
    wait = throttle.wait(client)  # after the body is read: no await between this and failed()
    if wait:
        return login_page(request, "locked", 429, wait)
    scope = await _scope_of(request, given, "login form")
    if scope is None:
        return login_page(request, "wrong", 401)
    if scope is ADMIN:
        throttle.succeeded(client)
    log.info("status page: login from %s (%s)", client,
             "admin" if scope.practice is None else f"practice {scope.practice.key}")
    raise await _opened(request, scope)


async def _once(request: web.Request) -> web.StreamResponse:
    """The first run's link: its code opens a session once; a spent, late or wrong code
    shows the login form saying so, and counts as a wrong token."""
    settings = request.app[SETTINGS]
    client, throttle = client_of(request.remote), request.app[THROTTLE]
    wait = throttle.wait(client)
    if wait:
        return login_page(request, "locked", 429, wait)
    if settings.once is None or not settings.once.take(request.query.get("once", "")):
        _count_wrong(throttle, client, "one-time login link")
        return login_page(request, "once_spent", 401)
    log.info("status page: login from %s with the one-time link", client)
    raise await _opened(request, ADMIN)


async def _opened(request: web.Request, scope: Scope) -> web.HTTPSeeOther:
    """A new session for `scope` (ending the one the browser had), and the way to the page."""
    settings = request.app[SETTINGS]
    store = request.app[SESSIONS]
    old = request.cookies.get(settings.cookie)
    if old is not None and SESSION_ID.fullmatch(old):
        await store.end(old)
    session_id, _ = await store.open(scope.practice)
    opened = web.HTTPSeeOther(_home(request))
    opened.set_cookie(settings.cookie, session_id, httponly=True, samesite="Strict", path="/",
                      secure=settings.secure,
                      max_age=int(settings.session_max.total_seconds()))
    return opened


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session in the store (every copy of its cookie with it) and forget the
    cookie."""
    settings = request.app[SETTINGS]
    cookie = request.cookies.get(settings.cookie)
    if cookie is not None and SESSION_ID.fullmatch(cookie):
        await request.app[SESSIONS].end(cookie)
    ended = web.HTTPSeeOther(_home(request, "/login", e="logged_out"))
    ended.del_cookie(settings.cookie, path="/", secure=settings.secure)
    raise ended
