"""The status page's token on a first run, as Jupyter does it: when config sets none, nobat
makes one, keeps it beside the database (mode 0600) and logs a link that logs in once."""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

from nobat.config import Config
from web.token_strength import weakness

log = logging.getLogger("nobat")
TOKEN_FILE = "web-token"
"""Its name, beside the SQLite file (or config.toml when the store is elsewhere)."""


class TokenFileError(Exception):
    """The token file cannot be read or made; the message says which file and why."""


def token_folder(config: Config) -> Path:
    """Beside the database file; beside config.toml for PostgreSQL or an in-memory store."""
    url = make_url(config.database.url)
    if url.drivername.startswith("sqlite") and url.database not in (None, "", ":memory:"):
        return Path(url.database).parent
    return config.path.resolve().parent


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
    token = secrets.token_urlsafe(32)
    while weakness(token) is not None:  # a random draw that looks typed: draw again
        token = secrets.token_urlsafe(32)
    with os.fdopen(descriptor, "w", encoding="ascii") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(token + "\n")
    log.warning("status page: no web.token is set, so nobat made one and keeps it in %s "
                "(mode 0600); set web.token or NOBAT_WEB_TOKEN to use your own", path)
    return token, True


def _kept(path: Path) -> str:
    """The token an earlier run made, refused if it was edited into a weak one or is not
    nobat's own (its folder is shared with Asterisk's user)."""
    try:
        token = path.read_text(encoding="ascii").strip()
        info = path.stat()
        mode, owner = stat.S_IMODE(info.st_mode), info.st_uid
    except (OSError, UnicodeError) as exc:
        raise TokenFileError(f"cannot read the status page token {path}: {exc}") from exc
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
