"""The fake PBX's channel state: a call nobody answered carries no audio and no keys.

On a real SIP line an inbound call that reaches AGI unanswered has had only 100 Trying: the
caller hears nothing that plays and their RFC 2833 keys have nowhere to go. The fake holds
nobat to the same rule, so a flow that forgets to answer fails the default tier.
"""

from __future__ import annotations

import pytest

from ivr.agi_protocol import Command, Reply
from tests.fakepbx.agi_caller import FakeChannel, call_environment, uniform_prompts
from tests.fakepbx.script import Caller, CallerAction, HangUp, Press, Wait


def ringing(*actions: CallerAction, gives_up_after: float = 120.0) -> FakeChannel:
    """An inbound call handed to AGI by a dialplan without Answer()."""
    caller = Caller("15550000001", actions, gives_up_after=gives_up_after)
    return FakeChannel(caller, call_environment(caller, "agi://127.0.0.1/ivr"), uniform_prompts)


def send(channel: FakeChannel, line: str) -> list[str]:
    """Send one command line; the lines Asterisk writes back."""
    events = channel.handle(Command.parse(line))
    return [event.raw if isinstance(event, Reply) else "HANGUP" for event in events]


def test_an_inbound_call_rings_until_answered_and_then_is_up() -> None:
    channel = ringing(Press("1"), Wait(5), HangUp())
    assert send(channel, "CHANNEL STATUS") == ["200 result=4"]
    assert send(channel, "GET FULL VARIABLE ${CHANNEL(state)}") == ["200 result=1 (Ring)"]
    assert send(channel, "ANSWER") == ["200 result=0"]
    assert send(channel, "CHANNEL STATUS") == ["200 result=6"]
    assert send(channel, "GET FULL VARIABLE ${CHANNEL(state)}") == ["200 result=1 (Up)"]
    assert channel.transcript.answered_at == 0.0
    assert send(channel, "ANSWER") == ["200 result=0"]  # answering twice changes nothing


def test_prompts_played_before_the_answer_reach_nobody_and_fail_the_call() -> None:
    channel = ringing(Press("1"), Wait(5), HangUp())
    assert send(channel, 'STREAM FILE welcome "0123456789"') == ["200 result=0 endpos=16000"]
    assert send(channel, "WAIT FOR DIGIT 3000") == ["200 result=0"]
    assert channel.transcript.heard == []
    assert channel.transcript.unheard == ["welcome"]
    assert channel.transcript.keys == []
    with pytest.raises(AssertionError, match="'welcome' played into a call nobody answered"):
        channel.transcript.assert_clean()


def test_the_callers_keys_start_once_the_call_is_answered() -> None:
    channel = ringing(Wait(1), Press("7"), Wait(5), HangUp())
    send(channel, 'STREAM FILE welcome ""')  # 2 s of silence: the caller hears ringing
    assert send(channel, "ANSWER") == ["200 result=0"]
    assert send(channel, "WAIT FOR DIGIT 5000") == ["200 result=55"]
    [key] = channel.transcript.keys
    assert key.at == pytest.approx(2.0 + 1.0 + 0.1 + 0.1)  # answered at 2 s, then the script


def test_a_caller_nobody_answers_gives_up() -> None:
    channel = ringing(Press("1"), gives_up_after=29.0)
    for _ in range(14):
        assert send(channel, 'STREAM FILE welcome ""') == ["200 result=0 endpos=16000"]
    assert send(channel, 'STREAM FILE welcome ""') == ["200 result=-1 endpos=8000", "HANGUP"]
    assert (channel.transcript.hung_up_by, channel.transcript.hung_up_at) == ("caller", 29.0)
    assert send(channel, "ANSWER") == ["511 Command Not Permitted on a dead channel or intercept "
                                       "routine"]


@pytest.mark.parametrize(("application", "answers"), [
    ("Answer", True),
    ("Playback beep", True),
    ("Playback beep,noanswer", False),
    ("Background beep", True),
    ("Background beep,n", False),
    ("Playback beep,skip", False),
    ("Verbose hello", False),
])
def test_dialplan_applications_answer_as_in_asterisk(application: str, answers: bool) -> None:
    channel = ringing(Wait(30), HangUp())
    send(channel, f"EXEC {application}")
    assert send(channel, "CHANNEL STATUS") == [f"200 result={6 if answers else 4}"]


def test_a_call_answered_by_the_dialplan_is_up_from_the_start() -> None:
    caller = Caller("15550000001", (Press("5"), Wait(2), HangUp()))
    channel = FakeChannel(caller, call_environment(caller, "agi://127.0.0.1/ivr"),
                          uniform_prompts, answered=True)
    assert send(channel, "CHANNEL STATUS") == ["200 result=6"]
    assert send(channel, 'STREAM FILE welcome "5"') == ["200 result=53 endpos=1600"]
    channel.transcript.assert_clean()
