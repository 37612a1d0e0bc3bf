"""The flows in service, swapped whole on reload, and only for a set that checks out.

A call takes the snapshot current when it starts and keeps it, so an edit never changes a
call in progress. A broken edit is refused: the previous flows keep serving and the error,
with its file and line, is kept for the log and the status page.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from clinic.staff_toml import Problem, StaffFileError
from db.unreadable import Unreadable, named
from ivr.engine import ActionSpec
from ivr.flow import Flow
from ivr.flow_check import load_flows
from ivr.practice_routes import SHARED_FLOW, Routes
from ivr.prompts import PromptLibrary

log = logging.getLogger(__name__)
RoutesLoader = Callable[[], Awaitable[Routes]]


@dataclass(frozen=True)
class Snapshot:
    """Flows, the practices they serve and the prompts they were checked against, as one
    version."""

    flows: Mapping[str, Flow]
    routes: Routes
    practice_flows: Mapping[str, Mapping[str, Flow]] = field(default_factory=dict)
    """The flows of each practice that has its own (flows/<practice>/), by practice key."""

    @property
    def prompts(self) -> PromptLibrary:
        """Every prompt the flows may play."""
        return self.routes.prompts

    def flows_for(self, practice: str) -> Mapping[str, Flow]:
        """A practice's flows: its own where it has them, the folder's otherwise."""
        return self.practice_flows.get(practice, self.flows)

    def own_flows(self) -> list[tuple[str, Flow]]:
        """Each practice's own flow files (its key and the flow), the folder's left out."""
        return [(key, flow) for key, flows in self.practice_flows.items()
                for name, flow in flows.items()
                if name not in self.flows or flow.source != self.flows[name].source]

    @property
    def version(self) -> str:
        """One label for the whole set, from each file's hash."""
        own = [(f"{key}/{flow.name}", flow) for key, flow in self.own_flows()]
        return ",".join(f"{name}@{flow.version}"
                        for name, flow in sorted([*self.flows.items(), *own]))


class FlowStore:
    """Loads, checks and swaps the flow set; knows the last error if an edit was refused."""

    def __init__(self, directory: Path, actions: Mapping[str, ActionSpec],
                 routes: RoutesLoader, watched: tuple[Path, ...] = (),
                 practices: Callable[[], Awaitable[object]] | None = None) -> None:
        self.directory = directory
        self.actions = actions
        self.routes = routes
        self.watched = watched
        self.practices = practices
        """A stamp of the practices in the store (a load changes it), watched with the files."""
        self._practices_seen: object = None
        self.snapshot: Snapshot | None = None
        self.last_error: str | None = None
        """Why the last edit was refused (the flows in service are the ones before it)."""
        self.left_out: tuple[Unreadable, ...] = ()
        """The practices off the line, their rows unreadable, as the last load found them."""
        self.loaded_at: float | None = None
        self._seen: tuple[tuple[str, float], ...] = ()

    def current(self) -> Snapshot:
        """The snapshot a new call runs on."""
        assert self.snapshot is not None, "flows not loaded"
        return self.snapshot

    async def load(self) -> Snapshot:
        """Read and check the folder, and each practice's own folder in it, against its own
        prompts; raises StaffFileError and changes nothing if any fails."""
        routes = await self.routes()
        return await asyncio.to_thread(self._check, routes)

    def _check(self, routes: Routes) -> Snapshot:
        flows = load_flows(self.directory, self.actions, routes.prompts)
        if routes.platform and SHARED_FLOW not in flows:
            raise StaffFileError([Problem(str(self.directory / f"{SHARED_FLOW}.toml"), None, "",
                                          "several practices share the line: a number no "
                                          "practice lists needs this flow (docs/platform.md)")])
        own = {key: self.directory / key for key in routes.practices
               if key and (self.directory / key).is_dir()}
        found = _strays(self.directory, routes)
        practice_flows = {}
        for key, folder in own.items():
            try:
                practice_flows[key] = load_flows(self.directory, self.actions,
                                                 routes.practices[key].prompts, folder)
            except StaffFileError as exc:
                found += exc.problems
        if found:
            raise StaffFileError(found)
        return Snapshot(flows, routes, practice_flows)

    async def start(self) -> Snapshot:
        """The first load, at start-up; a broken folder raises StaffFileError."""
        self._seen = await asyncio.to_thread(self._stamp)
        self._practices_seen = self.practices and await self.practices()
        self.snapshot, self.loaded_at = await self.load(), time.time()
        log.info("flows loaded: %s", self.snapshot.version)
        self._left_out(self.snapshot)
        return self.snapshot

    async def reload(self, reason: str) -> bool:
        """Swap in the edited flows if they check out; True if the version changed."""
        try:
            fresh = await self.load()
        except StaffFileError as exc:
            self.last_error = str(exc)
            serving = self.snapshot.version if self.snapshot else "nothing"
            log.error("flows not reloaded (%s); still serving %s:\n%s", reason, serving, exc)
            return False
        self.last_error = None
        self._left_out(fresh)
        changed = self.snapshot is None or fresh.version != self.snapshot.version
        self.snapshot = fresh  # the practices and their words may have changed with the flows
        if changed:
            self.loaded_at = time.time()
            log.info("flows loaded (%s): %s", reason, fresh.version)
        return changed

    def _left_out(self, snapshot: Snapshot) -> None:
        """Name the practices whose rows cannot be read, off the line until put right."""
        routes = snapshot.routes
        self.left_out = routes.unreadable
        if not routes.unreadable:
            return
        if routes.platform:
            log.error("practices off the line, their numbers reaching the shared menu until "
                      "their rows are put right (%d): %s", len(routes.unreadable),
                      named(routes.unreadable))
        else:
            log.error("the practice's row cannot be read, its callers reach the office until "
                      "it is put right: %s", named(routes.unreadable))

    def _stamp(self) -> tuple[tuple[str, float], ...]:
        files = [*self.directory.glob("*.toml"), *self.directory.glob("*/*.toml"),
                 *(p for p in self.watched if p.exists())]
        return tuple(sorted((str(p), p.stat().st_mtime) for p in files))

    async def watch(self, every: float) -> None:
        """Reload when a flow file (or the prompt manifest) is added, removed or saved, or
        a practice is loaded or changed in the store (so a practice's number reaches it
        within `every` seconds of `nobat clinic load`)."""
        while True:
            await asyncio.sleep(every)
            stamp = await asyncio.to_thread(self._stamp)
            practices = self.practices and await self.practices()
            if stamp != self._seen or practices != self._practices_seen:
                reason = "file changed" if stamp != self._seen else "practices changed"
                self._seen, self._practices_seen = stamp, practices
                await self.reload(reason)


def _strays(directory: Path, routes: Routes) -> list[Problem]:
    """A folder among the flows that names no practice of the store: a misspelt key, whose
    flows would never run while the check said ok (none is named before any is loaded)."""
    known = {*routes.practices, *(off.practice for off in routes.unreadable)}
    if not known - {""}:
        return []
    problems = []
    for folder in sorted(p for p in directory.iterdir()
                         if p.is_dir() and not p.name.startswith((".", "_"))):
        if folder.name not in known:
            near = difflib.get_close_matches(folder.name, sorted(known), n=1)
            problems.append(Problem(str(folder), None, "", (
                "names no practice in the store, so its flows would never run"
                + (f"; did you mean {near[0]!r}?" if near else "")
                + " (a practice's own flows go in flows/<its key>/, docs/platform.md)")))
    return problems
