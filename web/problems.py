"""Requests the page turns away, by code, with the words for each in Persian and English.

A handler or guard raises `BadInput`; the outermost middleware (web/guards.py) answers it
with its status and these words in the reader's language, as a page or as JSON. Codes, not
sentences, travel between the parts, so no text a client sent is ever shown as the page's
own words.
"""

from __future__ import annotations


class BadInput(Exception):
    """A request the page cannot serve as sent: 400 unless said otherwise (403 for a form
    from another site or without its CSRF value, or a practice's token on the platform
    admin's routes; 404 for another practice's booking or absence)."""

    def __init__(self, code: str, value: object = "", status: int = 400) -> None:
        super().__init__(code)
        shown = "".join(c if c.isprintable() else "\ufffd" for c in str(value)[:60])
        self.code, self.value, self.status = code, shown, status


PROBLEMS: dict[str, dict[str, str]] = {
    "fa": {
        "host": "این صفحه به نام «{value}» پاسخ نمی‌دهد.",
        "header_not_text": "سرآیند {value} این درخواست متن UTF-8 نیست.",
        "form_not_text": "داده‌های فرم متن UTF-8 نیست.",
        "not_a_form": "فرم این صفحه انتظار می‌رفت (application/x-www-form-urlencoded).",
        "origin": "این فرم از سایت دیگری ({value}) آمده و پذیرفته نشد.",
        "csrf": "کد امنیتی فرم نیست یا درست نیست؛ صفحه را دوباره باز کنید و دوباره بفرستید.",
        "bad_date": "«{value}» تاریخ نیست؛ به شکل ۱۴۰۵/۰۹/۱۵ یا 2026-12-06 بنویسید.",
        "date_out_of_range": "«{value}» بیرون از سال‌های ۱۹۰۰ تا ۲۲۰۰ میلادی است.",
        "range_reversed": "روز نخست بازه پس از روز آخر آن است.",
        "range_too_long": "بازه حداکثر ۳۶۶ روز می‌تواند باشد.",
        "bad_id": "«{value}» شناسه نیست؛ ۱ تا ۱۸ رقم (0-9) انتظار می‌رفت.",
        "absence_past": "ثبت نشد: روز نخست غیبت گذشته است.",
        "absence_too_long": "ثبت نشد: غیبت حداکثر یک سال (۳۶۶ روز) می‌تواند باشد.",
        "no_doctor": "ثبت نشد: پزشکی با کلید «{value}» نیست.",
        "no_clinic": "ثبت نشد: هنوز درمانگاهی بارگذاری نشده است.",
        "row_unreadable": "ثبت نشد: ردیف این مطب در پایگاه داده خوانا نیست؛ سطر سلامت "
                          "صفحه می‌گوید چرا.",
        "practice_unreadable": "ردیف این مطب در پایگاه داده خوانا نیست؛ مدیر سامانه آن را "
                               "درست می‌کند (nobat clinic load --compare).",
        "not_found": "چنین چیزی در مطب شما نیست.",
        "admin_only": "این کار فقط با توکن مدیر سامانه شدنی است، نه با توکن یک مطب.",
        "error": "خطایی در nobat رخ داد؛ جزئیات در گزارش (log) سرور است.",
    },
    "en": {
        "host": "This page does not answer to the name '{value}'.",
        "header_not_text": "The request's {value} header is not UTF-8 text.",
        "form_not_text": "The form's data is not UTF-8 text.",
        "not_a_form": "Expected this page's form (application/x-www-form-urlencoded).",
        "origin": "This form came from another site ({value}) and was refused.",
        "csrf": "The form's security value is missing or wrong: reload the page and send "
                "it again.",
        "bad_date": "'{value}' is not a date: write it as 1405/09/15 (Jalali) or 2026-12-06.",
        "date_out_of_range": "'{value}' is outside the years 1900 to 2200.",
        "range_reversed": "The range's first day is after its last.",
        "range_too_long": "A range may span at most 366 days.",
        "bad_id": "'{value}' is not an id: expected 1 to 18 digits (0-9).",
        "absence_past": "Not recorded: the absence's first day is in the past.",
        "absence_too_long": "Not recorded: an absence may last at most a year (366 days).",
        "no_doctor": "Not recorded: there is no doctor '{value}'.",
        "no_clinic": "Not recorded: no clinic is loaded yet.",
        "row_unreadable": "Not recorded: this practice's row in the store cannot be read; "
                          "the page's health line says why.",
        "practice_unreadable": "This practice's row in the store cannot be read; the "
                               "platform's admin puts it right (nobat clinic load --compare).",
        "not_found": "Your practice has no such thing.",
        "admin_only": "Only the platform admin's token may do this, not a practice's.",
        "error": "Something went wrong in nobat; the server's log has the details.",
    },
}


def explain(problem: BadInput, lang: str) -> str:
    """The problem in the reader's words."""
    return PROBLEMS[lang][problem.code].format(value=problem.value)
