"""The prober's side of the wire: `nobat serve` started with a token, raw HTTP/1.1 written
byte for byte to a socket (bytes no HTTP client would send), and a login as a browser
makes it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.support.server import ServerProcess, demo_copy, edit_config

TOKEN = "probe-token-Kq2w-9Zt7"
COOKIE = "nobat_session"


@asynccontextmanager
async def page_server(folder: Path, *edits: tuple[str, str], token: str = TOKEN
                      ) -> AsyncIterator[ServerProcess]:
    """`nobat serve` on the demo clinic in `folder` (SQLite: folder/nobat.db), config.toml
    changed by `edits`, the page's token from the environment."""
    config = demo_copy(folder)
    edit_config(config, *edits)
    server = await ServerProcess(config, env={"NOBAT_WEB_TOKEN": token}).start()
    try:
        yield server
    finally:
        assert await server.stop() == 0


@dataclass(frozen=True)
class Reply:
    """What came back on the socket."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The last value of a header, by name in any case."""
        found = [value for key, value in self.headers if key.lower() == name.lower()]
        return found[-1] if found else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def http(method: str, path: str, *headers: tuple[str, bytes | str], body: bytes = b"",
         host: bytes | str = b"127.0.0.1") -> bytes:
    """One request as bytes: values may hold any byte; Host first unless `host` is ""."""
    lines = [f"{method} {path} HTTP/1.1".encode()]
    if host:
        lines.append(b"Host: " + (host.encode() if isinstance(host, str) else host))
    for name, value in (*headers, ("Connection", "close")):
        lines.append(name.encode() + b": " + (value.encode() if isinstance(value, str)
                                               else value))
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def form(*pairs: tuple[str, bytes | str]) -> tuple[tuple[str, str], bytes]:
    """A urlencoded body (values sent as given, bytes and all) and its Content-Type."""
    body = b"&".join(name.encode() + b"=" + (value.encode() if isinstance(value, str)
                                             else value) for name, value in pairs)
    return ("Content-Type", "application/x-www-form-urlencoded"), body


async def exchange(server: ServerProcess, request: bytes, local: str = "127.0.0.1") -> Reply:
    """Send `request` from address `local` and read the reply until the server closes."""
    host, port = server.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=(local, 0))
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = [(name, value.strip()) for name, _, value in (line.partition(":")
                                                            for line in lines)]
    assert ("Transfer-Encoding", "chunked") not in headers
    return Reply(int(status_line.split()[1]), headers, body)


@dataclass(frozen=True)
class Login:
    """A browser's login: its session cookie and the CSRF value its page carries."""

    cookie: str
    csrf: str

    @property
    def header(self) -> tuple[str, str]:
        """The Cookie header this browser sends."""
        return ("Cookie", f"{COOKIE}={self.cookie}")


async def log_in(server: ServerProcess, token: str = TOKEN) -> Login:
    """Post the login form and read the page's CSRF value, as a browser would."""
    jar = aiohttp.DummyCookieJar()
    async with aiohttp.ClientSession(cookie_jar=jar) as client:
        async with client.post(server.base_url + "/login", data={"token": token},
                               allow_redirects=False) as reply:
            assert reply.status == 303, reply.status
            cookie = reply.cookies[COOKIE].value
        async with client.get(server.base_url + "/",
                              headers={"Cookie": f"{COOKIE}={cookie}"}) as reply:
            assert reply.status == 200, reply.status
            page = await reply.text()
    return Login(cookie, page.split('name="csrf" value="', 1)[1].split('"', 1)[0])


def traceback_free(reply: Reply) -> bool:
    """No Python error detail in what a client was sent."""
    return not any(word in reply.body for word in (b"Traceback", b'File "', b"UnicodeEncode",
                                                   b"UnicodeDecode"))


async def post_form(server: ServerProcess, path: str, login: Login,
                    *pairs: tuple[str, bytes | str], headers: Sequence[tuple[str, str]] = (),
                    host: str = "127.0.0.1") -> Reply:
    """A form of the page posted with the session's cookie and CSRF value."""
    content_type, body = form(("csrf", login.csrf), *pairs)
    return await exchange(server, http("POST", path, content_type, login.header, *headers,
                                       body=body, host=host))
