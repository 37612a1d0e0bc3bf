"""Small clinic files built in code, for tests that need a known schedule."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from clinic.calendar import Weekday
from clinic.clinic_file import ClinicSpec, DoctorSpec
from clinic.schedule import TEHRAN, HoursRule, VisitKind

ALL_KINDS = frozenset(VisitKind)
DEMO_FILE = Path(__file__).resolve().parents[2] / "clinic.toml"


def every_day_clinic(slots_per_day: int, slot_minutes: int = 5, start_minute: int = 8 * 60,
                     doctors: int = 1) -> ClinicSpec:
    """A clinic open every day, each doctor with exactly `slots_per_day` slots a day."""
    end = start_minute + slots_per_day * slot_minutes
    hours = tuple(HoursRule(day, start_minute, end, slot_minutes, ALL_KINDS) for day in Weekday)
    return ClinicSpec(
        key="test", name="درمانگاه آزمون", name_en="Test Clinic", phone="+982188776655",
        address="", address_en="", timezone="Asia/Tehran", weekend=(),
        doctors=tuple(DoctorSpec(f"dr-{n}", f"دکتر {n}", f"Dr. {n}", "general_practice",
                                 f"+98912100{n:04d}", ("fa",), hours)
                      for n in range(1, doctors + 1)),
        closures=())


def second_practice(key: str = "shiraz-eye", phone: str = "071 3222 4455",
                    codes: str = "2", names: tuple[str, str] = ("مطب چشم شیراز",
                                                                "Shiraz Eye Practice"),
                    text: str | None = None) -> str:
    """The demo clinic's text (or `text`, a clinic file written from it) as another practice:
    its own key, names (Persian, English), number and DID, and its doctors' card codes
    starting with `codes` instead of the demo's 1."""
    text = DEMO_FILE.read_text(encoding="utf-8") if text is None else text
    text = text.replace('key = "nobat-demo"', f'key = "{key}"')
    text = text.replace('name = "درمانگاه نوبت"', f'name = "{names[0]}"')
    text = text.replace('name_en = "Nobat Clinic"', f'name_en = "{names[1]}"')
    text = re.sub(r'(?m)^(phone|numbers) = (\[?)"021 8877 6655"', rf'\1 = \2"{phone}"', text)
    return re.sub(r'(?m)^code = "1', f'code = "{codes}', text)


def tomorrow_tehran(now: dt.datetime | None = None) -> dt.date:
    """The next local day in Tehran, so every slot on it lies in the future."""
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(TEHRAN).date() + dt.timedelta(days=1)


class Clock:
    """A clock the test moves by hand, handed to the services as their `clock`."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now
