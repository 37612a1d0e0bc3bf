"""The SIP tier: tests that run a real Asterisk with PJSIP, SIPp phones and `nobat serve`.

Like the real-PBX tier (tests/realpbx/conftest.py) they are collected only when pytest is
pointed at this folder or a file in it, as `make test-sip` and `make test-real` do; then a
missing Asterisk or SIPp fails the run with a message saying how to get it, never a skip.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.realpbx.conftest import named_explicitly

HERE = Path(__file__).resolve().parent


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave the tier out unless the command line names this folder or a file in it."""
    if collection_path.name.startswith("test_") and not named_explicitly(config, HERE):
        return True
    return None


@pytest.fixture(scope="session", autouse=True)
def sip_tools() -> None:
    """The Asterisk (built with PJSIP) and the SIPp this tier runs; absent, the run fails."""
    from tests.realpbx.asterisk import AsteriskNotFound, find_asterisk, module_dir
    from tests.sippbx.sipp import SippNotFound, find_sipp

    problems = []
    try:
        modules = module_dir(find_asterisk())
        if not (modules / "chan_pjsip.so").is_file():
            problems.append(f"the Asterisk whose modules are in {modules} was built without "
                            "PJSIP (no chan_pjsip.so): build it with the bundled pjproject as "
                            "tests/realpbx/README.md describes.")
    except AsteriskNotFound as exc:
        problems.append(str(exc))
    try:
        find_sipp()
    except SippNotFound as exc:
        problems.append(str(exc))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nobat's prompts for this tier's clinic, spoken once per run by `nobat prompts build`
    (espeak-ng and sox) into a folder Asterisk plays them from."""
    from tests.sippbx.pbx import build_prompts

    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"`nobat prompts build` needs {missing}: apt-get install espeak-ng sox "
                    "(make test-packages does)", pytrace=False)
    try:
        return build_prompts(tmp_path_factory.mktemp("prompts-build"))
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
