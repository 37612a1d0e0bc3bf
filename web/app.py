"""The aiohttp application factory; the parts it reports on are handed in, never imported."""

from __future__ import annotations

import logging

from aiohttp import web

from db.engine import Database
from db.schema import current_revision, head_revision

log = logging.getLogger(__name__)
DATABASE = web.AppKey("database", Database)


async def healthz(request: web.Request) -> web.Response:
    """Answer probes without a token: is the store reachable and its schema current."""
    database = request.app[DATABASE]
    try:
        revision = await current_revision(database)
    except Exception as exc:
        log.warning("health check: database unreachable: %s", type(exc).__name__)
        return web.json_response({"status": "error", "database": "unreachable"}, status=503)
    current = revision == head_revision()
    body = {"status": "ok" if current else "error",
            "database": "ok" if current else "schema behind",
            "schema": revision}
    return web.json_response(body, status=200 if current else 503)


def make_app(database: Database) -> web.Application:
    """Build the status application around an open database."""
    app = web.Application()
    app[DATABASE] = database
    app.router.add_get("/healthz", healthz)
    return app
