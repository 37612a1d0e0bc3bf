"""TOML that people edit by hand: every problem is reported with its file and line, all at once."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KeyPath = tuple[str | int, ...]

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_ASSIGN = re.compile(r"^\s*((?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-]+)"
                     r"(?:\s*\.\s*(?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-]+))*)\s*=")
_TOML_ERROR_AT = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$")
_MISSING: Any = object()


@dataclass(frozen=True)
class Problem:
    """One mistake in a staff-edited file, located so a person can find it."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class StaffFileError(Exception):
    """Raised with every problem found, so staff fix them all in one pass."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def _split_key(text: str) -> list[str]:
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_\-]+)", text)
    return [a or b or c for a, b, c in parts]


def key_lines(text: str) -> dict[KeyPath, int]:
    """Map each key path (tables, array items, keys) to the line where it is written."""
    lines: dict[KeyPath, int] = {}
    counters: dict[KeyPath, int] = {}
    current: KeyPath = ()
    in_multiline: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline:
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        header = _HEADER.match(line)
        if header and not _ASSIGN.match(line):
            names = _split_key(header.group(2))
            resolved: KeyPath = ()
            for name in names[:-1]:
                resolved += (name,)
                if resolved in counters:
                    resolved += (counters[resolved] - 1,)
            resolved += (names[-1],)
            if header.group(1) == "[[":
                index = counters.get(resolved, 0)
                counters[resolved] = index + 1
                lines.setdefault(resolved, number)
                resolved += (index,)
            current = resolved
            for end in range(1, len(current) + 1):
                lines.setdefault(current[:end], number)
            continue
        assign = _ASSIGN.match(line)
        if assign:
            path = current + tuple(_split_key(assign.group(1)))
            lines.setdefault(path, number)
            rest = line[assign.end():]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_multiline = quote
    return lines


def dotted(path: KeyPath) -> str:
    """Write a key path the way a person reads it: doctors[2].hours[1].from."""
    out = ""
    for part in path:
        out += f"[{part + 1}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def staff_bytes(path: Path | str) -> bytes:
    """A staff file's bytes; one that cannot be read raises StaffFileError naming it."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise StaffFileError([Problem(str(path), None, "", f"cannot read: {exc.strerror}")]
                             ) from None


@dataclass
class StaffToml:
    """A parsed file plus the problems found while reading it."""

    file: str
    data: dict[str, Any]
    lines: dict[KeyPath, int]
    problems: list[Problem] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | str) -> StaffToml:
        """Parse a file; a syntax error or a missing file raises StaffFileError with its line."""
        return cls.parse(staff_bytes(path), str(path))

    @classmethod
    def parse(cls, raw: bytes, name: str) -> StaffToml:
        """Parse bytes read from `name`; errors name that file."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            problem = Problem(name, line, "", "not UTF-8 text; save the file as UTF-8")
            raise StaffFileError([problem]) from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            match = _TOML_ERROR_AT.match(str(exc))
            line = int(match.group(2)) if match else None
            message = match.group(1) if match else str(exc)
            raise StaffFileError([Problem(name, line, "", f"invalid TOML: {message}")]) from None
        return cls(name, data, key_lines(text))

    def line_of(self, path: KeyPath) -> int:
        """The line of a key, or of the nearest enclosing table written down, or the first."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return 1

    def error(self, path: KeyPath, message: str) -> None:
        """Record a problem at a key."""
        self.problems.append(Problem(self.file, self.line_of(path), dotted(path), message))

    def raise_problems(self) -> None:
        """Raise all recorded problems, sorted by line, if there are any."""
        if self.problems:
            raise StaffFileError(sorted(self.problems, key=lambda p: (p.line or 0, p.key)))

    def table(self, path: KeyPath, allowed: Iterable[str], node: Any = _MISSING) -> dict[str, Any]:
        """Return the table at `path` (empty if absent), reporting keys it does not allow."""
        value = self.get_node(path) if node is _MISSING else node
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"expected a table, got {describe(value)}")
            return {}
        allowed = list(allowed)
        for key in value:
            if key not in allowed:
                self.error(path + (key,), f"unknown key; expected one of {', '.join(allowed)}")
        return value

    def get_node(self, path: KeyPath) -> Any:
        """Walk the parsed data along a key path; None where it is absent."""
        node: Any = self.data
        for part in path:
            if isinstance(part, int):
                node = node[part] if isinstance(node, list) and part < len(node) else None
            else:
                node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                return None
        return node

    def value(
        self,
        table: dict[str, Any],
        path: KeyPath,
        key: str,
        expected: type | tuple[type, ...],
        *,
        default: Any = _MISSING,
        convert: Callable[[Any], Any] | None = None,
        what: str | None = None,
    ) -> Any:
        """Read one key of a table: type-checked, then converted; a problem yields the default."""
        fallback = None if default is _MISSING else default
        if key not in table:
            if default is _MISSING:
                self.error(path + (key,), f"missing; expected {what or type_name(expected)}")
            return fallback
        raw = table[key]
        if not _is_instance(raw, expected):
            wanted = what or type_name(expected)
            self.error(path + (key,), f"expected {wanted}, got {describe(raw)}")
            return fallback
        if convert is None:
            return raw
        try:
            return convert(raw)
        except ValueError as exc:
            self.error(path + (key,), str(exc))
            return fallback


def _is_instance(raw: Any, expected: type | tuple[type, ...]) -> bool:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(raw, bool) and bool not in kinds:
        return False
    return isinstance(raw, kinds)


def type_name(expected: type | tuple[type, ...]) -> str:
    """Name TOML types in words staff know."""
    names = {str: "a string", int: "a whole number", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    kinds = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def describe(value: Any) -> str:
    """Show a wrong value briefly, with its type."""
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type_name(type(value))} {text}"


def one_of(options: tuple[str, ...]) -> Callable[[str], str]:
    """A `convert` for StaffToml.value that takes one of `options`."""
    def check(value: str) -> str:
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return value
    return check


def in_range(low: int, high: int) -> Callable[[int], int]:
    """A `convert` for StaffToml.value that takes a whole number from `low` to `high`."""
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}, got {value}")
        return value
    return check
