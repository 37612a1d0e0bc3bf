"""The FastAGI half of the fake PBX: Asterisk and a scripted caller, in virtual time.

Asterisk connects to nobat's FastAGI port as a client, and so does this fake. `FakeChannel` is
the sans-I/O core: it takes one `Command` and returns what Asterisk 22 writes back (the reply
and any HANGUP line), moving a virtual clock as prompts play and the caller's keys arrive, so
tests are instant and deterministic. `place_call` is the thin socket shell around it.

What is modelled, as read in Asterisk 22.10.1's sources:
- res/res_agi.c: every reply (handle_*), 510/511/520 and the commands allowed on a dead channel
  (agi_handle_command, the commands[] table), the HANGUP lines (run_agi).
- main/file.c waitstream_core: only the end of a DTMF tone counts; a key outside the escape set
  is read and thrown away; forward and rewind keys are checked before stop keys.
- main/app.c: GET DATA's timeouts (ast_app_getdata_full), CONTROL STREAM FILE's endpos in
  milliseconds and -1 at the end (control_streamfile), SendDTMF's 100 ms of silence before the
  first tone (dtmf_stream); main/channel.c ast_readstring_full: '#' ends entry.
- apps/app_read.c and main/app.c ast_app_getdata_terminator: EXEC Read plays its '&' list, any
  key stopping a file, 50 ms for a key between files and its timeout after the last; a missing
  file is skipped (the last one makes READSTATUS ERROR); it answers 0, whatever happened.
- Channel state (res_agi.c handle_channelstatus, handle_answer; app_playback.c): an inbound
  call reaches AGI ringing (CHANNEL STATUS 4) unless the dialplan answered it; ANSWER, EXEC
  Answer and EXEC Playback/Background (without their no-answer options) answer it (6). Until
  then the caller hears nothing that plays and no key of theirs arrives: a PJSIP caller has
  had only 100 Trying, no SDP. The caller's script starts when the call is answered; a
  caller nobody answers gives up after `Caller.gives_up_after` seconds of ringing.
- Between commands no virtual time passes. A real Asterisk reads and drops any key that arrives
  while it waits for the next command (run_agi), so keys only ever reach the command during
  which they arrive; keys the caller types ahead reach the next command that listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ivr.agi_protocol import (
    AGI_VERBS,
    DEAD_CHANNEL,
    GET_DATA_USAGE,
    INVALID_COMMAND,
    NEED_DATA,
    NO_USAGE,
    AgiClientConnection,
    AgiEnvironment,
    AgiProtocolError,
    Command,
    Hangup,
    Reply,
    usage_reply,
)
from tests.fakepbx.script import (
    BETWEEN_DIGITS_SECONDS,
    DIGIT_SECONDS,
    QUIET_BEFORE_DIGITS_SECONDS,
    Caller,
    CallerAction,
    HangUp,
    Hear,
    Press,
    Wait,
)

SAMPLE_RATE = 8000
"""Prompts are 8 kHz, so STREAM FILE's endpos is played seconds times 8000."""
FRAME_SAMPLES = 160
"""Playback stops on a 20 ms frame, so a cut-short endpos is a multiple of 160 (real tier)."""
SAY_ITEM_SECONDS = 0.85
"""One sound file of SAY *: in capture a1 SAY DIGITS 123 took 2.49 s, SAY DATE's 7 files 6.36 s."""
DEFAULT_PROMPT_SECONDS = 2.0
ANY_DIGIT = "0123456789*#ABCD"
STATE_RING, STATE_UP = 4, 6
DIALPLAN_SECRET = "fake-pbx-fastagi-secret-0001"
"""What the fake's dialplan holds in NOBAT_FASTAGI_SECRET and passes as `key=` with every
AGI(), as nobat's shipped extensions.conf does; test rigs give nobat the same secret."""
"""CHANNEL STATUS of an inbound call not yet answered, and of an answered one."""
FAKE_EPOCH = 1_700_000_000
"""Uniqueids are "<epoch>.<seq>"; a fixed epoch keeps transcripts deterministic."""

PromptSeconds = Callable[[str], float | None]
"""How long a prompt plays, or None when Asterisk would not find the file."""

# Commands res_agi runs on a hung-up channel (dead = 1 in its commands[] table); others get 511.
DEAD_CHANNEL_VERBS = frozenset(
    {
        "ASYNCAGI BREAK", "DATABASE DEL", "DATABASE DELTREE", "DATABASE GET", "DATABASE PUT",
        "EXEC", "GET FULL VARIABLE", "GET VARIABLE", "NOOP", "SET VARIABLE", "SPEECH DESTROY",
        "SPEECH UNLOAD GRAMMAR", "VERBOSE",
    }
)  # fmt: skip

# SAY verbs: the argument counts res_agi accepts, whether argv[2] must scan as an integer, and
# how many sound files English say.c plays (a fixed estimate for dates and times).
_SAY: dict[str, tuple[int, float, bool, Callable[[str], int]]] = {
    "SAY DIGITS": (4, 4, True, len),
    "SAY NUMBER": (4, 5, True, lambda text: len(str(_scan_int(text)))),
    "SAY ALPHA": (4, 5, False, len),
    "SAY PHONETIC": (4, 4, False, len),
    "SAY DATE": (4, 4, True, lambda _: 7),
    "SAY TIME": (4, 4, True, lambda _: 4),
    "SAY DATETIME": (4, math.inf, True, lambda _: 12),
}


def files_played(command: Command) -> list[str]:
    """The sound files a command plays: STREAM FILE's one, or the '&' list of an EXEC of
    Read, Playback or Background (before their first comma)."""
    if command.verb in ("STREAM FILE", "CONTROL STREAM FILE", "GET DATA", "GET OPTION"):
        return command.args[:1]
    if command.verb == "EXEC" and len(command.args) > 1:
        application, data = command.args[0].lower(), command.args[1]
        if application == "read":
            return data.split(",")[1].split("&") if "," in data else []
        if application in ("playback", "background"):
            return data.partition(",")[0].split("&")
    return []


def uniform_prompts(name: str) -> float:
    """Every prompt exists and lasts DEFAULT_PROMPT_SECONDS, for tests that do not care."""
    return DEFAULT_PROMPT_SECONDS


@dataclass(frozen=True, slots=True)
class Timeline:
    """When each of the caller's keys reaches Asterisk, and when the caller hangs up.

    Actions after a Hear wait in `later`, as (prompt, actions), until that prompt starts.
    """

    keys: tuple[tuple[float, str], ...]
    hangup_at: float = math.inf
    later: tuple[tuple[str, tuple[CallerAction, ...]], ...] = ()

    @classmethod
    def of(cls, caller: Caller) -> Timeline:
        """Lay the script out as SendDTMF runs it; a key counts when its tone ends (DTMF end)."""
        return cls.laid_out(caller.actions, 0.0)

    @classmethod
    def laid_out(cls, actions: Sequence[CallerAction], start: float) -> Timeline:
        """Lay out actions from `start` up to the first Hear; the rest waits in `later`."""
        now, keys = start, []
        for index, action in enumerate(actions):
            match action:
                case Wait(seconds):
                    now += seconds
                case Press(digits):
                    now += QUIET_BEFORE_DIGITS_SECONDS
                    for digit in digits:
                        keys.append((now + DIGIT_SECONDS, digit))
                        now += DIGIT_SECONDS + BETWEEN_DIGITS_SECONDS
                case HangUp():
                    if index != len(actions) - 1:
                        raise ValueError(f"the caller cannot act after HangUp: {actions}")
                    return cls(tuple(keys), now)
                case Hear(prompt):
                    return cls(tuple(keys), math.inf, ((prompt, tuple(actions[index + 1:])),))
        return cls(tuple(keys))

    def heard(self, prompt: str, at: float) -> Timeline:
        """The timeline once `prompt` starts at `at`: a Hear waiting for it comes due."""
        if not self.later or not (prompt == self.later[0][0]
                                  or prompt.endswith("/" + self.later[0][0])):
            return self
        rest = Timeline.laid_out(self.later[0][1], at)
        keys = tuple(sorted(self.keys + rest.keys, key=lambda key: key[0]))
        return Timeline(keys, min(self.hangup_at, rest.hangup_at), rest.later)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One command, Asterisk's reply, and the virtual time the reply went out."""

    command: Command
    reply: Reply
    at: float


@dataclass(frozen=True, slots=True)
class Heard:
    """One prompt the caller heard; outcome is "played", "interrupted", "hung up" or "missing"."""

    prompt: str
    at: float
    seconds: float
    outcome: str
    digit: str | None = None


@dataclass(frozen=True, slots=True)
class Key:
    """One key that reached Asterisk: when, during which command, and whether it counted."""

    digit: str
    at: float
    command: str
    used: bool


@dataclass(frozen=True, slots=True)
class Application:
    """One EXEC, so tests can check transfers and dials nobat asked for."""

    name: str
    data: str
    at: float


@dataclass
class CallTranscript:
    """Everything that happened on one call, for assertions in flow tests."""

    environment: AgiEnvironment
    variables: dict[str, str]
    exchanges: list[Exchange] = field(default_factory=list)
    heard: list[Heard] = field(default_factory=list)
    keys: list[Key] = field(default_factory=list)
    applications: list[Application] = field(default_factory=list)
    unknown_commands: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    hung_up_at: float | None = None
    hung_up_by: str | None = None
    nobat_closed: bool = False
    stalled: bool = False
    answered_at: float | None = None
    unheard: list[str] = field(default_factory=list)
    """Prompts played while the call was not answered: time passed, the caller heard none."""

    @property
    def consumed(self) -> str:
        """The keys commands used, in order, to compare with what the caller pressed."""
        return "".join(key.digit for key in self.keys if key.used)

    @property
    def dropped(self) -> str:
        """The keys Asterisk threw away (outside a prompt's escape digits)."""
        return "".join(key.digit for key in self.keys if not key.used)

    @property
    def prompts(self) -> list[str]:
        """The prompts in the order the caller heard them."""
        return [heard.prompt for heard in self.heard]

    def assert_clean(self) -> None:
        """Fail on what a working nobat never causes: bad commands, stalls, endless waits."""
        if self.failures:
            raise AssertionError("the fake PBX saw:\n" + "\n".join(f"  {f}" for f in self.failures))


class _ShowUsage(Exception):
    """A handler refused its arguments, as RESULT_SHOWUSAGE does in res_agi."""


_channel_numbers = itertools.count(1)


def call_environment(
    caller: Caller, url: str, args: Sequence[str] = (), **values: str
) -> AgiEnvironment:
    """Build the environment Asterisk sends for this caller; `values` override any agi_* value."""
    number = next(_channel_numbers)
    layout = {
        "channel": f"Local/caller@fake-phones-{number:08x};1",
        "uniqueid": f"{FAKE_EPOCH}.{number}",
        "callerid": caller.number or "unknown",
        "calleridname": caller.name or "unknown",
        "dnid": caller.dialled or "unknown",
    }
    return AgiEnvironment.for_request(url, args, **{**layout, **values})


class FakeChannel:
    """Asterisk's end of one call in AGI, without I/O: a command in, the events to send out."""

    def __init__(
        self,
        caller: Caller,
        environment: AgiEnvironment,
        prompt_seconds: PromptSeconds = uniform_prompts,
        variables: Mapping[str, str] | None = None,
        sighup: Callable[[], None] | None = None,
        answered: bool = False,
    ) -> None:
        """`sighup` makes this a classic AGI call: res_agi tells a process of the hang-up by
        SIGHUP (run_agi: kill(pid, SIGHUP)), never by a HANGUP line, which is FastAGI's.
        `answered`: the channel is up before AGI() (the dialplan answered, or it is an
        originated leg that was answered); otherwise the caller is still hearing it ring."""
        self._caller = caller
        self.timeline = Timeline((), caller.gives_up_after)
        self._sighup = sighup
        self.clock = 0.0
        self.dead = False
        self._prompt_seconds = prompt_seconds
        self._next_key = 0
        self._autohangup_at = math.inf
        self._announced = False
        self._verb = ""
        channel_variables = {
            "CHANNEL": environment.channel,
            "CHANNEL(name)": environment.channel,
            "CHANNEL(state)": "Ring",
            "UNIQUEID": environment.uniqueid,
            "CONTEXT": environment.context,
            "EXTEN": environment.extension,
            "PRIORITY": environment.variables.get("agi_priority", ""),
            "CALLERID(num)": environment.callerid or "",
            "CALLERID(name)": environment.calleridname or "",
            **(variables or {}),
        }
        self.transcript = CallTranscript(environment, channel_variables)
        if answered:
            self._answer()
        self._handlers: dict[str, Callable[[list[str]], Reply]] = {
            "ANSWER": self._answer_command,
            "NOOP": lambda argv: Reply.success(0),
            "VERBOSE": self._verbose,
            "CHANNEL STATUS": self._channel_status,
            "HANGUP": self._hangup,
            "GET VARIABLE": self._get_variable,
            "GET FULL VARIABLE": self._get_full_variable,
            "SET VARIABLE": self._set_variable,
            "SET CALLERID": self._set_callerid,
            "SET CONTEXT": lambda argv: self._set_location(argv, "CONTEXT"),
            "SET EXTENSION": lambda argv: self._set_location(argv, "EXTEN"),
            "SET PRIORITY": self._set_priority,
            "SET MUSIC": self._set_music,
            "SET AUTOHANGUP": self._set_autohangup,
            "STREAM FILE": self._stream_file,
            "CONTROL STREAM FILE": self._control_stream_file,
            "GET OPTION": self._get_option,
            "GET DATA": self._get_data,
            "WAIT FOR DIGIT": self._wait_for_digit,
            "EXEC": self._exec,
            **{verb: self._say for verb in _SAY},
        }

    # The conversation.

    def handle(self, command: Command) -> list[Reply | Hangup]:
        """Answer one command as Asterisk would, with a HANGUP line before or after it if due."""
        hangup_at, by = self._hangup_due()
        if not self.dead and self.clock >= hangup_at:
            self._hang_up(hangup_at, by)
        before = self._announce()
        reply = self._reply(command)
        self.transcript.exchanges.append(Exchange(command, reply, self.clock))
        return [*before, reply, *self._announce()]

    def close(self) -> list[Hangup]:
        """nobat closed its socket; res_agi still writes HANGUP (unless AGISIGHUP=no); a
        classic process that closed its end is no longer signalled (its pid is dropped)."""
        self.transcript.nobat_closed = True
        return [] if self._sighup is not None else [Hangup()]

    def stall(self, seconds: float) -> list[Hangup]:
        """nobat sent no command for `seconds` of real time: hang up so no test hangs forever."""
        self.transcript.stalled = True
        self.fail(f"nobat sent no command for {seconds} s of real time")
        if not self.dead:
            self._hang_up(self.clock, "fake PBX")
        return self._announce()

    def fail(self, problem: str) -> None:
        """Note something a working nobat never causes; assert_clean() reports it."""
        self.transcript.failures.append(f"at {self.clock:.2f} s: {problem}")

    def _reply(self, command: Command) -> Reply:
        argv = [*command.verb.split(), *command.args]
        line = " ".join(argv)
        self._verb = command.verb
        if command.verb not in AGI_VERBS:
            self.transcript.unknown_commands.append(line)
            self.fail(f"unknown command {line!r} (510)")
            return INVALID_COMMAND
        if self.dead and command.verb not in DEAD_CHANNEL_VERBS:
            return DEAD_CHANNEL
        handler = self._handlers.get(command.verb)
        if handler is None:
            self.fail(f"{line!r}: the fake PBX does not model {command.verb} (510)")
            return INVALID_COMMAND
        try:
            return handler(argv)
        except _ShowUsage:
            self.fail(f"{line!r}: arguments Asterisk refuses (520)")
            return usage_reply(GET_DATA_USAGE) if command.verb == "GET DATA" else NO_USAGE

    # Answering.

    @property
    def answered(self) -> bool:
        """Whether the channel is up: only then does audio reach the caller and keys come."""
        return self.transcript.answered_at is not None

    def _answer(self) -> None:
        """Bring the channel up; the caller, who heard it ring, starts to act from now."""
        if self.answered:
            return
        self.transcript.answered_at = self.clock
        self.transcript.variables["CHANNEL(state)"] = "Up"
        self.timeline = Timeline.laid_out(self._caller.actions, self.clock)

    def _answer_command(self, argv: list[str]) -> Reply:
        self._answer()
        return Reply.success(0)

    # Time, keys and hang-ups.

    def _hangup_due(self) -> tuple[float, str]:
        return min((self.timeline.hangup_at, "caller"), (self._autohangup_at, "autohangup"))

    def _hang_up(self, at: float, by: str) -> None:
        self.dead = True
        self.clock = max(self.clock, at)
        self.transcript.hung_up_at = self.clock
        self.transcript.hung_up_by = by

    def _announce(self) -> list[Hangup]:
        """The one unsolicited HANGUP line res_agi writes once the channel is gone (or, for
        a classic process, the SIGHUP it sends instead)."""
        if not self.dead or self._announced:
            return []
        self._announced = True
        if self._sighup is not None:
            self._sighup()
            return []
        return [Hangup()]

    def _key_before(self, deadline: float) -> str | None:
        """Move the clock to the next key arriving before `deadline`, else to it or the hang-up."""
        hangup_at, by = self._hangup_due()
        if self._next_key < len(self.timeline.keys):
            at, digit = self.timeline.keys[self._next_key]
            if at < min(deadline, hangup_at):
                self._next_key += 1
                self.clock = at
                return digit
        if hangup_at < deadline:
            self._hang_up(hangup_at, by)
        elif deadline == math.inf:
            self.fail(f"{self._verb} waits forever, but the caller has no keys left to press")
            self._hang_up(self.clock, "fake PBX")
        else:
            self.clock = deadline
        return None

    def _record(self, digit: str, used: bool) -> None:
        self.transcript.keys.append(Key(digit, self.clock, self._verb, used))

    def _listen(self, seconds: float, wanted: str = ANY_DIGIT) -> str | None:
        """Wait up to `seconds` for any key, as ast_waitfordigit_full does."""
        digit = self._key_before(self.clock + seconds)
        if digit is not None:
            self._record(digit, digit in wanted)
        return digit

    def _prompt(self, name: str) -> float | None:
        seconds = self._prompt_seconds(name)
        if seconds is None:
            self.transcript.heard.append(Heard(name, self.clock, 0.0, "missing"))
        return seconds

    def _play(self, prompt: str, seconds: float, escape: str) -> str | None:
        """Play audio that a key in `escape` stops; other keys are lost, as in waitstream_core."""
        start = self.clock
        self.timeline = self.timeline.heard(prompt, start)
        while (digit := self._key_before(start + seconds)) is not None:
            self._record(digit, digit in escape)
            if digit in escape:
                break
        self._heard(prompt, start, digit)
        return digit

    def _heard(self, prompt: str, start: float, digit: str | None) -> None:
        if not self.answered:
            self.transcript.unheard.append(prompt)
            self.fail(f"{self._verb} {prompt!r} played into a call nobody answered: the "
                      "caller heard nothing")
            return
        outcome = "interrupted" if digit else "hung up" if self.dead else "played"
        self.transcript.heard.append(Heard(prompt, start, self.clock - start, outcome, digit))

    def _stream(self, name: str, escape: str, offset: int = 0) -> tuple[str | None, int] | None:
        """Play a file from `offset` samples: the key that stopped it and the endpos, or None."""
        seconds = self._prompt(name)
        if seconds is None:
            return None
        total = round(seconds * SAMPLE_RATE)
        first = min(max(offset, 0), total)
        start = self.clock
        digit = self._play(name, (total - first) / SAMPLE_RATE, escape)
        if digit is None and not self.dead:
            return None, total
        played = round((self.clock - start) * SAMPLE_RATE / FRAME_SAMPLES) * FRAME_SAMPLES
        return digit, min(total, first + played)

    def _result(self, digit: str | None) -> int:
        """A key's ASCII code, -1 after a hang-up, else 0: the result of every media command."""
        return ord(digit) if digit else -1 if self.dead else 0

    # Commands, in res_agi's words.

    def _verbose(self, argv: list[str]) -> Reply:
        if len(argv) < 2:
            raise _ShowUsage
        return Reply.success(1)

    def _channel_status(self, argv: list[str]) -> Reply:
        if len(argv) > 3:
            raise _ShowUsage
        if len(argv) == 3 and argv[2] != self.transcript.environment.channel:
            return Reply.success(-1)
        return Reply.success(STATE_UP if self.answered else STATE_RING)

    def _hangup(self, argv: list[str]) -> Reply:
        if len(argv) > 2:
            raise _ShowUsage
        if len(argv) == 2 and argv[1] != self.transcript.environment.channel:
            return Reply.success(-1)
        self._hang_up(self.clock, "nobat")
        return Reply.success(1)

    def _get_variable(self, argv: list[str]) -> Reply:
        if len(argv) != 3:
            raise _ShowUsage
        value = self.transcript.variables.get(argv[2])
        return Reply.success(0) if value is None else Reply.success(1, value)

    def _get_full_variable(self, argv: list[str]) -> Reply:
        if len(argv) not in (4, 5):
            raise _ShowUsage
        if len(argv) == 5 and argv[4] != self.transcript.environment.channel:
            return Reply.success(0)
        variables = self.transcript.variables
        return Reply.success(1, _SUBSTITUTION.sub(lambda m: variables.get(m[1], ""), argv[3]))

    def _set_variable(self, argv: list[str]) -> Reply:
        if len(argv) != 4:
            raise _ShowUsage
        self.transcript.variables[argv[2]] = argv[3]
        return Reply.success(1)

    def _set_callerid(self, argv: list[str]) -> Reply:
        if len(argv) > 2:
            name, number = _parse_callerid(argv[2])
            self.transcript.variables.update({"CALLERID(name)": name, "CALLERID(num)": number})
        return Reply.success(1)

    def _set_location(self, argv: list[str], variable: str) -> Reply:
        if len(argv) != 3:
            raise _ShowUsage
        self.transcript.variables[variable] = argv[2]
        return Reply.success(0)

    def _set_priority(self, argv: list[str]) -> Reply:
        if len(argv) != 3 or _scan_int(argv[2]) is None:
            raise _ShowUsage  # a label would need the dialplan, which the fake does not have
        return self._set_location(argv, "PRIORITY")

    def _set_music(self, argv: list[str]) -> Reply:
        if len(argv) < 3:
            raise _ShowUsage
        return Reply.success(0)

    def _set_autohangup(self, argv: list[str]) -> Reply:
        if len(argv) != 3 or (seconds := _scan_float(argv[2])) is None:
            raise _ShowUsage
        self._autohangup_at = self.clock + seconds if seconds > 0 else math.inf
        return Reply.success(0)

    def _stream_file(self, argv: list[str]) -> Reply:
        if not 4 <= len(argv) <= 5:
            raise _ShowUsage
        offset = _scan_int(argv[4]) if len(argv) == 5 else 0
        if offset is None:
            raise _ShowUsage
        played = self._stream(argv[2], argv[3], offset)
        if played is None:
            return Reply.success(-1, endpos=offset)
        digit, endpos = played
        return Reply.success(self._result(digit), endpos=endpos)

    def _get_option(self, argv: list[str]) -> Reply:
        if not 4 <= len(argv) <= 5:
            raise _ShowUsage
        timeout = _atoi(argv[4]) if len(argv) == 5 else 5000  # the dialplan's digit timeout
        played = self._stream(argv[2], argv[3])
        if played is None:
            return Reply.success(-1, endpos=0)
        digit, endpos = played
        if digit is None and not self.dead:
            digit = self._listen(_seconds(timeout), argv[3])
            digit = digit if digit and digit in argv[3] else None
        return Reply.success(self._result(digit), endpos=endpos)

    def _control_stream_file(self, argv: list[str]) -> Reply:
        if not 5 <= len(argv) <= 10:
            raise _ShowUsage
        skip_ms = _scan_int(argv[5]) if len(argv) > 5 else 3000
        offset_ms = _scan_int(argv[9]) if len(argv) > 9 else 0
        if skip_ms is None or offset_ms is None:
            raise _ShowUsage
        forward = argv[6] if len(argv) > 6 and argv[6] else "#"
        rewind = argv[7] if len(argv) > 7 and argv[7] else "*"
        pause = argv[8] if len(argv) > 8 else ""
        seconds = self._prompt(argv[3])
        if seconds is None:
            return Reply.success(-1, endpos=-1)
        offset = offset_ms / 1000 if offset_ms >= 0 else seconds + offset_ms / 1000  # from the end
        position = min(max(offset, 0.0), seconds)
        start, stop, skip = self.clock, argv[4], skip_ms / 1000
        while True:
            began = self.clock
            digit = self._key_before(began + seconds - position)
            position += self.clock - began
            if digit is None:
                break
            self._record(digit, digit in forward + rewind + stop + pause)
            if digit in forward:
                position = min(seconds, position + skip)
            elif digit in rewind:
                position = max(0.0, position - skip)
            elif digit in pause:
                digit = self._paused(pause + stop)
                if digit is None or digit not in pause:
                    break
            elif digit in stop:
                break
        self._heard(argv[3], start, digit)
        if digit is None and not self.dead:
            return Reply.success(0, endpos=-1)
        return Reply.success(self._result(digit), endpos=round(position * SAMPLE_RATE) // 8)

    def _paused(self, wanted: str) -> str | None:
        """Wait, paused, for a pause or stop key; others are lost (control_streamfile)."""
        while (digit := self._key_before(math.inf)) is not None:
            self._record(digit, digit in wanted)
            if digit in wanted:
                return digit
        return None

    def _get_data(self, argv: list[str]) -> Reply:
        if len(argv) < 3:
            raise _ShowUsage
        timeout = _atoi(argv[3]) if len(argv) > 3 else 0
        limit = _atoi(argv[4]) if len(argv) > 4 else 1024
        if timeout > 0:
            first = between = timeout / 1000
        elif timeout < 0:
            first = between = 1_000_000.0  # ast_app_getdata_full: 1000000000 ms
        else:
            first, between = 6.0, 2.0
        seconds = self._prompt(argv[2]) if argv[2] else 0.0
        if seconds is None or limit == 0:
            return Reply.success(-1)
        digit = self._play(argv[2], seconds, ANY_DIGIT) if argv[2] else None
        entered, wait = "", first
        while True:
            if digit is None and not self.dead:
                digit = self._listen(wait)
            if digit is None:
                return Reply.success(-1) if self.dead else Reply.success(entered, "timeout")
            if digit == "#":
                return Reply.success(entered)
            entered += digit
            if len(entered) >= limit:
                return Reply.success(entered)
            digit, wait = None, between

    def _wait_for_digit(self, argv: list[str]) -> Reply:
        if len(argv) != 4 or (timeout := _scan_int(argv[3])) is None:
            raise _ShowUsage
        return Reply.success(self._result(self._listen(_seconds(timeout))))

    def _say(self, argv: list[str]) -> Reply:
        fewest, most, numeric, files = _SAY[self._verb]
        if not fewest <= len(argv) <= most or (numeric and _scan_int(argv[2]) is None):
            raise _ShowUsage
        if self._verb == "SAY ALPHA" and len(argv) == 5 and argv[4][:1] not in "aAlLnNuU":
            raise _ShowUsage
        seconds = files(argv[2]) * SAY_ITEM_SECONDS
        return Reply.success(self._result(self._play(f"{self._verb} {argv[2]}", seconds, argv[3])))

    def _exec(self, argv: list[str]) -> Reply:
        if len(argv) < 2:
            raise _ShowUsage
        name, data = argv[1], argv[2] if len(argv) > 2 else ""
        self.transcript.applications.append(Application(name, data, self.clock))
        kind = name.lower()
        if kind == "answer" and not self.dead:
            self._answer()
        if kind == "read":
            return self._read(data)
        if kind not in ("playback", "background"):
            return Reply.success(0)
        if self.dead or not data:
            return Reply.success(-1)
        options = data.split(",")[1] if "," in data else ""
        skip, no_answer = ("skip", "noanswer") if kind == "playback" else ("s", "n")
        if not self.answered and skip in options:
            return Reply.success(0)  # not up: Playback(skip) and Background(s) do nothing
        if no_answer not in options:
            self._answer()
        escape = ANY_DIGIT if kind == "background" else ""
        for file in (name.strip() for name in data.partition(",")[0].split("&")):
            seconds = self._prompt(file)
            if seconds is None and kind == "background":
                break  # Background stops at a missing file; Playback goes on to the next
            if seconds is not None:
                digit = self._play(file, seconds, escape)
                if digit or self.dead:
                    return Reply.success(self._result(digit))
        return Reply.success(0)

    def _read(self, data: str) -> Reply:
        """Read(variable,filename&...,maxdigits,options,attempts,timeout) as app_read.c runs
        it: always 0 to AGI, with the keys in the variable and the outcome in READSTATUS."""
        variable, files, most, options, attempts, timeout = (data.split(",") + [""] * 6)[:6]
        self.transcript.variables["READSTATUS"] = "ERROR"
        if not variable:
            return Reply.success(0)
        terminator = "#"
        if "t" in options:
            terminator = options.partition("t(")[2].partition(")")[0] if "t(" in options else ""
        if "i" in options:
            self.fail(f"Read({data}): indication tones are not modelled")
        tries = max(_atoi(attempts), 1) if attempts else 1
        limit = _atoi(most) if most else 255
        limit = limit if 1 <= limit <= 255 else 255
        wait = _scan_float(timeout) or 0.0 if timeout else 0.0
        if not self.answered:
            if "s" in options:
                self.transcript.variables.update({variable: "", "READSTATUS": "SKIPPED"})
                return Reply.success(0)
            if "n" not in options:
                self._answer()
        status, entered = "ERROR", ""
        while tries and not self.dead:
            outcome, entered = self._get_data_terminator(files, limit, wait, terminator)
            status = outcome or status
            self.transcript.variables[variable] = entered
            tries = 0 if entered or outcome is None else tries - 1
        self.transcript.variables["READSTATUS"] = "HANGUP" if self.dead else status
        return Reply.success(0)

    def _get_data_terminator(self, files: str, limit: int, timeout: float, enders: str
                             ) -> tuple[str | None, str]:
        """app.c ast_app_getdata_terminator: each '&' file then a wait for keys (50 ms
        between files; `timeout` s, or the dialplan's 10 s and 5 s, after the last); a file
        that is missing is skipped. The READSTATUS it leads to (None: failed) and the keys."""
        names = [name.strip() for name in files.split("&")]
        outcome: str | None = None
        for index, name in enumerate(names):
            if self.dead:
                return None, ""  # ast_readstring_full: a hung-up channel reads nothing
            last = index == len(names) - 1
            seconds = self._prompt(name) if name else 0.0
            if seconds is None:
                outcome = None
                continue
            first, between = ((timeout, timeout) if timeout > 0 else (10.0, 5.0)) if last \
                else (0.05, 5.0)
            outcome, entered = self._read_string(name, seconds, limit, first, between, enders)
            if outcome == "OK" or entered:
                return outcome, entered
        return outcome, ""

    def _read_string(self, name: str, seconds: float, limit: int, first: float,
                     between: float, enders: str) -> tuple[str | None, str]:
        """channel.c ast_readstring_full: the file, any key stopping it, then keys until a
        terminator, the limit or a silence."""
        digit = self._play(name, seconds, ANY_DIGIT) if name else None
        entered, wait = "", first
        while True:
            if digit is None and not self.dead:
                digit = self._listen(wait)
            if digit is None:
                return (None, entered) if self.dead else ("TIMEOUT", entered)
            if digit in enders and not entered:
                return "OK", ""
            if digit not in enders:
                entered += digit
            if digit in enders or len(entered) >= limit:
                return "OK", entered
            digit, wait = None, between


_SUBSTITUTION = re.compile(r"\$\{([^{}]*)\}")
_INTEGER = re.compile(r"\s*[+-]?\d+")
_DECIMAL = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)")


def _scan_int(text: str) -> int | None:
    """Read a leading integer as sscanf("%d") does, or None."""
    match = _INTEGER.match(text)
    return int(match[0]) if match else None


def _atoi(text: str) -> int:
    """C's atoi: a leading integer, else 0."""
    return _scan_int(text) or 0


def _scan_float(text: str) -> float | None:
    """Read a leading decimal as sscanf("%lf") does, or None."""
    match = _DECIMAL.match(text)
    return float(match[0]) if match else None


def _seconds(milliseconds: int) -> float:
    """An AGI timeout in seconds; a negative one waits forever."""
    return math.inf if milliseconds < 0 else milliseconds / 1000


def _parse_callerid(text: str) -> tuple[str, str]:
    """Split '"Name" <number>', a bare number or a bare name, roughly as ast_callerid_parse."""
    if "<" in text:
        name, _, rest = text.partition("<")
        return name.strip().strip('"'), rest.partition(">")[0].strip()
    text = text.strip()
    return ("", text) if text and all(c in "0123456789+*#" for c in text) else (text, "")


async def place_call(
    host: str,
    port: int,
    caller: Caller,
    *,
    script: str = "ivr",
    args: Sequence[str] = (),
    prompt_seconds: PromptSeconds = uniform_prompts,
    variables: Mapping[str, str] | None = None,
    environment: Mapping[str, str] | None = None,
    stall_seconds: float = 10.0,
    strict: bool = True,
    before: Callable[[Command], Awaitable[None]] | None = None,
    turnaround: list[float] | None = None,
    answered: bool = False,
    secret: str | None = DIALPLAN_SECRET,
) -> CallTranscript:
    """Call nobat's FastAGI port as Asterisk would for `caller`; strict fails on any failure.

    `before` runs ahead of each command's reply: the world moving on while the caller
    listens (another caller takes the slot, staff edit the clinic). `answered` says the
    dialplan answered before AGI(); by default the call still rings, as a dialplan without
    Answer() hands it over. `secret` is the dialplan's `key=` argument (None: none is sent,
    as a forged request would).
    """
    args = (*args, f"key={secret}") if secret is not None else tuple(args)
    env = call_environment(caller, f"agi://{host}:{port}/{script}", args, **(environment or {}))
    channel = FakeChannel(caller, env, prompt_seconds, variables, answered=answered)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), stall_seconds)
    try:
        await converse(channel, reader, writer, stall_seconds, before, turnaround)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if strict:
        channel.transcript.assert_clean()
    return channel.transcript


async def converse(
    channel: FakeChannel,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    stall_seconds: float = 10.0,
    before: Callable[[Command], Awaitable[None]] | None = None,
    turnaround: list[float] | None = None,
) -> None:
    """Send the environment, then answer each command until nobat closes or stalls.

    Works on any stream pair: a FastAGI socket, or a classic AGI process's stdout and stdin.
    `turnaround` collects, per command, the real seconds nobat took to send it after the
    previous reply (the server's own time, for benchmarks).
    """
    codec = AgiClientConnection()
    await _send(writer, codec, [channel.transcript.environment])
    replied_at = time.perf_counter()
    while True:
        try:
            event = codec.next_event()
        except AgiProtocolError as exc:
            channel.fail(f"nobat broke FastAGI: {exc}")
            return
        if event is NEED_DATA:
            try:
                data = await asyncio.wait_for(reader.read(65536), stall_seconds)
            except TimeoutError:
                await _send(writer, codec, channel.stall(stall_seconds))
                return
            except ConnectionError:
                data = b""
            codec.receive_data(data)
        elif isinstance(event, Command):
            if turnaround is not None:
                turnaround.append(time.perf_counter() - replied_at)
            if before is not None:
                await before(event)
            await _send(writer, codec, channel.handle(event))
            replied_at = time.perf_counter()
        else:
            await _send(writer, codec, channel.close())
            return


async def _send(
    writer: asyncio.StreamWriter,
    codec: AgiClientConnection,
    events: Sequence[AgiEnvironment | Reply | Hangup],
) -> None:
    """Encode events (the codec checks their order) and write them while nobat still listens."""
    data = b"".join(codec.send(event) for event in events)
    if data and not writer.is_closing():
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
