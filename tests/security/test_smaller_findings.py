"""Probes, "smaller issues": no Secure/__Host- cookie over TLS; no Origin check on POSTs;
free text carried in redirect URLs; no CSP, nosniff or no-store headers; the token accepted
without "Bearer ", and lowercase "bearer" refused."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

import pytest

from tests.security.wire import (
    TOKEN,
    Login,
    exchange,
    http,
    log_in,
    page_server,
    post_form,
)
from tests.support.server import ServerProcess

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
BEARER = ("Authorization", f"Bearer {TOKEN}")
PUBLIC = ('public_url = ""', 'public_url = "https://status.clinic.example"')


@pytest.mark.parametrize(("path", "headers", "status"), [
    ("/", [BEARER], 200), ("/api/status", [BEARER], 200), ("/metrics", [BEARER], 200),
    ("/api/flows", [BEARER], 200), ("/healthz", [], 200), ("/login", [], 200),
    ("/", [], 401), ("/api/status", [], 401), ("/api/status?from=0001-01-01", [BEARER], 400),
    ("/no-such-page", [BEARER], 404),
])
async def test_every_response_carries_the_protective_headers(
        server: ServerProcess, path: str, headers: list[tuple[str, str]], status: int) -> None:
    reply = await exchange(server, http("GET", path, *headers))
    assert reply.status == status
    assert reply.header("Content-Security-Policy") == CSP
    assert reply.header("X-Content-Type-Options") == "nosniff"
    assert reply.header("Referrer-Policy") == "same-origin"
    assert reply.header("X-Frame-Options") == "DENY"
    assert reply.header("Cache-Control") == "no-store"
    assert "aiohttp" not in (reply.header("Server") or "")
    if path.startswith(("/api/", "/metrics", "/healthz")):  # never rendered by a browser
        assert (reply.header("Content-Disposition") or "").startswith("attachment; filename=")


async def test_the_stylesheet_is_served_to_anyone_and_may_be_cached(
        server: ServerProcess) -> None:
    reply = await exchange(server, http("GET", "/static/page.css"))
    assert reply.status == 200 and reply.header("Content-Type") == "text/css"
    assert reply.header("Cache-Control") is None and reply.header("X-Content-Type-Options")
    assert b".heat-20 { background: rgba(192, 57, 43, 1.000); }" in reply.body


async def test_behind_tls_the_cookie_is_secure_and_host_prefixed(tmp_path: Path) -> None:
    async with page_server(tmp_path, PUBLIC) as server:
        body = f"token={TOKEN}".encode()
        opened = await exchange(server, http(
            "POST", "/login", ("Content-Type", "application/x-www-form-urlencoded"),
            body=body, host="status.clinic.example"))
        assert opened.status == 303
        cookie = opened.header("Set-Cookie") or ""
        name, _, rest = cookie.partition("=")
        value, *attributes = (part.strip() for part in rest.split(";"))
        assert name == "__Host-nobat_session"
        assert {a.split("=")[0].lower() for a in attributes} >= {"httponly", "secure", "path",
                                                                 "samesite"}
        assert "Path=/" in attributes and "SameSite=Strict" in attributes
        assert not any(a.lower().startswith("domain") for a in attributes)
        assert opened.header("Strict-Transport-Security") == "max-age=31536000"
        read = await exchange(server, http("GET", "/api/status",
                                           ("Cookie", f"__Host-nobat_session={value}"),
                                           host="status.clinic.example"))
        assert read.status == 200
        plain = await exchange(server, http("GET", "/api/status",
                                            ("Cookie", f"nobat_session={value}")))
        assert plain.status == 401  # only the cookie's own name counts


async def an_absence(server: ServerProcess, login: Login) -> int:
    """Record an absence from the page (tomorrow, the whole clinic); its id."""
    tomorrow = dt.datetime.now(ZoneInfo("Asia/Tehran")).date() + dt.timedelta(days=1)
    made = await post_form(server, "/absences", login, ("doctor", ""),
                           ("first", tomorrow.isoformat()), ("reason", "probe"))
    assert made.status == 303
    return int(await listed_absences(server) or 0)


async def listed_absences(server: ServerProcess) -> int | None:
    reply = await exchange(server, http("GET", "/api/status", BEARER))
    found = json.loads(reply.body)["recorded_absences"]
    return found[0]["id"] if found else None


@pytest.mark.parametrize("foreign", [("Origin", "http://evil.example"),
                                     ("Origin", "null"),
                                     ("Referer", "http://evil.example/form.html"),
                                     ("Origin", "http://127.0.0.1:1")])
async def test_a_post_from_another_origin_is_refused_with_a_right_csrf_value(
        server: ServerProcess, foreign: tuple[str, str]) -> None:
    login = await log_in(server)
    closure = await an_absence(server, login)
    refused = await post_form(server, "/absences/lift?lang=en", login,
                              ("closure", str(closure)), headers=[foreign])
    assert refused.status == 403 and "came from another site" in refused.text
    assert await listed_absences(server) == closure
    own = server.base_url
    lifted = await post_form(server, "/absences/lift", login, ("closure", str(closure)),
                             headers=[("Origin", own), ("Referer", own + "/")],
                             host=own.removeprefix("http://"))
    assert lifted.status == 303 and await listed_absences(server) is None


async def test_the_login_form_from_another_origin_is_refused(server: ServerProcess) -> None:
    body = f"token={TOKEN}".encode()
    reply = await exchange(server, http(
        "POST", "/login", ("Content-Type", "application/x-www-form-urlencoded"),
        ("Origin", "http://evil.example"), body=body))
    assert reply.status == 403 and reply.header("Set-Cookie") is None


async def test_redirects_carry_codes_and_the_page_shows_no_text_from_a_link(
        server: ServerProcess) -> None:
    login = await log_in(server)
    tomorrow = dt.datetime.now(ZoneInfo("Asia/Tehran")).date() + dt.timedelta(days=1)
    made = await post_form(server, "/absences?lang=en&from=2026-01-01&note=hi", login,
                           ("doctor", ""), ("first", tomorrow.isoformat()),
                           ("reason", "Call 021-5555 to confirm"))
    location = urlsplit(made.header("Location") or "")
    assert location.path == "/" and dict(parse_qsl(location.query)) == {
        "lang": "en", "from": "2026-01-01", "notice": "absence_recorded", "n": "0"}
    for url in ("/?lang=en&notice=absence_error&detail=Call+021-7777+now",
                "/?lang=en&notice=cancelled&n=Call+021-7777",
                "/?lang=en&notice=cancel_refused&detail=Call+021-7777"):
        page = await exchange(server, http("GET", url, login.header))
        assert page.status == 200 and "021-7777" not in page.text, url
    told = await exchange(server, http("GET", "/login?lang=en&e=Call+021-7777+to+unlock"))
    assert told.status == 200 and "021-7777" not in told.text


async def test_the_bearer_scheme_is_case_insensitive_and_required(
        server: ServerProcess) -> None:
    answers = {authorization: (await exchange(server, http(
        "GET", "/api/status", ("Authorization", authorization)))).status
        for authorization in (f"bearer {TOKEN}", f"BEARER  {TOKEN}", f"Bearer {TOKEN}", TOKEN,
                              f"Basic {TOKEN}", f"{TOKEN} Bearer")}
    assert list(answers.values()) == [200, 200, 200, 401, 401, 401]
