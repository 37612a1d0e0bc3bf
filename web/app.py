"""The aiohttp application factory; the parts it reports on are handed in, never imported."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from clinic.calendar import parse_date, to_jalali
from db.booking import BookingService, Cancelled
from db.clinic_sync import lift_absence, record_absence
from db.figures import Figures
from ivr.flow_store import FlowStore
from web.auth import LOGIN_PAGE, TOKEN, csrf_value, login, logout, require_token
from web.metrics import Metrics
from web.page import TEXTS, environment, language
from web.status import Sources, Status, database_health, snapshot

SOURCES = web.AppKey("sources", Sources)
METRICS = web.AppKey("metrics", Metrics)
REFRESH_SECONDS = 10
PAGE = environment()


async def healthz(request: web.Request) -> web.Response:
    """Answer probes without a token: is the store reachable and its schema current."""
    state = await database_health(request.app[SOURCES].database)
    body: dict[str, object] = {"status": "ok" if state.ok else "error",
                               "database": state.database}
    if state.schema is not None:
        body["schema"] = state.schema
    return web.json_response(body, status=200 if state.ok else 503)


def flows_state(store: FlowStore) -> dict[str, object]:
    """The flow version in service and the last refused edit, for the page and the API."""
    return {"version": store.current().version, "loaded_at": store.loaded_at,
            "last_error": store.last_error}


def _flows(request: web.Request) -> FlowStore:
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
    raise web.HTTPSeeOther("/?" + urlencode(dict(request.query)))


def _range(request: web.Request) -> tuple[dt.date | None, dt.date | None]:
    """The heatmap's range from ?from=&to= (Jalali 1405/09/01 or ISO dates)."""
    first, last = (request.query.get(key, "").strip() for key in ("from", "to"))
    return (parse_date(first) if first else None, parse_date(last) if last else None)


async def _status(request: web.Request) -> tuple[Status, str | None]:
    """The snapshot for this request; a bad range falls back to the default and says why."""
    sources = request.app[SOURCES]
    try:
        return await snapshot(sources, *_range(request)), None
    except ValueError as exc:  # the range is checked before anything is read
        return await snapshot(sources), str(exc)


async def api_status(request: web.Request) -> web.Response:
    """The page's figures as JSON."""
    status, problem = await _status(request)
    if problem is not None:
        return web.json_response({"error": problem}, status=400)
    return web.json_response(status.as_json())


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format (scraped often: the heatmap's range is just today)."""
    sources = request.app[SOURCES]
    today = sources.clock().astimezone(sources.tz).date()
    status = await snapshot(sources, today, today, staff=False)
    states = await Figures(sources.database, sources.tz).consultation_states()
    body = request.app[METRICS].render(status, states)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST,
                                            "X-Content-Type-Options": "nosniff"})


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers={"X-Frame-Options": "DENY", "Cache-Control": "no-store",
                                 "Referrer-Policy": "no-referrer"})


def login_page(request: web.Request, message: str, status: int) -> web.Response:
    """The login form (also what a visitor without the token gets, with 401)."""
    lang = language(request.query.get("lang"))
    return _html(PAGE.get_template("login.html").render(
        lang=lang, t=TEXTS[lang], message=message or ("off" if status == 403 else ""),
        token_set=bool(request.app[TOKEN])), status)


async def page(request: web.Request) -> web.Response:
    """The status page, server-rendered, refreshing itself."""
    sources = request.app[SOURCES]
    lang = language(request.query.get("lang"))
    status, problem = await _status(request)
    profile = await BookingService(sources.database).clinic_profile()
    notice = request.query.get("notice")
    clinic = "" if profile is None else (profile.name if lang == "fa" else profile.name_en)
    query = {k: v for k, v in request.query.items() if k in ("from", "to", "lang")}
    other = {**query, "lang": "en" if lang == "fa" else "fa"}
    heat = status.heatmap
    shown = ((to_jalali(heat.first).strftime("%Y/%m/%d"),
              to_jalali(heat.last).strftime("%Y/%m/%d"))
             if lang == "fa" else (heat.first.isoformat(), heat.last.isoformat()))
    return _html(PAGE.get_template("status.html").render(
        lang=lang, t=TEXTS[lang], status=status, tz=sources.tz, clinic=clinic or "nobat",
        csrf=csrf_value(request.app[TOKEN]), refresh=REFRESH_SECONDS,
        query=urlencode(query), query_other_lang=urlencode(other),
        range_text=shown, range_error=problem,
        doctors=profile.doctors if profile is not None else (),
        notice=notice if notice in NOTICES else None,
        detail=request.query.get("detail", "")[:300]))


NOTICES = ("absence_recorded", "absence_error", "absence_lifted", "cancelled",
           "cancel_refused", "cancel_not_closed")
"""What a form on the page reports back through the redirect (?notice=...&detail=...)."""


def _back(request: web.Request, notice: str, detail: object) -> web.HTTPSeeOther:
    """Back to the page (keeping its language and range), saying what the form did."""
    query = {k: v for k, v in request.query.items() if k in ("from", "to", "lang")}
    return web.HTTPSeeOther("/?" + urlencode({**query, "notice": notice, "detail": detail}))


async def absence_from_page(request: web.Request) -> web.Response:
    """Record a doctor's absence (or a clinic closure): days closed from now on, and every
    patient booked on them is called (flows/absence.toml); nothing is cancelled here."""
    form = await request.post()
    doctor = str(form.get("doctor", "")).strip() or None
    reason = str(form.get("reason", "")).strip()[:200]
    try:
        first = parse_date(str(form.get("first", "")))
        last = parse_date(str(form.get("last", "")).strip() or str(form.get("first", "")))
        covered = await record_absence(request.app[SOURCES].database, doctor, first, last,
                                       reason)
    except ValueError as exc:
        raise _back(request, "absence_error", str(exc)) from None
    raise _back(request, "absence_recorded", covered)


async def lift_from_page(request: web.Request) -> web.Response:
    """Lift an absence recorded on the page; bookings it covered are no longer called about."""
    ident = str((await request.post()).get("closure", ""))
    lifted = ident.isdigit() and await lift_absence(request.app[SOURCES].database, int(ident))
    raise _back(request, "absence_lifted" if lifted else "absence_error",
                "" if lifted else "no such absence")


async def cancel_from_page(request: web.Request) -> web.Response:
    """The staff's decision on a booking left on a closed day: cancel it. Only such a
    booking: a stale page (the absence lifted since) or a forged id cancels nothing else."""
    sources = request.app[SOURCES]
    service = BookingService(sources.database)
    ident = str((await request.post()).get("appointment", ""))
    booking = await service.appointment(int(ident)) if ident.isdigit() else None
    if booking is None:
        raise _back(request, "cancel_refused", "no such booking")
    figures = Figures(sources.database, sources.tz)
    if not await figures.on_closed_day(booking.id, sources.clock()):
        raise _back(request, "cancel_not_closed", booking.code)
    result = await service.cancel(booking.id, booking.patient_phone, via="staff")
    if isinstance(result, Cancelled):
        raise _back(request, "cancelled", booking.code)
    raise _back(request, "cancel_refused", result.detail or result.reason.value)


def make_app(sources: Sources, token: str = "", metrics_: Metrics | None = None
             ) -> web.Application:
    """Build the status application around what it reports on."""
    app = web.Application(middlewares=[require_token])
    app[SOURCES] = sources
    app[TOKEN] = token
    app[METRICS] = metrics_ or Metrics()
    app[LOGIN_PAGE] = login_page
    app.router.add_get("/healthz", healthz)
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
