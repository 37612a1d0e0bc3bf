"""Probe: "The session cookie and the CSRF value are fixed HMACs of the token: the same for
every login, never expiring, still working after logout; the CSRF value in the page source
gives up a short token offline."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import sqlite3
from pathlib import Path

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


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def stored_sessions(folder: Path) -> list[tuple[str, str]]:
    """(id hash, CSRF value) of every session row in the instance's SQLite store."""
    with sqlite3.connect(folder / "nobat.db") as db:
        return list(db.execute("SELECT id_hash, csrf FROM web_session"))


def move_back(folder: Path, login: Login, column: str, delta: dt.timedelta) -> None:
    """Make a session older in the store, as time passing would."""
    with sqlite3.connect(folder / "nobat.db") as db:
        [(value,)] = db.execute(f"SELECT {column} FROM web_session WHERE id_hash = ?",
                                (sha256(login.cookie),))
        moved = dt.datetime.fromisoformat(value) - delta
        db.execute(f"UPDATE web_session SET {column} = ? WHERE id_hash = ?",
                   (moved.strftime("%Y-%m-%d %H:%M:%S.%f"), sha256(login.cookie)))


async def api_status(server: ServerProcess, login: Login) -> int:
    return (await exchange(server, http("GET", "/api/status", login.header))).status


async def test_every_login_gets_its_own_random_session_and_csrf_value(tmp_path: Path) -> None:
    async with page_server(tmp_path) as server:
        first, second = await log_in(server), await log_in(server)
    assert first.cookie != second.cookie and first.csrf != second.csrf
    derived = {hmac.new(TOKEN.encode(), purpose, hashlib.sha256).hexdigest()
               for purpose in (b"nobat-session", b"nobat-csrf")}
    assert not derived & {first.cookie, first.csrf, second.cookie, second.csrf}
    # The store holds each id's hash, never the id: a copy of it logs nobody in.
    assert sorted(stored_sessions(tmp_path)) == sorted(
        [(sha256(first.cookie), first.csrf), (sha256(second.cookie), second.csrf)])


async def test_logout_ends_the_session_for_a_copied_cookie(server: ServerProcess) -> None:
    login = await log_in(server)
    assert await api_status(server, login) == 200
    out = await post_form(server, "/logout", login)
    assert (out.status, out.header("Location")) == (303, "/login?e=logged_out")
    assert await api_status(server, login) == 401  # the copy an attacker kept
    page = await exchange(server, http("GET", "/?lang=en", login.header))
    assert (page.status, page.header("Location")) == (303, "/login?e=expired&lang=en")
    said = await exchange(server, http("GET", "/login?e=expired&lang=en"))
    assert "Your session has ended; log in again." in said.text


async def test_an_idle_session_and_an_old_one_end(tmp_path: Path) -> None:
    async with page_server(tmp_path) as server:
        idle, old, fresh = await log_in(server), await log_in(server), await log_in(server)
        move_back(tmp_path, idle, "last_seen_at", dt.timedelta(minutes=31))
        move_back(tmp_path, old, "created_at", dt.timedelta(hours=12, minutes=1))
        assert [await api_status(server, s) for s in (idle, old, fresh)] == [401, 401, 200]
    # Ended sessions are purged (here at the next start); the open one survives a restart.
    async with page_server(tmp_path) as server:
        assert [await api_status(server, s) for s in (idle, old, fresh)] == [401, 401, 200]
        assert [row[0] for row in stored_sessions(tmp_path)] == [sha256(fresh.cookie)]


async def test_the_csrf_value_belongs_to_its_session(server: ServerProcess) -> None:
    mine, other = await log_in(server), await log_in(server)
    crossed = await post_form(server, "/absences/lift", Login(mine.cookie, other.csrf),
                              ("closure", "1"))
    assert crossed.status == 403
    own = await post_form(server, "/absences/lift", mine, ("closure", "1"))
    assert (own.status, own.header("Location")) == (303, "/?notice=lift_missing")


async def test_instances_on_one_store_share_sessions_and_logouts(tmp_path: Path) -> None:
    async with page_server(tmp_path) as first:
        second_folder = tmp_path / "second"
        second_folder.mkdir()
        store = f"sqlite+aiosqlite:///{tmp_path / 'nobat.db'}"
        async with page_server(second_folder, ('url = "sqlite+aiosqlite:///nobat.db"',
                                               f'url = "{store}"')) as second:
            login = await log_in(first)
            assert await api_status(second, login) == 200
            assert (await post_form(second, "/logout", login)).status == 303
            assert await api_status(first, login) == 401
