"""A flow as staff write it in TOML, turned into immutable nodes the engine can run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clinic.staff_toml import KeyPath, StaffToml
from ivr.conditions import Test, parse_condition

LANGUAGES = ("fa", "en")
MENU_KEYS = frozenset("0123456789*#")


@dataclass(frozen=True)
class Retry:
    """How a menu treats silence and wrong keys: adhearsion's timeout / invalid / failure."""

    timeout: float = 5.0
    tries: int = 3
    invalid: tuple[str, ...] = ("invalid",)
    no_input: tuple[str, ...] = ("no-input",)
    failure: str = "office"


@dataclass(frozen=True)
class Play:
    """Play prompts (interruptible), then go on."""

    id: str
    prompts: tuple[str, ...]
    next: str


@dataclass(frozen=True)
class Menu:
    """Ask for one key: each key leads to a node; retries re-prompt with the short prompt."""

    id: str
    prompts: tuple[str, ...]
    reprompts: tuple[str, ...]
    keys: Mapping[str, str]
    retry: Retry


@dataclass(frozen=True)
class Case:
    """One line of a branch's `when`: the condition as staff wrote it, its test, where it leads."""

    condition: str
    test: Test
    target: str


@dataclass(frozen=True)
class Branch:
    """Go one way or another on a condition of the call (language, caller known, hours...)."""

    id: str
    cases: tuple[Case, ...]
    otherwise: str


@dataclass(frozen=True)
class Collect:
    """Ask for a number ('#' ends it) and keep it under a name for conditions and actions."""

    id: str
    prompts: tuple[str, ...]
    reprompts: tuple[str, ...]
    into: str
    min_digits: int
    max_digits: int
    next: str
    retry: Retry


@dataclass(frozen=True)
class Language:
    """Switch the call's language; every prompt after this is in it."""

    id: str
    language: str
    next: str


@dataclass(frozen=True)
class Action:
    """Run a named action (book, cancel, hours...) and follow the outcome it reports."""

    id: str
    action: str
    params: Mapping[str, Any]
    next: str
    outcomes: Mapping[str, str]


@dataclass(frozen=True)
class GotoFlow:
    """Continue in another flow file."""

    id: str
    flow: str


@dataclass(frozen=True)
class Hangup:
    """Say goodbye and end the call."""

    id: str
    prompts: tuple[str, ...]


Node = Play | Menu | Collect | Branch | Language | Action | GotoFlow | Hangup


@dataclass(frozen=True)
class Flow:
    """One validated flow file; immutable, so a call keeps the version it started with."""

    name: str
    start: str
    nodes: Mapping[str, Node]
    source: str
    version: str = field(default="")


KINDS = ("play", "menu", "collect", "branch", "language", "action", "goto", "hangup")
NODE_KEYS = {
    "play": ("kind", "prompt", "next"),
    "menu": ("kind", "prompt", "reprompt", "keys", "timeout", "tries", "invalid", "no_input",
             "failure"),
    "branch": ("kind", "when", "otherwise"),
    "language": ("kind", "language", "next"),
    "action": ("kind", "action", "params", "next", "outcomes"),
    "goto": ("kind", "flow"),
    "hangup": ("kind", "prompt"),
    "collect": ("kind", "prompt", "reprompt", "into", "min_digits", "max_digits", "next",
                "timeout", "tries", "invalid", "no_input", "failure"),
}


def parse_flow(doc: StaffToml, name: str) -> Flow:
    """Build a flow from a parsed file, recording problems on `doc`."""
    doc.table((), ("flow", "defaults", "nodes"))
    head = doc.table(("flow",), ("start",))
    defaults = _retry(doc, ("defaults",), doc.table(("defaults",), NODE_KEYS["menu"][4:]),
                      Retry())
    nodes_table = doc.data.get("nodes", {})
    if not isinstance(nodes_table, dict) or not nodes_table:
        doc.error(("nodes",), "expected [nodes.<id>] tables, at least one")
        nodes_table = {}
    nodes: dict[str, Node] = {}
    for node_id, table in nodes_table.items():
        node = _node(doc, ("nodes", node_id), node_id, table, defaults)
        if node is not None:
            nodes[node_id] = node
    start = doc.value(head, ("flow",), "start", str, what="the id of the first node")
    if start is not None and start not in nodes_table:
        doc.error(("flow", "start"), f"no node {start!r}")
    return Flow(name, start or "", nodes, doc.file)


def _prompts(doc: StaffToml, path: KeyPath, table: dict[str, Any], key: str,
             default: tuple[str, ...] | None = None) -> tuple[str, ...]:
    value = doc.value(table, path, key, (str, list),
                      default=None if default is None else list(default),
                      what="a prompt name or a list of prompt names")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not all(isinstance(item, str) and item for item in items):
        doc.error(path + (key,), "expected prompt names (strings)")
        return ()
    return tuple(items)


def _retry(doc: StaffToml, path: KeyPath, table: dict[str, Any], base: Retry) -> Retry:
    timeout = doc.value(table, path, "timeout", (int, float), default=base.timeout,
                        what="seconds, such as 5")
    tries = doc.value(table, path, "tries", int, default=base.tries)
    if not 0.5 <= timeout <= 60:
        doc.error(path + ("timeout",), f"expected seconds from 0.5 to 60, got {timeout}")
    if not 1 <= tries <= 10:
        doc.error(path + ("tries",), f"expected 1 to 10 tries, got {tries}")
    return Retry(
        timeout=float(timeout), tries=tries,
        invalid=_prompts(doc, path, table, "invalid", base.invalid),
        no_input=_prompts(doc, path, table, "no_input", base.no_input),
        failure=doc.value(table, path, "failure", str, default=base.failure))


def _node(doc: StaffToml, path: KeyPath, node_id: str, table: Any, defaults: Retry
          ) -> Node | None:
    if not isinstance(table, dict):
        doc.error(path, "expected a table: [nodes.<id>]")
        return None
    kind = doc.value(table, path, "kind", str, what=f"one of {', '.join(KINDS)}")
    if kind not in KINDS:
        if kind is not None:
            doc.error(path + ("kind",),
                      f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        return None
    doc.table(path, NODE_KEYS[kind], node=table)
    match kind:
        case "play":
            return Play(node_id, _prompts(doc, path, table, "prompt"),
                        doc.value(table, path, "next", str) or "")
        case "menu":
            prompts = _prompts(doc, path, table, "prompt")
            return Menu(node_id, prompts, _prompts(doc, path, table, "reprompt", prompts),
                        _keys(doc, path, table), _retry(doc, path, table, defaults))
        case "branch":
            return Branch(node_id, _cases(doc, path, table),
                          doc.value(table, path, "otherwise", str) or "")
        case "language":
            language = doc.value(table, path, "language", str, what="fa or en")
            if language not in LANGUAGES and language is not None:
                doc.error(path + ("language",), f"expected fa or en, got {language!r}")
            return Language(node_id, language or "fa", doc.value(table, path, "next", str) or "")
        case "action":
            return Action(node_id, doc.value(table, path, "action", str) or "",
                          doc.value(table, path, "params", dict, default={}),
                          doc.value(table, path, "next", str) or "",
                          doc.value(table, path, "outcomes", dict, default={}))
        case "collect":
            prompts = _prompts(doc, path, table, "prompt")
            low = doc.value(table, path, "min_digits", int, default=1)
            high = doc.value(table, path, "max_digits", int, what="the most digits to take")
            if high is not None and not 1 <= (low or 1) <= high <= 20:
                doc.error(path + ("max_digits",),
                          f"expected 1 <= min_digits <= max_digits <= 20, got {low} and {high}")
            return Collect(node_id, prompts, _prompts(doc, path, table, "reprompt", prompts),
                           doc.value(table, path, "into", str, what="a name for the number")
                           or "", low or 1, high or 1,
                           doc.value(table, path, "next", str) or "",
                           _retry(doc, path, table, defaults))
        case "goto":
            return GotoFlow(node_id, doc.value(table, path, "flow", str) or "")
        case _:
            return Hangup(node_id, _prompts(doc, path, table, "prompt", ()))


def _keys(doc: StaffToml, path: KeyPath, table: dict[str, Any]) -> dict[str, str]:
    keys = doc.value(table, path, "keys", dict, what="a table of key = node") or {}
    for key, target in keys.items():
        if key not in MENU_KEYS:
            doc.error(path + ("keys", key), "expected a phone key: 0-9, * or #")
        if not isinstance(target, str):
            doc.error(path + ("keys", key), "expected the id of a node")
    return {k: v for k, v in keys.items() if isinstance(v, str)}


def _cases(doc: StaffToml, path: KeyPath, table: dict[str, Any]) -> tuple[Case, ...]:
    """The `when` table, each condition parsed here, once, so a call never meets a bad one."""
    cases = doc.value(table, path, "when", dict, what="a table of condition = node") or {}
    return tuple(Case(condition, _test(doc, path, condition), target)
                 for condition, target in cases.items() if isinstance(target, str))


def _test(doc: StaffToml, path: KeyPath, condition: str) -> Test:
    """A condition's test; a bad one is reported, which refuses the flow, and never holds."""
    try:
        return parse_condition(condition)
    except ValueError as exc:
        doc.error(path + ("when", condition), str(exc))
        return lambda call: False
