"""The status page's tokens nobat makes: the admin's on a first run, as Jupyter does it (when
config sets none, nobat makes one, keeps it beside the database, mode 0600, and logs a link
that logs in once), and each practice's staff token (`nobat page-token`), of which the store
keeps only a hash."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

from db.engine import Database
from db.page_tokens import keep_token
from nobat.config import Config
from web.token_strength import random_token, weakness

log = logging.getLogger("nobat")
TOKEN_FILE = "web-token"
"""Its name, beside the SQLite file (or config.toml when the store is elsewhere)."""


class TokenFileError(Exception):
    """The token file cannot be read or made; the message says which file and why."""


def token_folder(config: Config) -> Path:
    """Beside the database file; for PostgreSQL or an in-memory store, in systemd's
    StateDirectory when the unit has one, else the working directory (the unit's
    WorkingDirectory, /var/lib/nobat in docs/deployment.md): somewhere nobat may write."""
    url = make_url(config.database.url)
    if url.drivername.startswith("sqlite") and url.database not in (None, "", ":memory:"):
        return Path(url.database).parent
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) if state else Path.cwd()


def first_run_token(folder: Path) -> tuple[str, bool]:
    """The token kept in `folder`, made now if there is none; whether it was just made."""
    path = folder / TOKEN_FILE
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _kept(path), False
    except OSError as exc:
        raise TokenFileError(f"cannot make the status page token {path}: {exc.strerror}") \
            from exc
    token = random_token()
    with os.fdopen(descriptor, "w", encoding="ascii") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(token + "\n")
    log.warning("status page: no web.token is set, so nobat made one and keeps it in %s "
                "(mode 0600); set web.token or NOBAT_WEB_TOKEN to use your own", path)
    return token, True


def _kept(path: Path) -> str:
    """The token an earlier run made, refused if it was edited into a weak one or is not
    nobat's own (its folder is shared with Asterisk's user)."""
    try:  # no symlink followed, and the file checked is the one read
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(descriptor, "rb") as kept:
            info = os.fstat(kept.fileno())
            token = kept.read(4096).decode("ascii").strip()
    except (OSError, UnicodeError) as exc:
        raise TokenFileError(f"cannot read the status page token {path}: {exc}") from exc
    mode, owner = stat.S_IMODE(info.st_mode), info.st_uid
    if not stat.S_ISREG(info.st_mode):
        raise TokenFileError(f"the status page token {path} is not a plain file; delete it "
                             "to have a new one made")
    if owner != os.geteuid():
        raise TokenFileError(f"the status page token {path} belongs to uid {owner}, not to "
                             "nobat's user: someone else may have put it there; delete it "
                             "to have a new one made")
    if mode & 0o077:
        log.warning("status page token %s can be read by other users (mode %o): "
                    "chmod 600 it", path, mode)
    reason = weakness(token)
    if reason is not None:
        raise TokenFileError(f"the status page token in {path} is not usable ({reason}); "
                             "delete the file to have a new one made")
    return token


async def practice_token(database: Database, practice: str) -> str:
    """A new staff token for one practice, kept in the store as its hash only (in place of
    the practice's earlier one, whose sessions end); shown to whoever asked, and never again.
    Raises db.page_tokens.UnknownPractice for a key no practice has."""
    token = random_token()
    await keep_token(database, practice, token)
    log.info("status page: a new staff token for practice %s replaces any earlier one",
             practice)
    return token
