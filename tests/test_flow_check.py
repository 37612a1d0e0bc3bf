"""`nobat flows check`: every mistake staff can make in a flow, with its file and line."""

from __future__ import annotations

import random
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clinic.staff_toml import StaffFileError
from ivr.actions.registry import ACTIONS
from ivr.flow_check import load_flows
from ivr.prompts import PromptLibrary
from nobat.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = (ROOT / "flows" / "main.toml").read_text(encoding="utf-8")
PROMPTS = PromptLibrary.load(ROOT / "prompts" / "manifest.toml", "/p")


def problems(tmp_path: Path, text: str, name: str = "main") -> list[str]:
    (tmp_path / f"{name}.toml").write_text(text, encoding="utf-8")
    with pytest.raises(StaffFileError) as caught:
        load_flows(tmp_path, ACTIONS, PROMPTS)
    return [str(p).replace(f"{tmp_path}/", "") for p in caught.value.problems]


def test_the_shipped_flows_check_out() -> None:
    flows = load_flows(ROOT / "flows", ACTIONS, PROMPTS)
    assert flows["main"].start == "entry"


def test_every_kind_of_mistake_is_listed_with_its_line(tmp_path: Path) -> None:
    text = """[flow]
start = "menu"

[nodes.menu]
kind = "menu"
prompt = "main-menu"
keys = { "1" = "book", "2" = "nowhere", "x" = "book" }
timeout = "five"
colour = "red"

[nodes.book]
kind = "action"
action = "book"
params = { specialty = 3, doctor = "dr-x" }
outcomes = { "booked" = "menu" }
next = "menu"

[nodes.teleport]
kind = "action"
action = "teleport"
next = "menu"

[nodes.bye]
kind = "hangup"
prompt = ["good-night"]

[nodes.jump]
kind = "goto"
flow = "elsewhere"

[nodes.spin]
kind = "branch"
when = { "moon_is_full" = "spin2", "language = en" = "spin2" }
otherwise = "spin2"

[nodes.spin2]
kind = "language"
language = "de"
next = "spin"
"""
    assert problems(tmp_path, text) == [
        "main.toml:4: nodes.menu.failure: no node 'office' in this flow",
        "main.toml:7: nodes.menu.keys.2: no node 'nowhere' in this flow",
        "main.toml:7: nodes.menu.keys.x: expected a phone key: 0-9, * or #",
        "main.toml:8: nodes.menu.timeout: expected seconds, such as 5, got a string 'five'",
        "main.toml:9: nodes.menu.colour: unknown key; expected one of kind, prompt, reprompt, "
        "keys, timeout, tries, invalid, no_input, failure",
        "main.toml:14: nodes.book.params.doctor: book takes no parameter 'doctor' "
        "(allowed: specialty)",
        "main.toml:14: nodes.book.params.specialty: expected str, got 3",
        "main.toml:15: nodes.book.outcomes.booked: book never ends in 'booked'; it can end in "
        "done, back, office, hangup",
        "main.toml:18: nodes.teleport: no other node leads here (unreachable)",
        "main.toml:20: nodes.teleport.action: unknown action 'teleport'; expected one of "
        "identify, book, my_appointments, address, hours, office, choose_practice, "
        "choose_by_specialty, read_appointment, confirm_appointment, reschedule_appointment, "
        "cancel_appointment, opt_out, move_to_nearest, rate_audio, rate_doctor, "
        "would_book_again",
        "main.toml:23: nodes.bye: no other node leads here (unreachable)",
        "main.toml:25: nodes.bye.prompt: prompt 'good-night' has no fa text in the manifest",
        "main.toml:25: nodes.bye.prompt: prompt 'good-night' has no en text in the manifest",
        "main.toml:27: nodes.jump: no other node leads here (unreachable)",
        "main.toml:29: nodes.jump.flow: no flow file elsewhere.toml",
        "main.toml:31: nodes.spin: no other node leads here (unreachable)",
        "main.toml:31: nodes.spin: these nodes loop without ever waiting for the caller: "
        "spin → spin2 → spin",
        "main.toml:33: nodes.spin.when.moon_is_full: unknown condition 'moon_is_full'; "
        "expected one of caller_known, office_open, holiday, caller_id_withheld, language = "
        "fa|en, weekday = <day>, dialled = <number>, option <name> = <value>, value <name> "
        "[= <digits>], or not <condition>",
        "main.toml:36: nodes.spin2: no other node leads here (unreachable)",
        "main.toml:38: nodes.spin2.language: expected fa or en, got 'de'",
    ]


def test_a_duplicate_key_in_a_menu_is_a_toml_error_with_its_line(tmp_path: Path) -> None:
    text = SHIPPED.replace('keys = { "1" = "book",', 'keys = { "1" = "book", "1" = "hours",')
    assert problems(tmp_path, text) == [
        "main.toml:52: invalid TOML: Duplicate inline table key '1'"]


def test_problems_in_several_files_are_all_listed(tmp_path: Path) -> None:
    (tmp_path / "other.toml").write_text('[flow]\nstart = "x"\n[nodes.x]\nkind = "play"\n'
                                         'prompt = "goodbye"\nnext = "y"\n')
    assert problems(tmp_path, SHIPPED.replace('start = "entry"', 'start = "entrance"')) == [
        "main.toml:15: flow.start: no node 'entrance'",
        "other.toml:6: nodes.x.next: no node 'y' in this flow",
    ]


def test_flows_check_command_exits_nonzero_and_names_the_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/c.db"\n'
                      f'[ivr]\nprompts = "{ROOT / "prompts"}"\n')
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "main.toml").write_text(SHIPPED.replace('next = "main-menu"\n\n'
                                                                  '[nodes.main-menu]',
                                                                  'next = "main-manu"\n\n'
                                                                  '[nodes.main-menu]'))
    assert main(["-c", str(config), "flows", "check", str(tmp_path / "flows")]) == 2
    assert re.search(r"main\.toml:\d+: nodes\.identify\.next: no node 'main-manu'",
                     capsys.readouterr().err)
    assert main(["-c", str(config), "flows", "check", str(ROOT / "flows")]) == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**9))
def test_any_single_edit_of_the_shipped_flow_checks_out_or_names_its_line(seed: int) -> None:
    rng = random.Random(seed)
    lines = SHIPPED.splitlines()
    index = rng.randrange(len(lines))
    edit = rng.choice(["drop", "duplicate", "mangle", "retarget"])
    if edit == "drop":
        del lines[index]
    elif edit == "duplicate":
        lines.insert(index, lines[index])
    elif edit == "mangle" and lines[index]:
        cut = rng.randrange(len(lines[index]))
        lines[index] = lines[index][:cut] + rng.choice(['"', "=", "]", "x", ""]) + \
            lines[index][cut + 1:]
    else:
        lines[index] = re.sub(r'"[a-z-]+"', '"no-such-node"', lines[index], count=1)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "main.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            load_flows(Path(folder), ACTIONS, PROMPTS)
        except StaffFileError as exc:
            assert exc.problems
            for problem in exc.problems:
                assert problem.line is not None and 1 <= problem.line <= len(lines) + 1, problem


def test_a_collect_node_needs_sane_lengths_and_a_name(tmp_path: Path) -> None:
    text = SHIPPED.replace('''[nodes.goodbye]''', '''[nodes.ask-file]
kind = "collect"
prompt = "enter-code"
max_digits = 30
next = "goodbye"

[nodes.goodbye]''').replace('"9" = "goodbye" }\n\n[nodes.book]',
                            '"9" = "goodbye", "8" = "ask-file" }\n\n[nodes.book]')
    assert problems(tmp_path, text) == [
        "main.toml:90: nodes.ask-file.into: missing; expected a name for the number",
        "main.toml:93: nodes.ask-file.max_digits: expected 1 <= min_digits <= max_digits <= "
        "20, got 1 and 30",
    ]


def test_a_bad_booking_code_policy_is_named_with_its_line(tmp_path: Path) -> None:
    text = SHIPPED.replace('params = { listing = "off" }',
                           'params = { listing = "full", code_digits = 4 }').replace(
        'action = "identify"\n', 'action = "identify"\noutcomes = { "known" = "book" }\n')
    assert problems(tmp_path, text) == [
        "main.toml:46: nodes.identify.outcomes.known: identify never ends in 'known'; it can "
        "end in done, back, office, hangup",
        "main.toml:67: nodes.my-appointments.params.code_digits: my_appointments takes no "
        "parameter 'code_digits' (allowed: listing)",
        "main.toml:67: nodes.my-appointments.params.listing: 'full' is not offered: a caller "
        "id proves nothing, so reading a number's bookings before the code would read them "
        "to whoever forges that number; expected one of off, count",
    ]


@pytest.mark.parametrize(("value", "expected"), [
    ('"all"', "expected one of off, count, got 'all'"),
    ("0", "expected one of off, count, got 0"),
    ('"Count"', "expected one of off, count, got 'Count'"),
])
def test_flows_check_refuses_a_listing_that_is_not_off_or_count(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, expected: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/c.db"\n'
                      f'[ivr]\nprompts = "{ROOT / "prompts"}"\n')
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "main.toml").write_text(
        SHIPPED.replace('params = { listing = "off" }', f"params = {{ listing = {value} }}"))
    assert main(["-c", str(config), "flows", "check", str(tmp_path / "flows")]) == 2
    assert f"main.toml:66: nodes.my-appointments.params.listing: {expected}" \
        in capsys.readouterr().err


def test_listing_may_be_left_out(tmp_path: Path) -> None:
    (tmp_path / "main.toml").write_text(SHIPPED.replace('params = { listing = "off" }\n', ""))
    assert "my-appointments" in load_flows(tmp_path, ACTIONS, PROMPTS)["main"].nodes
