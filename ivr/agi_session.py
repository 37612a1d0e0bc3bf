"""CallSession over AGI: the same code serves FastAGI sockets and classic AGI pipes."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from clinic.phones import mask
from ivr.agi_channel import AgiChannel
from ivr.agi_protocol import AgiEnvironment, Command, Reply
from ivr.fastagi_gate import SECRET_ARGUMENT
from ivr.session import ALL_KEYS, CallerHungUp, CallInfo, CallSession

log = logging.getLogger(__name__)
TRANSFER_VARIABLE = "NOBAT_TRANSFER"
"""The dialplan reads it after AGI returns and dials the office (asterisk/extensions.conf)."""
SESSION_VARIABLE = "NOBAT_SESSION"
"""Set first: the dialplan tries classic AGI only if nobat never took the call."""
RESULT_VARIABLE = "NOBAT_RESULT"
"""Set to "done" last: without it, a caller still on the line goes to the office."""
KEY_VARIABLE = "NOBAT_KEY"
"""Where Read() leaves the key a caller pressed during or after a list of prompts."""
READ_OUTCOME = "${READSTATUS}:${NOBAT_KEY}"
"""Read's status (OK, TIMEOUT, HANGUP, ERROR) and the key, in one GET FULL VARIABLE."""
AFTER_PROMPTS_SECONDS = 0.001
"""Read's wait after the last prompt when only the prompts may be cut short: Read takes no 0
(it means the dialplan's 10 s), and a millisecond is below a 20 ms audio frame."""
CHANNEL_UP = 6
"""CHANNEL STATUS of an answered channel (AST_STATE_UP); 4 is an inbound call still ringing."""


def call_info(env: AgiEnvironment) -> CallInfo:
    """Take what a flow needs from the environment.

    AGI arguments "name=value" become options, except the FastAGI secret, which stops at
    the gate; a bare one is the number the caller dialled (the dialplan passes the DID,
    since agi_dnid is "unknown" on many channels).
    """
    options = dict(env.query)
    numbers = []
    for arg in env.args:
        key, sep, value = arg.partition("=")
        if sep and key.strip() == SECRET_ARGUMENT:
            continue
        if sep:
            options.setdefault(key.strip(), value.strip())
        elif arg.strip():
            numbers.append(arg.strip())
    dialled = numbers[0] if numbers else env.dnid
    return CallInfo(caller_id=env.callerid, dialled=dialled,
                    channel=env.channel, unique_id=env.uniqueid, entry=env.script or "",
                    options=options)


class AgiCallSession(CallSession):
    """Plays with STREAM FILE, reads keys with WAIT FOR DIGIT, hands over through a variable."""

    def __init__(self, channel: AgiChannel, env: AgiEnvironment, *,
                 answered: bool = False) -> None:
        """`answered` when this AGI has answered already (nobat-agi sends ANSWER first)."""
        self.channel = channel
        self.env = env
        self.info = call_info(env)
        self.answered = answered

    async def play(self, prompts: Sequence[str], keys: str = ALL_KEYS) -> str | None:
        if keys == ALL_KEYS and len(prompts) > 1 and _listable(prompts):
            return await self._read(prompts, AFTER_PROMPTS_SECONDS)
        for prompt in prompts:
            reply = await self.channel.run(Command.of("STREAM FILE", prompt, keys))
            code = _result(reply)
            if code > 0:
                return chr(code)
            if code < 0:
                await self._missing_or_gone(prompt)
        return None

    async def wait_digit(self, seconds: float) -> str | None:
        code = _result(await self.channel.run(Command.of("WAIT FOR DIGIT",
                                                         int(seconds * 1000))))
        if code < 0:
            raise CallerHungUp()
        return chr(code) if code else None

    async def ask(self, prompts: Sequence[str], seconds: float) -> str | None:
        if not prompts or not _listable(prompts):
            return await super().ask(prompts, seconds)
        return await self._read(prompts, seconds)

    async def _read(self, prompts: Sequence[str], seconds: float) -> str | None:
        """One Read() plays a whole '&' list, any key stopping it, and times the wait after:
        two commands a menu, where a STREAM FILE per prompt costs nobat a wake-up each."""
        read = f"{KEY_VARIABLE},{'&'.join(prompts)},1,t,1,{seconds:g}"
        if _result(await self.channel.run(Command.of("EXEC", "Read", read))) < 0:
            raise RuntimeError("Asterisk has no Read application (load app_read.so)")
        reply = await self.channel.run(Command.of("GET FULL VARIABLE", READ_OUTCOME))
        status, _, key = (reply.data or "").partition(":")
        if status == "HANGUP" or self.channel.hung_up:
            raise CallerHungUp()
        if status == "ERROR":
            log.error("prompts %s could not be played on %s (a missing last file?)",
                      prompts, mask(self.info.caller_id or ""))
        return key[:1] or None

    async def transfer(self, destination: str) -> None:
        await self.channel.run(Command.of("SET VARIABLE", TRANSFER_VARIABLE, destination))

    async def hang_up(self) -> None:
        await self.channel.run(Command.of("HANGUP"))

    async def begin(self, call_id: int) -> None:
        await self._answer()
        await self.channel.run(Command.of("SET VARIABLE", SESSION_VARIABLE, str(call_id)))

    async def _answer(self) -> None:
        """Answer a channel the dialplan handed over ringing: until then a SIP caller gets
        no 200 OK, hears no prompt and can send no key (STREAM FILE does not answer)."""
        if self.answered:
            return
        state = _result(await self.channel.run(Command.of("CHANNEL STATUS")))
        if state != CHANNEL_UP:
            if _result(await self.channel.run(Command.of("ANSWER"))) < 0:
                raise CallerHungUp()
            log.debug("answered %s: the dialplan handed it over in state %d",
                      mask(self.info.caller_id or ""), state)
        self.answered = True

    async def finish(self) -> None:
        await self.channel.run(Command.of("SET VARIABLE", RESULT_VARIABLE, "done"))

    async def _missing_or_gone(self, prompt: str) -> None:
        """STREAM FILE says -1 both for a hang-up and for a missing file; ask the channel."""
        await self.channel.run(Command.of("CHANNEL STATUS"))
        log.error("prompt %r could not be played on %s (missing file?)", prompt,
                  mask(self.info.caller_id or ""))


def _result(reply: Reply) -> int:
    if reply.code != 200:
        raise RuntimeError(f"AGI refused a command: {reply.raw!r}")
    try:
        return int(reply.result or "0")
    except ValueError:
        raise RuntimeError(f"AGI gave a non-numeric result: {reply.raw!r}") from None


def _listable(prompts: Sequence[str]) -> bool:
    """Whether Read() can take these files as its '&' list: its arguments split at commas."""
    return not any("," in prompt or "&" in prompt for prompt in prompts)
