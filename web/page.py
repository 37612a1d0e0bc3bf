"""The status page in Persian (right to left, Jalali dates, Persian digits) or English.

Jinja2 renders it with autoescaping on, so anything that came from a caller or from staff
data (a doctor's name, a flow error) reaches the browser as text, never as markup.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2

from clinic.calendar import WEEKDAY_FA, Weekday, format_jalali

LANGUAGES = ("fa", "en")
_PERSIAN_DIGITS = str.maketrans("0123456789.", "۰۱۲۳۴۵۶۷۸۹٫")

TEXTS: dict[str, dict[str, str]] = {
    "fa": {
        "title": "وضعیت خط تلفن", "health": "سلامت", "now": "اکنون", "next": "نوبت‌های بعدی",
        "today": "امروز", "heatmap": "تماس‌های ورودی بر حسب روز و ساعت",
        "minutes": "دقیقه‌های مشاوره در روز", "database": "پایگاه داده",
        "fastagi": "خط ورودی (FastAGI)",
        "ami": "اتصال به Asterisk (AMI)", "flows": "نسخهٔ منوها", "flows_error": "خطای آخرین ویرایش",
        "ivr_calls": "تماس‌های در جریان", "consultations_live": "مشاوره‌های در جریان",
        "caller": "تماس‌گیرنده", "step": "مرحله", "elapsed": "گذشته", "doctor": "پزشک",
        "patient": "بیمار", "state": "وضعیت", "booked": "وقت رزرو", "due": "زمان",
        "countdown": "مانده", "attempt": "تلاش", "calls": "تماس‌های دریافتی",
        "bookings": "نوبت‌های تازه", "reschedules": "تغییر نوبت", "cancellations": "لغو نوبت",
        "consultation_minutes": "دقیقهٔ مشاوره", "completed_consultations": "مشاورهٔ انجام‌شده",
        "failed": "مشاوره‌های ناموفق", "none": "هیچ", "from": "از", "to": "تا", "show": "نمایش",
        "reload": "بارگذاری دوبارهٔ منوها", "logout": "خروج", "switch": "English",
        "login": "ورود", "token": "رمز دسترسی", "login_wrong": "رمز درست نیست.",
        "login_off": "رمز دسترسی در config.toml تنظیم نشده است (web.token).",
        "hour": "ساعت", "weekday": "روز", "total": "جمع", "minute_unit": "دقیقه",
        "ok": "سالم", "problem": "مشکل", "bad_range": "بازهٔ نادرست",
    },
    "en": {
        "title": "Phone line status", "health": "Health", "now": "Now", "next": "Next",
        "today": "Today", "heatmap": "Inbound calls by weekday and hour",
        "minutes": "Consultation minutes by day", "database": "Database",
        "fastagi": "Inbound line (FastAGI)", "ami": "Asterisk link (AMI)",
        "flows": "Flow version", "flows_error": "Last edit's error",
        "ivr_calls": "Calls in progress", "consultations_live": "Consultations in progress",
        "caller": "Caller", "step": "Step", "elapsed": "Elapsed", "doctor": "Doctor",
        "patient": "Patient", "state": "State", "booked": "Booked", "due": "Due",
        "countdown": "In", "attempt": "Attempt", "calls": "Calls received",
        "bookings": "New bookings", "reschedules": "Reschedules",
        "cancellations": "Cancellations", "consultation_minutes": "Consultation minutes",
        "completed_consultations": "Consultations held", "failed": "Failed consultations",
        "none": "None", "from": "From", "to": "To", "show": "Show",
        "reload": "Reload the flows", "logout": "Log out", "switch": "فارسی",
        "login": "Log in", "token": "Access token", "login_wrong": "That token is not right.",
        "login_off": "No access token is set in config.toml (web.token).",
        "hour": "Hour", "weekday": "Day", "total": "Total", "minute_unit": "min",
        "ok": "OK", "problem": "Problem", "bad_range": "Wrong range",
    },
}

STATES: dict[str, dict[str, str]] = {
    "fa": {"dialling": "در حال تماس", "bridged": "در گفتگو", "scheduled": "در انتظار",
           "retry_wait": "منتظر تلاش دوباره", "ok": "سالم", "listening": "آماده",
           "connected": "وصل", "connecting": "در حال اتصال", "auth_failed": "رمز AMI نادرست",
           "stopped": "متوقف", "off": "خاموش (بدون تنظیم)", "unreachable": "در دسترس نیست",
           "schema behind": "نسخهٔ پایگاه داده قدیمی است"},
    "en": {"retry_wait": "waiting to retry", "auth_failed": "wrong AMI secret",
           "off": "off (not configured)", "schema behind": "schema behind"},
}


def language(requested: str | None) -> str:
    """Persian unless English was asked for."""
    return requested if requested in LANGUAGES else "fa"


def digits(value: object, lang: str) -> str:
    """Numbers in the reader's digits."""
    text = str(value)
    return text.translate(_PERSIAN_DIGITS) if lang == "fa" else text


def clock(moment: dt.datetime, tz: ZoneInfo, lang: str) -> str:
    """A time of day in the clinic's zone."""
    return digits(moment.astimezone(tz).strftime("%H:%M"), lang)


def span(seconds: int | None, lang: str) -> str:
    """Elapsed or remaining time as [-]h:mm:ss or m:ss."""
    if seconds is None:
        return "–"
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    hours, rest = divmod(seconds, 3600)
    text = f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
    return digits(sign + text, lang)


def weekday_name(day: Weekday, lang: str) -> str:
    """A weekday's name, Saturday first."""
    return WEEKDAY_FA[day] if lang == "fa" else day.name.title()


def state_name(state: str, lang: str) -> str:
    """A state word for the reader."""
    return STATES[lang].get(state, state.replace("_", " "))


def heat(count: int, peak: int) -> str:
    """A cell's colour: the busier, the deeper (people read colour faster than numbers)."""
    share = 0.0 if peak == 0 else count / peak
    return f"rgba(192, 57, 43, {0.08 + 0.92 * share:.2f})" if count else "transparent"


def environment() -> jinja2.Environment:
    """Templates from web/templates with autoescaping and the page's filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True)
    env.globals.update(digits=digits, clock=clock, span=span, jalali=format_jalali,
                       weekday_name=weekday_name, state_name=state_name, heat=heat,
                       weekdays=list(Weekday), TEXTS=TEXTS)
    return env
