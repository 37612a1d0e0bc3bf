"""Runs a flow on a call: node after node, with back, office and failure handled in one place."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ivr.call import Call, CallEnd
from ivr.flow import Action, Branch, Collect, Flow, GotoFlow, Hangup, Language, Menu, Node, Play
from ivr.menu import Escape, ask
from ivr.outcome import Outcome

log = logging.getLogger(__name__)
ActionFn = Callable[[Call, Mapping[str, Any]], Awaitable[Outcome]]
OFFICE_NODE = Outcome.OFFICE
MAX_STEPS = 500
"""A flow that runs this many nodes in one call is looping; the caller goes to the office."""
FlowsOf = Callable[[str], Mapping[str, Flow]]
"""The flows a practice's calls run, by its key ("" on the shared number's menu)."""
MAX_FAILED_MENUS = 2
"""Menus that failed to the office in a row before the call ends with a goodbye: a caller who
cannot or does not answer is not cycled between menu and closed office forever."""


@dataclass(frozen=True)
class Choice:
    """A parameter that must be one of a few words, so a typo in a policy is caught by
    `nobat flows check`, not taken for the default; `refused` words say why they are not."""

    words: tuple[str, ...]
    default: str
    refused: Mapping[str, str] = field(default_factory=dict)

    def problem(self, value: object) -> str | None:
        """What is wrong with `value`, or None if it is one of the words."""
        expected = f"expected one of {', '.join(self.words)}"
        if isinstance(value, str) and value in self.words:
            return None
        if isinstance(value, str) and value in self.refused:
            return f"{value!r} is not offered: {self.refused[value]}; {expected}"
        return f"{expected}, got {value!r}"


@dataclass(frozen=True)
class ActionSpec:
    """A named action flows may call, with the parameters it accepts and the outcomes it ends in.

    Every action may also end in the shared outcomes: done (follow `next`), back, office, hangup.
    """

    run: ActionFn
    params: Mapping[str, type | Choice] = field(default_factory=dict)
    outcomes: tuple[Outcome, ...] = ()
    asks: bool = False
    """Whether it always waits for the caller's keys (a flow loop through it is no busy loop)."""


class FlowEngine:
    """One engine for every carrier; the flows it runs are handed in per call."""

    def __init__(self, actions: Mapping[str, ActionSpec]) -> None:
        self.actions = dict(actions)

    async def run(self, call: Call, flows: FlowsOf, entry: str) -> None:
        """Run `entry` until a hang-up node, a transfer, or the caller hanging up; each flow
        is the one of the practice the call is in at that step (the shared number's caller
        goes on in the flows of the practice they chose)."""
        flow = flows(call.services.practice)[entry]
        node_id = flow.start
        menus: list[str] = []
        for _ in range(MAX_STEPS):
            node = flow.nodes[node_id]
            call.step = f"{flow.name}/{node_id}"
            if isinstance(node, GotoFlow):
                flow, menus = flows(call.services.practice)[node.flow], []
                node_id = flow.start
                continue
            target = await self._step(call, node, menus)
            if target is None:
                return
            if target == Outcome.BACK:
                target = menus.pop() if menus else flow.start
            node_id = target if target in flow.nodes else OFFICE_NODE
            if node_id == OFFICE_NODE and OFFICE_NODE not in flow.nodes:
                await self.actions["office"].run(call, {})
                return
        log.error("flow %s looped for %d steps without ending; sending the caller to the office",
                  flow.name, MAX_STEPS)
        await self.actions["office"].run(call, {})

    async def _step(self, call: Call, node: Node, menus: list[str]) -> str | None:
        match node:
            case Play():
                await call.say(node.prompts)
                return node.next
            case Menu():
                if node.id in menus:
                    del menus[menus.index(node.id):]
                answer = await ask(call, node.prompts, node.reprompts, node.keys, node.retry)
                if answer is Escape.FAILED and node.retry.failure == OFFICE_NODE:
                    call.failed_menus += 1
                    if call.failed_menus >= MAX_FAILED_MENUS:
                        call.outcome = CallEnd.NO_INPUT
                        await call.say(["goodbye"])
                        await call.session.hang_up()
                        return None
                    return node.retry.failure
                if answer is Escape.FAILED:
                    return node.retry.failure
                call.failed_menus = 0
                if isinstance(answer, Escape):
                    return Outcome.of(answer)
                menus.append(node.id)
                return node.keys[answer]
            case Collect():
                return await self._collect(call, node)
            case Branch():
                for case in node.cases:
                    if case.test(call):
                        return case.target
                return node.otherwise
            case Language():
                call.language = node.language
                return node.next
            case Action():
                outcome = await self.actions[node.action].run(call, node.params)
                if outcome in node.outcomes:
                    return node.outcomes[outcome]
                if outcome is Outcome.HANGUP:
                    return None
                return outcome if outcome in (Outcome.BACK, Outcome.OFFICE) else node.next
            case Hangup():
                if call.outcome is CallEnd.UNFINISHED:
                    call.outcome = CallEnd.COMPLETED
                await call.say(node.prompts)
                await call.session.hang_up()
                return None
        raise AssertionError(f"unknown node {node!r}")

    async def _collect(self, call: Call, node: Collect) -> str:
        """Take a number with retries: too short or silent re-prompts, '*' goes back."""
        for attempt in range(node.retry.tries):
            entry = await call.read_digits(node.prompts if attempt == 0 else node.reprompts,
                                           max_digits=node.max_digits,
                                           digit_wait=node.retry.timeout)
            if entry.back:
                return Outcome.BACK
            if len(entry.digits) >= node.min_digits:
                call.values[node.into] = entry.digits
                return node.next
            if attempt < node.retry.tries - 1:
                await call.say(node.retry.invalid if entry.digits else node.retry.no_input)
        return node.retry.failure
