"""The Asterisk Manager Interface without I/O, after h11: bytes in, events out, and back.

`AmiClientConnection` is nobat's end: it reads the banner, responses and events, and writes
actions. `AmiServerConnection` is the fake PBX's end: it reads actions and writes what
Asterisk 22 writes, byte for byte as captured. Messages are framed first and decoded after,
so a character split across two TCP reads survives.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from protocol.framing import Frames

MAX_MESSAGE_BYTES = 64 * 1024
AMI_VERSION = "11.0.0"
_BANNER_PREFIX = "Asterisk Call Manager/"
_HIDDEN = frozenset({"secret"})


class AmiProtocolError(Exception):
    """The peer broke AMI framing; the only safe answer is to drop the connection."""


class Signal(enum.Enum):
    """What `next_event` returns instead of an event."""

    NEED_DATA = "NEED_DATA"


NEED_DATA = Signal.NEED_DATA


@dataclass(frozen=True, slots=True, repr=False)
class Fields:
    """Ordered "Key: Value" pairs, duplicates kept, because Variable and Output lines repeat."""

    pairs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(
        cls, items: Mapping[str, str] | Iterable[tuple[str, str]] = (), /, **more: str
    ) -> Fields:
        """Build from a mapping, pairs or keywords, whichever reads best at the call site."""
        pairs = items.items() if isinstance(items, Mapping) else items
        return cls((*pairs, *more.items()))

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value of `key`, matched without case as Asterisk matches headers."""
        return next((value for name, value in self.pairs if name.lower() == key.lower()), default)

    def getall(self, key: str) -> list[str]:
        """Every value of a repeated key, in order."""
        return [value for name, value in self.pairs if name.lower() == key.lower()]

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        shown = [(k, "***" if k.lower() in _HIDDEN else v) for k, v in self.pairs]
        return f"Fields({shown!r})"


@dataclass(frozen=True, slots=True)
class Banner:
    """The "Asterisk Call Manager/<version>" line Asterisk sends before anything else."""

    version: str = AMI_VERSION


@dataclass(frozen=True, slots=True)
class Response:
    """The answer to one action; `status` is Success, Error, Goodbye and so on."""

    status: str
    fields: Fields = Fields()

    @classmethod
    def answer(cls, action: Action, status: str, *pairs: tuple[str, str]) -> Response:
        """Echo the action's ActionID right after the status line, where Asterisk puts it."""
        echo = () if action.action_id is None else (("ActionID", action.action_id),)
        return cls(status, Fields((*echo, *pairs)))

    @property
    def action_id(self) -> str | None:
        """The ActionID that ties this response to its action."""
        return self.fields.get("ActionID")

    @property
    def message(self) -> str | None:
        """Asterisk's human text, which is the only detail most errors carry."""
        return self.fields.get("Message")


@dataclass(frozen=True, slots=True)
class Event:
    """An unsolicited message, or an item of a list action when it carries an ActionID."""

    name: str
    fields: Fields = Fields()

    @property
    def action_id(self) -> str | None:
        """The ActionID of the action this event belongs to, if any."""
        return self.fields.get("ActionID")


@dataclass(frozen=True, slots=True)
class Action:
    """A request to Asterisk; without an action_id Asterisk answers without one."""

    name: str
    fields: Fields = Fields()
    action_id: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side cleanly, between messages."""


AmiEvent = Banner | Response | Event | Action | ConnectionClosed

# Texts Asterisk 22 sends, copied from the captures, for the fake PBX.
AUTH_ACCEPTED = "Authentication accepted"
AUTH_FAILED = "Authentication failed"
PERMISSION_DENIED = "Permission denied"
ORIGINATE_QUEUED = "Originate successfully queued"
ORIGINATE_FAILED = "Originate failed"
CHANNEL_NOT_SPECIFIED = "Channel not specified"
NO_SUCH_CHANNEL = "No such channel"
CHANNEL_HUNGUP = "Channel Hungup"
CHANNELS_BRIDGED = "Channels have been bridged"
CHANNELS_FOLLOW = "Channels will follow"
BRIDGES_FOLLOW = "Bridge listing will follow"
GOODBYE = "Thanks for all the fish."
SHUTTING_DOWN = "Asterisk is shutting down"  # quoted in the captures' README (run d6)


_SPLIT_BY_ASTERISK = re.compile(r'[\\,"]')
_LITERAL = r"\\\g<0>"


def variables(values: Mapping[str, str]) -> list[tuple[str, str]]:
    """Originate's `Variable` fields, one "name=value" each, escaped so every value arrives
    whole: Asterisk splits a Variable at commas and drops double quotes and backslashes
    (manager.c man_do_variable_value, app.c __ast_app_separate_args), and a backslash makes
    the next character literal. A clinic called `Dr. "Ali", Clinic` stays so."""
    return [("Variable", f"{name}={_SPLIT_BY_ASTERISK.sub(_LITERAL, value)}")
            for name, value in values.items()]


def unknown_action_message(name: str) -> str:
    """The error text for an action Asterisk does not know, which names the action."""
    return f"Invalid/unknown command: {name}. Use Action: ListCommands to show available commands."


class AmiState(enum.Enum):
    """Where Asterisk's side of the stream stands; actions may flow at any time."""

    BANNER = "BANNER"
    MESSAGES = "MESSAGES"
    ERROR = "ERROR"


# The legal steps of Asterisk's stream, checked on whichever end sends or receives it.
_TRANSITIONS: dict[tuple[AmiState, type], AmiState] = {
    (AmiState.BANNER, Banner): AmiState.MESSAGES,
    (AmiState.MESSAGES, Response): AmiState.MESSAGES,
    (AmiState.MESSAGES, Event): AmiState.MESSAGES,
}


def _parse_pairs(frame: str) -> list[tuple[str, str]]:
    """Split a message into (key, value) pairs, keeping order and repeats."""
    pairs = []
    for line in frame.split("\r\n"):
        key, colon, value = line.partition(":")
        if not colon or not key or "\n" in line or "\r" in line:
            raise AmiProtocolError(f"not a 'Key: Value' line: {line[:80]!r}")
        pairs.append((key, value.removeprefix(" ")))
    return pairs


def _format_pairs(pairs: Iterable[tuple[str, str]]) -> bytes:
    """Lay out a message as Asterisk does: CRLF after each line and a blank line to end."""
    lines = []
    for key, value in pairs:
        if any(char in key + value for char in "\r\n") or ":" in key or not key:
            raise ValueError(f"cannot send AMI field {key!r}: {value!r}")
        lines.append(f"{key}: {value}\r\n")
    return ("".join(lines) + "\r\n").encode()


def _encode(event: AmiEvent) -> bytes:
    """Serialise an event exactly as it appears on the wire."""
    match event:
        case Banner(version=version):
            return f"{_BANNER_PREFIX}{version}\r\n".encode()
        case Response(status=status, fields=fields):
            return _format_pairs((("Response", status), *fields))
        case Event(name=name, fields=fields):
            return _format_pairs((("Event", name), *fields))
        case Action(name=name, fields=fields, action_id=action_id):
            echo = () if action_id is None else (("ActionID", action_id),)
            return _format_pairs((("Action", name), *echo, *fields))
    raise TypeError(f"cannot encode {event!r}")


class _AmiConnection:
    """What both ends share: framing, end of file, and the state of Asterisk's stream."""

    _sends: tuple[type, ...] = ()

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.state = AmiState.BANNER
        self._frames = Frames(max_message_bytes, AmiProtocolError, "message")
        self._eof = False

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the socket; b"" means the peer closed its side."""
        if self._eof:
            raise RuntimeError("receive_data() after end of file")
        if data:
            self._frames.feed(data)
        else:
            self._eof = True

    def next_event(self) -> AmiEvent | Signal:
        """Return the next complete message, NEED_DATA, or ConnectionClosed after a clean EOF."""
        if self.state is AmiState.ERROR:
            raise AmiProtocolError("the connection already failed")
        try:
            event = self._read()
            if event is not None:
                self._advance(event, AmiProtocolError)
                return event
            if not self._eof:
                return NEED_DATA
            if self._frames:
                raise AmiProtocolError("connection closed in the middle of a message")
            return ConnectionClosed()
        except AmiProtocolError:
            self.state = AmiState.ERROR
            raise

    def send(self, event: AmiEvent) -> bytes:
        """Return the bytes for a message this end may send, checking it is legal now."""
        if not isinstance(event, self._sends):
            raise TypeError(f"{type(self).__name__} cannot send {type(event).__name__}")
        self._advance(event, RuntimeError)
        return _encode(event)

    def _advance(self, event: AmiEvent, error: type[Exception]) -> None:
        if isinstance(event, Action):
            return
        new_state = _TRANSITIONS.get((self.state, type(event)))
        if new_state is None:
            raise error(f"{type(event).__name__} is not allowed in state {self.state.name}")
        self.state = new_state

    def _read(self) -> AmiEvent | None:
        raise NotImplementedError


def _decoded(frame: bytes | None) -> str | None:
    """Decode a whole frame; one bad byte in a caller name must not cost the whole AMI link."""
    return None if frame is None else frame.decode("utf-8", errors="replace")


class AmiClientConnection(_AmiConnection):
    """nobat's end: reads the banner, responses and events; sends actions."""

    _sends = (Action,)

    def _read(self) -> AmiEvent | None:
        if self.state is AmiState.BANNER:
            line = _decoded(self._frames.next_frame(b"\r\n"))
            if line is None:
                return None
            if not line.startswith(_BANNER_PREFIX):
                raise AmiProtocolError(f"not an Asterisk manager banner: {line[:80]!r}")
            return Banner(line.removeprefix(_BANNER_PREFIX))
        frame = _decoded(self._frames.next_frame(b"\r\n\r\n"))
        if frame is None:
            return None
        (kind, head), *rest = _parse_pairs(frame)
        if kind == "Response":
            return Response(head, Fields(tuple(rest)))
        if kind == "Event":
            return Event(head, Fields(tuple(rest)))
        raise AmiProtocolError(f"expected Response or Event, got {kind!r}")


class AmiServerConnection(_AmiConnection):
    """The fake PBX's end: reads actions; sends the banner, responses and events."""

    _sends = (Banner, Response, Event)

    def _read(self) -> Action | None:
        frame = _decoded(self._frames.next_frame(b"\r\n\r\n"))
        if frame is None:
            return None
        pairs = _parse_pairs(frame)
        name = _pop(pairs, "Action")
        if name is None:
            raise AmiProtocolError(f"message without an Action: {frame[:80]!r}")
        action_id = _pop(pairs, "ActionID")
        return Action(name, Fields(tuple(pairs)), action_id)


def _pop(pairs: list[tuple[str, str]], key: str) -> str | None:
    """Take the first `key` out of `pairs`, matched without case as Asterisk does."""
    for index, (name, value) in enumerate(pairs):
        if name.lower() == key.lower():
            del pairs[index]
            return value
    return None
