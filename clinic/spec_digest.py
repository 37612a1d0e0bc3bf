"""A clinic file's checked contents as one digest, so a load can tell an unchanged file
without comparing its practice's rows one by one."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import json

from clinic.clinic_file import ClinicSpec


def spec_digest(spec: ClinicSpec, *salt: str) -> str:
    """SHA-256 of the spec's values (and `salt`), the same in every process: sets are
    sorted, so string hashing's per-process seed plays no part."""
    text = json.dumps([_plain(spec), *salt], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(value: object) -> object:
    """The value as JSON's types, in an order that does not depend on the process."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, set | frozenset):
        return sorted((_plain(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, dt.date | dt.time | dt.timedelta):
        return str(value)
    if value is None or isinstance(value, str | int | float):
        return value
    raise TypeError(f"a clinic spec holds a {type(value).__name__}, which has no digest form")
