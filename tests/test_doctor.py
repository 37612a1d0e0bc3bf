"""`nobat doctor` against a running `nobat serve` and the fake PBX's AMI: what is right says
ok, what is wrong says FAIL with what to do, and the exit code tells a script."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from tests.fakepbx.ami_server import FakeAsterisk
from tests.support.postgres import free_port
from tests.support.server import ROOT, ServerProcess, demo_copy, demo_store, edit_config
from tests.test_classic_agi import SHARED_GID, deploy_as_the_guide_says

AMI_SECRET = "doctor-ami-secret-0042"


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
    """Each check's first word (ok or FAIL), by what it looked at."""
    return {line[5:].partition(":")[0]: line[:4].strip() for line in lines
            if line[:4] in ("ok  ", "FAIL")}


async def test_doctor_passes_what_works_and_says_how_to_fix_what_does_not(
        tmp_path: Path) -> None:
    config = demo_copy(tmp_path, port=free_port())
    fastagi = free_port()
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    shutil.copy(ROOT / "prompts" / "manifest.toml", prompts / "manifest.toml")
    edit_config(config, ("port = 0\n", f"port = {fastagi}\n"),
                (f'prompts = "{ROOT / "prompts"}"', f'prompts = "{prompts}"'))
    users = {"nobat": (AMI_SECRET, "call,system,user", "call,originate,reporting")}
    async with FakeAsterisk(users=users) as pbx:
        edit_config(config, ("port = 5038", f"port = {pbx.port}"))
        database = await demo_store(tmp_path)
        await database.close()
        server = await ServerProcess(config, env={"NOBAT_AMI_SECRET": AMI_SECRET}).start()
        try:
            code, lines = await run_doctor(config)
            found = verdicts(lines)
            assert found == {"config": "ok", "store": "ok", "clinic": "ok", "prompts": "FAIL",
                             "AMI": "ok", "FastAGI": "ok", "status page": "ok"}, lines
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
        assert any("read the config" in line for line in refused), lines
        assert any("write the store" in line for line in refused), lines
        assert f"     fix: usermod --append --groups {SHARED_GID} nobody (then restart " \
               "Asterisk), and the modes in docs/deployment.md" in lines
    finally:
        await asyncio.to_thread(shutil.rmtree, base, ignore_errors=True)
