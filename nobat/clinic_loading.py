"""A clinic file, or a folder of them, loaded practice by practice, so that one broken or
refused file keeps no other practice out: `nobat clinic load` and `nobat serve` share it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clinic.clinic_file import clinic_files, read_clinic_files
from clinic.staff_toml import StaffFileError, StaffToml
from db.clinic_sync import HeldElsewhere, LoadRefused, load_clinic, loaded_digest, loaded_digests
from db.engine import Database


@dataclass(frozen=True)
class PracticeLoad:
    """One file's load: what it changed, or why it was not loaded (then nothing changed)."""

    file: str
    changes: tuple[str, ...] = ()
    failure: StaffFileError | LoadRefused | None = None
    unchanged: bool = False
    """The file is the one its practice was last loaded from: it was not compared with the
    rows again."""

    def summary(self) -> str:
        """What the load did, in one line for the person who ran it (a failure aside)."""
        if self.unchanged:
            return "unchanged since its last load"
        return "; ".join(self.changes) or "no changes"


async def load_clinics(database: Database, path: Path, *, compare: bool = False
                       ) -> list[PracticeLoad]:
    """Load each practice of a file or folder in its own transaction; raises StaffFileError
    only for a folder without clinic files. A file refused for a number or a code another
    practice holds is tried again once a later file let go of it (a code moved from one
    practice to another loads in one go). A file unchanged since its practice was last
    loaded from it is not compared with the rows again, unless `compare`."""
    loaded = await loaded_digests(database)
    files = clinic_files(path)
    if not compare and _all_unchanged(files, set(loaded.values())):
        return [PracticeLoad(str(file), unchanged=True) for file in files]
    loads: dict[str, PracticeLoad] = {}
    waiting = []
    reads = read_clinic_files(path)
    for read in reads:
        digest = loaded_digest(read.source)
        if read.spec is None or read.problems:
            loads[read.file] = PracticeLoad(read.file, failure=StaffFileError(read.problems))
        elif not compare and loaded.get(read.spec.key) == digest:
            loads[read.file] = PracticeLoad(read.file, unchanged=True)
        else:
            waiting.append((read, read.spec, digest))
    while waiting:
        held = []
        for read, spec, digest in waiting:
            file = read.file
            try:
                report = await load_clinic(database, spec, digest=digest)
            except HeldElsewhere as exc:
                doc = StaffToml.parse(read.source, file)
                loads[file] = PracticeLoad(file, failure=exc.located(
                    lambda path, doc=doc: f"{doc.file}:{doc.line_of(path)}"))
                held.append((read, spec, digest))
                continue
            except LoadRefused as exc:
                loads[file] = PracticeLoad(file, failure=exc)
                continue
            loads[file] = PracticeLoad(file, tuple(report.changes))
        waiting = held if len(held) < len(waiting) else []
    return [loads[read.file] for read in reads]


def _all_unchanged(files: list[Path], digests: set[str]) -> bool:
    """Whether each file is the one a practice of its own was last loaded from, so none needs
    reading (a restart's common case): practices share no key, number or code, so neither
    can these files."""
    try:
        found = {loaded_digest(file.read_bytes()) for file in files}
    except OSError:
        return False
    return len(found) == len(files) and found <= digests
