"""`nobat serve` as a user starts it: one command, a migrated store, the clinic loaded, /healthz."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from db.booking import BookingService
from db.engine import Database
from db.schema import head_revision
from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess, demo_copy

ROOT = Path(__file__).resolve().parents[1]


async def get_health(server: ServerProcess) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{server.base_url}/healthz") as reply:
        return reply.status, await reply.json()


async def assert_healthy(server: ServerProcess) -> None:
    """/healthz says all is well, with the parts a server without AMI runs."""
    status, body = await get_health(server)
    assert status == 200, body
    assert (body["status"], body["database"], body["schema"], body["ami"], body["flows"]) == (
        "ok", "ok", head_revision(), "off", "ok")
    assert {name: part["state"] for name, part in body["parts"].items()} == {
        "fastagi": "running", "status_page": "running", "flow_watcher": "running"}


async def test_serve_on_the_embedded_default_creates_the_store_and_loads_the_clinic(
        tmp_path: Path) -> None:
    server = await ServerProcess(demo_copy(tmp_path)).start()
    try:
        await assert_healthy(server)
        assert server.base_url.startswith("http://127.0.0.1:")
    finally:
        assert await server.stop() == 0
    assert (tmp_path / "nobat.db").exists()
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'nobat.db'}")
    try:
        assert len(await BookingService(database).doctors()) == 5
    finally:
        await database.close()
    assert any("clinic file" in line and "doctor dr-ahmadi added" in line for line in server.log)
    assert any("stopping" in line for line in server.log)


async def test_a_broken_clinic_file_is_logged_and_serving_goes_on(tmp_path: Path) -> None:
    server = await ServerProcess(demo_copy(tmp_path, clinic="[clinic]\nphone = 12\n")).start()
    try:
        assert (await get_health(server))[0] == 200
    finally:
        await server.stop()
    text = "\n".join(server.log)
    assert "not loaded; serving what the database holds" in text
    assert (f"{tmp_path / 'clinic.toml'}:2: clinic.phone: expected the clinic's number, "
            "shown to patients as caller id, got a whole number 12") in text


async def test_json_logs_come_on_stdout_one_object_a_line_with_numbers_masked(
        tmp_path: Path) -> None:
    config = demo_copy(tmp_path, clinic='[clinic]\nphone = "0912123456789"\n')
    config.write_text(config.read_text().replace('log_format = "text"', 'log_format = "json"'))
    server = await ServerProcess(config, json_logs=True).start()
    try:
        assert (await get_health(server))[0] == 200
    finally:
        assert await server.stop() == 0
    entries = [json.loads(line) for line in server.log]
    assert all(set(entry) >= {"time", "level", "logger", "message"} for entry in entries)
    [refused] = [e for e in entries if "not loaded" in e["message"]]
    assert refused["level"] == "ERROR" and "*******6789" in refused["message"]
    assert "0912123456789" not in "\n".join(server.log)
    assert any(e["message"].startswith("status page listening") for e in entries)


async def test_serve_on_postgresql_from_the_environment(tmp_path: Path,
                                                        postgres: PostgresServer) -> None:
    url = await postgres.create_database()
    server = await ServerProcess(demo_copy(tmp_path), env={"NOBAT_DATABASE_URL": url}).start()
    try:
        await assert_healthy(server)
    finally:
        assert await server.stop() == 0
    assert not (tmp_path / "nobat.db").exists()
    assert any("postgresql+asyncpg://postgres@127.0.0.1" in line for line in server.log)


async def test_a_busy_port_is_a_clear_startup_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = demo_copy(tmp_path, port=taken.getsockname()[1])
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nobat", "-c", str(config), "serve",
            stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert "nobat: status page cannot listen on 127.0.0.1:" in err.decode()


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["clinic", "load", "--help"],
                                  ["clinic", "check", "--help"], ["db", "status", "--help"],
                                  ["prompts", "build", "--help"], ["flows", "check", "--help"],
                                  ["try", "--help"]])
async def test_every_command_explains_itself(argv: list[str]) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nobat", *argv, stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    assert process.returncode == 0
    assert out.decode().startswith("usage: nobat")
