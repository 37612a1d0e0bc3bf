"""The aiohttp application factory; the parts it reports on are handed in, never imported."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from clinic.calendar import to_jalali
from db.availability import ClinicProfile, DoctorView
from db.booking import Cancelled, Refusal
from db.clinic_sync import lift_absence, record_absence
from db.figures import Figures
from db.practices import PracticeScope, practices
from db.unreadable import RowUnreadable, named
from db.web_sessions import SessionLifetime, WebSessionStore
from web.auth import SCOPE, SESSION, SESSIONS, THROTTLE, login, logout, require_token
from web.guards import HEALTHZ, STATIC, guard, html, protect
from web.inputs import ID, absence_days, kept_query, page_range, read_form, record_id
from web.metrics import Metrics
from web.page import TEMPLATES, TEXTS, language
from web.problems import BadInput, explain
from web.settings import SETTINGS, PageSettings
from web.status import FlowsView, Sources, Status, health, snapshot
from web.throttle import LoginThrottle

log = logging.getLogger(__name__)
SOURCES = web.AppKey("sources", Sources)
METRICS = web.AppKey("metrics", Metrics)
REFRESH_SECONDS = 10
PURGE_EVERY_S = 600.0
"""How often each instance deletes ended sessions from the store."""
MAX_BODY = 64 * 1024
"""The page's forms are a few hundred bytes; anything far larger is refused (413)."""


async def healthz(request: web.Request) -> web.Response:
    """Answer probes without a token: 503 when the store is unreachable or behind, or when
    consultations are due while the dialer that rings them is down (a refused flow edit or a
    practice off the line is "flows": "error", still 200: the line serves). A probe by
    another Host name (a load balancer's, by address) learns only ok or not; the others get
    each part's state, but no error text, which only the token's holders read (/api/status,
    the page): a Host header is the client's to choose."""
    state = await health(request.app[SOURCES])
    body: dict[str, object] = {"status": "ok" if state.serving else "error"}
    if request.app[SETTINGS].allows_host(request.headers.get("Host")):
        body["database"] = state.database
        if state.schema is not None:
            body["schema"] = state.schema
        body["ami"] = state.ami
        body["flows"] = "ok" if state.flows_ok else "error"
        body["parts"] = {part.name: {"state": part.state, "since": part.since.isoformat(),
                                     "restarts": part.restarts}
                         for part in state.parts}
        if state.due_unserved:
            body["due_unserved"] = state.due_unserved
    return web.json_response(body, status=200 if state.serving else 503)


def flows_state(store: FlowsView) -> dict[str, object]:
    """The flow version in service and the last refused edit, for the page and the API."""
    return {"version": store.current().version, "loaded_at": store.loaded_at,
            "last_error": store.last_error, "practices_off": named(store.left_out) or None}


def _admin_only(request: web.Request) -> None:
    """The platform's own routes (the shared flows, /metrics across practices) refuse a
    practice's token: 403, since the route itself is no secret."""
    if request[SCOPE].practice is not None:
        raise BadInput("admin_only", status=403)


def _mine(request: web.Request) -> PracticeScope | None:
    """The practice the request may see; None: every practice (the platform admin)."""
    return request[SCOPE].practice


def _not_mine(request: web.Request, fallback: web.HTTPSeeOther) -> Exception:
    """What an id outside the request's practice gets: 404 for a practice's staff, whether
    it is another practice's or nobody's (so the answer tells neither); the admin's page
    says it is gone, as it always has."""
    return fallback if _mine(request) is None else BadInput("not_found", status=404)


def _flows(request: web.Request) -> FlowsView:
    _admin_only(request)
    store = request.app[SOURCES].flows
    if store is None:
        raise web.HTTPNotFound(text="this instance serves no flows")
    return store


async def get_flows(request: web.Request) -> web.Response:
    """Which flows serve calls now, and why the last edit was refused if it was."""
    return web.json_response(flows_state(_flows(request)))


async def reload_flows(request: web.Request) -> web.Response:
    """Reload the flows now; a broken edit answers 422 with its lines."""
    store = _flows(request)
    changed = await store.reload("status page")
    body = {"changed": changed, **flows_state(store)}
    return web.json_response(body, status=422 if store.last_error else 200)


async def reload_from_page(request: web.Request) -> web.Response:
    """The page's reload button: reload, then show the page (with the error if refused)."""
    await _flows(request).reload("status page")
    raise web.HTTPSeeOther("/?" + urlencode(kept_query(request.query)))


async def _status(request: web.Request) -> tuple[Status, BadInput | None]:
    """The snapshot for this request; a bad range falls back to the default and says why."""
    sources, practice = request.app[SOURCES], _mine(request)
    try:
        return await snapshot(sources, *page_range(request.query), practice=practice), None
    except BadInput as problem:  # the range is checked before anything is read
        return await snapshot(sources, practice=practice), problem


async def api_status(request: web.Request) -> web.Response:
    """The page's figures as JSON (a bad range is a 400, answered by the guard)."""
    return web.json_response((await snapshot(
        request.app[SOURCES], *page_range(request.query), practice=_mine(request))).as_json())


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format (scraped often: the heatmap's range is just today); every
    practice's figures, so the platform admin's alone."""
    _admin_only(request)
    sources = request.app[SOURCES]
    today = sources.clock().astimezone(sources.tz).date()
    status = await snapshot(sources, today, today, staff=False)
    figures = Figures(sources.database, sources.tz)
    body = request.app[METRICS].render(status, await figures.consultation_states(),
                                       await figures.patient_calls_by_practice(today))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def page(request: web.Request) -> web.Response:
    """The status page, server-rendered, refreshing itself (400 with the reason, and the
    default range, when the range asked for is not one)."""
    sources = request.app[SOURCES]
    lang = language(request.query.get("lang"))
    status, problem = await _status(request)
    notice = request.query.get("notice")
    number = request.query.get("n", "")
    names = {key: p.name if lang == "fa" else p.name_en for key, p in status.practices.items()}
    clinic = next(iter(names.values())) if len(names) == 1 else ""
    query = kept_query(request.query)
    other = {**query, "lang": "en" if lang == "fa" else "fa"}
    heat = status.heatmap
    shown = ((to_jalali(heat.first).strftime("%Y/%m/%d"),
              to_jalali(heat.last).strftime("%Y/%m/%d"))
             if lang == "fa" else (heat.first.isoformat(), heat.last.isoformat()))
    session = request.get(SESSION)
    return html(TEMPLATES.get_template("status.html").render(
        lang=lang, t=TEXTS[lang], status=status, tz=sources.zone(_mine(request)),
        clinic=clinic or "nobat",
        csrf=session.csrf if session is not None else "", refresh=REFRESH_SECONDS,
        query=urlencode(query), query_other_lang=urlencode(other),
        range_text=shown, range_error=None if problem is None else explain(problem, lang),
        doctors=await _doctors(sources, list(names)), practice_names=names,
        several=len(names) > 1, admin=_mine(request) is None,
        notice=notice if notice in NOTICES else None,
        number=number if ID.fullmatch(number) else ""), 200 if problem is None else 400)


async def _doctors(sources: Sources, keys: list[str]) -> dict[str, tuple[DoctorView, ...]]:
    """Each practice's doctors, for the absence form."""
    doctors = {}
    for key in keys:
        try:
            profile = await _profile(sources, key)
        except RowUnreadable:  # that practice's form offers no doctor; the health line says why
            profile = None
        doctors[key] = profile.doctors if profile is not None else ()
    return doctors


async def _profile(sources: Sources, key: str | None) -> ClinicProfile | None:
    """A practice's words and doctors; None before any clinic is loaded."""
    service = sources.booking(key)
    return None if service is None else await service.clinic_profile()


NOTICES = ("absence_recorded", "absence_lifted", "lift_missing", "cancelled",
           "cancel_missing", "cancel_call_live", "cancel_not_closed")
"""What a form on the page reports back through the redirect: ?notice=<one of these> and
?n=<a count, or the code of a booking just cancelled; digits only>. Codes, never text: a
link someone sends cannot make the page say anything it would not say itself. A booking
still live is not named by its code, which now proves a caller (it would stay in the
browser's history)."""


def _back(request: web.Request, notice: str, number: object = "") -> web.HTTPSeeOther:
    """Back to the page (keeping its language and range), saying what the form did."""
    told = {"notice": notice, **({"n": str(number)} if number != "" else {})}
    return web.HTTPSeeOther("/?" + urlencode({**kept_query(request.query), **told}))


async def absence_from_page(request: web.Request) -> web.Response:
    """Record a doctor's absence (or a clinic closure): days closed from today on, at most a
    year, and every patient booked on them is called (flows/absence.toml); nothing is
    cancelled here."""
    sources = request.app[SOURCES]
    form = await read_form(request)
    doctor = form.get("doctor", "").strip() or None
    practice = await _absence_practice(request, form.get("practice", "").strip())
    try:
        profile = await _profile(sources, practice)
    except RowUnreadable:
        raise BadInput("row_unreadable") from None
    if profile is None:
        raise BadInput("no_clinic")
    today = sources.clock().astimezone(profile.tz).date()  # the practice's own day
    first, last = absence_days(form.get("first", ""), form.get("last", ""), today)
    if doctor is not None and doctor not in {d.key for d in profile.doctors}:
        raise BadInput("no_doctor", doctor)
    try:
        covered = await record_absence(sources.database, doctor, first, last,
                                       form.get("reason", "").strip()[:200], practice)
    except ValueError:  # the doctor left the clinic file between the check and the write
        raise BadInput("no_doctor", doctor or "") from None
    raise _back(request, "absence_recorded", covered)


async def _absence_practice(request: web.Request, asked: str) -> str:
    """Whose absence a form records: a practice's staff their own (naming another is a
    404); the admin the practice the form names, else the first one."""
    mine = _mine(request)
    if mine is not None:
        if asked not in ("", mine.key):
            raise BadInput("not_found", status=404)
        return mine.key
    keys = [p.key for p in await practices(request.app[SOURCES].database)]
    if asked and asked not in keys:
        raise BadInput("not_found", status=404)
    return asked or (keys[0] if keys else "")


async def lift_from_page(request: web.Request) -> web.Response:
    """Lift an absence recorded on the page; bookings it covered are no longer called about.
    A practice's staff lift only their own practice's."""
    ident = record_id((await read_form(request)).get("closure", ""))
    mine = _mine(request)
    lifted = await lift_absence(request.app[SOURCES].database, ident,
                                None if mine is None else mine.id)
    if not lifted:
        raise _not_mine(request, _back(request, "lift_missing"))
    raise _back(request, "absence_lifted")


async def cancel_from_page(request: web.Request) -> web.Response:
    """The staff's decision on a booking left on a closed day: cancel it. Only such a
    booking: a stale page (the absence lifted since) or a forged id cancels nothing else.
    The configured rules apply, but for the office the change cut-off does not (see
    BookingService.cancel)."""
    sources, mine = request.app[SOURCES], _mine(request)
    ident = record_id((await read_form(request)).get("appointment", ""))
    figures = Figures(sources.database, sources.zone(mine), None if mine is None else mine.id)
    practice = await figures.practice_of(ident)
    service = None if practice is None else sources.booking(practice)
    booking = None if service is None else await service.appointment(ident)
    if service is None or booking is None:
        raise _not_mine(request, _back(request, "cancel_missing"))
    if not await figures.on_closed_day(booking.id, sources.clock()):
        raise _back(request, "cancel_not_closed")
    result = await service.cancel(booking.id, booking.patient_phone, via="staff")
    if isinstance(result, Cancelled):
        raise _back(request, "cancelled", booking.code)
    raise _back(request, "cancel_missing" if result.reason is Refusal.NOT_FOUND
                else "cancel_call_live")


async def _purge_sessions(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: delete ended sessions now and every PURGE_EVERY_S while serving."""

    async def purge_forever() -> None:
        while True:
            try:
                await app[SESSIONS].purge()
            except Exception as exc:  # the store is away: try again next time
                log.warning("status page: ended sessions not purged: %s", type(exc).__name__)
            await asyncio.sleep(PURGE_EVERY_S)

    task = asyncio.create_task(purge_forever())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def make_app(sources: Sources, settings: PageSettings | None = None,
             metrics_: Metrics | None = None) -> web.Application:
    """Build the status application around what it reports on and its settings."""
    settings = settings or PageSettings()
    app = web.Application(middlewares=[guard, require_token], client_max_size=MAX_BODY)
    app[SOURCES] = sources
    app[SETTINGS] = settings
    app[SESSIONS] = WebSessionStore(sources.database,
                                    SessionLifetime(settings.session_idle, settings.session_max))
    app[THROTTLE] = LoginThrottle(settings.login_lock_max.total_seconds())
    app[METRICS] = metrics_ or Metrics()
    app.on_response_prepare.append(protect)
    app.cleanup_ctx.append(_purge_sessions)
    app.router.add_static(STATIC, Path(__file__).with_name("static"))
    app.router.add_get(HEALTHZ, healthz)
    app.router.add_route("*", "/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", page)
    app.router.add_post("/reload", reload_from_page)
    app.router.add_post("/absences", absence_from_page)
    app.router.add_post("/absences/cancel", cancel_from_page)
    app.router.add_post("/absences/lift", lift_from_page)
    app.router.add_get("/api/status", api_status)
    app.router.add_get("/api/flows", get_flows)
    app.router.add_post("/api/flows/reload", reload_flows)
    app.router.add_get("/metrics", metrics)
    return app
