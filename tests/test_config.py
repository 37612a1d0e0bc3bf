"""config.toml: one clear line per mistake, exit code 2; secrets from the environment, unlogged."""

from __future__ import annotations

import linecache
import logging
import sys
from pathlib import Path

import pytest

from clinic.calendar import Weekday
from clinic.staff_toml import StaffFileError
from nobat.cli import main
from nobat.config import load_config
from nobat.logs import JsonFormatter, MaskingFormatter

SHIPPED = Path(__file__).resolve().parents[1] / "config.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_config_loads_with_its_documented_defaults() -> None:
    config = load_config(SHIPPED, env={})
    assert config.database.url == f"sqlite+aiosqlite:///{SHIPPED.parent / 'nobat.db'}"
    assert (config.web.host, config.web.port) == ("127.0.0.1", 8080)
    assert config.server.clinic_file == SHIPPED.parent / "clinic.toml"
    assert config.booking.horizon_days == 14
    calls = config.patient_calls
    assert (calls.reminder_days_before, calls.reminder_at, calls.quiet_hours) == (
        1, 18 * 60, (21 * 60, 8 * 60))
    assert calls.no_call_days == {Weekday.FRIDAY}


def test_an_empty_config_means_all_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), env={}).web.port == 8080


@pytest.mark.parametrize(("text", "message"), [
    ("[web]\nprot = 8080\n", "config.toml:2: web.prot: unknown key; expected one of host, port, "
                              "token"),
    ("[web]\nport = \"80\"\n", "config.toml:2: web.port: expected a whole number, got a string "
                               "'80'"),
    ("[web]\nport = 70000\n", "config.toml:2: web.port: expected a whole number from 0 to 65535, "
                              "got 70000"),
    ("[server]\nlog_level = \"loud\"\n", "config.toml:2: server.log_level: expected one of "
                                         "debug, info, warning, error, got 'loud'"),
    ("[database]\nurl = \"mysql://x/y\"\n", "config.toml:2: database.url: expected the driver "
                                            "sqlite+aiosqlite or postgresql+asyncpg, got mysql"),
    ("[database]\nurl = \"not a url\"\n", "config.toml:2: database.url: expected a database URL"),
    ("[booking]\nhorizon_days = true\n", "config.toml:2: booking.horizon_days: expected a whole "
                                         "number, got true or false True"),
    ("[webb]\n", "config.toml:1: webb: unknown key; expected one of server, database, web, "
                 "booking"),
    ("[web\n", "config.toml:1: invalid TOML: Expected ']' at the end of a table declaration"),
    ("[consultations]\ndial = \"PJSIP/doctor\"\n",
     "config.toml:2: consultations.dial: expected a dial string with {national} or {number}"),
    ("[ami]\nport = 0\n", "config.toml:2: ami.port: expected a whole number from 1 to 65535"),
    ("[consultations]\nmax_calls = 100\n", "config.toml:2: consultations.max_calls: unknown "
                                           "key; expected one of dial, ring_seconds"),
    ("[consultations]\nmax_channels = 1\n", "config.toml:2: consultations.max_channels: "
                                            "expected a whole number from 2 to 20000, got 1"),
    ("[consultations]\nmissed_grace_minutes = -5\n",
     "config.toml:2: consultations.missed_grace_minutes: expected a whole number from 0 to 120"),
    ("[patient_calls]\nreminder_at = \"22:00\"\n",
     "config.toml:2: patient_calls.reminder_at: falls inside quiet_hours, when nobody is called"),
    ("[patient_calls]\nquiet_hours = \"21:00\"\n",
     "config.toml:2: patient_calls.quiet_hours: expected \"HH:MM-HH:MM\" such as "
     "\"21:00-08:00\", got '21:00'"),
    ("[patient_calls]\nno_call_days = [\"friday\", \"someday\"]\n",
     "config.toml:2: patient_calls.no_call_days: unknown weekday 'someday'"),
    ("[ivr]\noffice = \"PJSIP/office,30\"\n",
     "config.toml:2: ivr.office: 'PJSIP/office,30' is not a dial target"),
    ("[ivr]\noffice_hours = { monday = \"20:00-08:00\" }\n",
     "config.toml:2: ivr.office_hours: monday: '20:00-08:00' ends before it starts"),
])
def test_each_mistake_names_file_line_key_and_expectation(
        tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(StaffFileError) as caught:
        load_config(path, env={})
    assert str(caught.value).replace(str(path), "config.toml").startswith(message)


def test_a_bad_config_exits_2_with_one_line(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[web]\nport = -1\n")
    assert main(["-c", str(path), "db", "status"]) == 2
    assert capsys.readouterr().err == (
        f"{path}:2: web.port: expected a whole number from 0 to 65535, got -1\n")
    assert main(["-c", str(tmp_path / "missing.toml"), "serve"]) == 2
    assert "missing.toml: cannot read: No such file or directory" in capsys.readouterr().err


def test_secrets_come_from_the_environment_and_never_show(tmp_path: Path) -> None:
    path = write(tmp_path, '[web]\ntoken = "from-file"\n[database]\n'
                           'url = "postgresql+asyncpg://nobat@127.0.0.1/nobat"\n')
    config = load_config(path, env={"NOBAT_WEB_TOKEN": "s3cret-token",
                                    "NOBAT_DATABASE_PASSWORD": "pg-pass",
                                    "NOBAT_AMI_SECRET": "ami-pass"})
    assert config.web.token.reveal() == "s3cret-token"
    assert config.ami.secret.reveal() == "ami-pass" and "ami-pass" not in repr(config)
    assert "pg-pass" in config.database.url
    shown = repr(config) + str(config.web.token) + config.database.safe_url
    assert "s3cret" not in shown and "pg-pass" not in shown and "from-file" not in shown
    assert config.database.safe_url == "postgresql+asyncpg://nobat:***@127.0.0.1/nobat"


def test_a_whole_database_url_may_come_from_the_environment(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), env={
        "NOBAT_DATABASE_URL": "postgresql+asyncpg://a:b@db.example/nobat"})
    assert config.database.url == "postgresql+asyncpg://a:b@db.example/nobat"


@pytest.mark.parametrize("formatter", [MaskingFormatter("%(message)s"), JsonFormatter()])
def test_logs_mask_phone_numbers(formatter: logging.Formatter) -> None:
    record = logging.LogRecord("nobat", logging.INFO, __file__, 1,
                               "call from %s booked %s", ("+989121234567", "123456"), None)
    line = formatter.format(record)
    assert "*******4567" in line and "9121234567" not in line and "123456" in line


@pytest.mark.parametrize("formatter", [MaskingFormatter("%(message)s"), JsonFormatter()])
def test_a_logged_traceback_shows_its_source_and_keeps_none_of_it(
        formatter: logging.Formatter, tmp_path: Path) -> None:
    source = tmp_path / "failing_module.py"
    source.write_text("def fail():\n    raise ValueError('no slot for +989121234567')\n")
    code = compile(source.read_text(), str(source), "exec")
    space: dict[str, object] = {}
    exec(code, space)
    try:
        space["fail"]()  # type: ignore[operator]
    except ValueError:
        record = logging.LogRecord("nobat", logging.ERROR, __file__, 1, "booking failed", (),
                                   sys.exc_info())
    line = formatter.format(record)
    assert "failing_module.py" in line and "raise ValueError" in line
    assert "*******4567" in line and "9121234567" not in line
    assert str(source) not in linecache.cache  # a day of faults kept MBs of sources


def test_the_status_page_keys_default_to_loopback_and_plain_http() -> None:
    web = load_config(SHIPPED, env={}).web
    assert web.allowed_hosts == ("127.0.0.1", "localhost", "[::1]")
    assert (web.public_url, web.session_idle_minutes, web.session_max_hours,
            web.login_lock_max_seconds) == ("", 30, 12, 300)
    assert web.token_problem is None  # no token: the page stays shut, serve starts


@pytest.mark.parametrize(("text", "message"), [
    ("[web]\nallowed_hosts = []\n", "config.toml:2: web.allowed_hosts: expected at least one "
                                    "host name"),
    ("[web]\nallowed_hosts = [\"*\"]\n", "config.toml:2: web.allowed_hosts: expected host "
                                         "names such as \"127.0.0.1\""),
    ("[web]\nallowed_hosts = \"localhost\"\n", "config.toml:2: web.allowed_hosts: expected a "
                                               "list of host names, got a string"),
    ("[web]\npublic_url = \"status.clinic.example\"\n",
     "config.toml:2: web.public_url: expected the page's address with no path"),
    ("[web]\npublic_url = \"https://clinic.example/status\"\n",
     "config.toml:2: web.public_url: expected the page's address with no path"),
    ("[web]\npublic_url = \"https://clinic.example:99999\"\n",
     "config.toml:2: web.public_url: expected the page's address with no path"),
    ("[web]\nsession_idle_minutes = 0\n", "config.toml:2: web.session_idle_minutes: expected a "
                                          "whole number from 1 to 1440, got 0"),
    ("[web]\nsession_max_hours = 1000\n", "config.toml:2: web.session_max_hours: expected a "
                                          "whole number from 1 to 720, got 1000"),
    ("[web]\nlogin_lock_max_seconds = 0\n", "config.toml:2: web.login_lock_max_seconds: "
                                            "expected a whole number from 1 to 86400, got 0"),
])
def test_each_status_page_mistake_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(StaffFileError) as caught:
        load_config(path, env={})
    assert str(caught.value).replace(str(path), "config.toml").startswith(message)


def test_names_and_the_public_url_are_read_as_written(tmp_path: Path) -> None:
    web = load_config(write(tmp_path, '[web]\nallowed_hosts = ["Nobat.Clinic.LAN:8443", '
                                      '"10.0.0.5"]\npublic_url = "HTTPS://Status.Example/"\n'),
                      env={}).web
    assert web.allowed_hosts == ("nobat.clinic.lan:8443", "10.0.0.5")
    assert web.public_url == "https://status.example"
    for written, origin in (("https://status.example:443", "https://status.example"),
                            ("https://status.example:8443/", "https://status.example:8443"),
                            ("http://[::1]:80", "http://[::1]")):
        path = write(tmp_path, f'[web]\npublic_url = "{written}"\n')
        assert load_config(path, env={}).web.public_url == origin  # as browsers send Origin


WEAK_TOKENS = [
    ("page-token-5678", "it has 15 characters"),
    ("a" * 24, "it has only 1 different characters"),
    ("passwordpassword", "it has only 7 different characters"),
    ("abcdefghijklmnopqrst", "runs along the alphabet or the keyboard"),
    ("0123456789abcdef", "runs along the alphabet or the keyboard"),
    ("qwertyuiopasdfghjkl", "runs along the alphabet or the keyboard"),
    ("aabbccddeeffgghhiijj", "runs along the alphabet or the keyboard"),
    ("my clinic token 2026", "printable ASCII characters other than a space"),
]


@pytest.mark.parametrize(("token", "reason"), WEAK_TOKENS)
def test_serve_refuses_a_weak_token_in_the_file_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        token: str, reason: str) -> None:
    monkeypatch.delenv("NOBAT_WEB_TOKEN", raising=False)
    path = write(tmp_path, f'[server]\nclinic_file = ""\n[web]\nport = 0\ntoken = "{token}"\n')
    assert main(["-c", str(path), "serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:5: web.token: expected at least 16 random-looking "
                          "characters, e.g. from `openssl rand -hex 16`, but ")
    assert reason in err and token not in err and err.count("\n") == 1


def test_serve_refuses_a_weak_token_from_the_environment(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOBAT_WEB_TOKEN", "s3cret")
    path = write(tmp_path, '[web]\ntoken = "ignored-when-the-environment-has-one"\n')
    assert main(["-c", str(path), "serve"]) == 2
    assert capsys.readouterr().err == (
        "NOBAT_WEB_TOKEN: web.token: expected at least 16 random-looking characters, e.g. from "
        "`openssl rand -hex 16`, but it has 6 characters\n")
    assert main(["-c", str(path), "db", "status"]) == 0  # only serving needs a strong token


@pytest.mark.parametrize("token", ["page-token-5678-Qx7v", "3f9c1b7e0a5d2c8e4b6a9f1d3c7e5b20",
                                   "Zk4_rT9-qLm2VxN8pW3s"])
def test_a_random_looking_token_passes(tmp_path: Path, token: str) -> None:
    path = write(tmp_path, f'[web]\ntoken = "{token}"\n')
    assert load_config(path, env={}).web.token_problem is None


@pytest.mark.parametrize(("text", "env", "message"), [
    ('[fastagi]\nsecret = "short"\n', {}, "config.toml:2: fastagi.secret: expected 16 to 128 "
                                          "letters, digits, '-' or '_'"),
    ("", {"NOBAT_FASTAGI_SECRET": "has,a,comma-in-it-000"},
     "fastagi.secret: expected 16 to 128 letters"),
    ('[fastagi]\nallow = ["10.0.0.0/33"]\n', {}, "config.toml:2: fastagi.allow: expected "
                                                  "addresses or networks such as 127.0.0.1"),
    ('[fastagi]\nallow = "127.0.0.1"\n', {}, "config.toml:2: fastagi.allow: expected a list "
                                             "of addresses or networks"),
])
def test_a_bad_fastagi_secret_or_peer_list_is_refused(tmp_path: Path, text: str,
                                                      env: dict[str, str], message: str) -> None:
    with pytest.raises(StaffFileError) as refused:
        load_config(write(tmp_path, text), env=env)
    assert message in str(refused.value)
    assert "has,a,comma" not in str(refused.value)  # a secret is never repeated back


def test_the_fastagi_secret_comes_from_the_environment_and_is_never_shown(
        tmp_path: Path) -> None:
    secret = "0123456789abcdef-secret"
    config = load_config(write(tmp_path, '[fastagi]\nallow = ["10.1.2.3", "::1"]\n'),
                         env={"NOBAT_FASTAGI_SECRET": secret})
    assert config.fastagi.secret.reveal() == secret
    assert secret not in repr(config)
    assert [str(net) for net in config.fastagi.allow] == ["10.1.2.3/32", "::1/128"]
