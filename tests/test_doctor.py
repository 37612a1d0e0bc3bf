"""`nobat doctor` against a running `nobat serve` and the fake PBX's AMI: what is right says
ok, what is wrong says FAIL with what to do, and the exit code tells a script."""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from nobat.config import load_config
from nobat.doctor import Finding, doctor
from tests.fakepbx.agi_caller import DIALPLAN_SECRET
from tests.fakepbx.ami_server import FakeAsterisk, nobat_user
from tests.support.postgres import free_port
from tests.support.server import ROOT, ServerProcess, demo_copy, demo_store, edit_config
from tests.test_classic_agi import GUIDE_SECRETS, SHARED_GID, deploy_as_the_guide_says
from tests.test_platform_line import zone_nowhere

AMI_SECRET = "doctor-ami-secret-0042"
NO_SUCH_USER = "no-such-user-nobat-doctor"
"""Asterisk's usual user on a machine that has none."""
SERVED = ("config", "store", "clinic", "prompts", "AMI", "FastAGI", "status page")
"""What the CLI's checks say alike on every machine: the rest reads this machine's
/etc/asterisk/extensions.conf and looks for its `asterisk` user."""


async def run_doctor(config: Path, *args: str, ami_secret: str = AMI_SECRET
                     ) -> tuple[int, list[str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nobat", "-c", str(config), "doctor", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"NOBAT_AMI_SECRET": ami_secret, "PATH": "/usr/bin:/bin"})
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode().splitlines()


def verdicts(lines: list[str]) -> dict[str, str]:
    """Each check's first word (ok, FAIL or skip), by what it looked at."""
    return {line[5:].partition(":")[0]: line[:4].strip() for line in lines
            if line[:4] in ("ok  ", "FAIL", "skip")}


def printed(findings: list[Finding]) -> list[str]:
    """The lines `nobat doctor` prints for these findings."""
    return "\n".join(finding.line() for finding in findings).splitlines()


async def check(config: Path, asterisk_user: str | None = None, dialplan: Path | None = None,
                env: dict[str, str] | None = None, agi_bin: Path | None = None
                ) -> list[Finding]:
    """`nobat doctor` on a machine whose dialplan is `dialplan` and whose agi-bin is `agi_bin`
    (by default none) and whose Asterisk runs as `asterisk_user`, or as no usual user when that
    is None."""
    return await doctor(load_config(config, env or {}), asterisk_user,
                        dialplan=dialplan or config.parent / "no-dialplan" / "extensions.conf",
                        agi_bin=agi_bin or config.parent / "no-agi-bin",
                        usual_asterisk_user=NO_SUCH_USER)


def agi_bin(folder: Path, mode: int = 0o755) -> Path:
    """Asterisk's agi-bin with the guide's `nobat-agi` link to an installed script of `mode`."""
    installed = folder / "venv-bin" / "nobat-agi"
    installed.parent.mkdir()
    installed.write_text("#!/bin/sh\n")
    installed.chmod(mode)
    (folder / "agi-bin").mkdir()
    (folder / "agi-bin" / "nobat-agi").symlink_to(installed)
    return folder / "agi-bin"


def dialplan(folder: Path, address: str, secret: str = DIALPLAN_SECRET) -> Path:
    """The shipped asterisk/extensions.conf with its FastAGI globals set, as the guide's step 3
    sets them."""
    path = folder / "extensions.conf"
    shutil.copy(ROOT / "asterisk" / "extensions.conf", path)
    edit_config(path, ("NOBAT_FASTAGI=127.0.0.1:4573\n", f"NOBAT_FASTAGI={address}\n"),
                ("NOBAT_FASTAGI_SECRET=\n", f"NOBAT_FASTAGI_SECRET={secret}\n"))
    return path


async def test_doctor_passes_what_works_and_says_how_to_fix_what_does_not(
        tmp_path: Path) -> None:
    config = demo_copy(tmp_path, port=free_port())
    fastagi = free_port()
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    shutil.copy(ROOT / "prompts" / "manifest.toml", prompts / "manifest.toml")
    edit_config(config, ("port = 0\n", f"port = {fastagi}\n"),
                (f'prompts = "{ROOT / "prompts"}"', f'prompts = "{prompts}"'))
    async with FakeAsterisk(users=nobat_user(AMI_SECRET)) as pbx:
        edit_config(config, ("port = 5038", f"port = {pbx.port}"))
        database = await demo_store(tmp_path)
        await database.close()
        server = await ServerProcess(config, env={"NOBAT_AMI_SECRET": AMI_SECRET}).start()
        try:
            code, lines = await run_doctor(config)
            found = verdicts(lines)
            assert {key: found.get(key) for key in SERVED} == {
                "config": "ok", "store": "ok", "clinic": "ok", "prompts": "FAIL", "AMI": "ok",
                "FastAGI": "ok", "status page": "ok"}, lines
            assert code == 1
            [prompts_line] = [line for line in lines if line.startswith("FAIL prompts")]
            assert f"missing in {prompts}: fa/num/0, " in prompts_line
            assert "     fix: run `nobat prompts build` as nobat" in lines

            code, lines = await run_doctor(config, ami_secret="a-wrong-ami-secret")
            assert code == 1 and verdicts(lines)["AMI"] == "FAIL"
            assert any("manager.conf [nobat]" in line for line in lines)
        finally:
            assert await server.stop() == 0


async def test_doctor_says_asterisks_user_cannot_reach_files_outside_nobats_group() -> None:
    base = Path(tempfile.mkdtemp(prefix="nobat-doctor-"))
    try:
        config = await asyncio.to_thread(deploy_as_the_guide_says, base)
        code, lines = await run_doctor(config, "--asterisk-user", "nobody")
        assert code == 1
        refused = [line for line in lines if line.startswith("FAIL") and "nobody may not" in line]
        for why in ("read the config", "write the store", "read the flows", "play the prompts"):
            assert any(why in line for line in refused), (why, lines)
        assert f"     fix: usermod --append --groups {SHARED_GID} nobody (then restart " \
               "Asterisk), and the modes in docs/deployment.md" in lines
    finally:
        await asyncio.to_thread(shutil.rmtree, base, ignore_errors=True)


async def test_the_guides_layout_passes_every_check() -> None:
    """docs/deployment.md followed to the letter, with Asterisk's user in nobat's group (here
    nobody, whose own group stands in for it): doctor finds nothing to fix."""
    base = Path(tempfile.mkdtemp(prefix="nobat-doctor-"))
    try:
        group = pwd.getpwnam("nobody").pw_gid
        config = await asyncio.to_thread(deploy_as_the_guide_says, base, group)
        async with FakeAsterisk(users=nobat_user(GUIDE_SECRETS["NOBAT_AMI_SECRET"])) as pbx:
            edit_config(config, ("port = 5038", f"port = {pbx.port}"))
            port = load_config(config, GUIDE_SECRETS).fastagi.port
            asterisk = dialplan(base, f"127.0.0.1:{port}")
            server = await ServerProcess(config, env=GUIDE_SECRETS).start()
            try:
                findings = await check(config, "nobody", asterisk, GUIDE_SECRETS, agi_bin(base))
            finally:
                assert await server.stop() == 0
        lines = printed(findings)
        assert all(finding.ok and not finding.skipped for finding in findings), lines
        assert {"asterisk user", "secrets.env", "web-token", "config secrets", "prompts",
                "nobat-agi", "dialplan address", "dialplan peer",
                "dialplan secret"} <= verdicts(lines).keys()
        for why in ("read the config", "write the store", "read the flows", "play the prompts",
                    "run it, as AGI(nobat-agi) does"):
            assert any(f"nobody may {why}" in line for line in lines), (why, lines)
    finally:
        await asyncio.to_thread(shutil.rmtree, base, ignore_errors=True)


async def test_doctor_says_when_the_dialplan_connects_elsewhere_than_nobat_listens(
        tmp_path: Path) -> None:
    config = demo_copy(tmp_path, port=free_port())
    edit_config(config, ("port = 0\n", "port = 4573\n"))
    plan = dialplan(tmp_path, "127.0.0.1:4573")
    lines = printed(await check(config, dialplan=plan))
    found = verdicts(lines)
    assert [found[key] for key in ("dialplan address", "dialplan peer", "dialplan secret")] == [
        "ok", "ok", "ok"], lines
    assert f"ok   dialplan address: {plan}: Asterisk connects to 127.0.0.1:4573, where nobat " \
           "listens on 127.0.0.1:4573 (fastagi.host, fastagi.port)" in lines

    lines = printed(await check(config, dialplan=dialplan(tmp_path, "agi://127.0.0.1:4574")))
    assert f"FAIL dialplan address: {plan}: Asterisk connects to 127.0.0.1:4574, but nobat " \
           "listens on 127.0.0.1:4573 (fastagi.host, fastagi.port)" in lines
    assert f"     fix: set NOBAT_FASTAGI=127.0.0.1:4573 in [globals] of {plan}, then " \
           '`asterisk -rx "dialplan reload"`' in lines


async def test_doctor_says_when_fastagi_allow_shuts_out_the_address_asterisk_uses(
        tmp_path: Path) -> None:
    """nobat listening on every address matches any host in the dialplan, but Asterisk
    connecting to (and so from) 10.9.8.7 must be let in too."""
    config = demo_copy(tmp_path, port=free_port())
    edit_config(config, ('host = "127.0.0.1"\nport = 0\n', 'host = "0.0.0.0"\nport = 4573\n'))
    lines = printed(await check(config, dialplan=dialplan(tmp_path, "10.9.8.7:4573")))
    found = verdicts(lines)
    assert (found["dialplan address"], found["dialplan peer"]) == ("ok", "FAIL"), lines
    assert "FAIL dialplan peer: Asterisk on this machine connects from 10.9.8.7, which " \
           "fastagi.allow (127.0.0.1/32, ::1/128) does not let in" in lines
    assert f'     fix: add "10.9.8.7" to fastagi.allow in {config}, then ' \
           "`systemctl restart nobat`" in lines


async def test_doctor_says_the_dialplans_secret_differs_without_showing_either(
        tmp_path: Path) -> None:
    config = demo_copy(tmp_path, port=free_port())
    other = "another-fastagi-secret-0002"
    plan = dialplan(tmp_path, "127.0.0.1:4573", other)
    lines = printed(await check(config, dialplan=plan))
    assert f"FAIL dialplan secret: NOBAT_FASTAGI_SECRET in [globals] of {plan} differs from " \
           "nobat's fastagi secret: nobat refuses every call it sends" in lines
    assert f"     fix: set it to nobat's (NOBAT_FASTAGI_SECRET in {tmp_path / 'secrets.env'}), " \
           'then `asterisk -rx "dialplan reload"`' in lines
    assert not any(other in line or DIALPLAN_SECRET in line for line in lines)


async def test_doctor_says_it_cannot_read_the_dialplan(tmp_path: Path) -> None:
    config = demo_copy(tmp_path, port=free_port())
    missing = tmp_path / "asterisk" / "extensions.conf"
    lines = printed(await check(config, dialplan=missing))
    assert f"FAIL dialplan: cannot read {missing}: No such file or directory" in lines
    assert not any(line.startswith(("ok   dialplan ", "FAIL dialplan ")) for line in lines)


async def test_doctor_says_which_secrets_others_may_read_and_how_to_close_them(
        tmp_path: Path) -> None:
    config = demo_copy(tmp_path, port=free_port())  # the demo keeps the FastAGI secret there
    config.chmod(0o640)
    secrets = tmp_path / "secrets.env"
    assert f"skip secrets.env: there is none at {secrets}" in printed(await check(config))
    secrets.write_text(f"NOBAT_AMI_SECRET={AMI_SECRET}\n")
    token = tmp_path / "web-token"  # beside the store, where a first run keeps it
    token.write_text("made-by-a-first-run-0123456789abcdef\n")
    secrets.chmod(0o640)
    token.chmod(0o644)
    lines = printed(await check(config))
    found = verdicts(lines)
    assert [found[key] for key in ("secrets.env", "web-token", "config secrets")] == [
        "FAIL", "FAIL", "FAIL"], lines
    assert f"     fix: chown root:root {secrets} && chmod 0600 {secrets}" in lines
    assert f"     fix: chmod 600 {token}" in lines
    [held] = [line for line in lines if line.startswith("FAIL config secrets: ")]
    assert held.startswith(f"FAIL config secrets: {config} (") and held.endswith(
        " -rw-r-----) holds fastagi.secret, which the group "
        f"{grp.getgrgid(config.stat().st_gid).gr_name} may read"), held
    assert f"     fix: move them to {secrets} (NOBAT_FASTAGI_SECRET=...), set them to \"\" in " \
           f"{config}, then `systemctl restart nobat`" in lines
    assert not any(DIALPLAN_SECRET in line or AMI_SECRET in line for line in lines)

    secrets.chmod(0o600)
    token.chmod(0o600)
    edit_config(config, (f'secret = "{DIALPLAN_SECRET}"', 'secret = ""'))
    lines = printed(await check(config, env={"NOBAT_FASTAGI_SECRET": DIALPLAN_SECRET}))
    found = verdicts(lines)
    assert [found[key] for key in ("secrets.env", "web-token", "config secrets")] == [
        "ok", "ok", "ok"], lines
    assert f"ok   config secrets: {config} holds no secret" in lines


async def test_doctor_looks_for_the_prompts_where_asterisk_plays_them(tmp_path: Path) -> None:
    """With ivr.asterisk_prompts set, Asterisk plays the prompts from there, not from
    ivr.prompts (where `nobat prompts build` speaks them)."""
    config = demo_copy(tmp_path, port=free_port())
    spoken, empty = tmp_path / "spoken", tmp_path / "empty"
    for folder in (spoken, empty):
        folder.mkdir()
        shutil.copy(ROOT / "prompts" / "manifest.toml", folder / "manifest.toml")
    edit_config(config, (f'prompts = "{ROOT / "prompts"}"', f'prompts = "{spoken}"'))
    database = await demo_store(tmp_path)
    await database.close()
    built = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "nobat", "-c", str(config), "prompts", "build"],
        capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    me = pwd.getpwuid(os.geteuid()).pw_name

    edit_config(config, ('asterisk_prompts = ""', f'asterisk_prompts = "{empty}"'))
    lines = printed(await check(config, me))
    [prompts] = [line for line in lines if line.startswith("FAIL prompts: ")]
    assert f" missing in {empty}: fa/" in prompts, prompts
    assert f"     fix: run `nobat prompts build` as nobat, then copy {spoken} to {empty}, " \
           "where Asterisk plays them (ivr.asterisk_prompts)" in lines

    edit_config(config, (f'prompts = "{spoken}"', f'prompts = "{empty}"'),
                (f'asterisk_prompts = "{empty}"', f'asterisk_prompts = "{spoken}"'))
    lines = printed(await check(config, me))
    assert f"ok   prompts: every prompt has its file in {spoken}" in lines
    assert any(line.startswith(f"ok   {spoken / 'fa'}: ")
               and line.endswith(f"{me} may play the prompts") for line in lines), lines


async def test_doctor_assumes_asterisks_usual_user_or_says_it_skipped_asterisks_side(
        tmp_path: Path) -> None:
    config = demo_copy(tmp_path, port=free_port())
    me = pwd.getpwuid(os.geteuid()).pw_name
    findings = await doctor(load_config(config, {}), None, dialplan=tmp_path / "none",
                            usual_asterisk_user=me)
    lines = printed(findings)
    [user] = [line for line in lines if line.startswith("ok   asterisk user: ")]
    assert user.startswith(f"ok   asterisk user: {me} (groups: ")
    assert user.endswith("), assumed as no --asterisk-user was given")
    assert any(line.startswith(f"ok   {config}: ") and line.endswith(f"{me} may read the config")
               for line in lines), lines

    findings = await check(config)
    [skipped] = [finding for finding in findings if finding.what == "asterisk user"]
    assert skipped.ok and skipped.skipped  # said, but no reason for exit code 1
    lines = printed(findings)
    assert "skip asterisk user: no --asterisk-user given and there is no user " \
           f"'{NO_SUCH_USER}': what Asterisk's user may read, write and run was not " \
           "checked; name it with --asterisk-user NAME" in lines
    assert not any("may read the config" in line for line in lines), lines


async def test_doctor_says_when_asterisk_cannot_run_the_nobat_agi_fallback(
        tmp_path: Path) -> None:
    """A missing link in agi-bin, or a script Asterisk's user may not run: the fallback fails."""
    config = demo_copy(tmp_path, port=free_port())
    me = pwd.getpwuid(os.geteuid()).pw_name
    folder = tmp_path / "agi-bin"
    folder.mkdir()
    lines = printed(await check(config, me, agi_bin=folder))
    assert f"FAIL nobat-agi: {folder / 'nobat-agi'} is missing: a call nobat does not take " \
           "skips the IVR's fallback and rings the office" in lines
    installed = Path(sys.executable).parent / "nobat-agi"
    assert f"     fix: ln -sf {installed} {folder / 'nobat-agi'}" in lines

    folder.rmdir()
    folder = agi_bin(tmp_path, mode=0o644)
    script = tmp_path / "venv-bin" / "nobat-agi"
    lines = printed(await check(config, me, agi_bin=folder))
    [line] = [line for line in lines if line.startswith("FAIL nobat-agi: ")]
    assert line.startswith(f"FAIL nobat-agi: {folder / 'nobat-agi'} -> {script} (")
    assert line.endswith(f" -rw-r--r--): {me} may not run it, as AGI(nobat-agi) does when "
                         "nobat does not take a call"), line
    assert f"     fix: chmod 0755 {script}, and let {me} enter {folder} and every folder " \
           f"above {script}" in lines

    script.chmod(0o755)
    found = verdicts(printed(await check(config, me, agi_bin=folder)))
    assert found["nobat-agi"] == "ok"


async def test_doctor_names_a_practice_whose_row_cannot_be_read(tmp_path: Path) -> None:
    config = demo_copy(tmp_path)
    await zone_nowhere(tmp_path, "shiraz-eye")
    lines = printed(await check(config))
    assert verdicts(lines)["clinic"] == "ok"
    [practices] = [line for line in lines if line.startswith("FAIL practices: ")]
    assert practices.startswith("FAIL practices: rows that cannot be read (1): shiraz-eye "
                                "(ZoneInfoNotFoundError: 'No time zone found with key "
                                "Asia/Nowhere'"), practices
    assert "     fix: run `nobat clinic load --compare` on their files" in lines
