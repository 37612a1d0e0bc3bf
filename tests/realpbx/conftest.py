"""The real-PBX tier: tests that run a real Asterisk 22 built outside the repository.

They are not part of the default run (`pytest`, `make test`): they are collected only when
pytest is pointed at this folder or a file in it, as `make test-real` does. Then a missing
Asterisk fails the run with a message saying how to get one; nothing here is ever skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def named_explicitly(config: pytest.Config, folder: Path = HERE) -> bool:
    """Whether the command line points inside `folder` (not merely at tests/ or the repo);
    the SIP tier (tests/sippbx/) asks it about its own folder."""
    root = config.invocation_params.dir
    for arg in config.invocation_params.args:
        if arg.startswith("-"):
            continue
        path = (root / arg.split("::", 1)[0]).resolve()
        if path == folder or folder in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name.startswith("test_") and not named_explicitly(config):
        return True
    return None


@pytest.fixture(scope="session")
def asterisk_binary() -> Path:
    """The Asterisk this tier runs; its absence is a failure, not a skip."""
    from tests.realpbx.asterisk import AsteriskNotFound, find_asterisk, module_dir

    problem = None
    try:
        binary = find_asterisk()
        module_dir(binary)
    except AsteriskNotFound as exc:
        problem = str(exc)
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    return binary
