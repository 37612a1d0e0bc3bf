"""`nobat try` as staff run it: a real process on a terminal or a pipe, against a real store."""

from __future__ import annotations

import asyncio
import codecs
import io
import os
import pty
import re
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ivr.prompts import PromptLibrary
from ivr.session import CallerHungUp, CallInfo
from ivr.terminal_session import TerminalSession
from tests.support.clinics import second_practice
from tests.support.server import demo_copy

ROOT = Path(__file__).resolve().parents[1]
MOBILE = "09121234567"
WAIT_S = 30.0
ALL_DAY = ", ".join(f'{day} = "00:00-24:00"' for day in (
    "saturday", "sunday", "monday", "tuesday", "wednesday", "thursday", "friday"))


def nobat(config: Path, *args: str, typed: str = "") -> subprocess.CompletedProcess[str]:
    """Run one `nobat` command in this tree, `typed` on its stdin (a pipe), and wait for it."""
    return subprocess.run([sys.executable, "-m", "nobat", "-c", str(config), *args], cwd=ROOT,
                          input=typed, capture_output=True, text=True, timeout=WAIT_S,
                          check=False)


def clinic_copy(tmp_path: Path, office_hours: str | None = None) -> Path:
    """The demo config and clinic in tmp_path, the clinic loaded as staff would load it."""
    config = demo_copy(tmp_path)
    if office_hours is not None:
        text = re.sub(r"^office_hours = .*$", f"office_hours = {office_hours}",
                      config.read_text(), flags=re.MULTILINE)
        config.write_text(text)
    loaded = nobat(config, "clinic", "load", str(tmp_path / "clinic.toml"))
    assert loaded.returncode == 0, loaded.stderr
    return config


def rows(tmp_path: Path, query: str) -> list[tuple[object, ...]]:
    """Read the store's SQLite file directly, as a second opinion on what was written."""
    with sqlite3.connect(tmp_path / "nobat.db") as db:
        return db.execute(query).fetchall()


BOOKINGS = ("SELECT a.code, a.status, p.phone FROM appointment a "
            "JOIN patient p ON p.id = a.patient_id")
CALLS = "SELECT caller, outcome FROM inbound_call"


class Terminal:
    """`nobat try` on a pseudo-terminal: read what it prints, type as a person would."""

    def __init__(self, config: Path, *args: str) -> None:
        self.master, slave = pty.openpty()
        self.errors = open(config.parent / "stderr.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nobat", "-c", str(config), "try", *args], cwd=ROOT,
            stdin=slave, stdout=slave, stderr=self.errors)
        os.close(slave)
        self.output = ""
        self.seen = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def expect(self, pattern: str) -> re.Match[str]:
        """Read until `pattern` appears in what came after the last match."""
        regex = re.compile(pattern, re.DOTALL)
        deadline = time.monotonic() + WAIT_S
        while not (match := regex.search(self.output, self.seen)):
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"no {pattern!r} in:\n{self.output[self.seen:]}")
        self.seen = match.end()
        return match

    def menu(self) -> str:
        """Wait for the next question and the keys> marker; the question's prompt name."""
        return self.expect(r"\[fa/((?:choose|confirm)-[\w-]+)\].*?keys> ").group(1)

    def type(self, line: str) -> None:
        """Type a line and press Enter."""
        os.write(self.master, f"{line}\r".encode())

    def close(self) -> int:
        """Read to the end and return the exit code."""
        while self._read(WAIT_S):
            pass
        code = self.process.wait(WAIT_S)
        os.close(self.master)
        self.errors.close()
        return code

    def _read(self, seconds: float) -> bool:
        if not select.select([self.master], [], [], seconds)[0]:
            return False
        try:
            chunk = os.read(self.master, 4096)
        except OSError:  # EIO: the process closed the terminal
            return False
        self.output += self._decoder.decode(chunk).replace("\r\n", "\n")
        return bool(chunk)


def walk_to_confirmation(terminal: Terminal) -> None:
    """Book the first offered of everything (the real clock decides which day that is)."""
    terminal.expect(r"\[fa/choose-language\].*?keys> ")
    terminal.type("1")
    terminal.expect(r"\[fa/main-menu\] برای گرفتن نوبت، یک را فشار دهید.*?keys> ")
    terminal.type("1")
    for _ in range(5):
        question = terminal.menu()
        if question == "confirm-keys":
            return
        terminal.type("1")
    raise AssertionError(f"never asked to confirm:\n{terminal.output}")


def test_staff_book_on_a_terminal_and_the_store_holds_the_code_they_heard(
        tmp_path: Path) -> None:
    terminal = Terminal(clinic_copy(tmp_path), "--caller", MOBILE)
    walk_to_confirmation(terminal)
    assert "[fa/with-doctor] نوبت با" in terminal.output
    assert rows(tmp_path, BOOKINGS) == []
    terminal.type("1")
    said = terminal.expect(r"\[fa/your-code\][^\n]*\n((?:\[fa/num/\d\][^\n]*\n){6})"
                           r".*?\[fa/repeat-code\].*?keys> ").group(1)
    terminal.type("")
    terminal.expect(r"\[fa/anything-else\].*?keys> ")
    terminal.type("9")
    summary = terminal.expect(r"\[fa/goodbye\].*?— call ended\ncall outcome: completed\n"
                              r"booking code heard: (\d{6})\n")
    assert terminal.close() == 0
    code = summary.group(1)
    assert "".join(re.findall(r"\[fa/num/(\d)\]", said)) == code
    assert rows(tmp_path, BOOKINGS) == [(code, "booked", "+989121234567")]
    assert rows(tmp_path, CALLS) == []


def test_q_hangs_up_before_the_confirming_key_and_nothing_is_written(tmp_path: Path) -> None:
    terminal = Terminal(clinic_copy(tmp_path), "--caller", MOBILE)
    walk_to_confirmation(terminal)
    terminal.type("q")
    terminal.expect(r"q\n— caller hung up\ncall outcome: hung_up\n")
    assert terminal.close() == 0
    assert "booking code heard" not in terminal.output
    assert rows(tmp_path, BOOKINGS) == []
    assert rows(tmp_path, CALLS) == []


def heard(output: str) -> list[str]:
    """Prompt names and keys> markers in order, and the lines nobat adds, from a transcript."""
    lines = []
    for line in output.splitlines()[2:]:
        lines.append(line[1:line.index("]")] if line.startswith("[") else line.strip())
    return lines


SILENT_MENU = ["fa/main-menu", "keys>", "fa/no-input", "fa/main-menu-short", "keys>",
               "fa/no-input", "fa/main-menu-short", "keys>"]


@pytest.mark.parametrize(("office_hours", "ending"), [
    (f"{{ {ALL_DAY} }}", ["fa/transferring", "→ transferred to PJSIP/office",
                          "call outcome: office"]),
    ("{}", ["fa/office-closed", *SILENT_MENU, "fa/goodbye", "— call ended",
            "call outcome: no_input"]),
])
def test_a_silent_caller_on_a_pipe_is_reprompted_then_sent_to_the_office(
        tmp_path: Path, office_hours: str, ending: list[str]) -> None:
    config = clinic_copy(tmp_path, office_hours)
    done = nobat(config, "try", "--caller", MOBILE, typed="\n" * 20)
    assert done.returncode == 0, done.stderr
    assert heard(done.stdout) == ["fa/welcome", "fa/choose-language", "keys>", *SILENT_MENU,
                                  *ending]


def test_english_a_withheld_number_and_keys_typed_ahead_on_a_pipe(tmp_path: Path) -> None:
    """Piped lines are typed ahead: "3" cuts the main menu, "9" the "no input" prompt."""
    done = nobat(clinic_copy(tmp_path), "try", "--lang", "en", typed="3\n\n9\n")
    assert done.returncode == 0, done.stderr
    assert "caller withheld" in done.stdout.splitlines()[0]
    assert heard(done.stdout) == ["keys> 3", "en/address-intro", "en/clinic/address",
                                  "en/anything-else", "keys>", "keys> 9", "en/goodbye",
                                  "— call ended", "call outcome: completed"]


def test_with_two_practices_try_answers_as_the_dialled_practice_or_the_shared_menu(
        tmp_path: Path) -> None:
    config = clinic_copy(tmp_path)
    other = tmp_path / "shiraz.toml"
    other.write_text(second_practice("shiraz-eye", "071 3222 4455"), encoding="utf-8")
    assert nobat(config, "clinic", "load", str(other)).returncode == 0
    done = nobat(config, "try", "--lang", "en", "--dialled", "07132224455", typed="3\n\n9\n")
    assert done.returncode == 0, done.stderr
    assert heard(done.stdout)[:3] == ["keys> 3", "en/address-intro",
                                      "en/clinic/shiraz-eye/address"]
    shared = nobat(config, "try", "--lang", "en", typed="1\n102#\n\n1\nq\n")
    assert shared.returncode == 0, shared.stderr
    assert heard(shared.stdout)[:6] == [
        "keys> 1", "keys> 102#", "en/doctor-chosen", "en/doctor/nobat-demo/dr-karimi",
        "en/at-practice", "en/clinic/nobat-demo/name"]


def test_without_a_clinic_in_the_store_try_says_to_load_one(tmp_path: Path) -> None:
    done = nobat(demo_copy(tmp_path), "try")
    assert done.returncode == 1
    assert "holds no clinic yet; load one first: nobat clinic load" in done.stderr


def test_an_unknown_flow_is_named_with_the_ones_there_are(tmp_path: Path) -> None:
    done = nobat(clinic_copy(tmp_path), "try", "booking")
    assert done.returncode == 2
    assert "no flow 'booking'" in done.stderr
    assert "there are: absence, main, reminder, shared, survey" in done.stderr


def terminal_session(typed: str, *, echo: bool = False
                     ) -> tuple[TerminalSession, io.StringIO, asyncio.StreamReader]:
    """A session on two prompts, with `typed` already typed."""
    library = PromptLibrary({"fa": {"a": "A", "b": "B"}}, "/p")
    keys = asyncio.StreamReader()
    keys.feed_data(typed.encode())
    out = io.StringIO()
    info = CallInfo(caller_id=MOBILE, dialled=None, channel="terminal", unique_id="t")
    return TerminalSession(library, info, keys, out, echo=echo), out, keys


async def test_lines_typed_ahead_cut_prompts_short_and_silence_waits_its_turn() -> None:
    session, out, _ = terminal_session("2\n\n3 4\nq\n", echo=True)
    assert await session.play(["/p/fa/a", "/p/fa/b"]) == "2"
    assert await session.play(["/p/fa/a", "/p/fa/b"]) is None
    assert await session.wait_digit(5) is None
    assert await session.play(["/p/fa/a"]) == "3"
    assert await session.wait_digit(5) == "4"
    with pytest.raises(CallerHungUp):
        await session.play(["/p/fa/b"])
    assert out.getvalue() == ("keys> 2\n[fa/a] A\n[fa/b] B\nkeys> \nkeys> 3 4\nkeys> q\n"
                              "— caller hung up\n")
    assert session.heard == ["fa/a", "fa/b"]


async def test_a_wait_shows_the_marker_and_the_end_of_input_hangs_up() -> None:
    session, out, keys = terminal_session("")
    waiting = asyncio.ensure_future(session.wait_digit(5))
    for _ in range(3):
        await asyncio.sleep(0)
    assert out.getvalue() == "keys> " and not waiting.done()
    keys.feed_data(b"7x\n")
    assert await waiting == "7"
    assert "ignored 'x'" in out.getvalue()
    waiting = asyncio.ensure_future(session.wait_digit(5))
    for _ in range(3):
        await asyncio.sleep(0)
    keys.feed_eof()
    with pytest.raises(CallerHungUp):
        await waiting
    assert out.getvalue().endswith("keys> \n— caller hung up\n")
