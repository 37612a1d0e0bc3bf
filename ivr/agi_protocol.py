"""FastAGI without I/O, after h11: bytes in, events out; events in, bytes out.

One codec serves both ends of the socket. `AgiServerConnection` is what nobat runs: it reads
Asterisk's environment, replies and HANGUP lines, and writes commands. `AgiClientConnection`
is what the fake PBX runs: it writes what Asterisk writes, byte for byte as captured from
Asterisk 22, and reads commands the way res_agi splits them.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.framing import Frames

MAX_MESSAGE_BYTES = 64 * 1024
MAX_VARIABLES = 256


class AgiProtocolError(Exception):
    """The peer broke FastAGI; the only safe answer is to drop the connection."""


class Signal(enum.Enum):
    """What `next_event` returns instead of an event."""

    NEED_DATA = "NEED_DATA"


NEED_DATA = Signal.NEED_DATA


def _variable(name: str) -> property:
    """Expose one agi_* variable as an attribute, empty when Asterisk left it out."""
    return property(lambda env: env.variables.get(name, ""), doc=f"The {name} variable.")


def _known(name: str) -> property:
    """Expose an agi_* variable that Asterisk writes as "unknown" when it has no value."""

    def get(env: AgiEnvironment) -> str | None:
        value = env.variables.get(name, "")
        return None if value in ("", "unknown") else value

    return property(get, doc=f"The {name} variable, or None when Asterisk does not know it.")


# The order and defaults res_agi's setup_env() writes (captured from Asterisk 22.10.1).
_ASTERISK_ENVIRONMENT = {
    "network": "yes",
    "network_script": "",
    "request": "",
    "channel": "Local/s@default-00000000;1",
    "language": "en",
    "type": "Local",
    "uniqueid": "0.0",
    "version": "22.10.1",
    "callerid": "unknown",
    "calleridname": "unknown",
    "callingpres": "0",
    "callingani2": "0",
    "callington": "0",
    "callingtns": "0",
    "dnid": "unknown",
    "rdnis": "unknown",
    "context": "default",
    "extension": "s",
    "priority": "1",
    "enhanced": "0.0",
    "accountcode": "",
    "threadid": "0",
}


@dataclass(frozen=True, slots=True)
class AgiEnvironment:
    """The agi_* variables Asterisk sends first, in the order it sent them."""

    variables: dict[str, str]

    request = _variable("agi_request")
    channel = _variable("agi_channel")
    uniqueid = _variable("agi_uniqueid")
    language = _variable("agi_language")
    context = _variable("agi_context")
    extension = _variable("agi_extension")
    accountcode = _variable("agi_accountcode")
    callerid = _known("agi_callerid")
    calleridname = _known("agi_calleridname")
    dnid = _known("agi_dnid")
    rdnis = _known("agi_rdnis")

    @property
    def script(self) -> str:
        """The path of the AGI URL, which picks the flow (agi://host/ivr?clinic=1 -> "ivr")."""
        return self.variables.get("agi_network_script", "").partition("?")[0]

    @property
    def query(self) -> dict[str, str]:
        """The AGI URL's query, split by hand because AGI URLs are not percent-encoded."""
        query = self.variables.get("agi_network_script", "").partition("?")[2]
        return dict(item.partition("=")[::2] for item in query.split("&") if item)

    @property
    def args(self) -> list[str]:
        """AGI()'s extra arguments, which Asterisk numbers agi_arg_1 onwards."""
        found = []
        while (arg := self.variables.get(f"agi_arg_{len(found) + 1}")) is not None:
            found.append(arg)
        return found

    @classmethod
    def for_request(cls, url: str, args: Sequence[str] = (), **values: str) -> AgiEnvironment:
        """Build the environment Asterisk would send for `url`, so fakes match it byte for byte."""
        unknown = values.keys() - _ASTERISK_ENVIRONMENT.keys()
        if unknown:
            raise TypeError(f"not an AGI environment variable: {sorted(unknown)}")
        script = url.split("/", 3)[3] if url.count("/") >= 3 else ""
        layout = {**_ASTERISK_ENVIRONMENT, "network_script": script, "request": url, **values}
        variables = {f"agi_{key}": value for key, value in layout.items()}
        variables.update({f"agi_arg_{n}": arg for n, arg in enumerate(args, start=1)})
        return cls(variables)


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply to a command; `data` holds a 200's "(...)" part or another code's text."""

    code: int
    result: str | None
    data: str | None
    endpos: int | None
    raw: str

    @classmethod
    def success(
        cls, result: int | str, data: str | None = None, endpos: int | None = None
    ) -> Reply:
        """Build a "200 result=..." reply, the shape every successful command gets."""
        return cls(200, str(result), data, endpos, _format_reply(200, str(result), data, endpos))

    @classmethod
    def failure(cls, code: int, text: str) -> Reply:
        """Build an error reply; text with several lines becomes a "520-" style block."""
        return cls(code, None, text, None, _format_reply(code, None, text, None))

    @property
    def usage(self) -> str | None:
        """The usage text between the first and last lines of a multi-line 520."""
        lines = (self.data or "").split("\n")
        return "\n".join(lines[1:-1]) if self.code != 200 and len(lines) > 1 else None


@dataclass(frozen=True, slots=True)
class Hangup:
    """Asterisk's unsolicited "HANGUP" line: the caller is gone, later commands may get 511."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side cleanly, between messages."""


# Commands res_agi knows (Asterisk 22), so a command line splits into verb and arguments.
AGI_VERBS = frozenset(
    {
        "ANSWER", "ASYNCAGI BREAK", "CHANNEL STATUS", "CONTROL STREAM FILE", "DATABASE DEL",
        "DATABASE DELTREE", "DATABASE GET", "DATABASE PUT", "EXEC", "GET DATA",
        "GET FULL VARIABLE", "GET OPTION", "GET VARIABLE", "GOSUB", "HANGUP", "NOOP",
        "RECEIVE CHAR", "RECEIVE TEXT", "RECORD FILE", "SAY ALPHA", "SAY DATE", "SAY DATETIME",
        "SAY DIGITS", "SAY NUMBER", "SAY PHONETIC", "SAY TIME", "SEND IMAGE", "SEND TEXT",
        "SET AUTOHANGUP", "SET CALLERID", "SET CONTEXT", "SET EXTENSION", "SET MUSIC",
        "SET PRIORITY", "SET VARIABLE", "SPEECH ACTIVATE GRAMMAR", "SPEECH CREATE",
        "SPEECH DEACTIVATE GRAMMAR", "SPEECH DESTROY", "SPEECH LOAD GRAMMAR",
        "SPEECH RECOGNIZE", "SPEECH SET", "SPEECH UNLOAD GRAMMAR", "STREAM FILE", "TDD MODE",
        "VERBOSE", "WAIT FOR DIGIT",
    }
)  # fmt: skip

# Which argument holds escape digits; clients always quote it, so "" keeps its place.
_ESCAPE_DIGITS_ARG = {
    "STREAM FILE": 1, "CONTROL STREAM FILE": 1, "GET OPTION": 1, "SAY ALPHA": 1,
    "SAY DATE": 1, "SAY DATETIME": 1, "SAY DIGITS": 1, "SAY NUMBER": 1, "SAY PHONETIC": 1,
    "SAY TIME": 1, "RECORD FILE": 2,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Command:
    """One AGI command; an unknown command keeps its first word as the verb."""

    verb: str
    args: tuple[str, ...] = ()

    @classmethod
    def of(cls, verb: str, *args: object) -> Command:
        """Let callers pass numbers as they are, as in Command.of("GET DATA", "beep", 6000, 4)."""
        return cls(verb, tuple(str(arg) for arg in args))

    @classmethod
    def parse(cls, line: str) -> Command:
        """Split a command line the way res_agi does, matching the longest known verb."""
        words = _split_args(line)
        for size in (3, 2, 1):
            verb = " ".join(words[:size]).upper()
            if len(words) >= size and verb in AGI_VERBS:
                return cls(verb, tuple(words[size:]))
        return cls(words[0] if words else "", tuple(words[1:]))

    def encode(self) -> bytes:
        """Format the line as AGI clients send it: quoted where res_agi needs it, "\\n" ended."""
        return _encoded(self)


@functools.lru_cache(maxsize=512)
def _encoded(command: Command) -> bytes:
    """Cached: a thousand callers hear the same prompts, so the same lines go out again.
    Few: a call's own lines (its session id, its code read back) pass through once, and
    a larger cache held thousands of them for good (1.4 MB over a clinic day)."""
    for text in (command.verb, *command.args):
        if _FORBIDDEN.search(text):
            raise ValueError(f"AGI command text cannot hold CR, LF or NUL: {text!r}")
    escape_at = _ESCAPE_DIGITS_ARG.get(command.verb)
    args = (_quote(arg, index == escape_at) for index, arg in enumerate(command.args))
    return (" ".join((command.verb, *args)) + "\n").encode()


_FORBIDDEN = re.compile("[\r\n\0]")
_SPLITS = re.compile('[ \t"\\\\]')


def _quote(arg: str, always: bool) -> str:
    """Quote an argument only when res_agi would otherwise split or drop it."""
    if always or not arg or _SPLITS.search(arg):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def _split_args(line: str) -> list[str]:
    """Port res_agi's parse_args(), quirks included, so the fake PBX sees Asterisk's argv."""
    words: list[list[str]] = []
    quoted = escaped = False
    between = True
    for char in line:
        if char == "\\" and not escaped:
            escaped = True
            continue
        if char == '"' and not escaped:
            quoted = not quoted
            if quoted and between:
                words.append([])
                between = False
        elif char in " \t" and not quoted and not escaped:
            between = True
        else:
            if between:
                words.append([])
                between = False
            words[-1].append(char)
        escaped = False
    return ["".join(word) for word in words]


def _format_reply(code: int, result: str | None, data: str | None, endpos: int | None) -> str:
    """Lay out a reply as res_agi prints it, without the final newline."""
    if code == 200:
        text = f"200 result={result}"
        text += "" if data is None else f" ({data})"
        return text + ("" if endpos is None else f" endpos={endpos}")
    lines = (data or "").split("\n")
    if len(lines) == 1:
        return f"{code} {lines[0]}"
    return "\n".join((f"{code}-{lines[0]}", *lines[1:-1], f"{code} {lines[-1]}"))


INVALID_COMMAND = Reply.failure(510, "Invalid or unknown command")
DEAD_CHANNEL = Reply.failure(511, "Command Not Permitted on a dead channel or intercept routine")
NO_USAGE = Reply.failure(520, "Invalid command syntax.  Proper usage not available.")
GET_DATA_USAGE = (
    "Stream the given <replaceable>file</replaceable>, and receive DTMF data.\n"
    "Returns the digits received from the channel at the other end."
)


def usage_reply(usage: str) -> Reply:
    """Build the multi-line 520 Asterisk sends when a known command has bad arguments."""
    return Reply.failure(
        520, f"Invalid command syntax.  Proper usage follows:\n{usage}\nEnd of proper usage."
    )


_SUCCESS = re.compile(
    r"200 result=(?P<result>\S*)(?: \((?P<data>.*)\))?(?: endpos=(?P<endpos>\d+))?"
)
_OTHER = re.compile(r"(?P<code>[1-9]\d\d)(?P<more>[ -])(?P<text>.*)")


AgiEvent = AgiEnvironment | Command | Reply | Hangup | ConnectionClosed


class AgiState(enum.Enum):
    """Where the conversation stands; both ends track the same state."""

    ENVIRONMENT = "ENVIRONMENT"
    IDLE = "IDLE"
    COMMAND = "COMMAND"
    ERROR = "ERROR"


# Every legal step, for events sent and received alike; anything else is a protocol error.
_TRANSITIONS: dict[tuple[AgiState, type], AgiState] = {
    (AgiState.ENVIRONMENT, AgiEnvironment): AgiState.IDLE,
    (AgiState.IDLE, Command): AgiState.COMMAND,
    (AgiState.COMMAND, Reply): AgiState.IDLE,
    (AgiState.IDLE, Hangup): AgiState.IDLE,
    (AgiState.COMMAND, Hangup): AgiState.COMMAND,
}


def _decode(line: bytes | None) -> str | None:
    """Decode a whole line; AGI text that is not UTF-8 ends the conversation."""
    if line is None:
        return None
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AgiProtocolError(f"line is not UTF-8: {line[:80]!r}") from exc


class _AgiConnection:
    """What both ends share: framing, end of file, and the state table."""

    _sends: tuple[type, ...] = ()

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.state = AgiState.ENVIRONMENT
        self._lines = Frames(max_message_bytes, AgiProtocolError, "line")
        self._eof = False

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the socket; b"" means the peer closed its side."""
        if self._eof:
            raise RuntimeError("receive_data() after end of file")
        if data:
            self._lines.feed(data)
        else:
            self._eof = True

    def next_event(self) -> AgiEvent | Signal:
        """Return the next complete event, NEED_DATA, or ConnectionClosed after a clean EOF."""
        if self.state is AgiState.ERROR:
            raise AgiProtocolError("the connection already failed")
        try:
            while (line := _decode(self._lines.next_frame(b"\n"))) is not None:
                event = self._take(line)
                if event is not None:
                    self._advance(event, AgiProtocolError)
                    return event
            if not self._eof:
                return NEED_DATA
            self._check_clean_end()
            return ConnectionClosed()
        except AgiProtocolError:
            self.state = AgiState.ERROR
            raise

    def send(self, event: AgiEvent) -> bytes:
        """Return the bytes for an event this end may send, checking it is legal now."""
        if not isinstance(event, self._sends):
            raise TypeError(f"{type(self).__name__} cannot send {type(event).__name__}")
        self._advance(event, RuntimeError)
        return _encode(event)

    def _advance(self, event: AgiEvent, error: type[Exception]) -> None:
        new_state = _TRANSITIONS.get((self.state, type(event)))
        if new_state is None:
            raise error(f"{type(event).__name__} is not allowed in state {self.state.name}")
        self.state = new_state

    def _take(self, line: str) -> AgiEvent | None:
        raise NotImplementedError

    def _check_clean_end(self) -> None:
        if self._lines:
            raise AgiProtocolError("connection closed in the middle of a line")


class AgiServerConnection(_AgiConnection):
    """nobat's end: reads the environment, replies and HANGUP; sends commands."""

    _sends = (Command,)

    def __init__(
        self, max_message_bytes: int = MAX_MESSAGE_BYTES, max_variables: int = MAX_VARIABLES
    ) -> None:
        super().__init__(max_message_bytes)
        self._max_message_bytes = max_message_bytes
        self._max_variables = max_variables
        self._collected: list[str] = []
        self._collected_bytes = 0

    def _take(self, line: str) -> AgiEvent | None:
        if self.state is AgiState.ENVIRONMENT:
            return self._take_variable(line)
        if self._collected:
            return self._take_continuation(line)
        if line == "HANGUP":
            return Hangup()
        if success := _SUCCESS.fullmatch(line):
            endpos = None if success["endpos"] is None else int(success["endpos"])
            return Reply(200, success["result"], success["data"], endpos, line)
        other = _OTHER.fullmatch(line)
        if other is None or other["code"] == "200":
            raise AgiProtocolError(f"not an AGI reply: {line[:80]!r}")
        if other["more"] == "-":
            self._collect(line)
            return None
        return Reply(int(other["code"]), None, other["text"], None, line)

    def _take_variable(self, line: str) -> AgiEnvironment | None:
        if not line:
            if not self._collected:
                raise AgiProtocolError("empty AGI environment")
            variables = dict(entry.partition(": ")[::2] for entry in self._collected)
            if len(variables) < len(self._collected):
                raise AgiProtocolError("the AGI environment repeats a variable")
            self._reset()
            return AgiEnvironment(variables)
        key, separator, _ = line.partition(": ")
        if not separator or not key.startswith("agi_"):
            raise AgiProtocolError(f"expected an agi_* variable, got {line[:80]!r}")
        if len(self._collected) >= self._max_variables:
            raise AgiProtocolError(f"AGI environment has more than {self._max_variables} variables")
        self._collect(line)
        return None

    def _take_continuation(self, line: str) -> Reply | None:
        self._collect(line)
        code = self._collected[0][:3]
        if not line.startswith(f"{code} "):
            return None
        first, *middle, last = self._collected
        self._reset()
        text = "\n".join((first[4:], *middle, last[4:]))
        return Reply(int(code), None, text, None, "\n".join((first, *middle, last)))

    def _collect(self, line: str) -> None:
        self._collected_bytes += len(line.encode()) + 1
        if self._collected_bytes > self._max_message_bytes:
            raise AgiProtocolError(f"message longer than {self._max_message_bytes} bytes")
        self._collected.append(line)

    def _reset(self) -> None:
        self._collected = []
        self._collected_bytes = 0

    def _check_clean_end(self) -> None:
        if self.state is AgiState.ENVIRONMENT and (self._collected or self._lines):
            raise AgiProtocolError("connection closed in the middle of the AGI environment")
        if self._collected:
            raise AgiProtocolError("connection closed in the middle of a multi-line reply")
        super()._check_clean_end()


class AgiClientConnection(_AgiConnection):
    """The fake PBX's end: sends the environment, replies and HANGUP; reads commands."""

    _sends = (AgiEnvironment, Reply, Hangup)

    def _take(self, line: str) -> Command:
        return Command.parse(line)


def _encode(event: AgiEvent) -> bytes:
    """Serialise an event exactly as it appears on the wire."""
    match event:
        case AgiEnvironment(variables=variables):
            lines = [f"{key}: {value}\n" for key, value in variables.items()]
            if any(line.count("\n") > 1 for line in lines):
                raise ValueError("AGI variables cannot hold a newline")
            return ("".join(lines) + "\n").encode()
        case Reply(code=code, result=result, data=data, endpos=endpos):
            return (_format_reply(code, result, data, endpos) + "\n").encode()
        case Hangup():
            return b"HANGUP\n"
        case Command():
            return event.encode()
    raise TypeError(f"cannot encode {event!r}")
