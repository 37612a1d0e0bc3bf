"""Read every flow file of a folder and check them together: targets, actions, prompts, reach."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from clinic.staff_toml import KeyPath, Problem, StaffFileError, StaffToml
from ivr.engine import ActionSpec, Choice
from ivr.flow import (
    LANGUAGES,
    Action,
    Branch,
    Collect,
    Flow,
    GotoFlow,
    Hangup,
    Language,
    Menu,
    Node,
    Play,
    parse_flow,
)
from ivr.outcome import SHARED, Outcome
from ivr.prompts import PromptLibrary


def load_flows(directory: Path, actions: Mapping[str, ActionSpec],
               prompts: PromptLibrary | None = None, overrides: Path | None = None
               ) -> dict[str, Flow]:
    """Load `directory/*.toml`, each replaced by the file of its name in `overrides` (and
    with the flows only `overrides` has); raise StaffFileError with every problem in every
    file."""
    docs: dict[str, StaffToml] = {}
    flows: dict[str, Flow] = {}
    problems: list[Problem] = []
    named = {path.stem: path for folder in (directory, overrides) if folder is not None
             for path in sorted(folder.glob("*.toml"))}
    paths = [named[name] for name in sorted(named)]
    if not paths:
        raise StaffFileError([Problem(str(directory), None, "", "no flow files (*.toml)")])
    for path in paths:
        try:
            doc = StaffToml.load(path)
        except StaffFileError as exc:
            problems += exc.problems
            continue
        flow = parse_flow(doc, path.stem)
        docs[flow.name] = doc
        flows[flow.name] = Flow(flow.name, flow.start, flow.nodes, flow.source,
                                hashlib.sha256(path.read_bytes()).hexdigest()[:12])
    for name, flow in flows.items():
        _check(docs[name], flow, flows, actions, prompts)
        problems += docs[name].problems
    if problems:
        raise StaffFileError(sorted(problems, key=lambda p: (p.file, p.line or 0, p.key)))
    return flows


def _targets(node: Node) -> list[tuple[KeyPath, str]]:
    """Every node id a node may lead to, with the key that names it."""
    base: KeyPath = ("nodes", node.id)
    match node:
        case Play() | Language():
            return [(base + ("next",), node.next)]
        case Collect():
            return [(base + ("next",), node.next), (base + ("failure",), node.retry.failure)]
        case Menu():
            return [(base + ("keys", k), v) for k, v in node.keys.items()] + [
                (base + ("failure",), node.retry.failure)]
        case Branch():
            return [(base + ("when", c.condition), c.target) for c in node.cases] + [
                (base + ("otherwise",), node.otherwise)]
        case Action():
            return [(base + ("next",), node.next)] + [
                (base + ("outcomes", k), v) for k, v in node.outcomes.items()]
    return []


def _prompt_names(node: Node) -> Iterable[tuple[KeyPath, str]]:
    base: KeyPath = ("nodes", node.id)
    match node:
        case Play() | Hangup():
            yield from ((base + ("prompt",), p) for p in node.prompts)
        case Menu() | Collect():
            for key, names in (("prompt", node.prompts), ("reprompt", node.reprompts),
                               ("invalid", node.retry.invalid),
                               ("no_input", node.retry.no_input)):
                yield from ((base + (key,), p) for p in names)


def _check(doc: StaffToml, flow: Flow, flows: Mapping[str, Flow],
           actions: Mapping[str, ActionSpec], prompts: PromptLibrary | None) -> None:
    for node in flow.nodes.values():
        base: KeyPath = ("nodes", node.id)
        for path, target in _targets(node):
            if target not in flow.nodes and target != Outcome.BACK:
                doc.error(path, f"no node {target!r} in this flow")
        match node:
            case Action():
                _check_action(doc, base, node, actions)
            case GotoFlow() if node.flow not in flows:
                doc.error(base + ("flow",), f"no flow file {node.flow}.toml")
        if prompts is not None:
            for path, name in _prompt_names(node):
                for lang in LANGUAGES:
                    if prompts.missing(lang, [name]):
                        doc.error(path, f"prompt {name!r} has no {lang} text in the manifest")
    reachable = _reachable(flow) if flow.start in flow.nodes else set(flow.nodes)
    for unreachable in sorted(set(flow.nodes) - reachable):
        doc.error(("nodes", unreachable), "no other node leads here (unreachable)")
    for loop in _busy_loops(flow, actions):
        doc.error(("nodes", loop[0]), "these nodes loop without ever waiting for the caller: "
                  + " → ".join([*loop, loop[0]]))


def _check_action(doc: StaffToml, base: KeyPath, node: Action,
                  actions: Mapping[str, ActionSpec]) -> None:
    spec = actions.get(node.action)
    if spec is None:
        doc.error(base + ("action",),
                  f"unknown action {node.action!r}; expected one of {', '.join(actions)}")
        return
    for key, value in node.params.items():
        kind = spec.params.get(key)
        if kind is None:
            allowed = ", ".join(spec.params) or "none"
            doc.error(base + ("params", key), f"{node.action} takes no parameter {key!r} "
                      f"(allowed: {allowed})")
        elif isinstance(kind, Choice):
            problem = kind.problem(value)
            if problem is not None:
                doc.error(base + ("params", key), problem)
        elif not isinstance(value, kind):
            doc.error(base + ("params", key), f"expected {kind.__name__}, got {value!r}")
    for outcome in node.outcomes:
        if outcome not in (*spec.outcomes, *SHARED):
            doc.error(base + ("outcomes", outcome),
                      f"{node.action} never ends in {outcome!r}; it can end in "
                      f"{', '.join((*spec.outcomes, *SHARED))}")


def _reachable(flow: Flow) -> set[str]:
    seen: set[str] = set()
    todo = [flow.start, "office"] if "office" in flow.nodes else [flow.start]
    while todo:
        node_id = todo.pop()
        if node_id in seen or node_id not in flow.nodes:
            continue
        seen.add(node_id)
        todo += [target for _, target in _targets(flow.nodes[node_id])]
    return seen


def _waits(node: Node, actions: Mapping[str, ActionSpec]) -> bool:
    """Whether a node always waits for the caller (or ends the call)."""
    if isinstance(node, Menu | Collect | Hangup):
        return True
    return isinstance(node, Action) and node.action in actions and actions[node.action].asks


def _busy_loops(flow: Flow, actions: Mapping[str, ActionSpec]) -> list[list[str]]:
    """Cycles made only of nodes that never wait: the call would spin without listening."""
    busy = {nid for nid, node in flow.nodes.items() if not _waits(node, actions)}
    edges = {nid: [t for _, t in _targets(flow.nodes[nid]) if t in busy] for nid in busy}
    loops: list[list[str]] = []
    finished: set[str] = set()

    def visit(nid: str, path: list[str]) -> None:
        if nid in path:
            loop = path[path.index(nid):]
            if not any(set(loop) == set(seen) for seen in loops):
                loops.append(loop)
            return
        if nid in finished:
            return
        for target in edges[nid]:
            visit(target, [*path, nid])
        finished.add(nid)

    for start in sorted(busy):
        visit(start, [])
    return loops
