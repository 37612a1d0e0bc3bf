"""Asking the caller to choose: adhearsion's menu vocabulary (match, invalid, timeout, failure)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ivr.call import Call
from ivr.flow import Retry

T = TypeVar("T")


class Escape(enum.Enum):
    """Ways out of a menu that are not one of its options."""

    BACK = "back"
    OFFICE = "office"
    FAILED = "failed"


async def ask(call: Call, prompts: Sequence[str], reprompts: Sequence[str],
              keys: Collection[str], retry: Retry) -> str | Escape:
    """Ask for one key; a short re-prompt after a miss; '*' goes back and '0' asks for the office.

    A key pressed during the "wrong key" or "no input" prompt counts as the next answer.
    """
    pending: str | None = None
    for attempt in range(retry.tries):
        key = pending or await call.ask(prompts if attempt == 0 else reprompts, retry.timeout)
        pending = None
        if key in keys:
            return key
        if key == "*":
            return Escape.BACK
        if key == "0":
            return Escape.OFFICE
        if attempt < retry.tries - 1:
            pending = await call.say(retry.no_input if key is None else retry.invalid)
    return Escape.FAILED


@dataclass(frozen=True)
class Option(Generic[T]):
    """One choice in a menu built from data: what to say for it and what it stands for."""

    prompts: tuple[str, ...]
    value: T


async def choose(call: Call, intro: Sequence[str], options: Sequence[Option[T]], retry: Retry,
                 extra: Sequence[tuple[str, Sequence[str]]] = ()) -> T | str | Escape:
    """Offer options as "for X, press N" (the caller hears the option before the key).

    `extra` adds fixed keys such as ("9", prompts for "more times"); their key is returned.
    """
    numbered = {str(n): option for n, option in enumerate(options, start=1)}
    spoken = list(intro)
    for key, option in numbered.items():
        spoken += ["menu/for", *option.prompts, f"menu/press-{key}"]
    for key, prompts in extra:
        spoken += [*prompts, f"menu/press-{key}"]
    keys = {*numbered, *(key for key, _ in extra)}
    answer = await ask(call, spoken, spoken[len(intro):], keys, retry)
    if isinstance(answer, Escape):
        return answer
    return numbered[answer].value if answer in numbered else answer


PAGE = 5
"""Choices offered at once; "9" offers the next ones (menus stay at about six choices)."""
MORE = "9"


async def choose_paged(call: Call, intro: Sequence[str], values: Sequence[T],
                       said: Callable[[T], Sequence[str]], retry: Retry, more: Sequence[str]
                       ) -> T | Escape:
    """Offer `values` a page at a time, each as `said` says it, `more` (and 9) asking for
    the next page."""
    first = 0
    while True:
        rest = first + PAGE < len(values)
        page = [Option(tuple(said(value)), value) for value in values[first:first + PAGE]]
        answer = await choose(call, intro, page, retry, extra=[(MORE, more)] if rest else [])
        if answer == MORE and rest:
            first += PAGE
            continue
        return answer  # type: ignore[return-value]  # a page's value or an escape
