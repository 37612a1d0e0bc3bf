"""The status page in Persian (right to left, Jalali dates, Persian digits) or English.

Jinja2 renders it with autoescaping on, so anything that came from a caller or from staff
data (a doctor's name, a flow error) reaches the browser as text, never as markup.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2

from clinic.calendar import WEEKDAY_FA, Weekday, format_jalali
from db.consultations import CUT_CAUSE, DOWN_CAUSE, LATE_CAUSE, LINE_CUT_CAUSE
from db.leases import ABANDON_CAUSE

LANGUAGES = ("fa", "en")
HEAT_STEPS = 20
BAR_STEPS = 24
_PERSIAN_DIGITS = str.maketrans("0123456789.", "۰۱۲۳۴۵۶۷۸۹٫")

TEXTS: dict[str, dict[str, str]] = {
    "fa": {
        "title": "وضعیت خط تلفن", "practice": "مطب", "health": "سلامت", "now": "اکنون",
        "next": "نوبت‌های بعدی",
        "today": "امروز", "heatmap": "تماس‌های ورودی بر حسب روز و ساعت",
        "minutes": "دقیقه‌های مشاوره در روز", "database": "پایگاه داده",
        "fastagi": "خط ورودی (FastAGI)",
        "ami": "اتصال به Asterisk (AMI)", "flows": "نسخهٔ منوها", "flows_error": "خطای آخرین ویرایش",
        "practices_off": "مطب‌های بیرون از خط",
        "ivr_calls": "تماس‌های در جریان", "consultations_live": "مشاوره‌های در جریان",
        "caller": "تماس‌گیرنده", "step": "مرحله", "elapsed": "گذشته", "doctor": "پزشک",
        "patient": "بیمار", "state": "وضعیت", "booked": "وقت رزرو", "due": "زمان",
        "countdown": "مانده", "attempt": "تلاش", "calls": "تماس‌های دریافتی",
        "bookings": "نوبت‌های تازه", "reschedules": "تغییر نوبت", "cancellations": "لغو نوبت",
        "consultation_minutes": "دقیقهٔ مشاوره", "completed_consultations": "مشاورهٔ انجام‌شده",
        "resumed_attempts": "تماس ادامه‌یافته پس از قطع پیوند AMI",
        "failed": "مشاوره‌های ناموفق", "none": "هیچ", "from": "از", "to": "تا", "show": "نمایش",
        "reload": "بارگذاری دوبارهٔ منوها", "logout": "خروج", "switch": "English",
        "login": "ورود", "token": "رمز دسترسی", "login_wrong": "رمز درست نیست.",
        "login_off": "رمز دسترسی در config.toml تنظیم نشده است (web.token).",
        "login_locked": "از این رایانه رمز نادرست زیاد آمده است: {seconds} ثانیهٔ دیگر "
                        "دوباره بکوشید.",
        "login_expired": "نشست شما به پایان رسیده است؛ دوباره وارد شوید.",
        "login_logged_out": "خارج شدید.", "refused": "درخواست پذیرفته نشد",
        "login_once_spent": "این پیوند ورود یک‌بار به کار رفته یا کهنه شده است؛ با رمز "
                            "دسترسی وارد شوید.",
        "login_first_run": "رمز دسترسی را nobat در نخستین اجرا ساخته و در پرونده‌ی "
                           "web-token کنار پایگاه داده نگه می‌دارد (فقط برای کاربر nobat "
                           "خواندنی است). گزارش nobat serve پس از هر راه‌اندازی پیوندی "
                           "می‌دهد که یک بار، تا ۱۵ دقیقه، بی‌رمز وارد می‌کند. برای رمز "
                           "دلخواه web.token یا NOBAT_WEB_TOKEN را تنظیم کنید.",
        "back": "بازگشت به صفحهٔ وضعیت",
        "hour": "ساعت", "weekday": "روز", "total": "جمع", "minute_unit": "دقیقه",
        "ok": "سالم", "problem": "مشکل", "bad_range": "بازهٔ نادرست",
        "patient_calls": "تماس‌های امروز با بیماران", "purpose": "موضوع", "outcome": "نتیجه",
        "count": "تعداد", "absences": "نوبت‌ها در روزهای تعطیل و غیبت پزشک",
        "when": "زمان نوبت", "call": "تماس", "decision": "تصمیم دفتر", "cancel": "لغو نوبت",
        "record_absence": "ثبت غیبت پزشک یا تعطیلی", "whole_clinic": "کل درمانگاه",
        "first_day": "از روز", "last_day": "تا روز", "reason": "علت", "record": "ثبت",
        "survey": "نظرسنجی پس از مشاوره (میانگین)", "by_doctor": "به تفکیک پزشک",
        "by_week": "به تفکیک هفته", "week_of": "هفتهٔ", "answers": "پاسخ‌ها",
        "audio": "کیفیت صدا", "doctor_rating": "پزشک", "book_again": "دوباره نوبت می‌گیرد",
        "absence_recorded": "ثبت شد. نوبت‌های این روزها:",
        "absence_recorded_after": "— با بیمارانشان تماس گرفته می‌شود.",
        "cancelled": "لغو شد: نوبت", "absence_lifted": "غیبت برداشته شد.",
        "lift_missing": "برداشته نشد: چنین غیبتی در این صفحه ثبت نشده است.",
        "cancel_missing": "لغو نشد: چنین نوبتی نیست یا دیگر رزرو نیست.",
        "cancel_call_live": "لغو نشد: تماس مشاورهٔ این نوبت در جریان است.",
        "cancel_not_closed": "لغو نشد؛ این نوبت در روز تعطیل یا غیبت پزشک نیست و در این صفحه "
                             "فقط چنین نوبت‌هایی لغو می‌شوند.",
        "recorded_absences": "غیبت‌ها و تعطیلی‌های ثبت‌شده در این صفحه", "lift": "برداشتن",
        "part_dialer": "تماس‌گیر (مشاوره‌ها و یادآوری‌ها)",
        "part_planner": "برنامه‌ریز تماس با بیماران (یادآوری‌ها، غیبت‌ها، نظرسنجی‌ها)",
        "part_flow_watcher": "پایش فایل‌های منو", "part_fastagi": "درگاه FastAGI (تماس‌های ورودی)",
        "part_status_page": "درگاه این صفحه", "part_ami": "نگهدارندهٔ پیوند AMI", "since": "از",
        "restarts": "راه‌اندازی دوباره:",
        "due_unserved": "مشاوره‌هایی که وقتشان رسیده و کسی تماسشان را نمی‌گیرد",
    },
    "en": {
        "title": "Phone line status", "practice": "Practice", "health": "Health", "now": "Now",
        "next": "Next",
        "today": "Today", "heatmap": "Inbound calls by weekday and hour",
        "minutes": "Consultation minutes by day", "database": "Database",
        "fastagi": "Inbound line (FastAGI)", "ami": "Asterisk link (AMI)",
        "flows": "Flow version", "flows_error": "Last edit's error",
        "practices_off": "Practices off the line",
        "ivr_calls": "Calls in progress", "consultations_live": "Consultations in progress",
        "caller": "Caller", "step": "Step", "elapsed": "Elapsed", "doctor": "Doctor",
        "patient": "Patient", "state": "State", "booked": "Booked", "due": "Due",
        "countdown": "In", "attempt": "Attempt", "calls": "Calls received",
        "bookings": "New bookings", "reschedules": "Reschedules",
        "cancellations": "Cancellations", "consultation_minutes": "Consultation minutes",
        "completed_consultations": "Consultations held", "failed": "Failed consultations",
        "resumed_attempts": "Calls resumed after a lost AMI link",
        "none": "None", "from": "From", "to": "To", "show": "Show",
        "reload": "Reload the flows", "logout": "Log out", "switch": "فارسی",
        "login": "Log in", "token": "Access token", "login_wrong": "That token is not right.",
        "login_off": "No access token is set in config.toml (web.token).",
        "login_locked": "Too many wrong tokens from this computer: try again in {seconds} s.",
        "login_expired": "Your session has ended; log in again.",
        "login_logged_out": "You have logged out.", "refused": "Request refused",
        "login_once_spent": "That login link was used already or has expired; log in with "
                            "the access token.",
        "login_first_run": "On its first run nobat made the access token and keeps it in "
                           "the file web-token beside its database (readable by nobat's "
                           "user only). After each start, nobat serve's log shows a link "
                           "that logs in once, within 15 minutes, without it. To choose "
                           "your own, set web.token or NOBAT_WEB_TOKEN.",
        "back": "Back to the status page",
        "hour": "Hour", "weekday": "Day", "total": "Total", "minute_unit": "min",
        "ok": "OK", "problem": "Problem", "bad_range": "Wrong range",
        "patient_calls": "Calls to patients today", "purpose": "About", "outcome": "Outcome",
        "count": "Count", "absences": "Bookings on closed days and doctors' absences",
        "when": "Booked for", "call": "Call", "decision": "Office's decision",
        "cancel": "Cancel the booking", "record_absence": "Record a doctor's absence or a closure",
        "whole_clinic": "The whole clinic", "first_day": "From", "last_day": "To",
        "reason": "Reason", "record": "Record",
        "survey": "Survey after consultations (averages)", "by_doctor": "By doctor",
        "by_week": "By week", "week_of": "Week of", "answers": "Answers",
        "audio": "Sound quality", "doctor_rating": "Doctor", "book_again": "Would book again",
        "absence_recorded": "Recorded. Bookings on those days:",
        "absence_recorded_after": "— their patients will be called.",
        "cancelled": "Cancelled: booking", "absence_lifted": "Absence lifted.",
        "lift_missing": "Not lifted: no such absence was recorded on this page.",
        "cancel_missing": "Not cancelled: there is no such booking, or it is no longer booked.",
        "cancel_call_live": "Not cancelled: its consultation call is under way.",
        "cancel_not_closed": "Not cancelled: it is not on a closed day, and only bookings on "
                             "a closed day are cancelled here.",
        "recorded_absences": "Absences and closures recorded on this page", "lift": "Lift",
        "part_dialer": "Dialer (consultations and reminders)",
        "part_planner": "Planner of calls to patients (reminders, absences, surveys)",
        "part_flow_watcher": "Flow file watcher",
        "part_fastagi": "FastAGI listener (incoming calls)",
        "part_status_page": "This page's listener",
        "part_ami": "AMI link keeper", "since": "since", "restarts": "restarts:",
        "due_unserved": "Consultations due that nobody is ringing",
    },
}

STATES: dict[str, dict[str, str]] = {
    "fa": {"dialling": "در حال تماس", "bridged": "در گفتگو", "scheduled": "در انتظار",
           "retry_wait": "منتظر تلاش دوباره", "ok": "سالم", "listening": "آماده",
           "connected": "وصل", "connecting": "در حال اتصال", "auth_failed": "رمز AMI نادرست",
           "stopped": "متوقف", "off": "خاموش (بدون تنظیم)", "unreachable": "در دسترس نیست",
           "no_secret": "رمز FastAGI تنظیم نشده: هیچ تماسی پذیرفته نمی‌شود",
           "schema behind": "نسخهٔ پایگاه داده قدیمی است",
           "reminder": "یادآوری", "absence": "غیبت پزشک", "survey": "نظرسنجی",
           "confirmed": "تأیید کرد", "rescheduled": "زمان را تغییر داد", "cancelled": "لغو شد",
           "opted_out": "تماس نمی‌خواهد", "no_choice": "پاسخ داد، انتخابی نکرد",
           "not_reached": "در دسترس نبود", "moved": "به نزدیک‌ترین زمان رفت",
           "answered": "پاسخ داد", "done": "انجام شد", "missed": "انجام نشد",
           "planned": "هنوز تماس گرفته نشده", "running": "در کار", "cut": "قطع شد",
           "restarting": "از کار افتاد؛ دوباره راه می‌افتد", "failing": "پیاپی از کار می‌افتد"},
    "en": {"retry_wait": "waiting to retry", "auth_failed": "wrong AMI secret",
           "no_secret": "no FastAGI secret set: every call is refused",
           "off": "off (not configured)", "schema behind": "schema behind",
           "no_choice": "answered, chose nothing", "not_reached": "not reached",
           "moved": "moved to the nearest time", "opted_out": "wants no calls",
           "planned": "not called yet", "restarting": "failed; restarting",
           "failing": "keeps failing"},
}


CAUSES: dict[str, dict[str, str]] = {
    "fa": {"doctor": "پزشک", "patient": "بیمار", "busy": "مشغول بود",
           "no_answer": "پاسخ نداد", "unreachable": "در دسترس نبود", "rejected": "رد کرد",
           "congestion": "شبکه شلوغ بود", "hung_up": "قطع کرد",
           "time_up": "وقت نوبت تمام شد", "ami_link_lost": "ارتباط با Asterisk قطع شد",
           "gone_unseen": "وقتی ارتباط nobat با Asterisk قطع بود، تماس تمام شد",
           "asterisk_restarted": "Asterisk از نو راه افتاد",
           DOWN_CAUSE: "وقتش رسید وقتی nobat خاموش بود",
           LATE_CAUSE: "وقت نوبت پیش از تماس تمام شد",
           ABANDON_CAUSE: "nobat هنگام توقف رهایش کرد",
           CUT_CAUSE: "هنگام گفتگو قطع شد: Asterisk از نو راه افتاد",
           LINE_CUT_CAUSE: "هنگام گفتگو قطع شد: خط تلفن از کار افتاد"},
    "en": {"ami_link_lost": "AMI link lost", "gone_unseen": "ended while the AMI link was down",
           "asterisk_restarted": "Asterisk restarted"},
}
"""Why a consultation failed, in the reader's words: a leg and a reason ("patient: busy"),
or a whole sentence from the store."""


def cause_name(cause: str, lang: str) -> str:
    """A failure cause for the reader; one nobat has no words for is shown as stored."""
    words = CAUSES[lang]
    if cause in words:
        return words[cause]
    leg, _, why = cause.partition(": ")
    if why:
        return f"{words.get(leg, leg)}: {words.get(why, why.replace('_', ' '))}"
    return words.get(cause, cause.replace("_", " "))


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


def rating(value: float | None, lang: str, share: bool = False) -> str:
    """An average for the reader: 4.3 out of 5, or a share as a percentage."""
    if value is None:
        return "–"
    return digits(f"{value * 100:.0f}%" if share else f"{value:.1f}", lang)


def heat(count: int, peak: int) -> int:
    """A cell's colour step, 0 (no calls) to HEAT_STEPS (the busiest): the busier, the deeper
    (people read colour faster than numbers). The colours are classes in static/page.css,
    since the page's Content-Security-Policy allows no inline style."""
    return 0 if count <= 0 or peak <= 0 else max(1, math.ceil(HEAT_STEPS * count / peak))


def bar(value: float, top: float) -> int:
    """A bar's length in BAR_STEPS steps of the longest (classes in static/page.css)."""
    return 0 if value <= 0 or top <= 0 else max(1, round(BAR_STEPS * value / top))


def environment() -> jinja2.Environment:
    """Templates from web/templates with autoescaping and the page's filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True)
    env.globals.update(digits=digits, clock=clock, span=span, jalali=format_jalali,
                       weekday_name=weekday_name, state_name=state_name, cause_name=cause_name,
                       heat=heat, bar=bar,
                       rating=rating, date=dt.date.fromisoformat,
                       weekdays=list(Weekday), TEXTS=TEXTS)
    return env


TEMPLATES = environment()
