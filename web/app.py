"""The aiohttp application factory; the parts it reports on are handed in, never imported."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from db.engine import Database
from db.schema import current_revision, head_revision
from ivr.flow_store import FlowStore

log = logging.getLogger(__name__)
DATABASE = web.AppKey("database", Database)
FLOWS = web.AppKey("flows", FlowStore)
TOKEN = web.AppKey("token", str)
OPEN_PATHS = frozenset({"/healthz"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Everything but /healthz needs the token, in a header (never a query string in logs)."""
    if request.path in OPEN_PATHS:
        return await handler(request)
    token = request.app[TOKEN]
    if not token:
        return web.json_response({"error": "set web.token (or NOBAT_WEB_TOKEN) to use this"},
                                 status=403)
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        return web.json_response({"error": "token required"}, status=401,
                                 headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)


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


def flows_state(store: FlowStore) -> dict[str, object]:
    """The flow version in service and the last refused edit, for the page and the API."""
    return {"version": store.current().version, "loaded_at": store.loaded_at,
            "last_error": store.last_error}


async def get_flows(request: web.Request) -> web.Response:
    """Which flows serve calls now, and why the last edit was refused if it was."""
    return web.json_response(flows_state(request.app[FLOWS]))


async def reload_flows(request: web.Request) -> web.Response:
    """Reload the flows now (the page's button); a broken edit answers 422 with its lines."""
    store = request.app[FLOWS]
    changed = await store.reload("status page")
    body = {"changed": changed, **flows_state(store)}
    return web.json_response(body, status=422 if store.last_error else 200)


def make_app(database: Database, flows: FlowStore | None = None, token: str = ""
             ) -> web.Application:
    """Build the status application around an open database and the IVR's flows."""
    app = web.Application(middlewares=[require_token])
    app[DATABASE] = database
    app[TOKEN] = token
    app.router.add_get("/healthz", healthz)
    if flows is not None:
        app[FLOWS] = flows
        app.router.add_get("/api/flows", get_flows)
        app.router.add_post("/api/flows/reload", reload_flows)
    return app
