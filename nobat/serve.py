"""`nobat serve`: open the store, bring its schema up, load the clinic, start every part."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal

from aiohttp import web

from bridge.dialer import Dialer
from clinic.staff_toml import StaffFileError
from db.engine import Database
from db.schema import upgrade
from ivr.fastagi import FastAgiServer
from ivr.flow_store import FlowStore
from ivr.inbound import InboundLine
from nobat.bridge_wiring import build_dialer
from nobat.clinic_loading import load_clinics
from nobat.config import Config
from nobat.ivr_wiring import build_line, fastagi_server
from nobat.malloc_tuning import fix_mmap_threshold
from nobat.page_token import TOKEN_FILE, TokenFileError, first_run_token, token_folder
from nobat.status_views import status_sources
from nobat.supervisor import Supervisor
from protocol.listening import Listener, Opener
from web.app import make_app
from web.metrics import Metrics
from web.settings import OneTimeLogin, PageSettings
from web.status import AMI_PART, DIALER_PART, FASTAGI_PART, PAGE_PART, PLANNER_PART

log = logging.getLogger("nobat")


class StartupError(Exception):
    """A part could not start; the message says which and why."""


async def open_database(config: Config) -> Database:
    """Open the store and migrate it, or explain why not."""
    database = Database.from_url(config.database.url, pool_size=config.database.pool_size,
                                 busy_timeout_s=config.database.busy_timeout_seconds)
    try:
        revision = await upgrade(database)
    except Exception as exc:
        await database.close()
        raise StartupError(f"cannot open the database {config.database.safe_url}: "
                           f"{type(exc).__name__}: {exc}") from exc
    log.info("database %s at schema %s", config.database.safe_url, revision)
    return database


async def load_configured_clinic(config: Config, database: Database) -> None:
    """Load the clinic file or folder named in config, practice by practice; a bad file is
    logged, and its practice serves what the database holds."""
    path = config.server.clinic_file
    if path is None:
        return
    try:
        loads = await load_clinics(database, path)
    except StaffFileError as exc:
        log.error("clinic files not loaded; serving what the database holds:\n%s", exc)
        return
    for load in loads:
        if load.failure is not None:
            log.error("clinic file %s not loaded; serving what the database holds:\n%s",
                      load.file, load.failure)
        else:
            log.info("clinic file %s: %s", load.file, load.summary())


async def start_ivr(config: Config, database: Database) -> tuple[FastAgiServer, InboundLine]:
    """Check the flows and open the FastAGI port; a broken flow stops start-up with its lines."""
    try:
        line = await build_line(config, database)
    except StaffFileError as exc:
        raise StartupError(f"the flows have problems:\n{exc}") from exc
    server = fastagi_server(config, line)
    try:
        port = await server.start(config.fastagi.host, config.fastagi.port)
    except OSError as exc:
        raise StartupError(f"FastAGI cannot listen on {config.fastagi.host}:"
                           f"{config.fastagi.port}: {exc.strerror}") from exc
    log.info("FastAGI listening on %s:%s (AGI(agi://%s:%s/ivr))", config.fastagi.host, port,
             config.fastagi.host, port)
    if not config.fastagi.secret:
        log.warning("fastagi.secret (or NOBAT_FASTAGI_SECRET) is not set: every FastAGI "
                    "request is refused until it is, and as NOBAT_FASTAGI_SECRET in the "
                    "dialplan (asterisk/README.md)")
    return server, line


def page_opener(runner: web.AppRunner) -> Opener:
    """Opens the status page's socket on the runner's aiohttp server (as TCPSite would, but
    as a Listener the supervisor can open again)."""
    handler = runner.server
    if handler is None:
        raise RuntimeError("the page's runner is not set up")

    async def opener(host: str, port: int) -> asyncio.Server:
        return await asyncio.get_running_loop().create_server(handler, host, port)

    return opener


def page_settings(config: Config) -> PageSettings:
    """The status page's part of config.toml, in the page's own terms; with no token set,
    the one a first run made beside the database, and a link that logs in once."""
    web_ = config.web
    token, made = web_.token.reveal(), False
    if not token:
        try:
            token, _ = first_run_token(token_folder(config))
        except TokenFileError as exc:
            raise StartupError(str(exc)) from exc
        made = True
    return PageSettings(
        token=token, allowed_hosts=web_.allowed_hosts,
        public_url=web_.public_url,
        session_idle=dt.timedelta(minutes=web_.session_idle_minutes),
        session_max=dt.timedelta(hours=web_.session_max_hours),
        login_lock_max=dt.timedelta(seconds=web_.login_lock_max_seconds),
        token_made=made, once=OneTimeLogin() if made else None)


def _reachable(host: str) -> str:
    """How a browser on this machine names a listening address: loopback for a wildcard
    (which the page's Host check would refuse), IPv6 in brackets."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def reload_on_signal(store: FlowStore, tasks: set[asyncio.Task[bool]]) -> None:
    """SIGHUP reloads the flows, as daemons do; the task is kept until it finishes."""
    task = asyncio.create_task(store.reload("SIGHUP"))
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def serve(config: Config) -> None:
    """Run until SIGTERM or SIGINT, then close everything in order."""
    fix_mmap_threshold()
    database = await open_database(config)
    ivr: FastAgiServer | None = None
    line: InboundLine | None = None
    dialer: Dialer | None = None
    runner: web.AppRunner | None = None
    page: Listener | None = None
    parts = Supervisor()
    try:
        await load_configured_clinic(config, database)
        ivr, line = await start_ivr(config, database)
        flows = line.flows
        dialer = await build_dialer(config, database)
        metrics = Metrics()
        settings = page_settings(config)
        runner = web.AppRunner(make_app(status_sources(database, ivr, line, dialer, metrics,
                                                       parts),
                                        settings, metrics),
                               access_log=None)
        await runner.setup()
        page = Listener("the status page", page_opener(runner), config.web.host,
                        config.web.port)
        try:
            bound = await page.open()
        except OSError as exc:
            raise StartupError(f"status page cannot listen on {config.web.host}:"
                               f"{config.web.port}: {exc.strerror}") from exc
        for host, port in bound:
            log.info("status page listening on http://%s:%s/", host, port)
            if settings.once is not None:
                base = config.web.public_url.rstrip("/") or f"http://{_reachable(host)}:{port}"
                log.warning("status page: log in at %s/login?once=%s (once, within 15 "
                            "minutes; the token itself is in %s)", base, settings.once.code,
                            token_folder(config) / TOKEN_FILE)
        parts.add(FASTAGI_PART, ivr.serve)
        parts.add(PAGE_PART, page.serve)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if dialer is not None:
            await dialer.ami.start()
            parts.add(AMI_PART, dialer.ami.keep)
            parts.add(DIALER_PART, dialer.run, lambda: dialer.trouble if dialer else None)
            if dialer.patient_calls is not None:
                parts.add(PLANNER_PART, dialer.plan,
                          lambda: dialer.planning_trouble if dialer else None)
            log.info("dialling consultations through AMI at %s:%s as %s", config.ami.host,
                     config.ami.port, config.ami.username)
        reloads: set[asyncio.Task[bool]] = set()
        loop.add_signal_handler(signal.SIGHUP, reload_on_signal, flows, reloads)
        if config.ivr.watch_seconds > 0:
            parts.add("flow_watcher", lambda: flows.watch(config.ivr.watch_seconds))
        await stop.wait()
        log.info("stopping")
    finally:
        await parts.close()
        if dialer is not None:
            await dialer.close()
            await dialer.ami.close()
        if ivr is not None:
            await ivr.close()
        if line is not None:
            await line.call_log.close()
        if page is not None:
            page.close()
        if runner is not None:
            await runner.cleanup()
        await database.close()
