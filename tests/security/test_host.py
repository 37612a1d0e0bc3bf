"""Probe: "Any Host header is accepted, so a web page open on the clinic's own PC can reach
the loopback page through DNS rebinding." (The browser side of it: test_browser.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.security.wire import TOKEN, exchange, http, page_server
from tests.support.server import ServerProcess

BEARER = ("Authorization", f"Bearer {TOKEN}")
REBOUND = "rebind.attacker.example:8080"
"""What a browser sends as Host once the attacker's name points at 127.0.0.1."""


@pytest.mark.parametrize("path", ["/", "/login", "/api/status", "/metrics", "/api/flows",
                                  "/static/page.css"])
async def test_a_name_not_the_pages_own_is_refused(server: ServerProcess, path: str) -> None:
    reply = await exchange(server, http("GET", path + "?lang=en", BEARER, host=REBOUND))
    assert reply.status == 400
    assert "This page does not answer to the name" in reply.text and REBOUND in reply.text
    assert b"health" not in reply.body and b"nobat_up" not in reply.body


async def test_a_login_by_another_name_is_refused_before_the_token_is_looked_at(
        server: ServerProcess) -> None:
    body = f"token={TOKEN}".encode()
    reply = await exchange(server, http(
        "POST", "/login", ("Content-Type", "application/x-www-form-urlencoded"),
        body=body, host=REBOUND))
    assert reply.status == 400 and reply.header("Set-Cookie") is None


async def test_the_loopback_names_with_or_without_a_port_are_served_and_no_other(
        server: ServerProcess) -> None:
    served = {host: (await exchange(server, http("GET", "/api/status", BEARER,
                                                 host=host))).status
              for host in ("127.0.0.1", "localhost", "[::1]", "LOCALHOST:8080", "127.0.0.1:80",
                           "127.0.0.1.nip.io", "localhost.attacker.example", "0.0.0.0:8080")}
    assert list(served.values()) == [200, 200, 200, 200, 200, 400, 400, 400]


async def test_a_request_without_a_host_is_refused(server: ServerProcess) -> None:
    reply = await exchange(server, b"GET /api/status HTTP/1.0\r\nAuthorization: Bearer "
                           + TOKEN.encode() + b"\r\n\r\n")
    assert reply.status == 400


async def test_healthz_answers_any_name_but_tells_it_only_ok(server: ServerProcess) -> None:
    foreign = await exchange(server, http("GET", "/healthz", host="10.0.0.9:8080"))
    assert (foreign.status, json.loads(foreign.body)) == (200, {"status": "ok"})
    own = await exchange(server, http("GET", "/healthz"))
    assert set(json.loads(own.body)) == {"status", "database", "schema", "ami", "flows",
                                         "parts"}


async def test_the_configured_names_replace_the_loopback_ones(tmp_path: Path) -> None:
    names = ('allowed_hosts = ["127.0.0.1", "localhost", "[::1]"]',
             'allowed_hosts = ["nobat.clinic.lan", "10.0.0.5:8080"]')
    async with page_server(tmp_path, names) as server:
        served = [(await exchange(server, http("GET", "/api/status", BEARER, host=host))).status
                  for host in ("nobat.clinic.lan:8443", "10.0.0.5:8080", "10.0.0.5:8081",
                               "127.0.0.1")]
    assert served == [200, 200, 400, 400]
