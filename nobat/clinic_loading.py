"""A clinic file, or a folder of them, loaded practice by practice, so that one broken or
refused file keeps no other practice out: `nobat clinic load` and `nobat serve` share it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clinic.clinic_file import read_clinic_files
from clinic.staff_toml import StaffFileError
from db.clinic_sync import LoadRefused, load_clinic
from db.engine import Database


@dataclass(frozen=True)
class PracticeLoad:
    """One file's load: what it changed, or why it was not loaded (then nothing changed)."""

    file: str
    changes: tuple[str, ...] = ()
    failure: StaffFileError | LoadRefused | None = None


async def load_clinics(database: Database, path: Path) -> list[PracticeLoad]:
    """Load each practice of a file or folder in its own transaction; raises StaffFileError
    only for a folder without clinic files."""
    loads: list[PracticeLoad] = []
    for read in read_clinic_files(path):
        if read.spec is None or read.problems:
            loads.append(PracticeLoad(read.file, failure=StaffFileError(read.problems)))
            continue
        try:
            report = await load_clinic(database, read.spec)
        except LoadRefused as exc:
            loads.append(PracticeLoad(read.file, failure=exc))
            continue
        loads.append(PracticeLoad(read.file, tuple(report.changes)))
    return loads
